"""The optimizer: the original's learning-rate schedule, parameter groups, gradient clipping and AdamW."""

import functools

import jax
import jax.numpy as jnp
import ml_collections
import optax


def learning_rate_schedule(
    base_lr: float, total_steps: int, warmup_steps: int, warmup_ratio: float, min_lr: float = 0.0
) -> optax.Schedule:
    """The original's mmcv schedule: cosine from base_lr to min_lr over all steps; the linear warm-up scales it.

    During warm-up lr = cosine(step) * (1 - (1 - step / warmup_steps) * (1 - warmup_ratio)).
    """

    def schedule(step):
        step = jnp.asarray(step, jnp.float32)
        progress = jnp.clip(step / max(total_steps, 1), 0.0, 1.0)
        lr = min_lr + (base_lr - min_lr) * 0.5 * (1.0 + jnp.cos(jnp.pi * progress))
        if warmup_steps > 0:
            factor = 1.0 - (1.0 - step / warmup_steps) * (1.0 - warmup_ratio)
            lr = jnp.where(step < warmup_steps, lr * factor, lr)
        return lr

    return schedule


# Optimiser parameter groups: the two encoders, BERT's new cross-attention layers, and everything else (the
# joint-space projections, the fusion projection, the match head and the temperature), which trains at the base lr.
PARAM_GROUPS = ("video", "text", "crossattn", "head")


def param_group_labels(params, text_regime: str):
    """'video' | 'text' | 'crossattn' | 'head' | 'frozen' per leaf.

    BERT's cross-attention layers are new (no checkpoint has them), so they are a group of their own
    (`optim.crossattn_lr_mult`); `text_regime="frozen"` freezes BERT's pretrained weights but not them.
    """

    def label(path, _):
        names = [getattr(k, "key", str(k)) for k in path]
        if names[0] == "video_encoder":
            return "video"
        if names[0] != "text_encoder":
            return "head"
        if any("crossattention" in n for n in names):
            return "crossattn"
        return "frozen" if text_regime == "frozen" else "text"

    return jax.tree_util.tree_map_with_path(label, params)


def group_multipliers(optim: ml_collections.ConfigDict) -> dict[str, tuple[float, float]]:
    """(lr multiplier, weight-decay multiplier) of each group, from the `optim` fields.

    As mmcv's `paramwise_cfg`: a group's lr is `optim.lr * lr_mult` and its decay `optim.weight_decay *
    decay_mult`; the original trains the cross-attention layers as part of BERT (crossattn_lr_mult =
    text_lr_mult) and decays both encoders with `encoder_decay_mult`.
    """
    decay = optim.encoder_decay_mult
    return {
        "video": (optim.video_lr_mult, decay),
        "text": (optim.text_lr_mult, decay),
        "crossattn": (optim.crossattn_lr_mult, decay),
        "head": (1.0, 1.0),
    }


def _decay_mask(params):
    # The temperature is a scale, not a weight: decaying it towards 0 would sharpen the logits for no reason.
    return jax.tree_util.tree_map_with_path(
        lambda path, _: getattr(path[-1], "key", None) != "temperature", params
    )


def clip_by_global_norm(max_norm: float) -> optax.GradientTransformation:
    """``g * min(1, max_norm / ||g||)`` over the whole tree: one scalar multiply per element, as PyTorch's
    ``clip_grad_norm_`` (the original's).

    Why not ``optax.clip_by_global_norm``: it selects per element between ``g`` and ``g / ||g|| * max_norm``, a
    division that XLA:CPU computes inside both Adam moment fusions. The paper-size update (140 M parameters,
    clipping + AdamW, donated) took 262 ms with it and 136 ms with this on the 2-core CPU; the values agree to
    float rounding (tests/test_schedule_sharding.py).
    """

    def update(updates, state, params=None):
        del params
        scale = jnp.minimum(1.0, max_norm / optax.tree.norm(updates))
        return jax.tree.map(lambda g: g * scale.astype(g.dtype), updates), state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def gradient_clipping(config: ml_collections.ConfigDict) -> optax.GradientTransformation:
    """Global-norm clipping at `optim.clip_norm` over the trainable parameters only.

    Frozen gradients are zeroed first, so, as PyTorch's `clip_grad_norm_` over the parameters that require
    grad, a frozen BERT does not shrink the clip scale of everything else.
    """
    labels = functools.partial(param_group_labels, text_regime=config.model.text.regime)

    def frozen_mask(params):
        return jax.tree.map(lambda label: label == "frozen", labels(params))

    return optax.chain(
        optax.masked(optax.set_to_zero(), frozen_mask),
        clip_by_global_norm(config.optim.clip_norm),
    )


def make_optimizer(
    config: ml_collections.ConfigDict, schedule: optax.Schedule
) -> optax.GradientTransformation:
    """`gradient_clipping`, then AdamW per parameter group (`group_multipliers`); frozen leaves get no update."""
    optim = config.optim
    labels = functools.partial(param_group_labels, text_regime=config.model.text.regime)

    def adamw(lr_mult, decay_mult):
        return optax.adamw(
            lambda step: schedule(step) * lr_mult,
            weight_decay=optim.weight_decay * decay_mult,
            mask=_decay_mask,
        )

    transforms = {name: adamw(*mults) for name, mults in group_multipliers(optim).items()}
    transforms["frozen"] = optax.set_to_zero()
    return optax.chain(gradient_clipping(config), optax.multi_transform(transforms, labels))
