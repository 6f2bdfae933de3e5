"""One video file -> COCO-17 keypoints of one person (PYSKL layout), with a tqdm progress bar."""

from __future__ import annotations

import dataclasses
import io
import os
import pickle
import tempfile
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from skclip_jax.video import VideoError

NUM_KEYPOINTS = 17


@dataclasses.dataclass
class VideoKeypoints:
    """A video's keypoints: `keypoint` [1, T, 17, 2] float32 pixels, `keypoint_score` [1, T, 17] (0 in
    frames without a person, whose keypoints are 0, as in PYSKL), frame size and rate, and how the
    extraction went (frames with a person, detector runs, seconds)."""

    path: str
    keypoint: np.ndarray
    keypoint_score: np.ndarray
    img_shape: tuple[int, int]
    fps: float
    frames_with_person: int = 0
    detector_runs: int = 0
    seconds: float = 0.0

    @property
    def total_frames(self) -> int:
        return int(self.keypoint.shape[1])

    @property
    def extraction_fps(self) -> float:
        return self.total_frames / self.seconds if self.seconds > 0 else float("inf")

    def annotation(self, frame_dir: str | None = None, label: int | None = None) -> dict[str, Any]:
        """The PYSKL annotation dict (what data_prep.pyskl and predict read)."""
        ann = {
            "frame_dir": frame_dir or os.path.splitext(os.path.basename(self.path))[0],
            "img_shape": tuple(self.img_shape),
            "original_shape": tuple(self.img_shape),
            "total_frames": self.total_frames,
            "keypoint": self.keypoint,
            "keypoint_score": self.keypoint_score,
            "fps": float(self.fps),
        }
        if label is not None:
            ann["label"] = int(label)
        return ann

    def npz_arrays(self) -> dict[str, np.ndarray]:
        """The .npz fields: keypoint, keypoint_score, img_shape (h, w), fps, total_frames."""
        return {
            "keypoint": self.keypoint,
            "keypoint_score": self.keypoint_score,
            "img_shape": np.asarray(self.img_shape, np.int32),
            "fps": np.float32(self.fps),
            "total_frames": np.int32(self.total_frames),
        }


def extract(
    path: str | os.PathLike,
    *,
    pose=None,
    progress: bool = True,
    num_threads: int = 2,
    on_frame: Callable[[int, np.ndarray, Any], None] | None = None,
) -> VideoKeypoints:
    """Runs BlazePose over every frame of one video and keeps one person (M = 1).

    Args:
      pose: a blazepose.BlazePose to reuse (its tracking is reset); a new one otherwise.
      on_frame: called as on_frame(index, rgb_frame, Pose or None), e.g. to draw the skeleton.

    Raises:
      VideoError: missing, unreadable or truncated file, or no person in any frame (nothing returned).
    """
    from tqdm.auto import tqdm

    from skclip_jax.video import blazepose, reader

    path = os.fspath(path)
    video = reader.VideoReader(path)  # opens and checks the file before the models load.
    if pose is None:
        try:
            pose = blazepose.BlazePose(num_threads=num_threads)
        except BaseException:
            video.close()
            raise
    pose.reset()
    detector_runs = pose.detector_runs
    points, scores, shape = [], [], None
    found = 0
    start = time.perf_counter()
    bar = tqdm(
        total=video.info.frame_count or None,
        desc=os.path.basename(path),
        unit="frame",
        disable=not progress,
        leave=False,
        dynamic_ncols=True,
    )
    try:
        for i, frame in enumerate(video):
            if shape is None:
                shape = frame.shape[:2]
            elif frame.shape[:2] != shape:
                raise VideoError(f"{path}: frame {i} is {frame.shape[:2]}, the first was {shape}")
            person = pose(frame)
            if person is None:
                points.append(np.zeros((NUM_KEYPOINTS, 2), np.float32))
                scores.append(np.zeros(NUM_KEYPOINTS, np.float32))
            else:
                kp, score = person.coco()
                points.append(kp)
                scores.append(score)
                found += 1
            if on_frame is not None:
                on_frame(i, frame, person)
            bar.update()
    finally:
        bar.close()
        video.close()
    seconds = time.perf_counter() - start
    if found == 0:
        raise VideoError(f"{path}: no person found in any of its {len(points)} frames")
    return VideoKeypoints(
        path=path,
        keypoint=np.stack(points)[None],
        keypoint_score=np.stack(scores)[None],
        img_shape=(int(shape[0]), int(shape[1])),
        fps=video.fps,
        frames_with_person=found,
        detector_runs=pose.detector_runs - detector_runs,
        seconds=seconds,
    )


def write_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Writes `data` to a temporary file beside `path`, then renames: no half-written output."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def save_npz(path: str | os.PathLike, keypoints: VideoKeypoints) -> None:
    """The .npz that predict --input reads (see VideoKeypoints.npz_arrays)."""
    buffer = io.BytesIO()
    np.savez(buffer, **keypoints.npz_arrays())
    write_atomic(path, buffer.getvalue())


def save_pickle(path: str | os.PathLike, data: Any) -> None:
    write_atomic(path, pickle.dumps(data, protocol=pickle.HIGHEST_PROTOCOL))
