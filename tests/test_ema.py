"""The parameter average (optim.ema_decay): a plain-loop reference, the real step, evaluation's use of it, and
an exact round trip through a checkpoint."""

import jax
import numpy as np
from test_train_step import make_batch, tiny_config

from skclip_jax import checkpointing, factory, optim, sharding
from skclip_jax import steps as steps_lib


def _reference_average(snapshots, decay):
    """NumPy loop: e_0 = w_0; e_{t+1} = e_t + (1 - d_t) (w_{t+1} - e_t), d_t = min(decay, (1 + t) / (10 + t))."""
    average = snapshots[0]
    for t, current in enumerate(snapshots[1:]):
        d = min(decay, (1.0 + t) / (10.0 + t))
        average = jax.tree.map(lambda e, c, d=d: e + (1.0 - d) * (c - e), average, current)
    return average


def test_ema_update_equals_the_plain_loop():
    rng = np.random.default_rng(0)
    snapshots = [{"a": rng.normal(size=(3, 2)), "b": {"c": rng.normal(size=4)}} for _ in range(40)]
    ema = jax.tree.map(np.float32, snapshots[0])
    for t, current in enumerate(snapshots[1:]):
        ema = steps_lib.ema_update(ema, jax.tree.map(np.float32, current), t, 0.9)
    want = _reference_average(snapshots, 0.9)
    jax.tree.map(lambda g, w: np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6), ema, want)
    # Early on the warm-up dominates: after one update the average moved 90 % of the way (d_0 = 0.1).
    one = steps_lib.ema_update({"w": np.float32(0.0)}, {"w": np.float32(1.0)}, 0, 0.999)
    np.testing.assert_allclose(one["w"], 0.9, rtol=1e-6)


def _build(config, tokens_and_bert, mesh):
    tokens, bert_cfg, enc_id = tokens_and_bert
    model = factory.build_model(config, bert_cfg, enc_id)
    schedule = optim.learning_rate_schedule(config.optim.lr, 50, 0, 0.1)
    tx = optim.make_optimizer(config, schedule)
    state, shardings = factory.create_train_state(
        model, tx, mesh, jax.random.key(0), num_keypoints=17, max_text_len=10, ema=True
    )
    steps = steps_lib.compile_steps(
        model, steps_lib.StepOptions.from_config(config), schedule, mesh, shardings
    )
    class_tokens = jax.device_put(dict(tokens), sharding.replicated(mesh))
    return state, shardings, steps, class_tokens


def test_train_step_keeps_the_average_and_a_checkpoint_restores_it_exactly(
    tokens_and_bert, tmp_path
):
    config = tiny_config()
    config.optim.ema_decay = 0.8
    mesh = sharding.make_mesh((1, 1), jax.devices()[:1])
    state, shardings, steps, class_tokens = _build(config, tokens_and_bert, mesh)
    snapshots = [jax.device_get({"params": state.params, "batch_stats": state.batch_stats})]
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(state.ema), snapshots[0])
    for i in range(4):
        batch = sharding.make_global_batch(mesh, make_batch(seed=i))
        state, _ = steps.train(state, batch, class_tokens, jax.random.key(1))
        snapshots.append(jax.device_get({"params": state.params, "batch_stats": state.batch_stats}))
    got = jax.device_get(state.ema)
    want = _reference_average(snapshots, 0.8)
    jax.tree.map(lambda g, w: np.testing.assert_allclose(g, w, rtol=2e-5, atol=1e-6), got, want)
    # The average differs from the last weights, and evaluation scores with the average.
    view = factory.evaluation_view(state)
    assert view.params is state.ema["params"] and view.batch_stats is state.ema["batch_stats"]
    pairs = zip(
        jax.tree.leaves(got["params"]), jax.tree.leaves(jax.device_get(state.params)), strict=True
    )
    assert any(not np.allclose(a, b) for a, b in pairs)

    manager = checkpointing.make_manager(str(tmp_path))
    checkpointing.save(manager, 4, state, {"step": 4})
    checkpointing.wait_until_finished(manager)
    manager.close()
    manager = checkpointing.make_manager(str(tmp_path), read_only=True)
    restored, position = checkpointing.restore(manager, jax.eval_shape(lambda: state), shardings)
    manager.close()
    assert position["step"] == 4
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(restored.ema), got)
