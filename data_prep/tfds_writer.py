"""Validation of PYSKL-style keypoint clips and an atomic TFDS writer for them.

Every converter (PYSKL pickles, Penn Action, synthetic) turns its source into per-split iterables
of `Clip` (a PYSKL-style annotation dict plus the file it came from) or `BadClip` (a clip the
source itself already found unusable) and hands them to `write_keypoint_dataset`, so the feature
spec, the checks and the on-disk layout are identical for all of them.

On disk: `<out_dir>/<name>/<version>/` is a TFDS dataset (ArrayRecord by default, TFRecord on
request) plus `conversion_summary.json`. Features, named as in PYSKL:

  frame_dir       Text                 clip id (unique within a split)
  label           ClassLabel (int64)   0-based; the class names are in the dataset metadata
  img_shape       int32 [2]            (height, width) in pixels
  total_frames    int32 []             == T
  keypoint        float32 [M, T, 17, 2]  COCO-17 (x, y) in pixels; M and T vary per clip
  keypoint_score  float32 [M, T, 17]

`keypoint` and `keypoint_score` have two unknown dimensions, which TFDS only stores as encoded
bytes: they are zlib-compressed (float16 sources widened to float32 compress well).
"""

from __future__ import annotations

import collections
import dataclasses
import json
import os
import re
import shutil
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import tensorflow_datasets as tfds
from absl import logging
from tqdm import tqdm

NUM_JOINTS = 17
DEFAULT_VERSION = "1.0.0"
FILE_FORMATS = ("array_record", "tfrecord")
SUMMARY_FILENAME = "conversion_summary.json"
REQUIRED_KEYS = ("frame_dir", "label", "img_shape", "total_frames", "keypoint", "keypoint_score")
_NAME_RE = re.compile(r"[a-z][a-z0-9_]*")
_SPLIT_RE = re.compile(r"[A-Za-z0-9_]+")


class DataPrepError(Exception):
    """A conversion problem worth a clear one-line message and a non-zero exit (no traceback)."""


class ClipError(DataPrepError):
    """One clip failed validation; the message names the source file, the frame_dir and why."""

    def __init__(self, source: str, frame_dir: str, problem: str):
        self.source = source
        self.frame_dir = frame_dir
        self.problem = problem
        super().__init__(
            f"{source}: clip frame_dir={frame_dir!r}: {problem} "
            "(pass --skip_bad to skip and list such clips instead)"
        )


@dataclasses.dataclass(frozen=True)
class Clip:
    """A PYSKL-style annotation dict and the file it was read from (named in errors)."""

    source: str
    annotation: Mapping[str, Any]


@dataclasses.dataclass(frozen=True)
class BadClip:
    """A clip the source already found unusable (unreadable file, unknown frame_dir, ...)."""

    source: str
    frame_dir: str
    problem: str


def load_class_names(path: str | os.PathLike) -> list[str]:
    """Reads one class name per line, in label order (blank lines ignored, names stripped).

    Raises DataPrepError on an unreadable file, an empty list or a duplicated name, since a
    ClassLabel needs unique names and a silent duplicate would merge two classes' prompts.
    """
    try:
        with open(path, encoding="utf-8") as f:
            names = [line.strip() for line in f if line.strip()]
    except OSError as e:
        raise DataPrepError(f"{path}: cannot read class-name file: {e}") from e
    if not names:
        raise DataPrepError(f"{path}: class-name file lists no names")
    dups = sorted(n for n, c in collections.Counter(names).items() if c > 1)
    if dups:
        raise DataPrepError(f"{path}: duplicated class names {dups}")
    return names


def as_int(value: Any, what: str) -> int:
    """Accepts Python/NumPy integers (and integral floats from MATLAB-style sources), not bools."""
    if isinstance(value, bool | np.bool_):
        raise ValueError(f"{what} is a bool ({value!r}), expected an integer")
    if isinstance(value, np.ndarray) and value.size == 1:
        value = value.reshape(()).item()
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, float | np.floating) and float(value).is_integer():
        return int(value)
    raise ValueError(f"{what} must be an integer, got {value!r}")


