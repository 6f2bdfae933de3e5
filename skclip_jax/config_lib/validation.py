"""Up-front checks of a config, so a typo fails in a second with the field's name instead of an hour in.

Every problem names the field, the bad value and a fix; all problems are reported in one ValueError.
Checks that need the filesystem or the device count (directories exist, batch divides the mesh) live
in the driver, which knows both.
"""

from collections.abc import Callable, Sequence
from typing import Any

import ml_collections

from skclip_jax.models.batch_norm import BATCH_NORM_IMPLS
from skclip_jax.models.classifier import CLASSIFIER_KIND, MODEL_KINDS
from skclip_jax.models.conv_impl import CONV_IMPLS
from skclip_jax.models.patch_stem import STEM_IMPLS, unsupported_reason

MAPPINGS = ("linear", "residual")
MATCH_HEADS = ("linear", "mlp")
ACTIVATIONS = ("softmax", "sigmoid", "mean")
TEXT_REGIMES = ("finetune", "frozen", "random")
SSM_TARGETS = ("batch", "all_classes")
CSI_NEGATIVES = ("argmax", "sample")
DTYPES = ("float32", "bfloat16")


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _is_number(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool)


class _Checker:
    """Collects problems: each names the field, its value, what is wrong and a fix."""

    def __init__(self, config: ml_collections.ConfigDict):
        self.config = config
        self.problems: list[str] = []

    def get(self, path: str) -> Any:
        node = self.config
        for name in path.split("."):
            node = node[name]
        return node

    def bad(self, path: str, problem: str, fix: str) -> None:
        try:
            value = repr(self.get(path))
        except (KeyError, AttributeError):
            value = "<missing>"
        self.problems.append(f"config.{path}={value}: {problem}. Fix: {fix}")

    def check(self, path: str, ok: Callable[[Any], bool], problem: str, fix: str) -> None:
        try:
            value = self.get(path)
        except (KeyError, AttributeError):
            self.problems.append(
                f"config.{path} is missing. Fix: start from skclip_jax/config_lib/default.py"
            )
            return
        try:
            valid = ok(value)
        except (TypeError, ValueError):
            valid = False
        if not valid:
            self.bad(path, problem, fix)

    def positive_int(self, path: str, example: int) -> None:
        self.check(
            path,
            lambda v: _is_int(v) and v > 0,
            "must be a positive integer",
            f"--config.{path}={example}",
        )

    def one_of(self, path: str, choices: Sequence[str]) -> None:
        self.check(
            path,
            lambda v: v in choices,
            f"must be one of {list(choices)}",
            f"--config.{path}={choices[0]}",
        )

    def nonempty_str(self, path: str, fix: str) -> None:
        self.check(path, lambda v: isinstance(v, str) and v.strip() != "", "must not be empty", fix)

    def nonzero_period(self, path: str) -> None:
        self.check(
            path,
            lambda v: _is_int(v) and v != 0,
            "must be a positive number of steps, or -k for every k epochs, not 0",
            f"--config.{path}=100 (or -1 for once per epoch, -5 for every 5 epochs)",
        )


def _data(c: _Checker) -> None:
    """The dataset, clip sampling, augmentation and prompt fields."""
    c.nonempty_str(
        "data.data_dir",
        "--config.data.data_dir=DIR, the --out_dir of a data_prep converter",
    )
    c.nonempty_str("data.train_split", "--config.data.train_split=train (a split of the dataset)")
    c.nonempty_str("data.test_split", "--config.data.test_split=test (a split of the dataset)")
    c.positive_int("data.clip_len", 48)
    c.positive_int("data.num_persons", 2)
    c.positive_int("data.num_keypoints", 17)
    c.positive_int("data.train_size", 56)
    c.positive_int("data.test_size", 64)
    c.positive_int("data.short_side", 64)
    c.positive_int("data.num_test_clips", 10)
    c.positive_int("data.repeat", 1)
    c.positive_int("data.max_text_len", 10)
    c.check(
        "data.num_workers",
        lambda v: _is_int(v) and v >= 0,
        "must be >= 0",
        "--config.data.num_workers=0 (in-process)",
    )
    if "device_prefetch" in c.config.data:  # absent from the configs that runs before it saved
        c.check(
            "data.device_prefetch",
            lambda v: _is_int(v) and v >= 0,
            "must be >= 0 (global batches placed on the devices ahead of the step)",
            "--config.data.device_prefetch=2",
        )
    c.check(
        "data.sigma",
        lambda v: _is_number(v) and v > 0,
        "the heatmap Gaussian's sigma must be > 0",
        "--config.data.sigma=0.6",
    )
    c.check(
        "data.flip_ratio",
        lambda v: _is_number(v) and 0 <= v <= 1,
        "is a probability, must lie in [0, 1]",
        "--config.data.flip_ratio=0.5",
    )
    c.check(
        "data.crop_area",
        lambda v: len(v) == 2 and 0 < v[0] <= v[1] <= 1,
        "must be (lo, hi) with 0 < lo <= hi <= 1 (fractions of the area)",
        "--config.data.crop_area='(0.56, 1.0)'",
    )
    c.check(
        "data.prompt_template",
        lambda v: isinstance(v, str) and "{}" in v,
        "must contain '{}' where the class name goes",
        "--config.data.prompt_template='{}' or 'a person {}'",
    )


