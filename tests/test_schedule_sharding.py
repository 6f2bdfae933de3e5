"""The learning-rate schedule against mmcv's CosineAnnealing + linear warm-up formula; mesh and batch checks."""

import math

import jax
import numpy as np
import optax
import pytest

from skclip_jax import optim, sharding
from skclip_jax.config_lib import default


def _mmcv_lr(step, base_lr, total, warmup, ratio, min_lr):
    """mmcv CosineAnnealingLrUpdaterHook(by_epoch=False) with warmup='linear', written out per step."""
    regular = min_lr + (base_lr - min_lr) * (1 + math.cos(math.pi * step / total)) / 2
    if step < warmup:
        k = (1 - step / warmup) * (1 - ratio)
        return regular * (1 - k)
    return regular


def test_schedule_matches_mmcv_formula():
    schedule = optim.learning_rate_schedule(1e-3, 1000, 100, 0.1, 0.0)
    for step in [0, 1, 50, 99, 100, 101, 500, 999, 1000]:
        np.testing.assert_allclose(
            float(schedule(step)),
            _mmcv_lr(step, 1e-3, 1000, 100, 0.1, 0.0),
            rtol=1e-5,
            atol=1e-9,  # float32 cos near the end of the cosine
        )
    assert float(schedule(0)) == pytest.approx(1e-4)  # warm-up starts at ratio * lr.


def toy_params():
    return {
        "video_encoder": {"w": np.full(3, 2.0, np.float32)},
        "text_encoder": {
            "layer": {
                "attention": {"w": np.full(3, -1.0, np.float32)},
                "crossattention": {"w": np.full(3, 0.5, np.float32)},
            }
        },
        "frame_proj": {"w": np.full(3, 3.0, np.float32)},
        "temperature": np.float32(0.07),
    }


def test_parameter_groups():
    labels = optim.param_group_labels(toy_params(), "finetune")
    assert labels == {
        "video_encoder": {"w": "video"},
        "text_encoder": {
            "layer": {"attention": {"w": "text"}, "crossattention": {"w": "crossattn"}}
        },
        "frame_proj": {"w": "head"},
        "temperature": "head",
    }
    frozen = optim.param_group_labels(toy_params(), "frozen")
    # BERT's pretrained weights freeze; its new cross-attention layers keep training.
    assert frozen["text_encoder"]["layer"] == {
        "attention": {"w": "frozen"},
        "crossattention": {"w": "crossattn"},
    }


def optimizer_config(**optim):
    config = default.get_config()
    config.optim.clip_norm = 1e6
    for key, value in optim.items():
        setattr(config.optim, key, value)
    return config


def one_update(config, grads, regime="finetune"):
    config.model.text.regime = regime
    tx = optim.make_optimizer(config, lambda step: config.optim.lr)
    params = toy_params()
    updates, _ = tx.update(grads, tx.init(params), params)
    return params, updates


def test_each_group_gets_its_lr_and_weight_decay_as_hand_computed_adamw():
    config = optimizer_config(
        lr=0.1,
        weight_decay=0.5,
        video_lr_mult=3.0,
        text_lr_mult=0.2,
        crossattn_lr_mult=0.7,
        encoder_decay_mult=0.4,
    )
    grads = jax.tree.map(lambda p: np.full(np.shape(p), 0.25, np.float32), toy_params())
    params, updates = one_update(config, grads)

    # AdamW's first step: the bias-corrected moments give g / (|g| + eps) = 1 for these gradients; the
    # decoupled decay adds wd * p, and both are scaled by the group's lr.
    def expected(p, lr, wd):
        return -lr * (1.0 + wd * p)

    np.testing.assert_allclose(updates["video_encoder"]["w"], expected(2.0, 0.3, 0.2), rtol=1e-5)
    layer = updates["text_encoder"]["layer"]
    np.testing.assert_allclose(layer["attention"]["w"], expected(-1.0, 0.02, 0.2), rtol=1e-5)
    np.testing.assert_allclose(layer["crossattention"]["w"], expected(0.5, 0.07, 0.2), rtol=1e-5)
    np.testing.assert_allclose(updates["frame_proj"]["w"], expected(3.0, 0.1, 0.5), rtol=1e-5)
    # The temperature is a scale: no weight decay.
    np.testing.assert_allclose(updates["temperature"], -0.1, rtol=1e-5)


