"""The one factory: tokenizer, model, optimizer and train state from a config.

Training, `predict`, the Python API and the benchmarks all build through here, so a config means the same model
everywhere.
"""

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging
from flax.training import train_state
from jax.sharding import Mesh

from skclip_jax import classifier_optim, optim, sharding
from skclip_jax.models import classifier, skclip, text


class TrainState(train_state.TrainState):
    batch_stats: Any
    # {"params", "batch_stats"} averaged over the steps (optim.ema_decay > 0), else None.
    ema: Any = None


def ema_enabled(config: ml_collections.ConfigDict) -> bool:
    return config.optim.get("ema_decay", 0.0) > 0


def evaluation_view(state: TrainState) -> TrainState:
    """The state that evaluation, predict and the API score with: the averaged weights where a run keeps them."""
    if state.ema is None:
        return state
    return state.replace(params=state.ema["params"], batch_stats=state.ema["batch_stats"])


def cast_dtype(name: str):
    dtypes = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
    if name not in dtypes:
        raise ValueError(f"model.dtype must be one of {sorted(dtypes)}, got {name!r}")
    return dtypes[name]


def is_classifier(config: ml_collections.ConfigDict) -> bool:
    """model.kind="poseconv3d": the PoseConv3D baseline (models/classifier.py), no text tower."""
    return config.model.get("kind", "skeletonclip") == classifier.CLASSIFIER_KIND


def slowonly_kwargs(config: ml_collections.ConfigDict) -> dict:
    s = config.model.slowonly
    return dict(
        in_channels=s.in_channels,
        base_channels=s.base_channels,
        stage_blocks=tuple(s.stage_blocks),
        inflate=tuple(s.inflate),
        spatial_strides=tuple(s.spatial_strides),
        temporal_strides=tuple(s.temporal_strides),
        conv1_kernel=tuple(s.conv1_kernel),
        conv_impl=s.get("conv_impl", "xla"),
        batch_norm_impl=s.get("batch_norm_impl", "flax"),
        low_memory=s.get("low_memory", False),
    )


def build_classifier(config: ml_collections.ConfigDict, num_classes: int) -> classifier.PoseConv3D:
    c = config.poseconv3d
    return classifier.PoseConv3D(
        slowonly_kwargs=dict(slowonly_kwargs(config), zero_init_residual=c.zero_init_residual),
        num_classes=num_classes,
        dropout=c.dropout,
        init_std=c.init_std,
        dtype=cast_dtype(config.model.dtype),
    )


def build_model(
    config: ml_collections.ConfigDict, bert_config, enc_token_id: int
) -> skclip.SkeletonCLIP:
    return skclip.SkeletonCLIP(
        slowonly_kwargs=slowonly_kwargs(config),
        bert_config=bert_config,
        enc_token_id=enc_token_id,
        embed_dim=config.model.embed_dim,
        mapping=config.model.mapping,
        init_temperature=config.model.init_temperature,
        match_head_kind=config.model.match_head,
        dtype=cast_dtype(config.model.dtype),
    )


def state_init_fn(
    model: skclip.SkeletonCLIP, tx, num_keypoints: int, max_text_len: int, ema: bool = False
):
    """rng -> the initial TrainState (SlowOnly's parameters do not depend on T, H, W: a tiny volume serves)."""

    def init_fn(rng):
        volume = jnp.zeros((1, 4, 16, 16, num_keypoints), jnp.float32)
        ids = jnp.zeros((1, max_text_len), jnp.int32)
        params_rng, dropout_rng = jax.random.split(rng)
        rngs = {"params": params_rng, "dropout": dropout_rng}
        if isinstance(model, classifier.PoseConv3D):  # no text inputs
            variables = model.init(rngs, volume)
        else:
            variables = model.init(rngs, volume, ids, jnp.ones_like(ids))
        return TrainState.create(
            apply_fn=model.apply,
            params=variables["params"],
            tx=tx,
            batch_stats=variables["batch_stats"],
            ema={"params": variables["params"], "batch_stats": variables["batch_stats"]}
            if ema
            else None,
        )

    return init_fn


