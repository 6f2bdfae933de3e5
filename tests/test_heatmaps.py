"""render_heatmaps / flip_heatmaps against a plain-loop NumPy model of PYSKL's GeneratePoseTarget."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from skclip_jax import heatmaps as hm

SIGMA = 0.6
EPS = 1e-3


def _window(lo: float, hi: float, size: int) -> tuple[int, int]:
    """PYSKL's [start, end) pixel range: int() truncation, clamped to the image."""
    return max(int(lo - 3 * SIGMA), 0), min(int(hi + 3 * SIGMA) + 1, size)


def _paint_point(canvas: np.ndarray, x: float, y: float, value: float) -> None:
    if value < EPS:
        return
    x0, x1 = _window(x, x, canvas.shape[1])
    y0, y1 = _window(y, y, canvas.shape[0])
    if x1 <= x0 or y1 <= y0:
        return
    for r in range(y0, y1):
        for c in range(x0, x1):
            g = value * math.exp(-((c - x) ** 2 + (r - y) ** 2) / (2 * SIGMA**2))
            canvas[r, c] = max(canvas[r, c], g)


def _paint_limb(canvas: np.ndarray, a, b, va: float, vb: float) -> None:
    value = min(va, vb)
    if value < EPS:
        return
    x0, x1 = _window(min(a[0], b[0]), max(a[0], b[0]), canvas.shape[1])
    y0, y1 = _window(min(a[1], b[1]), max(a[1], b[1]), canvas.shape[0])
    if x1 <= x0 or y1 <= y0:
        return
    ab2 = (a[0] - b[0]) ** 2 + (a[1] - b[1]) ** 2
    if ab2 < 1:
        _paint_point(canvas, a[0], a[1], va)
        return
    for r in range(y0, y1):
        for c in range(x0, x1):
            # Projection parameter of the pixel on segment a->b, then distance to the segment.
            u = ((c - a[0]) * (b[0] - a[0]) + (r - a[1]) * (b[1] - a[1])) / ab2
            if u <= 0:
                d2 = (c - a[0]) ** 2 + (r - a[1]) ** 2
            elif u >= 1:
                d2 = (c - b[0]) ** 2 + (r - b[1]) ** 2
            else:
                px, py = a[0] + u * (b[0] - a[0]), a[1] + u * (b[1] - a[1])
                d2 = (c - px) ** 2 + (r - py) ** 2
            canvas[r, c] = max(canvas[r, c], value * math.exp(-d2 / (2 * SIGMA**2)))


def reference(kp, score, h, w, with_kp=True, with_limb=False, skeleton=hm.COCO_LIMBS):
    """[M, T, V, 2] -> [T, H, W, C], looping persons/frames/parts like PYSKL."""
    kp = np.asarray(kp, np.float64)
    score = np.asarray(score, np.float64)
    m, t, v = score.shape
    chans = (v if with_kp else 0) + (len(skeleton) if with_limb else 0)
    out = np.zeros((t, chans, h, w))
    for f in range(t):
        c = 0
        if with_kp:
            for j in range(v):
                for p in range(m):
                    _paint_point(out[f, c], kp[p, f, j, 0], kp[p, f, j, 1], score[p, f, j])
                c += 1
        if with_limb:
            for i, j in skeleton:
                for p in range(m):
                    _paint_limb(out[f, c], kp[p, f, i], kp[p, f, j], score[p, f, i], score[p, f, j])
                c += 1
    return out.transpose(0, 2, 3, 1)


def _random_pose(rng, m, t, v, h, w):
    """Coordinates across and beyond the image (off-image, near edges), mixed scores."""
    kp = np.stack(
        [rng.uniform(-4.0, w + 4.0, (m, t, v)), rng.uniform(-4.0, h + 4.0, (m, t, v))], -1
    )
    # Some exact integers and some points right at the borders.
    kp[..., :3, :] = np.round(kp[..., :3, :])
    kp[0, 0, 3] = (-2.5, 1.2)  # int(-2.5 + 1.8) = 0: PYSKL still draws column 0.
    kp[0, 0, 4] = (w - 0.3, h + 1.5)
    score = rng.uniform(0.0, 1.0, (m, t, v))
    score[rng.uniform(size=score.shape) < 0.15] = 0.0
    score[rng.uniform(size=score.shape) < 0.1] = 9e-4  # below PYSKL's eps
    score[0, 0, 5] = EPS  # exactly eps is drawn
    return kp.astype(np.float32), score.astype(np.float32)


