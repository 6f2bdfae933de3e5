"""Variants shared by every dataset config: `--config=configs/ucf101.py:split2,cpu,nocsi`.

A config's argument is a comma-separated list of variant names. Each dataset file contributes its own
variants (splits, `cpu`) and every file accepts the paper's ablations below. Variants that set the same
field belong to one group, and at most one per group may be given, so `sigmoid,nowfi` is an error
rather than "whichever came last". Variants are applied in registry order, never in the order typed,
so `cpu,nocsi` and `nocsi,cpu` give the same config.
"""

import dataclasses
import os
from collections.abc import Callable, Mapping

import ml_collections

from skclip_jax.config_lib import default, poseconv3d

# Full-size configs use BERT-base, as the paper. The directory must hold a Hugging Face
# bert-base-uncased export (config.json, vocab.txt, flax_model.msgpack or model.safetensors); a relative
# path is relative to the working directory, i.e. the repo root. SKCLIP_BERT_BASE overrides it, which
# suits clusters where the weights live on a shared filesystem; the value ends up in the saved config.
BERT_BASE_ENV = "SKCLIP_BERT_BASE"
BERT_BASE_DIR = "pretrained/bert-base-uncased"
# The offline default: all-MiniLM-L6-v2, shipped with the environment (see skclip_jax/config_lib/default.py).
MINILM = "minilm"


def bert_base_dir() -> str:
    return os.environ.get(BERT_BASE_ENV) or BERT_BASE_DIR


@dataclasses.dataclass(frozen=True)
class Variant:
    """One named edit of a config; at most one variant per `group` may be requested."""

    apply: Callable[[ml_collections.ConfigDict], None]
    group: str | tuple[str, ...]  # the field group(s) it sets; two variants may not share one.
    help: str

    @property
    def groups(self) -> tuple[str, ...]:
        return (self.group,) if isinstance(self.group, str) else tuple(self.group)


def set_fields(**fields) -> Callable[[ml_collections.ConfigDict], None]:
    """A variant body that sets dotted fields, e.g. set_fields(**{"model.csi": False})."""

    def apply(config: ml_collections.ConfigDict) -> None:
        for dotted, value in fields.items():
            *parents, leaf = dotted.split(".")
            node = config
            for name in parents:
                node = node[name]
            node[leaf] = value

    return apply


def base_config(dataset: str, data_dir: str) -> ml_collections.ConfigDict:
    """skclip_jax/config_lib/default.py with the dataset's name and directory, and the paper's BERT-base text tower."""
    config = default.get_config()
    config.data.dataset = dataset
    config.data.data_dir = data_dir
    config.model.text.bert_dir = bert_base_dir()
    return config


# BERT and its cross-attention in the cpu recipe: x0.01 of the base lr.
CPU_TEXT_LR_MULT = 0.01


def shrink_for_cpu(config: ml_collections.ConfigDict) -> None:
    """The same pipeline and losses, sized for a 2-core laptop: short clips, small volumes, tiny nets.

    Every number is a plain field, so a run can be retuned from the command line
    (`--config.data.clip_len=24`) without touching this file.
    """
    config.data.clip_len = 16
    config.data.train_size = 32
    config.data.test_size = 32
    # The original resizes the short side to 64 before cropping to 56; keep that ratio.
    config.data.short_side = 36
    config.data.num_test_clips = 2
    config.model.slowonly.base_channels = 16
    config.model.slowonly.stage_blocks = (1, 1, 1)
    # GEMM convolutions on CPU (XLA's conv op elsewhere): the 7x7 stem is most of a small net's time.
    config.model.slowonly.conv_impl = "auto"
    config.model.text.bert_dir = MINILM
    config.model.embed_dim = 128
    config.batch_size = 16
    config.eval_batch_size = 16
    config.log_every_steps = 10
    # The schedule is counted in passes over the user's training split, not in the paper's 24 epochs x 10
    # repeats (~15,000 steps for 1,000 clips): 10 passes of a ~1,000-clip set is ~630 steps, ~25 min at
    # ~8 clips/s on 2 cores. The plan (steps, passes) is printed at start, the expected time after 2 logs.
    config.data.repeat = 1
    config.num_epochs = 10
    config.optim.warmup_epochs = 1.0
    # A few hundred steps from scratch: base lr 3e-3 (heads, projections, temperature; BERT and its
    # cross-attention at x0.01 of it) and the video tower at x3 (9e-3). On the demo's validation split
    # these learn SSM and CSI far sooner than the itm recipe's 1e-3 / x1 (docs/design.md, "Making CSI
    # learn"). Every rate is set here, so a dataset's full-size recipe (HMDB-51 and UCF-101 train BERT at
    # x1, the pacl recipe) never leaks into its cpu variant: BERT at x1 of 3e-3 keeps CSI at its prior.
    config.optim.lr = 3e-3
    config.optim.video_lr_mult = 3.0
    config.optim.text_lr_mult = CPU_TEXT_LR_MULT
    config.optim.crossattn_lr_mult = CPU_TEXT_LR_MULT
    # Evaluated half-way and after the last step (the trainer always evaluates at the end): an evaluation
    # of the whole test split costs as much as tens of training steps on a CPU.
    config.eval_every_steps = -5
    config.checkpoint_every_steps = -5
    # BERT dropout off: CSI's video evidence enters the pretrained BERT as a small perturbation of its
    # residual stream, and dropout 0.1 hides it for hundreds of steps (docs/design.md, "Making CSI learn").
    config.model.text.dropout = 0.0


