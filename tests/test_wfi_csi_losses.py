"""WFI, SSM and CSI against plain-loop NumPy implementations of the paper's Algorithms 1 and 2."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from skclip_jax import csi, losses, wfi


def _unit(v):
    return v / max(math.sqrt(float(np.dot(v, v))), 1e-12)


def _wfi_loop(frames, text, activation):
    """Algorithm 1, one clip, frame by frame."""
    t_unit = _unit(text)
    scores = [float(np.dot(_unit(f), t_unit)) for f in frames]
    if activation == "softmax":
        m = max(scores)
        exps = [math.exp(s - m) for s in scores]
        weights = [e / sum(exps) for e in exps]
    elif activation == "sigmoid":
        weights = [1.0 / (1.0 + math.exp(-10.0 * s)) for s in scores]
    else:
        weights = [1.0 / len(scores)] * len(scores)
    pooled = sum(w * f for w, f in zip(weights, frames, strict=True))
    return _unit(pooled)


@pytest.mark.parametrize("activation", ["softmax", "sigmoid", "mean"])
def test_wfi_matches_algorithm_1(activation):
    rng = np.random.default_rng(0)
    frames = rng.normal(size=(4, 7, 5)).astype(np.float64)
    texts = rng.normal(size=(4, 5))
    got = np.asarray(
        wfi.weighted_frame_integration(jnp.asarray(frames), jnp.asarray(texts), activation)
    )
    want = np.stack([_wfi_loop(frames[b], texts[b], activation) for b in range(4)])
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("activation", ["softmax", "sigmoid"])
def test_class_conditioned_features_matches_loop(activation):
    rng = np.random.default_rng(1)
    frames = rng.normal(size=(3, 6, 4))
    classes = rng.normal(size=(5, 4))
    got = np.asarray(
        wfi.class_conditioned_features(jnp.asarray(frames), jnp.asarray(classes), activation)
    )
    for b in range(3):
        for c in range(5):
            np.testing.assert_allclose(
                got[b, c], _wfi_loop(frames[b], classes[c], activation), rtol=1e-5, atol=1e-6
            )


def test_wfi_softmax_emphasises_matching_frame():
    text = np.array([1.0, 0.0])
    frames = np.array([[[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]]])
    pooled = np.asarray(
        wfi.weighted_frame_integration(jnp.asarray(frames), jnp.asarray(text[None]))
    )
    mean = np.asarray(
        wfi.weighted_frame_integration(jnp.asarray(frames), jnp.asarray(text[None]), "mean")
    )
    assert pooled[0, 0] > mean[0, 0]  # WFI leans towards the frame that matches the text.


def test_unknown_activation_is_an_error():
    with pytest.raises(ValueError, match="activation"):
        wfi.weighted_frame_integration(jnp.ones((1, 2, 3)), jnp.ones((1, 3)), "relu")


def _ssm_loop(frames, texts, labels, temperature):
    b = len(labels)
    sim = np.array(
        [
            [np.dot(_wfi_loop(frames[i], texts[j], "softmax"), _unit(texts[j])) for j in range(b)]
            for i in range(b)
        ]
    )
    logits = sim / temperature

    def ce(mat):
        total = 0.0
        for i in range(b):
            positives = [j for j in range(b) if labels[j] == labels[i]]
            m = max(mat[i])
            log_z = m + math.log(sum(math.exp(x - m) for x in mat[i]))
            total += -sum((mat[i][j] - log_z) / len(positives) for j in positives)
        return total / b

    return 0.5 * (ce(logits) + ce(logits.T)), sim


def test_ssm_loss_matches_loop():
    rng = np.random.default_rng(2)
    frames = rng.normal(size=(6, 5, 4))
    texts = rng.normal(size=(6, 4))
    labels = np.array([0, 1, 0, 2, 1, 3])
    texts[2] = texts[0]  # same label, same prompt, as in training.
    texts[4] = texts[1]
    want, want_sim = _ssm_loop(frames, texts, labels, 0.07)
    sim = wfi.pairwise_similarity(jnp.asarray(frames), jnp.asarray(texts))
    np.testing.assert_allclose(np.asarray(sim), want_sim, rtol=1e-5, atol=1e-6)
    got = losses.ssm_loss(sim, jnp.asarray(labels), jnp.float32(0.07))
    np.testing.assert_allclose(float(got), want, rtol=1e-5)


def test_ssm_all_classes_is_cross_entropy_on_own_class():
    sim = jnp.array([[0.9, 0.1, -0.2], [0.0, 0.5, 0.4]])
    labels = jnp.array([0, 2])
    t = 0.5
    want = -np.mean(
        [
            (0.9 / t) - np.log(np.sum(np.exp(np.array([0.9, 0.1, -0.2]) / t))),
            (0.4 / t) - np.log(np.sum(np.exp(np.array([0.0, 0.5, 0.4]) / t))),
        ]
    )
    np.testing.assert_allclose(float(losses.ssm_loss_all_classes(sim, labels, t)), want, rtol=1e-6)


def _hardest_loop(sim, labels):
    """Algorithm 2's FindMostSimilarNegativeSample for every clip and every text."""
    b = len(labels)
    neg_text, neg_video = [], []
    for i in range(b):
        best, best_j = -np.inf, None
        for j in range(b):
            if labels[j] != labels[i] and sim[i, j] > best:
                best, best_j = sim[i, j], j
        neg_text.append(best_j)
    for j in range(b):
        best, best_i = -np.inf, None
        for i in range(b):
            if labels[i] != labels[j] and sim[i, j] > best:
                best, best_i = sim[i, j], i
        neg_video.append(best_i)
    return neg_text, neg_video


