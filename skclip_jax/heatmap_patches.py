"""Keypoint heatmaps as small patches: what the stem needs of a volume, without the volume.

A PYSKL keypoint heatmap is zero outside each point's truncated 3-sigma window: at sigma 0.6 a window holds at
most 5 x 5 of the 56 x 56 pixels, so ~98 % of a rendered ``[T, H, W, K]`` volume is zeros that the 7 x 7 stem
convolution multiplies anyway. ``HeatmapPatches`` keeps only the windows (their corner and their values), and
``models/patch_stem.py`` convolves the windows alone.

Persons combine by ``max`` in PYSKL's canvas, not by a sum. A sum of patches still reproduces the volume exactly
through inclusion-exclusion: ``max(a, b) = a + b - min(a, b)``, and for M persons the max is the signed sum over
the 2^M - 1 non-empty subsets S of ``(-1)^(|S|+1) min_{s in S}``. Each subset's minimum is zero outside the
window of its first member (its anchor), so it is one more patch on the anchor's window. M = 2 (our configs)
gives 3 patches per keypoint; the last is zero unless two persons' same joints come within a few pixels.
``render_patches(keypoint_patches(...))`` equals ``heatmaps.render_heatmaps`` up to float rounding
(tests/test_heatmap_patches.py).
"""

import itertools
import math
from collections.abc import Sequence

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from skclip_jax import heatmaps


@flax.struct.dataclass
class HeatmapPatches:
    """Keypoint heatmap volumes ``[..., T, height, width, K]`` as a sum of signed square patches.

    Attributes:
      origin: ``[..., T, P, K, 2]`` int32 (row, column) of each patch's first pixel; may be negative (after a
        flip) or place part of the patch outside the frame, where its values are zero.
      values: ``[..., T, P, K, S, S]`` patch values (S = ``window_size(sigma)``); pixel ``(i, j)`` of a patch
        lands on ``origin + (i, j)``.
      height: frame height H.
      width: frame width W.
    """

    origin: jax.Array
    values: jax.Array
    height: int = flax.struct.field(pytree_node=False)
    width: int = flax.struct.field(pytree_node=False)

    @property
    def num_channels(self) -> int:
        return self.values.shape[-3]

    @property
    def shape(self) -> tuple[int, ...]:
        """The shape of the volume these patches stand for, ``[..., T, H, W, K]``."""
        return (*self.values.shape[:-4], self.height, self.width, self.num_channels)

    def astype(self, dtype) -> "HeatmapPatches":
        return self.replace(values=self.values.astype(dtype))


def window_size(sigma: float) -> int:
    """Side of the largest truncated 3-sigma window: ``trunc(mu + 3s) - trunc(mu - 3s) + 1 <= floor(6s) + 2``.

    The margin covers float32 rounding of ``mu +- 3s`` where 6s is just below a whole number.
    """
    return math.floor(6 * sigma + 1e-3) + 2


def _window_start(mu: jax.Array, size: int, sigma: float) -> jax.Array:
    """First pixel of each coordinate's window, clamped into the frame (0 for NaN/inf, whose window is empty)."""
    lo = jnp.trunc(mu - 3 * sigma)
    return jnp.where(jnp.isfinite(lo), jnp.clip(lo, 0, size - 1), 0.0)


def person_subsets(num_persons: int) -> list[tuple[int, ...]]:
    """The non-empty subsets of the persons, singletons first: one patch each (inclusion-exclusion)."""
    return [
        s for r in range(1, num_persons + 1) for s in itertools.combinations(range(num_persons), r)
    ]


def keypoint_patches(
    keypoint: jax.Array,
    keypoint_score: jax.Array,
    height: int,
    width: int,
    sigma: float = 0.6,
    eps: float = heatmaps.PYSKL_EPS,
    dtype: jnp.dtype = jnp.float32,
) -> HeatmapPatches:
    """PYSKL keypoint heatmaps (``render_heatmaps(..., with_kp=True, with_limb=False)``) as patches.

    Args:
      keypoint: ``[..., M, T, K, 2]`` (x, y) pixel coordinates.
      keypoint_score: ``[..., M, T, K]``; points below ``eps`` (or NaN) are not drawn.
      height: frame height H (static).
      width: frame width W (static).
      sigma: Gaussian sigma in pixels.
      eps: score threshold.
      dtype: dtype of the patch values.

    Returns:
      ``HeatmapPatches`` with ``P = 2^M - 1`` patches per frame and keypoint.
    """
    keypoint = jnp.asarray(keypoint, jnp.float32)
    score = jnp.asarray(keypoint_score, jnp.float32)
    if keypoint.shape[:-1] != score.shape or keypoint.shape[-1] != 2 or keypoint.ndim < 4:
        raise ValueError(
            f"Expected keypoint [..., M, T, K, 2] and score [..., M, T, K], got "
            f"{keypoint.shape} and {score.shape}."
        )
    span = window_size(sigma)
    num_persons = keypoint.shape[-4]
    score = jnp.where(score >= eps, score, 0.0)  # `>=` is False for NaN.
    mu_x, mu_y = keypoint[..., 0], keypoint[..., 1]  # [..., M, T, K]
    start_y = _window_start(mu_y, height, sigma)
    start_x = _window_start(mu_x, width, sigma)
    steps = jnp.arange(span, dtype=jnp.float32)
    origins, values = [], []
    for subset in person_subsets(num_persons):
        anchor = subset[0]
        grid_y = start_y[..., anchor, :, :, None] + steps  # [..., T, K, S]
        grid_x = start_x[..., anchor, :, :, None] + steps
        patch = None
        for m in subset:
            py = heatmaps.axis_profile_at(grid_y, mu_y[..., m, :, :], height, sigma)
            px = (
                heatmaps.axis_profile_at(grid_x, mu_x[..., m, :, :], width, sigma)
                * score[..., m, :, :, None]
            )
            outer = py[..., :, None] * px[..., None, :]
            patch = outer if patch is None else jnp.minimum(patch, outer)
        values.append(patch if len(subset) % 2 else -patch)
        origins.append(jnp.stack([start_y[..., anchor, :, :], start_x[..., anchor, :, :]], -1))
    # [..., T, P, K, ...]: the patch axis beside the keypoints, after time.
    origin = jnp.stack(origins, axis=-3).astype(jnp.int32)
    return HeatmapPatches(
        origin=origin, values=jnp.stack(values, axis=-4).astype(dtype), height=height, width=width
    )


