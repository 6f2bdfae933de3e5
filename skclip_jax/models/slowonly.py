"""PoseConv3D's SlowOnly 3D ResNet over keypoint heatmap volumes, channels-last.

The defaults reproduce the video backbone of SkeletonCLIP++ (PYSKL ``ResNet3dSlowOnly`` with
``in_channels=17, base_channels=32, num_stages=3, stage_blocks=(4, 6, 3), conv1_stride=(1, 1),
pool1_stride=(1, 1), inflate=(0, 1, 1), spatial_strides=(2, 2, 2), temporal_strides=(1, 1, 2)``):
``[B, 48, 56, 56, 17] -> [B, 24, 7, 7, 512]``, about 2.0 M parameters.

Layout notes, matching the PyTorch module rather than Flax defaults:
  * every padding is symmetric, ``(k - 1) // 2`` per side, so stride-2 convolutions see the same
    pixels as in PyTorch (Flax ``"SAME"`` pads asymmetrically there);
  * the stem keeps PYSKL's max-pool (kernel 1x3x3, padding 0x1x1) even though its stride is 1:
    it is a 3x3 spatial max filter, not a no-op;
  * the stride of a block sits on its second (1x3x3) convolution, and an inflated block has a
    3x1x1 first convolution (PYSKL ``inflate_style='3x1x1'``);
  * BatchNorm uses PyTorch's defaults (momentum 0.1 -> Flax 0.9, eps 1e-5).  Flax updates the
    running variance with the biased batch variance, PyTorch with the unbiased one.
"""

from collections.abc import Sequence
from functools import partial
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from skclip_jax.heatmap_patches import HeatmapPatches
from skclip_jax.models import batch_norm as batch_norms
from skclip_jax.models import conv_impl as conv_impls
from skclip_jax.models import patch_stem, remat

Dtype = Any


def spatial_max_filter3(x: jax.Array) -> jax.Array:
    """The stem's max-pool (kernel 1x3x3, stride 1, padding 0x1x1 with -inf) as shifted maxima.

    Equal to ``nn.max_pool(x, (1, 3, 3), (1, 1, 1), ((0, 0), (1, 1), (1, 1)))`` in the forward pass. Its
    backward is elementwise selects that XLA fuses, where ``nn.max_pool``'s is a ``select_and_scatter``, a
    slow scatter kernel on GPU and CPU alike (docs/design.md "Smaller rules, always on"). The filter is
    separable: three maxima along the width, then three along the height. Ties share the gradient equally
    (``select_and_scatter`` gives it to the first maximum); the input follows a ReLU, whose zero derivative
    masks the common ties, those at zero.
    """
    pad = ((0, 0), (0, 0), (1, 1), (1, 1), (0, 0))
    p = jnp.pad(x, pad, constant_values=jnp.array(-jnp.inf, x.dtype))
    h, w = x.shape[2], x.shape[3]
    rows = jnp.maximum(jnp.maximum(p[:, :, :, :w], p[:, :, :, 1 : w + 1]), p[:, :, :, 2 : w + 2])
    return jnp.maximum(jnp.maximum(rows[:, :, :h], rows[:, :, 1 : h + 1]), rows[:, :, 2 : h + 2])


def residual_relu(y: jax.Array, shortcut: jax.Array) -> jax.Array:
    """``relu(y + shortcut)``, a bottleneck's output, written as a select so XLA keeps one copy of it.

    XLA treats ``max(z, 0)`` as a unary op and fuses it into every user, which lets it fuse the sum below it
    as well: XLA:CPU then recomputed a stage's whole residual stream inside each block's output and
    backward ReLU mask (one fusion read seven blocks' conv outputs at the paper's sizes).
    ``where(z > 0, z, 0)`` reads ``z`` twice, and since the next block's GEMMs cannot take it into their
    fusions it is computed once. Same values and gradient as ``nn.relu`` (``0`` for NaN, and for
    ``-0`` ``+0``); ``tests/test_slowonly.py`` checks the compiled step.
    """
    z = y + shortcut
    return jnp.where(z > 0, z, 0.0)


# mmcv's ConvModule re-initialises its conv with kaiming_normal (fan_out, relu gain); SkeletonCLIP++
# never calls ResNet3d.init_weights, so this is the init the original backbone trains from.
_conv_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")

EXPANSION = 4  # bottleneck output width / bottleneck planes


