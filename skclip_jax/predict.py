r"""Classify new clips with a trained run, against its classes or any action names (open vocabulary).

  python -m skclip_jax.predict --workdir=RUN [--step=N] --input=PATH [--input=PATH ...] \
      [--classes_file=FILE | --classes="name one;name two"] [--top_k=5] [--output=DIR] [--frame_dir=NAME ...]

The run's saved config (WORKDIR/config.json) and class list (WORKDIR/class_names.txt) are used unless
--config / --classes(_file) are given. Inputs:
  * a PYSKL pickle: one annotation dict, a list of them, or a whole PYSKL dataset {split, annotations}
    (then --frame_dir picks clips; default: every clip of its test split);
  * .npz or .json with `keypoint` [T, V, 2] or [M, T, V, 2], optional `keypoint_score` (default 1) and
    `img_shape` (default: the keypoints' bounding box);
  * a video file (.mp4, .avi, .mov, .mkv, .webm, ...): its keypoints are extracted first (BlazePose, one
    person, as `python -m data_prep.video`), then it is scored in sliding windows of --window_seconds
    (default: the config's clip_len frames) every --stride_seconds (default: half a window), plus one
    window flush with the end. A video shorter than one window is an error.
Every input is read and checked before anything is computed or written; a bad one stops the command with
its file and problem. The test-time protocol is the run's evaluation (its views, flips and view
averaging); class features are computed once, and the jitted scorer compiles once for all clips (each
clip is sampled to the config's fixed views x persons x frames).

Outputs: a table per clip on stdout; OUTPUT/predictions.jsonl (one line per clip: input, frame_dir, top-k
classes and probabilities, the WFI frame weights of the top class); OUTPUT/<clip>_frames.png (the WFI
frame weights of the top-3 classes over the video, and the skeleton at the top class's most weighted
frames). OUTPUT defaults to WORKDIR/predict. Files are written atomically.

For a video: one predictions.jsonl line per window (with `window`, `start` and `end` in seconds and
`start_frame`/`end_frame`, end exclusive; `top_k` empty for a window without a person), a line per window
on stdout (the usual table when there is one window), OUTPUT/<clip>_frames.png for the window whose top
class is most confident, drawn over the video's frames, OUTPUT/<clip>_timeline.png (the leading classes'
probabilities over time and each window's top-1; with two windows or more) and, with --annotated_video,
OUTPUT/<clip>_annotated.mp4 (the skeleton and the nearest window's top class on every frame).
"""

import dataclasses
import functools
import json
import os
import re
import sys
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
from absl import app, flags, logging
from ml_collections import config_flags

from skclip_jax import api, command_line, host_memory, safe_pickle
from skclip_jax.api import PredictError, validate_clip
from skclip_jax.video.reader import VIDEO_EXTENSIONS

FLAGS = flags.FLAGS
PROGRAM = "skclip_jax.predict"


def define_flags() -> None:
    """The command line's flags, defined only when this module is the program: tests and forks import ``run`` and
    friends beside other tools that also take ``--config`` (``knn_baseline``, ``main``)."""
    config_flags.DEFINE_config_file(
        "config", None, "Config file; default: the one the run saved in WORKDIR/config.json."
    )
    flags.DEFINE_string("workdir", None, "The trained run's directory.")
    flags.DEFINE_integer("step", None, "Checkpoint step (default: latest).")
    flags.DEFINE_multi_string(
        "input",
        None,
        "Clip file(s): .pkl/.pickle (PYSKL), .npz, .json, or a video (.mp4, .avi, ...).",
    )
    flags.DEFINE_multi_string(
        "frame_dir",
        None,
        "With a PYSKL dataset pickle: the clips to classify (default: its test split).",
    )
    flags.DEFINE_string("classes", None, 'Class names separated by ";" ("wave;run").')
    flags.DEFINE_string("classes_file", None, "Class names, one per line.")
    flags.DEFINE_integer("top_k", 5, "Classes listed per clip.")
    flags.DEFINE_string("output", None, "Output directory (default: WORKDIR/predict).")
    flags.DEFINE_float(
        "window_seconds",
        None,
        "Video inputs: window length (default: the config's clip_len frames).",
    )
    flags.DEFINE_float(
        "stride_seconds", None, "Video inputs: window step (default: half a window)."
    )
    flags.DEFINE_bool(
        "annotated_video",
        False,
        "Video inputs: also write <clip>_annotated.mp4 (skeleton + label).",
    )
    flags.DEFINE_bool(
        "calibrate",
        True,
        "Zero-shot runs: when --classes mixes the names the run trained on with new ones, rank each clip among "
        "the trained names or among the new ones by the run's GZSL gate (docs/zero_shot.md); --nocalibrate ranks "
        "every name by the plain probabilities.",
    )
    flags.mark_flags_as_required(["workdir", "input"])