def test_hardest_negatives_match_algorithm_2():
    rng = np.random.default_rng(3)
    for trial in range(20):
        b = int(rng.integers(2, 9))
        labels = rng.integers(0, 3, size=b)
        if len(set(labels.tolist())) == 1:
            labels[0] = (labels[0] + 1) % 3
        sim = rng.normal(size=(b, b))
        nt, nv, has = csi.hardest_negatives(jnp.asarray(sim), jnp.asarray(labels))
        want_t, want_v = _hardest_loop(sim, labels)
        assert np.asarray(has).all(), trial
        assert np.asarray(nt).tolist() == want_t, trial
        assert np.asarray(nv).tolist() == want_v, trial
        assert all(labels[j] != labels[i] for i, j in enumerate(np.asarray(nt)))


def test_hardest_negatives_skip_same_label_even_when_most_similar():
    sim = jnp.array([[0.1, 0.99, 0.5], [0.99, 0.1, 0.2], [0.3, 0.4, 0.0]])
    labels = jnp.array([0, 0, 1])
    nt, nv, has = csi.hardest_negatives(sim, labels)
    assert np.asarray(nt).tolist() == [2, 2, 1]  # clip 0 may not pick text 1 (same label).
    assert np.asarray(nv).tolist() == [2, 2, 0]  # text 2 takes clip 0 (0.5 > 0.2).
    assert np.asarray(has).all()


def test_all_same_label_batch_has_no_negative_and_zero_match_loss():
    sim = jnp.eye(4)
    nt, nv, has = csi.hardest_negatives(sim, jnp.zeros(4, jnp.int32))
    assert not np.asarray(has).any()
    logits = jax.random.normal(jax.random.key(0), (3, 4, 2))
    assert float(csi.match_loss(logits, has)) == 0.0


def test_sampled_negatives_are_never_same_label():
    rng = np.random.default_rng(4)
    labels = jnp.asarray(rng.integers(0, 3, size=8))
    sim = jnp.asarray(rng.normal(size=(8, 8)))
    for k in range(10):
        nt, nv, has = csi.hardest_negatives(sim, labels, "sample", jax.random.key(k))
        lab = np.asarray(labels)
        assert (lab[np.asarray(nt)] != lab).all()
        assert (lab[np.asarray(nv)] != lab).all()


def test_match_loss_matches_cross_entropy_loop():
    rng = np.random.default_rng(5)
    logits = rng.normal(size=(3, 4, 2))
    want = 0.0
    for kind, target in enumerate([1, 0, 0]):
        for i in range(4):
            row = logits[kind, i]
            want += -(row[target] - np.log(np.exp(row).sum()))
    want /= 12
    got = csi.match_loss(jnp.asarray(logits), jnp.ones(4, bool))
    np.testing.assert_allclose(float(got), want, rtol=1e-6)
