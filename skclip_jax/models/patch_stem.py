"""The stem convolution computed from heatmap patches (``heatmap_patches.HeatmapPatches``), not from volumes.

The stem's input is a PYSKL keypoint volume that is zero outside each keypoint's small window, so its 1 x 7 x 7
convolution is a sum of each window's own convolution: a ``S x S`` patch (S = 5 at sigma 0.6) gives a
``(S + 6) x (S + 6)`` block of outputs. One GEMM per keypoint channel turns every patch into its block (the
patch's S*S values against a Toeplitz view of that channel's kernel), and one scatter-add places the blocks.
At the paper's sizes (B = 8, two persons: three patches per keypoint) that is 1.9 G multiply-adds forward
against 32 G for the dense 7 x 7, and no rendered volume; on the 2-core CPU the stem's forward + backward
(rendering included) drops from 1.85 s to 0.56 s. Patches that are zero in the whole batch are skipped (a
``lax.switch`` over prefixes of the patch axis): a batch of one-person clips, whose second person is padding,
costs what one person does (0.23 s against 0.50-0.61 s), and one whose persons never overlap two thirds.

Selected by ``model.slowonly.stem_impl`` (``resolve``): ``"conv"`` renders the volume and convolves it (what the
model did before; the only choice for limb heatmaps, which are not small windows), ``"patches"`` uses this
module, ``"auto"`` takes patches on the CPU where they apply and are estimated cheaper (``patch_cost_ratio``: the
paper's 56 x 56 frames at sigma 0.6 yes; the demo's 32 x 32 at sigma 2.0, whose windows are 14 x 14, no) and the
conv elsewhere (unmeasured on accelerators, whose convolution units are fast on dense volumes). Same parameters
either way: the kernel is ``nn.Conv``'s ``[1, kh, kw, K, C]`` under the same name, and the results agree up to
float rounding (tests/test_heatmap_patches.py checks forward and kernel gradient against ``nn.Conv`` on the
rendered volume).
"""

import functools
from collections.abc import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from skclip_jax import heatmap_patches
from skclip_jax.heatmap_patches import HeatmapPatches

STEM_IMPLS = ("auto", "conv", "patches")

# What one scatter-added block pixel costs, in GEMM multiply-adds, on XLA:CPU (2-core machine: the paper's B=8
# stem spends ~0.45 s on 2 x 76 M scattered / gathered values and ~0.13 s on 3.8 G multiply-adds).
SCATTER_COST_IN_MACS = 90


def unsupported_reason(with_limb: bool, conv1_kernel: Sequence[int]) -> str | None:
    """Why the patch stem cannot compute this stem, or None when it can."""
    if with_limb:
        return "limb heatmaps (data.with_limb=True) are not small windows"
    kt, kh, kw = conv1_kernel
    if kt != 1 or kh % 2 == 0 or kw % 2 == 0:
        return f"the stem kernel {tuple(conv1_kernel)} is not 1 x odd x odd"
    return None


def patch_cost_ratio(
    num_persons: int, sigma: float, conv1_kernel: Sequence[int], height: int, width: int
) -> float:
    """Estimated patch-stem cost over the dense stem's, per keypoint channel and output channel.

    Patches: ``P = 2^M - 1`` per keypoint, each an ``S*S x by*bx`` GEMM row block plus ``by*bx`` scattered
    pixels; dense: ``H*W*kh*kw`` multiply-adds. Measured forward + backward on the 2-core CPU (dense / patches,
    ms; estimate): the paper's sizes at B=8, two persons 1851 / 561 (0.27), one person 1904 / 263 (0.09); 32x32
    at sigma 0.6 187 / 108 (0.83); the demo's 32x32 at sigma 2.0 209 / 601 (6.8); the tests' 16x16 4.5 / 12.1
    (3.3); 32x32 at sigma 1.2 101 / 122 (2.3); 56x56 at sigma 2.0 937 / 1547 (2.2). Below 1 the patches won
    every time, above 2 they lost.
    """
    _, kh, kw = conv1_kernel
    span = heatmap_patches.window_size(sigma)
    patches = (2**num_persons - 1) * (span + kh - 1) * (span + kw - 1)
    return patches * (span * span + SCATTER_COST_IN_MACS) / (height * width * kh * kw)


def resolve(
    stem_impl: str,
    *,
    with_limb: bool,
    conv1_kernel: Sequence[int],
    num_persons: int,
    sigma: float,
    size: int,
    backend: str | None = None,
) -> str:
    """``"patches"`` or ``"conv"``. ``"auto"``: patches on CPU where they apply and ``patch_cost_ratio`` is below 1
    at frame side ``size`` (the smaller of the train and test sizes), else conv."""
    if stem_impl not in STEM_IMPLS:
        raise ValueError(f"stem_impl must be one of {STEM_IMPLS}, got {stem_impl!r}")
    reason = unsupported_reason(with_limb, conv1_kernel)
    if stem_impl == "patches" and reason:
        raise ValueError(f"stem_impl='patches' cannot be used: {reason}")
    if stem_impl != "auto":
        return stem_impl
    backend = backend or jax.default_backend()
    if backend != "cpu" or reason is not None:
        return "conv"
    return (
        "patches" if patch_cost_ratio(num_persons, sigma, conv1_kernel, size, size) < 1 else "conv"
    )