PLOT_CLASSES = 3
SKELETON_PANELS = 3


@dataclasses.dataclass
class Clip:
    """One clip to classify: where it came from and its PYSKL-style annotation."""

    input: str
    frame_dir: str | None
    sample: dict[str, Any]
    label: int | None = None
    # Frame rate of a video input (its keypoints extracted here); None for keypoint files.
    fps: float | None = None


# ---------------------------------------------------------------------------------------------------------
# Inputs.


def _pyskl_clips(data, path: str, frame_dirs: Sequence[str] | None, test_split: str):
    """Annotations of a pickle: a dict, a list of dicts, or a PYSKL dataset {split, annotations}."""
    if isinstance(data, dict) and "annotations" in data:
        anns = data["annotations"]
        if not isinstance(anns, list | tuple):
            raise PredictError(f"{path}: 'annotations' must be a list of annotation dicts")
        by_dir = {a.get("frame_dir"): a for a in anns if isinstance(a, dict)}
        if frame_dirs:
            missing = [d for d in frame_dirs if d not in by_dir]
            if missing:
                raise PredictError(f"{path}: no annotation with frame_dir {missing}")
            return [by_dir[d] for d in frame_dirs]
        splits = data.get("split") or {}
        names = [test_split] if test_split in splits else []
        names = names or [s for s in splits if re.search(r"(test|val)$", s)]
        if len(names) != 1:
            raise PredictError(
                f"{path}: cannot tell its test split (splits {sorted(splits)}, config test_split "
                f"{test_split!r}); pick clips with --frame_dir"
            )
        chosen = [by_dir[d] for d in splits[names[0]] if d in by_dir]
        if not chosen:
            raise PredictError(f"{path}: split {names[0]!r} has no annotated clip")
        return chosen
    if frame_dirs:
        raise PredictError(f"{path}: --frame_dir needs a PYSKL dataset pickle (with 'annotations')")
    if isinstance(data, dict):
        return [data]
    if isinstance(data, list | tuple) and data:
        return list(data)
    raise PredictError(
        f"{path}: expected an annotation dict, a non-empty list of them or a PYSKL dataset pickle, "
        f"got {type(data).__name__}"
    )


def load_clips(
    paths: Sequence[str],
    num_keypoints: int,
    frame_dirs: Sequence[str] | None = None,
    test_split: str = "test",
) -> list[Clip]:
    """Reads and checks every input file (see the module docstring); raises PredictError on the first bad one."""
    clips = []
    for path in paths:
        if not os.path.isfile(path):
            raise PredictError(f"{path}: no such file")
        ext = os.path.splitext(path)[1].lower()
        try:
            if ext in (".pkl", ".pickle"):
                data = safe_pickle.load(path)  # a pickle may run code: PYSKL's types only
                anns = _pyskl_clips(data, path, frame_dirs, test_split)
            elif ext == ".npz":
                anns = [read_npz(path)]
            elif ext == ".json":
                with open(path, encoding="utf-8") as f:
                    anns = [json.load(f)]
            elif ext in VIDEO_EXTENSIONS:
                anns = [video_annotation(path)]
            else:
                raise PredictError(
                    f"{path}: unknown input format {ext or '(no extension)'!r}; use a PYSKL .pkl, "
                    f".npz, .json or a video ({', '.join(VIDEO_EXTENSIONS)})"
                )
        except PredictError:
            raise
        except safe_pickle.UnsafePickleError as e:
            raise PredictError(str(e)) from None
        except Exception as e:  # Truncated or foreign files raise many different types.
            raise PredictError(f"{path}: cannot read ({type(e).__name__}: {e})") from e
        for i, ann in enumerate(anns):
            frame_dir = ann.get("frame_dir") if isinstance(ann, dict) else None
            where = path if len(anns) == 1 else f"{path} [{frame_dir or f'clip {i}'}]"
            sample = validate_clip(ann, where, num_keypoints)
            label = ann.get("label")
            label = int(label) if isinstance(label, int | np.integer) else None
            fps = float(ann["fps"]) if ext in VIDEO_EXTENSIONS else None
            clips.append(
                Clip(path, None if frame_dir is None else str(frame_dir), sample, label, fps=fps)
            )
    return clips


