r"""Classify new clips with a trained run, against its classes or any action names (open vocabulary).

  python -m skclip_jax.predict --workdir=RUN [--step=N] --input=PATH [--input=PATH ...] \
      [--classes_file=FILE | --classes="name one;name two"] [--top_k=5] [--output=DIR] [--frame_dir=NAME ...]

The run's saved config (WORKDIR/config.json) and class list (WORKDIR/class_names.txt) are used unless
--config / --classes(_file) are given. Inputs:
  * a PYSKL pickle: one annotation dict, a list of them, or a whole PYSKL dataset {split, annotations}
    (then --frame_dir picks clips; default: every clip of its test split);
  * .npz or .json with `keypoint` [T, V, 2] or [M, T, V, 2], optional `keypoint_score` (default 1) and
    `img_shape` (default: the keypoints' bounding box).
Every input is read and checked before anything is computed or written; a bad one stops the command with
its file and problem. The test-time protocol is the run's evaluation (its views, flips and view
averaging); class features are computed once, and the jitted scorer compiles once for all clips (each
clip is sampled to the config's fixed views x persons x frames).

Outputs: a table per clip on stdout; OUTPUT/predictions.jsonl (one line per clip: input, frame_dir, top-k
classes and probabilities, the WFI frame weights of the top class); OUTPUT/<clip>_frames.png (the WFI
frame weights of the top-3 classes over the video, and the skeleton at the top class's most weighted
frames). OUTPUT defaults to WORKDIR/predict. Files are written atomically.
"""

import dataclasses
import functools
import json
import os
import pickle
import re
import sys
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
from absl import app, flags, logging
from ml_collections import config_flags

from skclip_jax import host_memory

FLAGS = flags.FLAGS


def define_flags() -> None:
    """The command line's flags, defined only when this module is the program: tests and forks import ``run`` and
    friends beside other tools that also take ``--config`` (``knn_baseline``, ``main``)."""
    config_flags.DEFINE_config_file(
        "config", None, "Config file; default: the one the run saved in WORKDIR/config.json."
    )
    flags.DEFINE_string("workdir", None, "The trained run's directory.")
    flags.DEFINE_integer("step", None, "Checkpoint step (default: latest).")
    flags.DEFINE_multi_string("input", None, "Clip file(s): .pkl/.pickle (PYSKL), .npz, .json.")
    flags.DEFINE_multi_string(
        "frame_dir",
        None,
        "With a PYSKL dataset pickle: the clips to classify (default: its test split).",
    )
    flags.DEFINE_string("classes", None, 'Class names separated by ";" ("wave;run").')
    flags.DEFINE_string("classes_file", None, "Class names, one per line.")
    flags.DEFINE_integer("top_k", 5, "Classes listed per clip.")
    flags.DEFINE_string("output", None, "Output directory (default: WORKDIR/predict).")
    flags.mark_flags_as_required(["workdir", "input"])


PLOT_CLASSES = 3
SKELETON_PANELS = 3


class PredictError(ValueError):
    """A bad input, class list, workdir or checkpoint: reported without a traceback."""


@dataclasses.dataclass
class Clip:
    """One clip to classify: where it came from and its PYSKL-style annotation."""

    input: str
    frame_dir: str | None
    sample: dict[str, Any]
    label: int | None = None


# ---------------------------------------------------------------------------------------------------------
# Inputs.


def _array(value, name: str, where: str) -> np.ndarray:
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise PredictError(f"{where}: {name} is not a numeric array ({e})") from e
    return arr


