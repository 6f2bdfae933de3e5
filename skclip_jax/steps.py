"""The jitted, sharded train and eval steps of SkeletonCLIP++.

One training iteration (heatmap rendering, both towers, WFI, SSM, CSI mining and the fusion pass, the update) is a
single jitted function over the mesh; nothing in it leaves the device or depends on data values for its shape.
"""

import dataclasses
import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import ml_collections
import optax
from jax.sharding import Mesh

from skclip_jax import class_texts, csi, heatmap_patches, heatmaps, losses, sharding, wfi
from skclip_jax.factory import TrainState
from skclip_jax.models import patch_stem, skclip

Batch = dict[str, jax.Array]


@dataclasses.dataclass(frozen=True)
class StepOptions:
    """The config values the steps close over (plain Python, so nothing config-shaped is traced)."""

    train_size: int
    test_size: int
    sigma: float
    with_limb: bool
    test_flip: bool
    activation: str
    ssm_targets: str
    csi: bool
    csi_weight: float
    csi_negatives: str
    temperature_range: tuple[float, float]
    group_size: int
    # Keypoints reach the stem as HeatmapPatches instead of rendered volumes (models/patch_stem.py).
    stem_patches: bool = False
    # optim.ema_decay: the parameter average's decay (0: none kept).
    ema_decay: float = 0.0

    @classmethod
    def from_config(cls, config: ml_collections.ConfigDict) -> "StepOptions":
        stem_impl = patch_stem.resolve(
            config.model.slowonly.get("stem_impl", "conv"),
            with_limb=config.data.with_limb,
            conv1_kernel=tuple(config.model.slowonly.conv1_kernel),
            num_persons=config.data.num_persons,
            sigma=config.data.sigma,
            size=min(config.data.train_size, config.data.test_size),
        )
        return cls(
            train_size=config.data.train_size,
            test_size=config.data.test_size,
            sigma=config.data.sigma,
            with_limb=config.data.with_limb,
            test_flip=config.data.test_flip,
            activation=config.model.activation,
            ssm_targets=config.model.ssm_targets,
            csi=config.model.csi,
            csi_weight=config.model.csi_weight,
            csi_negatives=config.model.csi_negatives,
            temperature_range=tuple(config.model.temperature_range),
            group_size=config.model.contrastive_group_size,
            stem_patches=stem_impl == "patches",
            ema_decay=float(config.optim.get("ema_decay", 0.0)),
        )


def render_volume(
    keypoint: jax.Array, score: jax.Array, size: int, opts: StepOptions
) -> jax.Array | heatmap_patches.HeatmapPatches:
    """Keypoints [..., M, T, V, 2] -> heatmap volumes [..., T, size, size, C] on the device.

    With ``opts.stem_patches`` the volumes come as ``HeatmapPatches``, which the stem convolves unrendered.
    """
    if opts.stem_patches:
        return heatmap_patches.keypoint_patches(keypoint, score, size, size, sigma=opts.sigma)
    return heatmaps.render_heatmaps(
        keypoint, score, size, size, sigma=opts.sigma, with_limb=opts.with_limb
    )


