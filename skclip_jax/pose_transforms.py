"""Keypoint-space PoseConv3D augmentations (PYSKL semantics), NumPy, one clip at a time.

These run on the host (inside the input pipeline's per-example map) and only
move keypoints; ``heatmaps.render_heatmaps`` turns the result into volumes on
the accelerator. Each function mirrors one PYSKL transform of
``configs/plus/ucf-split1-itm.py``:

  train: UniformSampleFrames(48) -> PoseDecode -> PoseCompact(hw_ratio=1, allow_imgpad)
         -> Resize((-1, 64)) -> RandomResizedCrop((0.56, 1)) -> Resize((56, 56), no ratio)
         -> Flip(0.5, left/right keypoints)
  test:  UniformSampleFrames(48, num_clips=10, test_mode) -> PoseDecode
         -> PoseCompact(hw_ratio=1, allow_imgpad) -> Resize((64, 64), no ratio)

Randomness always comes from an explicit generator, never NumPy's global state.
Deterministic parts (test-mode frames, compaction, resizing, flipping) equal
PYSKL's exactly; the training draws (frames, crop box, flip coin) come from
``np.random.Generator`` methods and so match PYSKL only in distribution.

Image shapes are ``(h, w)``; keypoints are (x, y) pixels. As in PYSKL, a
coordinate equal to 0 means "missing" to PoseCompact and Flip.
"""

from collections.abc import Sequence
from typing import Any

import numpy as np

from skclip_jax.heatmaps import COCO_LEFT_KP, COCO_RIGHT_KP

PYSKL_TEST_SEED = 255


def uniform_sample_frames(
    total_frames: int,
    clip_len: int,
    *,
    num_clips: int = 1,
    test_mode: bool = False,
    rng: np.random.Generator | None = None,
    p_interval: tuple[float, float] = (1.0, 1.0),
    seed: int = PYSKL_TEST_SEED,
) -> np.ndarray:
    """PYSKL's UniformSampleFrames: one random frame per equal segment.

    Three regimes per clip, on ``n = int(ratio * total_frames)`` frames
    (``ratio ~ U(p_interval)``, 1 by default) starting at a random offset:
    ``n < clip_len`` takes ``clip_len`` consecutive frames from a start (random
    in train, ``i`` or ``i * n // num_clips`` for clip ``i`` in test) and loops
    past the end; ``clip_len <= n < 2 clip_len`` spreads ``n - clip_len`` one-frame
    skips at random; otherwise each of ``clip_len`` segments
    ``[i n // clip_len, (i+1) n // clip_len)`` gives one uniform frame.

    Test mode re-seeds PYSKL's global legacy RNG with 255 on every call. Here a
    private ``np.random.RandomState(seed)`` replays the same call sequence, so
    the frames equal PYSKL's exactly and are the same on every call, without
    touching global state.

    Args:
      total_frames: frames in the video (>= 1).
      clip_len: frames per clip.
      num_clips: clips to sample (concatenated).
      test_mode: deterministic PYSKL test sampling instead of training draws.
      rng: generator for training draws (required unless ``test_mode``).
      p_interval: range of the fraction of the video a clip covers.
      seed: test-mode seed (PYSKL: 255).

    Returns:
      ``[num_clips * clip_len]`` int64 frame indices in ``[0, total_frames)``.
    """
    if total_frames < 1:
        raise ValueError(f"total_frames must be >= 1, got {total_frames}.")
    lo, hi = p_interval
    if test_mode:
        # Legacy API on purpose: it reproduces np.random.seed(255)'s stream bit for bit.
        rs = np.random.RandomState(seed)
        uniform, randint = rs.rand, rs.randint

        def choose(n: int, k: int) -> np.ndarray:
            return rs.choice(n, k, replace=False)
    else:
        if rng is None:
            raise ValueError("Training-mode sampling needs an explicit np.random.Generator.")
        uniform, randint = rng.random, rng.integers

        def choose(n: int, k: int) -> np.ndarray:
            return rng.choice(n, k, replace=False)

    all_inds = []
    for i in range(num_clips):
        ratio = uniform() * (hi - lo) + lo
        # PYSKL would crash on an empty interval; keep at least one frame instead.
        num_frames = max(int(ratio * total_frames), 1)
        off = randint(total_frames - num_frames + 1)
        if num_frames < clip_len:
            if test_mode:
                start = i if num_frames < num_clips else i * num_frames // num_clips
            else:
                start = randint(0, num_frames)
            inds = np.arange(start, start + clip_len)
        elif num_frames < 2 * clip_len:
            skips = np.zeros(clip_len + 1, dtype=np.int64)
            skips[choose(clip_len + 1, num_frames - clip_len)] = 1
            inds = np.arange(clip_len) + np.cumsum(skips)[:-1]
        else:
            bounds = np.arange(clip_len + 1) * num_frames // clip_len
            inds = bounds[:-1] + randint(np.diff(bounds))
        all_inds.append(inds + off)
    # PYSKL's start_index is 0 for pose datasets; its "transitional frame" step is a
    # no-op on integer indices, so neither appears here.
    return np.mod(np.concatenate(all_inds), total_frames).astype(np.int64)