def validate_clip(ann: dict[str, Any], where: str, num_keypoints: int) -> dict[str, Any]:
    """Checks one annotation and returns PYSKL fields: keypoint [M, T, V, 2], keypoint_score [M, T, V], ...

    Raises:
      PredictError naming `where` and the problem (missing keypoint, wrong rank, V, NaN, empty clip).
    """
    if not isinstance(ann, dict) or "keypoint" not in ann:
        raise PredictError(f"{where}: no 'keypoint' array")
    kp = _array(ann["keypoint"], "keypoint", where)
    if kp.ndim == 3:
        kp = kp[None]
    if kp.ndim != 4 or kp.shape[-1] != 2:
        raise PredictError(
            f"{where}: keypoint has shape {kp.shape}; expected [T, V, 2] or [M, T, V, 2] (x, y)"
        )
    m, t, v, _ = kp.shape
    if m == 0 or t == 0:
        raise PredictError(
            f"{where}: empty clip (keypoint shape {kp.shape}: no person or no frame)"
        )
    if v != num_keypoints:
        raise PredictError(
            f"{where}: {v} keypoints per person, but the model takes {num_keypoints} (COCO-17 order)"
        )
    if not np.all(np.isfinite(kp)):
        raise PredictError(f"{where}: keypoint has {int(np.sum(~np.isfinite(kp)))} NaN/inf values")
    if ann.get("keypoint_score") is None:
        score = np.ones(kp.shape[:-1])
    else:
        score = _array(ann["keypoint_score"], "keypoint_score", where)
        if score.ndim == 2:
            score = score[None]
        if score.shape != kp.shape[:-1]:
            raise PredictError(
                f"{where}: keypoint_score has shape {score.shape}, expected {kp.shape[:-1]} "
                "(keypoint without its last axis)"
            )
        if not np.all(np.isfinite(score)):
            raise PredictError(f"{where}: keypoint_score has NaN/inf values")
    if ann.get("img_shape") is None:
        # The keypoints' bounding box (from the origin): only used when PoseCompact keeps the frame.
        img_shape = (int(np.ceil(kp[..., 1].max())) + 1, int(np.ceil(kp[..., 0].max())) + 1)
        img_shape = (max(img_shape[0], 1), max(img_shape[1], 1))
    else:
        shape = _array(ann["img_shape"], "img_shape", where).reshape(-1)
        if shape.size != 2 or not np.all(shape > 0):
            raise PredictError(
                f"{where}: img_shape must be (height, width) > 0, got {shape.tolist()}"
            )
        img_shape = (int(shape[0]), int(shape[1]))
    return {
        "keypoint": kp.astype(np.float32),
        "keypoint_score": score.astype(np.float32),
        "img_shape": img_shape,
        "total_frames": t,
    }


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
                with open(path, "rb") as f:
                    data = pickle.load(f)
                anns = _pyskl_clips(data, path, frame_dirs, test_split)
            elif ext == ".npz":
                with np.load(path, allow_pickle=False) as z:
                    anns = [{k: z[k] for k in z.files}]
            elif ext == ".json":
                with open(path, encoding="utf-8") as f:
                    anns = [json.load(f)]
            else:
                raise PredictError(
                    f"{path}: unknown input format {ext or '(no extension)'!r}; use a PYSKL .pkl, "
                    ".npz or .json"
                )
        except PredictError:
            raise
        except Exception as e:  # Truncated or foreign files raise many different types.
            raise PredictError(f"{path}: cannot read ({type(e).__name__}: {e})") from e
        for i, ann in enumerate(anns):
            frame_dir = ann.get("frame_dir") if isinstance(ann, dict) else None
            where = path if len(anns) == 1 else f"{path} [{frame_dir or f'clip {i}'}]"
            sample = validate_clip(ann, where, num_keypoints)
            label = ann.get("label")
            label = int(label) if isinstance(label, int | np.integer) else None
            clips.append(Clip(path, None if frame_dir is None else str(frame_dir), sample, label))
    return clips


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


def score_clip(state, keypoint, keypoint_score, class_feats, *, model, opts):
    """The run's test-time protocol for one clip, with WFI frame weights.

    Args:
      state: train state (params, batch_stats).
      keypoint: [N, M, T, V, 2] the clip's N test views in the test volume's frame.
      keypoint_score: [N, M, T, V].
      class_feats: [L, E] class text features.

    Returns:
      probs [L]: softmax(similarity / temperature) averaged over views (and flips), as `train.eval_step`;
      weights [L, T']: WFI frame weights of every class averaged over the views, T' = time steps after
      SlowOnly's temporal strides.
    """
    import jax
    import jax.numpy as jnp

    from skclip_jax import train, wfi

    frames = train.test_view_frames(state, keypoint, keypoint_score, model=model, opts=opts)
    temperature = jnp.clip(state.params["temperature"], *opts.temperature_range)
    sim = wfi.pairwise_similarity(frames, class_feats, opts.activation)  # [views, L]
    probs = jnp.mean(jax.nn.softmax(sim / temperature, axis=-1), axis=0)
    cosines = jnp.einsum(
        "vtc,lc->vlt", wfi.l2_normalize(frames), wfi.l2_normalize(class_feats)
    )  # [views, L, T']
    weights = jnp.mean(wfi.frame_weights(cosines, opts.activation), axis=0)
    return probs, weights


