"""Metrics to `workdir/metrics.jsonl` (the record plots and tests read) and to TensorBoard via clu.

The JSONL file is the source of truth: one line per logged step and kind, flushed at once, appended across
restarts. A resumed run first drops the lines past its restored step (`truncate_after`), and a record of a
(step, kind) already in the file replaces the old one (an `--mode=eval` of a step evaluated before), so the
file never holds two records of one step and kind.
"""

import json
import os
from typing import Any

from absl import logging

METRICS_FILENAME = "metrics.jsonl"
KINDS = ("train", "eval")


def metrics_path(workdir: str) -> str:
    return os.path.join(workdir, METRICS_FILENAME)


def _parse_lines(lines: list[str], path: str) -> list[dict[str, Any]]:
    records = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            # A run killed mid-write leaves a partial last line; losing it is harmless.
            logging.warning("%s:%d is not valid JSON; skipped", path, number)
            continue
        if isinstance(record, dict) and "step" in record:
            records.append(record)
        else:
            logging.warning("%s:%d has no 'step'; skipped", path, number)
    return records


def read_metrics(path: str) -> list[dict[str, Any]]:
    """The records of a metrics.jsonl file (a workdir also works), in file order; [] if none."""
    if os.path.isdir(path):
        path = metrics_path(path)
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return _parse_lines(f.readlines(), path)


class _NoSummaries:
    """Stands in for clu's writer where TensorFlow is missing (a bare accelerator image): jsonl only."""

    def write_scalars(self, step, scalars):
        del step, scalars

    def flush(self):
        pass

    def close(self):
        pass


def _summary_writer(workdir: str, enabled: bool):
    """clu's TensorBoard + logging writer; without TensorFlow, a warning and metrics.jsonl alone."""
    try:
        # Imported here: clu's writers pull in TensorFlow, which read_metrics and plots don't need.
        from clu import metric_writers
    except ImportError as e:
        if enabled:
            logging.warning(
                "No TensorBoard summaries (%s); metrics still go to %s.", e, metrics_path(workdir)
            )
        return _NoSummaries()
    return metric_writers.create_default_writer(workdir, just_logging=not enabled)


class MetricsWriter:
    """Writes scalars to metrics.jsonl and TensorBoard; on non-zero processes (enabled=False) only logs.

    Args:
      workdir: the run directory; metrics.jsonl and the TensorBoard events go there.
      enabled: False on processes other than 0, so only one process writes files.
    """

    def __init__(self, workdir: str, enabled: bool):
        self.workdir = workdir
        self.enabled = enabled
        self.path = metrics_path(workdir)
        self._file = None
        self._keys: set[tuple[int, str]] = set()  # (step, kind) of the file's records, read at open
        if enabled:
            os.makedirs(workdir, exist_ok=True)
        self._writer = _summary_writer(workdir, enabled)

    def _open(self):
        if self._file is None:
            self._keys = {(r["step"], r.get("kind")) for r in read_metrics(self.path)}
            self._file = open(self.path, "a")  # append: a resumed run continues the file.
        return self._file

    def _rewrite(self, keep) -> None:
        """Rewrites the file with the records `keep(record)` accepts (atomically: old or new file)."""
        if self._file is not None:
            self._file.close()
            self._file = None
        kept = [r for r in read_metrics(self.path) if keep(r)]
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in kept)
        os.replace(tmp, self.path)

    def truncate_after(self, step: int) -> None:
        """Drops records with step > `step`, e.g. after restoring the checkpoint of `step`."""
        if not self.enabled or not os.path.exists(self.path):
            return
        if self._file is not None:
            self._file.close()
            self._file = None
        records = read_metrics(self.path)
        dropped = sum(r["step"] > step for r in records)
        if dropped:
            logging.info("Dropping %d metric records after step %d", dropped, step)
            self._rewrite(lambda r: r["step"] <= step)

    def write(self, step: int, values: dict[str, float], kind: str) -> None:
        """Appends {"step", "kind", **values}, replacing an earlier record of the same step and kind;
        TensorBoard gets train names plain, eval as eval/NAME."""
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        step = int(step)
        values = {k: float(v) for k, v in values.items()}
        if self.enabled:
            f = self._open()
            if (step, kind) in self._keys:
                self._rewrite(lambda r: (r["step"], r.get("kind")) != (step, kind))
                f = self._open()
            self._keys.add((step, kind))
            # allow_nan: a NaN loss is worth recording as the run's last line (json writes NaN).
            f.write(json.dumps({"step": step, "kind": kind, **values}, allow_nan=True) + "\n")
            f.flush()
        prefix = "eval/" if kind == "eval" else ""
        self._writer.write_scalars(step, {prefix + k: v for k, v in values.items()})

    def flush(self) -> None:
        self._writer.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        self._writer.close()
