"""HeatmapPatches and the patch stem against the rendered volume (itself checked against NumPy in test_heatmaps)."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from skclip_jax import heatmap_patches as hp
from skclip_jax import heatmaps
from skclip_jax.config_lib import validation as config_validation
from skclip_jax.models import patch_stem, slowonly


def keypoints(num_persons, lead=(2,), t=3, k=17, height=20, width=18, seed=0):
    """Random points over and beyond the frame, with the cases that matter for a max of windows."""
    rng = np.random.default_rng(seed)
    kp = rng.uniform(-4, max(height, width) + 4, (*lead, num_persons, t, k, 2)).astype(np.float32)
    score = rng.uniform(0, 1, (*lead, num_persons, t, k)).astype(np.float32)
    flat_kp = kp.reshape(-1, num_persons, t, k, 2)
    flat_score = score.reshape(-1, num_persons, t, k)
    flat_kp[0, :, 0, 0] = [5.2, 7.7]  # every person on the same spot: full overlap
    if num_persons > 1:
        flat_kp[0, 1, 1, 2] = flat_kp[0, 0, 1, 2] + [1.3, -0.8]  # two windows overlapping in part
        flat_score[0, 1, 1, 2] = 0.9
    flat_kp[-1, 0, 1, 3, 0] = np.nan  # NaN coordinate: not drawn
    flat_kp[-1, 0, 2, 4] = np.inf
    flat_score[-1, 0, 0, 5] = 5e-4  # below PYSKL's eps: not drawn
    flat_score[-1, 0, 0, 6] = np.nan
    flat_kp[-1, 0, 2, 7] = [-2.5, height - 0.6]  # windows cut by the frame's edges
    return kp, score


@pytest.mark.parametrize("num_persons", [1, 2, 3])
@pytest.mark.parametrize("sigma", [0.6, 1.1])
def test_patches_render_the_pyskl_volume(num_persons, sigma):
    kp, score = keypoints(num_persons, lead=(2, 2))
    patches = hp.keypoint_patches(kp, score, 20, 18, sigma=sigma)
    assert patches.values.shape == (
        2,
        2,
        3,
        2**num_persons - 1,
        17,
        hp.window_size(sigma),
        hp.window_size(sigma),
    )
    assert patches.shape == (2, 2, 3, 20, 18, 17)
    expected = heatmaps.render_heatmaps(kp, score, 20, 18, sigma=sigma)
    np.testing.assert_allclose(hp.render_patches(patches), expected, rtol=0, atol=1e-6)


def test_window_size_bounds_every_window():
    """A window's pixel count, trunc(mu + 3s) - trunc(mu - 3s) + 1 in float32, never exceeds window_size."""
    for sigma in (0.5, 0.6, 1.0, 1.1, 2.3, 0.6666666):
        mu = np.linspace(-3, 60, 200001, dtype=np.float32)
        s3 = np.float32(3 * sigma)
        count = np.trunc(mu + s3) - np.trunc(mu - s3) + 1
        assert count.max() <= hp.window_size(sigma), sigma
    assert hp.window_size(0.6) == 5  # tight at PYSKL's sigma: some windows hold 5 pixels
    mu = np.linspace(-3, 60, 200001, dtype=np.float32)
    assert (np.trunc(mu + np.float32(1.8)) - np.trunc(mu - np.float32(1.8)) + 1).max() == 5


def test_person_subsets_is_inclusion_exclusion():
    assert hp.person_subsets(1) == [(0,)]
    assert hp.person_subsets(2) == [(0,), (1,), (0, 1)]
    assert len(hp.person_subsets(4)) == 15


def test_flip_patches_is_flip_heatmaps():
    kp, score = keypoints(2)
    patches = hp.keypoint_patches(kp, score, 20, 18)
    flipped = hp.flip_patches(patches)
    expected = heatmaps.flip_heatmaps(heatmaps.render_heatmaps(kp, score, 20, 18))
    np.testing.assert_allclose(hp.render_patches(flipped), expected, rtol=0, atol=1e-6)
    both = hp.concatenate([patches, flipped])
    np.testing.assert_allclose(
        hp.render_patches(both)[2:], expected, rtol=0, atol=1e-6
    )  # leading axis stacked like jnp.concatenate of volumes


