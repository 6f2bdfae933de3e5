"""Open-vocabulary variants shared by the dataset configs: zero-shot splits, prompt ensembles, descriptions.

`zero_shot(name, unseen, help)` makes a split variant that holds `unseen` (class names or 0-based indices)
out of training; `templates` turns on a prompt-template ensemble; `descriptions(path)` adds a JSON of class
descriptions. Kept apart from skclip_jax/config_lib/variants.py (the paper's ablations) so each file has one job.
"""

import os

import ml_collections

import data_prep
from skclip_jax.config_lib import variants

# CLIP-style templates; "{}" alone (the paper's prompt) stays in the ensemble.
TEMPLATES = ("{}", "a person {}.", "a video of someone {}.", "a person doing {}.")
# Shipped with data_prep (package data): found wherever the package is installed.
DESCRIPTIONS_DIR = os.path.join(os.path.dirname(data_prep.__file__), "class_descriptions")


def zero_shot(unseen: tuple, help_text: str, **fields) -> variants.Variant:
    """A zero-shot split: `unseen` held out of training; every evaluation adds ZSL and GZSL figures.

    The last data.calibration_percent (default 10) of the training split is held out too: its seen-class clips
    choose the GZSL calibration and the kept best checkpoint (docs/zero_shot.md "Calibrated stacking, chosen
    without test clips").
    """
    return variants.Variant(
        variants.set_fields(**{"data.unseen_classes": tuple(unseen)}, **fields), "zsl", help_text
    )


def _templates(config: ml_collections.ConfigDict) -> None:
    config.data.prompt_templates = TEMPLATES
    # "a video of someone clean and jerk." is 10 tokens with [CLS] and [SEP]: leave room for the words.
    config.data.max_text_len = max(config.data.max_text_len, 16)


TEMPLATES_VARIANT = variants.Variant(
    _templates,
    "prompt_templates",
    f"prompt ensemble: class feature = normalised mean over {len(TEMPLATES)} templates",
)


def descriptions(filename: str, max_text_len: int = 24) -> variants.Variant:
    """Class descriptions from data_prep/class_descriptions/<filename>, with room for their tokens."""
    path = os.path.join(DESCRIPTIONS_DIR, filename)

    def apply(config: ml_collections.ConfigDict) -> None:
        config.data.class_descriptions_file = path
        config.data.max_text_len = max(config.data.max_text_len, max_text_len)

    return variants.Variant(apply, "descriptions", f"class descriptions from {filename}")
