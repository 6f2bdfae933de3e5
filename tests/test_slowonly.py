"""SlowOnly: shapes, PyTorch parameter count, BN statistics, a NumPy (NCTHW) reference forward, kernel choices."""

import math
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from skclip_jax.models import slowonly
from skclip_jax.models.slowonly import ConvBN, SlowOnly, SlowOnlyTiny, frame_features


def _torch_param_count(
    in_channels: int,
    base: int,
    stage_blocks: tuple[int, ...],
    inflate: tuple[int, ...],
    spatial_strides: tuple[int, ...],
    conv1_kernel: tuple[int, int, int],
) -> int:
    """Trainable parameters of PYSKL ResNet3dSlowOnly, from PyTorch's weight shapes.

    Conv3d weight is [out, in, kt, kh, kw] (bias=False); BN3d has weight + bias (running stats are
    buffers, not parameters).
    """

    def conv(cin: int, cout: int, k: tuple[int, int, int]) -> int:
        return cout * cin * k[0] * k[1] * k[2]

    def bn(c: int) -> int:
        return 2 * c

    total = conv(in_channels, base, conv1_kernel) + bn(base)
    inplanes = base
    for i, blocks in enumerate(stage_blocks):
        planes = base * 2**i
        for j in range(blocks):
            cin = inplanes if j == 0 else planes * 4
            k1 = (3, 1, 1) if inflate[i] else (1, 1, 1)
            total += conv(cin, planes, k1) + bn(planes)
            total += conv(planes, planes, (1, 3, 3)) + bn(planes)
            total += conv(planes, planes * 4, (1, 1, 1)) + bn(planes * 4)
        if spatial_strides[i] != 1 or inplanes != planes * 4:
            total += conv(inplanes, planes * 4, (1, 1, 1)) + bn(planes * 4)
        inplanes = planes * 4
    return total


def _count(tree) -> int:
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


def test_default_shapes_and_param_count():
    model = SlowOnly()
    x = jax.ShapeDtypeStruct((2, 48, 56, 56, 17), jnp.float32)
    variables = jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False), x)
    out = jax.eval_shape(lambda v, x: model.apply(v, x, train=False), variables, x)
    assert out.shape == (2, 24, 7, 7, 512)
    assert model.feat_dim == 512
    assert jax.eval_shape(frame_features, out).shape == (2, 24, 512)

    expected = _torch_param_count(17, 32, (4, 6, 3), (0, 1, 1), (2, 2, 2), (1, 7, 7))
    got = _count(variables["params"])
    print(f"SlowOnly() params: flax={got} pytorch={expected}")
    assert got == expected
    assert 1.9e6 < got < 2.1e6
    # Running mean + var: one pair per BN, the same number of entries as the BN scale + bias.
    flat = traverse_util.flatten_dict(variables["params"])
    bn_params = sum(int(np.prod(v.shape)) for k, v in flat.items() if "bn" in k)
    assert _count(variables["batch_stats"]) == bn_params


def test_inflation_and_temporal_stride():
    model = SlowOnly(in_channels=3, base_channels=4, stage_blocks=(1, 2, 1))
    variables = jax.eval_shape(
        lambda: model.init(jax.random.key(0), jnp.zeros((1, 8, 16, 16, 3)), train=False)
    )
    p = variables["params"]
    assert p["conv1"]["conv"]["kernel"].shape == (1, 7, 7, 3, 4)
    assert p["layer1_0"]["conv1"]["conv"]["kernel"].shape == (1, 1, 1, 4, 4)  # inflate 0
    assert p["layer2_0"]["conv1"]["conv"]["kernel"].shape == (3, 1, 1, 16, 8)  # inflate 1
    assert p["layer2_1"]["conv1"]["conv"]["kernel"].shape == (3, 1, 1, 32, 8)
    assert "downsample" in p["layer2_0"] and "downsample" not in p["layer2_1"]
    assert p["layer3_0"]["conv3"]["conv"]["kernel"].shape == (1, 1, 1, 16, 64)

    # Only the last stage strides in time; odd sizes round like PyTorch (k=3, pad=1, stride 2).
    for t, h, w, want in [(8, 16, 16, (4, 2, 2)), (6, 12, 10, (3, 2, 2)), (5, 9, 7, (3, 2, 1))]:
        x = jax.ShapeDtypeStruct((1, t, h, w, 3), jnp.float32)
        out = jax.eval_shape(lambda v, x: model.apply(v, x, train=False), variables, x)
        assert out.shape == (1, *want, 64), (t, h, w, out.shape)

    no_tstride = SlowOnlyTiny(in_channels=3, temporal_strides=(1, 1, 1))
    out = jax.eval_shape(
        lambda x: no_tstride.init_with_output(jax.random.key(0), x, train=False)[0],
        jax.ShapeDtypeStruct((1, 8, 16, 16, 3), jnp.float32),
    )
    assert out.shape == (1, 8, 2, 2, 64)


