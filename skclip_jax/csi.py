"""Contrastive Sample Identification (paper Sec. 3.2, Algorithm 2): hardest-negative mining and the match loss.

For each clip the most similar text of another label, and for each text the most similar clip of another label, form
the two mismatched pairs that the fusion head must tell apart from the matched pair. Pure array functions.
"""

from typing import Literal

import jax
import jax.numpy as jnp

NegativeMode = Literal["argmax", "sample"]


def hardest_negatives(
    sim: jax.Array,
    labels: jax.Array,
    mode: NegativeMode = "argmax",
    rng: jax.Array | None = None,
    temperature: jax.Array | float = 1.0,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Picks the most similar negative text per clip and negative clip per text (Eq. 1).

    Args:
      sim: [B, B] similarities, sim[i, j] between clip i and text j (text j is clip j's label prompt).
      labels: [B] integer labels; pairs with equal labels are never negatives.
      mode: "argmax" (the paper) or "sample" (draw from softmax(sim / temperature) over the negatives, as the
        original code, which zeroes the positives of that softmax and draws with torch.multinomial).
      rng: PRNG key, required for "sample".
      temperature: the SSM temperature; only "sample" uses it (cosines in [-1, 1] alone give a near-uniform draw).

    Returns:
      neg_text [B]: for clip i, the index j of its hardest negative text.
      neg_video [B]: for text j, the index i of its hardest negative clip.
      has_negative [B] bool: False where the batch holds no other label (indices are then arbitrary).
    """
    same = labels[:, None] == labels[None, :]
    masked = jnp.where(same, -jnp.inf, sim)
    # A row is all -inf only if every label equals this one; the clip and text side agree on that.
    has_negative = jnp.any(~same, axis=1)
    if mode == "argmax":
        neg_text = jnp.argmax(masked, axis=1)
        neg_video = jnp.argmax(masked, axis=0)
    elif mode == "sample":
        if rng is None:
            raise ValueError("hardest_negatives(mode='sample') needs an rng key")
        text_key, video_key = jax.random.split(rng)
        # categorical of -inf everywhere is undefined; give such rows a harmless uniform row instead.
        logits = masked / temperature
        safe = jnp.where(has_negative[:, None], logits, 0.0)
        safe_t = jnp.where(has_negative[None, :], logits, 0.0)
        neg_text = jax.random.categorical(text_key, safe, axis=1)
        neg_video = jax.random.categorical(video_key, safe_t, axis=0)
    else:
        raise ValueError(f"CSI negative mode must be 'argmax' or 'sample', got {mode!r}")
    return neg_text.astype(jnp.int32), neg_video.astype(jnp.int32), has_negative


def match_loss(logits: jax.Array, has_negative: jax.Array) -> jax.Array:
    """Cross-entropy of the 3B fusion pairs: matched (label 1), clip + hard text and hard clip + text (label 0).

    Args:
      logits: [3, B, 2] head outputs, ordered (positive, clip + negative text, negative clip + text).
      has_negative: [B] bool; the three pairs of a clip without a negative leave the loss (no Python branch).

    Returns:
      Scalar mean cross-entropy over the valid pairs; 0 when no pair is valid.
    """
    targets = jnp.array([1, 0, 0], dtype=jnp.int32)[:, None]
    log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    nll = -jnp.take_along_axis(
        log_probs, jnp.broadcast_to(targets, logits.shape[:2])[..., None], -1
    )[..., 0]
    weights = jnp.broadcast_to(has_negative[None, :], nll.shape).astype(jnp.float32)
    return jnp.sum(nll * weights) / jnp.maximum(jnp.sum(weights), 1.0)
