"""SlowOnly's BatchNorm (+ ReLU) with a hand-written backward pass, for memory-bound backends (CPU).

Selected by ``model.slowonly.batch_norm_impl`` (``SlowOnly.batch_norm_impl``):
  * ``"flax"``: ``nn.BatchNorm`` then ``nn.relu``, differentiated by JAX;
  * ``"fused"``: ``BatchNorm`` below. Over the batch axes the forward pass reads its input three times (the
    sums of ``x`` and ``x^2``, then the normalised output with the ReLU applied; no centred copy
    ``x - mean`` is written, see ``_batch_stats``); the backward pass reads the input and the incoming gradient
    twice (the reductions, then one elementwise pass that writes the input's gradient) and rebuilds the ReLU
    mask from the input instead of saving the output. XLA:CPU runs the
    autodiff of ``nn.BatchNorm`` + ReLU in more passes: at the paper's sizes (B=8, float32) forward +
    backward take 0.077 s instead of 0.110 s on ``[8, 48, 56, 56, 32]`` and 0.085 instead of 0.137 s on
    ``[8, 48, 28, 28, 128]`` (2-core CPU, huge pages);
  * ``"auto"``: ``"fused"`` on the CPU backend, ``"flax"`` elsewhere (GPU/TPU fuse the autodiff well, and the
    GPU path has not been timed with the fused form).

Both compute the same function (``tests/test_batch_norm.py`` compares outputs, gradients and the running
statistics with ``nn.BatchNorm``); the variables are ``nn.BatchNorm``'s (``params/scale``, ``params/bias``,
``batch_stats/mean``, ``batch_stats/var``), so checkpoints do not depend on the choice.
"""

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

BATCH_NORM_IMPLS = ("auto", "flax", "fused")

Dtype = Any


def resolve(batch_norm_impl: str, backend: str | None = None) -> str:
    """Maps ``"auto"`` to ``"fused"`` on CPU and ``"flax"`` on other backends; checks the name."""
    if batch_norm_impl not in BATCH_NORM_IMPLS:
        raise ValueError(
            f"batch_norm_impl must be one of {BATCH_NORM_IMPLS}, got {batch_norm_impl!r}"
        )
    if batch_norm_impl != "auto":
        return batch_norm_impl
    backend = backend or jax.default_backend()
    return "fused" if backend == "cpu" else "flax"


# Above this mean^2 / variance ratio in some channel, the one-pass statistics fall back to two passes.
ILL_CONDITIONED = 100.0