def read_npz(path: str) -> dict[str, np.ndarray]:
    """The arrays of a .npz; a file that is not one (a .npz is a zip of .npy files, np.savez) says so, where
    NumPy would try to unpickle it and talk about allow_pickle."""
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic not in (b"PK\x03\x04", b"PK\x05\x06"):
        raise PredictError(
            f"{path}: not a .npz archive (a .npz is a zip of .npy arrays, as np.savez writes; this file "
            f"starts with {magic!r})"
        )
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def warn_empty_clips(clips: Sequence[Clip], err=None) -> None:
    """One warning line per clip whose keypoint scores are all 0 (api.empty_clip_warning): it is still ranked."""
    err = err or sys.stderr
    for clip in clips:
        where = clip.input + (f" [{clip.frame_dir}]" if clip.frame_dir else "")
        if warning := api.empty_clip_warning(clip.sample, where):
            print(f"{PROGRAM}: warning: {warning}", file=err, flush=True)


@functools.cache
def _pose_model():
    from skclip_jax.video import blazepose

    return blazepose.BlazePose()


def video_annotation(path: str) -> dict[str, Any]:
    """A video input's keypoints (one person, as data_prep.video extracts them), with its `fps`; the
    pose models load once for all inputs."""
    from skclip_jax.video import VideoError, extract

    try:
        result = extract.extract(path, pose=_pose_model())
    except VideoError as e:
        raise PredictError(str(e)) from e
    ann = result.annotation()
    del ann["frame_dir"]  # outputs are named after the file
    return ann


def video_windows(clips: Sequence[Clip], config, window_seconds=None, stride_seconds=None):
    """Each clip's sliding windows (None for keypoint files); PredictError for a video shorter than one
    window, before anything is computed or written."""
    from skclip_jax.video import timeline

    plans = []
    for clip in clips:
        if clip.fps is None:
            plans.append(None)
            continue
        try:
            window, stride = timeline.window_frames(
                clip.fps, config.data.clip_len, window_seconds, stride_seconds
            )
        except ValueError as e:
            raise PredictError(str(e)) from e
        total = clip.sample["total_frames"]
        windows = timeline.sliding_windows(total, window, stride, clip.fps)
        if not windows:
            raise PredictError(
                f"{clip.input}: {total} frames ({total / clip.fps:.2f} s) is shorter than one window "
                f"of {window} frames ({window / clip.fps:.2f} s); pass a smaller --window_seconds"
            )
        plans.append(windows)
    return plans


def parse_classes(classes: str | None, classes_file: str | None) -> tuple[str, ...] | None:
    """--classes "a;b" or --classes_file (one per line); None when neither is given."""
    if classes is not None and classes_file is not None:
        raise PredictError("give --classes or --classes_file, not both")
    if classes_file is not None:
        if not os.path.isfile(classes_file):
            raise PredictError(f"{classes_file}: no such file")
        with open(classes_file, encoding="utf-8") as f:
            names = [line.strip() for line in f]
        source = classes_file
    elif classes is not None:
        names = [n.strip() for n in classes.split(";")]
        source = "--classes"
    else:
        return None
    names = [n for n in names if n]
    if len(names) < 2:
        raise PredictError(f"{source}: needs at least 2 class names, got {names}")
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise PredictError(f"{source}: repeated class names {duplicates}")
    return tuple(names)


# ---------------------------------------------------------------------------------------------------------
# Model and scoring.


# ---------------------------------------------------------------------------------------------------------
# Outputs.


def frame_positions(clip: Clip, config, num_steps: int) -> np.ndarray:
    """float [T'] the mean original frame index of each of the scorer's T' time steps (over the views)."""
    from skclip_jax import pose_transforms

    d = config.data
    inds = pose_transforms.uniform_sample_frames(
        clip.sample["total_frames"], d.clip_len, num_clips=d.num_test_clips, test_mode=True
    ).reshape(d.num_test_clips, d.clip_len)
    per_step = d.clip_len // num_steps
    return (
        inds[:, : per_step * num_steps].reshape(d.num_test_clips, num_steps, per_step).mean((0, 2))
    )


