"""PoseConv3D, Table 4's baseline: the SkeletonCLIP++ video backbone (SlowOnly) with a linear head over class indices.

PYSKL's ``Recognizer3D`` with an ``I3DHead``: the feature map is averaged over T, H and W, dropped out and mapped
to one logit per class by a Linear layer (weights N(0, 0.01), bias 0, PYSKL's ``normal_init``). No text tower:
the classes are indices, so a trained classifier ranks only the classes it was trained on.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from skclip_jax.models import slowonly

# The networks `factory.build` builds from `config.model.kind`: SkeletonCLIP++ (models/skclip.py) or this
# classifier. The config validation takes its choice list from here.
MODEL_KINDS = ("skeletonclip", "poseconv3d")
CLASSIFIER_KIND = "poseconv3d"


class PoseConv3D(nn.Module):
    """SlowOnly over heatmap volumes, global average pooling, dropout and a Linear classifier.

    Attributes:
      slowonly_kwargs: SlowOnly constructor fields (in_channels, base_channels, stage_blocks, ...).
      num_classes: outputs of the linear head.
      dropout: dropout rate before the head (PYSKL's I3DHead: 0.5).
      init_std: standard deviation of the head's initial weights (PYSKL: 0.01).
      dtype: compute dtype of the backbone; the head computes in float32, parameters stay float32.
    """

    slowonly_kwargs: dict
    num_classes: int
    dropout: float = 0.5
    init_std: float = 0.01
    dtype: Any = jnp.float32

    def setup(self):
        # Named as SkeletonCLIP's video tower, so the backbone's parameter paths are the same in both models.
        self.video_encoder = slowonly.SlowOnly(**self.slowonly_kwargs, dtype=self.dtype)
        self.head_dropout = nn.Dropout(self.dropout)
        self.head = nn.Dense(
            self.num_classes,
            kernel_init=nn.initializers.normal(self.init_std),
            bias_init=nn.initializers.zeros,
            dtype=jnp.float32,
        )

    def encode(self, volume: jax.Array, train: bool) -> jax.Array:
        """Heatmap volumes [B, T, H, W, K] -> SlowOnly feature maps [B, T', H', W', C]."""
        return self.video_encoder(volume.astype(self.dtype), train=train)

    def classify(self, feature_map: jax.Array, train: bool) -> jax.Array:
        """Feature maps [B, T', H', W', C] -> class logits [B, L] float32 (pool over T, H, W; dropout; Linear)."""
        pooled = jnp.mean(feature_map, axis=(1, 2, 3), dtype=jnp.float32)
        return self.head(self.head_dropout(pooled, deterministic=not train))

    def __call__(self, volume: jax.Array, train: bool = False) -> jax.Array:
        """Heatmap volumes [B, T, H, W, K] -> class logits [B, L]."""
        return self.classify(self.encode(volume, train), train)