def _open_vocabulary(c: _Checker) -> None:
    """Prompt ensembles, zero-shot splits and GZSL calibration (older saved configs may lack them)."""
    if "prompt_templates" in c.config.data:
        c.check(
            "data.prompt_templates",
            lambda v: all(isinstance(t, str) and "{}" in t for t in (v or ())),
            "every template must be a string with '{}' where the class name goes",
            "--config.data.prompt_templates=\"('a person {}.', '{}')\" (or () for prompt_template alone)",
        )
    if "unseen_classes" in c.config.data:
        c.check(
            "data.unseen_classes",
            lambda v: all(
                (isinstance(c, str) and c.strip()) or (_is_int(c) and c >= 0) for c in (v or ())
            ),
            "must list class names or 0-based class indices",
            "--config.data.unseen_classes=\"('squat', 'pushup')\" or '(3, 5)'",
        )

    if "calibration_percent" in c.config.data:
        c.check(
            "data.calibration_percent",
            lambda v: _is_int(v) and 0 <= v < 50,
            "must be an integer percent of the training split in [0, 50)",
            "--config.data.calibration_percent=10 (0: no GZSL calibration split)",
        )
        c.check(
            "data.calibration_keep_seen",
            lambda v: _is_number(v) and 0 < v < 1,
            "must be a fraction in (0, 1) of held-out seen clips that calibration keeps seen",
            "--config.data.calibration_keep_seen=0.95",
        )


def _video_tower(c: _Checker) -> None:
    """SlowOnly's architecture and its kernel choices."""
    s = "model.slowonly"
    c.positive_int(f"{s}.in_channels", 17)
    c.positive_int(f"{s}.base_channels", 32)
    c.check(
        f"{s}.stage_blocks",
        lambda v: len(v) > 0 and all(_is_int(b) and b > 0 for b in v),
        "must be a non-empty tuple of positive block counts",
        f"--config.{s}.stage_blocks='(4, 6, 3)'",
    )
    for name in ("inflate", "spatial_strides", "temporal_strides"):
        c.check(
            f"{s}.{name}",
            lambda v: len(v) == len(c.get(f"{s}.stage_blocks")),
            f"needs one entry per stage ({len(c.get(f'{s}.stage_blocks'))}, as stage_blocks)",
            f"give --config.{s}.{name} as many entries as --config.{s}.stage_blocks",
        )
    for name in ("spatial_strides", "temporal_strides"):
        c.check(
            f"{s}.{name}",
            lambda v: all(_is_int(x) and x > 0 for x in v),
            "strides must be positive integers",
            f"--config.{s}.{name}='(1, 1, 2)'",
        )
    c.check(
        f"{s}.conv1_kernel",
        lambda v: len(v) == 3 and all(_is_int(k) and k > 0 for k in v),
        "must be 3 positive sizes (T, H, W)",
        f"--config.{s}.conv1_kernel='(1, 7, 7)'",
    )
    c.one_of(f"{s}.conv_impl", CONV_IMPLS)
    c.one_of(f"{s}.batch_norm_impl", BATCH_NORM_IMPLS)
    # Absent from configs written before the field existed, which mean "conv".
    if "stem_impl" in c.config.model.slowonly:
        c.one_of(f"{s}.stem_impl", STEM_IMPLS)
        if c.config.model.slowonly.stem_impl == "patches":
            try:
                reason = unsupported_reason(
                    c.config.data.with_limb, tuple(c.config.model.slowonly.conv1_kernel)
                )
            except (TypeError, ValueError):
                reason = None  # a malformed conv1_kernel, reported by its own check above
            if reason:
                c.bad(
                    f"{s}.stem_impl",
                    f"'patches' cannot be used: {reason}",
                    f"--config.{s}.stem_impl=conv",
                )
    # Absent from configs written before the field existed, which mean False.
    if "low_memory" in c.config.model.slowonly:
        c.check(
            f"{s}.low_memory",
            lambda v: isinstance(v, bool),
            "must be True or False",
            f"--config.{s}.low_memory=True",
        )


