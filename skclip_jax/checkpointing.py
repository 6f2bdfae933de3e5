"""Orbax checkpoints under WORKDIR/checkpoints: asynchronous saves, the last k kept plus the best by top-1.

A checkpoint holds the train state (params, optimizer state, batch statistics, step) and a small JSON record of the
run's position. The input pipeline is a pure function of (seed, step), so the step is its whole position and a
restored run continues with exactly the batches it would have seen.

Orbax writes each checkpoint into ``N.orbax-checkpoint-tmp-*`` and renames it to ``N`` when complete, so a save
cut short (a second Ctrl-C, kill -9, a full disk) is never taken for a checkpoint. A restore names what went
wrong in one line: a checkpoint that does not fit the config (`CheckpointMismatchError`, its first differing
array), or one whose files cannot be read (`CheckpointReadError`); a resumed run then falls back to the newest
checkpoint that reads (`restore_latest_readable`) and never discards a finished one.
"""

import os
import re
import time
from collections.abc import Callable
from typing import Any

import jax
import orbax.checkpoint as ocp
from absl import logging

from skclip_jax import sharding as sharding_lib


class CheckpointWriteError(RuntimeError):
    """A checkpoint could not be written (a full disk, a quota, a lost mount); the complete ones are intact."""


class CheckpointMismatchError(ValueError):
    """A checkpoint does not fit the model the config builds (another run's, or an edited config.json)."""


class CheckpointReadError(RuntimeError):
    """A checkpoint's files cannot be read (damaged, or removed in part); the message names it and why."""


# How tensorstore's errors carry the operating system's reason (orbax raises them as ValueError).
_OS_ERROR_CODE = re.compile(r"os_error_code='?(\d+)")


def complete_steps(directory: str) -> list[int]:
    """The steps whose checkpoints are complete: orbax writes into ``N.orbax-checkpoint-tmp`` and renames it."""
    try:
        return sorted(int(name) for name in os.listdir(directory) if name.isdigit())
    except OSError:
        return []


def write_failure(error: BaseException, directory: str) -> CheckpointWriteError:
    """One line for a failed save: where, why (the operating system's reason when the error carries one), and
    what is kept."""
    text = str(error)
    code = getattr(error, "errno", None) or (
        int(m.group(1)) if (m := _OS_ERROR_CODE.search(text)) else None
    )
    reason = os.strerror(code) if code else (text.splitlines() or [type(error).__name__])[0][:300]
    steps = complete_steps(directory)
    kept = f"the last complete one, step {steps[-1]}, is kept" if steps else "none was complete yet"
    return CheckpointWriteError(
        f"could not write a checkpoint under {directory}: {reason}. {kept.capitalize()}; "
        "free the space (or fix the folder) and run the same command again to resume."
    )


def checkpoint_dir(workdir: str) -> str:
    return os.path.join(os.path.abspath(workdir), "checkpoints")


def make_manager(workdir: str, keep: int = 2, read_only: bool = False) -> ocp.CheckpointManager:
    """Keeps the `keep` latest checkpoints and the one with the best eval top-1 (only evaluated steps carry it)."""
    policy = ocp.checkpoint_managers.AnyPreservationPolicy(
        [
            ocp.checkpoint_managers.LatestN(n=keep),
            ocp.checkpoint_managers.BestN(
                get_metric_fn=lambda metrics: metrics["top1"],
                reverse=False,
                n=1,
                keep_checkpoints_without_metrics=False,
            ),
        ]
    )
    options = ocp.CheckpointManagerOptions(
        preservation_policy=policy,
        create=not read_only,
        read_only=read_only,
        # What read_only implies anyway; said here, orbax does not warn about it on predict's console.
        save_interval_steps=0 if read_only else 1,
        enable_async_checkpointing=True,
    )
    verbosity = logging.get_verbosity()
    if read_only:  # orbax warns that a read-only manager is read-only: noise on predict's console
        logging.set_verbosity(logging.ERROR)
    try:
        return ocp.CheckpointManager(
            checkpoint_dir(workdir), options=options, item_names=("state", "position")
        )
    finally:
        logging.set_verbosity(verbosity)


def save(
    manager: ocp.CheckpointManager,
    step: int,
    state: Any,
    position: dict[str, Any],
    metrics: dict[str, float] | None = None,
) -> None:
    """Starts an asynchronous save; orbax writes to a temporary directory and renames it when complete.

    Raises:
      CheckpointWriteError: this save, or the previous one still in flight, could not be written.
    """
    try:
        manager.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(state), position=ocp.args.JsonSave(position)
            ),
            metrics=metrics,
            force=True,
        )
    except Exception as e:  # orbax raises what tensorstore or the filesystem raised
        raise write_failure(e, str(manager.directory)) from e


def wait_until_finished(manager: ocp.CheckpointManager) -> None:
    """Waits for the asynchronous saves; raises CheckpointWriteError if one could not be written."""
    try:
        manager.wait_until_finished()
    except Exception as e:
        raise write_failure(e, str(manager.directory)) from e


def _path_name(path) -> str:
    """A pytree key path as 'params/video_encoder/conv1/kernel' (dict keys, attributes and indices alike)."""
    parts = []
    for key in path:
        for attr in ("key", "name", "idx"):
            if hasattr(key, attr):
                parts.append(str(getattr(key, attr)))
                break
        else:
            parts.append(str(key))
    return "/".join(parts)


def _arrays(tree: Any) -> dict[str, tuple[tuple[int, ...], str]]:
    """{path: (shape, dtype)} of every array leaf (None and empty nodes, e.g. masked optimizer state, skipped)."""
    leaves = jax.tree_util.tree_flatten_with_path(tree, is_leaf=lambda x: x is None)[0]
    return {
        _path_name(p): (tuple(leaf.shape), str(leaf.dtype))
        for p, leaf in leaves
        if leaf is not None and hasattr(leaf, "shape")
    }