def _toeplitz_kernel(kernel: jax.Array, span: int) -> jax.Array:
    """``[kh, kw, K, C]`` -> ``[K, S*S, (S+kh-1)*(S+kw-1)*C]``: row ``(i, j)`` is patch pixel ``(i, j)``'s block.

    Block pixel ``(a, b)`` is output ``origin + (a, b) - pad``; patch pixel ``(i, j)`` reaches it through kernel
    tap ``(kh - 1 - (a - i), kw - 1 - (b - j))`` when that tap exists (cross-correlation, as ``nn.Conv``).
    """
    kh, kw, k, c = kernel.shape

    def taps(ksize):
        diff = np.arange(span + ksize - 1)[None, :] - np.arange(span)[:, None]  # [i, a] -> a - i
        valid = (diff >= 0) & (diff < ksize)
        return ksize - 1 - np.clip(diff, 0, ksize - 1), valid

    ty, vy = taps(kh)
    tx, vx = taps(kw)
    # [i, j, a, b, K, C], zero where no tap joins the patch pixel to the block pixel.
    full = kernel[ty[:, None, :, None], tx[None, :, None, :]]
    valid = vy[:, None, :, None] & vx[None, :, None, :]
    full = jnp.where(valid[..., None, None], full, 0)
    by, bx = span + kh - 1, span + kw - 1
    return jnp.transpose(full, (4, 0, 1, 2, 3, 5)).reshape(k, span * span, by * bx * c)


def patch_conv(patches: HeatmapPatches, kernel: jax.Array, precision=None) -> jax.Array:
    """``nn.Conv`` (stride 1, symmetric 'same' padding, no bias) of the patches' volume.

    Args:
      patches: ``[..., T, P, K, S, S]`` patches of a ``[..., T, H, W, K]`` volume.
      kernel: ``[1, kh, kw, K, C]`` with odd kh, kw.
      precision: ``lax`` precision of the GEMM.

    Returns:
      ``[..., T, H, W, C]`` in the promoted dtype of values and kernel.
    """
    kt, kh, kw, k, _ = kernel.shape
    if kt != 1 or kh % 2 == 0 or kw % 2 == 0 or k != patches.num_channels:
        raise ValueError(
            f"patch_conv needs a [1, odd, odd, {patches.num_channels}, C] kernel, got {kernel.shape}"
        )
    dtype = jnp.promote_types(patches.values.dtype, kernel.dtype)
    rhs = _toeplitz_kernel(kernel[0].astype(dtype), patches.values.shape[-1])

    def conv_of_first(count: int, values: jax.Array, origin: jax.Array) -> jax.Array:
        return _blocks_scattered(
            values[..., :count, :, :, :].astype(dtype),
            origin[..., :count, :, :],
            rhs,
            (kh, kw),
            patches.height,
            patches.width,
            precision,
        )

    counts = _patch_counts(patches.values.shape[-4])
    if len(counts) == 1:
        return conv_of_first(counts[0], patches.values, patches.origin)
    # The batch's last patch with a nonzero value anywhere picks the shortest prefix that holds it: a batch of
    # one-person clips (the second person padded with zero scores) convolves one patch in three, a batch whose
    # persons never overlap two. The rest are zeros: the result is the same.
    nonzero = jnp.any(patches.values != 0, axis=(*range(patches.values.ndim - 4), -3, -2, -1))
    last = jnp.max(jnp.where(nonzero, jnp.arange(nonzero.shape[0]), 0))
    branch = jnp.searchsorted(jnp.asarray(counts), last + 1)
    branches = [functools.partial(conv_of_first, count) for count in counts]
    return lax.switch(branch, branches, patches.values, patches.origin)


def _patch_counts(num_patches: int) -> tuple[int, ...]:
    """The patch prefixes worth a branch (``person_subsets`` order: singletons first): the first person alone,
    every person without their overlaps, everything."""
    num_persons = (num_patches + 1).bit_length() - 1  # P = 2^M - 1
    return tuple(sorted({1, num_persons, num_patches}))


def _blocks_scattered(values, origin, rhs, kernel_hw, height, width, precision) -> jax.Array:
    """Every patch's block (one GEMM per keypoint channel), scatter-added into ``[..., T, H, W, C]``."""
    k, span = values.shape[-3], values.shape[-1]
    kh, kw = kernel_hw
    lead = values.shape[:-3]  # [..., T, P]
    # [..., P, K, S*S] -> [K, ..., P, S*S]: one GEMM per keypoint channel, batched over K.
    lhs = jnp.moveaxis(values.reshape(*lead, k, span * span), -2, 0)
    blocks = lax.dot_general(lhs, rhs, (((lhs.ndim - 1,), (1,)), ((0,), (0,))), precision=precision)
    by, bx = span + kh - 1, span + kw - 1
    blocks = blocks.reshape(*blocks.shape[:-1], by, bx, rhs.shape[-1] // (by * bx))
    pad = ((kh - 1) // 2, (kw - 1) // 2)
    return heatmap_patches.scatter_blocks(blocks, origin, height, width, offset=pad)


class PatchConv(nn.Module):
    """The stem's ``nn.Conv`` for ``HeatmapPatches`` input: same ``kernel`` parameter (name, shape, init)."""

    features: int
    kernel_size: tuple[int, int, int]
    kernel_init: Callable = nn.initializers.lecun_normal()
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, patches: HeatmapPatches) -> jax.Array:
        kernel = self.param(
            "kernel",
            self.kernel_init,
            (*self.kernel_size, patches.num_channels, self.features),
            self.param_dtype,
        )
        return patch_conv(patches.astype(self.dtype), kernel.astype(self.dtype))
