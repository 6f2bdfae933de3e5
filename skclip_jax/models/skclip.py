"""The SkeletonCLIP++ two-tower model: SlowOnly frames, BERT text, joint-space projections, temperature, match head.

The module only computes features; WFI, SSM and CSI live in pure functions (`wfi`, `losses`, `csi`) that the train
and eval steps call on its outputs, so each piece of the paper can be tested on its own.
"""

from typing import Any, Literal

import flax.linen as nn
import jax
import jax.numpy as jnp

from skclip_jax.models import slowonly, text

Mapping = Literal["linear", "residual"]


class JointProjection(nn.Module):
    """Maps features into the joint space: `linear` (paper default) or `residual` (Table 1's non-linear mapping).

    `residual` is Dense -> GELU -> Dense plus a Dense shortcut, as the original's residual embedder.
    """

    features: int
    mapping: Mapping = "linear"
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        if self.mapping == "linear":
            return nn.Dense(self.features, dtype=self.dtype, name="linear")(x)
        if self.mapping == "residual":
            h = nn.Dense(self.features, dtype=self.dtype, name="hidden")(x)
            h = nn.Dense(self.features, dtype=self.dtype, name="out")(nn.gelu(h, approximate=False))
            return h + nn.Dense(self.features, dtype=self.dtype, name="shortcut")(x)
        raise ValueError(f"mapping must be 'linear' or 'residual', got {self.mapping!r}")


class MatchHead(nn.Module):
    """CSI's match/no-match classifier on the fused [ENC] state: `linear` (the paper's) or `mlp`.

    `mlp` (Dense -> GELU -> Dense) can form the product of the text and clip evidence in [ENC] by itself; a
    linear head needs BERT's own layers to form it, which at BERT's x0.01 learning rate takes thousands of steps.
    """

    kind: str = "linear"
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        if self.kind == "linear":
            return nn.Dense(2, dtype=self.dtype, name="linear")(x)
        if self.kind == "mlp":
            h = nn.gelu(
                nn.Dense(x.shape[-1], dtype=self.dtype, name="hidden")(x), approximate=False
            )
            return nn.Dense(2, dtype=self.dtype, name="out")(h)
        raise ValueError(f"match_head must be 'linear' or 'mlp', got {self.kind!r}")


class SkeletonCLIP(nn.Module):
    """Video tower (SlowOnly over heatmap volumes) and text tower (BERT), with a BERT fusion mode for CSI.

    Attributes:
      slowonly_kwargs: SlowOnly constructor fields (in_channels, base_channels, stage_blocks, ...).
      bert_config: a transformers BertConfig with add_cross_attention=True and the [ENC]/[DEC]-enlarged vocab.
      enc_token_id: id of the added [ENC] token that replaces [CLS] in fusion mode.
      embed_dim: joint-space width (256 in the paper).
      mapping: joint-space projection of the frames (Table 1); the text projection is linear, as the original's.
      init_temperature: initial SSM temperature (0.07).
      dtype: compute dtype; parameters stay float32.
    """

    slowonly_kwargs: dict
    bert_config: Any
    enc_token_id: int
    embed_dim: int = 256
    mapping: Mapping = "linear"
    init_temperature: float = 0.07
    match_head_kind: str = "linear"
    dtype: Any = jnp.float32

    def setup(self):
        self.video_encoder = slowonly.SlowOnly(**self.slowonly_kwargs, dtype=self.dtype)
        self.text_encoder = text.TextEncoder(config=self.bert_config, dtype=self.dtype)
        # The joint-space projections compute in float32 whatever `dtype` is (they are tiny): WFI weights,
        # similarities and CSI mining divide by the temperature, where bfloat16's 8-bit mantissa would quantise
        # the logits by up to ~0.4.
        self.frame_proj = JointProjection(self.embed_dim, self.mapping, jnp.float32)
        self.text_proj = JointProjection(self.embed_dim, "linear", jnp.float32)
        # Frames enter BERT's cross-attention at BERT's width (the original's 512 -> 768 Linear).
        self.fusion_proj = nn.Dense(self.bert_config.hidden_size, dtype=self.dtype)
        self.match_head = MatchHead(self.match_head_kind, dtype=self.dtype)
        self.temperature = self.param(
            "temperature", nn.initializers.constant(self.init_temperature), (), jnp.float32
        )

    def encode_video(self, volume: jax.Array, train: bool) -> tuple[jax.Array, jax.Array]:
        """Heatmap volumes [B, T, H, W, K] -> (joint-space frames [B, T', E] float32, fusion tokens [B, T', H_bert])."""
        feature_map = self.video_encoder(volume.astype(self.dtype), train=train)
        frames = jnp.mean(feature_map, axis=(2, 3))  # spatial mean per time step.
        return self.frame_proj(frames.astype(jnp.float32)), self.fusion_proj(frames)

    def encode_text(
        self, input_ids: jax.Array, attention_mask: jax.Array, train: bool
    ) -> jax.Array:
        """Prompt tokens [N, S] ([CLS] first) -> joint-space text features [N, E] float32."""
        cls = self.text_encoder(input_ids, attention_mask, deterministic=not train)
        return self.text_proj(cls.astype(jnp.float32))

    def match_logits(
        self,
        input_ids: jax.Array,
        attention_mask: jax.Array,
        video_tokens: jax.Array,
        train: bool,
        clip_index: jax.Array | None = None,
    ) -> jax.Array:
        """BERT fusion mode: [ENC] + prompt attending to a clip's frames -> match/no-match logits [N, 2].

        ``video_tokens`` is ``[N, T, H_bert]``, one clip per prompt; or, with ``clip_index`` (``[N]``), ``[C, T,
        H_bert]`` distinct clips, prompt ``n`` attending to clip ``clip_index[n]`` (each clip's cross-attention
        keys and values are then computed once: ``TextEncoder``'s ``context_index``).
        """
        fused = self.text_encoder(
            text.to_fusion_ids(input_ids, self.enc_token_id),
            attention_mask,
            encoder_hidden_states=video_tokens,
            deterministic=not train,
            context_index=clip_index,
        )
        return self.match_head(fused).astype(jnp.float32)

    def clamped_temperature(self, low: float, high: float) -> jax.Array:
        return jnp.clip(self.temperature, low, high)

    def __call__(
        self,
        volume: jax.Array,
        input_ids: jax.Array,
        attention_mask: jax.Array,
        train: bool = False,
    ) -> tuple[jax.Array, jax.Array, jax.Array]:
        """Runs every sub-module once (used by init): returns (frames, text features, match logits)."""
        frames, tokens = self.encode_video(volume, train)
        texts = self.encode_text(input_ids, attention_mask, train)
        logits = self.match_logits(input_ids, attention_mask, tokens, train)
        return frames, texts, logits
