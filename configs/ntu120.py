"""NTU RGB+D 120 with PYSKL's HRNet 2D skeletons (ntu120_hrnet.pkl), with the paper's recipe.

Not in the paper (which has NTU-60); here for the zero-shot literature's NTU-120 splits.
Usage: `--config=configs/ntu120.py[:variant,...]`, e.g. `configs/ntu120.py:xset,zsl96_24`.
Variants: `xsub` (default) | `xset`, `cpu`, the zero-shot splits `zsl110_10` | `zsl96_24` (SynSE),
`templates`, and the ablations in skclip_jax/config_lib/variants.py.
data.data_dir is the converter's --out_dir (class names: data_prep/class_names/ntu120.txt):
  python -m data_prep.pyskl --ann=ntu120_hrnet.pkl --dataset=ntu120 --out_dir=data/ntu120

Splits keep the pickle's names: PYSKL's ntu120_hrnet.pkl has `xsub_train`/`xsub_val` and
`xset_train`/`xset_val`.
"""

import ml_collections

from skclip_jax.config_lib import open_vocab, variants

# SynSE's zero-shot splits (0-based indices in the NTU label order); TDSM (ICCV 2025) reports 74.2 / 65.1
# ZSL top-1 on them with 3D skeletons.
# fmt: off
ZSL_SPLITS = {
    "zsl110_10": (4, 13, 37, 43, 49, 65, 88, 95, 99, 106),
    "zsl96_24": (5, 9, 11, 16, 18, 20, 22, 29, 35, 39, 45, 49, 59, 68, 70, 81, 84, 87, 93, 94, 104,
                 113, 114, 119),
}
# fmt: on

VARIANTS = {
    "xsub": variants.benchmark_splits("xsub"),
    "xset": variants.benchmark_splits("xset"),
    "cpu": variants.CPU,
    **{
        name: open_vocab.zero_shot(unseen, f"zero-shot: SynSE's {name[3:]} split")
        for name, unseen in ZSL_SPLITS.items()
    },
    "templates": open_vocab.TEMPLATES_VARIANT,
}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    config = variants.base_config("ntu120", "data/ntu120")
    config.data.train_split = "xsub_train"
    config.data.test_split = "xsub_val"
    return variants.apply_variants(config, arg, VARIANTS)
