"""Penn Action (15 sports classes, human-annotated 13-joint 2D poses mapped to COCO-17).

Not in the paper; it is the dataset we can train and test on end to end on a CPU. One person per
clip, so data.num_persons is 1. Splits are the official per-clip flag: `train` (1258) / `test` (1068).
data.data_dir is the converter's --out_dir:
  python -m data_prep.penn_action --labels_dir=Penn_Action/labels --out_dir=data/penn_action

Usage: `--config=configs/penn_action.py[:variant,...]`; variants: `cpu` and the ablations in
skclip_jax/config_lib/variants.py. `cpu` trains on 2 CPU cores (its test-split figure: docs/benchmarks.md
"Accuracy"); its sizes are plain fields below so they can be retuned from the command line.
"""

import ml_collections

from skclip_jax.config_lib import open_vocab, variants


def shrink_for_cpu(config: ml_collections.ConfigDict) -> None:
    """The shared laptop sizes, and a schedule counted in passes over Penn Action's 1258 clips.

    SSM uses the paper's in-batch targets (the batch's class texts): on the validation split
    (`penn_action.py:cpu,val`) they beat every class's text (`allclasses`), docs/design.md "SSM targets: in-batch
    or every class". The test-split figure and wall time of this variant are in docs/benchmarks.md "Accuracy".
    """
    variants.shrink_for_cpu(config)
    config.data.repeat = 1
    config.data.max_text_len = 8  # the longest Penn Action prompt is 6 tokens with [CLS] and [SEP].
    config.num_epochs = 10
    config.optim.warmup_epochs = 1.0


VARIANTS = {
    "cpu": variants.Variant(
        shrink_for_cpu, "size", "a 2-core laptop run (time and accuracy: docs/benchmarks.md)"
    ),
    # Zero-shot proxies of the NTU splits that run on a CPU: 12 seen classes, 3 unseen (chance 33 %).
    "zsl1": open_vocab.zero_shot(
        ("tennis serve", "squat", "jump rope"), "zero-shot: tennis serve, squat, jump rope unseen"
    ),
    "zsl2": open_vocab.zero_shot(
        ("baseball swing", "pushup", "strum guitar"),
        "zero-shot: baseball swing, pushup, strum guitar unseen",
    ),
    "templates": open_vocab.TEMPLATES_VARIANT,
    "descriptions": open_vocab.descriptions("penn_action.json"),
}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    config = variants.base_config("penn_action", "data/penn_action")
    config.data.train_split = "train"
    config.data.test_split = "test"
    config.data.num_persons = 1
    return variants.apply_variants(config, arg, VARIANTS)