def test_wrong_channels_is_a_clear_error():
    with pytest.raises(ValueError, match=r"\[B, T, H, W, 17\]"):
        SlowOnly().init(jax.random.key(0), jnp.zeros((1, 4, 8, 8, 3)), train=False)


# ----------------------------------------------------------------------------------------------
# NumPy reference in PyTorch layout (NCTHW, weights [out, in, kt, kh, kw]).


def _np_conv3d(x: np.ndarray, w: np.ndarray, stride: tuple[int, int, int]) -> np.ndarray:
    """PyTorch Conv3d, bias=False, padding (k - 1) // 2 on both sides."""
    kt, kh, kw = w.shape[2:]
    pads = [(k - 1) // 2 for k in (kt, kh, kw)]
    xp = np.pad(x, [(0, 0), (0, 0)] + [(p, p) for p in pads])
    dims = [(xp.shape[2 + a] - k) // stride[a] + 1 for a, k in enumerate((kt, kh, kw))]
    out = np.zeros((x.shape[0], w.shape[0], *dims), np.float64)
    st, sh, sw = stride
    for a in range(kt):
        for b in range(kh):
            for c in range(kw):
                patch = xp[
                    :,
                    :,
                    a : a + st * (dims[0] - 1) + 1 : st,
                    b : b + sh * (dims[1] - 1) + 1 : sh,
                    c : c + sw * (dims[2] - 1) + 1 : sw,
                ]
                out += np.einsum("nithw,oi->nothw", patch, w[:, :, a, b, c])
    return out


def _np_bn_eval(x, scale, bias, mean, var):
    shape = (1, -1, 1, 1, 1)
    return (x - mean.reshape(shape)) / np.sqrt(var.reshape(shape) + 1e-5) * scale.reshape(
        shape
    ) + bias.reshape(shape)


def _np_maxpool_1x3x3(x):
    xp = np.pad(x, [(0, 0)] * 3 + [(1, 1), (1, 1)], constant_values=-np.inf)
    h, w = x.shape[3:]
    return np.max(
        np.stack([xp[..., b : b + h, c : c + w] for b in range(3) for c in range(3)]), axis=0
    )


def _np_conv_bn(x, p, s, stride, relu):
    w = np.transpose(np.asarray(p["conv"]["kernel"], np.float64), (4, 3, 0, 1, 2))
    y = _np_conv3d(x, w, stride)
    bn = [p["bn"]["scale"], p["bn"]["bias"], s["bn"]["mean"], s["bn"]["var"]]
    y = _np_bn_eval(y, *(np.asarray(a, np.float64) for a in bn))
    return np.maximum(y, 0) if relu else y


def _np_slowonly(x_ncthw, params, stats, stage_blocks, spatial, temporal):
    y = _np_conv_bn(x_ncthw, params["conv1"], stats["conv1"], (1, 1, 1), True)
    y = _np_maxpool_1x3x3(y)
    for i, blocks in enumerate(stage_blocks):
        for j in range(blocks):
            name = f"layer{i + 1}_{j}"
            p, s = params[name], stats[name]
            t, sp = (temporal[i], spatial[i]) if j == 0 else (1, 1)
            out = _np_conv_bn(y, p["conv1"], s["conv1"], (1, 1, 1), True)
            out = _np_conv_bn(out, p["conv2"], s["conv2"], (t, sp, sp), True)
            out = _np_conv_bn(out, p["conv3"], s["conv3"], (1, 1, 1), False)
            if "downsample" in p:
                short = _np_conv_bn(y, p["downsample"], s["downsample"], (t, sp, sp), False)
            else:
                short = y
            y = np.maximum(out + short, 0)
    return y


def test_eval_forward_matches_numpy_reference():
    cfg = dict(in_channels=3, base_channels=4, stage_blocks=(1, 1, 2))
    model = SlowOnly(**cfg)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 4, 12, 10, 3)).astype(np.float32)
    variables = model.init(jax.random.key(1), jnp.asarray(x), train=False)

    # Non-trivial BN statistics and affine params so BN is not the identity.
    def perturb(path, leaf):
        name = path[-1].key
        r = rng.standard_normal(leaf.shape).astype(np.float32)
        if name in ("scale", "var"):
            return jnp.asarray(0.5 + np.abs(r))
        if name in ("bias", "mean"):
            return jnp.asarray(0.3 * r)
        return leaf

    variables = jax.tree_util.tree_map_with_path(perturb, variables)
    out = model.apply(variables, jnp.asarray(x), train=False)
    ref = _np_slowonly(
        np.transpose(x, (0, 4, 1, 2, 3)).astype(np.float64),
        variables["params"],
        variables["batch_stats"],
        cfg["stage_blocks"],
        model.spatial_strides,
        model.temporal_strides,
    )
    ref = np.transpose(ref, (0, 2, 3, 4, 1))
    assert out.shape == ref.shape == (2, 2, 2, 2, 64)
    np.testing.assert_allclose(np.asarray(out), ref, rtol=1e-4, atol=1e-4)

    feats = frame_features(out)
    np.testing.assert_allclose(np.asarray(feats), ref.mean(axis=(2, 3)), rtol=1e-4, atol=1e-4)


