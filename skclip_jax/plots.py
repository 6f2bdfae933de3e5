"""PNG plots of a run from its metrics.jsonl: losses, test accuracy (the paper's Figures 5-6), confusion.

Uses matplotlib's object API (`Figure` renders with Agg) rather than pyplot, so no global backend or
figure registry is touched and nothing needs a display.
"""

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
from absl import logging
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from skclip_jax import metrics_io

LOSS_KEYS = ("loss", "ssm_loss", "csi_loss")
ACCURACY_KEYS = (("top1", "top-1"), ("top5", "top-5"), ("mean_class_accuracy", "mean class"))
# Per series: a marker of its own, and top-1 drawn last and filled, so that equal values (one evaluation with
# top-1 = mean class) still show every series.
ACCURACY_STYLE = {
    "top1": dict(marker="o", markersize=6, zorder=4),
    "top5": dict(marker="s", markersize=5, zorder=3),
    "mean_class_accuracy": dict(
        marker="D", markersize=10, markerfacecolor="none", markeredgewidth=1.4, zorder=2
    ),
}


def _series(
    records: Sequence[dict[str, Any]], kind: str, key: str
) -> tuple[np.ndarray, np.ndarray]:
    rows = [(r["step"], r[key]) for r in records if r.get("kind") == kind and key in r]
    if not rows:
        return np.zeros(0), np.zeros(0)
    steps, values = zip(*sorted(rows), strict=True)
    return np.asarray(steps), np.asarray(values, dtype=float)


# CSI scores one matched and two mismatched pairs per clip: a head that always says "no match" is right 2/3 of the
# time, so csi_accuracy at 0.667 means the match task has learned nothing yet.
CSI_PRIOR = 2.0 / 3.0


def plot_loss(records: Sequence[dict[str, Any]], path: str) -> bool:
    """Training losses, and (when CSI is on) csi_accuracy against its prior; False (nothing written) without data."""
    csi_steps, csi_acc = _series(records, "train", "csi_accuracy")
    fig = Figure(figsize=(7, 6.8 if csi_steps.size else 4.2), layout="constrained")
    axes = fig.subplots(2 if csi_steps.size else 1, 1, squeeze=False)[:, 0]
    ax = axes[0]
    plotted = False
    for key in LOSS_KEYS:
        steps, values = _series(records, "train", key)
        if steps.size:
            ax.plot(
                steps, values, label=key, linewidth=1.2, marker="." if steps.size < 30 else None
            )
            plotted = True
    if not plotted:
        logging.info("No training losses in the metrics yet; %s not written", path)
        return False
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title("Training losses")
    ax.grid(alpha=0.3)
    ax.legend()
    if csi_steps.size:
        ax = axes[1]
        ax.plot(csi_steps, csi_acc, label="csi_accuracy", color="C2", linewidth=1.2)
        ax.axhline(
            CSI_PRIOR, color="gray", linestyle="--", linewidth=1.0, label='prior ("no match")'
        )
        ax.set_xlabel("step")
        ax.set_ylabel("accuracy")
        ax.set_ylim(0.0, 1.02)
        ax.set_title("CSI match accuracy (1 matched + 2 hardest mismatched pairs per clip)")
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right")
    fig.savefig(path, dpi=120)
    return True