def clip_name(clip: Clip) -> str:
    name = clip.frame_dir or os.path.splitext(os.path.basename(clip.input))[0]
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "clip"


def _savefig_atomic(fig, path: str) -> None:
    tmp = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.{os.getpid()}.tmp.png")
    try:
        fig.savefig(tmp, dpi=110)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def panel_frames(probs, weights, positions, num_frames: int) -> list[tuple[int, int]]:
    """(time step, frame index) of the skeleton panels: the top class's most weighted steps, in order."""
    top = int(np.argsort(-probs, kind="stable")[0])
    best = np.argsort(-weights[top], kind="stable")[:SKELETON_PANELS]
    return [
        (int(step), min(max(int(round(positions[step])), 0), num_frames - 1))
        for step in sorted(best)
    ]


def plot_frames(
    clip: Clip,
    class_names: Sequence[str],
    probs: np.ndarray,
    weights: np.ndarray,
    positions: np.ndarray,
    path: str,
    images: dict[int, np.ndarray] | None = None,
    frame_offset: int = 0,
) -> None:
    """WFI frame weights of the top-3 classes over the video, and the skeleton at the top class's most
    weighted frames (the paper's picture of what WFI attends to), over the video's own frames where
    `images` ({frame index: RGB image}) has them. `frame_offset`: the clip's first frame in the video
    (a window's), added to the frame numbers shown and to the keys of `images`."""
    from matplotlib.figure import Figure

    from skclip_jax import heatmaps

    top = np.argsort(-probs, kind="stable")[:PLOT_CLASSES]
    fig = Figure(figsize=(9, 6.2), layout="constrained")
    grid = fig.add_gridspec(2, SKELETON_PANELS, height_ratios=(1.1, 1))
    ax = fig.add_subplot(grid[0, :])
    for rank, c in enumerate(top):
        ax.plot(
            positions + frame_offset,
            weights[c],
            marker="o",
            linewidth=2.2 if rank == 0 else 1.3,
            label=f"{class_names[c]} (p={probs[c]:.2f})",
        )
    frame_weight_axis(ax, weights[top])
    ax.set_xlabel("frame")
    ax.set_ylabel("WFI frame weight")
    ax.set_title(f"{clip_name(clip)}: frame weights of the top-{len(top)} classes")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)

    kp, score = clip.sample["keypoint"], clip.sample["keypoint_score"]
    panels = panel_frames(probs, weights, positions, kp.shape[1])
    for step, _ in panels:
        ax.axvline(positions[step] + frame_offset, color="0.6", linestyle=":", linewidth=1)
    visible = score > 0
    xs, ys = kp[..., 0][visible], kp[..., 1][visible]
    for panel, (step, frame) in enumerate(panels):
        sub = fig.add_subplot(grid[1, panel])
        image = (images or {}).get(frame + frame_offset)
        if image is not None:
            sub.imshow(image)
        for person in range(kp.shape[0]):
            pts, ok = kp[person, frame], score[person, frame] > 0
            for a, b in heatmaps.COCO_LIMBS:
                if ok[a] and ok[b]:
                    sub.plot(pts[[a, b], 0], pts[[a, b], 1], color="tab:blue", linewidth=2)
            sub.scatter(pts[ok, 0], pts[ok, 1], s=10, color="tab:red", zorder=3)
        if xs.size:
            # Over a video frame, some of the scene around the person too, within the frame.
            pad = (0.25 if images else 0.05) * max(xs.max() - xs.min(), ys.max() - ys.min(), 1.0)
            x0, x1, y0, y1 = xs.min() - pad, xs.max() + pad, ys.min() - pad, ys.max() + pad
            if image is not None:
                h, w = image.shape[:2]
                x0, x1, y0, y1 = max(x0, -0.5), min(x1, w - 0.5), max(y0, -0.5), min(y1, h - 0.5)
            sub.set_xlim(x0, x1)
            sub.set_ylim(y1, y0)  # image y points down.
        sub.set_aspect("equal")
        sub.set_xticks([])
        sub.set_yticks([])
        sub.set_title(
            f"frame {frame + frame_offset} (weight {weights[top[0], step]:.2f})", fontsize=9
        )
    _savefig_atomic(fig, path)


