r"""A folder of videos and a labels file -> a PYSKL dataset pickle for ``data_prep.pyskl``.

The labels file (UTF-8) has one video a line, ``<video file name> <label>``:

  # comments and blank lines are ignored
  [train]
  wave_01.mp4 wave
  "jump 01.mp4" 1
  [test]
  wave_02.mp4 wave

* the file name is relative to the video folder (quote it when it has spaces); its stem (name without
  extension) becomes the clip's ``frame_dir`` and must be unique;
* the label is a 0-based class index or a class name of ``--classes`` (one name per line in label order,
  the file that ``data_prep.pyskl --classes`` takes); the rest of the line is the name, spaces allowed;
* ``[name]`` lines start a split (``train``, ``test``, ``val``, ...); lines before any are ``train``.
"""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Sequence
from typing import Any

from skclip_jax.video import VideoError

DEFAULT_SPLIT = "train"


def _norm(name: str) -> str:
    return re.sub(r"[\s_]+", " ", name.strip().lower())


def parse_labels(
    labels_file: str, video_dir: str, class_names: Sequence[str] | None = None
) -> list[tuple[str, str, int, str]]:
    """(video path, frame_dir, label, split) per line of the labels file.

    Raises:
      VideoError naming the file and line: bad syntax, unknown class, index out of range, a missing
      video, a repeated video or frame_dir.
    """
    try:
        with open(labels_file, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise VideoError(f"{labels_file}: cannot read labels file ({e})") from e
    names = {n: i for i, n in enumerate(class_names or ())}
    normalized = {_norm(n): i for i, n in enumerate(class_names or ())}
    split, entries, seen = DEFAULT_SPLIT, [], {}
    for number, line in enumerate(lines, 1):
        where = f"{labels_file} line {number}"
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        header = re.fullmatch(r"\[\s*([A-Za-z0-9_.-]+)\s*\]", text)
        if header:
            split = header.group(1)
            continue
        try:
            tokens = shlex.split(text)
        except ValueError as e:
            raise VideoError(f"{where}: {e} in {text!r}") from e
        if len(tokens) < 2:
            raise VideoError(f"{where}: expected '<video file name> <label>', got {text!r}")
        video, label_text = tokens[0], " ".join(tokens[1:])
        if re.fullmatch(r"\d+", label_text):
            label = int(label_text)
            if class_names is not None and label >= len(class_names):
                raise VideoError(
                    f"{where}: label {label} is out of range for {len(class_names)} classes"
                )
        elif class_names is None:
            raise VideoError(
                f"{where}: class name {label_text!r} needs --classes=FILE (one name per line, "
                "in label order)"
            )
        elif label_text in names or _norm(label_text) in normalized:
            label = names.get(label_text, normalized.get(_norm(label_text)))
        else:
            raise VideoError(f"{where}: unknown class {label_text!r} (not in --classes)")
        path = os.path.join(video_dir, video)
        if not os.path.isfile(path):
            raise VideoError(f"{where}: {path}: no such file")
        frame_dir = os.path.splitext(os.path.basename(video))[0]
        if frame_dir in seen:
            raise VideoError(
                f"{where}: {video} gives frame_dir {frame_dir!r}, as line {seen[frame_dir]} does"
            )
        seen[frame_dir] = number
        entries.append((path, frame_dir, label, split))
    if not entries:
        raise VideoError(f"{labels_file}: lists no video")
    return entries


def build_dataset(
    video_dir: str,
    labels_file: str,
    class_names: Sequence[str] | None = None,
    *,
    skip_bad: bool = False,
    progress: bool = True,
    num_threads: int = 2,
) -> tuple[dict[str, Any], list[str]]:
    """Extracts every listed video; returns (PYSKL dict {split, annotations}, skipped problems).

    Without skip_bad the first bad video (unreadable, truncated, no person) stops everything.
    """
    from tqdm.auto import tqdm

    from skclip_jax.video import blazepose, extract

    if not os.path.isdir(video_dir):
        raise VideoError(f"{video_dir}: no such folder")
    entries = parse_labels(labels_file, video_dir, class_names)
    pose = blazepose.BlazePose(num_threads=num_threads)
    split: dict[str, list[str]] = {}
    annotations, skipped = [], []
    for path, frame_dir, label, name in tqdm(
        entries, desc="videos", unit="video", disable=not progress, dynamic_ncols=True
    ):
        try:
            keypoints = extract.extract(path, pose=pose, progress=progress)
        except VideoError as e:
            if not skip_bad:
                raise
            skipped.append(str(e))
            continue
        split.setdefault(name, []).append(frame_dir)
        annotations.append(keypoints.annotation(frame_dir, label))
    if not annotations:
        raise VideoError(f"{labels_file}: no video could be used ({len(skipped)} skipped)")
    return {"split": split, "annotations": annotations}, skipped