def _same_padding(kernel: Sequence[int]) -> list[tuple[int, int]]:
    return [((k - 1) // 2, (k - 1) // 2) for k in kernel]


class ConvBN(nn.Module):
    """Conv3d (no bias) + BatchNorm + optional ReLU, as mmcv's ConvModule."""

    features: int
    kernel: tuple[int, int, int]
    strides: tuple[int, int, int] = (1, 1, 1)
    relu: bool = True
    zero_scale: bool = False
    dtype: Dtype = jnp.float32
    conv_impl: str = "xla"
    batch_norm_impl: str = "flax"
    low_memory: bool = False

    @nn.compact
    def __call__(self, x: jax.Array | HeatmapPatches, train: bool) -> jax.Array:
        if isinstance(x, HeatmapPatches):
            if set(self.strides) != {1}:
                raise ValueError(f"ConvBN: heatmap patches need stride 1, got {self.strides}")
            # Same parameter as the nn.Conv below (name, shape, init): checkpoints do not depend on the input form.
            x = patch_stem.PatchConv(
                self.features, self.kernel, kernel_init=_conv_init, dtype=self.dtype, name="conv"
            )(x)
        else:
            x = self._dense_conv(x)
        return self._batch_norm(x, train)

    def _dense_conv(self, x: jax.Array) -> jax.Array:
        return nn.Conv(
            self.features,
            self.kernel,
            strides=self.strides,
            padding=_same_padding(self.kernel),
            use_bias=False,
            kernel_init=_conv_init,
            dtype=self.dtype,
            conv_general_dilated=conv_impls.conv_fn(self.conv_impl, self.low_memory),
            name="conv",
        )(x)

    def _batch_norm(self, x: jax.Array, train: bool) -> jax.Array:
        scale_init = nn.initializers.zeros if self.zero_scale else nn.initializers.ones
        if batch_norms.resolve(self.batch_norm_impl) == "fused":
            return batch_norms.BatchNorm(
                use_running_average=not train,
                momentum=0.9,
                epsilon=1e-5,
                scale_init=scale_init,
                relu=self.relu,
                dtype=self.dtype,
                name="bn",
            )(x)
        x = nn.BatchNorm(
            use_running_average=not train,
            momentum=0.9,
            epsilon=1e-5,
            scale_init=scale_init,
            use_fast_variance=False,
            dtype=self.dtype,
            name="bn",
        )(x)
        return nn.relu(x) if self.relu else x


class Bottleneck3d(nn.Module):
    """ResNet bottleneck with an optional 3x1x1 temporal kernel in its first conv.

    Attributes:
      planes: bottleneck width; the block outputs ``EXPANSION * planes`` channels.
      strides: ``(temporal, spatial)`` stride, applied by the 1x3x3 conv and the shortcut.
      inflate: whether the first conv is 3x1x1 (temporal) instead of 1x1x1.
      downsample: whether the shortcut is a strided 1x1x1 conv + BN instead of the identity.
      zero_init_residual: start the last BN scale at 0, so the block starts as the identity.
    """

    planes: int
    strides: tuple[int, int] = (1, 1)
    inflate: bool = False
    downsample: bool = False
    zero_init_residual: bool = False
    dtype: Dtype = jnp.float32
    conv_impl: str = "xla"
    batch_norm_impl: str = "flax"
    low_memory: bool = False

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        t, s = self.strides
        conv = partial(
            ConvBN,
            dtype=self.dtype,
            conv_impl=self.conv_impl,
            batch_norm_impl=self.batch_norm_impl,
            low_memory=self.low_memory,
        )
        y = conv(self.planes, (3 if self.inflate else 1, 1, 1), name="conv1")(x, train)
        y = conv(self.planes, (1, 3, 3), (t, s, s), name="conv2")(y, train)
        y = conv(
            EXPANSION * self.planes,
            (1, 1, 1),
            relu=False,
            zero_scale=self.zero_init_residual,
            name="conv3",
        )(y, train)
        shortcut = x
        if self.downsample:
            shortcut = conv(
                EXPANSION * self.planes, (1, 1, 1), (t, s, s), relu=False, name="downsample"
            )(x, train)
        return residual_relu(y, shortcut)


class SlowOnly(nn.Module):
    """SlowOnly ResNet3d (bottleneck, expansion 4); ``SlowOnly()`` is the SkeletonCLIP++ backbone.

    Attributes:
      in_channels: number of heatmap channels K (keypoints); checked against the input.
      base_channels: stem width; stage ``i`` has ``base_channels * 2**i`` bottleneck planes.
      stage_blocks: number of bottleneck blocks per stage.
      inflate: per stage, 1 if its blocks use a 3x1x1 first conv, 0 for 1x1x1.
      spatial_strides: per-stage spatial stride of the first block.
      temporal_strides: per-stage temporal stride of the first block.
      conv1_kernel: stem kernel (t, h, w); the stem and its max-pool have stride 1.
      zero_init_residual: zero-init the last BN scale of every block. PYSKL's ResNet3d default is
        True, but SkeletonCLIP++ never calls the backbone's ``init_weights``, so its effective
        setting (and ours) is False.
      dtype: compute dtype; parameters stay float32.
      conv_impl: how the convolutions are computed (``conv_impl.CONV_IMPLS``): ``"xla"`` (default),
        ``"gemm"`` (GEMM formulations, faster on CPU) or ``"auto"`` (gemm on CPU, xla elsewhere). Same
        parameters and, up to float rounding, the same results either way.
      batch_norm_impl: how the BatchNorms (+ ReLU) are computed (``batch_norm.BATCH_NORM_IMPLS``):
        ``"flax"`` (default, ``nn.BatchNorm``), ``"fused"`` (a hand-written backward pass, faster on CPU) or
        ``"auto"`` (fused on CPU, flax elsewhere). Same variables and, up to float rounding, results.
      low_memory: rebuild in the backward pass what XLA would keep from the forward pass (``remat``): the stem's
        max filter's masks and, with the ``gemm`` convolutions, the zero-padded inputs and im2col patches. Less
        peak memory for a slower step (docs/design.md "Optional: `model.slowonly.low_memory`"); same results.
      rebuild_stem: with the ``gemm`` convolutions, rebuild the stem's im2col patches (7x its input) and its max
        filter's masks in the backward pass even without ``low_memory``: less XLA temp for no measurable step
        time (the recomputation is a few copies, and a smaller step faults fewer fresh pages; docs/design.md
        "Smaller rules, always on"). Same results.
    """

    in_channels: int = 17
    base_channels: int = 32
    stage_blocks: tuple[int, ...] = (4, 6, 3)
    inflate: tuple[int, ...] = (0, 1, 1)
    spatial_strides: tuple[int, ...] = (2, 2, 2)
    temporal_strides: tuple[int, ...] = (1, 1, 2)
    conv1_kernel: tuple[int, int, int] = (1, 7, 7)
    zero_init_residual: bool = False
    dtype: Dtype = jnp.float32
    conv_impl: str = "xla"
    batch_norm_impl: str = "flax"
    low_memory: bool = False
    rebuild_stem: bool = True

    @property
    def feat_dim(self) -> int:
        """Channels of the output feature map."""
        return EXPANSION * self.base_channels * 2 ** (len(self.stage_blocks) - 1)

    @nn.compact
    def __call__(self, x: jax.Array | HeatmapPatches, train: bool) -> jax.Array:
        """Encodes a batch of heatmap volumes.

        Args:
          x: ``[B, T, H, W, K]`` heatmaps with ``K == in_channels``, or the same volumes as ``HeatmapPatches``
            (``heatmap_patches.py``), which the stem convolves without rendering them.
          train: use batch statistics and update ``batch_stats`` (pass ``mutable=["batch_stats"]``).

        Returns:
          ``[B, T', H', W', feat_dim]`` feature map; with the defaults, ``T' = T / 2`` and
          ``H' = H / 8`` (PyTorch rounding for odd sizes).
        """
        n = len(self.stage_blocks)
        if not (len(self.inflate) == len(self.spatial_strides) == len(self.temporal_strides) == n):
            raise ValueError(
                "SlowOnly: stage_blocks, inflate, spatial_strides and temporal_strides must have "
                f"one entry per stage, got {self.stage_blocks}, {self.inflate}, "
                f"{self.spatial_strides}, {self.temporal_strides}"
            )
        if len(x.shape) != 5 or x.shape[-1] != self.in_channels:
            raise ValueError(
                f"SlowOnly expects [B, T, H, W, {self.in_channels}] heatmaps, got shape {x.shape}"
            )
        x = x.astype(self.dtype)
        impl = conv_impls.resolve(self.conv_impl)
        bn_impl = batch_norms.resolve(self.batch_norm_impl)
        stem_low_memory = self.low_memory or (self.rebuild_stem and impl == "gemm")
        x = ConvBN(
            self.base_channels,
            self.conv1_kernel,
            dtype=self.dtype,
            conv_impl=impl,
            batch_norm_impl=bn_impl,
            low_memory=stem_low_memory,
            name="conv1",
        )(x, train)
        x = remat.recompute_in_backward_if(stem_low_memory)(spatial_max_filter3)(x)

        in_width = self.base_channels
        for i, num_blocks in enumerate(self.stage_blocks):
            planes = self.base_channels * 2**i
            t, s = self.temporal_strides[i], self.spatial_strides[i]
            # Same rule as PYSKL: only a spatial stride or a width change gets a projection.
            downsample = s != 1 or in_width != EXPANSION * planes
            if t != 1 and not downsample:
                raise ValueError(
                    f"SlowOnly stage {i}: a temporal stride without a spatial stride or width "
                    "change leaves the identity shortcut with the wrong length"
                )
            for j in range(num_blocks):
                first = j == 0
                x = Bottleneck3d(
                    planes,
                    strides=(t, s) if first else (1, 1),
                    inflate=self.inflate[i] == 1,
                    downsample=downsample and first,
                    zero_init_residual=self.zero_init_residual,
                    dtype=self.dtype,
                    conv_impl=impl,
                    batch_norm_impl=bn_impl,
                    low_memory=self.low_memory,
                    name=f"layer{i + 1}_{j}",
                )(x, train)
            in_width = EXPANSION * planes
        return x


# Tiny variant for CPU tests: same topology and strides, a fraction of the width and depth.
SlowOnlyTiny = partial(SlowOnly, base_channels=4, stage_blocks=(1, 1, 1))


def frame_features(feature_map: jax.Array) -> jax.Array:
    """Per-time-step spatial mean, the frame features that WFI weighs.

    Args:
      feature_map: ``[B, T', H', W', C]`` SlowOnly output.

    Returns:
      ``[B, T', C]`` in the input dtype (accumulated in float32).
    """
    return jnp.mean(feature_map, axis=(2, 3), dtype=jnp.float32).astype(feature_map.dtype)