def test_hand_values_single_keypoint():
    kp = np.zeros((1, 1, 1, 2), np.float32)
    kp[0, 0, 0] = (10.0, 20.0)
    vol = np.asarray(hm.render_heatmaps(kp, np.full((1, 1, 1), 0.8, np.float32), 40, 30))
    assert vol.shape == (1, 40, 30, 1)
    img = vol[0, :, :, 0]
    one = 0.8 * math.exp(-1 / (2 * 0.36))
    np.testing.assert_allclose(img[20, 10], 0.8, rtol=1e-6)
    np.testing.assert_allclose([img[20, 11], img[20, 9], img[21, 10], img[19, 10]], one, rtol=1e-5)
    np.testing.assert_allclose(img[21, 11], 0.8 * math.exp(-2 / 0.72), rtol=1e-5)
    # Window is [int(8.2), int(11.8)] = [8, 11]: asymmetric around 10.
    np.testing.assert_allclose(img[20, 8], 0.8 * math.exp(-4 / 0.72), rtol=1e-5)
    assert img[20, 12] == 0.0 and img[20, 7] == 0.0 and img[22, 10] == 0.0
    assert np.count_nonzero(img) == 4 * 4  # rows 18..21 x cols 8..11


def test_truncation_not_floor_and_eps():
    kp = np.array([[[[-2.5, 5.0], [-2.9, 5.0], [5.0, 5.0], [6.0, 6.0]]]], np.float32)
    score = np.array([[[1.0, 1.0, 9.99e-4, 1e-3]]], np.float32)
    img = np.asarray(hm.render_heatmaps(kp, score, 12, 12))[0]
    # x = -2.5: int(-0.7) = 0, so PYSKL keeps column 0 (floor would drop it).
    np.testing.assert_allclose(img[5, 0, 0], math.exp(-6.25 / 0.72), rtol=1e-4)
    assert np.count_nonzero(img[..., 0]) == 4  # rows 3..6 in column 0
    assert np.count_nonzero(img[..., 1]) == 0  # int(-1.1) + 1 = 0: empty window
    assert np.count_nonzero(img[..., 2]) == 0  # score below eps
    np.testing.assert_allclose(img[6, 6, 3], 1e-3, rtol=1e-5)  # score == eps is drawn


@pytest.mark.parametrize("seed", [0, 1])
def test_keypoints_match_reference(seed):
    rng = np.random.default_rng(seed)
    h, w = 24, 32  # non-square to catch axis mix-ups
    kp, score = _random_pose(rng, m=2, t=3, v=17, h=h, w=w)
    # Make the two persons overlap so the max over persons matters.
    kp[1, :, :8] = kp[0, :, :8] + rng.uniform(-1.5, 1.5, (3, 8, 2)).astype(np.float32)
    got = np.asarray(hm.render_heatmaps(kp, score, h, w))
    want = reference(kp, score, h, w)
    assert got.shape == (3, h, w, 17)
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_limbs_match_reference():
    rng = np.random.default_rng(2)
    h, w = 20, 26
    kp, score = _random_pose(rng, m=2, t=2, v=17, h=h, w=w)
    kp[0, 0, 1] = kp[0, 0, 0] + 0.4  # |ab|^2 < 1: drawn as a point at the start
    kp[1, 1, 5] = (3.0, 4.0)
    kp[1, 1, 7] = (15.0, 12.0)  # a long in-image limb
    score[1, 1, [5, 7]] = (0.9, 0.7)
    score[0, 0, :2] = (0.6, 0.9)
    got = np.asarray(hm.render_heatmaps(kp, score, h, w, with_kp=False, with_limb=True))
    want = reference(kp, score, h, w, with_kp=False, with_limb=True)
    assert got.shape == (2, h, w, len(hm.COCO_LIMBS))
    np.testing.assert_allclose(got, want, atol=1e-4)
    assert got[0, ..., 0].max() > 0.5  # the short limb (0, 1) was drawn
    # Both kinds: keypoint channels first, then limbs.
    both = np.asarray(hm.render_heatmaps(kp, score, h, w, with_kp=True, with_limb=True))
    np.testing.assert_allclose(both[..., :17], reference(kp, score, h, w), atol=1e-5)
    np.testing.assert_allclose(both[..., 17:], want, atol=1e-4)