def create_train_state(
    model: skclip.SkeletonCLIP,
    tx: optax.GradientTransformation,
    mesh: Mesh,
    rng: jax.Array,
    *,
    num_keypoints: int,
    max_text_len: int,
    shard_params: bool = False,
    init_on_host: bool | None = None,
    ema: bool = False,
) -> tuple[TrainState, Any]:
    """Initialises the state with its shardings; returns (state, shardings).

    ``init_on_host`` (default: on every backend but the CPU) runs the init program on the host's CPU and then
    places each leaf on its sharding. The init is ~3,500 small random-number ops that run once: compiling them
    into as many GPU kernels was a large part of a paper-size run's start-up; the host compiles it unoptimised
    far faster (docs/design.md "Start-up"). On the CPU backend the params are born sharded (no host copy).
    Either way the values are the same: threefry random bits do not depend on the backend.
    """

    init_fn = state_init_fn(model, tx, num_keypoints, max_text_len, ema)
    abstract = jax.eval_shape(init_fn, rng)
    shardings = sharding.state_shardings(mesh, abstract, shard_params)
    if init_on_host is None:
        init_on_host = jax.default_backend() != "cpu"
    if not init_on_host:
        lowered = jax.jit(init_fn, out_shardings=shardings).lower(rng)
        options = _RUN_ONCE_CPU_OPTIONS if jax.default_backend() == "cpu" else None
        return _own_ema_buffers(lowered.compile(compiler_options=options)(rng)), shardings
    host = jax.local_devices(backend="cpu")[0]
    host_rng = jax.device_put(rng, host)
    with jax.default_device(host):
        lowered = jax.jit(init_fn).lower(host_rng)
        host_state = lowered.compile(compiler_options=_RUN_ONCE_CPU_OPTIONS)(host_rng)

    def place(leaf, leaf_sharding):
        # Every process computes the same host state, so each fills its own shards (multi-host too).
        value = np.asarray(leaf)
        return jax.make_array_from_callback(value.shape, leaf_sharding, lambda idx: value[idx])

    return _own_ema_buffers(jax.tree.map(place, host_state, shardings)), shardings


def _own_ema_buffers(state: TrainState) -> TrainState:
    """The initial average equals the weights, and XLA may return one buffer for both outputs: the step donates
    the state, and one buffer donated twice is an error, so the average gets copies of its own."""
    if state.ema is None:
        return state
    return state.replace(ema=jax.tree.map(lambda x: x.copy(), state.ema))


# XLA:CPU options for a program that runs once (the init): skip LLVM's optimisation, which costs the init far
# more compile time than it saves run time (docs/design.md "Start-up").
_RUN_ONCE_CPU_OPTIONS = {
    "xla_backend_optimization_level": 0,
    "xla_llvm_disable_expensive_passes": True,
}


@dataclasses.dataclass(frozen=True)
class TextTower:
    """The text side a config names: where its BERT lives, its tokenizer and its architecture."""

    bert_dir: str
    tokenizer: Any
    enc_token_id: int
    bert_config: Any


def load_text_tower(config: ml_collections.ConfigDict) -> TextTower:
    """Resolves `model.text.bert_dir` (a folder or "minilm") and reads its tokenizer and architecture."""
    bert_dir = text.resolve_bert_dir(config.model.text.bert_dir)
    tokenizer, enc_token_id = text.load_tokenizer(bert_dir)
    bert_config = text.bert_config(bert_dir, len(tokenizer), config.model.text.dropout)
    return TextTower(bert_dir, tokenizer, enc_token_id, bert_config)