def validate_clip(annotation: Mapping[str, Any], num_classes: int) -> dict[str, Any]:
    """Checks one PYSKL-style annotation and returns the example to write.

    Args:
      annotation: dict with frame_dir, label (already 0-based), img_shape (h, w), total_frames,
        keypoint [M, T, 17, 2] and keypoint_score [M, T, 17] (any float dtype).
      num_classes: labels must lie in [0, num_classes).

    Returns:
      The example dict (float32 keypoints, int32 shapes) for the TFDS features.

    Raises:
      ValueError: naming the problem (the caller adds the file and frame_dir).
    """
    missing = [k for k in REQUIRED_KEYS if k not in annotation]
    if missing:
        raise ValueError(f"missing keys {missing} (has {sorted(annotation)})")
    frame_dir = annotation["frame_dir"]
    if not isinstance(frame_dir, str) or not frame_dir:
        raise ValueError(f"frame_dir must be a non-empty string, got {frame_dir!r}")

    label = as_int(annotation["label"], "label")
    if not 0 <= label < num_classes:
        raise ValueError(f"label {label} outside the class list [0, {num_classes})")

    img_shape = np.asarray(annotation["img_shape"])
    if img_shape.shape != (2,) or not all(
        as_int(v, "img_shape entry") > 0 for v in img_shape.tolist()
    ):
        raise ValueError(f"img_shape must be two positive integers (h, w), got {img_shape!r}")

    kp = np.asarray(annotation["keypoint"])
    score = np.asarray(annotation["keypoint_score"])
    for arr, what in ((kp, "keypoint"), (score, "keypoint_score")):
        if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
            raise ValueError(f"{what} has non-numeric dtype {arr.dtype}")
    if kp.ndim != 4 or kp.shape[-1] != 2:
        raise ValueError(f"keypoint must have shape [M, T, {NUM_JOINTS}, 2], got {kp.shape}")
    if kp.shape[2] != NUM_JOINTS:
        raise ValueError(f"keypoint has {kp.shape[2]} joints, expected {NUM_JOINTS} (COCO-17)")
    if score.shape != kp.shape[:3]:
        raise ValueError(
            f"keypoint_score shape {score.shape} does not match keypoint shape {kp.shape[:3]}"
        )
    num_frames = kp.shape[1]
    if num_frames == 0:
        raise ValueError("zero frames")
    total_frames = as_int(annotation["total_frames"], "total_frames")
    if total_frames != num_frames:
        raise ValueError(f"total_frames={total_frames} but keypoint has T={num_frames} frames")

    # Cast first: a float64 value beyond float32's range only becomes inf here.
    kp32 = kp.astype(np.float32)
    score32 = score.astype(np.float32)
    for arr, what in ((kp32, "keypoint"), (score32, "keypoint_score")):
        bad = ~np.isfinite(arr)
        if bad.any():
            first = tuple(int(i) for i in np.argwhere(bad)[0])
            raise ValueError(
                f"{int(bad.sum())} NaN/infinite {what} values (first at index {first})"
            )
    return {
        "frame_dir": frame_dir,
        "label": label,
        "img_shape": img_shape.astype(np.int32),
        "total_frames": np.int32(total_frames),
        "keypoint": kp32,
        "keypoint_score": score32,
    }


def features_spec(class_names: Sequence[str]) -> tfds.features.FeaturesDict:
    """The TFDS features shared by every converter (see the module docstring)."""
    zlib = tfds.features.Encoding.ZLIB
    return tfds.features.FeaturesDict(
        {
            "frame_dir": tfds.features.Text(),
            "label": tfds.features.ClassLabel(names=list(class_names)),
            "img_shape": tfds.features.Tensor(shape=(2,), dtype=np.int32),
            "total_frames": tfds.features.Scalar(dtype=np.int32),
            "keypoint": tfds.features.Tensor(
                shape=(None, None, NUM_JOINTS, 2), dtype=np.float32, encoding=zlib
            ),
            "keypoint_score": tfds.features.Tensor(
                shape=(None, None, NUM_JOINTS), dtype=np.float32, encoding=zlib
            ),
        }
    )


