"""Long videos in predict: sliding windows, the timeline plot and the annotated video.

A video is scored window by window, since the model reads a fixed number of frames (config.data.clip_len)
sampled over whatever clip it is given: a whole minute squeezed into 48 frames says little about any
moment of it. Window and stride are whole frames; a window's times are its first frame's start and its
last frame's end, frame / fps seconds.
"""

from __future__ import annotations

import dataclasses
import math
import os
import tempfile
from collections.abc import Sequence

import numpy as np

from skclip_jax.video import VideoError

TIMELINE_CLASSES = 5


@dataclasses.dataclass(frozen=True)
class Window:
    """Frames [start, end) of a video at `fps` frames a second."""

    index: int
    start: int
    end: int
    fps: float

    @property
    def start_s(self) -> float:
        return self.start / self.fps

    @property
    def end_s(self) -> float:
        return self.end / self.fps

    @property
    def centre(self) -> float:
        return (self.start + self.end - 1) / 2


def window_frames(
    fps: float,
    clip_len: int,
    window_seconds: float | None = None,
    stride_seconds: float | None = None,
) -> tuple[int, int]:
    """(window, stride) in frames: `window_seconds` (default: clip_len frames, the frames the model
    reads at once, so that each frame of a window is read once) and `stride_seconds` (default: half
    the window)."""
    if window_seconds is not None and not window_seconds > 0:
        raise ValueError(f"--window_seconds must be > 0, got {window_seconds}")
    if stride_seconds is not None and not stride_seconds > 0:
        raise ValueError(f"--stride_seconds must be > 0, got {stride_seconds}")
    window = clip_len if window_seconds is None else max(1, round(window_seconds * fps))
    stride = max(1, window // 2) if stride_seconds is None else max(1, round(stride_seconds * fps))
    return int(window), int(stride)


def sliding_windows(total_frames: int, window: int, stride: int, fps: float) -> list[Window]:
    """Windows every `stride` frames from frame 0, plus one flush with the end when the stride leaves
    a tail, so that every frame is in some window. Empty when the video is shorter than one window."""
    if total_frames < window:
        return []
    starts = list(range(0, total_frames - window + 1, stride))
    if starts[-1] + window < total_frames:
        starts.append(total_frames - window)
    return [Window(i, s, s + window, fps) for i, s in enumerate(starts)]


def window_sample(sample: dict, window: Window) -> dict:
    """The checked clip (predict's sample dict) cut to the window's frames."""
    return {
        **sample,
        "keypoint": sample["keypoint"][:, window.start : window.end],
        "keypoint_score": sample["keypoint_score"][:, window.start : window.end],
        "total_frames": window.end - window.start,
    }


def timeline_classes(probs: np.ndarray, count: int = TIMELINE_CLASSES) -> np.ndarray:
    """The classes worth drawing: those that are top-1 somewhere, then the highest peaks."""
    tops = list(dict.fromkeys(int(c) for c in np.argmax(probs, axis=1)))
    peaks = [int(c) for c in np.argsort(-probs.max(axis=0), kind="stable") if c not in tops]
    return np.array((tops + peaks)[: max(count, 1)])


def plot_timeline(
    windows: Sequence[Window],
    probs: np.ndarray,
    class_names: Sequence[str],
    title: str,
    path: str,
) -> None:
    """Probabilities of the leading classes over time (a step per window, drawn at its centre time),
    and a strip of each window's top-1 class."""
    from matplotlib.figure import Figure

    classes = timeline_classes(probs)
    colours = {int(c): f"C{i}" for i, c in enumerate(classes)}
    centres = np.array([(w.start_s + w.end_s) / 2 for w in windows])
    fig = Figure(figsize=(10, 4.8), layout="constrained")
    ax, strip = fig.subplots(2, 1, sharex=True, height_ratios=(4, 1))
    for c in classes:
        ax.plot(centres, probs[:, c], marker="o", markersize=3, color=colours[int(c)])
        ax.plot([], [], color=colours[int(c)], label=class_names[c])
    ax.set_ylabel("probability")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
    ax.set_title(title)
    # Each window's top-1 from halfway to its neighbours' centres (the first from 0, the last to its end).
    bounds = [0.0, *((centres[1:] + centres[:-1]) / 2), windows[-1].end_s]
    for i, c in enumerate(np.argmax(probs, axis=1)):
        strip.axvspan(bounds[i], bounds[i + 1], color=colours[int(c)], linewidth=0)
    strip.set_yticks([])
    strip.set_ylabel("top-1", rotation=0, ha="right", va="center")
    strip.set_xlabel("time (s)")
    strip.set_xlim(0, windows[-1].end_s)
    _savefig_atomic(fig, path)


def _savefig_atomic(fig, path: str) -> None:
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}.", suffix=".png")
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=110)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def grab_frames(path: str, indices: Sequence[int]) -> dict[int, np.ndarray]:
    """RGB frames at `indices`, by decoding up to the last one (seeking is inexact in many codecs)."""
    from skclip_jax.video import reader

    wanted, frames = set(int(i) for i in indices), {}
    if not wanted:
        return frames
    last = max(wanted)
    for i, frame in enumerate(reader.VideoReader(path)):
        if i in wanted:
            frames[i] = frame
        if i >= last:
            break
    return frames


