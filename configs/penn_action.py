"""Penn Action (15 sports classes, human-annotated 13-joint 2D poses mapped to COCO-17).

Not in the paper; it is the dataset we can train and test on end to end on a CPU. One person per
clip, so data.num_persons is 1. Splits are the official per-clip flag: `train` (1258) / `test` (1068).
data.data_dir is the converter's --out_dir:
  python -m data_prep.penn_action --labels_dir=Penn_Action/labels --out_dir=data/penn_action

Usage: `--config=configs/penn_action.py[:variant,...]`; variants: `cpu` and the ablations in
configs/variants.py. `cpu` targets <= 30 min on 2 CPU cores and >= 80 % top-1 on the test split; its
sizes are plain fields below so they can be retuned from the command line.
"""

import os
import sys

# Loaded by path by config_flags: make `configs` importable from any working directory.
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

import ml_collections  # noqa: E402

from configs import variants  # noqa: E402


def shrink_for_cpu(config: ml_collections.ConfigDict) -> None:
    """The shared laptop sizes, and a schedule counted in passes over Penn Action's 1258 clips.

    Budget, measured with the SlowOnly alone (fwd + bwd, batch 16 of 16 x 32 x 32 volumes, base 16,
    blocks (1, 1, 1)): ~1.5-3.5 s a step on 2 busy CPU cores, the 7x7 stem convolution dominating.
    30 min is thus ~1000 steps including evaluation: 12 passes of 78 steps, evaluated every 4.
    """
    variants.shrink_for_cpu(config)
    config.data.repeat = 1
    config.num_epochs = 12
    config.optim.warmup_epochs = 1.0
    # An eval is 1068 clips x 2 views; every 4 passes (4 x 78 steps) keeps it a small share of the
    # run. The trainer always evaluates after the last step too.
    config.eval_every_steps = 312
    config.checkpoint_every_steps = 312


VARIANTS = {
    "cpu": variants.Variant(
        shrink_for_cpu, "size", "2-core laptop run: <= 30 min, >= 80 % top-1 (target)"
    )
}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    config = variants.base_config("penn_action", "data/penn_action")
    config.data.train_split = "train"
    config.data.test_split = "test"
    config.data.num_persons = 1
    return variants.apply_variants(config, arg, VARIANTS)
