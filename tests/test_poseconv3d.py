"""Table 4's PoseConv3D baseline (variant `poseconv3d`): config, loss, SGD update, step decay, the real steps, the
training loop and the restored model."""

import io
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import demo, hmdb51, ntu60, penn_action, ucf101
from skclip_jax import (
    api,
    classifier_optim,
    classifier_steps,
    factory,
    predict,
    run_config,
    sharding,
    steps,
    train,
)
from skclip_jax.config_lib import poseconv3d, validation
from skclip_jax.models import classifier, text

NUM_CLASSES = 4


def tiny_config(data_dir: str = "unused"):
    config = demo.get_config("tiny,poseconv3d")
    config.data.data_dir = data_dir
    return config


# ---------------------------------------------------------------- config


@pytest.mark.parametrize(
    "module, arg, decay",
    [(hmdb51, "split1", 1e-4), (ucf101, "split2", 3e-4), (ntu60, "xsub", 1e-4)],
)
def test_variant_sets_the_originals_recipe(module, arg, decay):
    config = module.get_config(f"{arg},poseconv3d")
    validation.validate_config(config)
    assert config.model.kind == "poseconv3d" and config.model.kind in classifier.MODEL_KINDS
    assert config.optim.lr == 0.01 and config.optim.weight_decay == decay
    assert config.optim.clip_norm == 40.0 and config.optim.warmup_epochs == 0.0
    p = config.poseconv3d
    assert p.momentum == 0.9 and p.dropout == 0.5 and p.init_std == 0.01 and p.zero_init_residual
    assert p.lr_step_factor == 0.1
    assert tuple(round(f * 24, 9) for f in p.lr_steps) == (9, 11)  # epochs 9 and 11 of 24
    assert config.num_epochs == 24 and config.total_steps == -1 and config.data.repeat == 10
    d = config.data
    assert (d.train_size, d.test_size, d.short_side) == (48, 56, 64)
    assert tuple(d.crop_area) == (0.56, 1.0) and d.flip_ratio == 0.5
    assert d.num_test_clips == 10 and d.test_flip and not d.with_limb
    assert tuple(config.model.slowonly.stage_blocks) == (3, 4, 6)
    assert config.batch_size == 32  # the paper's 2 GPUs x 16 clips, at lr 0.01


def test_cpu_variant_keeps_its_sizes_and_takes_the_recipe():
    config = penn_action.get_config("cpu,poseconv3d")
    validation.validate_config(config)
    cpu = penn_action.get_config("cpu")
    for field in ("train_size", "test_size", "short_side", "clip_len", "num_test_clips", "repeat"):
        assert config.data[field] == cpu.data[field], field
    assert tuple(config.model.slowonly.stage_blocks) == tuple(cpu.model.slowonly.stage_blocks)
    assert config.batch_size == cpu.batch_size and config.num_epochs == cpu.num_epochs
    # 10 passes: the short-run rate and late decay chosen on `cpu,poseconv3d,val`, not the original's 0.01 at 9/24.
    assert config.num_epochs * config.data.repeat < poseconv3d.FULL_RATE_PASSES
    assert config.model.kind == "poseconv3d" and config.optim.lr == poseconv3d.SHORT_RUN_LR == 0.2
    assert tuple(config.poseconv3d.lr_steps) == poseconv3d.SHORT_RUN_LR_STEPS == (0.75, 0.92)
    assert config.poseconv3d.momentum == 0.9 and config.data.test_flip
    # Registry order, not typed order.
    assert penn_action.get_config("poseconv3d,cpu").to_dict() == config.to_dict()


def test_bad_classifier_configs_are_rejected():
    config = tiny_config()
    config.model.kind = "resnet"
    with pytest.raises(ValueError, match="model.kind"):
        validation.validate_config(config)
    plain = demo.get_config("tiny")
    plain.model.kind = "poseconv3d"  # without the variant's fields
    with pytest.raises(ValueError, match="poseconv3d variant|use the variant"):
        validation.validate_config(plain)
    config = tiny_config()
    config.poseconv3d.lr_steps = (0.5, 0.25)
    config.data.unseen_classes = ("squat",)
    with pytest.raises(ValueError) as err:
        validation.validate_config(config)
    assert "poseconv3d.lr_steps" in str(err.value) and "data.unseen_classes" in str(err.value)
    with pytest.raises(ValueError, match="at most one"):
        hmdb51.get_config("poseconv3d,pacl_recipe")


# ---------------------------------------------------------------- loss, optimizer, schedule


