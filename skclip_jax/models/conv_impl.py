"""How SlowOnly's 3D convolutions are computed: XLA's conv op, or GEMM formulations that are faster on CPU.

Selected by ``model.slowonly.conv_impl`` (``SlowOnly.conv_impl``):
  * ``"xla"``: ``lax.conv_general_dilated`` over ``[B, T, H, W, C]``, what ``nn.Conv`` does by default;
  * ``"gemm"``: the same convolution as matrix products, which XLA:CPU runs through its GEMM (Eigen) at several
    times the speed of its 3D convolution, forward and backward:

      - ``1x1x1`` (any stride): strided slice, then one ``[N, C] @ [C, C']`` product;
      - ``kx1x1`` (SlowOnly's inflated ``3x1x1``, stride 1 in time): one ``[N, C] @ [C, kC']`` product giving
        every tap's contribution, then ``k`` time-shifted sums (``_time_tap_conv``; no copy of the input);
      - ``1xkxk`` with a spatial stride: im2col over the ``k*k`` window at the output's pixels, then one
        product, when the patches stay small (at most ``max_patch_bytes``) and the window is small (``k < 5``);
      - every other ``1xkxk`` (stride 1, the 7x7 stem whose 49-tap patches would take 4 GB at batch 8 at the
        paper's sizes, or patches too large): im2col along the width only and one product that yields every
        kernel row's output at once, then ``k`` row-shifted sums (``_row_conv``): 4x faster than XLA:CPU's
        conv op for the demo's stem, and 1.3-1.6x faster than 9-tap im2col for the paper's stride-1 3x3s,
        forward and backward;
  * ``"auto"``: ``"gemm"`` on the CPU backend, ``"xla"`` elsewhere (cuDNN / the TPU convolution units are
    fastest with the conv op, and the GEMM forms would only add memory traffic there).

Every formulation computes the same sums as the conv op (tests/test_conv_impl.py checks forward and gradients
against ``nn.Conv``); only the order of the floating-point additions differs. Parameters are the same
``[kt, kh, kw, C, C']`` kernel either way, so checkpoints do not depend on the choice.

The functions here have ``lax.conv_general_dilated``'s signature and are passed to ``nn.Conv`` as its
``conv_general_dilated`` field; anything they do not handle (dilation, groups, other layouts) goes to
``lax.conv_general_dilated`` unchanged.
"""

import functools
import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from jax import lax

from skclip_jax.models import remat

CONV_IMPLS = ("auto", "xla", "gemm")

# im2col patches above this size use the row-wise GEMM (`_row_conv`) instead (per call, in the compute dtype).
MAX_PATCH_BYTES = 1 << 30


def resolve(conv_impl: str, backend: str | None = None) -> str:
    """Maps ``"auto"`` to ``"gemm"`` on CPU and ``"xla"`` on other backends; checks the name.

    Args:
      conv_impl: one of ``CONV_IMPLS``.
      backend: a ``jax.default_backend()`` name; default: the current one.

    Returns:
      ``"xla"`` or ``"gemm"``.
    """
    if conv_impl not in CONV_IMPLS:
        raise ValueError(f"conv_impl must be one of {CONV_IMPLS}, got {conv_impl!r}")
    if conv_impl != "auto":
        return conv_impl
    backend = backend or jax.default_backend()
    return "gemm" if backend == "cpu" else "xla"


def _is_channels_last(dimension_numbers, ndim: int) -> bool:
    if dimension_numbers is None:
        return False
    dn = lax.conv_dimension_numbers((1,) * ndim, (1,) * ndim, dimension_numbers)
    spatial = tuple(range(1, ndim - 1))
    return (
        dn.lhs_spec == (0, ndim - 1) + spatial
        and dn.rhs_spec == (ndim - 1, ndim - 2) + tuple(range(ndim - 2))
        and dn.out_spec == (0, ndim - 1) + spatial
    )


def _explicit_padding(padding, ndim: int) -> list[tuple[int, int]] | None:
    if isinstance(padding, str):
        return None
    padding = [tuple(int(v) for v in p) for p in padding]
    return padding if len(padding) == ndim else None