def test_train_mode_updates_batch_stats():
    model = SlowOnlyTiny(in_channels=3)
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((2, 4, 8, 8, 3)).astype(np.float32))
    variables = model.init(jax.random.key(0), x, train=False)
    out, updates = model.apply(variables, x, train=True, mutable=["batch_stats"])
    assert out.shape == (2, 2, 1, 1, 64)

    # Stem BN: new = 0.9 * old + 0.1 * batch statistic (biased variance), old = (0, 1).
    kernel = np.asarray(variables["params"]["conv1"]["conv"]["kernel"], np.float64)
    conv = _np_conv3d(
        np.transpose(np.asarray(x, np.float64), (0, 4, 1, 2, 3)),
        np.transpose(kernel, (4, 3, 0, 1, 2)),
        (1, 1, 1),
    )
    stem = updates["batch_stats"]["conv1"]["bn"]
    np.testing.assert_allclose(stem["mean"], 0.1 * conv.mean(axis=(0, 2, 3, 4)), atol=1e-5)
    np.testing.assert_allclose(
        stem["var"], 0.9 + 0.1 * conv.var(axis=(0, 2, 3, 4)), rtol=1e-5, atol=1e-5
    )
    # Every BN layer moved; eval mode leaves the statistics alone.
    old_stats, new_stats = variables["batch_stats"], updates["batch_stats"]
    for old, new in zip(jax.tree.leaves(old_stats), jax.tree.leaves(new_stats), strict=True):
        assert not np.allclose(old, new)
    _, same = model.apply(variables, x, train=False, mutable=["batch_stats"])
    for old, new in zip(jax.tree.leaves(old_stats), jax.tree.leaves(same), strict=True):
        np.testing.assert_array_equal(old, new)