def _text_tower_and_heads(c: _Checker) -> None:
    """The text tower, the joint space, WFI, SSM and CSI."""
    c.nonempty_str(
        "model.text.bert_dir",
        "--config.model.text.bert_dir=pretrained/bert-base-uncased (a local Hugging Face BERT "
        "directory) or minilm",
    )
    c.one_of("model.text.regime", TEXT_REGIMES)
    c.check(
        "model.text.dropout",
        lambda v: _is_number(v) and 0 <= v < 1,
        "must lie in [0, 1)",
        "--config.model.text.dropout=0.1",
    )
    c.positive_int("model.embed_dim", 256)
    c.one_of("model.mapping", MAPPINGS)
    c.one_of("model.activation", ACTIVATIONS)
    c.one_of("model.ssm_targets", SSM_TARGETS)
    c.one_of("model.csi_negatives", CSI_NEGATIVES)
    c.one_of("model.match_head", MATCH_HEADS)
    c.one_of("model.dtype", DTYPES)
    c.check(
        "model.csi",
        lambda v: isinstance(v, bool),
        "must be True or False",
        "--config.model.csi=False",
    )
    c.check(
        "model.csi_weight",
        lambda v: _is_number(v) and v >= 0,
        "must be >= 0",
        "--config.model.csi_weight=1.0 (or --config.model.csi=False to drop CSI)",
    )
    temperature_ok = True
    try:
        lo, hi = (float(t) for t in c.config.model.temperature_range)
        temperature_ok = 0 < lo < hi
    except (TypeError, ValueError):
        temperature_ok = False
    if not temperature_ok:
        c.bad(
            "model.temperature_range",
            "must be (lo, hi) with 0 < lo < hi",
            "--config.model.temperature_range='(0.001, 0.5)'",
        )
    else:
        c.check(
            "model.init_temperature",
            lambda v: _is_number(v) and lo <= v <= hi,
            f"must lie inside model.temperature_range [{lo}, {hi}]",
            f"--config.model.init_temperature=0.07 or widen model.temperature_range (now {(lo, hi)})",
        )


def _model_kind(c: _Checker) -> None:
    """Which network, and the PoseConv3D baseline's own fields (config_lib/poseconv3d.py)."""
    if "kind" not in c.config.model:  # configs saved before the field existed: SkeletonCLIP++
        return
    c.one_of("model.kind", MODEL_KINDS)
    if c.config.model.kind != CLASSIFIER_KIND:
        return
    if "poseconv3d" not in c.config:
        c.bad(
            "model.kind",
            "the PoseConv3D baseline's fields (config.poseconv3d) are missing",
            "use the variant, e.g. --config=configs/hmdb51.py:split1,poseconv3d",
        )
        return
    p = "poseconv3d"
    for name, ok, problem, example in (
        ("dropout", lambda v: 0 <= v < 1, "must lie in [0, 1)", "0.5"),
        ("init_std", lambda v: v > 0, "must be > 0", "0.01"),
        ("momentum", lambda v: 0 <= v < 1, "must lie in [0, 1)", "0.9"),
        ("lr_step_factor", lambda v: 0 < v <= 1, "must lie in (0, 1]", "0.1"),
    ):
        c.check(
            f"{p}.{name}",
            lambda v, ok=ok: _is_number(v) and ok(v),
            problem,
            f"--config.{p}.{name}={example}",
        )
    c.check(
        f"{p}.lr_steps",
        lambda v: all(_is_number(f) and 0 < f <= 1 for f in v) and list(v) == sorted(v),
        "must be increasing fractions of the run in (0, 1] (the points where the rate drops)",
        f"--config.{p}.lr_steps='(0.375, 0.4583)' (epochs 9 and 11 of 24)",
    )
    c.check(
        f"{p}.zero_init_residual",
        lambda v: isinstance(v, bool),
        "must be True or False",
        f"--config.{p}.zero_init_residual=True",
    )
    if "unseen_classes" in c.config.data:
        c.check(
            "data.unseen_classes",
            lambda v: not v,
            "a classifier has no output for a class it never trained on (zero-shot needs class texts)",
            "drop data.unseen_classes, or train SkeletonCLIP++ (no poseconv3d variant)",
        )