def _matmul(x: jax.Array, w: jax.Array, precision) -> jax.Array:
    """``[..., K] @ [K, C']`` as one 2D GEMM (a reshape of a contiguous array is free)."""
    lead = x.shape[:-1]
    y = jnp.dot(x.reshape(-1, x.shape[-1]), w, precision=precision)
    return y.reshape(lead + (w.shape[-1],))


def _window_slices(x: jax.Array, kernel: Sequence[int], strides: Sequence[int], out: Sequence[int]):
    """For each kernel offset (row-major over the kernel dims), the strided input slice it multiplies."""
    nd = len(kernel)
    for offset in _offsets(kernel):
        start = (0,) + tuple(offset) + (0,)
        limit = (
            (x.shape[0],)
            + tuple(offset[i] + strides[i] * (out[i] - 1) + 1 for i in range(nd))
            + (x.shape[-1],)
        )
        yield lax.slice(x, start, limit, (1,) + tuple(strides) + (1,))


def _offsets(kernel: Sequence[int]):
    if not kernel:
        yield ()
        return
    for a in range(kernel[0]):
        for rest in _offsets(kernel[1:]):
            yield (a,) + rest


def gemm_conv_general_dilated(
    lhs: jax.Array,
    rhs: jax.Array,
    window_strides: Sequence[int],
    padding,
    lhs_dilation: Sequence[int] | None = None,
    rhs_dilation: Sequence[int] | None = None,
    dimension_numbers=None,
    feature_group_count: int = 1,
    batch_group_count: int = 1,
    precision=None,
    preferred_element_type=None,
    max_patch_bytes: int = MAX_PATCH_BYTES,
    low_memory: bool = False,
) -> jax.Array:
    """``lax.conv_general_dilated`` for channels-last inputs, as GEMMs (see the module docstring).

    Handles ``[B, *spatial, C]`` inputs with ``[*kernel, C, C']`` kernels, explicit padding, any strides, no
    dilation, no groups; everything else is passed to ``lax.conv_general_dilated``. With ``low_memory`` the
    zero-padded input and the patches of the multi-tap forms are rebuilt in the backward pass
    (``remat.recompute_in_backward``) instead of kept from the forward pass.

    Returns:
      ``[B, *out_spatial, C']``, as ``lax.conv_general_dilated`` would.
    """
    nd = lhs.ndim - 2
    pads = _explicit_padding(padding, nd)
    simple = (
        _is_channels_last(dimension_numbers, lhs.ndim)
        and pads is not None
        and all(d == 1 for d in (lhs_dilation or (1,) * nd))
        and all(d == 1 for d in (rhs_dilation or (1,) * nd))
        and feature_group_count == 1
        and batch_group_count == 1
        and preferred_element_type is None
    )
    if not simple:
        return lax.conv_general_dilated(
            lhs,
            rhs,
            window_strides,
            padding,
            lhs_dilation=lhs_dilation,
            rhs_dilation=rhs_dilation,
            dimension_numbers=dimension_numbers,
            feature_group_count=feature_group_count,
            batch_group_count=batch_group_count,
            precision=precision,
            preferred_element_type=preferred_element_type,
        )
    kernel = tuple(rhs.shape[:nd])
    strides = tuple(window_strides)
    c_in, c_out = rhs.shape[-2], rhs.shape[-1]
    temporal = nd == 3 and kernel[0] > 1 and kernel[1:] == (1, 1) and pads[1:] == [(0, 0)] * 2
    if temporal and strides[0] == 1:
        # SlowOnly's inflated 3x1x1: taps on the output side, no im2col copy of the input.
        x = lhs[:, :, :: strides[1], :: strides[2]] if strides[1:] != (1, 1) else lhs
        return _time_tap_conv(x, rhs[:, 0, 0], pads[0], precision)
    padding = [(0, 0)] + pads + [(0, 0)]
    padded = [lhs.shape[1 + i] + pads[i][0] + pads[i][1] for i in range(nd)]
    out = tuple((padded[i] - kernel[i]) // strides[i] + 1 for i in range(nd))
    taps = math.prod(kernel)
    patch_bytes = lhs.shape[0] * math.prod(out) * taps * c_in * lhs.dtype.itemsize
    row_wise = patch_bytes > max_patch_bytes or taps >= 25 or strides[1:] == (1, 1)
    # XLA:CPU keeps the patches from the forward pass for the weight gradient (jax.checkpoint's recomputation
    # would be merged back by its CSE); low_memory rebuilds them, and the zero padding, in the backward pass.
    rebuilt = remat.recompute_in_backward_if(low_memory)

    def pad(x):
        return jnp.pad(x, padding) if any(p != (0, 0) for p in pads) else x

    if nd == 3 and kernel[0] == 1 and taps > 1 and row_wise:
        # 1xkxk kernels with spatial stride 1, large ones (the 7x7 stem) or patches too large for im2col:
        # row-wise GEMM (`_row_conv`); strided 3x3s keep im2col, whose patches exist at the output's pixels only.
        def row_conv(x, w):
            # Width padding for the im2col; the height padding goes to the shifted sums (`_row_conv`).
            if pads[0] != (0, 0) or pads[2] != (0, 0):
                x = jnp.pad(x, [(0, 0), pads[0], (0, 0), pads[2], (0, 0)])
            x = x[:, :: strides[0]] if strides[0] != 1 else x
            return _row_conv(x, w, strides[1:], pads[1], precision)

        return rebuilt(row_conv)(lhs, rhs[0])

    def im2col_matmul(x, w):
        cols = list(_window_slices(pad(x), kernel, strides, out))
        patches = cols[0] if len(cols) == 1 else jnp.concatenate(cols, axis=-1)
        return _matmul(patches, w, precision)

    w = rhs.reshape(taps * c_in, c_out)
    if taps == 1:
        return im2col_matmul(lhs, w)
    return rebuilt(im2col_matmul)(lhs, w)


def shifted_tap_sum(
    taps: jax.Array, axis: int, stride: int, out_len: int, pad: tuple[int, int] = (0, 0)
) -> jax.Array:
    """``out[.., j, ..] = sum_i taps_p[.., j * stride + i, .., i, :]``: the output-side taps of a 1D kernel.

    ``taps`` is ``[..., L (at axis), ..., k, C']``: every kernel tap's contribution at every input position, as
    the GEMM forms below produce it; ``taps_p`` is ``taps`` zero-padded by ``pad`` along ``axis`` (the
    convolution's own padding: the GEMM then runs on the unpadded input, whose padded rows would only give
    zeros, and no padded copy is made; XLA fuses each tap's pad and slice into the sum). ``axis`` <
    ``taps.ndim - 2``. The backward pass is written out: each tap's gradient is the output's gradient shifted
    (and, for a stride, spread; for the padding, cropped) into place, stacked on the tap axis. Differentiating
    the forward slices instead gives ``k`` zero-padded copies summed in one XLA loop fusion that also
    re-evaluates the incoming gradient's producer (the BatchNorm backward) ``k`` times per element: 0.6-0.8 s
    of a paper-size B=8 step on 2 CPU cores for the 7x7 stem alone.
    """
    return _shifted_tap_sum(taps, axis, stride, out_len, tuple(pad), tuple(taps.shape))


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2, 3, 4, 5))
def _shifted_tap_sum(taps, axis, stride, out_len, pad, shape):
    span = stride * (out_len - 1) + 1
    zero = jnp.zeros((), taps.dtype)
    config = [(0, 0, 0)] * (taps.ndim - 1)
    config[axis] = (pad[0], pad[1], 0)
    return sum(
        lax.slice_in_dim(lax.pad(taps[..., i, :], zero, config), i, i + span, stride, axis=axis)
        for i in range(taps.shape[-2])
    )