def frame_weight_axis(ax, weights: np.ndarray) -> None:
    """The weight axis from 0, with the uniform weight 1/T' marked where weights sum to 1 (softmax WFI):
    weights of 0.12-0.13 over 8 steps are nearly uniform and must look it, not fill the plot's height."""
    weights = np.asarray(weights, dtype=float)
    if np.allclose(weights.sum(-1), 1.0, atol=1e-3):
        uniform = 1.0 / weights.shape[-1]
        ax.axhline(
            uniform,
            color="0.5",
            linestyle="--",
            linewidth=1,
            label=f"uniform (1/{weights.shape[-1]})",
        )
        top = max(1.2 * float(weights.max()), 2 * uniform)
    else:  # sigmoid weights lie in (0, 1)
        top = max(1.05, 1.2 * float(weights.max()))
    ax.set_ylim(0, top)


def format_table(clip: Clip, class_names, probs: np.ndarray, top_k: int, gate=None) -> str:
    top = np.argsort(-probs, kind="stable")[:top_k]
    title = clip.input + (f" [{clip.frame_dir}]" if clip.frame_dir else "")
    width = max(len("class"), *(len(class_names[c]) for c in top))
    lines = [title, f"  rank  {'class':<{width}}  probability"]
    lines += [f"  {r + 1:>4}  {class_names[c]:<{width}}  {probs[c]:.4f}" for r, c in enumerate(top)]
    if gate is not None:
        lines.append(f"  ({gate_summary(gate)})")
    return "\n".join(lines)


def gate_summary(gate) -> str:
    """The GZSL gate's decision for one clip, in words."""
    relation, side = (">=", "trained") if gate.trained else ("<", "new")
    return (
        f"similarity to the nearest trained name {gate.similarity:.3f} {relation} {gate.threshold:.3f}: "
        f"ranked among the {side} names"
    )


def prediction_record(
    clip, class_names, probs, weights, positions, top_k, gate=None
) -> dict[str, Any]:
    top = np.argsort(-probs, kind="stable")[:top_k]
    record = {"input": clip.input}
    if clip.frame_dir is not None:
        record["frame_dir"] = clip.frame_dir
    record["top_k"] = [{"class": class_names[c], "prob": float(probs[c])} for c in top]
    record["frame_weights"] = [float(w) for w in weights[top[0]]]
    record["frame_positions"] = [float(p) for p in positions]
    if gate is not None:
        record["gzsl_gate"] = gate.record()
    return record


def unique_names(clips: Sequence[Clip]) -> list[str]:
    names, used = [], {}
    for clip in clips:
        base = clip_name(clip)
        used[base] = used.get(base, 0) + 1
        names.append(base if used[base] == 1 else f"{base}_{used[base]}")
    return names