@pytest.mark.parametrize("kernel", [(1, 7, 7), (1, 3, 5), (1, 1, 1)])
@pytest.mark.parametrize("num_persons", [1, 2])
def test_patch_conv_equals_nn_conv_forward_and_kernel_gradient(kernel, num_persons):
    kp, score = keypoints(num_persons)
    features = 6
    volume = heatmaps.render_heatmaps(kp, score, 20, 18)
    patches = hp.keypoint_patches(kp, score, 20, 18)
    conv = nn.Conv(features, kernel, padding=[((k - 1) // 2,) * 2 for k in kernel], use_bias=False)
    w = conv.init(jax.random.key(0), volume)["params"]["kernel"]
    g = jax.random.normal(jax.random.key(1), volume.shape[:-1] + (features,))

    def dense(w):
        return conv.apply({"params": {"kernel": w}}, volume)

    def sparse(w):
        return patch_stem.patch_conv(patches, w)

    np.testing.assert_allclose(sparse(w), dense(w), rtol=1e-5, atol=1e-5)
    grad_dense = jax.grad(lambda w: jnp.sum(dense(w) * g))(w)
    grad_sparse = jax.jit(jax.grad(lambda w: jnp.sum(sparse(w) * g)))(w)
    np.testing.assert_allclose(grad_sparse, grad_dense, rtol=1e-4, atol=1e-4)


def persons_in(case):
    """Keypoints for each branch of ``patch_conv``: the persons after the first absent (zero coordinates and
    scores, as the pipeline pads them), present but never overlapping, or overlapping in one clip only."""
    num_persons = 3 if case == "third_absent" else 2
    rng = np.random.default_rng(1)
    kp = rng.uniform(1, 17, (3, num_persons, 3, 17, 2)).astype(np.float32)
    score = rng.uniform(0.1, 1, (3, num_persons, 3, 17)).astype(np.float32)
    # Person 0 on the left, person 1 on the right: their windows (1.8 px wide) never meet.
    kp[:, 0, ..., 0] = rng.uniform(0, 5, kp.shape[2:4])
    kp[:, 1, ..., 0] = rng.uniform(12, 17, kp.shape[2:4])
    absent = {"second_absent": [1], "third_absent": [2]}.get(case, [])
    kp[:, absent], score[:, absent] = 0.0, 0.0
    if case == "overlap_in_one_clip":
        kp[1, 1, 0, 2] = kp[1, 0, 0, 2] + [0.7, 0.4]
    return kp, score


@pytest.mark.parametrize("case", ["second_absent", "apart", "overlap_in_one_clip", "third_absent"])
def test_patch_conv_skips_zero_patches_with_the_same_result(case):
    """Each prefix branch equals nn.Conv of the rendered volume (forward, kernel gradient); the patches have the
    zeros that pick the branch."""
    kp, score = persons_in(case)
    patches = hp.keypoint_patches(kp, score, 20, 18)
    nonzero = np.any(np.asarray(patches.values) != 0, axis=(0, 1, 3, 4, 5))  # per patch
    expected_nonzero = {
        "second_absent": [True, False, False],
        "apart": [True, True, False],
        "overlap_in_one_clip": [True, True, True],
        "third_absent": [True, True, False, False, False, False, False],
    }[case]
    assert nonzero.tolist() == expected_nonzero
    volume = heatmaps.render_heatmaps(kp, score, 20, 18)
    conv = nn.Conv(6, (1, 7, 7), padding=[(0, 0), (3, 3), (3, 3)], use_bias=False)
    w = conv.init(jax.random.key(0), volume)["params"]["kernel"]
    g = jax.random.normal(jax.random.key(1), volume.shape[:-1] + (6,))

    def dense(w):
        return jnp.sum(conv.apply({"params": {"kernel": w}}, volume) * g)

    def sparse(w):
        return jnp.sum(patch_stem.patch_conv(patches, w) * g)

    np.testing.assert_allclose(jax.jit(sparse)(w), dense(w), rtol=1e-5)
    np.testing.assert_allclose(
        jax.jit(jax.grad(sparse))(w), jax.grad(dense)(w), rtol=1e-4, atol=1e-4
    )


def test_patch_conv_rejects_what_it_cannot_compute():
    kp, score = keypoints(1)
    patches = hp.keypoint_patches(kp, score, 20, 18)
    with pytest.raises(ValueError, match="odd"):
        patch_stem.patch_conv(patches, jnp.zeros((1, 4, 4, 17, 2)))
    with pytest.raises(ValueError, match="odd"):
        patch_stem.patch_conv(patches, jnp.zeros((3, 7, 7, 17, 2)))


def test_slowonly_on_patches_equals_slowonly_on_volumes():
    """Same parameters from init, same outputs, batch statistics and parameter gradients in train mode."""
    kp, score = keypoints(2, lead=(2,), t=4, height=16, width=16)
    volume = heatmaps.render_heatmaps(kp, score, 16, 16)
    patches = hp.keypoint_patches(kp, score, 16, 16)
    model = slowonly.SlowOnlyTiny(conv_impl="gemm", batch_norm_impl="fused")
    variables = model.init(jax.random.key(0), volume, train=False)
    from_patches = model.init(jax.random.key(0), patches, train=False)
    jax.tree.map(np.testing.assert_array_equal, from_patches, variables)

    def loss(params, x):
        out, mutated = model.apply(
            {"params": params, "batch_stats": variables["batch_stats"]},
            x,
            train=True,
            mutable=["batch_stats"],
        )
        return jnp.sum(jnp.sin(out)), (out, mutated)

    (_, (out_v, stats_v)), grads_v = jax.value_and_grad(loss, has_aux=True)(
        variables["params"], volume
    )
    (_, (out_p, stats_p)), grads_p = jax.jit(jax.value_and_grad(loss, has_aux=True))(
        variables["params"], patches
    )
    np.testing.assert_allclose(out_p, out_v, rtol=1e-4, atol=1e-4)
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5), stats_p, stats_v
    )
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-3, atol=2e-4), grads_p, grads_v
    )


