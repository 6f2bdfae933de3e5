"""The GEMM formulations of SlowOnly's convolutions equal nn.Conv (forward and gradients)."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from skclip_jax.models import conv_impl
from skclip_jax.models.slowonly import SlowOnly

# (input shape [B, T, H, W, C], kernel, strides, features): every kind of conv SlowOnly has, small.
CASES = [
    ((2, 4, 9, 9, 3), (1, 7, 7), (1, 1, 1), 4),  # stem
    ((2, 4, 8, 8, 5), (1, 1, 1), (1, 1, 1), 6),
    ((2, 4, 8, 8, 5), (1, 1, 1), (1, 2, 2), 6),  # projection shortcut
    ((2, 4, 7, 7, 5), (1, 1, 1), (2, 2, 2), 6),  # odd sizes, temporal stride
    ((2, 4, 8, 8, 5), (3, 1, 1), (1, 1, 1), 6),  # inflated first conv
    ((2, 5, 7, 7, 5), (3, 1, 1), (1, 2, 2), 3),  # inflated, spatial stride, fewer output channels
    ((2, 6, 4, 4, 5), (5, 1, 1), (1, 1, 1), 6),  # a longer temporal kernel
    ((2, 6, 4, 4, 5), (3, 1, 1), (2, 1, 1), 6),  # temporal stride: im2col along time instead
    ((2, 4, 8, 8, 5), (1, 3, 3), (1, 1, 1), 6),
    ((2, 4, 8, 8, 5), (1, 3, 3), (1, 2, 2), 6),
    ((2, 5, 7, 7, 5), (1, 3, 3), (2, 2, 2), 6),  # odd sizes, temporal + spatial stride
    ((1, 4, 6, 6, 3), (3, 3, 3), (1, 2, 1), 2),  # a full 3D kernel (not in SlowOnly) still matches
]


def _conv(kernel, strides, features, fn=None, **kwargs):
    return nn.Conv(
        features,
        kernel,
        strides=strides,
        padding=[((k - 1) // 2, (k - 1) // 2) for k in kernel],
        use_bias=False,
        conv_general_dilated=fn,
        **kwargs,
    )


# max_patch_bytes=0 forces the row-wise GEMM on strided 1xkxk kernels too (stride-1 ones and the stem always take it).
PARAMS = [(*case, conv_impl.MAX_PATCH_BYTES) for case in CASES] + [
    (*case, 0) for case in CASES if case[1][0] == 1 and case[1] != (1, 1, 1)
]


@pytest.mark.parametrize("shape,kernel,strides,features,max_patch_bytes", PARAMS)
def test_gemm_conv_equals_nn_conv(shape, kernel, strides, features, max_patch_bytes):
    """Forward and gradients w.r.t. input and kernel; max_patch_bytes=0 forces the row-wise GEMM."""

    def gemm(*args, **kwargs):
        return conv_impl.gemm_conv_general_dilated(*args, max_patch_bytes=max_patch_bytes, **kwargs)

    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal(shape, np.float32))
    ref_conv = _conv(kernel, strides, features)
    new_conv = _conv(kernel, strides, features, gemm)
    params = ref_conv.init(jax.random.key(1), x)
    assert jax.tree.map(jnp.shape, new_conv.init(jax.random.key(1), x)) == jax.tree.map(
        jnp.shape, params
    )
    y_ref = ref_conv.apply(params, x)
    y = new_conv.apply(params, x)
    assert y.shape == y_ref.shape
    np.testing.assert_allclose(y, y_ref, rtol=1e-5, atol=1e-5)

    cot = jnp.asarray(rng.standard_normal(y_ref.shape, np.float32))

    def grads(conv):
        return jax.grad(lambda p, x: jnp.sum(conv.apply(p, x) * cot), argnums=(0, 1))(params, x)

    (gp_ref, gx_ref), (gp, gx) = grads(ref_conv), grads(new_conv)
    np.testing.assert_allclose(gx, gx_ref, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(
        gp["params"]["kernel"], gp_ref["params"]["kernel"], rtol=1e-5, atol=1e-4
    )


def test_temporal_kernel_copies_no_input():
    """A 3x1x1 convolution (stride 1 in time) is one GEMM and shifted sums: no im2col concatenation."""
    x = jnp.ones((2, 6, 4, 4, 8))
    w = jnp.ones((3, 1, 1, 8, 4))

    def jaxpr(strides):
        conv = functools.partial(
            conv_impl.gemm_conv_general_dilated,
            window_strides=strides,
            padding=[(1, 1), (0, 0), (0, 0)],
            dimension_numbers=("NDHWC", "DHWIO", "NDHWC"),
        )
        return str(jax.make_jaxpr(conv)(x, w))

    ops = jaxpr((1, 1, 1))
    assert ops.count("dot_general") == 1 and "concatenate" not in ops and "conv_general" not in ops
    # With a temporal stride it takes the im2col path (and matches nn.Conv, in the test above).
    assert "concatenate" in jaxpr((2, 1, 1))


def test_other_layouts_fall_back_to_lax():
    """Dilation, groups and NCHW layouts are not reformulated: they give exactly lax's result."""
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((1, 4, 6, 6, 4), np.float32))
    for kwargs in ({"kernel_dilation": (1, 2, 2)}, {"feature_group_count": 2}):
        ref = _conv((1, 3, 3), (1, 1, 1), 4, **kwargs)
        new = _conv((1, 3, 3), (1, 1, 1), 4, conv_impl.gemm_conv_general_dilated, **kwargs)
        params = ref.init(jax.random.key(0), x)
        np.testing.assert_array_equal(new.apply(params, x), ref.apply(params, x))