@dataclasses.dataclass
class Predictor:
    """A restored run ready to score clips: the state, the compiled scorer and the class features."""

    config: Any
    state: Any
    step: int
    scorer: Any
    encode: Any
    tokenizer: Any
    model: Any = None
    # The text tower's position table: the longest class text it can read.
    max_text_positions: int = 512
    opts: Any = None
    class_names: tuple[str, ...] = ()
    class_feats: Any = None

    def set_classes(
        self, class_names: Sequence[str], descriptions: dict[str, list[str]] | None = None
    ):
        """Encodes the class texts once (the run's templates, plus descriptions where given)."""
        from skclip_jax import class_texts

        texts = class_texts.class_texts(
            class_names, class_texts.templates_of(self.config.data), descriptions
        )
        # As long as the longest text needs (never shorter than training's): a new name is never cut.
        length = class_texts.fitting_length(
            self.tokenizer, texts, self.config.data.max_text_len, self.max_text_positions
        )
        tokens = class_texts.tokens_for(self.tokenizer, texts, length)
        self.class_names = tuple(class_names)
        self.class_feats = self.encode(self.state, tokens)

    def views(self, clip: Clip) -> dict[str, np.ndarray]:
        """The clip's test views, [N, M, T, V, 2] and [N, M, T, V], always of the config's shape."""
        from skclip_jax import pose_transforms

        d = self.config.data
        return pose_transforms.test_transform(
            clip.sample,
            clip_len=d.clip_len,
            num_clips=d.num_test_clips,
            out_size=d.test_size,
            num_persons=d.num_persons,
        )

    def __call__(self, clip: Clip) -> tuple[np.ndarray, np.ndarray]:
        """(probs [L], frame weights [L, T']) of one clip."""
        import jax

        views = self.views(clip)
        probs, weights = self.scorer(
            self.state, views["keypoint"], views["keypoint_score"], self.class_feats
        )
        return jax.device_get((probs, weights))


def build_predictor(config, workdir: str, step: int | None = None) -> Predictor:
    """Restores the run's parameters (latest or `step`) on one device and jits the encoders and scorer.

    Raises:
      PredictError: no checkpoint, an unknown step, or a config that cannot build the model.
    """
    import jax
    import jax.numpy as jnp

    from skclip_jax import checkpointing, config_validation, sharding, train
    from skclip_jax.models import text

    try:
        config_validation.validate_config(config)
        bert_dir = text.resolve_bert_dir(config.model.text.bert_dir)
        tokenizer, enc_token_id = text.load_tokenizer(bert_dir)
        bert_config = text.bert_config(bert_dir, len(tokenizer), config.model.text.dropout)
    except (ValueError, FileNotFoundError) as e:
        raise PredictError(str(e)) from e
    model = train.build_model(config, bert_config, enc_token_id)
    tx = train.make_optimizer(config, lambda count: 0.0)  # only its state's structure is needed.
    volume = jnp.zeros((1, 4, 16, 16, config.model.slowonly.in_channels), jnp.float32)
    ids = jnp.zeros((1, config.data.max_text_len), jnp.int32)

    def init_fn(rng):
        variables = model.init({"params": rng, "dropout": rng}, volume, ids, jnp.ones_like(ids))
        return train.TrainState.create(
            apply_fn=model.apply,
            params=variables["params"],
            tx=tx,
            batch_stats=variables["batch_stats"],
        )

    abstract = jax.eval_shape(init_fn, jax.random.key(0))
    mesh = sharding.make_mesh((1, 1), jax.devices()[:1])
    shardings = sharding.state_shardings(mesh, abstract, False)
    manager = checkpointing.make_manager(workdir, keep=config.keep_checkpoints, read_only=True)
    try:
        if manager.latest_step() is None:
            raise PredictError(
                f"no checkpoint in {checkpointing.checkpoint_dir(workdir)}; pass --workdir of a trained run"
            )
        try:
            state, position = checkpointing.restore(manager, abstract, shardings, step)
        except FileNotFoundError as e:
            raise PredictError(str(e)) from e
    finally:
        manager.close()
    opts = train.StepOptions.from_config(config)
    scorer = jax.jit(functools.partial(score_clip, model=model, opts=opts))
    encode = jax.jit(functools.partial(train.encode_classes, model=model))
    return Predictor(
        config,
        state,
        int(position["step"]),
        scorer,
        encode,
        tokenizer,
        model=model,
        max_text_positions=bert_config.max_position_embeddings,
        opts=opts,
    )


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


