"""Keypoint-space PYSKL transforms: hand-checked cases and a PYSKL-style test-mode sampler."""

import numpy as np
import pytest

from skclip_jax import pose_transforms as pt
from skclip_jax.heatmaps import COCO_LEFT_KP, COCO_RIGHT_KP


def pyskl_test_frames(total: int, clip_len: int, num_clips: int) -> np.ndarray:
    """PYSKL's test-mode UniformSampleFrames, driven by the global legacy RNG it uses."""
    saved = np.random.get_state()
    np.random.seed(255)
    try:
        clips = []
        for i in range(num_clips):
            np.random.rand()  # ratio draw (p_interval = 1 makes it irrelevant)
            n = total
            off = np.random.randint(1)
            if n < clip_len:
                first = i if n < num_clips else i * n // num_clips
                frames = [first + k for k in range(clip_len)]
            elif n < 2 * clip_len:
                picked = np.random.choice(clip_len + 1, n - clip_len, replace=False)
                frames, skipped = [], 0
                for k in range(clip_len):
                    skipped += int(k in picked)
                    frames.append(k + skipped)
            else:
                edges = [k * n // clip_len for k in range(clip_len + 1)]
                sizes = np.array([edges[k + 1] - edges[k] for k in range(clip_len)])
                jitter = np.random.randint(sizes)
                frames = [edges[k] + int(jitter[k]) for k in range(clip_len)]
            clips.extend((f + off) % total for f in frames)
        return np.array(clips)
    finally:
        np.random.set_state(saved)


@pytest.mark.parametrize("total", [100, 96, 60, 48, 20, 7, 1])
def test_test_mode_frames_equal_pyskl(total):
    before = np.random.get_state()[1].copy()
    got = pt.uniform_sample_frames(total, 48, num_clips=10, test_mode=True)
    np.testing.assert_array_equal(got, pyskl_test_frames(total, 48, 10))
    np.testing.assert_array_equal(
        got, pt.uniform_sample_frames(total, 48, num_clips=10, test_mode=True)
    )
    np.testing.assert_array_equal(np.random.get_state()[1], before)  # global RNG untouched
    assert got.shape == (480,) and got.dtype == np.int64


def test_test_mode_short_clips_hand_values():
    # total < num_clips: clip i starts at frame i and loops over the 7 frames.
    got = pt.uniform_sample_frames(7, 48, num_clips=10, test_mode=True).reshape(10, 48)
    np.testing.assert_array_equal(got[3], (3 + np.arange(48)) % 7)
    # num_clips <= total < clip_len: clip i starts at i * total // num_clips.
    got = pt.uniform_sample_frames(20, 48, num_clips=10, test_mode=True).reshape(10, 48)
    np.testing.assert_array_equal(got[4], (8 + np.arange(48)) % 20)


def test_train_frames_one_per_segment():
    rng = np.random.default_rng(0)
    edges = np.arange(49) * 100 // 48
    seen = np.zeros(100, bool)
    for _ in range(200):
        inds = pt.uniform_sample_frames(100, 48, rng=rng)
        assert inds.shape == (48,)
        assert np.all(inds >= edges[:-1]) and np.all(inds < edges[1:])
        seen[inds] = True
    assert seen.all()  # every frame of every segment is reachable


def test_train_frames_mid_and_short_regimes():
    rng = np.random.default_rng(1)
    starts = set()
    for _ in range(300):
        mid = pt.uniform_sample_frames(60, 48, rng=rng)  # 48 <= 60 < 96: 12 random skips
        steps = np.diff(mid)
        assert mid[0] in (0, 1) and set(steps.tolist()) <= {1, 2} and mid[-1] <= 59
        assert np.sum(steps == 2) + mid[0] <= 12
        short = pt.uniform_sample_frames(20, 48, rng=rng)  # loops from a random start
        np.testing.assert_array_equal(short, (short[0] + np.arange(48)) % 20)
        starts.add(int(short[0]))
    assert starts == set(range(20))
    with pytest.raises(ValueError):
        pt.uniform_sample_frames(20, 48)  # training draws need a generator
    sub = pt.uniform_sample_frames(50, 8, rng=rng, p_interval=(0.5, 1.0), num_clips=3)
    assert sub.shape == (24,) and sub.min() >= 0 and sub.max() < 50
    # p_interval 0.5: a 50-frame window at a random offset in [0, 50] of 100 frames.
    half = np.stack(
        [pt.uniform_sample_frames(100, 10, rng=rng, p_interval=(0.5, 0.5)) for _ in range(200)]
    )
    assert np.all(half[:, -1] - half[:, 0] < 50) and half.max() >= 90 and half.min() <= 5


def _skeleton():
    kp = np.zeros((1, 1, 4, 2), np.float32)
    kp[0, 0, :3] = [(20, 40), (60, 40), (40, 100)]  # keypoint 3 stays (0, 0): missing
    return kp


def test_pose_compact_known_box():
    kp, shape = pt.pose_compact(_skeleton(), (480, 640))
    # Box x 20..60, y 40..100 -> centre (40, 70), halves (25, 37.5) -> square 37.5:
    # x [2.5, 77.5] -> [2, 77], y [32.5, 107.5] -> [32, 107].
    assert shape == (75, 75)
    np.testing.assert_array_equal(kp[0, 0], [(18, 8), (58, 8), (38, 68), (0, 0)])


def test_pose_compact_truncates_toward_zero_and_clips():
    kp = np.zeros((2, 1, 2, 2), np.float32)
    kp[0, 0] = [(5, 10), (25, 30)]
    kp[1, 0] = [(10, 91), (0, 0)]  # box spans both persons
    # Box x 5..25, y 10..91: centre (15, 50.5), half_h 50.625 = half_w after hw_ratio.
    out, shape = pt.pose_compact(kp, (200, 320))
    # x0 = int(-35.625) = -35 and y0 = int(-0.125) = 0 (floor would give -36 and -1).
    assert shape == (101 - 0, 65 + 35)
    np.testing.assert_allclose(out[0, 0], [(40, 10), (60, 30)])
    out, shape = pt.pose_compact(kp, (200, 320), allow_imgpad=False)
    assert shape == (101, 65)
    np.testing.assert_allclose(out[0, 0], [(5, 10), (25, 30)])
    # hw_ratio=None keeps the padded tight box: x [2.5, 27.5] -> [2, 27], y [-0.125, 101.125].
    out, shape = pt.pose_compact(kp, (200, 320), hw_ratio=None)
    assert shape == (101, 25)


def test_pose_compact_small_box_and_nan():
    kp = np.array([[[[5.0, 5.0], [12.0, np.nan], [9.0, 30.0]]]], np.float32)
    out, shape = pt.pose_compact(kp, (50, 60))  # width 7 < threshold 10: unchanged
    assert shape == (50, 60)
    np.testing.assert_array_equal(out, np.nan_to_num(kp))
    out, shape = pt.pose_compact(np.zeros((0, 3, 17, 2), np.float32), (50, 60))
    assert shape == (50, 60) and out.shape == (0, 3, 17, 2)


def test_resize_rules():
    kp = np.array([[10.0, 30.0]], np.float32)
    out, shape = pt.resize_keypoints(kp, (75, 100), (-1, 64))
    assert shape == (64, 85)  # short side 64, long int(100 * 64 / 75 + 0.5) = int(85.83)
    np.testing.assert_allclose(out, [[10 * 85 / 100, 30 * 64 / 75]], rtol=1e-6)
    out, shape = pt.resize_keypoints(kp, (100, 75), (-1, 64))
    assert shape == (85, 64)
    out, shape = pt.resize_keypoints(kp, (64, 86), (56, 56), keep_ratio=False)
    assert shape == (56, 56)
    np.testing.assert_allclose(out, [[10 * 56 / 86, 30 * 56 / 64]], rtol=1e-6)
    out, shape = pt.resize_keypoints(kp, (40, 50), 0.5)
    assert shape == (20, 25)
    out, shape = pt.resize_keypoints(kp, (10, 5), 0.5)
    assert shape == (5, 3)  # int(2.5 + 0.5), not banker's round(2.5) = 2


def test_random_resized_crop_box_bounds_and_area():
    rng = np.random.default_rng(2)
    h, w = 64, 86
    for _ in range(1000):
        left, top, right, bottom = pt.random_resized_crop_box((h, w), rng, area_range=(0.56, 1.0))
        assert 0 <= left < right <= w and 0 <= top < bottom <= h
        cw, ch = right - left, bottom - top
        if (left, top, cw, ch) == ((w - h) // 2, 0, h, h):
            continue  # fallback square, also a legal draw
        assert 0.56 * 0.95 <= cw * ch / (h * w) <= 1.0
        assert 0.75 * 0.95 <= cw / ch <= 4 / 3 * 1.05


def test_random_resized_crop_box_offsets_and_fallback():
    rng = np.random.default_rng(3)
    lefts = set()
    for _ in range(500):
        box = pt.random_resized_crop_box(
            (64, 64), rng, area_range=(0.25, 0.25), aspect_ratio_range=(1.0, 1.0)
        )
        assert box[2] - box[0] == 32 and box[3] - box[1] == 32
        lefts.add(box[0])
    assert lefts == set(range(33))  # offsets are inclusive of img_w - crop_w
    # Nothing of area 1000 with w/h in [3/4, 4/3] fits a 10-row image: centred square.
    box = pt.random_resized_crop_box((10, 100), rng, area_range=(1.0, 1.0))
    assert box == (45, 0, 55, 10)


def test_crop_and_flip_keypoints():
    kp = np.zeros((1, 1, 17, 2), np.float32)
    kp[0, 0, :, 0] = np.arange(17) + 1.0
    kp[0, 0, :, 1] = 100 + np.arange(17)
    kp[0, 0, 0, 0] = 0.0  # x == 0 counts as missing in Flip
    score = np.linspace(0.1, 0.9, 17, dtype=np.float32)[None, None]
    out, shape = pt.crop_keypoints(kp, (3, 5, 43, 35))
    assert shape == (30, 40)
    np.testing.assert_allclose(out[0, 0, 2], (3 - 3, 102 - 5))
    fk, fs = pt.flip_keypoints(kp, score, 56)
    assert fk[0, 0, 0, 0] == 0.0  # missing x is not mirrored
    for left, right in zip(COCO_LEFT_KP, COCO_RIGHT_KP, strict=True):
        np.testing.assert_allclose(fk[0, 0, left], (56 - kp[0, 0, right, 0], kp[0, 0, right, 1]))
        np.testing.assert_allclose(fk[0, 0, right], (56 - kp[0, 0, left, 0], kp[0, 0, left, 1]))
        assert fs[0, 0, left] == score[0, 0, right] and fs[0, 0, right] == score[0, 0, left]
    np.testing.assert_allclose(fk[0, 0, 1], (56 - 3.0, 102))  # x -> w - x, not w - 1 - x
    assert kp[0, 0, 1, 0] == 2.0  # input untouched


def test_select_persons():
    kp = np.arange(3 * 2 * 4 * 2, dtype=np.float32).reshape(3, 2, 4, 2)
    score = np.stack([np.full((2, 4), s, np.float32) for s in (0.2, 0.9, 0.5)])
    score[0, 0, 0] = np.nan
    out_kp, out_s = pt.select_persons(kp, score, 2)
    np.testing.assert_array_equal(out_kp, kp[[1, 2]])
    np.testing.assert_array_equal(out_s, score[[1, 2]])
    out_kp, out_s = pt.select_persons(kp[:1], score[:1], 2)
    assert not out_s[1].any() and not out_kp[1].any()
    assert np.isfinite(out_s).all() and out_s[0, 0, 0] == 0.0
    out_kp, out_s = pt.select_persons(kp[:0], score[:0], 2)
    assert out_kp.shape == (2, 2, 4, 2) and not out_s.any()


def _static_sample(m=1, total=100):
    """A still skeleton (same every frame) whose compact box is a 75 x 75 square."""
    kp = np.zeros((m, total, 17, 2), np.float32)
    kp[:, :, :3] = [(20, 40), (60, 40), (40, 100)]
    kp[:, :, 3:] = (40, 70)
    score = np.full((m, total, 17), 0.7, np.float32)
    return {
        "keypoint": kp,
        "keypoint_score": score,
        "img_shape": (480, 640),
        "total_frames": total,
        "label": 3,
    }


@pytest.mark.parametrize("flip", [False, True])
def test_train_transform_end_to_end(flip):
    sample = _static_sample()
    rng = np.random.default_rng(4)
    out = pt.train_transform(
        sample, rng, clip_len=48, out_size=56, area_range=(1.0, 1.0), flip_ratio=float(flip)
    )
    assert out["keypoint"].shape == (2, 48, 17, 2) and out["keypoint"].dtype == np.float32
    assert out["keypoint_score"].shape == (2, 48, 17)
    # Compact to 75 x 75 at (2, 32), short side -> 64 x 64, full-area crop of a square is
    # the whole image, then 56 x 56: x' = (x - 2) * 56 / 75, optionally 56 - x'.
    want = (sample["keypoint"][0, :48] - (2, 32)) * np.float32(64 / 75) * np.float32(56 / 64)
    if flip:
        want[..., 0] = 56 - want[..., 0]
        order = np.arange(17)
        order[list(COCO_LEFT_KP)], order[list(COCO_RIGHT_KP)] = COCO_RIGHT_KP, COCO_LEFT_KP
        want = want[:, order]
    np.testing.assert_allclose(out["keypoint"][0], want, rtol=1e-5)
    np.testing.assert_allclose(out["keypoint_score"][0], 0.7)
    assert not out["keypoint"][1].any() and not out["keypoint_score"][1].any()


def test_train_transform_random_and_degenerate_inputs():
    rng = np.random.default_rng(5)
    sample = _static_sample(m=3, total=30)
    sample["keypoint"] = sample["keypoint"] + rng.normal(0, 5, sample["keypoint"].shape).astype(
        np.float32
    )
    sample["keypoint"][0, 3, 2] = np.nan
    a = pt.train_transform(sample, np.random.default_rng(9), clip_len=48, out_size=56)
    b = pt.train_transform(sample, np.random.default_rng(9), clip_len=48, out_size=56)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
        assert np.isfinite(a[key]).all()
    empty = {"keypoint": np.zeros((0, 5, 17, 2)), "keypoint_score": np.zeros((0, 5, 17))}
    empty.update(img_shape=(240, 320), total_frames=5, label=0)
    out = pt.train_transform(empty, rng, clip_len=48, out_size=56)
    assert out["keypoint"].shape == (2, 48, 17, 2) and not out["keypoint_score"].any()
    out = pt.test_transform(empty, clip_len=48, num_clips=10, out_size=64)
    assert out["keypoint"].shape == (10, 2, 48, 17, 2) and not out["keypoint_score"].any()


def test_test_transform_matches_composition():
    total, m = 130, 3
    rng = np.random.default_rng(6)
    t = np.arange(total, dtype=np.float32)
    kp = np.zeros((m, total, 17, 2), np.float32)
    kp[..., 0] = 100 + t[None, :, None] + rng.uniform(0, 40, (m, 1, 17))  # frame index visible in x
    kp[..., 1] = 200 + rng.uniform(0, 90, (m, 1, 17)) + 0 * t[None, :, None]
    score = np.full((m, total, 17), 0.5, np.float32)
    score[2, 65:] = 0.9  # ranking by clip score: person 2, then 0, then 1
    score[1, :65] = 0.1
    sample = {"keypoint": kp, "keypoint_score": score, "img_shape": (360, 480)}
    sample.update(total_frames=total, label=1)
    out = pt.test_transform(sample, clip_len=16, num_clips=5, out_size=64)
    again = pt.test_transform(sample, clip_len=16, num_clips=5, out_size=64)
    np.testing.assert_array_equal(out["keypoint"], again["keypoint"])
    assert out["keypoint"].shape == (5, 2, 16, 17, 2) and out["keypoint"].dtype == np.float32
    assert out["keypoint_score"].shape == (5, 2, 16, 17)

    inds = pyskl_test_frames(total, 16, 5)
    sel = kp[:, inds]
    # One PoseCompact box over all 80 sampled frames of all persons.
    x_lo, x_hi, y_lo, y_hi = (
        sel[..., 0].min(),
        sel[..., 0].max(),
        sel[..., 1].min(),
        sel[..., 1].max(),
    )
    half = max(x_hi - x_lo, y_hi - y_lo) / 2 * 1.25
    cx, cy = (x_hi + x_lo) / 2, (y_hi + y_lo) / 2
    x0, x1, y0, y1 = int(cx - half), int(cx + half), int(cy - half), int(cy + half)
    want = (sel - (x0, y0)) * np.array([64 / (x1 - x0), 64 / (y1 - y0)], np.float32)
    want = want.reshape(m, 5, 16, 17, 2)
    clip_scores = score[:, inds].reshape(m, 5, -1).sum(-1)
    for c in range(5):
        top = np.argsort(-clip_scores[:, c], kind="stable")[:2]
        np.testing.assert_allclose(out["keypoint"][c], want[top, c], rtol=1e-5, atol=1e-4)
        np.testing.assert_allclose(
            out["keypoint_score"][c], score[:, inds].reshape(m, 5, 16, 17)[top, c]
        )
    np.testing.assert_allclose(out["keypoint_score"][:, 0, -1, 0], 0.9)  # person 2 ranks first
