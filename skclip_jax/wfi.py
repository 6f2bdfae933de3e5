"""Weighted Frame Integration (paper Sec. 3.1, Algorithm 1): text-conditioned pooling of frame features.

A clip's frames are weighted by their cosine similarity to a text feature, so the video feature that is compared
with a class text emphasises the frames that look like that class. Pure array functions, no parameters.
"""

from typing import Literal

import jax
import jax.numpy as jnp

Activation = Literal["softmax", "sigmoid", "mean"]
ACTIVATIONS = ("softmax", "sigmoid", "mean")

# Table 1's sigmoid variant squashes cosines in [-1, 1] with this gain (as the original code).
SIGMOID_GAIN = 10.0


def l2_normalize(x: jax.Array, axis: int = -1, eps: float = 1e-12) -> jax.Array:
    """x / max(||x||, eps), as torch.nn.functional.normalize, so zero vectors stay finite."""
    norm = jnp.sqrt(jnp.sum(jnp.square(x), axis=axis, keepdims=True))
    return x / jnp.maximum(norm, eps)


def frame_weights(cosines: jax.Array, activation: Activation) -> jax.Array:
    """Turns frame-text cosines [..., T] into frame weights [..., T] (the last axis is time)."""
    if activation == "softmax":
        return jax.nn.softmax(cosines, axis=-1)
    if activation == "sigmoid":
        return jax.nn.sigmoid(SIGMOID_GAIN * cosines)
    if activation == "mean":
        return jnp.full_like(cosines, 1.0 / cosines.shape[-1])
    raise ValueError(f"WFI activation must be one of {ACTIVATIONS}, got {activation!r}")


def weighted_frame_integration(
    frame_feats: jax.Array, text_feats: jax.Array, activation: Activation = "softmax"
) -> jax.Array:
    """Pools each clip's frames with weights from their similarity to the clip's own text.

    Args:
      frame_feats: [B, T, C] frame features in the joint space.
      text_feats: [B, C] one text feature per clip.
      activation: "softmax" over frames (paper), "sigmoid" (Table 1) or "mean" (WFI off, Table 2 baseline).

    Returns:
      [B, C] L2-normalised video features e_v = normalize(sum_t a_t f_t).
    """
    cosines = jnp.einsum("btc,bc->bt", l2_normalize(frame_feats), l2_normalize(text_feats))
    weights = frame_weights(cosines, activation)
    return l2_normalize(jnp.einsum("bt,btc->bc", weights, frame_feats))


def class_conditioned_features(
    frame_feats: jax.Array, class_feats: jax.Array, activation: Activation = "softmax"
) -> jax.Array:
    """WFI of every clip conditioned on every class text, for scoring a clip against all L classes.

    Args:
      frame_feats: [B, T, C] frame features.
      class_feats: [L, C] text features of the L class prompts.
      activation: as in `weighted_frame_integration`.

    Returns:
      [B, L, C] L2-normalised video features, entry [b, l] pooled with weights from class l.
    """
    cosines = jnp.einsum("btc,lc->blt", l2_normalize(frame_feats), l2_normalize(class_feats))
    weights = frame_weights(cosines, activation)
    return l2_normalize(jnp.einsum("blt,btc->blc", weights, frame_feats))


def pairwise_similarity(
    frame_feats: jax.Array, text_feats: jax.Array, activation: Activation = "softmax"
) -> jax.Array:
    """Cosine similarity of WFI(video i | text j) with text j, for every (i, j) pair.

    Args:
      frame_feats: [B, T, C] frame features of B clips.
      text_feats: [N, C] N text features (the batch's own prompts, or all L class prompts).

    Returns:
      [B, N] similarities in [-1, 1], before the temperature.
    """
    video = class_conditioned_features(frame_feats, text_feats, activation)
    return jnp.einsum("bnc,nc->bn", video, l2_normalize(text_feats))
