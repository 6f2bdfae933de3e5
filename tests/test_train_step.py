"""The jitted train and eval steps: learning, sharding invariance, no recompilation, ablation switches."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from skclip_jax import factory, optim, sharding
from skclip_jax import steps as steps_lib
from skclip_jax.config_lib import default
from skclip_jax.models import text

NUM_CLASSES = 4
BATCH = 8


def tiny_config(**model_overrides):
    config = default.get_config()
    config.data.clip_len = 8
    config.data.train_size = 16
    config.data.test_size = 16
    config.data.num_test_clips = 2
    config.model.slowonly.base_channels = 4
    config.model.slowonly.stage_blocks = (1, 1, 1)
    config.model.embed_dim = 16
    config.model.text.dropout = 0.0
    # A random tiny BERT must learn to tell the prompts apart; at the pretrained-BERT rate (x0.01) it barely moves.
    config.optim.text_lr_mult = 1.0
    config.optim.crossattn_lr_mult = 1.0
    config.model.contrastive_group_size = 0
    config.optim.lr = 3e-3
    for key, value in model_overrides.items():
        setattr(config.model, key, value)
    return config


def make_batch(seed=0, batch=BATCH, clip_len=8, size=16):
    """Clips whose single keypoint moves along a class-specific path, so the labels are learnable."""
    rng = np.random.default_rng(seed)
    labels = np.arange(batch) % NUM_CLASSES
    t = np.linspace(0, 1, clip_len)
    keypoint = np.zeros((batch, 2, clip_len, 17, 2), np.float32)
    score = np.zeros((batch, 2, clip_len, 17), np.float32)
    for i, label in enumerate(labels):
        angle = 2 * np.pi * (t + label / NUM_CLASSES)
        for v in range(17):
            keypoint[i, 0, :, v, 0] = size / 2 + (size / 3) * np.cos(angle + v * 0.1)
            keypoint[i, 0, :, v, 1] = size / 2 + (size / 3) * np.sin((label + 1) * angle)
        score[i, 0] = 1.0
    keypoint += rng.normal(scale=0.3, size=keypoint.shape).astype(np.float32)
    return {"keypoint": keypoint, "keypoint_score": score, "label": labels.astype(np.int32)}


def build(config, tokens_and_bert, mesh, total_steps=50):
    tokens, bert_cfg, enc_id = tokens_and_bert
    model = factory.build_model(config, bert_cfg, enc_id)
    schedule = optim.learning_rate_schedule(config.optim.lr, total_steps, 0, 0.1)
    tx = optim.make_optimizer(config, schedule)
    state, shardings = factory.create_train_state(
        model,
        tx,
        mesh,
        jax.random.key(0),
        num_keypoints=17,
        max_text_len=10,
        shard_params=config.shard_params,
    )
    steps = steps_lib.compile_steps(
        model, steps_lib.StepOptions.from_config(config), schedule, mesh, shardings
    )
    class_tokens = jax.device_put(
        {k: jnp.asarray(v) for k, v in tokens.items()}, sharding.replicated(mesh)
    )
    return state, steps, class_tokens


def run_steps(config, tokens_and_bert, mesh, num_steps, batches=None):
    state, steps, class_tokens = build(config, tokens_and_bert, mesh)
    losses = []
    for i in range(num_steps):
        local = batches[i % len(batches)] if batches else make_batch()
        batch = sharding.make_global_batch(mesh, local)
        state, metrics = steps.train(state, batch, class_tokens, jax.random.key(1))
        losses.append(metrics["loss"])
    return state, np.asarray(jax.device_get(losses)), steps


def test_loss_falls_when_overfitting_one_batch(tokens_and_bert):
    mesh = sharding.make_mesh((1, 1), jax.devices()[:1])
    _, losses, _ = run_steps(tiny_config(), tokens_and_bert, mesh, 30)
    assert np.all(np.isfinite(losses))
    assert losses[-5:].mean() < 0.5 * losses[:3].mean(), losses


MESH_STEPS = 20


@pytest.fixture(scope="module")
def single_device_run(tokens_and_bert):
    """20 steps on one device over 4 different global batches: the reference for every mesh."""
    batches = [make_batch(seed) for seed in range(4)]
    one = sharding.make_mesh((1, 1), jax.devices()[:1])
    state, losses, _ = run_steps(tiny_config(), tokens_and_bert, one, MESH_STEPS, batches)
    return batches, jax.device_get(state.params), losses


@pytest.mark.parametrize("mesh_shape,shard", [((8, 1), False), ((4, 2), True), ((2, 4), True)])
def test_sharded_steps_equal_single_device(tokens_and_bert, single_device_run, mesh_shape, shard):
    batches, params_1, losses_1 = single_device_run
    config = tiny_config()
    config.shard_params = shard
    state_8, losses_8, _ = run_steps(
        config, tokens_and_bert, sharding.make_mesh(mesh_shape), MESH_STEPS, batches
    )
    np.testing.assert_allclose(losses_8, losses_1, rtol=1e-3, atol=1e-5)
    # Adam turns float-level gradient noise on near-zero gradients into O(lr) steps, and 20 steps compound
    # it; 2e-3 is still below what a real sharding error (wrong BN statistics, unaveraged gradients)
    # does to the weights after 20 steps of lr 3e-3.
    flat_1 = jax.tree.leaves(params_1)
    flat_8 = jax.tree.leaves(jax.device_get(state_8.params))
    for a, b in zip(flat_1, flat_8, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-2, atol=2e-3)


def test_step_compiles_once_for_changing_data(tokens_and_bert):
    mesh = sharding.make_mesh((-1, 1))
    batches = [make_batch(seed) for seed in range(3)]
    batches[1]["label"][:] = 2  # an all-same-label batch: CSI masks itself out without a new trace.
    _, losses, steps = run_steps(tiny_config(), tokens_and_bert, mesh, 3, batches)
    assert np.all(np.isfinite(losses))
    assert steps.train._cache_size() == 1


@pytest.mark.parametrize(
    "overrides",
    [
        {"csi": False},
        {"ssm_targets": "all_classes"},
        {"activation": "sigmoid", "mapping": "residual"},
        {"activation": "mean"},
        {"csi_negatives": "sample"},
    ],
)
def test_ablation_switches_train(tokens_and_bert, overrides):
    mesh = sharding.make_mesh((-1, 1))
    _, losses, _ = run_steps(tiny_config(**overrides), tokens_and_bert, mesh, 2)
    assert np.all(np.isfinite(losses))


def test_frozen_text_encoder_keeps_pretrained_weights(tokens_and_bert):
    config = tiny_config()
    config.model.text.regime = "frozen"
    mesh = sharding.make_mesh((-1, 1))
    state0, steps, class_tokens = build(config, tokens_and_bert, mesh)
    before = jax.device_get(state0.params)
    state = state0
    for _ in range(2):
        state, _ = steps.train(
            state, sharding.make_global_batch(mesh, make_batch()), class_tokens, jax.random.key(1)
        )
    after = jax.device_get(state.params)
    changed = jax.tree_util.tree_map_with_path(
        lambda p, a, b: (jax.tree_util.keystr(p), not np.array_equal(a, b)),
        before["text_encoder"],
        after["text_encoder"],
    )
    for path, did_change in jax.tree.leaves(changed, is_leaf=lambda x: isinstance(x, tuple)):
        assert did_change == ("crossattention" in path), path
    assert not np.array_equal(
        before["frame_proj"]["linear"]["kernel"], after["frame_proj"]["linear"]["kernel"]
    )


def test_eval_step_averages_views_into_probabilities(tokens_and_bert):
    config = tiny_config()
    mesh = sharding.make_mesh((-1, 1))
    state, steps, class_tokens = build(config, tokens_and_bert, mesh)
    train_batch = make_batch()
    views = np.stack([train_batch["keypoint"]] * 2, axis=1)
    batch = {
        "keypoint": views,
        "keypoint_score": np.stack([train_batch["keypoint_score"]] * 2, axis=1),
        "label": train_batch["label"],
        "mask": np.ones(BATCH, bool),
    }
    class_feats = steps.encode_classes(state, class_tokens)
    out = jax.device_get(steps.eval(state, sharding.make_global_batch(mesh, batch), class_feats))
    assert out["probs"].shape == (BATCH, NUM_CLASSES)
    np.testing.assert_allclose(out["probs"].sum(-1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(out["label"], train_batch["label"])


def test_csi_gradients_reach_cross_attention_and_enc_embedding(tokens_and_bert):
    tokens, bert_cfg, enc_id = tokens_and_bert
    config = tiny_config()
    model = factory.build_model(config, bert_cfg, enc_id)
    mesh = sharding.make_mesh((1, 1), jax.devices()[:1])
    state, _, class_tokens = build(config, tokens_and_bert, mesh)
    grads, (metrics, _) = jax.grad(steps_lib.compute_losses, has_aux=True)(
        state.params,
        state.batch_stats,
        jax.tree.map(jnp.asarray, make_batch()),
        class_tokens,
        jax.random.key(0),
        model=model,
        opts=steps_lib.StepOptions.from_config(config),
    )
    assert np.isfinite(float(metrics["csi_loss"]))
    crossattention = [
        (jax.tree_util.keystr(path), np.asarray(g))
        for path, g in jax.tree_util.tree_leaves_with_path(grads["text_encoder"])
        if "crossattention" in jax.tree_util.keystr(path)
    ]
    assert crossattention
    for path, g in crossattention:
        assert np.all(np.isfinite(g)), path
        assert np.abs(g).max() > 0, path
    word = np.asarray(grads["text_encoder"]["bert"]["embeddings"]["word_embeddings"]["embedding"])
    assert np.abs(word[enc_id]).max() > 0  # [ENC] enters only through the fusion pass.
    assert np.abs(np.asarray(grads["match_head"]["linear"]["kernel"])).max() > 0
    assert np.abs(np.asarray(grads["fusion_proj"]["kernel"])).max() > 0


@pytest.fixture(scope="module")
def minilm_fusion():
    """The pretrained MiniLM text tower (the offline default), dropout off, with its tokens."""
    tokenizer, enc_id = text.load_tokenizer(text.resolve_bert_dir("minilm"))
    tokens = text.tokenize(tokenizer, ["waving hand", "jumping jacks", "squatting", "kicking"], 10)
    bert_cfg = text.bert_config("minilm", len(tokenizer), 0.0)
    return tokens, bert_cfg, enc_id


def test_csi_match_head_learns_through_the_fusion_path(minilm_fusion):
    """Overfitting one separable batch through pretrained BERT's fusion mode, with the original's optimiser
    groups (BERT and its new cross-attention at lr x0.01): the match head leaves its 2/3 "no match" prior.

    (At the full rate the random cross-attention layers swamp the pretrained residual stream and the head
    stays at the prior: the cause of the CSI stall this guards against; see README.)
    """
    config = tiny_config()
    config.optim.text_lr_mult = config.optim.crossattn_lr_mult = 0.01
    mesh = sharding.make_mesh((1, 1), jax.devices()[:1])
    state, steps, class_tokens = build(config, minilm_fusion, mesh, total_steps=40)
    params = dict(jax.device_get(state.params))
    params["text_encoder"], _ = text.graft_pretrained(
        params["text_encoder"], text.load_checkpoint_params("minilm")
    )
    state = state.replace(params=params)
    batch = sharding.make_global_batch(mesh, make_batch())
    accuracy = []
    for _ in range(40):
        state, metrics = steps.train(state, batch, class_tokens, jax.random.key(1))
        accuracy.append(metrics["csi_accuracy"])
    accuracy = np.asarray(jax.device_get(accuracy))
    assert accuracy[-10:].mean() > 0.9, accuracy


def test_host_init_equals_device_init_and_keeps_the_shardings(tokens_and_bert):
    """The host path (the default off the CPU backend) gives the same state, placed on the same shardings."""
    _, bert_cfg, enc_id = tokens_and_bert
    config = tiny_config()
    model = factory.build_model(config, bert_cfg, enc_id)
    tx = optim.make_optimizer(config, optim.learning_rate_schedule(1e-3, 10, 0, 0.1))
    mesh = sharding.make_mesh((4, 2))
    states = {}
    for on_host in (False, True):
        states[on_host], shardings = factory.create_train_state(
            model,
            tx,
            mesh,
            jax.random.key(3),
            num_keypoints=17,
            max_text_len=10,
            shard_params=True,
            init_on_host=on_host,
        )
    direct, placed = (jax.tree.leaves(states[k]) for k in (False, True))
    assert len(direct) == len(placed) > 100
    sharded = 0
    for a, b, s in zip(direct, placed, jax.tree.leaves(shardings), strict=True):
        assert b.sharding.is_equivalent_to(s, a.ndim) and a.sharding.is_equivalent_to(s, a.ndim)
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
        sharded += not b.sharding.is_fully_replicated
    assert sharded > 0  # the placement really split some leaves over the mesh


def test_patch_stem_trains_and_evaluates_as_the_rendered_volume(tokens_and_bert):
    """model.slowonly.stem_impl: patches and conv give the same steps and test predictions, sharded or not."""
    batches = []
    for seed in range(2):
        batch = make_batch(seed)
        # A second person close to the first: their windows overlap, the case the patches' max is exact for.
        batch["keypoint"][:, 1] = batch["keypoint"][:, 0] + np.float32(1.3)
        batch["keypoint_score"][:, 1] = 0.7
        batches.append(batch)
    one_device = sharding.make_mesh((1, 1), jax.devices()[:1])
    results = {}
    # The patches on a 4 x 2 mesh (data-sharded scatter-add), against the rendered volume on one device.
    for impl, mesh in (("conv", one_device), ("patches", sharding.make_mesh((4, 2)))):
        config = tiny_config()
        config.model.slowonly.stem_impl = impl
        config.data.test_flip = True
        assert steps_lib.StepOptions.from_config(config).stem_patches == (impl == "patches")
        state, losses, steps = run_steps(config, tokens_and_bert, mesh, 4, batches)
        tokens = tokens_and_bert[0]
        class_tokens = {k: jnp.asarray(v) for k, v in tokens.items()}
        views = {
            "keypoint": np.stack([batches[0]["keypoint"]] * 2, axis=1),
            "keypoint_score": np.stack([batches[0]["keypoint_score"]] * 2, axis=1),
            "label": batches[0]["label"],
            "mask": np.ones(BATCH, bool),
        }
        class_feats = steps.encode_classes(state, class_tokens)
        probs = steps.eval(state, sharding.make_global_batch(mesh, views), class_feats)["probs"]
        results[impl] = losses, jax.device_get(state.params), np.asarray(probs)
    (loss_c, params_c, probs_c), (loss_p, params_p, probs_p) = results["conv"], results["patches"]
    np.testing.assert_allclose(loss_p, loss_c, rtol=1e-3, atol=1e-5)
    stem_c = params_c["video_encoder"]["conv1"]["conv"]["kernel"]
    stem_p = params_p["video_encoder"]["conv1"]["conv"]["kernel"]
    init = build(tiny_config(), tokens_and_bert, one_device)[0].params
    stem_0 = np.asarray(init["video_encoder"]["conv1"]["conv"]["kernel"])
    assert (
        np.abs(stem_c - stem_0).max() > 1e-3
    )  # the stem trained, so its gradients were compared too
    np.testing.assert_allclose(stem_p, stem_c, rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(probs_p, probs_c, rtol=1e-3, atol=1e-5)
