"""Orbax checkpoints under WORKDIR/checkpoints: asynchronous saves, the last k kept plus the best by top-1.

A checkpoint holds the train state (params, optimizer state, batch statistics, step) and a small JSON record of the
run's position. The input pipeline is a pure function of (seed, step), so the step is its whole position and a
restored run continues with exactly the batches it would have seen.
"""

import os
import re
from typing import Any

import orbax.checkpoint as ocp
from absl import logging

from skclip_jax import sharding as sharding_lib


class CheckpointWriteError(RuntimeError):
    """A checkpoint could not be written (a full disk, a quota, a lost mount); the complete ones are intact."""


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
        enable_async_checkpointing=True,
    )
    return ocp.CheckpointManager(
        checkpoint_dir(workdir), options=options, item_names=("state", "position")
    )


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


def restore(
    manager: ocp.CheckpointManager, abstract_state: Any, shardings: Any, step: int | None = None
) -> tuple[Any, dict[str, Any]]:
    """Restores `step` (default: the latest) directly into the given shardings; returns (state, position)."""
    step = manager.latest_step() if step is None else step
    if step is None:
        raise FileNotFoundError(f"no checkpoint in {manager.directory}")
    if step not in manager.all_steps():
        raise FileNotFoundError(
            f"checkpoint step {step} is not in {manager.directory}; it has {sorted(manager.all_steps())}"
        )
    target = sharding_lib.with_shardings(abstract_state, shardings)
    restored = manager.restore(
        step,
        args=ocp.args.Composite(
            state=ocp.args.StandardRestore(target), position=ocp.args.JsonRestore()
        ),
    )
    logging.info("Restored checkpoint step %d from %s", step, manager.directory)
    return restored["state"], restored["position"]
