"""remat: recomputation tied to the cotangent gives the same values and gradients, and XLA:CPU keeps less."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from skclip_jax.models import remat


@pytest.mark.parametrize("first", [1.5, 0.0, -0.0, np.inf, -np.inf, np.nan])
def test_after_leaves_the_values_unchanged_whatever_the_dependency(first):
    x = jnp.asarray([[1.0, -2.5, 0.0], [np.inf, -np.inf, 3e-38]], jnp.float32)
    dep = jnp.asarray([first, 2.0], jnp.float32)
    np.testing.assert_array_equal(jax.jit(remat.after)(x, dep), x)
    assert remat.after(x.astype(jnp.bfloat16), dep).dtype == jnp.bfloat16


def _patches(x):
    """Four shifted copies side by side: a stand-in for an im2col."""
    return jnp.concatenate([jnp.roll(x, i, axis=0) for i in range(4)], axis=-1)


def _layer(x, w):
    return jnp.maximum(_patches(x) @ w, 0.0)


def _net(layer, depth):
    def loss(x, ws):
        for w in ws[:depth]:
            x = layer(x, w)
        return jnp.sum(x**2)

    return loss


def _inputs(n, c, depth):
    keys = jax.random.split(jax.random.key(0), depth + 1)
    x = jax.random.normal(keys[0], (n, c))
    ws = [jax.random.normal(k, (4 * c, c)) / np.sqrt(4 * c) for k in keys[1:]]
    return x, ws


def test_recompute_in_backward_equals_plain_autodiff():
    x, ws = _inputs(64, 8, 3)
    plain = jax.value_and_grad(_net(_layer, 3), argnums=(0, 1))
    tied = jax.value_and_grad(_net(remat.recompute_in_backward(_layer), 3), argnums=(0, 1))
    (v_ref, g_ref), (v, g) = jax.jit(plain)(x, ws), jax.jit(tied)(x, ws)
    np.testing.assert_allclose(v, v_ref, rtol=1e-6)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5), g, g_ref)


def test_recompute_in_backward_keeps_the_patches_out_of_peak_memory():
    """Six layers of [N, 4C] patches: autodiff keeps every layer's patches until its weight gradient; the tied
    recomputation keeps the [N, C] inputs only (XLA's own buffer assignment, no run)."""
    n, c, depth = 100_000, 32, 6
    x, ws = _inputs(n, c, depth)

    def temp_bytes(layer):
        grad = jax.jit(jax.grad(_net(layer, depth), argnums=(0, 1)))
        return grad.lower(x, ws).compile().memory_analysis().temp_size_in_bytes

    plain = temp_bytes(_layer)
    tied = temp_bytes(remat.recompute_in_backward(_layer))
    patches = n * 4 * c * 4  # one layer's patches, float32
    assert tied <= plain - 3 * patches, (plain, tied, patches)


def test_recompute_in_backward_takes_bound_arguments():
    f = remat.recompute_in_backward(
        functools.partial(lambda x, w, scale: scale * _layer(x, w), scale=2.0)
    )
    x, ws = _inputs(16, 4, 1)
    np.testing.assert_allclose(f(x, ws[0]), 2.0 * _layer(x, ws[0]), rtol=1e-6)
