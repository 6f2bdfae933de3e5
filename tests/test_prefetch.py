"""DevicePrefetcher: the same global batches in the same order as without prefetching, and exact resume."""

import numpy as np
import pytest

from configs import demo
from skclip_jax import input_pipeline, prefetch, sharding


@pytest.fixture
def dataset(tiny_dataset):
    return tiny_dataset


@pytest.fixture
def config(dataset):
    config = demo.get_config("tiny")
    config.data.data_dir = dataset.data_dir
    config.batch_size = 8
    config.data.repeat = 2
    return config


def _assert_same(a, b):
    assert sorted(a) == sorted(b)
    for key in a:
        np.testing.assert_array_equal(np.asarray(a[key]), np.asarray(b[key]))


@pytest.mark.parametrize("threaded", [True, False])
@pytest.mark.parametrize("size", [1, 2, 3])
def test_same_batches_in_order_and_exact_resume(dataset, config, size, threaded):
    mesh = sharding.make_mesh((-1, 1))
    steps = 6
    plain = [
        sharding.make_global_batch(mesh, local)
        for local in input_pipeline.train_iterator(dataset, config, 0, steps, 0, 1)
    ]
    assert len(plain) == steps
    with prefetch.DevicePrefetcher(
        input_pipeline.train_iterator(dataset, config, 0, steps, 0, 1), mesh, size, 0, threaded
    ) as it:
        got = list(it)
        assert it.position == steps
    assert len(got) == steps
    for a, b in zip(plain, got, strict=True):
        _assert_same(a, b)
        assert b["keypoint"].sharding == sharding.batch_sharding(mesh)
    # Interrupted after 2 steps (the prefetcher has already pulled ahead), then resumed at step 2.
    with prefetch.DevicePrefetcher(
        input_pipeline.train_iterator(dataset, config, 0, steps, 0, 1), mesh, size, 0, threaded
    ) as it:
        first = [next(it), next(it)]
    with prefetch.DevicePrefetcher(
        input_pipeline.train_iterator(dataset, config, 2, steps, 0, 1), mesh, size, 2, threaded
    ) as it:
        rest = list(it)
        assert it.position == steps
    for a, b in zip(plain, first + rest, strict=True):
        _assert_same(a, b)


def test_errors_reach_the_consumer():
    mesh = sharding.make_mesh((-1, 1))

    def broken():
        yield {"x": np.zeros((8, 2), np.float32)}
        raise RuntimeError("bad record")

    it = prefetch.DevicePrefetcher(broken(), mesh, 2)
    next(it)
    with pytest.raises(RuntimeError, match="bad record"):
        next(it)
    with pytest.raises(ValueError, match="size"):
        prefetch.DevicePrefetcher(iter([]), mesh, 0)
