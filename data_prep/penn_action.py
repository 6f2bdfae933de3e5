r"""Converts Penn Action's per-clip .mat labels into a TFDS dataset of COCO-17 keypoints.

  python -m data_prep.penn_action --labels_dir=Penn_Action/labels --out_dir=~/tensorflow_datasets

Penn Action stores 13 joints per frame in the order (verified from the data; the dataset's own
README lists left before right): 0 head, 1 r-shoulder, 2 l-shoulder, 3 r-elbow, 4 l-elbow,
5 r-wrist, 6 l-wrist, 7 r-hip, 8 l-hip, 9 r-knee, 10 l-knee, 11 r-ankle, 12 l-ankle.
They are mapped onto COCO-17 so that the same model and heatmap code serve every dataset:

* head -> nose; eyes and ears do not exist in Penn Action: coordinates (0, 0), score 0.
* score = visibility (0/1). Invisible joints keep their annotated coordinates with score 0.
* About a third of the invisible joints are placeholders near the origin (x <= 1 and y <= 1,
  e.g. (0.75, 0.75) or (1, 1) from MATLAB's 1-based pixels; no visible joint is stored there):
  they become exactly (0, 0), PYSKL's marker for a missing joint, with score 0.

One person per clip (M = 1); img_shape = (H, W) from `dimensions`; frame_dir = file stem
("0001"); official split: `train == 1` -> split "train", else "test".

Class names are stored with spaces ("jumping jacks", data_prep/class_names/penn_action.txt) so
that the ClassLabel names are the natural-language text prompts, as for the other datasets;
Penn's `action` field ("jumping_jacks") is mapped by replacing '_' with ' '. Label order is the
sorted order of Penn's action names.
"""

from __future__ import annotations

import glob
import os
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
from absl import flags, logging
from tqdm import tqdm

from data_prep import cli_common, tfds_writer
from data_prep.tfds_writer import BadClip, Clip, DataPrepError
from skclip_jax import command_line

NAME = "penn_action"
NUM_PENN_JOINTS = 13
CLASS_NAMES_FILE = os.path.join(os.path.dirname(__file__), "class_names", "penn_action.txt")
# COCO-17 index -> Penn Action index; -1: no Penn counterpart (eyes, ears).
COCO_FROM_PENN = np.array([0, -1, -1, -1, -1, 2, 1, 4, 3, 6, 5, 8, 7, 10, 9, 12, 11])
# Placeholder positions of unannotated joints lie within the top-left pixel.
PLACEHOLDER_MAX = 1.0
REQUIRED_FIELDS = ("x", "y", "visibility", "dimensions", "action", "train")


