"""A workdir belongs to one run: what may change when it is resumed, the check, starting over, the default name.

A run saves its config in WORKDIR/config.json (`run_config`). A later command that names the same workdir with a
config of its own (`main` to resume or evaluate, `predict --config`) must describe the same run, or it would
restore a checkpoint of another model, rewrite the saved config and mix two runs' metrics. Only the fields in
`RESUMABLE_FIELDS` may differ: how long the run is, how often it logs, evaluates and checkpoints, and knobs that
change speed or memory but not the numbers trained. Any other difference stops the command, before anything in
the workdir is written, with the fields listed (saved -> requested). `--restart` starts over: the previous run's
files (`RUN_FILES`) are deleted once the new run's setup has succeeded; anything else in the folder is kept.
"""

from __future__ import annotations

import fnmatch
import os
import shutil
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from skclip_jax import run_config
from skclip_jax.command_line import UserError

# Fields a resumed run may change. Run length and cadence are the reason to resume with other flags; the rest
# change how a step is computed or placed (same parameters, same results up to float rounding), so a run may
# resume on another machine.
RESUMABLE_FIELDS = (
    "total_steps",
    "num_epochs",
    "log_every_steps",
    "eval_every_steps",
    "checkpoint_every_steps",
    "keep_checkpoints",
    "eval_batch_size",
    "mesh_shape",
    "shard_params",
    "data.num_workers",
    "data.device_prefetch",
    "model.slowonly.conv_impl",
    "model.slowonly.batch_norm_impl",
    "model.slowonly.stem_impl",
    "model.slowonly.low_memory",
)

# What a training run writes into its workdir: `--restart` deletes these and nothing else.
RUN_FILES = (
    "checkpoints",
    run_config.CONFIG_FILENAME,
    run_config.CLASS_NAMES_FILENAME,
    "metrics.jsonl",
    "events.out.tfevents.*",
    "loss.png",
    "accuracy.png",
    "confusion.png",
    "predict",
)

SHOWN_DIFFERENCES = 4  # fields listed in the one-line message; the rest are counted.
DEFAULT_ROOT = "runs"


class WorkdirConflict(UserError):
    """The workdir holds another run than the command describes."""


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{'data': {'clip_len': 16}} -> {'data.clip_len': 16}; lists become tuples (JSON has no tuples)."""
    flat = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, name + "."))
        else:
            flat[name] = tuple(value) if isinstance(value, list) else value
    return flat


_ABSENT = object()


def differences(
    saved: Mapping[str, Any],
    requested: Mapping[str, Any],
    allowed: Iterable[str] = RESUMABLE_FIELDS,
) -> list[tuple[str, Any, Any]]:
    """(field, saved value, requested value) for every field that differs and is not `allowed`, sorted.

    Both configs are compared with absolute paths. A field the saved config lacks is a field the run
    predates; its default is what the run used, so it is not a difference.
    """
    saved = flatten(run_config.absolute_paths(_as_config(saved)).to_dict())
    requested = flatten(run_config.absolute_paths(_as_config(requested)).to_dict())
    allowed = set(allowed)
    out = []
    for name in sorted(set(saved) | set(requested)):
        if name in allowed or name not in saved:
            continue
        old, new = saved[name], requested.get(name, _ABSENT)
        if old != new or type(old) is not type(new) and not _same_number(old, new):
            out.append((name, old, new))
    return out


def _same_number(a: Any, b: Any) -> bool:
    numbers = (int, float)
    return (
        isinstance(a, numbers)
        and isinstance(b, numbers)
        and not isinstance(a, bool)
        and not isinstance(b, bool)
        and a == b
    )


def _as_config(tree):
    import ml_collections

    return tree if isinstance(tree, ml_collections.ConfigDict) else ml_collections.ConfigDict(tree)


def _show(value: Any) -> str:
    return "(absent)" if value is _ABSENT else repr(value)


def describe(diffs: Sequence[tuple[str, Any, Any]]) -> str:
    """'data.clip_len 16 -> 8, seed 0 -> 1 (and 3 more)'."""
    shown = [f"{name} {_show(old)} -> {_show(new)}" for name, old, new in diffs[:SHOWN_DIFFERENCES]]
    more = len(diffs) - SHOWN_DIFFERENCES
    return ", ".join(shown) + (f" (and {more} more)" if more > 0 else "")


# What to do instead, by the command that found the difference.
_WAYS_ON = {
    "train": (
        "resume it with its own config (the command that started it), train this config in a new "
        "--workdir, or pass --restart to delete that run and start over in {workdir}"
    ),
    "eval": "omit --config to evaluate the run with its own, or name this config's run with --workdir",
    "predict": "omit --config to use the run's own, or name this config's run with --workdir",
}


def check_same_run(config, workdir: str, purpose: str = "train") -> None:
    """Raises WorkdirConflict when `workdir` holds a saved config that differs from `config` beyond
    RESUMABLE_FIELDS; a workdir without a saved config passes (nothing to compare)."""
    path = os.path.join(workdir, run_config.CONFIG_FILENAME)
    if not os.path.isfile(path):
        return
    try:
        saved = run_config.load(workdir)
    except run_config.RunConfigError as e:
        raise WorkdirConflict(
            f"{e}; it cannot be compared with --config, so {workdir} is left alone: "
            "name another --workdir (or --restart to start over there)"
        ) from None
    diffs = differences(saved, config)
    if diffs:
        raise WorkdirConflict(
            f"{workdir} holds another run ({len(diffs)} config field(s) differ, saved -> requested: "
            f"{describe(diffs)}).\n" + _WAYS_ON[purpose].format(workdir=workdir).capitalize() + "."
        )


def run_files(workdir: str) -> list[str]:
    """The previous run's files in `workdir` (RUN_FILES), sorted; [] for a new or missing folder."""
    try:
        names = os.listdir(workdir)
    except OSError:
        return []
    return sorted(n for n in names if any(fnmatch.fnmatch(n, p) for p in RUN_FILES))


