"""Classification metrics over a whole test split, on the host in NumPy (after one device_get).

The definitions follow mmaction2's `top_k_accuracy` and `mean_class_accuracy`, which produced the
paper's numbers, with two deliberate, documented choices where mmaction2 is loose:
  * ties: classes are ranked by descending score, equal scores by ascending class index, so top-1
    always agrees with `np.argmax` (mmaction2's unstable argsort leaves tie order unspecified);
  * mean class accuracy averages per-class recall over the classes present in `labels`. mmaction2
    also averages in a 0 for every class that is predicted but absent from `labels`; the two agree
    whenever the test split contains every class, as all the paper's splits do.
"""

import numpy as np


def _check(probs: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    probs = np.asarray(probs)
    labels = np.asarray(labels)
    if probs.ndim != 2 or labels.ndim != 1 or probs.shape[0] != labels.shape[0]:
        raise ValueError(
            f"expected probs [N, L] and labels [N], got {probs.shape} and {labels.shape}"
        )
    if labels.shape[0] == 0:
        raise ValueError("no examples to evaluate (N = 0)")
    if labels.min() < 0 or labels.max() >= probs.shape[1]:
        raise ValueError(
            f"labels must lie in [0, {probs.shape[1]}), got [{labels.min()}, {labels.max()}]"
        )
    return probs, labels.astype(np.int64)


def top_k_accuracy(probs: np.ndarray, labels: np.ndarray, k: int) -> float:
    """Fraction of examples whose label is among their k highest-scoring classes (k > L: all)."""
    probs, labels = _check(probs, labels)
    # Stable sort of negated scores: ties go to the lower class index, as np.argmax.
    top = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    return float(np.mean(np.any(top == labels[:, None], axis=1)))


def confusion_matrix(preds: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Counts [L, L]: entry (i, j) is the number of examples of true class i predicted as j.

    Args:
      preds: int [N] predicted classes.
      labels: int [N] true classes.
      num_classes: L; every class gets a row and a column, seen or not.
    """
    preds = np.asarray(preds, np.int64)
    labels = np.asarray(labels, np.int64)
    if preds.shape != labels.shape or preds.ndim != 1:
        raise ValueError(f"preds and labels must both be [N], got {preds.shape}, {labels.shape}")
    for name, x in (("preds", preds), ("labels", labels)):
        if x.size and (x.min() < 0 or x.max() >= num_classes):
            raise ValueError(f"{name} must lie in [0, {num_classes}), got [{x.min()}, {x.max()}]")
    counts = np.bincount(labels * num_classes + preds, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes)


def mean_class_accuracy(probs: np.ndarray, labels: np.ndarray) -> float:
    """Mean over the classes present in `labels` of per-class recall (balanced accuracy)."""
    probs, labels = _check(probs, labels)
    cm = confusion_matrix(probs.argmax(axis=1), labels, probs.shape[1])
    support = cm.sum(axis=1)
    present = support > 0
    return float(np.mean(np.diag(cm)[present] / support[present]))


def classification_metrics(probs: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Top-1, top-5 and mean class accuracy, the metrics of the paper's tables.

    Args:
      probs: float [N, L] class scores per test video (views already averaged); any monotone
        score works, only the ranking matters.
      labels: int [N] true classes in [0, L).

    Returns:
      {"top1", "top5", "mean_class_accuracy"} as Python floats in [0, 1].
    """
    return {
        "top1": top_k_accuracy(probs, labels, 1),
        "top5": top_k_accuracy(probs, labels, 5),
        "mean_class_accuracy": mean_class_accuracy(probs, labels),
    }
