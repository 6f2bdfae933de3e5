"""Keypoints to pseudo-heatmap volumes, rendered on the accelerator.

The host ships keypoints (a few KB per clip) and the jitted step renders the
``[T, H, W, C]`` volumes here, instead of shipping volumes (~2 MB per clip).

The rendering reproduces PYSKL's ``GeneratePoseTarget`` (``use_score=True``):
each keypoint paints ``score * exp(-d^2 / (2 sigma^2))`` on the integer pixel
grid, but only inside PYSKL's integer-truncated 3-sigma window, and overlapping
patches combine by ``max``. A Gaussian of a squared distance factorises into an
x-part and a y-part, and so does the rectangular window, so a keypoint patch is
the outer product of a ``[W]`` and an ``[H]`` vector; nothing of shape
``[M, T, V, H, W]`` is built, only the ``[T, H, W, V]`` output.
"""

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

# COCO-17 keypoint order: nose, eyes, ears, shoulders, elbows, wrists, hips, knees, ankles.
COCO_LEFT_KP: tuple[int, ...] = (1, 3, 5, 7, 9, 11, 13, 15)
COCO_RIGHT_KP: tuple[int, ...] = (2, 4, 6, 8, 10, 12, 14, 16)
# PYSKL's default COCO skeleton for limb heatmaps, and which limbs are left/right.
COCO_LIMBS: tuple[tuple[int, int], ...] = (
    (0, 1),
    (0, 2),
    (1, 3),
    (2, 4),
    (0, 5),
    (5, 7),
    (7, 9),
    (0, 6),
    (6, 8),
    (8, 10),
    (5, 11),
    (11, 13),
    (13, 15),
    (6, 12),
    (12, 14),
    (14, 16),
    (11, 12),
)
COCO_LEFT_LIMB: tuple[int, ...] = (0, 2, 4, 5, 6, 10, 11, 12)
COCO_RIGHT_LIMB: tuple[int, ...] = (1, 3, 7, 8, 9, 13, 14, 15)

# PYSKL's GeneratePoseTarget skips points whose score is below this (the
# SkeletonCLIP++ code base uses PYSKL's 1e-3; mmaction2 uses 1e-4).
PYSKL_EPS = 1e-3


def axis_profile_at(grid: jax.Array, mu: jax.Array, size: int, sigma: float) -> jax.Array:
    """1-D Gaussian profile of each coordinate at the given pixels, zero outside PYSKL's window.

    PYSKL keeps pixels ``max(int(mu - 3s), 0) <= i < min(int(mu + 3s) + 1, size)``.
    ``int`` truncates toward zero, which is ``trunc`` (not ``floor``): for
    ``-2.8 < mu < -1.8`` (sigma 0.6) the window still holds pixel 0. NaN/inf
    coordinates give an empty window, as PYSKL's empty ``arange`` does.

    Args:
      grid: float pixel indices, broadcastable against ``mu[..., None]`` (the
        whole axis ``[size]``, or a window ``[..., S]`` as ``heatmap_patches``).
      mu: float32 coordinates along one axis, any shape ``[...]``.
      size: number of pixels along that axis; pixels outside ``[0, size)`` are 0.
      sigma: Gaussian standard deviation in pixels.

    Returns:
      ``[..., len(grid)]`` float32 profile.
    """
    mu = mu[..., None]
    inside = (
        (grid >= jnp.trunc(mu - 3 * sigma))
        & (grid <= jnp.trunc(mu + 3 * sigma))
        & (grid >= 0)
        & (grid < size)
    )
    return jnp.where(inside, jnp.exp(-jnp.square(grid - mu) / (2 * sigma**2)), 0.0)


def _axis_profile(mu: jax.Array, size: int, sigma: float) -> jax.Array:
    """``axis_profile_at`` over the whole axis: ``[...]`` coordinates -> ``[..., size]``."""
    grid = jnp.arange(size, dtype=jnp.float32)
    return axis_profile_at(grid, mu.astype(jnp.float32), size, sigma)


