"""The jitted, sharded steps of the PoseConv3D baseline (`model.kind="poseconv3d"`, models/classifier.py).

They expose what `steps.compile_steps` does (train, encode_classes, eval with the same arguments and outputs), so
the training loop, its evaluation rows, metrics and plots, `predict` and the benchmark run either model. The
heatmaps are rendered on the device by `steps.render_volume`, as for SkeletonCLIP++; the classes are indices, so
the class "tokens" are the indices and `encode_classes` passes them through.
"""

import dataclasses
import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh

from skclip_jax import api, sharding, steps
from skclip_jax.factory import TrainState
from skclip_jax.models.classifier import PoseConv3D

Batch = dict[str, jax.Array]


def class_index_tokens(num_classes: int) -> dict[str, np.ndarray]:
    """What stands for a classifier's class tokens: the class indices [L] (no text is read)."""
    return {"class_index": np.arange(num_classes, dtype=np.int32)}


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Mean softmax cross-entropy of [B, L] logits against [B] integer labels (PyTorch's CrossEntropyLoss)."""
    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, labels))


def compute_loss(
    params, batch_stats, batch: Batch, rng: jax.Array, *, model: PoseConv3D, opts: steps.StepOptions
):
    """Forward pass of one global batch; returns (loss, (metrics, new_batch_stats))."""
    volume = steps.render_volume(batch["keypoint"], batch["keypoint_score"], opts.train_size, opts)
    logits, mutated = model.apply(
        {"params": params, "batch_stats": batch_stats},
        volume,
        True,
        mutable=["batch_stats"],
        rngs={"dropout": rng},
    )
    loss = cross_entropy(logits, batch["label"])
    correct = jnp.argmax(logits, axis=-1) == batch["label"]
    metrics = {"loss": loss, "train_accuracy": jnp.mean(correct.astype(jnp.float32))}
    return loss, (metrics, mutated["batch_stats"])


def train_step(
    state: TrainState,
    batch: Batch,
    class_tokens: Batch,
    base_rng: jax.Array,
    *,
    model: PoseConv3D,
    opts: steps.StepOptions,
    schedule: optax.Schedule,
) -> tuple[TrainState, dict[str, jax.Array]]:
    """One SGD step on a global batch (`class_tokens` unused: the labels are the targets); pure, so it jits,
    shards and resumes exactly."""
    del class_tokens
    rng = jax.random.fold_in(base_rng, state.step)
    grad_fn = jax.value_and_grad(compute_loss, has_aux=True)
    (_, (metrics, batch_stats)), grads = grad_fn(
        state.params, state.batch_stats, batch, rng, model=model, opts=opts
    )
    new_state = state.apply_gradients(grads=grads, batch_stats=batch_stats)
    # A parameter average (optim.ema_decay), kept as the SkeletonCLIP++ step keeps it.
    if getattr(new_state, "ema", None) is not None:
        current = {"params": new_state.params, "batch_stats": new_state.batch_stats}
        new_state = new_state.replace(
            ema=steps.ema_update(new_state.ema, current, state.step, opts.ema_decay)
        )
    metrics["grad_norm"] = optax.tree.norm(grads)
    metrics["learning_rate"] = schedule(state.step)
    return new_state, metrics


def encode_classes(state: TrainState, class_tokens: Batch) -> jax.Array:
    """The class indices [L]: a classifier has no class features to compute."""
    del state
    return class_tokens["class_index"]


def view_logits(
    state: TrainState,
    keypoint: jax.Array,
    score: jax.Array,
    *,
    model: PoseConv3D,
    opts: steps.StepOptions,
) -> tuple[jax.Array, int]:
    """Logits [F * V, L] of V test views [V, M, T, K, 2] (F = 2 with test_flip, flipped last) and the number of
    time steps T' of the backbone's output."""
    variables = {"params": state.params, "batch_stats": state.batch_stats}
    volume = steps.view_volumes(keypoint, score, opts)
    feature_map = model.apply(variables, volume, False, method=PoseConv3D.encode)
    logits = model.apply(variables, feature_map, False, method=PoseConv3D.classify)
    return logits, feature_map.shape[1]