@dataclasses.dataclass
class _SplitStats:
    """What one split's generator saw; becomes the split's entry in the summary."""

    per_class: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    frames: list[int] = dataclasses.field(default_factory=list)
    max_persons: int = 0
    clips_without_persons: int = 0
    seen: set[str] = dataclasses.field(default_factory=set)


class _KeypointBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """One builder class for every keypoint dataset; name and version are set per instance.

    Registration is skipped so that several datasets (and repeated test runs) can share the
    class; readers need no code, only `tfds.builder_from_directory`.
    """

    # No checksums or README next to this code. Also sidesteps TFDS 4.9.10 importing the
    # `importlib_resources` backport (absent on Python >= 3.9 installs) to locate them.
    code_path = None

    def __init__(
        self,
        *,
        name: str,
        version: str,
        class_names: Sequence[str],
        splits: Mapping[str, Iterable[Clip | BadClip]],
        split_sizes: Mapping[str, int],
        skip_bad: bool,
        description: str,
        progress: bool,
        sources: Sequence[str],
        **kwargs: Any,
    ):
        self.name = name
        self.VERSION = tfds.core.Version(version)
        self.RELEASE_NOTES = {version: "Keypoint conversion (data_prep)."}
        self._class_names = list(class_names)
        self._splits = splits
        self._split_sizes = split_sizes
        self._skip_bad = skip_bad
        self._description = description
        self._progress = progress
        self._sources = [os.fspath(x) for x in sources]
        self.stats = {split: _SplitStats() for split in splits}
        self.skipped: list[dict[str, str]] = []
        # TFDS may re-wrap exceptions raised inside generators; keep ours to re-raise verbatim.
        self.fatal: DataPrepError | None = None
        super().__init__(**kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description=self._description,
            features=features_spec(self._class_names),
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # Nothing to download: the sources are local files.
        return {
            split: self._generate_examples(split, items) for split, items in self._splits.items()
        }

    def _reject(self, split: str, source: str, frame_dir: str, problem: str) -> None:
        if not self._skip_bad:
            self.fatal = ClipError(source, frame_dir, problem)
            raise self.fatal
        logging.warning("Skipping %s clip %r from %s: %s", split, frame_dir, source, problem)
        self.skipped.append(
            {"split": split, "frame_dir": frame_dir, "source": source, "problem": problem}
        )

    def _generate_examples(self, split: str, items: Iterable[Clip | BadClip]):
        stats = self.stats[split]
        bar = tqdm(
            items,
            total=self._split_sizes.get(split),
            desc=f"{self.name}/{split}",
            unit="clip",
            disable=not self._progress,
        )
        index = -1
        for index, item in enumerate(bar):
            if isinstance(item, BadClip):
                self._reject(split, item.source, item.frame_dir, item.problem)
                continue
            raw_frame_dir = item.annotation.get("frame_dir")
            frame_dir = str(raw_frame_dir) if raw_frame_dir else f"<annotation #{index}>"
            try:
                example = validate_clip(item.annotation, len(self._class_names))
            except ValueError as e:
                self._reject(split, item.source, frame_dir, str(e))
                continue
            if frame_dir in stats.seen:
                self._reject(
                    split, item.source, frame_dir, f"duplicated frame_dir in split {split}"
                )
                continue
            stats.seen.add(frame_dir)
            stats.per_class[self._class_names[example["label"]]] += 1
            stats.frames.append(int(example["total_frames"]))
            num_persons = example["keypoint"].shape[0]
            stats.max_persons = max(stats.max_persons, num_persons)
            stats.clips_without_persons += num_persons == 0
            yield frame_dir, example
        if not stats.frames:
            # TFDS cannot write an empty split; say why instead of its bare assertion.
            self.fatal = DataPrepError(
                f"{', '.join(self._sources)}: split {split!r} has no valid clips to write"
                + (f" ({index + 1} skipped)" if self.skipped else "")
            )
            raise self.fatal


def _split_summary(stats: _SplitStats, class_names: Sequence[str], skipped: int) -> dict:
    frames = stats.frames
    return {
        "num_clips": len(frames),
        "num_skipped": skipped,
        "per_class": {name: stats.per_class.get(name, 0) for name in class_names},
        "frames": {
            "min": min(frames, default=0),
            "max": max(frames, default=0),
            "mean": round(sum(frames) / len(frames), 2) if frames else 0.0,
        },
        "max_persons": stats.max_persons,
        "clips_without_persons": stats.clips_without_persons,
    }


def dataset_path(out_dir: str | os.PathLike, name: str, version: str = DEFAULT_VERSION) -> str:
    """Where `write_keypoint_dataset` puts a dataset: `<out_dir>/<name>/<version>`."""
    return os.path.join(os.fspath(out_dir), name, version)


def check_output(
    out_dir: str | os.PathLike, name: str, overwrite: bool, version: str = DEFAULT_VERSION
) -> None:
    """Fails fast, before reading any input, on a bad dataset name or an existing target."""
    if not _NAME_RE.fullmatch(name):
        raise DataPrepError(f"dataset name {name!r} must be lower snake case, e.g. 'hmdb51'")
    _check_target(dataset_path(os.path.abspath(os.fspath(out_dir)), name, version), overwrite)


def _check_target(final: str, overwrite: bool) -> None:
    if os.path.lexists(final) and not overwrite:
        what = (
            "a complete dataset"
            if os.path.exists(os.path.join(final, "dataset_info.json"))
            else "a directory"
        )
        raise DataPrepError(f"{final} already holds {what}; pass --overwrite to replace it")


def write_keypoint_dataset(
    *,
    out_dir: str | os.PathLike,
    name: str,
    class_names: Sequence[str],
    splits: Mapping[str, Iterable[Clip | BadClip]],
    sources: Sequence[str],
    version: str = DEFAULT_VERSION,
    file_format: str = "array_record",
    skip_bad: bool = False,
    overwrite: bool = False,
    split_sizes: Mapping[str, int] | None = None,
    pre_skipped: Sequence[BadClip] = (),
    description: str = "",
    extra_summary: Mapping[str, Any] | None = None,
    progress: bool = True,
) -> tuple[str, dict[str, Any]]:
    """Validates and writes clips as a TFDS dataset, atomically.

    Everything is written into a hidden sibling `<out_dir>/.<name>-<version>.incomplete-<id>`
    and renamed to `<out_dir>/<name>/<version>` only after the records, the TFDS metadata and the
    summary exist, so an error or a crash never leaves a dataset that looks complete.

    Args:
      out_dir: root data directory (the TFDS `data_dir`).
      name: dataset name, lower snake case (e.g. "hmdb51").
      class_names: label i is class_names[i]; stored in the ClassLabel.
      splits: split name -> iterable of Clip (validated here) or BadClip (source-level problem).
      sources: input files/directories, recorded in the summary.
      version: TFDS version string.
      file_format: "array_record" (random access, `tfds.data_source`) or "tfrecord".
      skip_bad: skip and list bad clips instead of raising ClipError at the first one.
      overwrite: replace an existing dataset at the target path.
      split_sizes: expected clips per split, only for the progress bars.
      pre_skipped: clips rejected before they could be assigned a split (recorded when
        skip_bad; the caller raises otherwise).
      description: TFDS description.
      extra_summary: extra JSON-able fields for conversion_summary.json (e.g. the CLI args).
      progress: show tqdm progress bars.

    Returns:
      (path of the dataset version directory, summary dict as written to the JSON file).

    Raises:
      ClipError: a bad clip and skip_bad is False (nothing is left behind).
      DataPrepError: bad arguments, or the target exists and overwrite is False.
    """
    check_output(out_dir, name, overwrite, version)
    if file_format not in FILE_FORMATS:
        raise DataPrepError(f"file_format {file_format!r} not in {FILE_FORMATS}")
    if not splits:
        raise DataPrepError("no splits to write")
    for split in splits:
        if not _SPLIT_RE.fullmatch(split):
            raise DataPrepError(f"split name {split!r} must be letters, digits and '_'")
    if len(set(class_names)) != len(class_names):
        raise DataPrepError("class names must be unique")

    out_dir = os.path.abspath(os.fspath(out_dir))
    final = dataset_path(out_dir, name, version)
    os.makedirs(out_dir, exist_ok=True)
    tmp_root = os.path.join(out_dir, f".{name}-{version}.incomplete-{uuid.uuid4().hex[:8]}")
    start = time.time()
    try:
        builder = _KeypointBuilder(
            name=name,
            version=version,
            class_names=class_names,
            splits=splits,
            split_sizes=split_sizes or {},
            skip_bad=skip_bad,
            description=description or f"{name}: COCO-17 2D keypoints converted by data_prep.",
            progress=progress,
            sources=sources,
            data_dir=tmp_root,
            file_format=file_format,
        )
        try:
            builder.download_and_prepare(file_format=file_format)
        except Exception:
            if builder.fatal is not None:
                raise builder.fatal from None
            raise

        skipped = [
            {"split": "", "frame_dir": b.frame_dir, "source": b.source, "problem": b.problem}
            for b in pre_skipped
        ] + builder.skipped
        num_skipped = collections.Counter(s["split"] for s in skipped)
        summary: dict[str, Any] = {
            "name": name,
            "version": version,
            "path": final,
            "file_format": file_format,
            "sources": [os.fspath(s) for s in sources],
            "num_classes": len(class_names),
            "class_names": list(class_names),
            "splits": {
                split: _split_summary(stats, class_names, num_skipped[split])
                for split, stats in builder.stats.items()
            },
            "num_skipped": len(skipped),
            "skipped": skipped,
            "seconds": round(time.time() - start, 2),
        }
        summary.update(extra_summary or {})
        built = dataset_path(tmp_root, name, version)
        with open(os.path.join(built, SUMMARY_FILENAME), "w", encoding="utf-8") as f:
            json.dump(summary, f, indent=2)
            f.write("\n")

        # Re-check: another process may have finished the same dataset meanwhile.
        _check_target(final, overwrite)
        os.makedirs(os.path.dirname(final), exist_ok=True)
        old = None
        if os.path.lexists(final):
            old = os.path.join(os.path.dirname(final), f".{version}.old-{uuid.uuid4().hex[:8]}")
            os.replace(final, old)
        os.replace(built, final)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp_root, ignore_errors=True)
    return final, summary


