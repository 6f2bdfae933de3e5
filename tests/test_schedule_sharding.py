"""The learning-rate schedule against mmcv's CosineAnnealing + linear warm-up formula; mesh and batch checks."""

import math

import jax
import numpy as np
import pytest

from skclip_jax import sharding, train


def _mmcv_lr(step, base_lr, total, warmup, ratio, min_lr):
    """mmcv CosineAnnealingLrUpdaterHook(by_epoch=False) with warmup='linear', written out per step."""
    regular = min_lr + (base_lr - min_lr) * (1 + math.cos(math.pi * step / total)) / 2
    if step < warmup:
        k = (1 - step / warmup) * (1 - ratio)
        return regular * (1 - k)
    return regular


def test_schedule_matches_mmcv_formula():
    schedule = train.learning_rate_schedule(1e-3, 1000, 100, 0.1, 0.0)
    for step in [0, 1, 50, 99, 100, 101, 500, 999, 1000]:
        np.testing.assert_allclose(
            float(schedule(step)),
            _mmcv_lr(step, 1e-3, 1000, 100, 0.1, 0.0),
            rtol=1e-5,
            atol=1e-9,  # float32 cos near the end of the cosine
        )
    assert float(schedule(0)) == pytest.approx(1e-4)  # warm-up starts at ratio * lr.


def test_text_encoder_gets_its_learning_rate_multiplier():
    params = {
        "text_encoder": {"w": np.ones(3)},
        "frame_proj": {"w": np.ones(3)},
        "temperature": np.float32(0.07),
    }
    labels = train.param_group_labels(params, "finetune")
    assert labels == {
        "text_encoder": {"w": "text"},
        "frame_proj": {"w": "default"},
        "temperature": "default",
    }
    frozen = train.param_group_labels(
        {"text_encoder": {"layer": {"crossattention": {"w": 1}, "attention": {"w": 1}}}}, "frozen"
    )
    assert frozen["text_encoder"]["layer"] == {
        "crossattention": {"w": "default"},  # new layers train at the full rate.
        "attention": {"w": "frozen"},
    }
    finetune = train.param_group_labels(
        {"text_encoder": {"layer": {"crossattention": {"w": 1}, "attention": {"w": 1}}}}, "finetune"
    )
    assert finetune["text_encoder"]["layer"]["crossattention"] == {"w": "default"}
    assert finetune["text_encoder"]["layer"]["attention"] == {"w": "text"}


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
