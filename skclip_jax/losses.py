"""Semantic Similarity Matching loss (paper Sec. 3.3): CLIP-style soft-target cross-entropy with a temperature.

The paper calls it a KL loss; with fixed soft targets KL and cross-entropy differ by the targets' entropy, a constant,
so the original (and this) minimises the cross-entropy.
"""

import jax
import jax.numpy as jnp


def soft_targets(row_labels: jax.Array, col_labels: jax.Array) -> jax.Array:
    """[R, C] same-label matrix, each row normalised to sum to 1 (rows with no match are all zero)."""
    same = (row_labels[:, None] == col_labels[None, :]).astype(jnp.float32)
    return same / jnp.maximum(jnp.sum(same, axis=1, keepdims=True), 1.0)


def soft_cross_entropy(logits: jax.Array, targets: jax.Array) -> jax.Array:
    """Mean over rows of -sum_j targets[i, j] log softmax(logits[i])_j."""
    return -jnp.mean(jnp.sum(targets * jax.nn.log_softmax(logits, axis=-1), axis=-1))


def ssm_loss(sim: jax.Array, labels: jax.Array, temperature: jax.Array) -> jax.Array:
    """Bidirectional soft-target loss over a batch of (clip, own-label text) pairs.

    Args:
      sim: [B, B] cosine similarities, sim[i, j] between clip i (WFI-pooled with text j) and text j.
      labels: [B] integer labels; every pair with equal labels is a positive.
      temperature: scalar > 0.

    Returns:
      Scalar (CE(video->text) + CE(text->video)) / 2.
    """
    logits = sim.astype(jnp.float32) / temperature
    targets = soft_targets(labels, labels)
    return 0.5 * (soft_cross_entropy(logits, targets) + soft_cross_entropy(logits.T, targets))


def ssm_loss_all_classes(sim: jax.Array, labels: jax.Array, temperature: jax.Array) -> jax.Array:
    """Video->text cross-entropy over all L class texts (the original code's final variant).

    Args:
      sim: [B, L] similarities between each clip (WFI-pooled with class l) and class text l.
      labels: [B] integer labels in [0, L).
      temperature: scalar > 0.
    """
    logits = sim.astype(jnp.float32) / temperature
    targets = jax.nn.one_hot(labels, sim.shape[1], dtype=jnp.float32)
    return soft_cross_entropy(logits, targets)
