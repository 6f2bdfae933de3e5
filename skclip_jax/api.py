"""A trained run as a Python object: `skclip_jax.load(workdir)` and `rank` any clip against any action names.

    model = skclip_jax.load("workdirs/demo")
    model.rank(keypoint, keypoint_score, classes=["waving", "kicking"], top_k=2)
    # [("waving", 0.91), ("kicking", 0.09)]

`predict` is built on it. The clip is scored by the run's own test-time protocol (its views, flips and view
averaging), and the class texts by the run's templates and descriptions.
"""

import dataclasses
import functools
from collections.abc import Sequence
from typing import Any

import numpy as np


class PredictError(ValueError):
    """A bad input, class list, workdir or checkpoint: reported without a traceback."""


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
        given = score.shape  # reported as the file holds it, not as expanded below
        if score.ndim == 2:
            score = score[None]
        if score.shape != kp.shape[:-1]:
            raise PredictError(
                f"{where}: keypoint_score has shape {given}, expected {kp.shape[:-1]} "
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


def empty_clip_warning(sample: dict[str, Any], where: str) -> str | None:
    """A warning for a checked clip whose keypoint scores are all 0: its heatmaps are blank, so its ranking
    is the model's answer to an empty video, not to the clip. None for any other clip."""
    if np.any(sample["keypoint_score"] > 0):
        return None
    return (
        f"{where}: every keypoint_score is 0, so its heatmaps are empty and its ranking says nothing "
        "about the clip (no person detected?)"
    )


def score_clip(state, keypoint, keypoint_score, class_feats, *, model, opts):
    """The run's test-time protocol for one clip, with WFI frame weights.

    Args:
      state: train state (params, batch_stats).
      keypoint: [N, M, T, V, 2] the clip's N test views in the test volume's frame.
      keypoint_score: [N, M, T, V].
      class_feats: [L, E] class text features.

    Returns:
      view_logits [views, L]: similarity / temperature of every view (and flip), as `steps.eval_step`, whose
      probabilities are their softmax averaged over the views;
      weights [L, T']: WFI frame weights of every class averaged over the views, T' = time steps after
      SlowOnly's temporal strides;
      temperature: the run's temperature (scalar).
    """
    import jax.numpy as jnp

    from skclip_jax import steps, wfi

    frames = steps.test_view_frames(state, keypoint, keypoint_score, model=model, opts=opts)
    temperature = jnp.clip(state.params["temperature"], *opts.temperature_range)
    sim = wfi.pairwise_similarity(frames, class_feats, opts.activation)  # [views, L]
    cosines = jnp.einsum(
        "vtc,lc->vlt", wfi.l2_normalize(frames), wfi.l2_normalize(class_feats)
    )  # [views, L, T']
    weights = jnp.mean(wfi.frame_weights(cosines, opts.activation), axis=0)
    return sim / temperature, weights, temperature


@dataclasses.dataclass
class TrainedModel:
    """A restored run ready to score clips: the state, the compiled scorer and the class features.

    `rank` is the API; `set_classes` and calling the object are what `predict` uses to score many clips
    against one class list.
    """

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
    # The classes the run trained on (the key of its class descriptions).
    run_classes: tuple[str, ...] = ()
    # A zero-shot run's GZSL gate for the restored step (gzsl_calibration.py), applied when the class list mixes
    # trained and new names, unless `calibrate` is False.
    calibration: Any = None
    calibrate: bool = True

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

    @property
    def calibrated_mask(self) -> np.ndarray | None:
        """bool [L] over class_names: the trained names, when the GZSL gate applies now (None: it does not)."""
        if self.calibration is None or not self.calibrate:
            return None
        return self.calibration.trained_mask(self.class_names)

    def views(self, sample: dict[str, Any]) -> dict[str, np.ndarray]:
        """The clip's test views, [N, M, T, V, 2] and [N, M, T, V], always of the config's shape."""
        from skclip_jax import pose_transforms

        d = self.config.data
        return pose_transforms.test_transform(
            sample,
            clip_len=d.clip_len,
            num_clips=d.num_test_clips,
            out_size=d.test_size,
            num_persons=d.num_persons,
        )

    def __call__(self, sample: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
        """(probs [L], frame weights [L, T']) of one checked clip (`validate_clip`'s dict); where
        `calibrated_mask` says so, probs come through the run's GZSL gate (`scores`)."""
        probs, weights, _ = self.scores(sample)
        return probs, weights

    def scores(self, sample: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, Any]:
        """(probs [L], frame weights [L, T'], the GZSL gate's decision or None) of one checked clip.

        With a class list that mixes the run's trained names with new ones (a zero-shot run, `calibrate` on),
        the gate ranks the clip among the trained names or among the new ones (gzsl_calibration.py): probs are
        then the softmax over that side, 0 on the other.
        """
        import jax

        from skclip_jax import gzsl_calibration

        views = self.views(sample)
        view_logits, weights, temperature = jax.device_get(
            self.scorer(self.state, views["keypoint"], views["keypoint_score"], self.class_feats)
        )
        mask = self.calibrated_mask
        if mask is None:
            return gzsl_calibration.view_mean_softmax(view_logits), weights, None
        probs, gate = gzsl_calibration.gated(
            view_logits, float(temperature), mask, self.calibration.threshold
        )
        return probs, weights, gate

    def rank(
        self,
        keypoint,
        keypoint_score=None,
        img_shape=None,
        classes: Sequence[str] | None = None,
        top_k: int = 5,
    ) -> list[tuple[str, float]]:
        """Ranks action names for one clip; returns up to `top_k` (class name, probability) pairs, best first.

        A zero-shot run's names mixed with new ones go through its GZSL gate (`scores`): the clip is ranked among
        the trained names or among the new ones, and the other side follows with probability 0. Set
        `calibrate = False` first for the plain probabilities over every name.

        Args:
          keypoint: [M, T, V, 2] or [T, V, 2] pixel coordinates (x, y), COCO-17 order, as predict's files hold.
          keypoint_score: [M, T, V] or [T, V] confidences (default 1).
          img_shape: (height, width) of the frames (default: the keypoints' bounding box).
          classes: any action names (open vocabulary); None = the classes the run was trained on.
          top_k: how many pairs to return.

        Raises:
          PredictError: a malformed clip (shape, NaN, keypoint count) or class list.
        """
        run_classes = self.run_classes or self.class_names
        # None is the run's own classes, also after another list was ranked.
        classes = run_classes if classes is None else tuple(classes)
        if len(classes) < 2 or len(set(classes)) != len(classes):
            raise PredictError(f"classes: needs at least 2 distinct names, got {list(classes)}")
        if classes != self.class_names:
            self.set_classes(classes, class_descriptions(self.config, run_classes, classes))
        ann = {"keypoint": keypoint, "keypoint_score": keypoint_score, "img_shape": img_shape}
        sample = validate_clip(ann, "clip", self.config.data.num_keypoints)
        if warning := empty_clip_warning(sample, "clip"):
            import warnings

            warnings.warn(warning, stacklevel=2)
        probs, _ = self(sample)
        order = np.argsort(-probs, kind="stable")[: max(int(top_k), 1)]
        return [(self.class_names[i], float(probs[i])) for i in order]


def run_class_names(config, workdir: str) -> tuple[str, ...]:
    """The classes the run trained on: WORKDIR/class_names.txt, else its dataset's."""
    from skclip_jax import input_pipeline, run_config

    names = run_config.load_class_names(workdir)
    if names is not None:
        return tuple(names)
    try:
        return tuple(
            input_pipeline.load_dataset_info(
                config.data.data_dir, config.data.class_names_file
            ).class_names
        )
    except (ValueError, FileNotFoundError) as e:
        raise PredictError(
            f"{workdir} has no class_names.txt and the run's dataset is unreadable ({e}); "
            "pass the class names"
        ) from e


def class_descriptions(
    config, run_classes: Sequence[str], class_names: Sequence[str]
) -> dict[str, list[str]] | None:
    """The run's class descriptions (data.class_descriptions_file) for those of `class_names` that have one."""
    from skclip_jax import class_texts

    path = config.data.get("class_descriptions_file", "")
    if not path:
        return None
    try:
        descriptions = class_texts.load_descriptions(path, run_classes)
    except (ValueError, FileNotFoundError) as e:
        raise PredictError(str(e)) from e
    # Open vocabulary: descriptions apply to the listed classes that have them.
    key = {class_texts.class_name_text(n).lower(): n for n in class_names}
    return {
        key[class_texts.class_name_text(n).lower()]: d
        for n, d in descriptions.items()
        if class_texts.class_name_text(n).lower() in key
    }


def load(workdir: str, step: int | None = None) -> TrainedModel:
    """A trained run (its latest checkpoint, or `step`) ready to rank clips against its own classes.

    Raises:
      PredictError: no such run, no checkpoint, or a checkpoint that does not fit the run's config.
    """
    import os

    from skclip_jax import run_config

    if not os.path.isdir(workdir):
        raise PredictError(f"{workdir}: no such folder; pass the workdir of a trained run")
    try:
        config = run_config.load(workdir)
    except run_config.RunConfigError as e:
        raise PredictError(str(e)) from e
    run_classes = run_class_names(config, workdir)
    model = restore(config, workdir, step)
    model.run_classes = run_classes
    model.set_classes(run_classes, class_descriptions(config, run_classes, run_classes))
    return model


def restore(config, workdir: str, step: int | None = None) -> TrainedModel:
    """Restores the run's parameters (latest or `step`) on one device and jits the encoders and scorer.

    Raises:
      PredictError: no checkpoint, an unknown step, or a config that cannot build the model.
    """
    import jax

    from skclip_jax import checkpointing, factory, sharding, steps
    from skclip_jax.config_lib import validation

    try:
        validation.validate_config(config)
        # The PoseConv3D baseline's head has one output per class the run trained on.
        run_classes = run_class_names(config, workdir) if factory.is_classifier(config) else ()
        parts = factory.build(config, num_classes=len(run_classes))
    except (ValueError, FileNotFoundError) as e:
        raise PredictError(str(e)) from e
    mesh = sharding.make_mesh((1, 1), jax.devices()[:1])
    abstract, shardings = factory.abstract_state(parts, config, mesh)
    manager = checkpointing.make_manager(workdir, keep=config.keep_checkpoints, read_only=True)
    try:
        if manager.latest_step() is None:
            raise PredictError(
                f"no checkpoint in {checkpointing.checkpoint_dir(workdir)}; pass --workdir of a trained run"
            )
        try:
            state, position = checkpointing.restore(manager, abstract, shardings, step)
        except (
            FileNotFoundError,
            checkpointing.CheckpointMismatchError,
            checkpointing.CheckpointReadError,
        ) as e:
            raise PredictError(str(e)) from None
    finally:
        manager.close()
    state = factory.evaluation_view(state)  # a run's parameter average, where it keeps one
    if factory.is_classifier(config):
        from skclip_jax import classifier_steps

        return classifier_steps.trained_classifier(
            config, parts, state, int(position["step"]), run_classes
        )
    opts = steps.StepOptions.from_config(config)
    scorer = jax.jit(functools.partial(score_clip, model=parts.model, opts=opts))
    encode = jax.jit(functools.partial(steps.encode_classes, model=parts.model))
    calibration = None
    if config.data.get("unseen_classes"):  # only a zero-shot run has held-out clips to calibrate on
        from skclip_jax import gzsl_calibration

        calibration = gzsl_calibration.Calibration.for_run(
            config, workdir, run_class_names(config, workdir), int(position["step"])
        )
    return TrainedModel(
        config,
        state,
        int(position["step"]),
        scorer,
        encode,
        parts.text.tokenizer,
        model=parts.model,
        max_text_positions=parts.text.bert_config.max_position_embeddings,
        opts=opts,
        calibration=calibration,
    )
