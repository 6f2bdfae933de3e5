"""Any PYSKL-format dataset converted with data_prep/, configured from the command line only.

    python -m skclip_jax.main --config=configs/custom.py:cpu --workdir=/tmp/run \
      --config.data.data_dir=data/mydataset --config.data.dataset=mydataset \
      --config.data.train_split=xsub_train --config.data.test_split=xsub_test \
      --config.data.class_names_file=data/mydataset/classes.txt

data.data_dir (the converter's --out_dir) is required; validation names it when it is empty.
data.class_names_file holds one class name per line, line i = label i (empty: the dataset's metadata).
Variants: `cpu` and the ablations in skclip_jax/config_lib/variants.py.
"""

import ml_collections

from skclip_jax.config_lib import variants

VARIANTS = {"cpu": variants.CPU}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    # data_dir is left empty on purpose: there is no sensible default for someone else's data.
    config = variants.base_config("custom", "")
    config.data.train_split = "train"
    config.data.test_split = "test"
    return variants.apply_variants(config, arg, VARIANTS)