def _shifted_tap_sum_fwd(taps, axis, stride, out_len, pad, shape):
    return _shifted_tap_sum(taps, axis, stride, out_len, pad, shape), None


def _shifted_tap_sum_bwd(axis, stride, out_len, pad, shape, _, g):
    length, k = shape[axis], shape[-2]
    # Materialise the incoming gradient once rather than have XLA fuse its producer into k reads.
    g = lax.optimization_barrier(g)
    span = stride * (out_len - 1) + 1
    zero = jnp.zeros((), g.dtype)
    parts = []
    for i in range(k):
        # Tap i's gradient at input position q is g[(q + pad_lo - i) / stride]: g spread by the stride, shifted
        # by i - pad_lo (negative padding crops what falls in the convolution's zero padding).
        config = [(0, 0, 0)] * g.ndim
        config[axis] = (i - pad[0], length + pad[0] - i - span, stride - 1)
        parts.append(lax.pad(g, zero, config))
    return (jnp.stack(parts, axis=-2),)


_shifted_tap_sum.defvjp(_shifted_tap_sum_fwd, _shifted_tap_sum_bwd)


def _time_tap_conv(x: jax.Array, w: jax.Array, pad: tuple[int, int], precision) -> jax.Array:
    """``kt x 1 x 1`` convolution of ``[B, T, H, W, C]`` by ``[kt, C, C']``, stride 1 in time, as one GEMM.

    One product with the kernel laid out as ``[C, kt * C']`` gives every tap's contribution at every input
    frame; the output is the sum of ``kt`` time-shifted slices of it (zero-padded by ``pad``). Where
    ``C' <= C`` (SlowOnly's 3x1x1 convolutions halve or quarter the width) the product's output is no larger
    than the im2col patches would be, and nothing copies the input: 1.6-1.9x faster than im2col forward +
    backward at the paper's sizes on XLA:CPU. The backward pass is two GEMMs and the shifted sums' adjoint.
    """
    kt, c_in, c_out = w.shape
    t_out = x.shape[1] + pad[0] + pad[1] - kt + 1
    taps = _matmul(x, w.transpose(1, 0, 2).reshape(c_in, kt * c_out), precision)
    taps = taps.reshape(x.shape[:-1] + (kt, c_out))  # [B, T, H, W, kt, C']
    return shifted_tap_sum(taps, 1, 1, t_out, pad)


