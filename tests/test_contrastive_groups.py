"""Per-GPU contrastive groups, temperature-sampled CSI negatives and float32 features under bfloat16."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_wfi_csi_losses import _hardest_loop, _ssm_loop, _unit, _wfi_loop

from skclip_jax import csi, losses, steps, wfi


def options(**overrides):
    base = steps.StepOptions(
        train_size=16,
        test_size=16,
        sigma=0.6,
        with_limb=False,
        test_flip=False,
        activation="softmax",
        ssm_targets="batch",
        csi=True,
        csi_weight=1.0,
        csi_negatives="argmax",
        temperature_range=(0.001, 0.5),
        group_size=4,
    )
    return dataclasses.replace(base, **overrides)


def batch(seed=0, b=12, t=5, e=6, num_classes=4):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, num_classes, size=b)
    class_texts = rng.normal(size=(num_classes, e))
    frames = rng.normal(size=(b, t, e))
    return frames, class_texts[labels], labels, class_texts


def grouped(frames, texts, labels, temperature, **overrides):
    """steps.grouped_contrastive on NumPy inputs with a fixed key and `options(**overrides)`."""
    arrays = (jnp.asarray(frames), jnp.asarray(texts), jnp.asarray(labels))
    return steps.grouped_contrastive(*arrays, temperature, jax.random.key(0), options(**overrides))


def test_groups_equal_a_loop_over_groups():
    frames, texts, labels, _ = batch()
    labels[4:8] = 3  # one group with a single label: no negatives there.
    out = grouped(frames, texts, labels, 0.07)
    ssm_per_group, neg_text, neg_video, has_neg = [], [], [], []
    for g in range(3):
        rows = slice(4 * g, 4 * g + 4)
        loss, sim = _ssm_loop(frames[rows], texts[rows], labels[rows], 0.07)
        ssm_per_group.append(loss)
        np.testing.assert_allclose(np.asarray(out["pair_sim"][g]), sim, rtol=1e-5, atol=1e-6)
        nt, nv = _hardest_loop(sim, labels[rows])
        for i in range(4):
            if nt[i] is not None:
                neg_text.append((4 * g + i, 4 * g + nt[i]))
                neg_video.append((4 * g + i, 4 * g + nv[i]))
            has_neg.append(nt[i] is not None)
    np.testing.assert_allclose(float(out["ssm"]), np.mean(ssm_per_group), rtol=1e-5)
    np.testing.assert_array_equal(np.asarray(out["has_negative"]), has_neg)
    assert not any(has_neg[4:8])
    for row, want in neg_text:
        assert int(out["neg_text"][row]) == want
    for row, want in neg_video:
        assert int(out["neg_video"][row]) == want


def test_group_size_zero_is_the_whole_batch_loss():
    frames, texts, labels, _ = batch(1)
    out = grouped(frames, texts, labels, 0.07, group_size=0)
    sim = wfi.pairwise_similarity(jnp.asarray(frames), jnp.asarray(texts))
    np.testing.assert_allclose(
        float(out["ssm"]), float(losses.ssm_loss(sim, jnp.asarray(labels), 0.07)), rtol=1e-6
    )
    nt, nv, has = csi.hardest_negatives(sim, jnp.asarray(labels))
    np.testing.assert_array_equal(out["neg_text"], nt)
    np.testing.assert_array_equal(out["neg_video"], nv)
    np.testing.assert_array_equal(out["has_negative"], has)


def test_all_class_targets_take_in_group_columns():
    frames, _, labels, class_texts = batch(2)
    out = grouped(frames, class_texts, labels, 0.1, ssm_targets="all_classes")
    class_sim = np.asarray(wfi.pairwise_similarity(jnp.asarray(frames), jnp.asarray(class_texts)))
    for g in range(3):
        rows = np.arange(4 * g, 4 * g + 4)
        np.testing.assert_allclose(
            np.asarray(out["pair_sim"][g]), class_sim[rows][:, labels[rows]], rtol=1e-6
        )
    want = float(losses.ssm_loss_all_classes(jnp.asarray(class_sim), jnp.asarray(labels), 0.1))
    np.testing.assert_allclose(float(out["ssm"]), want, rtol=1e-5)


def test_sampled_negatives_follow_softmax_of_similarity_over_temperature():
    sim = jnp.array(
        [
            [0.9, 0.5, 0.3, 0.9],
            [0.2, 0.8, 0.6, 0.1],
            [0.4, 0.1, 0.7, 0.3],
            [0.9, 0.2, 0.0, 0.9],
        ]
    )
    labels = jnp.array([0, 1, 2, 0])
    temperature = 0.1
    draws = 20000
    keys = jax.random.split(jax.random.key(3), draws)
    neg_text, neg_video, _ = jax.vmap(
        lambda k: csi.hardest_negatives(sim, labels, "sample", k, temperature)
    )(keys)
    neg_text, neg_video = np.asarray(neg_text), np.asarray(neg_video)
    s = np.asarray(sim)
    same = np.asarray(labels)[:, None] == np.asarray(labels)[None, :]
    # The original: softmax(sim / temperature), positives zeroed, then torch.multinomial (renormalises).
    weights = np.where(same, 0.0, np.exp(s / temperature))
    for i in range(4):
        want = weights[i] / weights[i].sum()
        got = np.bincount(neg_text[:, i], minlength=4) / draws
        np.testing.assert_allclose(got, want, atol=0.015)
        want_v = weights[:, i] / weights[:, i].sum()
        got_v = np.bincount(neg_video[:, i], minlength=4) / draws
        np.testing.assert_allclose(got_v, want_v, atol=0.015)
    # At temperature 1 the same draw is close to uniform: the bug this guards against.
    row0 = weights[0] / weights[0].sum()
    assert row0[1] > 0.8


@pytest.mark.parametrize("activation", ["softmax", "sigmoid"])
def test_bf16_model_gives_float32_features_and_f32_wfi(activation):
    from skclip_jax.models import skclip, text

    bert_cfg = text.tiny_bert_config(40)
    kwargs = dict(
        slowonly_kwargs=dict(
            in_channels=17,
            base_channels=4,
            stage_blocks=(1, 1, 1),
            inflate=(0, 1, 1),
            spatial_strides=(2, 2, 2),
            temporal_strides=(1, 1, 2),
            conv1_kernel=(1, 7, 7),
        ),
        bert_config=bert_cfg,
        enc_token_id=39,
        embed_dim=16,
    )
    f32 = skclip.SkeletonCLIP(**kwargs)
    bf16 = skclip.SkeletonCLIP(**kwargs, dtype=jnp.bfloat16)
    volume = jax.random.uniform(jax.random.key(0), (2, 8, 16, 16, 17))
    ids = jnp.array([[1, 5, 6, 2], [1, 7, 2, 0]])
    mask = (ids > 0).astype(jnp.int32)
    variables = f32.init(jax.random.key(1), volume, ids, mask)
    frames_bf16, _ = bf16.apply(variables, volume, False, method=skclip.SkeletonCLIP.encode_video)
    texts_bf16 = bf16.apply(variables, ids, mask, False, method=skclip.SkeletonCLIP.encode_text)
    assert frames_bf16.dtype == jnp.float32 and texts_bf16.dtype == jnp.float32
    # WFI on them is float32 arithmetic: equal to a float64 loop over the same features (bfloat16 similarities
    # would be off by up to ~4e-3, i.e. ~0.06 logits at temperature 0.07).
    sim = wfi.pairwise_similarity(frames_bf16, texts_bf16, activation)
    frames64, texts64 = np.asarray(frames_bf16, np.float64), np.asarray(texts_bf16, np.float64)
    want = [
        [
            np.dot(_wfi_loop(frames64[i], texts64[j], activation), _unit(texts64[j]))
            for j in range(2)
        ]
        for i in range(2)
    ]
    assert sim.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(sim), np.array(want), atol=1e-5)
    # And the bf16 tower's features stay close to the f32 tower's.
    frames_f32, _ = f32.apply(variables, volume, False, method=skclip.SkeletonCLIP.encode_video)
    sim_f32 = wfi.pairwise_similarity(
        frames_f32,
        f32.apply(variables, ids, mask, False, method=skclip.SkeletonCLIP.encode_text),
        activation,
    )
    np.testing.assert_allclose(np.asarray(sim), np.asarray(sim_f32), atol=3e-2)
