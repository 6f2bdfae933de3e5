"""UCF-101 with PYSKL's HRNet 2D skeletons (ucf101_hrnet.pkl), the paper's recipe.

Usage: `--config=configs/ucf101.py[:variant,...]`, e.g. `configs/ucf101.py:split2,cpu,nowfi`.
Variants: `split1` (default) | `split2` | `split3`, `cpu`, and the ablations in skclip_jax/config_lib/variants.py.
data.data_dir is the converter's --out_dir:
  python -m data_prep.pyskl --ann=ucf101_hrnet.pkl --dataset=ucf101 --out_dir=data/ucf101
The TFDS splits keep the pickle's names, `train1`/`test1` ... `train3`/`test3`.
"""

import ml_collections

from skclip_jax.config_lib import variants

VARIANTS = variants.three_split_variants() | {"cpu": variants.CPU}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    config = variants.base_config("ucf101", "data/ucf101")
    config.data.train_split = "train1"
    config.data.test_split = "test1"
    # The original's HMDB-51/UCF-101 WFI runs (`*-pacl.py`); `itm_recipe` selects its CSI runs' optimiser.
    variants.pacl_recipe(config)
    return variants.apply_variants(config, arg, VARIANTS)
