"""Two variants of the train step timed in one process, their steps alternated (A B B A A B ...).

Why: this project's 2-core development machine drifts between runs of the same code by more than most changes
gain (docs/benchmarks.md), so two separate runs compared say little. Compiling both variants in one process and
alternating their steps puts both under the same drift, and their medians compare. Used by
``bench --alternate=KEY=VALUE``; the variant differs from the run's config by those fields only, and must have
the same parameters (a convolution formulation, ``low_memory``, a dtype: not another architecture).
"""

import ast
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import ml_collections


def parse_value(text: str) -> Any:
    """A Python literal (``True``, ``3``, ``0.5``, ``(1, 2)``, ``'x'``) where the text is one, else the text."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def with_overrides(
    config: ml_collections.ConfigDict, overrides: Sequence[str]
) -> ml_collections.ConfigDict:
    """A copy of ``config`` with each ``dotted.key=value`` set (the config's own type checks apply).

    Raises:
      ValueError: an override without ``=``, a field the config does not have, or a value of the wrong type.
    """
    variant = ml_collections.ConfigDict(config.to_dict())
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise ValueError(
                f"--alternate={item!r}: expected KEY=VALUE, e.g. model.slowonly.low_memory=True"
            )
        *parents, leaf = key.split(".")
        node = variant
        try:
            for name in parents:
                node = node[name]
            if leaf not in node:
                raise KeyError(leaf)
            node[leaf] = parse_value(text)
        except (KeyError, TypeError, AttributeError) as e:
            raise ValueError(
                f"--alternate={item!r}: the config has no such field or rejects the value ({e})"
            ) from None
    return variant


def alternation_order(names: Sequence[str], rounds: int) -> list[str]:
    """Each round runs every variant once, every other round in reverse order: A B, B A, A B, ... (ABBA)."""
    order = []
    for r in range(rounds):
        order.extend(names if r % 2 == 0 else list(reversed(names)))
    return order


def alternate(
    steps: dict[str, Callable], state, batches: Sequence, rounds: int, await_fn: Callable
) -> tuple[Any, dict[str, list[float]]]:
    """Runs ``rounds`` steps of each variant in ABBA order, each awaited on its own; returns (state, times).

    ``steps`` maps a variant's name to its compiled train step ``(state, batch) -> (state, metrics)``; every
    variant takes and returns the same state, so they chain. ``await_fn`` is ``jax.block_until_ready``.
    """
    times: dict[str, list[float]] = {name: [] for name in steps}
    for i, name in enumerate(alternation_order(list(steps), rounds)):
        t0 = time.perf_counter()
        state, metrics = steps[name](state, batches[i % len(batches)])
        await_fn((state, metrics))
        times[name].append(time.perf_counter() - t0)
    return state, times


def summary(times: dict[str, list[float]]) -> dict[str, Any]:
    """Median and all step times per variant, and the ratio of the medians (B over A)."""
    out: dict[str, Any] = {
        name: {"median_step_s": round(statistics.median(t), 3), "steps_s": [round(x, 3) for x in t]}
        for name, t in times.items()
    }
    medians = [statistics.median(t) for t in times.values()]
    if len(medians) == 2 and medians[0] > 0:
        out["ratio_b_over_a"] = round(medians[1] / medians[0], 3)
    return out