VALIDATION_PERCENT = 15


def validation_split(config: ml_collections.ConfigDict) -> None:
    """Trains on the first 85 % of the training split and evaluates on the last 15 % (TFDS slice specs).

    Hyperparameters are chosen on this split, never on the test split whose figure is reported. The
    converters write through TFDS, which orders a split by hashed example keys, so a contiguous slice is a
    random sample of clips. Applied after the
    dataset's own variants (`split2,val` carves from train2); a command-line --config.data.train_split
    comes later, so give the slices directly then: --config.data.train_split='train[:85%]'.
    """
    train = config.data.train_split
    config.data.train_split = f"{train}[:{100 - VALIDATION_PERCENT}%]"
    config.data.test_split = f"{train}[{100 - VALIDATION_PERCENT}%:]"


def three_split_variants() -> dict[str, Variant]:
    """HMDB-51 and UCF-101's official splits: PYSKL names them train1/test1 .. train3/test3."""

    def split(n: int) -> Variant:
        return Variant(
            set_fields(**{"data.train_split": f"train{n}", "data.test_split": f"test{n}"}),
            "split",
            f"official split {n} (train{n} / test{n})",
        )

    return {f"split{n}": split(n) for n in (1, 2, 3)}


def itm_recipe(config: ml_collections.ConfigDict) -> None:
    """The original's NTU-60 and CSI (`*-itm.py`) optimiser: AdamW lr 1e-3, video x1, BERT x0.01, decay x0.9."""
    optim = config.optim
    optim.lr, optim.video_lr_mult, optim.encoder_decay_mult = 1e-3, 1.0, 0.9
    optim.text_lr_mult = optim.crossattn_lr_mult = 0.01


def pacl_recipe(config: ml_collections.ConfigDict) -> None:
    """The original's HMDB-51 / UCF-101 WFI (`*-pacl.py`, `*-raw.py`) optimiser: lr 3.33e-5, video x100, BERT x1."""
    optim = config.optim
    optim.lr, optim.video_lr_mult, optim.encoder_decay_mult = 3.33e-5, 100.0, 0.9
    optim.text_lr_mult = optim.crossattn_lr_mult = 1.0


CPU = Variant(shrink_for_cpu, "size", "laptop-sized run (2 CPU cores): 16 frames, 32x32, MiniLM")