def _optimizer(c: _Checker) -> None:
    """The learning rates, parameter groups, decay and clipping."""
    c.check(
        "optim.lr",
        lambda v: _is_number(v) and v > 0,
        "must be > 0",
        "--config.optim.lr=1e-3",
    )
    for group, example in (
        ("video_lr_mult", "1.0"),
        ("text_lr_mult", "0.01 (or model.text.regime=frozen to freeze BERT)"),
        ("crossattn_lr_mult", "0.01"),
        ("encoder_decay_mult", "0.9"),
    ):
        c.check(
            f"optim.{group}",
            lambda v: _is_number(v) and v >= 0,
            "must be >= 0",
            f"--config.optim.{group}={example}",
        )
    c.check(
        "optim.weight_decay",
        lambda v: _is_number(v) and v >= 0,
        "must be >= 0",
        "--config.optim.weight_decay=0.01",
    )
    c.check(
        "optim.clip_norm",
        lambda v: _is_number(v) and v > 0,
        "must be > 0 (clipping to 0 zeroes every gradient)",
        "--config.optim.clip_norm=40",
    )
    c.check(
        "optim.warmup_epochs",
        lambda v: _is_number(v) and v >= 0,
        "must be >= 0",
        "--config.optim.warmup_epochs=2",
    )
    c.check(
        "optim.warmup_ratio",
        lambda v: _is_number(v) and 0 < v <= 1,
        "the warm-up's starting fraction of lr must lie in (0, 1]",
        "--config.optim.warmup_ratio=0.1",
    )
    if "ema_decay" in c.config.optim:  # absent from configs saved before it existed: off
        c.check(
            "optim.ema_decay",
            lambda v: _is_number(v) and 0 <= v < 1,
            "must lie in [0, 1) (0: no parameter averaging)",
            "--config.optim.ema_decay=0.99",
        )
    c.check(
        "optim.min_lr",
        # Compared with lr only when lr itself is valid, so a bad lr is reported once.
        lambda v: _is_number(v) and 0 <= v and not (0 < c.config.optim.lr < v),
        "must lie in [0, optim.lr]",
        "--config.optim.min_lr=0",
    )


def _run(c: _Checker) -> None:
    """Batch sizes, run length and the logging, evaluation and checkpoint cadence."""
    c.positive_int("batch_size", 32)
    c.positive_int("eval_batch_size", 8)
    c.check(
        "model.contrastive_group_size",
        lambda v: (
            _is_int(v)
            and v >= 0
            and (
                not _is_int(c.config.batch_size)
                or v >= c.config.batch_size
                or c.config.batch_size % v == 0
            )
        ),
        "must be 0 or >= batch_size (one group of the whole batch) or a divisor of batch_size "
        f"({c.config.batch_size})",
        "--config.model.contrastive_group_size=16 (the original's per-GPU batch) or 0",
    )
    c.check(
        "total_steps",
        lambda v: _is_int(v) and v != 0,
        "must be > 0, or negative to train for num_epochs",
        "--config.total_steps=-1 (use num_epochs) or a positive step count",
    )
    if _is_int(c.config.get("total_steps")) and c.config.total_steps < 0:
        c.positive_int("num_epochs", 24)
    c.nonzero_period("log_every_steps")
    c.nonzero_period("eval_every_steps")
    c.nonzero_period("checkpoint_every_steps")
    c.positive_int("keep_checkpoints", 2)


def _parallelism(c: _Checker) -> None:
    """The device mesh and parameter sharding."""
    c.check(
        "mesh_shape",
        lambda v: (
            len(v) == 2
            and all(_is_int(x) and (x > 0 or x == -1) for x in v)
            and list(v).count(-1) <= 1
        ),
        "must be 2 entries (data, fsdp), each positive or -1 (at most one -1)",
        "--config.mesh_shape='(-1, 1)' (data parallel) or '(1, -1)' (fsdp)",
    )
    c.check(
        "shard_params",
        lambda v: isinstance(v, bool),
        "must be True or False",
        "--config.shard_params=True",
    )


SECTIONS = (
    _data,
    _open_vocabulary,
    _video_tower,
    _text_tower_and_heads,
    _model_kind,
    _optimizer,
    _run,
    _parallelism,
)


def validate_config(config: ml_collections.ConfigDict) -> None:
    """Raises ValueError listing every invalid field of `config` (see module docstring)."""
    c = _Checker(config)
    for section in SECTIONS:
        section(c)
    if c.problems:
        raise ValueError(
            f"Invalid config ({len(c.problems)} problem(s)):\n  " + "\n  ".join(c.problems)
        )