def eval_step(
    state: TrainState,
    batch: Batch,
    class_feats: jax.Array,
    *,
    model: PoseConv3D,
    opts: steps.StepOptions,
) -> dict[str, jax.Array]:
    """Class probabilities [B, L] of B videos: each of the N test views (and its flip) softmaxed, then averaged
    (PYSKL's ``average_clips='prob'``); with the per-view logits, labels and mask, as `steps.eval_step`."""
    del class_feats
    keypoint, score = batch["keypoint"], batch["keypoint_score"]
    b, n = keypoint.shape[:2]
    logits, _ = view_logits(
        state,
        keypoint.reshape((b * n,) + keypoint.shape[2:]),
        score.reshape((b * n,) + score.shape[2:]),
        model=model,
        opts=opts,
    )
    logits = logits.reshape(-1, b, n, logits.shape[-1])  # [F, B, N, L]
    probs = jnp.mean(jax.nn.softmax(logits, axis=-1), axis=(0, 2))
    per_view = jnp.moveaxis(logits, 0, 1).reshape(b, -1, logits.shape[-1])
    return {"probs": probs, "logits": per_view, "label": batch["label"], "mask": batch["mask"]}


def compile_steps(
    model: PoseConv3D,
    opts: steps.StepOptions,
    schedule: optax.Schedule,
    mesh: Mesh,
    state_shardings,
) -> steps.CompiledSteps:
    """jit once, as `steps.compile_steps`: batch split over the mesh, state as created, donated state."""
    batch_spec = sharding.batch_sharding(mesh)
    rep = sharding.replicated(mesh)
    train = jax.jit(
        functools.partial(train_step, model=model, opts=opts, schedule=schedule),
        in_shardings=(state_shardings, batch_spec, rep, rep),
        out_shardings=(state_shardings, rep),
        donate_argnums=0,
    )
    classes = jax.jit(encode_classes, in_shardings=(state_shardings, rep), out_shardings=rep)
    evaluate = jax.jit(
        functools.partial(eval_step, model=model, opts=opts),
        in_shardings=(state_shardings, batch_spec, rep),
        out_shardings=rep,
    )
    return steps.CompiledSteps(train=train, encode_classes=classes, eval=evaluate)


def score_clip(state, keypoint, keypoint_score, class_feats, *, model, opts):
    """`api.score_clip` for the classifier: (logits [views, L] of the views and flips, frame weights [L, T'],
    temperature 1: its logits are the head's).

    The head pools every time step equally, so each class's frame weights are uniform, 1 / T'.
    """
    del class_feats
    logits, frames = view_logits(state, keypoint, keypoint_score, model=model, opts=opts)
    weights = jnp.full((logits.shape[-1], frames), 1.0 / frames, jnp.float32)
    return logits, weights, jnp.ones((), jnp.float32)


@dataclasses.dataclass
class TrainedClassifier(api.TrainedModel):
    """A restored PoseConv3D run for `predict` and the API: it ranks the classes it was trained on, no others."""

    def set_classes(
        self, class_names: Sequence[str], descriptions: dict[str, list[str]] | None = None
    ):
        del descriptions
        if tuple(class_names) != self.run_classes:
            raise api.PredictError(
                f"a poseconv3d run (a linear head over its {len(self.run_classes)} training classes) ranks "
                "only its own classes: drop --classes / --classes_file (API: classes=None)"
            )
        self.class_names = self.run_classes


def trained_classifier(
    config, parts, state: TrainState, step: int, run_classes: Sequence[str]
) -> TrainedClassifier:
    """The restored classifier with its jitted scorer, set to its own classes."""
    opts = steps.StepOptions.from_config(config)
    run_classes = tuple(run_classes)
    return TrainedClassifier(
        config,
        state,
        step,
        scorer=jax.jit(functools.partial(score_clip, model=parts.model, opts=opts)),
        encode=None,
        tokenizer=None,
        model=parts.model,
        opts=opts,
        class_names=run_classes,
        run_classes=run_classes,
    )