def _row_conv(
    x: jax.Array, w: jax.Array, strides: Sequence[int], pad_h: tuple[int, int], precision
) -> jax.Array:
    """``1 x kh x kw`` convolution of ``[B, T, H, W, C]`` (padded in width, not height) by ``[kh, kw, C, C']``.

    im2col along the width only (``kw * C`` channels), one product with the kernel laid out as
    ``[kw * C, kh * C']`` that gives every kernel row's contribution at every input row, then a sum of
    ``kh`` row-shifted slices, zero-padded by ``pad_h`` (the product never sees the padding rows, which would
    only give zeros: 10 % of the stem's product, 14 % of a 3x3 at 14x14). The same multiply-adds as the
    convolution, with ``kh`` times smaller patches than full im2col; on XLA:CPU the 7x7 stem runs 2-4x faster
    forward and backward than its conv op.
    """
    kh, kw, c_in, c_out = w.shape
    sh, sw = strides
    ho = (x.shape[2] + pad_h[0] + pad_h[1] - kh) // sh + 1
    wo = (x.shape[3] - kw) // sw + 1
    cols = jnp.concatenate(
        [x[:, :, :, j : j + sw * (wo - 1) + 1 : sw] for j in range(kw)], axis=-1
    )  # [B, T, H, wo, kw * C]
    rows = _matmul(cols, w.transpose(1, 2, 0, 3).reshape(kw * c_in, kh * c_out), precision)
    rows = rows.reshape(rows.shape[:-1] + (kh, c_out))  # [B, T, H, wo, kh, C']
    return shifted_tap_sum(rows, 2, sh, ho, pad_h)


def conv_fn(conv_impl: str, low_memory: bool = False):
    """The ``conv_general_dilated`` callable for ``nn.Conv`` (``None`` = Flax's default, the XLA conv op)."""
    if resolve(conv_impl) != "gemm":
        return None
    if low_memory:
        return functools.partial(gemm_conv_general_dilated, low_memory=True)
    return gemm_conv_general_dilated