def _keypoint_maps(
    keypoint: jax.Array,
    score: jax.Array,
    height: int,
    width: int,
    sigma: float,
    eps: float,
    dtype: jnp.dtype,
) -> jax.Array:
    """``[..., M, T, K, 2]`` points -> ``[..., T, H, W, K]``, max over the M axis."""
    score = score.astype(jnp.float32)
    # `>=` is False for NaN, so NaN scores are skipped like low ones.
    score = jnp.where(score >= eps, score, 0.0)
    gx = (_axis_profile(keypoint[..., 0], width, sigma) * score[..., None]).astype(dtype)
    gy = _axis_profile(keypoint[..., 1], height, sigma).astype(dtype)
    # [..., M, T, K, W] -> [..., M, T, 1, W, K]; [..., M, T, K, H] -> [..., M, T, H, 1, K].
    gx = jnp.swapaxes(gx, -1, -2)[..., None, :, :]
    gy = jnp.swapaxes(gy, -1, -2)[..., :, None, :]
    # A static loop over the few persons keeps the [T, H, W, K] accumulator the only
    # full-size array; XLA fuses each outer product into the running max. Starting
    # from zeros, like PYSKL's canvas, also covers M == 0.
    lead, (_, t, v, _) = keypoint.shape[:-4], keypoint.shape[-4:]
    out = jnp.zeros((*lead, t, height, width, v), dtype)
    for m in range(keypoint.shape[-4]):
        out = jnp.maximum(out, gy[..., m, :, :, :, :] * gx[..., m, :, :, :, :])
    return out


def _limb_maps(
    keypoint: jax.Array,
    score: jax.Array,
    height: int,
    width: int,
    sigma: float,
    eps: float,
    skeleton: Sequence[tuple[int, int]],
    dtype: jnp.dtype,
) -> jax.Array:
    """PYSKL's limb heatmaps: Gaussian of the distance to the segment, min of end scores.

    Rules kept from PYSKL: the window is the truncated 3-sigma box around both
    ends; a limb is skipped when ``min(score_a, score_b) < eps``; a limb shorter
    than one pixel (``|ab|^2 < 1``) is drawn as the keypoint heatmap of its start,
    with the start's own score and window.
    """
    start_idx = np.asarray([a for a, _ in skeleton], np.int32)
    end_idx = np.asarray([b for _, b in skeleton], np.int32)
    kp = keypoint.astype(jnp.float32)
    score = score.astype(jnp.float32)
    # [..., M, T, L, 2] and [..., M, T, L].
    start, end = kp[..., start_idx, :], kp[..., end_idx, :]
    start_val, end_val = score[..., start_idx], score[..., end_idx]
    value = jnp.minimum(start_val, end_val)
    value = jnp.where(value >= eps, value, 0.0)
    two_s2 = 2 * sigma**2

    def window(lo: jax.Array, hi: jax.Array, size: int) -> jax.Array:
        grid = jnp.arange(size, dtype=jnp.float32)
        lo = jnp.trunc(lo - 3 * sigma)[..., None]
        hi = jnp.trunc(hi + 3 * sigma)[..., None]
        return (grid >= lo) & (grid <= hi)

    # Per-axis window masks, [..., M, T, L, W] and [..., M, T, L, H].
    in_x = window(
        jnp.minimum(start[..., 0], end[..., 0]), jnp.maximum(start[..., 0], end[..., 0]), width
    )
    in_y = window(
        jnp.minimum(start[..., 1], end[..., 1]), jnp.maximum(start[..., 1], end[..., 1]), height
    )
    # Fallback for short limbs: separable keypoint patch at the start point.
    # It carries the start score (not the min), but only for limbs that passed the check.
    kx = (
        _axis_profile(start[..., 0], width, sigma) * jnp.where(value > 0, start_val, 0.0)[..., None]
    )
    ky = _axis_profile(start[..., 1], height, sigma)

    d2_ab = jnp.sum(jnp.square(start - end), axis=-1)
    short = d2_ab < 1
    safe_ab = jnp.where(short, 1.0, d2_ab)
    xs = jnp.arange(width, dtype=jnp.float32)[:, None]  # [W, 1] against [..., L]
    ys = jnp.arange(height, dtype=jnp.float32)[:, None, None]  # [H, 1, 1]

    def per_person(m: int) -> jax.Array:
        # Everything below is [..., T, H, W, L]: coordinates [..., T, L] get two pixel axes.
        def pix(a: jax.Array) -> jax.Array:
            return a[..., m, :, None, None, :]

        sx, sy = pix(start[..., 0]), pix(start[..., 1])
        ex, ey = pix(end[..., 0]), pix(end[..., 1])
        dxs, dys = xs - sx, ys - sy
        d2_start = jnp.square(dxs) + jnp.square(dys)
        d2_end = jnp.square(xs - ex) + jnp.square(ys - ey)
        ab = pix(safe_ab)
        coeff = (d2_start - d2_end + ab) / 2.0 / ab
        d2_line = jnp.square(dxs - coeff * (ex - sx)) + jnp.square(dys - coeff * (ey - sy))
        d2_seg = jnp.where(coeff <= 0, d2_start, jnp.where(coeff >= 1, d2_end, d2_line))
        inside = (
            jnp.swapaxes(in_y[..., m, :, :, :], -1, -2)[..., :, None, :]
            & jnp.swapaxes(in_x[..., m, :, :, :], -1, -2)[..., None, :, :]
        )
        limb = jnp.where(inside, jnp.exp(-d2_seg / two_s2), 0.0) * pix(value)
        point = (
            jnp.swapaxes(ky[..., m, :, :, :], -1, -2)[..., :, None, :]
            * jnp.swapaxes(kx[..., m, :, :, :], -1, -2)[..., None, :, :]
        )
        return jnp.where(pix(short), point, limb).astype(dtype)

    out = jnp.zeros(kp.shape[:-4] + (kp.shape[-3], height, width, len(skeleton)), dtype)
    for m in range(keypoint.shape[-4]):
        out = jnp.maximum(out, per_person(m))
    return out