def test_cross_entropy_matches_numpy():
    logits = np.array([[2.0, -1.0, 0.5, 0.0], [0.1, 0.2, 3.0, -2.0], [-4.0, 1.0, 1.0, 8.0]])
    labels = np.array([0, 2, 1])
    shifted = logits - logits.max(-1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
    expected = -log_probs[np.arange(3), labels].mean()
    got = classifier_steps.cross_entropy(jnp.asarray(logits, jnp.float32), jnp.asarray(labels))
    np.testing.assert_allclose(float(got), expected, rtol=1e-6)


def test_step_schedule_switches_at_its_boundaries():
    schedule = classifier_optim.step_decay_schedule(0.01, (9, 11), 0.1)
    values = [float(schedule(s)) for s in (0, 8, 9, 10, 11, 500)]
    np.testing.assert_allclose(values, [0.01, 0.01, 1e-3, 1e-3, 1e-4, 1e-4], rtol=1e-6)
    # The paper's 24 epochs: the drops land on the first step of epochs 9 and 11, whatever the epoch length.
    for steps_per_epoch in (1, 7, 119, 1001):
        bounds = classifier_optim.decay_boundaries(poseconv3d.LR_STEPS, 24 * steps_per_epoch)
        assert bounds == (9 * steps_per_epoch, 11 * steps_per_epoch)
    # A run counted in steps (the tiny demo: 4) or in fewer epochs (cpu: 10) drops at the same fractions.
    assert classifier_optim.decay_boundaries(poseconv3d.LR_STEPS, 790) == (296, 362)
    config = tiny_config()
    parts = factory.build(config, total_steps=240, steps_per_epoch=10, num_classes=NUM_CLASSES)
    lrs = [float(parts.schedule(s)) for s in (0, 89, 90, 109, 110, 239)]
    np.testing.assert_allclose(lrs, [0.01, 0.01, 1e-3, 1e-3, 1e-4, 1e-4], rtol=1e-6)


def test_sgd_update_matches_a_numpy_loop():
    """PyTorch's SGD(momentum, weight_decay) after clip_grad_norm_(40) on the step schedule, written out."""
    config = tiny_config()
    parts = factory.build(config, total_steps=24, steps_per_epoch=1, num_classes=NUM_CLASSES)
    rng = np.random.default_rng(0)
    params = {"a": rng.normal(size=3), "b": {"c": rng.normal(size=(2, 2))}}
    # Large gradients in some steps, so that the clipping at 40 acts in those and not in others.
    grads = [
        {"a": rng.normal(size=3) * s, "b": {"c": rng.normal(size=(2, 2)) * s}}
        for s in (1.0, 60.0, 0.5, 100.0) * 4
    ]
    tx = parts.tx
    p = jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), params)
    opt_state = tx.init(p)
    for g in grads:
        updates, opt_state = tx.update(jax.tree.map(jnp.float32, g), opt_state, p)
        p = jax.tree.map(lambda a, u: a + u, p, updates)

    flat = [params["a"].copy(), params["b"]["c"].copy()]
    buf = None
    for step, g in enumerate(grads):
        g = [g["a"], g["b"]["c"]]
        norm = np.sqrt(sum((x**2).sum() for x in g))
        coef = 40.0 / (norm + 1e-6)
        if coef < 1:
            g = [x * coef for x in g]
        d = [x + 1e-4 * w for x, w in zip(g, flat, strict=True)]
        buf = d if buf is None else [0.9 * b + x for b, x in zip(buf, d, strict=True)]
        lr = 0.01 * 0.1 ** sum(step >= b for b in (9, 11))
        flat = [w - lr * b for w, b in zip(flat, buf, strict=True)]
    np.testing.assert_allclose(np.asarray(p["a"]), flat[0], rtol=2e-5, atol=1e-7)
    np.testing.assert_allclose(np.asarray(p["b"]["c"]), flat[1], rtol=2e-5, atol=1e-7)


# ---------------------------------------------------------------- the real steps


def random_batch(rng, config, batch: int, views: int | None = None):
    lead = (batch,) if views is None else (batch, views)
    size = config.data.train_size if views is None else config.data.test_size
    shape = lead + (config.data.num_persons, config.data.clip_len, config.data.num_keypoints)
    out = {
        "keypoint": rng.uniform(1, size - 1, shape + (2,)).astype(np.float32),
        "keypoint_score": rng.uniform(0.2, 1, shape).astype(np.float32),
        "label": rng.integers(0, NUM_CLASSES, batch).astype(np.int32),
    }
    if views is not None:
        out["mask"] = np.ones(batch, bool)
    return out


