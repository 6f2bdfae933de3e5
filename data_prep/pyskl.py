r"""Converts a PYSKL 2D-skeleton pickle into a TFDS dataset of COCO-17 keypoints.

The pickle (as written by PYSKL / PoseConv3D) is
`dict(split={name: [frame_dir, ...]}, annotations=[dict(frame_dir, label, img_shape,
original_shape, total_frames, keypoint [M, T, 17, 2], keypoint_score [M, T, 17], ...)])`.
Every split of the pickle becomes a TFDS split of the same name (or those named by --splits).

  python -m data_prep.pyskl --ann=hmdb51_hrnet.pkl --dataset=hmdb51 --out_dir=~/tensorflow_datasets

Labels must be 0-based. Some pickles count from 1 (the bundled sample does): a pickle in which no
clip has label 0 is refused unless --label_offset says how to read it (1 shifts 1-based labels,
0 confirms 0-based ones). There is deliberately no "auto" mode: guessing from the labels present
would silently mislabel a subset of splits that happens to lack class 0.

The pickle is read by skclip_jax.safe_pickle, which admits only what PYSKL files hold (containers,
numbers, strings, NumPy arrays) and refuses a file that names any other global: unpickling can run code.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from absl import flags

from data_prep import cli_common, tfds_writer
from data_prep.tfds_writer import BadClip, Clip, DataPrepError
from skclip_jax import command_line, safe_pickle

CLASS_NAMES_DIR = os.path.join(os.path.dirname(__file__), "class_names")
# Datasets whose class-name list ships with data_prep (from the original's lists/*.csv).
SHIPPED_CLASS_LISTS = ("hmdb51", "ucf101", "ntu60", "ntu120")


def class_names_for(dataset: str, classes_file: str | None = None) -> list[str]:
    """The class list: `classes_file` if given, else the shipped list for `dataset`."""
    if classes_file:
        return tfds_writer.load_class_names(classes_file)
    if dataset in SHIPPED_CLASS_LISTS:
        return tfds_writer.load_class_names(os.path.join(CLASS_NAMES_DIR, f"{dataset}.txt"))
    raise DataPrepError(
        f"no shipped class list for dataset {dataset!r} (shipped: "
        f"{', '.join(SHIPPED_CLASS_LISTS)}); pass --classes=FILE with one name per line"
    )


def load_pyskl_pickle(path: str) -> dict[str, Any]:
    """Loads and structurally checks a PYSKL pickle; every failure names the file.

    Returns:
      The dict, with `split` a dict of frame_dir lists and `annotations` a list of dicts.
    """
    try:
        data = safe_pickle.load(path)
    except safe_pickle.UnsafePickleError as e:
        raise DataPrepError(str(e)) from None
    except Exception as e:  # Truncated or foreign files raise many different types.
        raise DataPrepError(f"{path}: cannot read PYSKL pickle ({type(e).__name__}: {e})") from e
    if not isinstance(data, dict):
        raise DataPrepError(
            f"{path}: expected a dict with 'split' and 'annotations', got {type(data).__name__}"
        )
    missing = [k for k in ("split", "annotations") if k not in data]
    if missing:
        raise DataPrepError(f"{path}: missing top-level keys {missing} (has {sorted(data)})")
    split, annotations = data["split"], data["annotations"]
    if not isinstance(split, dict) or not split:
        raise DataPrepError(f"{path}: 'split' must be a non-empty dict of frame_dir lists")
    for name, members in split.items():
        if not isinstance(members, list | tuple) or not all(isinstance(m, str) for m in members):
            raise DataPrepError(f"{path}: split {name!r} must be a list of frame_dir strings")
    if not isinstance(annotations, list | tuple):
        raise DataPrepError(f"{path}: 'annotations' must be a list of dicts")
    for i, ann in enumerate(annotations):
        if not isinstance(ann, dict):
            raise DataPrepError(f"{path}: annotations[{i}] is a {type(ann).__name__}, not a dict")
    return data


def _check_label_base(
    path: str, anns: Sequence[Mapping[str, Any]], num_classes: int, offset: int | None
) -> int:
    """The label offset to apply; refuses label bases that would shift every clip's class, even under
    --skip_bad.

    A 1-based pickle read as 0-based would only reject the top class and mislabel the rest, so
    per-clip skipping must not hide it. `offset` None (not given) is 0 when some clip has label 0;
    when none has, the caller must say (1: 1-based, 0: 0-based without class 0).
    """
    labels = []
    for ann in anns:
        try:
            labels.append(tfds_writer.as_int(ann.get("label"), "label"))
        except ValueError:
            pass  # Reported per clip by the writer's validation.
    if not labels:
        return offset or 0
    lo, hi = min(labels), max(labels)
    if not offset and lo >= 1 and hi == num_classes:
        raise DataPrepError(
            f"{path}: labels run {lo}..{hi} with {num_classes} classes: they look 1-based; "
            "pass --label_offset=1 to shift them to 0-based"
        )
    if offset is None and lo >= 1:
        raise DataPrepError(
            f"{path}: no clip has label 0 (labels run {lo}..{hi}, {num_classes} classes): pass "
            "--label_offset=1 if they count from 1, or --label_offset=0 if they count from 0"
        )
    if offset and lo - offset < 0:
        raise DataPrepError(
            f"{path}: labels start at {lo}, so --label_offset={offset} would make them negative; "
            "drop --label_offset"
        )
    return offset or 0


def convert_pyskl(
    ann_path: str,
    dataset: str,
    out_dir: str,
    *,
    classes_file: str | None = None,
    splits: Sequence[str] | None = None,
    label_offset: int | None = None,
    file_format: str = "array_record",
    skip_bad: bool = False,
    overwrite: bool = False,
    progress: bool = True,
) -> tuple[str, dict[str, Any]]:
    """Converts a PYSKL pickle; see the module docstring.

    Returns:
      (dataset version directory, conversion summary).

    Raises:
      DataPrepError: unreadable pickle, bad arguments, or a bad clip without skip_bad (the
        message names the pickle and the frame_dir; nothing is written then).
    """
    ann_path = os.fspath(ann_path)
    tfds_writer.check_output(out_dir, dataset, overwrite)
    class_names = class_names_for(dataset, classes_file)
    data = load_pyskl_pickle(ann_path)
    available = list(data["split"])
    selected = list(splits) if splits else available
    unknown = [s for s in selected if s not in data["split"]]
    if unknown:
        raise DataPrepError(
            f"{ann_path}: unknown split(s) {unknown}; available: {', '.join(available)}"
        )

    by_frame_dir: dict[str, dict[str, Any]] = {}
    copies: dict[str, int] = {}
    pre_skipped: list[BadClip] = []
    for i, ann in enumerate(data["annotations"]):
        fd = ann.get("frame_dir")
        if not isinstance(fd, str) or not fd:
            bad = BadClip(ann_path, f"<annotations[{i}]>", "missing or empty key 'frame_dir'")
            if not skip_bad:
                raise tfds_writer.ClipError(bad.source, bad.frame_dir, bad.problem)
            pre_skipped.append(bad)
            continue
        copies[fd] = copies.get(fd, 0) + 1
        by_frame_dir[fd] = ann
    referenced = {fd for s in selected for fd in data["split"][s]}
    # Judged on the whole file: a split subset may lack the classes that reveal the base.
    label_offset = _check_label_base(ann_path, data["annotations"], len(class_names), label_offset)

    def clips(split: str) -> Iterator[Clip | BadClip]:
        for fd in data["split"][split]:
            if copies.get(fd, 0) > 1:
                yield BadClip(ann_path, fd, f"duplicated frame_dir: {copies[fd]} annotations")
            elif fd not in by_frame_dir:
                yield BadClip(
                    ann_path, fd, f"listed in split {split!r} but absent from annotations"
                )
            else:
                ann = by_frame_dir[fd]
                if label_offset:
                    try:
                        label = tfds_writer.as_int(ann.get("label"), "label")
                    except ValueError:
                        pass  # Left as is for validation to report.
                    else:
                        ann = {**ann, "label": label - label_offset}
                yield Clip(ann_path, ann)

    return tfds_writer.write_keypoint_dataset(
        out_dir=out_dir,
        name=dataset,
        class_names=class_names,
        splits={s: clips(s) for s in selected},
        sources=[os.path.abspath(ann_path)],
        file_format=file_format,
        skip_bad=skip_bad,
        overwrite=overwrite,
        split_sizes={s: len(data["split"][s]) for s in selected},
        pre_skipped=pre_skipped,
        description=f"{dataset}: COCO-17 2D keypoints from the PYSKL pickle {ann_path}.",
        extra_summary={
            "created_by": "data_prep.pyskl",
            "label_offset": label_offset,
            "classes_file": classes_file or "",
            "annotations_in_no_selected_split": len(set(by_frame_dir) - referenced),
        },
        progress=progress,
    )


def _define_flags() -> None:
    cli_common.define_output_flags()
    flags.DEFINE_string("ann", None, "PYSKL annotation pickle (.pkl).")
    flags.DEFINE_string(
        "dataset",
        None,
        f"Dataset name (TFDS name). {', '.join(SHIPPED_CLASS_LISTS)} have shipped class lists; "
        "other names need --classes.",
    )
    flags.DEFINE_string(
        "classes", None, "Text file, one class name per line in label order (overrides shipped)."
    )
    flags.DEFINE_list("splits", None, "Splits to convert (default: all in the pickle).")
    flags.DEFINE_integer(
        "label_offset",
        None,
        "Subtracted from every label: 1 for pickles with 1-based labels, 0 to confirm 0-based labels. "
        "Default: 0 when some clip has label 0; a pickle in which none has is refused without it.",
        lower_bound=0,
        upper_bound=1,
    )


PROGRAM = "data_prep.pyskl"


def main(argv: Sequence[str]) -> None:
    command_line.check_no_arguments(argv, PROGRAM)
    f = flags.FLAGS
    cli_common.run_tool(
        lambda: convert_pyskl(
            f.ann,
            f.dataset,
            f.out_dir,
            classes_file=f.classes,
            splits=f.splits,
            label_offset=f.label_offset,
            file_format=f.file_format,
            skip_bad=f.skip_bad,
            overwrite=f.overwrite,
        )[1],
        PROGRAM,
    )


if __name__ == "__main__":
    _define_flags()
    flags.mark_flags_as_required(["ann", "dataset", "out_dir"])
    cli_common.run_app(main, PROGRAM)
