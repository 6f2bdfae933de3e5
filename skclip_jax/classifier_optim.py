"""The PoseConv3D baseline's optimizer: PyTorch SGD with momentum and weight decay, clipping, mmcv's step decay.

The original (`configs/plus/*-poseconv3d.py`, PYSKL's SlowOnly recipe) trains with
``SGD(lr=0.01, momentum=0.9, weight_decay=1e-4)``, ``grad_clip=dict(max_norm=40)`` and
``lr_config=dict(policy='step', step=[9, 11])`` over 24 epochs. The decay points are kept as fractions of the run
(`poseconv3d.lr_steps`), so a run measured in steps or in fewer epochs (the `cpu` variants) decays at the same
points of its length.
"""

from collections.abc import Sequence

import jax.numpy as jnp
import ml_collections
import optax

from skclip_jax import optim


def step_decay_schedule(
    base_lr: float,
    boundaries: Sequence[int],
    factor: float,
    warmup_steps: int = 0,
    warmup_ratio: float = 0.1,
) -> optax.Schedule:
    """mmcv's ``step`` policy: ``base_lr * factor ** (number of boundaries <= step)``.

    mmcv counts epochs from 0 and applies the new rate from the first iteration of epoch ``b``, so a boundary
    is the first step at the lower rate (``optax.piecewise_constant_schedule`` switches one step later). An
    optional linear warm-up scales it as mmcv's does (`optim.learning_rate_schedule`).
    """
    bounds = jnp.asarray(sorted(boundaries), jnp.float32)

    def schedule(step):
        step = jnp.asarray(step, jnp.float32)
        passed = jnp.sum((step >= bounds).astype(jnp.float32))
        lr = base_lr * jnp.power(jnp.float32(factor), passed)
        if warmup_steps > 0:
            scale = 1.0 - (1.0 - step / warmup_steps) * (1.0 - warmup_ratio)
            lr = jnp.where(step < warmup_steps, lr * scale, lr)
        return lr

    return schedule


def decay_boundaries(fractions: Sequence[float], total_steps: int) -> tuple[int, ...]:
    """The steps where the rate drops: each fraction of the run, rounded (9/24 of 24 epochs is epoch 9)."""
    return tuple(int(round(f * total_steps)) for f in fractions)


def make_schedule(
    config: ml_collections.ConfigDict, total_steps: int, steps_per_epoch: int
) -> optax.Schedule:
    """The config's step-decay schedule over a run of `total_steps` (warm-up given in epochs; the recipe has none)."""
    return step_decay_schedule(
        config.optim.lr,
        decay_boundaries(config.poseconv3d.lr_steps, total_steps),
        config.poseconv3d.lr_step_factor,
        warmup_steps=int(round(config.optim.warmup_epochs * steps_per_epoch)),
        warmup_ratio=config.optim.warmup_ratio,
    )


def sgd(
    schedule: optax.Schedule, momentum: float, weight_decay: float, clip_norm: float
) -> optax.GradientTransformation:
    """Clip the gradient's global norm (before the decay, as mmcv's OptimizerHook clips before ``step()``), add
    ``weight_decay * param`` to every leaf (PyTorch's coupled decay: no parameter groups), heavy-ball momentum
    ``buf = momentum * buf + g`` (PyTorch's, whose first step is ``buf = g``), then ``-lr * buf``."""
    return optax.chain(
        optim.clip_by_global_norm(clip_norm),
        optax.add_decayed_weights(weight_decay),
        optax.trace(decay=momentum, nesterov=False),
        optax.scale_by_learning_rate(schedule),
    )


def make_optimizer(
    config: ml_collections.ConfigDict, schedule: optax.Schedule
) -> optax.GradientTransformation:
    """The config's SGD: `optim.weight_decay`, `optim.clip_norm` and `poseconv3d.momentum`."""
    return sgd(
        schedule, config.poseconv3d.momentum, config.optim.weight_decay, config.optim.clip_norm
    )