def nearest_window(windows: Sequence[Window], frame: int, usable: Sequence[bool]) -> int | None:
    """Index of the usable window whose centre is nearest `frame` (earliest on ties)."""
    best, distance = None, math.inf
    for w, ok in zip(windows, usable, strict=True):
        if ok and abs(w.centre - frame) < distance:
            best, distance = w.index, abs(w.centre - frame)
    return best


def draw_pose(frame_bgr: np.ndarray, keypoint: np.ndarray, score: np.ndarray, min_score=0.3):
    """The COCO-17 skeleton of each person on an OpenCV (BGR) image, in place."""
    import cv2

    from skclip_jax.heatmaps import COCO_LIMBS

    for pts, ok in zip(keypoint, score >= min_score, strict=True):
        for a, b in COCO_LIMBS:
            if ok[a] and ok[b]:
                pa = tuple(int(round(v)) for v in pts[a])
                pb = tuple(int(round(v)) for v in pts[b])
                cv2.line(frame_bgr, pa, pb, (255, 160, 0), 2, cv2.LINE_AA)
        for (x, y), good in zip(pts, ok, strict=True):
            if good:
                cv2.circle(
                    frame_bgr, (int(round(x)), int(round(y))), 3, (0, 0, 255), -1, cv2.LINE_AA
                )


def write_annotated_video(
    path: str,
    out_path: str,
    keypoint: np.ndarray,
    keypoint_score: np.ndarray,
    windows: Sequence[Window],
    labels: Sequence[str | None],
) -> int:
    """The video with its skeleton and, on each frame, the label of the nearest window (labels[i] is
    window i's caption, None where it has none). Written beside `out_path` and renamed when complete.

    Returns the number of frames written.
    """
    import cv2

    from skclip_jax.video import reader

    video = reader.VideoReader(path)
    folder = os.path.dirname(os.path.abspath(out_path))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(out_path)}.", suffix=".mp4")
    os.close(fd)
    writer = None
    usable = [label is not None for label in labels]
    count = 0
    try:
        for i, frame in enumerate(video):
            bgr = np.ascontiguousarray(frame[..., ::-1])
            if writer is None:
                h, w = bgr.shape[:2]
                writer = cv2.VideoWriter(tmp, cv2.VideoWriter_fourcc(*"mp4v"), video.fps, (w, h))
                if not writer.isOpened():
                    raise VideoError(f"{out_path}: OpenCV cannot write an mp4v video here")
            if i < keypoint.shape[1]:
                draw_pose(bgr, keypoint[:, i], keypoint_score[:, i])
            nearest = nearest_window(windows, i, usable)
            if nearest is not None:
                text = f"{i / video.fps:6.2f} s  {labels[nearest]}"
                cv2.putText(
                    bgr, text, (10, 28), cv2.FONT_HERSHEY_SIMPLEX, 0.7, (0, 0, 0), 4, cv2.LINE_AA
                )
                cv2.putText(
                    bgr,
                    text,
                    (10, 28),
                    cv2.FONT_HERSHEY_SIMPLEX,
                    0.7,
                    (255, 255, 255),
                    2,
                    cv2.LINE_AA,
                )
            writer.write(bgr)
            count += 1
        writer.release()
        writer = None
        os.replace(tmp, out_path)
    finally:
        if writer is not None:
            writer.release()
        if os.path.exists(tmp):
            os.remove(tmp)
    return count