def render_heatmaps(
    keypoint: jax.Array,
    keypoint_score: jax.Array,
    height: int,
    width: int,
    sigma: float = 0.6,
    with_kp: bool = True,
    with_limb: bool = False,
    skeleton: Sequence[tuple[int, int]] = COCO_LIMBS,
    dtype: jnp.dtype = jnp.float32,
    eps: float = PYSKL_EPS,
) -> jax.Array:
    """Renders PYSKL ``GeneratePoseTarget`` heatmap volumes from keypoints.

    Pure and shape-static, so it can sit inside a jitted train step. Any number
    of leading batch axes is allowed (e.g. ``[B, N_clips, M, T, V, 2]``).

    Args:
      keypoint: ``[..., M, T, V, 2]`` (x, y) pixel coordinates in the
        ``height x width`` frame.
      keypoint_score: ``[..., M, T, V]`` confidences; the Gaussian peak is the
        score, points with score ``< eps`` (or NaN) are not drawn.
      height: output height H (static).
      width: output width W (static).
      sigma: Gaussian sigma in pixels (PYSKL: 0.6).
      with_kp: emit V keypoint channels.
      with_limb: emit ``len(skeleton)`` limb channels (after the keypoint ones
        when both are on, as mmaction2 does; PYSKL allows only one of the two).
      skeleton: limb (start, end) keypoint pairs.
      dtype: output dtype (e.g. ``jnp.bfloat16`` to halve activation memory).
      eps: score threshold below which a point/limb is skipped.

    Returns:
      ``[..., T, H, W, C]`` volume, ``C = V * with_kp + len(skeleton) * with_limb``,
      each channel the max over the M persons.
    """
    if not (with_kp or with_limb):
        raise ValueError("At least one of with_kp and with_limb must be True.")
    keypoint = jnp.asarray(keypoint)
    keypoint_score = jnp.asarray(keypoint_score)
    if keypoint.shape[:-1] != keypoint_score.shape or keypoint.shape[-1] != 2:
        raise ValueError(
            f"Expected keypoint [..., M, T, V, 2] and score [..., M, T, V], got "
            f"{keypoint.shape} and {keypoint_score.shape}."
        )
    if keypoint.ndim < 4:
        raise ValueError(f"Expected keypoint [..., M, T, V, 2], got {keypoint.shape}.")
    maps = []
    if with_kp:
        maps.append(_keypoint_maps(keypoint, keypoint_score, height, width, sigma, eps, dtype))
    if with_limb:
        maps.append(
            _limb_maps(keypoint, keypoint_score, height, width, sigma, eps, tuple(skeleton), dtype)
        )
    return maps[0] if len(maps) == 1 else jnp.concatenate(maps, axis=-1)


def flip_heatmaps(
    volume: jax.Array,
    left_kp: Sequence[int] = COCO_LEFT_KP,
    right_kp: Sequence[int] = COCO_RIGHT_KP,
) -> jax.Array:
    """Mirrors rendered volumes horizontally and swaps left/right channels.

    This is exactly PYSKL's test-time ``double=True`` view, which flips the
    *rendered* heatmaps (``heatmap[..., ::-1]``, i.e. pixel ``i -> W - 1 - i``),
    not the keypoints. (Re-rendering keypoints at ``W - 1 - x`` would differ at
    window edges: the truncated 3-sigma window is not mirror-symmetric.) For
    limb channels pass ``COCO_LEFT_LIMB``/``COCO_RIGHT_LIMB``.

    Args:
      volume: ``[..., T, H, W, C]`` heatmaps.
      left_kp: channel indices of left parts.
      right_kp: channel indices of the matching right parts.

    Returns:
      ``[..., T, H, W, C]`` flipped volume.
    """
    perm = np.arange(volume.shape[-1])
    for left, right in zip(left_kp, right_kp, strict=True):
        perm[left], perm[right] = right, left
    return jnp.take(jnp.flip(volume, axis=-2), perm, axis=-1)