def _batch_stats(x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Mean and biased variance over every axis but the last, as ``E[x^2] - mean^2`` where that is accurate.

    Both sums read ``x`` itself, so XLA:CPU computes them in its fast reduction kernels without writing the
    centred input ``x - mean`` to memory (the two-pass form's reduction needs it materialised, and XLA then
    kept it alive until the backward pass: 2.2 GB of a paper-size B=8 step). One pass loses accuracy to
    cancellation where ``mean^2`` dwarfs the variance; if any channel's ratio exceeds ``ILL_CONDITIONED``
    (relative error then up to ~1e-4), the variance is recomputed about the mean, as
    ``nn.BatchNorm(use_fast_variance=False)`` and PyTorch do (``lax.cond``: that pass runs only then).
    """
    axes = tuple(range(x.ndim - 1))
    mean = jnp.mean(x, axes)
    var = jnp.mean(jnp.square(x), axes) - jnp.square(mean)
    return mean, lax.cond(
        _ill_conditioned(mean, var),
        lambda: jnp.mean(jnp.square(x - mean), axes),
        lambda: jnp.maximum(var, 0.0),
    )


def _ill_conditioned(mean: jax.Array, var: jax.Array) -> jax.Array:
    return jnp.any(jnp.square(mean) > ILL_CONDITIONED * var)


def _normalize(x32, mean, var, scale, bias, epsilon, relu):
    """``(x - mean) * rsqrt(var + eps) * scale + bias`` (+ ReLU), in ``nn.BatchNorm``'s order of operations."""
    y = (x32 - mean) * (lax.rsqrt(var + epsilon) * scale) + bias
    return jnp.maximum(y, 0.0) if relu else y


def _forward(x, scale, bias, epsilon, relu):
    x32 = x.astype(jnp.float32)
    mean, var = _batch_stats(x32)
    return _normalize(x32, mean, var, scale, bias, epsilon, relu), mean, var


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def batch_norm_train(x, scale, bias, epsilon: float, relu: bool):
    """Training-mode BatchNorm over all axes but the last, optionally followed by a ReLU.

    Args:
      x: ``[..., C]`` activations (any float dtype; statistics and output in float32).
      scale, bias: ``[C]`` float32.
      epsilon: added to the variance.
      relu: apply ``max(., 0)`` to the output.

    Returns:
      ``(y, mean, var)``: the float32 output and the batch mean and biased variance (for the running averages).
    """
    return _forward(x, scale, bias, epsilon, relu)


def _batch_norm_fwd(x, scale, bias, epsilon, relu):
    y, mean, var = _forward(x, scale, bias, epsilon, relu)
    return (y, mean, var), (x, mean, var, scale, bias)


def _batch_norm_bwd(epsilon, relu, residuals, cotangents):
    x, mean, var, scale, bias = residuals
    dy, dmean, dvar = cotangents
    axes = tuple(range(x.ndim - 1))
    n = x.size // x.shape[-1]
    rstd = lax.rsqrt(var + epsilon)
    x32 = x.astype(jnp.float32)
    xc = x32 - mean  # fused into each pass below, never written out
    if relu:  # the mask from the input, so the output need not be kept for the backward pass
        dy = jnp.where(xc * (rstd * scale) + bias > 0, dy, 0.0)
    sum_dy = jnp.sum(dy, axes)
    # sum(dy * xc) without materialising xc (see _batch_stats), exactly where the mean is large. Each branch
    # computes from x: a branch that used `xc` would have XLA write it out as the cond's operand.
    sum_dy_xc = lax.cond(
        _ill_conditioned(mean, var),
        lambda: jnp.sum(dy * (x32 - mean), axes),
        lambda: jnp.sum(dy * x32, axes) - mean * sum_dy,
    )
    # y = xc * rstd * scale + bias, with mean and rstd functions of x; plus the statistics' own cotangents
    # (zero in training, where the running averages are not differentiated, but kept exact).
    dx = (
        (rstd * scale) * (dy - sum_dy / n - xc * (rstd * rstd * sum_dy_xc / n))
        + dmean / n
        + xc * (2.0 * dvar / n)
    )
    return dx.astype(x.dtype), sum_dy_xc * rstd, sum_dy


batch_norm_train.defvjp(_batch_norm_fwd, _batch_norm_bwd)


class BatchNorm(nn.Module):
    """``nn.BatchNorm(axis=-1, use_fast_variance=False)`` (+ an optional ReLU) with a hand-written backward pass.

    The same variables, running-average update (``momentum * old + (1 - momentum) * batch``, biased variance)
    and float32 statistics as ``nn.BatchNorm``; the output is cast to ``dtype`` (default: the input's).
    """

    use_running_average: bool
    momentum: float = 0.99
    epsilon: float = 1e-5
    scale_init: nn.initializers.Initializer = nn.initializers.ones
    relu: bool = False
    dtype: Dtype | None = None

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        features = x.shape[-1]
        scale = self.param("scale", self.scale_init, (features,), jnp.float32)
        bias = self.param("bias", nn.initializers.zeros, (features,), jnp.float32)
        ra_mean = self.variable("batch_stats", "mean", jnp.zeros, (features,), jnp.float32)
        ra_var = self.variable("batch_stats", "var", jnp.ones, (features,), jnp.float32)
        if self.use_running_average:
            y = _normalize(
                x.astype(jnp.float32),
                ra_mean.value,
                ra_var.value,
                scale,
                bias,
                self.epsilon,
                self.relu,
            )
        else:
            y, mean, var = batch_norm_train(x, scale, bias, self.epsilon, self.relu)
            if not self.is_initializing():
                ra_mean.value = self.momentum * ra_mean.value + (1 - self.momentum) * mean
                ra_var.value = self.momentum * ra_var.value + (1 - self.momentum) * var
        dtype = self.dtype or jnp.promote_types(x.dtype, jnp.float32)
        return y.astype(dtype)
