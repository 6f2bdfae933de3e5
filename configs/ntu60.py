"""NTU RGB+D 60 with PYSKL's HRNet 2D skeletons (ntu60_hrnet.pkl), the paper's recipe.

Usage: `--config=configs/ntu60.py[:variant,...]`, e.g. `configs/ntu60.py:xview,fsdp`.
Variants: `xsub` (default) | `xview`, `cpu`, the zero-shot splits `zsl55_5` | `zsl48_12` (SynSE),
`templates`, and the ablations in skclip_jax/config_lib/variants.py.
data.data_dir is the converter's --out_dir:
  python -m data_prep.pyskl --ann=ntu60_hrnet.pkl --dataset=ntu60 --out_dir=data/ntu60

Splits keep the pickle's names: PYSKL's ntu60_hrnet.pkl has `xsub_train`/`xsub_val` and
`xview_train`/`xview_val`. Some exports (e.g. shared/data/pyskl_sample) name the test half
`xsub_test`; override it from the command line: `--config.data.test_split=xsub_test`.

`sweep(add)` yields Table 1's four mapping x activation runs (trained without repeats, as the paper).
"""

import ml_collections

from skclip_jax.config_lib import open_vocab, variants

# SynSE's zero-shot splits (0-based indices in the NTU label order); TDSM (ICCV 2025) reports 86.5 / 56.0
# ZSL top-1 on them with 3D skeletons.
ZSL_SPLITS = {
    "zsl55_5": (10, 11, 19, 26, 56),
    "zsl48_12": (3, 5, 9, 12, 15, 40, 42, 47, 51, 56, 58, 59),
}

VARIANTS = {
    "xsub": variants.benchmark_splits("xsub"),
    "xview": variants.benchmark_splits("xview"),
    "cpu": variants.CPU,
    **{
        name: open_vocab.zero_shot(unseen, f"zero-shot: SynSE's {name[3:]} split")
        for name, unseen in ZSL_SPLITS.items()
    },
    "templates": open_vocab.TEMPLATES_VARIANT,
}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    config = variants.base_config("ntu60", "data/ntu60")
    config.data.train_split = "xsub_train"
    config.data.test_split = "xsub_val"
    return variants.apply_variants(config, arg, VARIANTS)


def sweep(add):
    """Table 1: {linear, residual} mapping x {softmax, sigmoid} frame weights, no dataset repeat."""
    for mapping in ("linear", "residual"):
        for activation in ("softmax", "sigmoid"):
            add(
                **{
                    "config.model.mapping": mapping,
                    "config.model.activation": activation,
                    "config.data.repeat": 1,
                }
            )
