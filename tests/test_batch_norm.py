"""The fused BatchNorm (+ ReLU) equals nn.BatchNorm (+ nn.relu): outputs, gradients, running statistics."""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from skclip_jax.config_lib import validation as config_validation
from skclip_jax.models import batch_norm
from skclip_jax.models.slowonly import SlowOnly


def _close(a, b, tol):
    a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
    err = float(np.max(np.abs(a - b)))
    assert err <= tol * max(float(np.max(np.abs(b))), 1e-6), (err, b.shape)


class _Layer(nn.Module):
    """nn.BatchNorm (+ nn.relu) or the fused BatchNorm, under the same variable names."""

    fused: bool
    relu: bool
    dtype: Any = None

    @nn.compact
    def __call__(self, x, train):
        kwargs = dict(use_running_average=not train, momentum=0.9, epsilon=1e-5, dtype=self.dtype)
        if self.fused:
            return batch_norm.BatchNorm(relu=self.relu, name="bn", **kwargs)(x)
        y = nn.BatchNorm(use_fast_variance=False, name="bn", **kwargs)(x)
        return nn.relu(y) if self.relu else y


def _flax_layer(relu, dtype=None):
    return _Layer(fused=False, relu=relu, dtype=dtype)


def _fused_layer(relu, dtype=None):
    return _Layer(fused=True, relu=relu, dtype=dtype)


def _run(layer, variables, x, g, train):
    def loss(params, x):
        out, mutated = layer.apply(
            {"params": params, "batch_stats": variables["batch_stats"]},
            x,
            train,
            mutable=["batch_stats"],
        )
        return jnp.sum(out.astype(jnp.float32) * g), (out, mutated)

    (_, (out, mutated)), grads = jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)(
        variables["params"], x
    )
    return out, mutated, grads


@pytest.mark.parametrize("relu", [True, False])
@pytest.mark.parametrize("train", [True, False])
def test_fused_equals_flax(relu, train):
    rng = np.random.default_rng(0)
    shape = (3, 4, 5, 6, 7)
    x = jnp.asarray(rng.normal(0.7, 2.0, shape).astype(np.float32))
    g = jnp.asarray(rng.standard_normal(shape).astype(np.float32))
    ref, fused = _flax_layer(relu), _fused_layer(relu)
    variables = ref.init(jax.random.key(0), x, False)
    assert jax.tree.structure(variables) == jax.tree.structure(
        fused.init(jax.random.key(0), x, False)
    )
    # Non-trivial parameters and running statistics, so every term of the backward pass shows.
    variables = {
        "params": {
            "bn": {
                "scale": jnp.asarray(rng.uniform(0.5, 1.5, 7).astype(np.float32)),
                "bias": jnp.asarray(rng.normal(0, 0.5, 7).astype(np.float32)),
            }
        },
        "batch_stats": {
            "bn": {
                "mean": jnp.asarray(rng.normal(0, 1, 7).astype(np.float32)),
                "var": jnp.asarray(rng.uniform(0.5, 4, 7).astype(np.float32)),
            }
        },
    }
    out_ref, stats_ref, (gp_ref, gx_ref) = _run(ref, variables, x, g, train)
    out, stats, (gp, gx) = _run(fused, variables, x, g, train)
    assert out.dtype == out_ref.dtype
    if relu:
        assert 0.2 < float(jnp.mean(out > 0)) < 0.8  # the mask matters
    _close(out, out_ref, 1e-6)
    jax.tree.map(lambda a, b: _close(a, b, 1e-6), stats, stats_ref)
    _close(gx, gx_ref, 1e-5)
    jax.tree.map(lambda a, b: _close(a, b, 1e-5), gp, gp_ref)


def test_statistics_cotangents_are_exact():
    """A loss on the returned batch mean and variance differentiates as autodiff of the same formula."""
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.normal(0.3, 1.5, (4, 3, 5)).astype(np.float32))
    scale = jnp.asarray(rng.uniform(0.5, 1.5, 5).astype(np.float32))
    bias = jnp.asarray(rng.normal(0, 0.5, 5).astype(np.float32))
    w = jnp.asarray(rng.standard_normal((3, 5)).astype(np.float32))

    def loss(fn, x, scale, bias):
        y, mean, var = fn(x, scale, bias, 1e-5, True)
        return (
            jnp.sum(y * x) + jnp.dot(w[0], mean) + jnp.dot(w[1], var) + jnp.sum(w[2] * var * mean)
        )

    fused = jax.grad(lambda *a: loss(batch_norm.batch_norm_train, *a), argnums=(0, 1, 2))(
        x, scale, bias
    )
    plain = jax.grad(lambda *a: loss(batch_norm._forward, *a), argnums=(0, 1, 2))(x, scale, bias)
    for a, b in zip(fused, plain, strict=True):
        _close(a, b, 1e-5)


