"""Host-side metrics against hand-computed values and plain-loop references."""

import numpy as np
import pytest

from skclip_jax import evaluators

# 4 examples, 6 classes; ranks of the true class: 1st, 3rd, 6th, 2nd.
PROBS = np.array(
    [
        [0.50, 0.10, 0.10, 0.10, 0.10, 0.10],  # label 0: top-1
        [0.30, 0.05, 0.25, 0.20, 0.10, 0.10],  # label 3: rank 3 -> top-5 only
        [0.20, 0.20, 0.20, 0.20, 0.19, 0.01],  # label 5: last -> neither
        [0.10, 0.40, 0.30, 0.05, 0.05, 0.10],  # label 2: rank 2 -> top-5 only
    ]
)
LABELS = np.array([0, 3, 5, 2])


def test_hand_computed():
    m = evaluators.classification_metrics(PROBS, LABELS)
    assert m["top1"] == pytest.approx(1 / 4)
    assert m["top5"] == pytest.approx(3 / 4)
    # Each class present once; only class 0 is right: (1 + 0 + 0 + 0) / 4.
    assert m["mean_class_accuracy"] == pytest.approx(1 / 4)
    assert all(isinstance(v, float) for v in m.values())


def test_mean_class_accuracy_weights_classes_not_examples():
    # Class 0: 3 examples, all right; class 1: 1 example, wrong.
    probs = np.array([[0.9, 0.1]] * 4)
    labels = np.array([0, 0, 0, 1])
    m = evaluators.classification_metrics(probs, labels)
    assert m["top1"] == pytest.approx(0.75)
    assert m["mean_class_accuracy"] == pytest.approx((1.0 + 0.0) / 2)


def test_mean_class_accuracy_ignores_classes_absent_from_labels():
    # Class 2 is predicted but never true: it is not averaged in (mmaction2 would add a 0).
    probs = np.array([[0.8, 0.1, 0.1], [0.1, 0.1, 0.8], [0.1, 0.8, 0.1]])
    labels = np.array([0, 1, 1])
    m = evaluators.classification_metrics(probs, labels)
    assert m["mean_class_accuracy"] == pytest.approx((1.0 + 0.5) / 2)


def test_ties_go_to_the_lower_class_like_argmax():
    probs = np.full((2, 4), 0.25)
    assert evaluators.top_k_accuracy(probs, np.array([0, 3]), 1) == 0.5
    assert evaluators.top_k_accuracy(probs, np.array([3, 3]), 3) == 0.0
    # Fewer classes than k: everything is in the top k.
    assert evaluators.top_k_accuracy(probs[:, :3], np.array([2, 1]), 5) == 1.0


def _loop_reference(probs, labels):
    n, num_classes = probs.shape
    top1 = top5 = 0
    for i in range(n):
        rank = sum(
            1
            for c in range(num_classes)
            if probs[i, c] > probs[i, labels[i]]
            or (probs[i, c] == probs[i, labels[i]] and c < labels[i])
        )
        top1 += rank < 1
        top5 += rank < 5
    recalls = []
    for c in range(num_classes):
        idx = [i for i in range(n) if labels[i] == c]
        if idx:
            recalls.append(sum(int(np.argmax(probs[i]) == c) for i in idx) / len(idx))
    cm = np.zeros((num_classes, num_classes), int)
    for i in range(n):
        cm[labels[i], int(np.argmax(probs[i]))] += 1
    return top1 / n, top5 / n, sum(recalls) / len(recalls), cm


@pytest.mark.parametrize("seed", range(5))
def test_matches_plain_loops(seed):
    rng = np.random.default_rng(seed)
    n, num_classes = 200, 17
    labels = rng.integers(0, num_classes - 2, n)  # some classes never occur
    # Quantised logits make ties common; a bias towards the label makes accuracy non-trivial.
    logits = np.round(rng.normal(size=(n, num_classes)), 1)
    logits[np.arange(n), labels] += rng.uniform(0, 2, n)
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    top1, top5, mca, cm = _loop_reference(probs, labels)
    m = evaluators.classification_metrics(probs, labels)
    assert m["top1"] == pytest.approx(top1)
    assert m["top5"] == pytest.approx(top5)
    assert m["mean_class_accuracy"] == pytest.approx(mca)
    got = evaluators.confusion_matrix(probs.argmax(-1), labels, num_classes)
    np.testing.assert_array_equal(got, cm)
    assert got.sum() == n and np.trace(got) / n == pytest.approx(top1)


def test_confusion_matrix_rows_are_true_classes():
    cm = evaluators.confusion_matrix(np.array([1, 1, 2]), np.array([0, 1, 1]), 4)
    expected = np.zeros((4, 4), int)
    expected[0, 1] = 1
    expected[1, 1] = 1
    expected[1, 2] = 1
    np.testing.assert_array_equal(cm, expected)


@pytest.mark.parametrize(
    "probs, labels",
    [
        (np.zeros((3, 4)), np.zeros(2, int)),  # N mismatch
        (np.zeros(4), np.zeros(4, int)),  # not 2-D
        (np.zeros((2, 4)), np.array([0, 4])),  # label out of range
        (np.zeros((0, 4)), np.zeros(0, int)),  # empty
    ],
)
def test_bad_inputs_raise(probs, labels):
    with pytest.raises(ValueError):
        evaluators.classification_metrics(probs, labels)


def test_confusion_matrix_range_check():
    with pytest.raises(ValueError, match="preds"):
        evaluators.confusion_matrix(np.array([5]), np.array([0]), 3)