def plot_frames(
    clip: Clip,
    class_names: Sequence[str],
    probs: np.ndarray,
    weights: np.ndarray,
    positions: np.ndarray,
    path: str,
) -> None:
    """WFI frame weights of the top-3 classes over the video, and the skeleton at the top class's most
    weighted frames (the paper's picture of what WFI attends to)."""
    from matplotlib.figure import Figure

    from skclip_jax import heatmaps

    top = np.argsort(-probs, kind="stable")[:PLOT_CLASSES]
    fig = Figure(figsize=(9, 6.2), layout="constrained")
    grid = fig.add_gridspec(2, SKELETON_PANELS, height_ratios=(1.1, 1))
    ax = fig.add_subplot(grid[0, :])
    for rank, c in enumerate(top):
        ax.plot(
            positions,
            weights[c],
            marker="o",
            linewidth=2.2 if rank == 0 else 1.3,
            label=f"{class_names[c]} (p={probs[c]:.2f})",
        )
    ax.set_xlabel("frame")
    ax.set_ylabel("WFI frame weight")
    ax.set_title(f"{clip_name(clip)}: frame weights of the top-{len(top)} classes")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)

    kp, score = clip.sample["keypoint"], clip.sample["keypoint_score"]
    best = np.argsort(-weights[top[0]], kind="stable")[:SKELETON_PANELS]
    for step in best:
        ax.axvline(positions[step], color="0.6", linestyle=":", linewidth=1)
    visible = score > 0
    xs, ys = kp[..., 0][visible], kp[..., 1][visible]
    for panel, step in enumerate(sorted(best)):
        frame = int(round(positions[step]))
        frame = min(max(frame, 0), kp.shape[1] - 1)
        sub = fig.add_subplot(grid[1, panel])
        for person in range(kp.shape[0]):
            pts, ok = kp[person, frame], score[person, frame] > 0
            for a, b in heatmaps.COCO_LIMBS:
                if ok[a] and ok[b]:
                    sub.plot(pts[[a, b], 0], pts[[a, b], 1], color="tab:blue", linewidth=2)
            sub.scatter(pts[ok, 0], pts[ok, 1], s=10, color="tab:red", zorder=3)
        if xs.size:
            pad = 0.05 * max(xs.max() - xs.min(), ys.max() - ys.min(), 1.0)
            sub.set_xlim(xs.min() - pad, xs.max() + pad)
            sub.set_ylim(ys.max() + pad, ys.min() - pad)  # image y points down.
        sub.set_aspect("equal")
        sub.set_xticks([])
        sub.set_yticks([])
        sub.set_title(f"frame {frame} (weight {weights[top[0], step]:.2f})", fontsize=9)
    _savefig_atomic(fig, path)


def format_table(clip: Clip, class_names, probs: np.ndarray, top_k: int) -> str:
    top = np.argsort(-probs, kind="stable")[:top_k]
    title = clip.input + (f" [{clip.frame_dir}]" if clip.frame_dir else "")
    width = max(len("class"), *(len(class_names[c]) for c in top))
    lines = [title, f"  rank  {'class':<{width}}  probability"]
    lines += [f"  {r + 1:>4}  {class_names[c]:<{width}}  {probs[c]:.4f}" for r, c in enumerate(top)]
    return "\n".join(lines)


def prediction_record(clip, class_names, probs, weights, positions, top_k) -> dict[str, Any]:
    top = np.argsort(-probs, kind="stable")[:top_k]
    record = {"input": clip.input}
    if clip.frame_dir is not None:
        record["frame_dir"] = clip.frame_dir
    record["top_k"] = [{"class": class_names[c], "prob": float(probs[c])} for c in top]
    record["frame_weights"] = [float(w) for w in weights[top[0]]]
    record["frame_positions"] = [float(p) for p in positions]
    return record