def predict_video(
    predictor,
    clip: Clip,
    name: str,
    windows,
    config,
    class_names: Sequence[str],
    top_k: int,
    output: str,
    annotated_video: bool,
    out,
    seconds: list[float],
) -> list[dict[str, Any]]:
    """Scores a video input window by window and writes its frames PNG, timeline and annotated video;
    returns its predictions.jsonl records, one per window."""
    from skclip_jax.video import timeline

    fps, kp, score = clip.fps, clip.sample["keypoint"], clip.sample["keypoint_score"]
    person = score.max(axis=(0, 2)) > 0  # [T] frames where the tracker found someone
    size = windows[0].end - windows[0].start
    print(
        f"{clip.input}: {clip.sample['total_frames']} frames at {fps:g} fps, {len(windows)} "
        f"window(s) of {size} frames ({size / fps:.2f} s)",
        file=out,
        flush=True,
    )
    records, scored, best = [], [], None
    for w in windows:
        record = {
            "input": clip.input,
            "window": w.index,
            "start": w.start_s,
            "end": w.end_s,
            "start_frame": w.start,
            "end_frame": w.end,
        }
        records.append(record)
        if not person[w.start : w.end].any():
            record["top_k"] = []
            print(f"  {w.start_s:8.2f}-{w.end_s:8.2f} s  (no person)", file=out, flush=True)
            scored.append(None)
            continue
        sub_sample = timeline.window_sample(clip.sample, w)
        sub = Clip(clip.input, f"{name}@{w.start_s:.2f}-{w.end_s:.2f}s", sub_sample, fps=fps)
        start = time.perf_counter()
        probs, weights, gate = predictor.scores(sub.sample)
        seconds.append(time.perf_counter() - start)
        positions = frame_positions(sub, config, weights.shape[-1])
        full = prediction_record(sub, class_names, probs, weights, positions + w.start, top_k, gate)
        record.update({k: v for k, v in full.items() if k not in ("input", "frame_dir")})
        scored.append((probs, weights, positions, sub))
        if len(windows) == 1:
            print(format_table(sub, class_names, probs, top_k, gate) + "\n", file=out, flush=True)
        else:
            top = "  ".join(f"{c['class']} {c['prob']:.2f}" for c in record["top_k"][:3])
            side = "" if gate is None else f"  ({'trained' if gate.trained else 'new'} names)"
            print(f"  {w.start_s:8.2f}-{w.end_s:8.2f} s  {top}{side}", file=out, flush=True)
        if best is None or probs.max() > scored[best][0].max():
            best = w.index
    if best is None:
        return records  # no window had a person: nothing to draw
    probs, weights, positions, sub = scored[best]
    panels = panel_frames(probs, weights, positions, sub.sample["total_frames"])
    start = windows[best].start
    images = timeline.grab_frames(clip.input, [start + frame for _, frame in panels])
    plot_frames(
        sub,
        class_names,
        probs,
        weights,
        positions,
        os.path.join(output, f"{name}_frames.png"),
        images=images,
        frame_offset=start,
    )
    used = [w for w, s in zip(windows, scored, strict=True) if s is not None]
    if len(windows) > 1:
        timeline.plot_timeline(
            used,
            np.stack([s[0] for s in scored if s is not None]),
            class_names,
            f"{os.path.basename(clip.input)}: top classes over time ({size / fps:.2f} s windows)",
            os.path.join(output, f"{name}_timeline.png"),
        )
    if annotated_video:
        labels = [
            None if not r["top_k"] else f"{r['top_k'][0]['class']} {r['top_k'][0]['prob']:.2f}"
            for r in records
        ]
        timeline.write_annotated_video(
            clip.input, os.path.join(output, f"{name}_annotated.mp4"), kp, score, windows, labels
        )
    return records


def run(
    config,
    workdir: str,
    inputs: Sequence[str],
    *,
    step: int | None = None,
    class_names: Sequence[str] | None = None,
    frame_dirs: Sequence[str] | None = None,
    top_k: int = 5,
    output: str | None = None,
    out=sys.stdout,
    window_seconds: float | None = None,
    stride_seconds: float | None = None,
    annotated_video: bool = False,
    calibrate: bool = True,
) -> list[dict[str, Any]]:
    """Reads and checks every input, scores each clip, prints its table and writes the outputs.

    Returns the predictions.jsonl records. Raises PredictError before writing anything on bad input.
    """
    if top_k < 1:
        raise PredictError(f"--top_k must be >= 1, got {top_k}")
    from skclip_jax import run_config

    clips = load_clips(inputs, config.data.num_keypoints, frame_dirs, config.data.test_split)
    plans = video_windows(clips, config, window_seconds, stride_seconds)
    run_classes = api.run_class_names(config, workdir)
    class_names = tuple(class_names) if class_names else run_classes
    descriptions = api.class_descriptions(config, run_classes, class_names)
    predictor = api.restore(config, workdir, step)
    predictor.calibrate = calibrate
    warn_empty_clips(clips)
    start = time.perf_counter()
    predictor.set_classes(class_names, descriptions)
    say_calibration(predictor, run_classes, out)
    logging.info(
        "Checkpoint step %d; %d classes encoded in %.2f s",
        predictor.step,
        len(class_names),
        time.perf_counter() - start,
    )
    output = output or os.path.join(workdir, "predict")
    os.makedirs(output, exist_ok=True)
    records, seconds = [], []
    for clip, name, windows in zip(clips, unique_names(clips), plans, strict=True):
        if windows is not None:
            records += predict_video(
                predictor, clip, name, windows, config, class_names, top_k, output,
                annotated_video, out, seconds,
            )  # fmt: skip
            continue
        start = time.perf_counter()
        probs, weights, gate = predictor.scores(clip.sample)
        seconds.append(time.perf_counter() - start)
        positions = frame_positions(clip, config, weights.shape[-1])
        print(format_table(clip, class_names, probs, top_k, gate) + "\n", file=out, flush=True)
        records.append(prediction_record(clip, class_names, probs, weights, positions, top_k, gate))
        plot_frames(
            clip, class_names, probs, weights, positions, os.path.join(output, f"{name}_frames.png")
        )
    run_config.write_atomic(
        os.path.join(output, "predictions.jsonl"), "".join(json.dumps(r) + "\n" for r in records)
    )
    timing = f"first clip {seconds[0]:.2f} s with compilation" if seconds else "nothing scored"
    if len(seconds) > 1:
        timing += f", then {np.mean(seconds[1:]):.2f} s a clip"
    print(f"wrote {len(records)} predictions to {output} ({timing})", file=out, flush=True)
    return records


