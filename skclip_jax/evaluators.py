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


def seen_unseen_margins(probs: np.ndarray, unseen: np.ndarray) -> np.ndarray:
    """float [N]: each clip's best seen-class probability minus its best unseen-class probability."""
    is_seen_class = np.ones(probs.shape[-1], bool)
    is_seen_class[np.asarray(unseen, np.int64)] = False
    return probs[:, is_seen_class].max(-1) - probs[:, ~is_seen_class].max(-1)


def switching_curve(
    d: np.ndarray,
    seen_pred: np.ndarray,
    unseen_pred: np.ndarray,
    labels: np.ndarray,
    unseen: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """GZSL accuracies of a rule that gives each clip its seen-name choice until a threshold passes its value d
    and its unseen-name choice from there on, for every threshold at once.

    Calibrated stacking is such a rule (d = best seen minus best unseen probability, the threshold is the offset
    gamma), and so is the seen/unseen gate (d = the clip's similarity to its nearest seen name).

    Args:
      d: float [N] the threshold at which each clip switches to its unseen choice.
      seen_pred, unseen_pred: int [N] each clip's class among the seen / the unseen names.
      labels: int [N] true classes.
      unseen: int [U] held-out classes.

    Returns:
      (seen_acc, unseen_acc): float [K] each, in threshold order from -inf (all seen: (A_S, 0)) to +inf (all
      unseen: (0, A_U)), a point wherever either accuracy changes.
    """
    labels = np.asarray(labels, np.int64)
    on_seen = ~np.isin(labels, np.asarray(unseen, np.int64))
    n_seen, n_unseen = max(on_seen.sum(), 1), max((~on_seen).sum(), 1)
    # A clip's contribution while it keeps its seen choice, and after it switches.
    gain_before = (on_seen & (seen_pred == labels)) / n_seen
    gain_after = (~on_seen & (unseen_pred == labels)) / n_unseen
    thresholds = np.unique(d)
    order = np.argsort(d, kind="stable")
    d_sorted = d[order]
    # After passing threshold t, every clip with d <= t has switched.
    switched = np.searchsorted(d_sorted, thresholds, side="right")
    cum_before = np.concatenate([[0.0], np.cumsum(gain_before[order])])
    cum_after = np.concatenate([[0.0], np.cumsum(gain_after[order])])
    total_seen = gain_before.sum()
    seen_acc = np.concatenate([[total_seen], total_seen - cum_before[switched]])
    unseen_acc = np.concatenate([[0.0], cum_after[switched]])
    changed = np.concatenate([[True], (np.diff(seen_acc) != 0) | (np.diff(unseen_acc) != 0)])
    return seen_acc[changed], unseen_acc[changed]


def _seen_unseen_choices(probs: np.ndarray, unseen: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """int [N] each: the best seen and the best unseen class of every clip by `probs` [N, L]."""
    is_seen_class = np.ones(probs.shape[-1], bool)
    is_seen_class[np.asarray(unseen, np.int64)] = False
    seen_cls, unseen_cls = np.flatnonzero(is_seen_class), np.flatnonzero(~is_seen_class)
    return seen_cls[probs[:, seen_cls].argmax(-1)], unseen_cls[probs[:, unseen_cls].argmax(-1)]


def seen_unseen_curve(
    probs: np.ndarray, labels: np.ndarray, unseen: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """GZSL accuracies under calibrated stacking, for every calibration at once (Chao et al., 2016).

    Calibrated stacking predicts ``argmax_c probs[c] - gamma * [c is seen]``. A clip keeps its best seen class
    while ``gamma < d`` (``d`` = its best seen minus its best unseen probability) and takes its best unseen class
    from there on (`switching_curve`).

    Args:
      probs: float [N, L] clip probabilities over all L classes (the evaluation's view-averaged ones).
      labels: int [N] true classes.
      unseen: int [U] held-out classes (non-empty, not all classes).

    Returns:
      (seen_acc, unseen_acc) as `switching_curve`.
    """
    probs = np.asarray(probs, np.float64)
    best_seen, best_unseen = _seen_unseen_choices(probs, unseen)
    d = seen_unseen_margins(probs, unseen)
    return switching_curve(d, best_seen, best_unseen, labels, unseen)


def curve_area(seen_acc: np.ndarray, unseen_acc: np.ndarray) -> float:
    """The area under a seen-unseen accuracy curve (seen accuracy falling along it)."""
    x, y = seen_acc[::-1], unseen_acc[::-1]
    return float(np.sum((x[1:] - x[:-1]) * (y[1:] + y[:-1]) / 2.0))


def ausuc(probs: np.ndarray, labels: np.ndarray, unseen: np.ndarray) -> float:
    """Area under the seen-unseen accuracy curve (Chao et al., 2016): GZSL over every calibration.

    Unlike H at gamma = 0, it does not depend on how seen and unseen scores happen to be scaled, and unlike a
    calibrated H it chooses nothing on the test clips. 1 is perfect; a model that never gets an unseen clip right
    scores 0.
    """
    # The curve runs from (A_S, 0) to (0, A_U) with seen accuracy falling: integrate A_U over A_S.
    return curve_area(*seen_unseen_curve(probs, labels, unseen))


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
      gzsl_ausuc: the area under the seen-unseen accuracy curve over every calibration (`ausuc`);
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
        "gzsl_ausuc": ausuc(subset_probs(view_logits, everything), labels, unseen),
        "seen_top1": _accuracy(choose(~is_unseen, seen), labels[~is_unseen]),
    }


def calibrated_gzsl_metrics(
    view_logits: np.ndarray,
    labels: np.ndarray,
    calibration_view_logits: np.ndarray,
    calibration_labels: np.ndarray,
    unseen: np.ndarray,
    keep_seen: float = 0.95,
) -> dict[str, float]:
    """GZSL with calibrated stacking (Chao et al., 2016), its offset chosen on held-out seen-class clips only.

    A GZSL model trained on seen names scores seen names too high for every clip, so nearly every unseen clip
    is given a seen name (H ~ 0). Calibrated stacking subtracts an offset gamma from the seen classes'
    probabilities. No unseen clip may choose it, so gamma is the one that keeps `keep_seen` of the held-out seen
    clips of the training split on the seen side (their seen-minus-unseen margin above gamma), as an
    out-of-distribution detector is set to keep 95 % of in-distribution samples.

    Args:
      view_logits, labels: the test split (as `zero_shot_metrics`).
      calibration_view_logits, calibration_labels: held-out clips of seen classes (never trained on).
      unseen: int [U] held-out classes.
      keep_seen: fraction of calibration clips whose margin stays above gamma.

    Returns:
      gzsl_cal_seen / gzsl_cal_unseen / gzsl_cal_h: GZSL top-1 with gamma subtracted from the seen classes;
      gzsl_cal_gamma: the offset; calibration_seen_top1: the calibration clips' top-1 among the seen names
        (what a zero-shot run selects its best checkpoint on).
    """
    calibration_labels = np.asarray(calibration_labels, np.int64)
    unseen = np.unique(np.asarray(unseen, np.int64))
    if np.isin(calibration_labels, unseen).any() or calibration_labels.size == 0:
        raise ValueError("calibration clips must be a non-empty set of seen-class clips")
    num_classes = view_logits.shape[-1]
    everything, seen = np.arange(num_classes), np.setdiff1d(np.arange(num_classes), unseen)
    margins = seen_unseen_margins(subset_probs(calibration_view_logits, everything), unseen)
    gamma = float(np.quantile(margins, 1.0 - keep_seen))
    probs = subset_probs(view_logits, everything)
    shifted = probs - np.where(np.isin(everything, unseen), 0.0, gamma)
    pred = shifted.argmax(-1)
    labels = np.asarray(labels, np.int64)
    is_unseen = np.isin(labels, unseen)
    cal_seen = _accuracy(pred[~is_unseen], labels[~is_unseen])
    cal_unseen = _accuracy(pred[is_unseen], labels[is_unseen])
    cal_pred = seen[subset_probs(calibration_view_logits, seen).argmax(-1)]
    return {
        "gzsl_cal_seen": cal_seen,
        "gzsl_cal_unseen": cal_unseen,
        "gzsl_cal_h": harmonic_mean(cal_seen, cal_unseen),
        "gzsl_cal_gamma": gamma,
        "calibration_seen_top1": _accuracy(cal_pred, calibration_labels),
    }


def nearest_seen_similarity(
    view_logits: np.ndarray, unseen: np.ndarray, temperature: float
) -> np.ndarray:
    """float [N]: each clip's cosine similarity to its nearest seen name, averaged over its views.

    It is what the seen/unseen gate reads: unlike a probability, which the low temperature saturates near 1 for
    seen and unseen clips alike, the similarity itself stays lower for clips of actions the run never trained on.
    """
    view_logits = np.asarray(view_logits, np.float64)
    is_seen_class = ~np.isin(np.arange(view_logits.shape[-1]), np.asarray(unseen, np.int64))
    return view_logits.mean(axis=1)[:, is_seen_class].max(-1) * float(temperature)


def gated_gzsl_metrics(
    view_logits: np.ndarray,
    labels: np.ndarray,
    calibration_view_logits: np.ndarray,
    unseen: np.ndarray,
    temperature: float,
    keep_seen: float = 0.95,
) -> dict[str, float]:
    """GZSL with a seen/unseen gate (as Socher et al., 2013, gate novel classes), set on held-out seen clips only.

    A clip whose similarity to its nearest seen name (`nearest_seen_similarity`) reaches the threshold chooses
    among the seen names, any other clip among the unseen names. The threshold keeps `keep_seen` of the held-out
    seen-class clips of the training split on the seen side, as calibrated stacking's offset does; no unseen
    clip chooses it.

    Args:
      view_logits, labels: the test split (as `zero_shot_metrics`).
      calibration_view_logits: held-out clips of seen classes (never trained on).
      unseen: int [U] held-out classes.
      temperature: the run's temperature (view_logits = similarity / temperature).
      keep_seen: fraction of calibration clips kept on the seen side.

    Returns:
      gzsl_gate_seen / gzsl_gate_unseen / gzsl_gate_h: GZSL top-1 through the gate; gzsl_gate_threshold: the
      similarity threshold; gzsl_gate_ausuc: the area under the gate's seen-unseen curve over every threshold
      (chosen on nothing, as `ausuc` for calibrated stacking).
    """
    labels = np.asarray(labels, np.int64)
    unseen = np.unique(np.asarray(unseen, np.int64))
    num_classes = view_logits.shape[-1]
    seen = np.setdiff1d(np.arange(num_classes), unseen)
    threshold = float(
        np.quantile(
            nearest_seen_similarity(calibration_view_logits, unseen, temperature), 1.0 - keep_seen
        )
    )
    similarity = nearest_seen_similarity(view_logits, unseen, temperature)
    seen_pred = seen[subset_probs(view_logits, seen).argmax(-1)]
    unseen_pred = unseen[subset_probs(view_logits, unseen).argmax(-1)]
    pred = np.where(similarity >= threshold, seen_pred, unseen_pred)
    is_unseen = np.isin(labels, unseen)
    gate_seen = _accuracy(pred[~is_unseen], labels[~is_unseen])
    gate_unseen = _accuracy(pred[is_unseen], labels[is_unseen])
    # A clip switches to its unseen choice once the threshold passes its similarity.
    curve = switching_curve(similarity, seen_pred, unseen_pred, labels, unseen)
    return {
        "gzsl_gate_seen": gate_seen,
        "gzsl_gate_unseen": gate_unseen,
        "gzsl_gate_h": harmonic_mean(gate_seen, gate_unseen),
        "gzsl_gate_threshold": threshold,
        "gzsl_gate_ausuc": curve_area(*curve),
    }


def checkpoint_metrics(eval_metrics: dict[str, float] | None) -> dict[str, float] | None:
    """The metrics the checkpoint manager ranks by ("top1"), never computed from unseen-class clips.

    In a zero-shot run the kept best checkpoint is chosen on seen-class clips among the seen names: the
    held-out calibration clips of the training split when the run has them ("calibration_seen_top1"), else
    the test split's seen-class clips ("seen_top1"); otherwise on the all-class top-1, as before.
    """
    if eval_metrics is None:
        return None
    for key in ("calibration_seen_top1", "seen_top1"):
        if key in eval_metrics:
            return {"top1": eval_metrics[key]}
    return eval_metrics