# The paper's ablations (Tables 1-3, section 4.3.3) and the engineering switches; usable with any
# dataset config.
ABLATIONS: dict[str, Variant] = {
    "residual": Variant(
        set_fields(**{"model.mapping": "residual"}),
        "mapping",
        "Table 1: residual non-linear mapping of the frames (the text side stays linear)",
    ),
    "sigmoid": Variant(
        set_fields(**{"model.activation": "sigmoid"}),
        "activation",
        "Table 1: sigmoid frame weights instead of softmax",
    ),
    "nowfi": Variant(
        set_fields(**{"model.activation": "mean"}),
        "activation",
        "Table 2: WFI off (frame features averaged)",
    ),
    "nocsi": Variant(set_fields(**{"model.csi": False}), "csi", "Table 3: no CSI matching task"),
    "bert_random": Variant(
        set_fields(**{"model.text.regime": "random"}),
        "text_regime",
        "4.3.3: BERT architecture without pre-trained weights",
    ),
    "bert_frozen": Variant(
        set_fields(**{"model.text.regime": "frozen"}),
        "text_regime",
        "4.3.3: pre-trained BERT, frozen",
    ),
    "bert_finetune": Variant(
        set_fields(**{"model.text.regime": "finetune"}),
        "text_regime",
        "4.3.3: pre-trained BERT, fine-tuned at lr x optim.text_lr_mult (the default)",
    ),
    "bf16": Variant(
        set_fields(**{"model.dtype": "bfloat16"}), "dtype", "bfloat16 compute, float32 params"
    ),
    "allclasses": Variant(
        set_fields(**{"model.ssm_targets": "all_classes"}),
        "ssm_targets",
        "SSM targets over every class prompt instead of the batch's own prompts",
    ),
    "original_final": Variant(
        set_fields(
            **{
                "model.ssm_targets": "all_classes",
                "model.activation": "sigmoid",
                "model.mapping": "residual",
                "model.csi": False,
            }
        ),
        ("ssm_targets", "activation", "mapping", "csi"),
        "the original code's last variant: all-class targets, sigmoid WFI, residual video mapping, no CSI",
    ),
    "itm_recipe": Variant(
        itm_recipe,
        "recipe",
        "optimiser of the original's NTU-60 and CSI runs (lr 1e-3, BERT x0.01)",
    ),
    "pacl_recipe": Variant(
        pacl_recipe,
        "recipe",
        "optimiser of the original's HMDB-51/UCF-101 WFI runs (lr 3.33e-5, video x100, BERT x1)",
    ),
    "sample_negatives": Variant(
        set_fields(**{"model.csi_negatives": "sample"}),
        "csi_negatives",
        "CSI negatives sampled by similarity (the original code) instead of argmax (paper)",
    ),
    "val": Variant(
        validation_split,
        "validation",
        "tune on a validation split: the last 15 % of the training split (TFDS slice), trained on the rest",
    ),
    "fsdp": Variant(
        set_fields(**{"mesh_shape": (1, -1), "shard_params": True}),
        "mesh",
        "all devices on the fsdp axis, parameters and optimizer state sharded",
    ),
    "poseconv3d": Variant(
        poseconv3d.apply,
        ("model_kind", "recipe"),
        "Table 4's PoseConv3D baseline: SlowOnly + linear head, cross-entropy, SGD 0.01 with step decay "
        "(config_lib/poseconv3d.py); a size variant's sizes are kept",
    ),
}


def benchmark_splits(name: str) -> Variant:
    """A named benchmark of a PYSKL pickle: trains on `<name>_train`, tests on `<name>_val` (NTU's xsub, ...)."""
    return Variant(
        set_fields(**{"data.train_split": f"{name}_train", "data.test_split": f"{name}_val"}),
        "split",
        f"cross-{name[1:]} benchmark ({name}_train / {name}_val)",
    )


def parse_variants(arg: str | None) -> list[str]:
    """'split2, cpu,' -> ['split2', 'cpu']; None or '' -> []."""
    if not arg:
        return []
    return [name.strip() for name in arg.split(",") if name.strip()]


def apply_variants(
    config: ml_collections.ConfigDict, arg: str | None, variants: Mapping[str, Variant]
) -> ml_collections.ConfigDict:
    """Applies the comma-separated variants in `arg`, drawn from `variants` plus ABLATIONS.

    Raises:
      ValueError: for an unknown name (listing the valid ones), a repeated name, or two variants of
        one group (e.g. split1,split2 or sigmoid,nowfi).
    """
    registry = {**variants, **ABLATIONS}
    names = parse_variants(arg)
    unknown = [n for n in names if n not in registry]
    if unknown:
        raise ValueError(
            f"Unknown config variant(s) {unknown} in {arg!r}. Valid variants: "
            f"{', '.join(registry)}. Combine them with commas, e.g. 'split2,cpu,nocsi'."
        )
    by_group: dict[str, str] = {}
    for name in names:
        for group in registry[name].groups:
            other = by_group.setdefault(group, name)
            if other != name or names.count(name) > 1:
                raise ValueError(
                    f"Config variants {other!r} and {name!r} in {arg!r} both set "
                    f"{group!r}; give at most one of them."
                )
    for name, variant in registry.items():
        if name in names:
            variant.apply(config)
    return config