def say_calibration(predictor, run_classes: Sequence[str], out) -> None:
    """One line above the tables when the trained names are ranked against new ones: that the run's GZSL gate
    decides between them (and how to turn it off), or why nothing does."""
    names = predictor.class_names
    if predictor.calibrated_mask is not None:
        print(
            f"{predictor.calibration.describe()} (--nocalibrate: plain probabilities over every name)\n",
            file=out,
            flush=True,
        )
    elif predictor.calibration is not None and not predictor.calibrate:
        if predictor.calibration.trained_mask(names) is not None:
            print("GZSL gate off (--nocalibrate): plain probabilities\n", file=out, flush=True)
    elif set(names) - set(run_classes) and set(names) & set(run_classes):
        why = (
            f"the run recorded no gate for step {predictor.step}"
            if predictor.config.data.get("unseen_classes")
            else "only a zero-shot run records one"
        )
        print(
            f"note: new names are ranked beside the run's trained names with no GZSL gate ({why}), so "
            "the trained names are favoured\n",
            file=out,
            flush=True,
        )


def resolve_config(workdir: str, config=None):
    """The config to predict with: the run's saved one, or `config` (--config) once it is known to describe
    the run in `workdir` (workdir.check_same_run); PredictError otherwise, before jax is imported."""
    from skclip_jax import run_config
    from skclip_jax import workdir as workdir_lib

    if not os.path.isdir(workdir):
        raise PredictError(f"{workdir}: no such folder; pass --workdir of a trained run")
    if config is None:
        try:
            return run_config.load(workdir)
        except run_config.RunConfigError as e:
            raise PredictError(str(e)) from None
    config = run_config.absolute_paths(config)
    try:
        workdir_lib.check_same_run(config, workdir, "predict")
    except workdir_lib.WorkdirConflict as e:
        raise PredictError(str(e)) from None
    return config


def main(argv):
    command_line.check_no_arguments(argv, PROGRAM)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from skclip_jax import compilation_cache

    # Orbax's restore chatter stays off the console (its warnings still show); the table is the output.
    logging.set_verbosity(logging.WARNING)
    try:
        config = resolve_config(FLAGS.workdir, FLAGS.config)
        class_names = parse_classes(FLAGS.classes, FLAGS.classes_file)
        compilation_cache.enable()  # a second predict on the same run skips compiling its scorer.
        run(
            config,
            FLAGS.workdir,
            FLAGS.input,
            step=FLAGS.step,
            class_names=class_names,
            frame_dirs=FLAGS.frame_dir,
            top_k=FLAGS.top_k,
            output=FLAGS.output,
            window_seconds=FLAGS.window_seconds,
            stride_seconds=FLAGS.stride_seconds,
            annotated_video=FLAGS.annotated_video,
            calibrate=FLAGS.calibrate,
        )
    except PredictError as e:  # a bad input, class list, workdir or checkpoint: the user's to fix
        command_line.fail(PROGRAM, e)
    except KeyboardInterrupt:
        command_line.exit_interrupted(PROGRAM, "interrupted; predictions.jsonl was not written")


def cli() -> None:
    """The `skclip-predict` console script (and `python -m skclip_jax.predict`)."""
    host_memory.reexec_with_fast_allocator()  # first: the allocator is chosen at start-up
    define_flags()
    app.run(main, flags_parser=command_line.flags_parser(PROGRAM))


if __name__ == "__main__":
    cli()