def test_two_train_steps_and_an_evaluation_through_the_real_steps():
    config = tiny_config()
    parts = factory.build(config, total_steps=4, steps_per_epoch=2, num_classes=NUM_CLASSES)
    assert parts.text is None and isinstance(parts.model, classifier.PoseConv3D)
    mesh = sharding.make_mesh(config.mesh_shape)
    state, shardings = factory.init_state(parts, config, mesh)
    assert "text_encoder" not in state.params and "temperature" not in state.params
    assert state.params["head"]["kernel"].shape[-1] == NUM_CLASSES
    # PYSKL's init: each block's last BatchNorm scale 0, the head N(0, 0.01) with zero bias.
    assert not np.any(np.asarray(state.params["video_encoder"]["layer1_0"]["conv3"]["bn"]["scale"]))
    assert not np.any(np.asarray(state.params["head"]["bias"]))
    compiled = classifier_steps.compile_steps(
        parts.model, steps.StepOptions.from_config(config), parts.schedule, mesh, shardings
    )
    tokens = jax.device_put(
        jax.tree.map(jnp.asarray, classifier_steps.class_index_tokens(NUM_CLASSES)),
        sharding.replicated(mesh),
    )
    rng = np.random.default_rng(0)
    before = jax.device_get((state.params, state.batch_stats))
    key = jax.random.key(0)
    losses = []
    for _ in range(2):
        batch = sharding.make_global_batch(mesh, random_batch(rng, config, config.batch_size))
        state, metrics = compiled.train(state, batch, tokens, key)
        metrics = jax.device_get(metrics)
        assert set(metrics) >= {"loss", "train_accuracy", "grad_norm", "learning_rate"}
        assert np.isfinite(metrics["loss"]) and metrics["learning_rate"] > 0
        losses.append(float(metrics["loss"]))
    assert int(state.step) == 2
    after = jax.device_get((state.params, state.batch_stats))
    moved = jax.tree.map(lambda a, b: bool(np.any(a != b)), before, after)
    assert moved[0]["head"]["kernel"] and moved[0]["video_encoder"]["conv1"]["conv"]["kernel"]
    assert moved[1]["video_encoder"]["conv1"]["bn"]["mean"]

    views = config.data.num_test_clips
    batch = random_batch(rng, config, config.eval_batch_size, views)
    out = jax.device_get(
        compiled.eval(
            state,
            sharding.make_global_batch(mesh, batch),
            compiled.encode_classes(state, tokens),
        )
    )
    b = config.eval_batch_size
    assert out["probs"].shape == (b, NUM_CLASSES)
    assert out["logits"].shape == (b, 2 * views, NUM_CLASSES)  # every view and its flip
    np.testing.assert_allclose(out["probs"].sum(-1), 1.0, rtol=1e-5)
    # average_clips='prob': the mean of each view's softmax, not the softmax of the mean logit.
    view_probs = np.exp(out["logits"] - out["logits"].max(-1, keepdims=True))
    view_probs /= view_probs.sum(-1, keepdims=True)
    np.testing.assert_allclose(out["probs"], view_probs.mean(1), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(out["label"], batch["label"])


def test_training_loop_evaluation_rows_and_the_restored_model(tiny_dataset, tmp_path, monkeypatch):
    """The run goes through train.py's loop, writes the CLIP model's evaluation rows and plots, and restores for
    predict and the API; no text tower is ever loaded."""

    def no_text(*args, **kwargs):
        raise AssertionError("the poseconv3d baseline loaded a text tower")

    monkeypatch.setattr(factory, "load_text_tower", no_text)
    monkeypatch.setattr(text, "load_checkpoint_params", no_text)
    config = tiny_config(tiny_dataset.data_dir)
    config.total_steps = 2
    config.eval_every_steps = config.checkpoint_every_steps = 2
    workdir = str(tmp_path / "run")
    last = train.train_and_evaluate(config, workdir)
    assert {"top1", "top5", "mean_class_accuracy", "best_top1"} <= set(last)
    assert 0.0 <= last["top1"] <= 1.0 and last["best_top1"] == last["top1"]
    with open(os.path.join(workdir, "metrics.jsonl"), encoding="utf-8") as f:
        rows = [json.loads(line) for line in f]
    assert [r["step"] for r in rows if r["kind"] == "eval"] == [2]
    assert all(np.isfinite(r["loss"]) for r in rows if r["kind"] == "train")
    for png in ("loss.png", "accuracy.png", "confusion.png"):
        assert os.path.isfile(os.path.join(workdir, png)), png

    model = api.load(workdir)
    assert isinstance(model, classifier_steps.TrainedClassifier) and model.step == 2
    rng = np.random.default_rng(1)
    clip = rng.uniform(10, 90, (2, 20, 17, 2))
    ranked = model.rank(clip, np.ones(clip.shape[:-1]), img_shape=(100, 100), top_k=NUM_CLASSES)
    assert sorted(name for name, _ in ranked) == sorted(tiny_dataset.class_names)
    np.testing.assert_allclose(sum(p for _, p in ranked), 1.0, rtol=1e-5)
    with pytest.raises(api.PredictError, match="poseconv3d run .* ranks only its own classes"):
        model.rank(clip, classes=["waving", "kicking"])

    # predict: the run's classes, uniform frame weights (the head pools every time step); --classes is one line.
    path = str(tmp_path / "clip.npz")
    np.savez(path, keypoint=clip, keypoint_score=np.ones(clip.shape[:-1]), img_shape=[100, 100])
    saved = run_config.load(workdir)
    out = str(tmp_path / "predict")
    (record,) = predict.run(saved, workdir, [path], top_k=2, output=out, out=io.StringIO())
    assert [r["class"] for r in record["top_k"]] == [name for name, _ in ranked[:2]]
    np.testing.assert_allclose(record["frame_weights"], 1.0 / len(record["frame_weights"]))
    with pytest.raises(api.PredictError) as err:
        predict.run(saved, workdir, [path], class_names=("waving", "kicking"), output=out)
    assert "--classes" in str(err.value) and "\n" not in str(err.value)