def format_summary(summary: Mapping[str, Any]) -> str:
    """Human-readable end-of-run report: clips per split and per class, skipped clips."""
    splits = summary["splits"]
    lines = [
        f"Wrote {summary['name']} {summary['version']} ({summary['file_format']}) to "
        f"{summary['path']} in {summary['seconds']:.1f} s",
    ]
    for split, s in splits.items():
        fr = s["frames"]
        lines.append(
            f"  {split}: {s['num_clips']} clips, {s['num_skipped']} skipped, frames "
            f"{fr['min']}..{fr['max']} (mean {fr['mean']}), max persons per clip {s['max_persons']}"
            + (
                f", {s['clips_without_persons']} clips without persons"
                if s["clips_without_persons"]
                else ""
            )
        )
    width = max(len("class"), *(len(n) for n in summary["class_names"]))
    cols = [max(len(split), 6) for split in splits]
    lines.append(
        "  "
        + "class".ljust(width)
        + "".join(f"  {split:>{c}}" for split, c in zip(splits, cols, strict=True))
    )
    for name in summary["class_names"]:
        counts = "".join(
            f"  {s['per_class'][name]:>{c}}" for s, c in zip(splits.values(), cols, strict=True)
        )
        lines.append("  " + name.ljust(width) + counts)
    if summary["skipped"]:
        lines.append(f"  skipped {summary['num_skipped']} clips:")
        for s in summary["skipped"]:
            where = f"[{s['split']}] " if s["split"] else ""
            lines.append(f"    {where}{s['frame_dir']} ({s['source']}): {s['problem']}")
    else:
        lines.append("  skipped 0 clips")
    return "\n".join(lines)