def test_zero_init_residual_and_bf16():
    x = jnp.ones((1, 2, 8, 8, 3))
    plain = SlowOnlyTiny(in_channels=3).init(jax.random.key(0), x, train=False)["params"]
    zero = SlowOnlyTiny(in_channels=3, zero_init_residual=True).init(
        jax.random.key(0), x, train=False
    )["params"]
    assert np.all(np.asarray(plain["layer1_0"]["conv3"]["bn"]["scale"]) == 1)
    assert np.all(np.asarray(zero["layer1_0"]["conv3"]["bn"]["scale"]) == 0)

    # Kaiming normal, fan_out: std = sqrt(2 / (out * kt * kh * kw)).
    stem = ConvBN(32, (1, 7, 7)).init(jax.random.key(0), jnp.ones((1, 1, 8, 8, 17)), train=False)
    k = np.asarray(stem["params"]["conv"]["kernel"])
    assert k.shape == (1, 7, 7, 17, 32)
    np.testing.assert_allclose(k.std(), np.sqrt(2 / (32 * 49)), rtol=0.05)

    model = SlowOnlyTiny(in_channels=3, dtype=jnp.bfloat16)
    v = model.init(jax.random.key(0), x, train=False)
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(v))
    out = model.apply(v, x, train=False)
    assert out.dtype == jnp.bfloat16 and bool(jnp.all(jnp.isfinite(out)))


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_stem_max_filter_equals_max_pool_forward_and_backward(dtype):
    """The shifted-maxima stem pool equals nn.max_pool: forward exactly; backward on tie-free inputs, and
    behind a ReLU (as in the stem) also where ReLU's zeros tie, up to the order in which the gradients of
    overlapping windows are summed."""
    import flax.linen as nn

    from skclip_jax.models.slowonly import spatial_max_filter3

    def pool(x):
        return nn.max_pool(x, (1, 3, 3), strides=(1, 1, 1), padding=((0, 0), (1, 1), (1, 1)))

    k1, k2 = jax.random.split(jax.random.key(3))
    # Distinct values (a permutation of 0..255, exact in bfloat16 too), so no window has a tie.
    x = jax.random.permutation(k1, 256).reshape(2, 2, 8, 4, 2).astype(dtype) / 8
    g = jax.random.normal(k2, x.shape, dtype)
    np.testing.assert_array_equal(spatial_max_filter3(x), pool(x))
    tol = {"rtol": 1e-6, "atol": 1e-6} if dtype == jnp.float32 else {"rtol": 2e-2, "atol": 2e-2}

    def close(a, b):
        np.testing.assert_allclose(np.float32(a), np.float32(b), **tol)

    close(jax.vjp(spatial_max_filter3, x)[1](g)[0], jax.vjp(pool, x)[1](g)[0])
    z = x - 16  # distinct values, half of them negative: relu(z) has many windows of tied zeros

    def behind_relu(f):
        return jax.vjp(lambda z: f(jax.nn.relu(z)), z)[1](g)[0]

    assert float(jnp.mean(jax.nn.relu(z) == 0)) > 0.4
    close(behind_relu(spatial_max_filter3), behind_relu(pool))


# (reference, other): every CPU kernel choice against the one it replaces, same parameters either way.
KERNEL_CHOICES = [
    (dict(conv_impl="xla"), dict(conv_impl="gemm")),
    (
        dict(conv_impl="gemm", batch_norm_impl="flax"),
        dict(conv_impl="gemm", batch_norm_impl="fused"),
    ),
    (
        dict(conv_impl="gemm", batch_norm_impl="fused"),
        dict(conv_impl="gemm", batch_norm_impl="fused", low_memory=True),
    ),
]


@pytest.mark.parametrize("train", [True, False])
@pytest.mark.parametrize(
    "ref_kwargs, kwargs", KERNEL_CHOICES, ids=["conv_impl", "batch_norm_impl", "low_memory"]
)
def test_slowonly_same_with_every_kernel_choice(ref_kwargs, kwargs, train):
    """The whole backbone (BatchNorm in train or eval mode): same variables, outputs, parameter gradients, BN stats."""
    x = jnp.asarray(np.random.default_rng(0).uniform(0, 1, (2, 8, 16, 16, 17)).astype(np.float32))
    ref, other = SlowOnlyTiny(**ref_kwargs), SlowOnlyTiny(**kwargs)
    variables = ref.init(jax.random.key(0), x, train=False)
    assert jax.tree.structure(variables) == jax.tree.structure(
        other.init(jax.random.key(0), x, train=False)
    )

    def run(model):
        def loss(params):
            out, mutated = model.apply(
                {"params": params, "batch_stats": variables["batch_stats"]},
                x,
                train=train,
                mutable=["batch_stats"],
            )
            return jnp.sum(out**2), (out, mutated)

        (_, (out, mutated)), g = jax.value_and_grad(loss, has_aux=True)(variables["params"])
        return out, mutated, g

    def close(a, b, tol):
        # Relative to the array's scale: BatchNorm's backward pass amplifies rounding in small entries.
        err = float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
        assert err <= tol * max(float(np.max(np.abs(np.asarray(b)))), 1e-6), (err, b.shape)

    out_ref, stats_ref, g_ref = run(ref)
    out, stats, g = run(other)
    close(out, out_ref, 1e-5)
    jax.tree.map(lambda a, b: close(a, b, 1e-5), stats, stats_ref)
    jax.tree.map(lambda a, b: close(a, b, 1e-4), g, g_ref)