def flip_patches(
    patches: HeatmapPatches,
    left_kp: Sequence[int] = heatmaps.COCO_LEFT_KP,
    right_kp: Sequence[int] = heatmaps.COCO_RIGHT_KP,
) -> HeatmapPatches:
    """``heatmaps.flip_heatmaps`` of the volume, as patches: pixel ``j -> W - 1 - j``, left/right swapped."""
    span = patches.values.shape[-1]
    perm = np.arange(patches.num_channels)
    for left, right in zip(left_kp, right_kp, strict=True):
        perm[left], perm[right] = right, left
    origin = patches.origin.at[..., 1].set(patches.width - span - patches.origin[..., 1])
    return patches.replace(
        origin=jnp.take(origin, perm, axis=-2),
        values=jnp.take(jnp.flip(patches.values, axis=-1), perm, axis=-3),
    )


def concatenate(parts: Sequence[HeatmapPatches]) -> HeatmapPatches:
    """Patches of several batches, stacked along the leading axis (as ``jnp.concatenate`` of volumes)."""
    return jax.tree.map(lambda *xs: jnp.concatenate(xs), *parts)


def scatter_blocks(
    blocks: jax.Array, origin: jax.Array, height: int, width: int, offset: tuple[int, int]
) -> jax.Array:
    """Sums blocks ``[K, ..., P, by, bx, C]`` placed at ``origin - offset`` into ``[..., height, width, C]``.

    Pixel ``(i, j)`` of the block of ``origin`` (``[..., P, K, 2]``) adds its ``C`` values to output pixel
    ``origin - offset + (i, j)``; pixels outside the frame are dropped (one scatter index per pixel, whose
    out-of-bounds updates XLA skips). A padded canvas cropped afterwards would be simpler, but XLA fuses the
    crop into the stem's BatchNorm and then keeps the whole canvas alive until the backward pass (+250 MB of
    XLA temp at the paper's sizes, B=8). The leading ``...`` axes are scatter batching dimensions, so a batch sharded
    over devices stays sharded.
    """
    lead = blocks.shape[1:-4]
    by, bx = blocks.shape[-3:-1]
    # [..., P, K, 2] -> [K, ..., P, 2], the blocks' order, then one (row, column) per block pixel.
    corner = jnp.moveaxis(origin, -2, 0) - jnp.asarray(offset, jnp.int32)
    rows = corner[..., 0, None, None] + jnp.arange(by, dtype=jnp.int32)[:, None]
    cols = corner[..., 1, None, None] + jnp.arange(bx, dtype=jnp.int32)[None, :]
    index = jnp.stack(jnp.broadcast_arrays(rows, cols), axis=-1)  # [K, ..., P, by, bx, 2]
    nb = len(lead)
    numbers = lax.ScatterDimensionNumbers(
        update_window_dims=(blocks.ndim - 1,),
        inserted_window_dims=(nb, nb + 1),
        scatter_dims_to_operand_dims=(nb, nb + 1),
        operand_batching_dims=tuple(range(nb)),
        scatter_indices_batching_dims=tuple(range(1, nb + 1)),
    )
    out = jnp.zeros((*lead, height, width, blocks.shape[-1]), blocks.dtype)
    return lax.scatter_add(
        out,
        index,
        blocks,
        numbers,
        indices_are_sorted=False,
        unique_indices=False,
        mode=lax.GatherScatterMode.FILL_OR_DROP,
    )


def render_patches(patches: HeatmapPatches) -> jax.Array:
    """The volume ``[..., T, H, W, K]`` the patches stand for: their sum (what the tests hold against PYSKL's)."""
    values = patches.values  # [..., T, P, K, S, S]
    blocks = jnp.moveaxis(values, -3, 0)[..., None]  # [K, ..., T, P, S, S, 1]
    per_k = jax.vmap(
        lambda b, o: scatter_blocks(
            b[None], o[..., None, :], patches.height, patches.width, (0, 0)
        ),
        in_axes=(0, -2),
    )(blocks, patches.origin)  # [K, ..., T, H, W, 1]
    return jnp.moveaxis(per_k[..., 0], 0, -1)
