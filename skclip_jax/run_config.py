"""The resolved config and class list a run writes into its workdir, so the workdir alone is enough to use it.

A training run (`trainer.train_and_evaluate`, once its setup has succeeded) writes WORKDIR/config.json (every field after variants and command-line
overrides) and WORKDIR/class_names.txt (the dataset's classes, label order); `--mode=eval` and
`python -m skclip_jax.predict` read them when no `--config` is given. Both files are written atomically.

Paths in a saved config are absolute (`absolute_paths`), so the workdir reads the same data and text encoder
from any folder and an evaluation run elsewhere never creates a dataset there.
"""

import json
import os
import tempfile
from collections.abc import Sequence

import ml_collections

CONFIG_FILENAME = "config.json"
CLASS_NAMES_FILENAME = "class_names.txt"


class RunConfigError(ValueError):
    """The workdir has no readable saved config: reported without a traceback."""


def write_atomic(path: str, text: str) -> None:
    """Writes `text` to a temporary file beside `path` and renames it: readers see all or nothing."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix="." + os.path.basename(path), suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


# The config fields that name files or folders; model.text.bert_dir is a path unless it is the keyword below.
PATH_FIELDS = (
    ("data", "data_dir"),
    ("data", "class_names_file"),
    ("data", "class_descriptions_file"),
    ("model", "text", "bert_dir"),
)
BERT_KEYWORDS = ("minilm",)


def absolute_paths(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """A copy of `config` whose path fields are absolute (relative to the current folder); '' stays ''."""
    config = ml_collections.ConfigDict(config.to_dict())
    for *parents, leaf in PATH_FIELDS:
        node = config
        for name in parents:
            node = node.get(name) if node is not None else None
        value = node.get(leaf) if node is not None else None
        if isinstance(value, str) and value and value not in BERT_KEYWORDS:
            node[leaf] = os.path.abspath(os.path.expanduser(value))
    return config


def save(workdir: str, config: ml_collections.ConfigDict, class_names: Sequence[str]) -> None:
    """Writes config.json (paths made absolute) and class_names.txt, each atomically."""
    config = absolute_paths(config)
    write_atomic(
        os.path.join(workdir, CONFIG_FILENAME), json.dumps(config.to_dict(), indent=2) + "\n"
    )
    write_atomic(
        os.path.join(workdir, CLASS_NAMES_FILENAME), "".join(f"{n}\n" for n in class_names)
    )


def _tuples(value):
    # JSON has no tuples; every sequence field of our configs is a tuple.
    if isinstance(value, dict):
        return {k: _tuples(v) for k, v in value.items()}
    if isinstance(value, list):
        return tuple(_tuples(v) for v in value)
    return value


def load(workdir: str) -> ml_collections.ConfigDict:
    """The config a run saved in `workdir`.

    Raises:
      RunConfigError naming the file when it is missing or not a config.
    """
    path = os.path.join(workdir, CONFIG_FILENAME)
    if not os.path.isfile(path):
        raise RunConfigError(
            f"{path} does not exist: pass --config=... (runs trained before configs were saved have none)"
        )
    try:
        with open(path, encoding="utf-8") as f:
            raw = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise RunConfigError(f"{path}: not valid JSON ({e})") from e
    if not isinstance(raw, dict) or not {"data", "model"} <= set(raw):
        raise RunConfigError(f"{path}: not a skclip_jax config (no 'data' and 'model' sections)")
    return ml_collections.ConfigDict(_tuples(raw))


def load_class_names(workdir: str) -> tuple[str, ...] | None:
    """The class list a run saved, or None when it has none."""
    path = os.path.join(workdir, CLASS_NAMES_FILENAME)
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        return tuple(line.strip() for line in f if line.strip())
