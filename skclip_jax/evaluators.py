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


# Zero-shot protocols (data.unseen_classes). The literature's figures (SynSE, TDSM) are clip-level
# top-1 accuracies, as `top1` above: ZSL among the unseen names only, GZSL among all names.


def subset_probs(view_logits: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """Probabilities over a subset of the classes, with the run's test-time protocol.

    The softmax is taken per view over the chosen classes only, then averaged over the views, exactly as the
    evaluation over all classes does (restricting already-averaged probabilities would rank differently).

    Args:
      view_logits: float [N, V, L] similarity / temperature of every view of N clips against L classes.
      classes: int [C] class indices to choose among.

    Returns:
      float [N, C] probabilities, column c for class classes[c].
    """
    logits = np.asarray(view_logits, np.float64)[..., np.asarray(classes, np.int64)]
    logits = logits - logits.max(-1, keepdims=True)
    probs = np.exp(logits)
    probs /= probs.sum(-1, keepdims=True)
    return probs.mean(axis=1)


def _accuracy(pred: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(pred == labels)) if labels.size else float("nan")


def harmonic_mean(seen: float, unseen: float) -> float:
    """H = 2SU / (S + U), the GZSL summary (0 when both are 0)."""
    return 0.0 if seen + unseen == 0 else 2.0 * seen * unseen / (seen + unseen)


def zero_shot_metrics(
    view_logits: np.ndarray, labels: np.ndarray, unseen: np.ndarray
) -> dict[str, float]:
    """ZSL and GZSL top-1 of a test split whose classes `unseen` were held out of training.

    Args:
      view_logits: float [N, V, L] per-view logits (similarity / temperature) against all L classes.
      labels: int [N] true classes in [0, L).
      unseen: int [U] held-out classes.

    Returns:
      zsl_top1: unseen-class clips, choosing among the unseen names only;
      gzsl_seen / gzsl_unseen: seen- / unseen-class clips, choosing among all L names;
      gzsl_h: their harmonic mean 2SU / (S + U);
      seen_top1: seen-class clips among the seen names only (what a zero-shot run may select on, as it
        never looks at an unseen clip). A figure with no clips to average is NaN.
    """
    view_logits = np.asarray(view_logits)
    labels = np.asarray(labels, np.int64)
    num_classes = view_logits.shape[-1]
    if view_logits.ndim != 3 or labels.shape != view_logits.shape[:1]:
        raise ValueError(
            f"expected view_logits [N, V, L] and labels [N], got {view_logits.shape} and {labels.shape}"
        )
    unseen = np.unique(np.asarray(unseen, np.int64))
    if unseen.size == 0 or unseen.min() < 0 or unseen.max() >= num_classes:
        raise ValueError(
            f"unseen classes must be non-empty and lie in [0, {num_classes}), got {unseen}"
        )
    seen = np.setdiff1d(np.arange(num_classes), unseen)
    is_unseen = np.isin(labels, unseen)

    def choose(rows: np.ndarray, classes: np.ndarray) -> np.ndarray:
        if not rows.any():
            return np.zeros(0, np.int64)
        return classes[subset_probs(view_logits[rows], classes).argmax(-1)]

    everything = np.arange(num_classes)
    gzsl_seen = _accuracy(choose(~is_unseen, everything), labels[~is_unseen])
    gzsl_unseen = _accuracy(choose(is_unseen, everything), labels[is_unseen])
    return {
        "zsl_top1": _accuracy(choose(is_unseen, unseen), labels[is_unseen]),
        "gzsl_seen": gzsl_seen,
        "gzsl_unseen": gzsl_unseen,
        "gzsl_h": harmonic_mean(gzsl_seen, gzsl_unseen),
        "seen_top1": _accuracy(choose(~is_unseen, seen), labels[~is_unseen]),
    }


def checkpoint_metrics(eval_metrics: dict[str, float] | None) -> dict[str, float] | None:
    """The metrics the checkpoint manager ranks by ("top1"), never computed from unseen-class clips.

    In a zero-shot run (its metrics carry "seen_top1") the kept best checkpoint is chosen on the seen
    classes' clips among the seen names; otherwise on the all-class top-1, as before.
    """
    if eval_metrics is None or "seen_top1" not in eval_metrics:
        return eval_metrics
    return {"top1": eval_metrics["seen_top1"]}