def penn_to_coco(
    x: np.ndarray, y: np.ndarray, visibility: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Maps Penn Action joints to COCO-17.

    Args:
      x, y: [T, 13] pixel coordinates; visibility: [T, 13] 0/1.

    Returns:
      keypoint [1, T, 17, 2] and keypoint_score [1, T, 17], float32.
    """
    num_frames = x.shape[0]
    xy = np.stack([x, y], axis=-1).astype(np.float32)  # [T, 13, 2]
    score = (np.asarray(visibility) > 0).astype(np.float32)  # [T, 13]
    placeholder = (xy[..., 0] <= PLACEHOLDER_MAX) & (xy[..., 1] <= PLACEHOLDER_MAX)
    xy[placeholder] = 0.0
    score[placeholder] = 0.0
    keypoint = np.zeros((1, num_frames, 17, 2), np.float32)
    keypoint_score = np.zeros((1, num_frames, 17), np.float32)
    has_penn = COCO_FROM_PENN >= 0
    keypoint[0][:, has_penn] = xy[:, COCO_FROM_PENN[has_penn]]
    keypoint_score[0][:, has_penn] = score[:, COCO_FROM_PENN[has_penn]]
    return keypoint, keypoint_score


def read_clip(path: str, class_names: Sequence[str]) -> tuple[str, dict[str, Any]]:
    """Reads one .mat file into (split, PYSKL-style annotation).

    Raises:
      ValueError: naming the problem (unreadable file, missing field, unknown action, ...).
    """
    import scipy.io

    try:
        mat = scipy.io.loadmat(path)
    except Exception as e:  # scipy raises several types for corrupt or foreign files.
        raise ValueError(f"unreadable .mat file ({type(e).__name__}: {e})") from e
    missing = [k for k in REQUIRED_FIELDS if k not in mat]
    if missing:
        raise ValueError(f"missing fields {missing}")
    try:
        return _parse_fields(path, mat, class_names)
    except (IndexError, TypeError, KeyError) as e:  # Empty or oddly typed MATLAB fields.
        raise ValueError(f"malformed fields ({type(e).__name__}: {e})") from e


def _parse_fields(
    path: str, mat: dict[str, Any], class_names: Sequence[str]
) -> tuple[str, dict[str, Any]]:
    """The field checks and the COCO mapping of read_clip, on a loaded .mat dict."""
    x, y, vis = (np.asarray(mat[k]) for k in ("x", "y", "visibility"))
    if x.ndim != 2 or x.shape[1] != NUM_PENN_JOINTS or y.shape != x.shape or vis.shape != x.shape:
        raise ValueError(
            f"x, y, visibility must all be [T, {NUM_PENN_JOINTS}], got "
            f"{x.shape}, {y.shape}, {vis.shape}"
        )
    dims = np.asarray(mat["dimensions"]).ravel()
    if dims.size != 3:
        raise ValueError(f"dimensions must be (H, W, T), got {dims!r}")
    action = str(np.asarray(mat["action"]).ravel()[0]).strip()
    name = action.replace("_", " ")
    if name not in class_names:
        raise ValueError(f"unknown action {action!r}")
    split = "train" if int(np.asarray(mat["train"]).ravel()[0]) == 1 else "test"
    keypoint, keypoint_score = penn_to_coco(x, y, vis)
    return split, {
        "frame_dir": os.path.splitext(os.path.basename(path))[0],
        "label": class_names.index(name),
        "img_shape": (int(dims[0]), int(dims[1])),
        # `dimensions` carries its own T; the writer checks it against the arrays.
        "total_frames": int(dims[2]),
        "keypoint": keypoint,
        "keypoint_score": keypoint_score,
    }


def convert_penn_action(
    labels_dir: str,
    out_dir: str,
    *,
    file_format: str = "array_record",
    skip_bad: bool = False,
    overwrite: bool = False,
    progress: bool = True,
) -> tuple[str, dict[str, Any]]:
    """Converts every NNNN.mat in labels_dir; see the module docstring.

    Returns:
      (dataset version directory, conversion summary).

    Raises:
      DataPrepError: no .mat files, or a bad clip without skip_bad (naming the file).
    """
    labels_dir = os.fspath(labels_dir)
    tfds_writer.check_output(out_dir, NAME, overwrite)
    paths = sorted(glob.glob(os.path.join(labels_dir, "*.mat")))
    if not paths:
        raise DataPrepError(f"{labels_dir}: no .mat files found")
    class_names = tfds_writer.load_class_names(CLASS_NAMES_FILE)
    splits: dict[str, list[Clip | BadClip]] = {"train": [], "test": []}
    unassigned: list[BadClip] = []
    start = time.time()
    for path in tqdm(paths, desc="reading .mat", unit="file", disable=not progress):
        frame_dir = os.path.splitext(os.path.basename(path))[0]
        try:
            split, ann = read_clip(path, class_names)
        except ValueError as e:
            if not skip_bad:
                raise tfds_writer.ClipError(path, frame_dir, str(e)) from None
            unassigned.append(BadClip(path, frame_dir, str(e)))
            continue
        splits[split].append(Clip(path, ann))
    read_seconds = time.time() - start
    logging.info("Read %d .mat files in %.1f s", len(paths), read_seconds)
    return tfds_writer.write_keypoint_dataset(
        out_dir=out_dir,
        name=NAME,
        class_names=class_names,
        splits=splits,
        sources=[os.path.abspath(labels_dir)],
        file_format=file_format,
        skip_bad=skip_bad,
        overwrite=overwrite,
        split_sizes={s: len(v) for s, v in splits.items()},
        pre_skipped=unassigned,
        description=(
            "Penn Action: human-annotated 2D joints mapped to COCO-17 (head -> nose, no eyes or "
            "ears), score = visibility, official train/test split."
        ),
        extra_summary={
            "created_by": "data_prep.penn_action",
            "coco_from_penn": COCO_FROM_PENN.tolist(),
            "read_seconds": round(read_seconds, 2),
        },
        progress=progress,
    )


PROGRAM = "data_prep.penn_action"


def main(argv: Sequence[str]) -> None:
    command_line.check_no_arguments(argv, PROGRAM)
    f = flags.FLAGS
    cli_common.run_tool(
        lambda: convert_penn_action(
            f.labels_dir,
            f.out_dir,
            file_format=f.file_format,
            skip_bad=f.skip_bad,
            overwrite=f.overwrite,
        )[1],
        PROGRAM,
    )


if __name__ == "__main__":
    cli_common.define_output_flags()
    flags.DEFINE_string("labels_dir", None, "Penn Action labels directory with the NNNN.mat files.")
    flags.mark_flags_as_required(["labels_dir", "out_dir"])
    cli_common.run_app(main, PROGRAM)
