"""Frames and frame rate of a video file through OpenCV, with one-line errors for bad files."""

from __future__ import annotations

import dataclasses
import os
import queue
import threading
from collections.abc import Iterator

import numpy as np

from skclip_jax.video import VideoError

# FFmpeg's own messages about a broken stream would interleave with the one-line error; quiet them
# unless the user asked for them.
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")

# A container's frame count can be an estimate (from duration x fps): a shortfall up to this many
# frames (or 2 %) is not called truncation.
FRAME_COUNT_SLACK = 2

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv")


@dataclasses.dataclass(frozen=True)
class VideoInfo:
    """What the container says: frame rate, declared frame count (0 when unknown), frame size."""

    path: str
    fps: float
    frame_count: int
    width: int
    height: int


def _open(path: str):
    import cv2

    if not os.path.isfile(path):
        raise VideoError(f"{path}: no such file")
    cap = cv2.VideoCapture(path)
    if not cap.isOpened():
        cap.release()
        raise VideoError(f"{path}: not a readable video (OpenCV/FFmpeg cannot open it)")
    return cap


def _info(path: str, cap) -> VideoInfo:
    import cv2

    fps = float(cap.get(cv2.CAP_PROP_FPS))
    count = cap.get(cv2.CAP_PROP_FRAME_COUNT)
    count = int(count) if np.isfinite(count) and count > 0 else 0
    width, height = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
    if not np.isfinite(fps) or fps <= 0 or fps > 1000:
        raise VideoError(f"{path}: the video declares no usable frame rate ({fps})")
    return VideoInfo(path, fps, count, width, height)


def probe(path: str) -> VideoInfo:
    """The video's VideoInfo without decoding it; VideoError if it cannot be opened."""
    cap = _open(path)
    try:
        return _info(path, cap)
    finally:
        cap.release()


def _decode(path: str, cap, info: VideoInfo) -> Iterator[np.ndarray]:
    import cv2

    n = 0
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        if frame is None or frame.ndim != 3 or frame.shape[2] != 3:
            raise VideoError(f"{path}: frame {n} is not a colour image")
        n += 1
        yield cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
    if n == 0:
        raise VideoError(f"{path}: no frame could be decoded (truncated or not a video)")
    if info.frame_count and n < info.frame_count - max(FRAME_COUNT_SLACK, info.frame_count // 50):
        raise VideoError(
            f"{path}: truncated: decoded {n} of the {info.frame_count} frames its header declares"
        )


class _Prefetch:
    """Decodes in a background thread (OpenCV releases the GIL) while the caller runs the models."""

    _END = object()

    def __init__(self, frames: Iterator[np.ndarray], depth: int):
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._work, args=(frames,), daemon=True)
        self._thread.start()

    def _put(self, item) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _work(self, frames):
        try:
            for frame in frames:
                if not self._put(frame):
                    return
            self._put(self._END)
        except BaseException as e:  # handed to the consumer, raised there.
            self._put(e)

    def __iter__(self):
        try:
            while True:
                item = self._queue.get()
                if item is self._END:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            self._stop.set()
            self._thread.join()


class VideoReader:
    """Iterates a video's frames as RGB uint8 [H, W, 3].

    Opening checks the file (VideoError: missing, not a video, no frame rate); iterating raises
    VideoError when no frame decodes or when far fewer frames decode than the header declares
    (a truncated download). `prefetch` frames are decoded ahead in a thread.
    """

    def __init__(self, path: str | os.PathLike, prefetch: int = 4):
        self.path = os.fspath(path)
        self._cap = _open(self.path)
        try:
            self.info = _info(self.path, self._cap)
        except VideoError:
            self._cap.release()
            raise
        self._prefetch = prefetch
        self._used = False

    @property
    def fps(self) -> float:
        return self.info.fps

    def __iter__(self) -> Iterator[np.ndarray]:
        if self._used:
            raise RuntimeError("a VideoReader is read once; open the file again")
        self._used = True
        frames = _decode(self.path, self._cap, self.info)
        try:
            yield from (_Prefetch(frames, self._prefetch) if self._prefetch > 0 else frames)
        finally:
            self.close()

    def close(self) -> None:
        self._cap.release()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def read_frames(path: str | os.PathLike) -> tuple[np.ndarray, float]:
    """All frames [T, H, W, 3] uint8 RGB and the frame rate (for short clips: tests, drawing)."""
    reader = VideoReader(path, prefetch=0)
    frames = list(reader)
    return np.stack(frames), reader.fps