def _max_fusion_reads(hlo: str, elements: int) -> int:
    """The most operands of ``elements`` elements that one fusion of the optimised HLO's entry computation reads."""
    entry = hlo[hlo.index("ENTRY") :].splitlines()
    sizes = {}
    for line in entry:
        m = re.match(r"\s*(?:ROOT )?(%[\w.\-]+) = \w+\[([\d,]*)\]", line)
        if m:
            sizes[m.group(1)] = math.prod(int(d) for d in m.group(2).split(",") if d)
    most = 0
    for line in entry:
        m = re.match(r"\s*(?:ROOT )?%[\w.\-]+ = .*? fusion\((.*?)\), kind=", line)
        if m:
            operands = re.findall(r"%[\w.\-]+", m.group(1))
            most = max(most, sum(sizes.get(op) == elements for op in operands))
    return most


@pytest.mark.parametrize("residual", ["where", "relu"])
def test_residual_stream_is_not_recomputed_in_every_block(residual, monkeypatch):
    """XLA:CPU reads each block's output once: no fusion of the train step recomputes the residual stream.

    With ``nn.relu(y + shortcut)`` (the ``relu`` case, kept to show the check can fail) XLA fused every
    earlier block's sum into each block's output and backward mask: one fusion read 8 such arrays, against 4 here.
    """
    if residual == "relu":
        monkeypatch.setattr(slowonly, "residual_relu", lambda y, s: jax.nn.relu(y + s))
    model = SlowOnly(
        base_channels=4,
        stage_blocks=(6,),
        inflate=(0,),
        spatial_strides=(1,),
        temporal_strides=(1,),
        conv_impl="gemm",
        batch_norm_impl="fused",
    )
    x = jnp.ones((1, 4, 8, 8, 17), jnp.float32)
    variables = model.init(jax.random.key(0), x, train=False)

    def loss(params):
        out, _ = model.apply(
            {"params": params, "batch_stats": variables["batch_stats"]},
            x,
            train=True,
            mutable=["batch_stats"],
        )
        return jnp.sum(out**2)

    hlo = jax.jit(jax.grad(loss)).lower(variables["params"]).compile().as_text()
    reads = _max_fusion_reads(hlo, 4 * 8 * 8 * 16)  # arrays the size of the stage's output
    if residual == "relu":
        assert reads >= 6, reads
    else:
        assert reads <= 4, reads


def test_stem_patches_are_rebuilt_in_the_backward_pass():
    """On the GEMM path the stem's width-wise patches ([.., 7 * 17] per pixel) are not kept for the weight
    gradient by default (``rebuild_stem``): the compiled train step's temp is at least one copy of them
    smaller than with them kept (XLA's buffer assignment, no run). The paper's stem width (32), one block a
    stage: as at the paper's sizes, the step's peak is inside the backward pass, not at the stem's end of it."""
    x = jnp.zeros((1, 4, 32, 32, 17), jnp.float32)
    patches = x.size * 7 * 4  # the stem's im2col along the width, float32

    def temp_bytes(rebuild_stem):
        model = SlowOnly(
            base_channels=32,
            stage_blocks=(1, 1, 1),
            conv_impl="gemm",
            batch_norm_impl="fused",
            rebuild_stem=rebuild_stem,
        )
        variables = model.init(jax.random.key(0), x, train=False)

        def loss(params, x):
            out, _ = model.apply(
                {"params": params, "batch_stats": variables["batch_stats"]},
                x,
                train=True,
                mutable=["batch_stats"],
            )
            return jnp.sum(out**2)

        grad = jax.jit(jax.grad(loss))
        return grad.lower(variables["params"], x).compile().memory_analysis().temp_size_in_bytes

    kept, rebuilt = temp_bytes(False), temp_bytes(True)
    assert rebuilt <= kept - patches, (kept, rebuilt, patches)