def test_short_limb_uses_start_score():
    kp = np.array([[[[5.0, 5.0], [5.5, 5.5]]]], np.float32)
    score = np.array([[[0.9, 0.3]]], np.float32)
    got = np.asarray(
        hm.render_heatmaps(kp, score, 10, 10, with_kp=False, with_limb=True, skeleton=((0, 1),))
    )
    np.testing.assert_allclose(got[0, 5, 5, 0], 0.9, rtol=1e-6)
    score[0, 0, 1] = 5e-4  # min below eps: nothing at all
    got = np.asarray(
        hm.render_heatmaps(kp, score, 10, 10, with_kp=False, with_limb=True, skeleton=((0, 1),))
    )
    assert not got.any()


def test_batched_jit_and_dtype():
    rng = np.random.default_rng(3)
    b, n, m, t, v, h, w = 2, 3, 2, 4, 17, 16, 16
    kp, score = _random_pose(rng, m=b * n * m, t=t, v=v, h=h, w=w)
    kp = kp.reshape(b, n, m, t, v, 2)
    score = score.reshape(b, n, m, t, v)
    fn = jax.jit(lambda k, s: hm.render_heatmaps(k, s, h, w))
    got = np.asarray(fn(kp, score))
    assert got.shape == (b, n, t, h, w, v) and got.dtype == np.float32
    for i in range(b):
        for j in range(n):
            np.testing.assert_allclose(got[i, j], reference(kp[i, j], score[i, j], h, w), atol=1e-5)
    bf = hm.render_heatmaps(kp, score, h, w, dtype=jnp.bfloat16)
    assert bf.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(bf, np.float32), got, atol=1e-2)


def test_nan_and_no_person_inputs():
    kp = np.full((1, 2, 3, 2), np.nan, np.float32)
    score = np.array([[[1.0, np.nan, 0.5]] * 2], np.float32)
    vol = np.asarray(hm.render_heatmaps(kp, score, 8, 8))
    assert np.isfinite(vol).all() and not vol.any()
    empty = hm.render_heatmaps(np.zeros((0, 2, 3, 2)), np.zeros((0, 2, 3)), 8, 8)
    assert empty.shape == (2, 8, 8, 3) and not np.asarray(empty).any()
    with pytest.raises(ValueError):
        hm.render_heatmaps(kp, score, 8, 8, with_kp=False)


def test_flip_heatmaps_is_pyskl_double():
    rng = np.random.default_rng(4)
    h, w = 16, 20
    kp, score = _random_pose(rng, m=2, t=2, v=17, h=h, w=w)
    vol = np.asarray(hm.render_heatmaps(kp, score, h, w))
    flipped = np.asarray(hm.flip_heatmaps(vol))
    # PYSKL double: reverse the width axis, then channel c takes channel swap(c).
    for c in range(17):
        src = c
        if c in hm.COCO_LEFT_KP:
            src = hm.COCO_RIGHT_KP[hm.COCO_LEFT_KP.index(c)]
        elif c in hm.COCO_RIGHT_KP:
            src = hm.COCO_LEFT_KP[hm.COCO_RIGHT_KP.index(c)]
        np.testing.assert_array_equal(flipped[..., c], vol[:, :, ::-1, src])
    np.testing.assert_array_equal(np.asarray(hm.flip_heatmaps(flipped)), vol)


def test_image_flip_differs_from_rerendering_mirrored_keypoint():
    """Why flip_heatmaps flips pixels: the truncated window is not mirror-symmetric."""
    w = 32
    kp = np.array([[[[10.0, 5.0]]]], np.float32)
    score = np.ones((1, 1, 1), np.float32)
    img_flip = np.asarray(hm.flip_heatmaps(hm.render_heatmaps(kp, score, 10, w), (), ()))
    kp_m = kp.copy()
    kp_m[..., 0] = w - 1 - kp_m[..., 0]
    rerendered = np.asarray(hm.render_heatmaps(kp_m, score, 10, w))
    cols_flip = np.nonzero(img_flip[0, 5, :, 0])[0]
    cols_rerender = np.nonzero(rerendered[0, 5, :, 0])[0]
    np.testing.assert_array_equal(cols_flip, [20, 21, 22, 23])  # mirror of [8, 11]
    np.testing.assert_array_equal(cols_rerender, [19, 20, 21, 22])  # [int(19.2), int(22.8)]