def make_schedule(
    config: ml_collections.ConfigDict, total_steps: int, steps_per_epoch: int
) -> optax.Schedule:
    """The config's learning-rate schedule over a run of `total_steps` (warm-up given in epochs)."""
    warmup = int(round(config.optim.warmup_epochs * steps_per_epoch))
    return optim.learning_rate_schedule(
        config.optim.lr, total_steps, warmup, config.optim.warmup_ratio, config.optim.min_lr
    )


@dataclasses.dataclass(frozen=True)
class Parts:
    """What a config builds before any state exists: text tower, model, schedule and optimizer."""

    text: TextTower | None  # None for the classifier (model.kind="poseconv3d")
    model: skclip.SkeletonCLIP | classifier.PoseConv3D
    schedule: optax.Schedule
    tx: optax.GradientTransformation


def build(
    config: ml_collections.ConfigDict,
    *,
    total_steps: int = 1,
    steps_per_epoch: int = 1,
    tower: TextTower | None = None,
    num_classes: int | None = None,
) -> Parts:
    """Text tower, model, schedule and optimizer of a config. Restoring callers (predict, the API) may leave
    the run length at its default: only the optimizer state's structure matters to them. `tower`: one already
    loaded (training reads the tokenizer first, to count its steps). `num_classes`: the classifier's outputs
    (model.kind="poseconv3d", which loads no text tower); unused by SkeletonCLIP++."""
    if is_classifier(config):
        if num_classes is None:
            raise ValueError("model.kind='poseconv3d' needs num_classes to build its head")
        model = build_classifier(config, num_classes)
        schedule = classifier_optim.make_schedule(config, total_steps, steps_per_epoch)
        return Parts(None, model, schedule, classifier_optim.make_optimizer(config, schedule))
    tower = tower or load_text_tower(config)
    model = build_model(config, tower.bert_config, tower.enc_token_id)
    schedule = make_schedule(config, total_steps, steps_per_epoch)
    return Parts(tower, model, schedule, optim.make_optimizer(config, schedule))


def init_state(
    parts: Parts,
    config: ml_collections.ConfigDict,
    mesh: Mesh,
    *,
    load_pretrained: bool = True,
) -> tuple[TrainState, Any]:
    """The initial state (seeded by `config.seed`) with its shardings; the pretrained BERT grafted in unless
    `load_pretrained` is False (a restored state will replace the weights) or the text regime is "random"."""
    state, shardings = create_train_state(
        parts.model,
        parts.tx,
        mesh,
        jax.random.key(config.seed),
        num_keypoints=config.model.slowonly.in_channels,
        max_text_len=config.data.max_text_len,
        shard_params=config.shard_params,
        ema=ema_enabled(config),
    )
    if load_pretrained and parts.text is not None and config.model.text.regime != "random":
        pretrained = text.load_checkpoint_params(parts.text.bert_dir)
        params = dict(jax.device_get(state.params))
        params["text_encoder"], kept_random = text.graft_pretrained(
            params["text_encoder"], pretrained
        )
        logging.info(
            "Loaded pretrained BERT from %s (%d leaves kept from init)",
            parts.text.bert_dir,
            len(kept_random),
        )
        state = state.replace(params=jax.device_put(params, shardings.params))
        if state.ema is not None:  # the average starts from the same (pretrained) weights
            ema = {"params": state.params, "batch_stats": state.ema["batch_stats"]}
            state = _own_ema_buffers(state.replace(ema=ema))
    return state, shardings


def abstract_state(
    parts: Parts, config: ml_collections.ConfigDict, mesh: Mesh
) -> tuple[TrainState, Any]:
    """The state's shapes and shardings without computing it: the target a checkpoint restores into."""
    init = state_init_fn(
        parts.model,
        parts.tx,
        config.model.slowonly.in_channels,
        config.data.max_text_len,
        ema_enabled(config),
    )
    abstract = jax.eval_shape(init, jax.random.key(0))
    return abstract, sharding.state_shardings(mesh, abstract, config.shard_params)