def test_resolve():
    assert conv_impl.resolve("auto", "cpu") == "gemm"
    assert conv_impl.resolve("auto", "gpu") == "xla"
    assert conv_impl.resolve("auto", "tpu") == "xla"
    assert conv_impl.resolve("xla", "cpu") == "xla"
    assert conv_impl.resolve("gemm", "gpu") == "gemm"
    with pytest.raises(ValueError, match="conv_impl"):
        conv_impl.resolve("cudnn")


def test_default_is_xla_and_auto_is_gemm_on_cpu():
    assert SlowOnly().conv_impl == "xla"
    assert jax.default_backend() == "cpu" and conv_impl.resolve("auto") == "gemm"
    assert conv_impl.conv_fn("auto") is conv_impl.gemm_conv_general_dilated
    assert conv_impl.conv_fn("xla") is None


@pytest.mark.parametrize(
    "shape, axis, stride, out_len, pad",
    [
        ((2, 9, 3, 4, 5), 1, 1, 6, (0, 0)),
        ((2, 3, 11, 4, 3, 5), 2, 2, 5, (0, 0)),
        ((6, 3, 2, 2), 0, 1, 5, (0, 0)),
        ((2, 7, 3, 4, 5), 1, 1, 7, (2, 2)),  # 'SAME' padding of a 5-tap kernel
        ((2, 3, 10, 4, 3, 5), 2, 2, 5, (1, 1)),  # stride 2, pad 1: one padded row unused at the end
        ((2, 3, 9, 2, 7, 3), 2, 1, 9, (3, 3)),  # the stem's 7 rows
        ((6, 3, 2, 2), 0, 1, 7, (1, 2)),  # asymmetric
    ],
)
def test_shifted_tap_sum_and_its_backward_equal_the_plain_slices(shape, axis, stride, out_len, pad):
    """The written-out adjoint equals autodiff of the same sum of strided slices of the zero-padded taps."""
    taps = jnp.asarray(np.random.default_rng(3).standard_normal(shape).astype(np.float32))
    k, span = shape[-2], stride * (out_len - 1) + 1

    def plain(t):
        widths = [(0, 0)] * t.ndim
        widths[axis] = pad
        t = jnp.pad(t, widths)
        return sum(
            jax.lax.slice_in_dim(t[..., i, :], i, i + span, stride, axis=axis) for i in range(k)
        )

    out, vjp = jax.vjp(lambda t: conv_impl.shifted_tap_sum(t, axis, stride, out_len, pad), taps)
    ref, vjp_ref = jax.vjp(plain, taps)
    np.testing.assert_allclose(out, ref, rtol=1e-6, atol=1e-6)
    g = jnp.asarray(np.random.default_rng(4).standard_normal(ref.shape).astype(np.float32))
    np.testing.assert_allclose(vjp(g)[0], vjp_ref(g)[0], rtol=1e-6, atol=1e-6)
    # under jit as well (the shapes it pads to must be static)
    jitted = jax.jit(
        jax.grad(lambda t: jnp.sum(conv_impl.shifted_tap_sum(t, axis, stride, out_len, pad) * g))
    )
    np.testing.assert_allclose(jitted(taps), vjp_ref(g)[0], rtol=1e-6, atol=1e-6)