def pose_decode(
    keypoint: np.ndarray, keypoint_score: np.ndarray, frame_inds: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """PYSKL's PoseDecode: gathers the sampled frames as float32.

    Args:
      keypoint: ``[M, T_total, V, 2]``.
      keypoint_score: ``[M, T_total, V]``.
      frame_inds: ``[T]`` indices.

    Returns:
      ``([M, T, V, 2], [M, T, V])`` float32 copies.
    """
    return (
        keypoint[:, frame_inds].astype(np.float32),
        keypoint_score[:, frame_inds].astype(np.float32),
    )


def pose_compact(
    keypoint: np.ndarray,
    img_shape: tuple[int, int],
    *,
    padding: float = 0.25,
    threshold: float = 10,
    hw_ratio: float | tuple[float, float] | None = 1.0,
    allow_imgpad: bool = True,
) -> tuple[np.ndarray, tuple[int, int]]:
    """PYSKL's PoseCompact: re-frames keypoints to their padded bounding box.

    The tight box is over all nonzero x (and, separately, all nonzero y) of
    every person and frame given, so for multi-clip testing it spans all clips.
    It is grown by ``padding`` around its centre, then to the ``hw_ratio``; its
    corners are truncated with ``int`` (toward zero) and, unless
    ``allow_imgpad``, clipped to the image. Nonzero coordinates are shifted by
    the corner. If the tight box is narrower or shorter than ``threshold`` the
    keypoints and shape are returned unchanged (NaNs still become 0, as PYSKL
    does before the check).

    Args:
      keypoint: ``[M, T, V, 2]`` (x, y).
      img_shape: ``(h, w)`` of the current frame.
      padding: relative growth of the box (0.25: 1.25x width and height).
      threshold: minimum tight-box width/height in pixels.
      hw_ratio: required height/width ratio, a float or a (min, max) range.
      allow_imgpad: let the box extend past the image to reach ``hw_ratio``.

    Returns:
      ``(keypoint [M, T, V, 2] (new array), (new_h, new_w))``.
    """
    kp = np.array(keypoint, copy=True)
    kp[np.isnan(kp)] = 0.0
    h, w = img_shape
    kp_x, kp_y = kp[..., 0], kp[..., 1]
    nz_x, nz_y = kp_x != 0, kp_y != 0
    min_x = np.min(kp_x[nz_x], initial=np.inf)
    max_x = np.max(kp_x[nz_x], initial=-np.inf)
    min_y = np.min(kp_y[nz_y], initial=np.inf)
    max_y = np.max(kp_y[nz_y], initial=-np.inf)
    # Also covers "no nonzero coordinate": inf - inf comparisons are False -> -inf < t.
    if max_x - min_x < threshold or max_y - min_y < threshold:
        return kp, (h, w)

    center_x, center_y = (max_x + min_x) / 2, (max_y + min_y) / 2
    half_w = (max_x - min_x) / 2 * (1 + padding)
    half_h = (max_y - min_y) / 2 * (1 + padding)
    if hw_ratio is not None:
        ratio_lo, ratio_hi = (hw_ratio, hw_ratio) if np.isscalar(hw_ratio) else hw_ratio
        half_h = max(ratio_lo * half_w, half_h)
        half_w = max(1 / ratio_hi * half_h, half_w)

    x0, x1 = center_x - half_w, center_x + half_w
    y0, y1 = center_y - half_h, center_y + half_h
    if allow_imgpad:
        x0, y0, x1, y1 = int(x0), int(y0), int(x1), int(y1)
    else:
        x0, y0 = int(max(0, x0)), int(max(0, y0))
        x1, y1 = int(min(w, x1)), int(min(h, y1))
    kp_x[nz_x] -= x0
    kp_y[nz_y] -= y0
    return kp, (y1 - y0, x1 - x0)


def _rescale_size(w: int, h: int, scale: float | tuple[float, float]) -> tuple[int, int]:
    """mmcv.rescale_size: largest size within (long, short) edge limits, ratio kept."""
    if isinstance(scale, tuple):
        factor = min(max(scale) / max(h, w), min(scale) / min(h, w))
    else:
        factor = float(scale)
    return int(w * factor + 0.5), int(h * factor + 0.5)


def resize_keypoints(
    keypoint: np.ndarray,
    img_shape: tuple[int, int],
    scale: float | tuple[float, float],
    *,
    keep_ratio: bool = True,
) -> tuple[np.ndarray, tuple[int, int]]:
    """PYSKL's Resize on keypoints.

    With ``keep_ratio``, ``scale`` is a factor or a ``(long, short)`` edge limit
    pair in either order, where ``-1`` means "unbounded": ``(-1, 64)`` makes the
    short side 64 (``mmcv.rescale_size``, rounding ``int(x + 0.5)``). Without it,
    ``scale`` is the output ``(w, h)``. Keypoints are multiplied by the realised
    float32 ratios ``(new_w / w, new_h / h)``.

    Args:
      keypoint: ``[..., 2]`` (x, y).
      img_shape: ``(h, w)``.
      scale: see above.
      keep_ratio: keep the aspect ratio.

    Returns:
      ``(keypoint [..., 2], (new_h, new_w))``.
    """
    h, w = img_shape
    if keep_ratio:
        if isinstance(scale, tuple) and min(scale) == -1:
            scale = (np.inf, max(scale))
        new_w, new_h = _rescale_size(w, h, scale)
    else:
        new_w, new_h = scale
    factor = np.array([new_w / w, new_h / h], dtype=np.float32)
    return keypoint * factor, (new_h, new_w)


def random_resized_crop_box(
    img_shape: tuple[int, int],
    rng: np.random.Generator,
    *,
    area_range: tuple[float, float] = (0.08, 1.0),
    aspect_ratio_range: tuple[float, float] = (3 / 4, 4 / 3),
    max_attempts: int = 10,
) -> tuple[int, int, int, int]:
    """PYSKL's RandomResizedCrop box: ``(left, top, right, bottom)``.

    Draws ``max_attempts`` (log-uniform aspect ratio, uniform area fraction)
    candidates up front, sizes ``round(sqrt(area * ar))`` by
    ``round(sqrt(area / ar))``, takes the first that fits with a uniform
    integer offset (both ends inclusive), and otherwise falls back to the
    centred square of the short side.

    Args:
      img_shape: ``(h, w)``.
      rng: generator for the draws.
      area_range: range of the crop area as a fraction of the image area.
      aspect_ratio_range: range of crop w / h.
      max_attempts: candidates before the fallback.

    Returns:
      Integer ``(left, top, right, bottom)``.
    """
    if not 0 < area_range[0] <= area_range[1] <= 1:
        raise ValueError(f"Bad area_range {area_range}.")
    if not 0 < aspect_ratio_range[0] <= aspect_ratio_range[1]:
        raise ValueError(f"Bad aspect_ratio_range {aspect_ratio_range}.")
    img_h, img_w = img_shape
    area = img_h * img_w
    min_ar, max_ar = aspect_ratio_range
    aspect = np.exp(rng.uniform(np.log(min_ar), np.log(max_ar), size=max_attempts))
    target = rng.uniform(*area_range, size=max_attempts) * area
    crop_w = np.round(np.sqrt(target * aspect)).astype(np.int32)
    crop_h = np.round(np.sqrt(target / aspect)).astype(np.int32)
    for cw, ch in zip(crop_w.tolist(), crop_h.tolist(), strict=True):
        if ch <= img_h and cw <= img_w:
            left = int(rng.integers(0, img_w - cw + 1))
            top = int(rng.integers(0, img_h - ch + 1))
            return left, top, left + cw, top + ch
    size = min(img_h, img_w)
    left, top = (img_w - size) // 2, (img_h - size) // 2
    return left, top, left + size, top + size


def crop_keypoints(
    keypoint: np.ndarray, box: tuple[int, int, int, int]
) -> tuple[np.ndarray, tuple[int, int]]:
    """PYSKL's crop on keypoints: every coordinate (zeros included) minus the corner.

    Args:
      keypoint: ``[..., 2]`` (x, y).
      box: ``(left, top, right, bottom)``.

    Returns:
      ``(keypoint [..., 2], (bottom - top, right - left))``.
    """
    left, top, right, bottom = box
    return keypoint - np.array([left, top], dtype=np.float64), (bottom - top, right - left)


def flip_keypoints(
    keypoint: np.ndarray,
    keypoint_score: np.ndarray,
    img_width: int,
    left_kp: Sequence[int] = COCO_LEFT_KP,
    right_kp: Sequence[int] = COCO_RIGHT_KP,
) -> tuple[np.ndarray, np.ndarray]:
    """PYSKL's Flip on keypoints: nonzero ``x -> img_width - x``, left/right swapped.

    Note PYSKL maps ``x -> w - x`` (not ``w - 1 - x``) and leaves ``x == 0`` alone.

    Args:
      keypoint: ``[M, T, V, 2]``.
      keypoint_score: ``[M, T, V]``.
      img_width: current frame width.
      left_kp: left keypoint indices.
      right_kp: matching right keypoint indices.

    Returns:
      ``(keypoint [M, T, V, 2], keypoint_score [M, T, V])``, new arrays.
    """
    kp = np.array(keypoint, copy=True)
    kp_x = kp[..., 0]
    nz = kp_x != 0
    kp_x[nz] = img_width - kp_x[nz]
    order = np.arange(kp.shape[2])
    for left, right in zip(left_kp, right_kp, strict=True):
        order[left], order[right] = right, left
    return kp[:, :, order], keypoint_score[:, :, order]


def select_persons(
    keypoint: np.ndarray, keypoint_score: np.ndarray, num_persons: int
) -> tuple[np.ndarray, np.ndarray]:
    """Fixes the person axis for static shapes: top ``num_persons`` by total score.

    Persons are ranked by the sum of their scores over the given frames (stable,
    so ties keep file order); missing persons are padded with zero coordinates
    and zero scores, which render nothing. Since heatmaps take the max over
    persons, this equals PYSKL whenever at most ``num_persons`` persons have
    scores >= eps. NaN scores become 0 (PYSKL would paint NaN).

    Args:
      keypoint: ``[M, T, V, 2]``, any M >= 0.
      keypoint_score: ``[M, T, V]``.
      num_persons: output person count.

    Returns:
      float32 ``([num_persons, T, V, 2], [num_persons, T, V])``.
    """
    score = np.nan_to_num(keypoint_score.astype(np.float32), nan=0.0)
    m, t, v = score.shape
    order = np.argsort(-score.reshape(m, t * v).sum(-1), kind="stable")[:num_persons]
    out_kp = np.zeros((num_persons, t, v, 2), np.float32)
    out_score = np.zeros((num_persons, t, v), np.float32)
    out_kp[: len(order)] = keypoint[order]
    out_score[: len(order)] = score[order]
    return out_kp, out_score


def _inputs(sample: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, tuple[int, int], int]:
    """Reads PYSKL annotation fields; missing scores default to 1 as in PYSKL."""
    keypoint = np.asarray(sample["keypoint"])
    score = sample.get("keypoint_score")
    score = np.ones(keypoint.shape[:-1], np.float32) if score is None else np.asarray(score)
    img_shape = tuple(int(s) for s in sample["img_shape"])
    total_frames = int(sample.get("total_frames", keypoint.shape[1]))
    return keypoint[..., :2], score, img_shape, total_frames


def train_transform(
    sample: dict[str, Any],
    rng: np.random.Generator,
    *,
    clip_len: int,
    out_size: int,
    short_side: int = 64,
    area_range: tuple[float, float] = (0.56, 1.0),
    flip_ratio: float = 0.5,
    num_persons: int = 2,
    left_kp: Sequence[int] = COCO_LEFT_KP,
    right_kp: Sequence[int] = COCO_RIGHT_KP,
) -> dict[str, np.ndarray]:
    """PYSKL's PoseConv3D training pipeline, up to (not including) rendering.

    Sample frames -> decode -> PoseCompact(hw_ratio=1, allow_imgpad) -> short
    side to ``short_side`` -> RandomResizedCrop(``area_range``) -> resize to
    ``out_size`` square -> Flip(``flip_ratio``, x -> out_size - x) -> top
    ``num_persons`` persons (see ``select_persons``).

    Args:
      sample: PYSKL annotation: ``keypoint [M, T_total, V, 2]``,
        ``keypoint_score [M, T_total, V]``, ``img_shape (h, w)``, ``total_frames``.
      rng: generator for every random draw of this clip.
      clip_len: sampled frames.
      out_size: side of the square volume the keypoints land in.
      short_side: short side after the first resize (PYSKL: 64).
      area_range: crop area fraction range.
      flip_ratio: flip probability.
      num_persons: fixed person count of the output.
      left_kp: left keypoint indices for the flip.
      right_kp: matching right keypoint indices.

    Returns:
      ``keypoint`` float32 ``[num_persons, clip_len, V, 2]`` in the
      ``out_size x out_size`` frame and ``keypoint_score`` float32
      ``[num_persons, clip_len, V]``.
    """
    keypoint, score, img_shape, total_frames = _inputs(sample)
    inds = uniform_sample_frames(total_frames, clip_len, rng=rng)
    kp, score = pose_decode(keypoint, score, inds)
    kp, shape = pose_compact(kp, img_shape, hw_ratio=1.0, allow_imgpad=True)
    kp, shape = resize_keypoints(kp, shape, (-1, short_side))
    box = random_resized_crop_box(shape, rng, area_range=area_range)
    kp, shape = crop_keypoints(kp, box)
    kp, shape = resize_keypoints(kp, shape, (out_size, out_size), keep_ratio=False)
    if rng.random() < flip_ratio:
        kp, score = flip_keypoints(kp, score, shape[1], left_kp, right_kp)
    kp, score = select_persons(kp, score, num_persons)
    return {"keypoint": kp, "keypoint_score": score}


def test_transform(
    sample: dict[str, Any],
    *,
    clip_len: int,
    num_clips: int,
    out_size: int,
    num_persons: int = 2,
) -> dict[str, np.ndarray]:
    """PYSKL's PoseConv3D test pipeline, up to rendering; deterministic.

    Test-mode sampling of ``num_clips`` clips -> decode -> one PoseCompact box
    over all sampled frames (as PYSKL, which compacts the concatenated clips)
    -> resize to ``out_size`` square -> top ``num_persons`` persons per clip.

    Args:
      sample: PYSKL annotation (see ``train_transform``).
      clip_len: frames per clip.
      num_clips: clips per video.
      out_size: side of the square volume.
      num_persons: fixed person count of the output.

    Returns:
      ``keypoint`` float32 ``[num_clips, num_persons, clip_len, V, 2]`` and
      ``keypoint_score`` float32 ``[num_clips, num_persons, clip_len, V]``.
    """
    keypoint, score, img_shape, total_frames = _inputs(sample)
    inds = uniform_sample_frames(total_frames, clip_len, num_clips=num_clips, test_mode=True)
    kp, score = pose_decode(keypoint, score, inds)
    kp, shape = pose_compact(kp, img_shape, hw_ratio=1.0, allow_imgpad=True)
    kp, _ = resize_keypoints(kp, shape, (out_size, out_size), keep_ratio=False)
    m, _, v = score.shape
    kp = kp.reshape(m, num_clips, clip_len, v, 2)
    score = score.reshape(m, num_clips, clip_len, v)
    clips = [select_persons(kp[:, c], score[:, c], num_persons) for c in range(num_clips)]
    return {
        "keypoint": np.stack([c[0] for c in clips]),
        "keypoint_score": np.stack([c[1] for c in clips]),
    }


# The name starts with "test": keep pytest from collecting it where it is imported.
test_transform.__test__ = False