def remove_run(workdir: str) -> list[str]:
    """Deletes the previous run's files (RUN_FILES) from `workdir`; returns their names. Other files stay."""
    removed = run_files(workdir)
    for name in removed:
        path = os.path.join(workdir, name)
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        else:
            os.remove(path)
    return removed


def default_workdir(spec: str, module: Any = None) -> str:
    """`runs/<config name>[_<variants>]`, relative to the current folder: `configs/ucf101.py:cpu,split2` ->
    `runs/ucf101_split2,cpu`. Variants are listed in the order the config applies them (its VARIANTS, then the
    shared ablations), so the same run gets the same folder however the variants were typed."""
    from skclip_jax.command_line import split_spec
    from skclip_jax.config_lib import variants

    path, arg = split_spec(spec)
    name = os.path.splitext(os.path.basename(path))[0] or "config"
    names = variants.parse_variants(arg)
    registry = [*getattr(module, "VARIANTS", {}), *variants.ABLATIONS]
    order = {v: i for i, v in enumerate(registry)}
    names = sorted(dict.fromkeys(names), key=lambda v: order.get(v, len(order)))
    return os.path.join(DEFAULT_ROOT, name + ("_" + ",".join(names) if names else ""))


def check_class_names(workdir: str, class_names: Sequence[str], data_dir: str) -> None:
    """Raises WorkdirConflict when the run in `workdir` saved other classes than the dataset now holds (the
    same config over a regenerated or replaced dataset); a workdir without class_names.txt passes."""
    saved = run_config.load_class_names(workdir)
    if saved is None or tuple(saved) == tuple(class_names):
        return
    first = next(
        (i for i, (a, b) in enumerate(zip(saved, class_names, strict=False)) if a != b),
        min(len(saved), len(class_names)),
    )
    show = lambda names: repr(names[first]) if first < len(names) else "(none)"  # noqa: E731
    raise WorkdirConflict(
        f"{workdir} trained on {len(saved)} classes ({run_config.CLASS_NAMES_FILENAME}) but {data_dir} "
        f"holds {len(class_names)}: class {first} is {show(saved)} there, {show(class_names)} here. Train "
        "in a new --workdir, or pass --restart to start over"
    )