def group_view(x: jax.Array, group_size: int) -> jax.Array:
    """[B, ...] -> [G, g, ...] contrastive groups of consecutive rows (group_size 0 or >= B: one group of all B)."""
    g = group_size if 0 < group_size < x.shape[0] else x.shape[0]
    return x.reshape((x.shape[0] // g, g) + x.shape[1:])


def grouped_contrastive(
    frames: jax.Array,
    texts: jax.Array,
    labels: jax.Array,
    temperature: jax.Array,
    rng: jax.Array,
    opts: StepOptions,
) -> dict[str, jax.Array]:
    """SSM loss, in-group similarities and CSI negatives, each contrastive group on its own (vmapped).

    The original trains on 2 GPUs x 16 clips and never gathers across GPUs, so its soft targets, its negative
    pool and its single-label check see 16 clips; `opts.group_size` reproduces that for any mesh and batch.

    Args:
      frames: [B, T, E] joint-space frame features.
      texts: [B, E] the batch's own prompts ("batch" targets) or [L, E] all class prompts ("all_classes").
      labels: [B] integer labels.
      temperature: scalar.
      rng: key for sampled negatives.
      opts: step options (activation, targets, negatives mode, group size).

    Returns:
      ssm: scalar loss (mean over groups; for "all_classes" the mean over clips, which groups do not change);
      pair_sim: [G, g, g] in-group similarities; neg_text, neg_video: [B] global row indices of each clip's
      negative text and each text's negative clip; has_negative: [B] bool.
    """
    group_labels = group_view(labels, opts.group_size)
    num_groups, g = group_labels.shape
    if opts.ssm_targets == "batch":
        pair_sim = jax.vmap(functools.partial(wfi.pairwise_similarity, activation=opts.activation))(
            group_view(frames, opts.group_size), group_view(texts, opts.group_size)
        )  # [G, g, g]
        ssm = jnp.mean(
            jax.vmap(losses.ssm_loss, in_axes=(0, 0, None))(pair_sim, group_labels, temperature)
        )
    elif opts.ssm_targets == "all_classes":
        class_sim = wfi.pairwise_similarity(frames, texts, opts.activation)  # [B, L]
        ssm = losses.ssm_loss_all_classes(class_sim, labels, temperature)
        # In-group text j is class group_labels[j]: its column of the class similarities.
        pair_sim = jax.vmap(lambda sim, lab: sim[:, lab])(
            group_view(class_sim, opts.group_size), group_labels
        )
    else:
        raise ValueError(
            f"model.ssm_targets must be 'batch' or 'all_classes', got {opts.ssm_targets!r}"
        )

    def negatives(sim, group_labels, key, temperature):
        return csi.hardest_negatives(sim, group_labels, opts.csi_negatives, key, temperature)

    neg_text, neg_video, has_negative = jax.vmap(negatives, in_axes=(0, 0, 0, None))(
        jax.lax.stop_gradient(pair_sim),
        group_labels,
        jax.random.split(rng, num_groups),
        jax.lax.stop_gradient(temperature),
    )
    offset = (jnp.arange(num_groups, dtype=jnp.int32) * g)[:, None]
    return {
        "ssm": ssm,
        "pair_sim": pair_sim,
        "neg_text": (neg_text + offset).reshape(-1),
        "neg_video": (neg_video + offset).reshape(-1),
        "has_negative": has_negative.reshape(-1),
    }


def compute_losses(
    params,
    batch_stats,
    batch: Batch,
    class_tokens: Batch,
    rng: jax.Array,
    *,
    model: skclip.SkeletonCLIP,
    opts: StepOptions,
):
    """Forward pass and losses of one global batch; returns (loss, (metrics, new_batch_stats))."""
    labels = batch["label"]
    volume = render_volume(batch["keypoint"], batch["keypoint_score"], opts.train_size, opts)
    video_rng, text_rng, fusion_rng, negative_rng = jax.random.split(rng, 4)

    (frames, video_tokens), mutated = model.apply(
        {"params": params, "batch_stats": batch_stats},
        volume,
        True,
        method=skclip.SkeletonCLIP.encode_video,
        mutable=["batch_stats"],
        rngs={"dropout": video_rng},
    )
    apply_text = functools.partial(model.apply, {"params": params}, rngs={"dropout": text_rng})
    ids = class_tokens["input_ids"][labels]
    mask = class_tokens["attention_mask"][labels]
    temperature = jnp.clip(params["temperature"], *opts.temperature_range)

    if opts.ssm_targets == "all_classes":
        texts = apply_text(
            class_tokens["input_ids"],
            class_tokens["attention_mask"],
            True,
            method=skclip.SkeletonCLIP.encode_text,
        )
    else:
        texts = apply_text(ids, mask, True, method=skclip.SkeletonCLIP.encode_text)
    out = grouped_contrastive(frames, texts, labels, temperature, negative_rng, opts)
    ssm = out["ssm"]

    metrics = {"ssm_loss": ssm, "temperature": temperature}
    loss = ssm
    if opts.csi:
        neg_text, neg_video, has_negative = out["neg_text"], out["neg_video"], out["has_negative"]
        pair_ids = jnp.concatenate([ids, ids[neg_text], ids])
        pair_mask = jnp.concatenate([mask, mask[neg_text], mask])
        # Pairs: (clip i, its text), (clip i, hardest negative text), (hardest negative clip, text i).
        batch_index = jnp.arange(labels.shape[0])
        pair_clips = jnp.concatenate([batch_index, batch_index, neg_video])
        logits = model.apply(
            {"params": params},
            pair_ids,
            pair_mask,
            video_tokens,
            True,
            pair_clips,
            method=skclip.SkeletonCLIP.match_logits,
            rngs={"dropout": fusion_rng},
        )
        csi_loss = csi.match_loss(logits.reshape(3, labels.shape[0], 2), has_negative)
        loss = loss + opts.csi_weight * csi_loss
        metrics["csi_loss"] = csi_loss
        metrics["csi_accuracy"] = jnp.mean(
            (jnp.argmax(logits, -1) == jnp.repeat(jnp.array([1, 0, 0]), labels.shape[0])).astype(
                jnp.float32
            )
        )
    metrics["loss"] = loss
    # In-group retrieval accuracy: does clip i's most similar text of its group carry its label?
    group_labels = group_view(labels, opts.group_size)
    retrieved = jnp.take_along_axis(group_labels, jnp.argmax(out["pair_sim"], axis=2), axis=1)
    metrics["train_accuracy"] = jnp.mean((retrieved == group_labels).astype(jnp.float32))
    return loss, (metrics, mutated["batch_stats"])


def train_step(
    state: TrainState,
    batch: Batch,
    class_tokens: Batch,
    base_rng: jax.Array,
    *,
    model: skclip.SkeletonCLIP,
    opts: StepOptions,
    schedule: optax.Schedule,
) -> tuple[TrainState, dict[str, jax.Array]]:
    """One optimisation step on a global batch; pure, so it jits, shards and resumes exactly."""
    rng = jax.random.fold_in(base_rng, state.step)
    # Several texts per class (templates, descriptions): this step's one text per class; else unchanged.
    class_tokens = class_texts.draw_prompts(class_tokens, rng)
    grad_fn = jax.value_and_grad(compute_losses, has_aux=True)
    (_, (metrics, batch_stats)), grads = grad_fn(
        state.params, state.batch_stats, batch, class_tokens, rng, model=model, opts=opts
    )
    new_state = state.apply_gradients(grads=grads, batch_stats=batch_stats)
    # The original clamps the temperature parameter in place before each step; clamp after the update.
    params = dict(new_state.params)
    params["temperature"] = jnp.clip(params["temperature"], *opts.temperature_range)
    new_state = new_state.replace(params=params)
    if new_state.ema is not None:
        current = {"params": new_state.params, "batch_stats": new_state.batch_stats}
        new_state = new_state.replace(
            ema=ema_update(new_state.ema, current, state.step, opts.ema_decay)
        )
    metrics["grad_norm"] = optax.tree.norm(grads)
    metrics["learning_rate"] = schedule(state.step)
    return new_state, metrics


def ema_update(ema, current, step: jax.Array, decay: float):
    """One step of the parameter average: ema + (1 - d) * (current - ema), d = min(decay, (1 + t) / (10 + t)).

    `t` counts the updates before this one. The warm-up (TensorFlow's ExponentialMovingAverage with
    num_updates) lets the average follow the fast early steps instead of remembering the initial weights for
    hundreds of steps: a short run's average is then of its trained weights.
    """
    t = jnp.asarray(step, jnp.float32)
    d = jnp.minimum(decay, (1.0 + t) / (10.0 + t))
    return jax.tree.map(lambda e, c: e + (1.0 - d).astype(e.dtype) * (c - e), ema, current)


def encode_classes(
    state: TrainState, class_tokens: Batch, *, model: skclip.SkeletonCLIP
) -> jax.Array:
    """Joint-space features [L, E] of all class prompts (once per evaluation, not per batch).

    Tokens [L, K, S] (several texts per class) give the normalised mean over each class's texts.
    """
    ids, mask = class_tokens["input_ids"], class_tokens["attention_mask"]
    feats = model.apply(
        {"params": state.params},
        ids.reshape(-1, ids.shape[-1]),
        mask.reshape(-1, mask.shape[-1]),
        False,
        method=skclip.SkeletonCLIP.encode_text,
    )
    if ids.ndim == 2:
        return feats
    feats = feats.reshape(ids.shape[:2] + feats.shape[-1:])
    return class_texts.ensemble_features(feats, class_tokens["prompt_mask"])


def view_volumes(
    keypoint: jax.Array, score: jax.Array, opts: StepOptions
) -> jax.Array | heatmap_patches.HeatmapPatches:
    """Test volumes [F * V, T, S, S, K] of V test views [V, M, T, K, 2], S = test_size; with test_flip (PYSKL's
    ``double=True``) F = 2, the horizontally flipped copies (left/right keypoints swapped) last."""
    volume = render_volume(keypoint, score, opts.test_size, opts)
    if opts.test_flip and isinstance(volume, heatmap_patches.HeatmapPatches):
        flipped = heatmap_patches.flip_patches(
            volume, heatmaps.COCO_LEFT_KP, heatmaps.COCO_RIGHT_KP
        )
        return heatmap_patches.concatenate([volume, flipped])
    if opts.test_flip:
        flipped = heatmaps.flip_heatmaps(volume, heatmaps.COCO_LEFT_KP, heatmaps.COCO_RIGHT_KP)
        return jnp.concatenate([volume, flipped])
    return volume


def test_view_frames(
    state: TrainState,
    keypoint: jax.Array,
    score: jax.Array,
    *,
    model: skclip.SkeletonCLIP,
    opts: StepOptions,
) -> jax.Array:
    """Joint-space frames [F * V, T', E] of V test views [V, M, T, K, 2] (F = 2 with test_flip, flipped last)."""
    frames, _ = model.apply(
        {"params": state.params, "batch_stats": state.batch_stats},
        view_volumes(keypoint, score, opts),
        False,
        method=skclip.SkeletonCLIP.encode_video,
    )
    return frames


def eval_step(
    state: TrainState,
    batch: Batch,
    class_feats: jax.Array,
    *,
    model: skclip.SkeletonCLIP,
    opts: StepOptions,
) -> dict[str, jax.Array]:
    """Class probabilities [B, L] of B videos, averaged over their N test views, with their labels and mask.

    batch["keypoint"] is [B, N, M, T, V, 2]; every view is scored against every class with class-conditioned WFI.
    Labels and mask come back beside the probabilities so that every process holds the whole global batch.
    """
    keypoint, score = batch["keypoint"], batch["keypoint_score"]
    b, n = keypoint.shape[:2]
    frames = test_view_frames(
        state,
        keypoint.reshape((b * n,) + keypoint.shape[2:]),
        score.reshape((b * n,) + score.shape[2:]),
        model=model,
        opts=opts,
    )
    temperature = jnp.clip(state.params["temperature"], *opts.temperature_range)
    sim = wfi.pairwise_similarity(frames, class_feats, opts.activation)  # [views * B * N, L]
    probs = jax.nn.softmax(sim / temperature, axis=-1)
    probs = jnp.mean(probs.reshape(-1, b, n, probs.shape[-1]), axis=(0, 2))
    # Per-view logits [B, views * N, L], for protocols that choose among a subset of the classes (ZSL).
    logits = jnp.moveaxis((sim / temperature).reshape(-1, b, n, sim.shape[-1]), 0, 1)
    logits = logits.reshape(b, -1, sim.shape[-1])
    return {"probs": probs, "logits": logits, "label": batch["label"], "mask": batch["mask"]}


@dataclasses.dataclass(frozen=True)
class CompiledSteps:
    train: Callable
    encode_classes: Callable
    eval: Callable


def compile_steps(
    model: skclip.SkeletonCLIP,
    opts: StepOptions,
    schedule: optax.Schedule,
    mesh: Mesh,
    state_shardings,
) -> CompiledSteps:
    """jit once, with explicit shardings: batch split over the mesh, state as created, donated state."""
    batch_spec = sharding.batch_sharding(mesh)
    rep = sharding.replicated(mesh)
    train = jax.jit(
        functools.partial(train_step, model=model, opts=opts, schedule=schedule),
        in_shardings=(state_shardings, batch_spec, rep, rep),
        out_shardings=(state_shardings, rep),
        donate_argnums=0,
    )
    classes = jax.jit(
        functools.partial(encode_classes, model=model),
        in_shardings=(state_shardings, rep),
        out_shardings=rep,
    )
    evaluate = jax.jit(
        functools.partial(eval_step, model=model, opts=opts),
        in_shardings=(state_shardings, batch_spec, rep),
        out_shardings=rep,
    )
    return CompiledSteps(train=train, encode_classes=classes, eval=evaluate)