def unique_names(clips: Sequence[Clip]) -> list[str]:
    names, used = [], {}
    for clip in clips:
        base = clip_name(clip)
        used[base] = used.get(base, 0) + 1
        names.append(base if used[base] == 1 else f"{base}_{used[base]}")
    return names


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
) -> list[dict[str, Any]]:
    """Reads and checks every input, scores each clip, prints its table and writes the outputs.

    Returns the predictions.jsonl records. Raises PredictError before writing anything on bad input.
    """
    from skclip_jax import class_texts, input_pipeline, run_config

    if top_k < 1:
        raise PredictError(f"--top_k must be >= 1, got {top_k}")
    clips = load_clips(inputs, config.data.num_keypoints, frame_dirs, config.data.test_split)
    run_classes = run_config.load_class_names(workdir)
    if run_classes is None:
        try:
            run_classes = input_pipeline.load_dataset_info(
                config.data.data_dir, config.data.class_names_file
            ).class_names
        except (ValueError, FileNotFoundError) as e:
            raise PredictError(
                f"{workdir} has no class_names.txt and the run's dataset is unreadable ({e}); "
                "pass --classes or --classes_file"
            ) from e
    class_names = tuple(class_names) if class_names else tuple(run_classes)
    descriptions = None
    path = config.data.get("class_descriptions_file", "")
    if path:
        try:
            descriptions = class_texts.load_descriptions(path, run_classes)
        except (ValueError, FileNotFoundError) as e:
            raise PredictError(str(e)) from e
        # Open vocabulary: descriptions apply to the listed classes that have them.
        key = {class_texts.class_name_text(n).lower(): n for n in class_names}
        descriptions = {
            key[class_texts.class_name_text(n).lower()]: d
            for n, d in descriptions.items()
            if class_texts.class_name_text(n).lower() in key
        }

    predictor = build_predictor(config, workdir, step)
    start = time.perf_counter()
    predictor.set_classes(class_names, descriptions)
    logging.info(
        "Checkpoint step %d; %d classes encoded in %.2f s",
        predictor.step,
        len(class_names),
        time.perf_counter() - start,
    )
    output = output or os.path.join(workdir, "predict")
    os.makedirs(output, exist_ok=True)
    records, seconds = [], []
    for clip, name in zip(clips, unique_names(clips), strict=True):
        start = time.perf_counter()
        probs, weights = predictor(clip)
        seconds.append(time.perf_counter() - start)
        positions = frame_positions(clip, config, weights.shape[-1])
        print(format_table(clip, class_names, probs, top_k) + "\n", file=out, flush=True)
        records.append(prediction_record(clip, class_names, probs, weights, positions, top_k))
        plot_frames(
            clip, class_names, probs, weights, positions, os.path.join(output, f"{name}_frames.png")
        )
    run_config.write_atomic(
        os.path.join(output, "predictions.jsonl"), "".join(json.dumps(r) + "\n" for r in records)
    )
    timing = f"first clip {seconds[0]:.2f} s with compilation"
    if len(seconds) > 1:
        timing += f", then {np.mean(seconds[1:]):.2f} s a clip"
    print(f"wrote {len(records)} predictions to {output} ({timing})", file=out, flush=True)
    return records


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from skclip_jax import compilation_cache, run_config

    compilation_cache.enable()  # a second predict on the same run skips compiling its scorer.
    # Orbax's restore chatter stays off the console (its warnings still show); the table is the output.
    logging.set_verbosity(logging.WARNING)
    try:
        config = FLAGS.config or run_config.load(FLAGS.workdir)
        run(
            config,
            FLAGS.workdir,
            FLAGS.input,
            step=FLAGS.step,
            class_names=parse_classes(FLAGS.classes, FLAGS.classes_file),
            frame_dirs=FLAGS.frame_dir,
            top_k=FLAGS.top_k,
            output=FLAGS.output,
        )
    except (PredictError, run_config.RunConfigError) as e:
        print(f"skclip_jax.predict: error: {e}", file=sys.stderr, flush=True)
        sys.exit(1)


if __name__ == "__main__":
    host_memory.reexec_with_fast_allocator()  # first: the allocator is chosen at start-up
    define_flags()
    app.run(main)