def _top_fields(tree: Any) -> set[str]:
    leaves = jax.tree_util.tree_flatten_with_path(tree, is_leaf=lambda x: x is None)[0]
    return {_path_name(p[:1]) for p, _ in leaves if p}


def _first_line(error: BaseException, limit: int = 200) -> str:
    text = str(error).split("See full TensorStore details")[0].strip()
    line = (text.splitlines() or [type(error).__name__])[0].rstrip(" .")
    return line if len(line) <= limit else line[:limit] + "..."


def mismatch(directory: str, step: int, abstract_state: Any) -> str | None:
    """The first way checkpoint `step` differs from the state the config builds, in words; None if they agree.

    Raises:
      CheckpointReadError: the checkpoint's metadata cannot be read.
    """
    from etils import epath

    where = os.path.join(directory, str(step), "state")
    try:
        saved = ocp.StandardCheckpointHandler().metadata(epath.Path(where)).tree
    except Exception as e:  # a missing or damaged _METADATA raises many types
        raise CheckpointReadError(
            f"checkpoint step {step} in {directory} cannot be read: {_first_line(e)}"
        ) from e
    fields, saved_fields = _top_fields(abstract_state), _top_fields(saved)
    if fields != saved_fields:
        extra, missing = sorted(saved_fields - fields), sorted(fields - saved_fields)
        return (
            f"the checkpoint's state has {'extra ' + ', '.join(extra) if extra else ''}"
            f"{' and ' if extra and missing else ''}{'no ' + ', '.join(missing) if missing else ''} "
            "(written by another version of the code?)"
        )
    want, have = _arrays(abstract_state), _arrays(saved)
    for name, (shape, dtype) in want.items():
        if name not in have:
            return f"{name} {shape} is not in the checkpoint"
        if have[name] != (shape, dtype):
            return (
                f"{name} is {have[name][0]} {have[name][1]} in the checkpoint, {shape} {dtype} "
                "for the config"
            )
    extra = [name for name in have if name not in want]
    if extra:
        return (
            f"the checkpoint has {extra[0]} {have[extra[0]][0]}, which the config's model has not"
        )
    return None


def restore(
    manager: ocp.CheckpointManager, abstract_state: Any, shardings: Any, step: int | None = None
) -> tuple[Any, dict[str, Any]]:
    """Restores `step` (default: the latest) directly into the given shardings; returns (state, position).

    Raises:
      FileNotFoundError: no checkpoint, or no checkpoint `step`.
      CheckpointMismatchError: the checkpoint does not fit `abstract_state` (one line naming the first array).
      CheckpointReadError: its files cannot be read (one line naming the step and why).
    """
    step = manager.latest_step() if step is None else step
    if step is None:
        raise FileNotFoundError(f"no checkpoint in {manager.directory}")
    if step not in manager.all_steps():
        raise FileNotFoundError(
            f"checkpoint step {step} is not in {manager.directory}; it has {sorted(manager.all_steps())}"
        )
    directory = str(manager.directory)
    why = mismatch(directory, step, abstract_state)
    if why:
        raise CheckpointMismatchError(
            f"checkpoint step {step} in {directory} does not fit the config: {why}"
        )
    target = sharding_lib.with_shardings(abstract_state, shardings)
    try:
        restored = manager.restore(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardRestore(target), position=ocp.args.JsonRestore()
            ),
        )
    except Exception as e:  # tensorstore and orbax raise many types for damaged files
        raise CheckpointReadError(
            f"checkpoint step {step} in {directory} cannot be read: {_first_line(e)}"
        ) from e
    logging.info("Restored checkpoint step %d from %s", step, manager.directory)
    return restored["state"], restored["position"]


def _set_aside(directory: str, step: int) -> str:
    """Renames checkpoint `step` to `step.unreadable` (kept for inspection; orbax ignores it); returns the name."""
    name = f"{step}.unreadable"
    if os.path.exists(os.path.join(directory, name)):
        name = f"{step}.unreadable-{int(time.time())}"
    if jax.process_index() == 0:
        os.rename(os.path.join(directory, str(step)), os.path.join(directory, name))
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(f"checkpoint {step} set aside")
    return name


def restore_latest_readable(
    manager: ocp.CheckpointManager,
    abstract_state: Any,
    shardings: Any,
    warn: Callable[[str], None] = logging.warning,
) -> tuple[Any, dict[str, Any]]:
    """Restores the newest checkpoint that can be read, for a resumed run.

    Newer ones that cannot be read are set aside (`N.unreadable`, so that the run can write step N again) only
    once an older one has restored, each with one line through `warn`; when none can be read nothing is touched.

    Raises:
      CheckpointMismatchError: a checkpoint does not fit the config (an older one would not either).
      CheckpointReadError: no checkpoint can be read (one line listing each and why).
    """
    directory = str(manager.directory)
    failures: list[tuple[int, CheckpointReadError]] = []
    for step in sorted(manager.all_steps(), reverse=True):
        try:
            state, position = restore(manager, abstract_state, shardings, step)
        except CheckpointReadError as e:
            failures.append((step, e))
            continue
        for bad, error in failures:
            name = _set_aside(directory, bad)
            warn(f"{error}; resuming from step {step} instead (step {bad} is kept as {name})")
        if failures:
            manager.reload()
        return state, position
    reasons = "; ".join(str(e).split(" cannot be read: ", 1)[-1] for _, e in failures)
    raise CheckpointReadError(
        f"no checkpoint in {directory} can be read (steps {[s for s, _ in failures]}: {reasons}); "
        "nothing was changed. Pass --restart to start over"
    )