def plot_accuracy(records: Sequence[dict[str, Any]], path: str) -> bool:
    """Test top-1, top-5 and mean class accuracy (%) over steps; False (nothing written) before any eval."""
    fig = Figure(figsize=(7, 4.2), layout="constrained")
    ax = fig.subplots()
    plotted = False
    last_step = 0
    for key, label in ACCURACY_KEYS:
        steps, values = _series(records, "eval", key)
        if steps.size:
            ax.plot(steps, 100 * values, label=label, linewidth=1.2, **ACCURACY_STYLE[key])
            plotted = True
            last_step = max(last_step, int(steps.max()))
    if not plotted:
        logging.info("No evaluation in the metrics yet; %s not written", path)
        return False
    steps, top1 = _series(records, "eval", "top1")
    if steps.size:
        best = int(np.argmax(top1))
        # Text grows away from the nearer edge of the x axis (0 to the last step), so it stays inside the axes.
        late = steps[best] > max(last_step, 1) / 2
        ax.annotate(
            f"best top-1 {100 * top1[best]:.2f}% (step {steps[best]})",
            (steps[best], 100 * top1[best]),
            xytext=(0, -18),
            textcoords="offset points",
            ha="right" if late else "left",
            fontsize=8,
            bbox=dict(boxstyle="round,pad=0.2", facecolor="white", edgecolor="none", alpha=0.85),
            arrowprops=dict(arrowstyle="-", color="gray", linewidth=0.6),
        )
    ax.set_xlabel("step")
    # Training starts at step 0: one evaluation sits at its step, not in a window of +-0.2 steps.
    ax.set_xlim(0, max(last_step, 1) * 1.05)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 102)  # headroom: a 100 % curve stays visible.
    ax.set_title("Test accuracy")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0))  # outside: no point is ever hidden
    fig.savefig(path, dpi=120)
    return True


def plot_confusion(matrix: np.ndarray, class_names: Sequence[str], path: str) -> None:
    """Row-normalised confusion matrix (row = true class), legible from 2 up to ~101 classes.

    Args:
      matrix: [L, L] counts, rows true classes, columns predictions (evaluators.confusion_matrix).
      class_names: L names, label order.
      path: PNG to write.
    """
    matrix = np.asarray(matrix, dtype=float)
    num = matrix.shape[0]
    if matrix.shape != (num, num) or len(class_names) != num:
        raise ValueError(
            f"confusion matrix {matrix.shape} does not match {len(class_names)} class names"
        )
    support = matrix.sum(axis=1, keepdims=True)
    normalised = np.divide(matrix, support, out=np.zeros_like(matrix), where=support > 0)
    # Cells of ~0.17 inch keep 101 names readable at 6 pt; small matrices get a minimum size.
    side = max(6.0, 0.17 * num + 2.5)
    fontsize = 9 if num <= 20 else (7 if num <= 50 else 5.5)
    fig = Figure(figsize=(side + 1.2, side), layout="constrained")
    ax = fig.subplots()
    image = ax.imshow(normalised, cmap="Blues", vmin=0.0, vmax=1.0, interpolation="nearest")
    fig.colorbar(image, ax=ax, shrink=0.8, pad=0.02, label="fraction of true class")
    names = [str(n).replace("_", " ") for n in class_names]
    ax.set_xticks(np.arange(num), labels=names, rotation=90, fontsize=fontsize)
    ax.set_yticks(np.arange(num), labels=names, fontsize=fontsize)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    total = matrix.sum()
    accuracy = np.trace(matrix) / total if total else 0.0
    ax.set_title(f"Confusion matrix (row-normalised), top-1 {100 * accuracy:.2f}%")
    if num <= 20:  # numbers only where they fit.
        for i in range(num):
            for j in range(num):
                if normalised[i, j] >= 0.005:
                    ax.text(
                        j,
                        i,
                        f"{normalised[i, j]:.2f}",
                        ha="center",
                        va="center",
                        fontsize=fontsize - 2,
                        color="white" if normalised[i, j] > 0.5 else "black",
                    )
    # The colour bar's label is outside what constrained layout reserves: measure the drawn figure instead.
    fig.savefig(path, dpi=120, bbox_inches="tight", pad_inches=0.15)


def write_all_plots(
    workdir: str, confusion: np.ndarray | None, class_names: Sequence[str]
) -> list[str]:
    """Writes loss.png, accuracy.png and confusion.png into workdir; returns the paths written.

    A plot without data yet (no eval, no confusion matrix) is skipped with a log line, not an error.
    """
    records = metrics_io.read_metrics(metrics_io.metrics_path(workdir))
    written = []
    path = os.path.join(workdir, "loss.png")
    if plot_loss(records, path):
        written.append(path)
    path = os.path.join(workdir, "accuracy.png")
    if plot_accuracy(records, path):
        written.append(path)
    path = os.path.join(workdir, "confusion.png")
    if confusion is None:
        logging.info("No confusion matrix yet; %s not written", path)
    else:
        plot_confusion(confusion, class_names, path)
        written.append(path)
    return written