def test_frozen_bert_gets_no_update_and_does_not_count_in_clipping():
    grads = jax.tree.map(lambda p: np.full(np.shape(p), 0.25, np.float32), toy_params())
    grads["text_encoder"]["layer"]["attention"]["w"] = np.full(3, 1e4, np.float32)  # frozen.
    config = optimizer_config(lr=0.1, clip_norm=0.5)
    _, updates = one_update(config, grads, regime="frozen")
    np.testing.assert_array_equal(updates["text_encoder"]["layer"]["attention"]["w"], 0.0)
    # The clipped gradients: 10 trainable entries of 0.25 (norm 0.79) are scaled to norm 0.5; a norm that
    # counted the frozen 1e4s would scale them by ~3e-5 instead.
    params = toy_params()
    clip = optim.gradient_clipping(config)
    clipped, _ = clip.update(grads, clip.init(params), params)
    np.testing.assert_array_equal(clipped["text_encoder"]["layer"]["attention"]["w"], 0.0)
    scale = 0.5 / (0.25 * np.sqrt(10))
    np.testing.assert_allclose(clipped["video_encoder"]["w"], 0.25 * scale, rtol=1e-5)
    np.testing.assert_allclose(clipped["temperature"], 0.25 * scale, rtol=1e-5)


def test_resolve_mesh_shape():
    assert sharding.resolve_mesh_shape((-1, 1), 8) == (8, 1)
    assert sharding.resolve_mesh_shape((2, -1), 8) == (2, 4)
    with pytest.raises(ValueError, match="uses 6 devices but 8"):
        sharding.resolve_mesh_shape((3, 2), 8)
    with pytest.raises(ValueError, match="does not divide"):
        sharding.resolve_mesh_shape((3, -1), 8)


def test_batch_must_divide_devices():
    mesh = sharding.make_mesh((4, 2))
    sharding.check_batch_divisible(16, mesh)
    with pytest.raises(ValueError, match="batch_size=12 is not divisible by the 8 devices"):
        sharding.check_batch_divisible(12, mesh)


def test_fsdp_spec_splits_largest_divisible_axis():
    assert sharding.fsdp_spec((512, 384), 4) == jax.sharding.PartitionSpec("fsdp", None)
    assert sharding.fsdp_spec((3, 3, 17, 32), 2) == jax.sharding.PartitionSpec()  # too small
    assert sharding.fsdp_spec((30524, 384), 8) == jax.sharding.PartitionSpec(None, "fsdp")


@pytest.mark.parametrize("max_norm", [0.1, 1.0, 1e3])
def test_clip_by_global_norm_equals_optax_and_a_numpy_loop(max_norm):
    """Our scalar-multiply clipping against optax's per-element select and a plain NumPy loop: clipped above
    the threshold, untouched below it; all-zero gradients stay zero (no 0/0)."""
    rng = np.random.default_rng(0)
    grads = {
        "a": rng.normal(size=(3, 4)).astype(np.float32),
        "b": [rng.normal(size=5).astype(np.float32)],
    }
    ours, _ = optim.clip_by_global_norm(max_norm).update(grads, optax.EmptyState())
    reference, _ = optax.clip_by_global_norm(max_norm).update(grads, optax.EmptyState())
    norm = np.sqrt(sum(float(np.sum(np.square(g))) for g in jax.tree.leaves(grads)))
    factor = min(1.0, max_norm / norm)
    for got, want, leaf in zip(
        jax.tree.leaves(ours), jax.tree.leaves(reference), jax.tree.leaves(grads), strict=True
    ):
        np.testing.assert_allclose(got, want, rtol=1e-6)
        np.testing.assert_allclose(got, leaf * factor, rtol=1e-6)
    assert (factor < 1.0) == (max_norm < norm)
    zeros = jax.tree.map(np.zeros_like, grads)
    clipped, _ = optim.clip_by_global_norm(max_norm).update(zeros, optax.EmptyState())
    assert all(np.all(np.asarray(g) == 0.0) for g in jax.tree.leaves(clipped))
