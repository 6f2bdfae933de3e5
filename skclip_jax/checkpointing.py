"""Orbax checkpoints under WORKDIR/checkpoints: asynchronous saves, the last k kept plus the best by top-1.

A checkpoint holds the train state (params, optimizer state, batch statistics, step) and a small JSON record of the
run's position. The input pipeline is a pure function of (seed, step), so the step is its whole position and a
restored run continues with exactly the batches it would have seen.
"""

import os
from typing import Any

import orbax.checkpoint as ocp
from absl import logging

from skclip_jax import sharding as sharding_lib


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
    """Starts an asynchronous save; orbax writes to a temporary directory and renames it when complete."""
    manager.save(
        step,
        args=ocp.args.Composite(
            state=ocp.args.StandardSave(state), position=ocp.args.JsonSave(position)
        ),
        metrics=metrics,
        force=True,
    )


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