def test_bfloat16_output_and_float32_statistics():
    x = jnp.asarray(np.random.default_rng(2).normal(1, 2, (2, 3, 4, 4, 6)), jnp.bfloat16)
    ref, fused = _flax_layer(True, dtype=jnp.bfloat16), _fused_layer(True, dtype=jnp.bfloat16)
    variables = ref.init(jax.random.key(0), x, False)
    g = jnp.ones(x.shape, jnp.float32)
    out_ref, stats_ref, (_, gx_ref) = _run(ref, variables, x, g, True)
    out, stats, (_, gx) = _run(fused, variables, x, g, True)
    assert out.dtype == out_ref.dtype == jnp.bfloat16 and gx.dtype == jnp.bfloat16
    assert stats["batch_stats"]["bn"]["var"].dtype == jnp.float32
    _close(out, out_ref, 1e-2)
    jax.tree.map(lambda a, b: _close(a, b, 1e-6), stats, stats_ref)
    _close(gx, gx_ref, 2e-2)


def test_backward_reads_the_input_in_two_passes():
    """The backward pass: one fusion of the two reductions and one elementwise pass, no saved output."""
    x = jnp.ones((2, 3, 4, 4, 8))
    scale, bias = jnp.ones(8), jnp.zeros(8)

    def loss(x, scale, bias):
        return jnp.sum(batch_norm.batch_norm_train(x, scale, bias, 1e-5, True)[0] ** 2)

    _, vjp = jax.vjp(lambda x: batch_norm.batch_norm_train(x, scale, bias, 1e-5, True)[0], x)
    residual_shapes = [leaf.shape for leaf in jax.tree.leaves(vjp)]
    assert residual_shapes.count(x.shape) == 1  # the input only, not the output as well
    bwd = jax.make_jaxpr(jax.grad(loss))(x, scale, bias)
    names = [e.primitive.name for e in bwd.eqns]
    # forward: mean, mean of squares, the loss; backward: sum(dy); then sum(dy * x) in the backward's `cond`
    # (its other branch, and the forward cond's, the two-pass sums for ill-conditioned channels)
    assert names.count("reduce_sum") == 4, names
    assert names.count("cond") == 2, names


def test_no_centred_copy_of_the_input():
    """XLA:CPU writes no ``x - mean`` array: the compiled forward + backward needs almost no temporary memory.

    With the two-pass statistics (the previous form) the reduction of ``(x - mean)^2`` took a materialised
    centred input: a temporary as large as ``x`` here, kept until the backward pass in the whole model.
    """
    x = jnp.ones((2, 4, 8, 8, 16))
    scale, bias = jnp.ones(16), jnp.zeros(16)
    g = jnp.ones_like(x)

    def loss(x, scale, bias):
        return jnp.sum(batch_norm.batch_norm_train(x, scale, bias, 1e-5, True)[0] * g)

    compiled = jax.jit(jax.grad(loss, (0, 1, 2))).lower(x, scale, bias).compile()
    temp = compiled.memory_analysis().temp_size_in_bytes
    assert temp < 0.25 * x.nbytes, temp / x.nbytes


@pytest.mark.parametrize("guarded", [True, False])
def test_large_mean_falls_back_to_two_passes(guarded, monkeypatch):
    """Channels whose mean dwarfs their spread get the two-pass statistics and backward sum.

    One pass (``E[x^2] - mean^2``) loses most digits there; ``guarded=False`` turns the fallback off to show
    that this input needs it.
    """
    if not guarded:
        monkeypatch.setattr(batch_norm, "ILL_CONDITIONED", float("inf"))
    rng = np.random.default_rng(3)
    shape = (4, 6, 8, 8, 5)
    x = jnp.asarray((1000.0 + rng.standard_normal(shape)).astype(np.float32))
    g = jnp.asarray(rng.standard_normal(shape).astype(np.float32))
    ref, fused = _flax_layer(False), _fused_layer(False)
    variables = ref.init(jax.random.key(0), x, False)
    out_ref, stats_ref, (_, gx_ref) = _run(ref, variables, x, g, True)
    out, stats, (_, gx) = _run(fused, variables, x, g, True)
    if guarded:
        _close(out, out_ref, 1e-5)
        _close(stats["batch_stats"]["bn"]["var"], stats_ref["batch_stats"]["bn"]["var"], 1e-5)
        _close(gx, gx_ref, 1e-4)
    else:
        with pytest.raises(AssertionError):
            _close(out, out_ref, 1e-2)


def test_resolve_and_defaults():
    assert config_validation.BATCH_NORM_IMPLS is batch_norm.BATCH_NORM_IMPLS  # one list, imported
    assert batch_norm.resolve("auto", "cpu") == "fused"
    assert batch_norm.resolve("auto", "gpu") == "flax"
    assert batch_norm.resolve("auto", "tpu") == "flax"
    assert batch_norm.resolve("flax", "cpu") == "flax"
    assert batch_norm.resolve("fused", "gpu") == "fused"
    with pytest.raises(ValueError, match="batch_norm_impl"):
        batch_norm.resolve("cudnn")
    assert SlowOnly().batch_norm_impl == "flax"