def test_resolve():
    assert config_validation.STEM_IMPLS is patch_stem.STEM_IMPLS  # one list, imported
    kw = dict(with_limb=False, conv1_kernel=(1, 7, 7), num_persons=2, sigma=0.6, size=56)
    assert patch_stem.resolve("auto", backend="cpu", **kw) == "patches"
    assert patch_stem.resolve("auto", backend="gpu", **kw) == "conv"
    assert patch_stem.resolve("auto", backend="tpu", **kw) == "conv"
    assert patch_stem.resolve("patches", backend="gpu", **kw) == "patches"
    assert patch_stem.resolve("conv", backend="cpu", **kw) == "conv"
    assert patch_stem.resolve("auto", backend="cpu", **{**kw, "num_persons": 4}) == "conv"
    assert patch_stem.resolve("auto", backend="cpu", **{**kw, "with_limb": True}) == "conv"
    assert patch_stem.resolve("auto", backend="cpu", **{**kw, "conv1_kernel": (3, 7, 7)}) == "conv"
    # The demo's 14x14 windows (sigma 2.0) on 32x32 frames, and the tests' 16x16 frames: dense is cheaper.
    assert patch_stem.resolve("auto", backend="cpu", **{**kw, "sigma": 2.0, "size": 32}) == "conv"
    assert patch_stem.resolve("auto", backend="cpu", **{**kw, "size": 16}) == "conv"
    with pytest.raises(ValueError, match="limb"):
        patch_stem.resolve("patches", backend="cpu", **{**kw, "with_limb": True})
    with pytest.raises(ValueError, match="stem_impl must be one of"):
        patch_stem.resolve("sparse", backend="cpu", **kw)


def test_patch_cost_ratio_orders_the_measured_cases():
    """The estimate is below 1 exactly where patches measured faster (patch_stem.patch_cost_ratio's docstring)."""
    faster = [(2, 0.6, 56), (1, 0.6, 56), (2, 0.6, 32)]
    slower = [(2, 2.0, 32), (2, 0.6, 16), (2, 2.0, 56), (2, 1.2, 32)]
    for m, sigma, size in faster:
        assert patch_stem.patch_cost_ratio(m, sigma, (1, 7, 7), size, size) < 1
    for m, sigma, size in slower:
        assert patch_stem.patch_cost_ratio(m, sigma, (1, 7, 7), size, size) > 1
