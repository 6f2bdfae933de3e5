"""The input pipeline: seeded global batches, process-count invariance, exact resume, padded evaluation."""

import numpy as np
import pytest

from configs import demo
from data_prep import synthetic
from skclip_jax import input_pipeline


@pytest.fixture
def dataset(tiny_dataset):
    return tiny_dataset


@pytest.fixture
def config(dataset):
    config = demo.get_config("tiny")
    config.data.data_dir = dataset.data_dir
    config.batch_size = 4
    config.eval_batch_size = 4
    config.data.repeat = 2
    return config


def take(iterator, n):
    return [next(iterator) for _ in range(n)]


def test_class_names_and_prompts_come_from_the_dataset(dataset):
    assert dataset.num_classes == 4
    assert dataset.split_sizes == {"train": 12, "test": 8}
    assert input_pipeline.prompts(["jumping_jacks"], "a person {}") == ["a person jumping jacks"]


def test_sampler_covers_each_repeated_epoch_once():
    sampler = input_pipeline.TrainSampler(num_examples=10, global_batch=4, repeat=2, seed=3)
    assert sampler.steps_per_epoch == 5
    epoch = np.concatenate([sampler.global_indices(s) for s in range(5)])
    assert (
        sorted(np.bincount(epoch, minlength=10)) == [2] * 10
    )  # each clip twice per repeated epoch.
    assert not np.array_equal(sampler.global_indices(0), sampler.global_indices(5))  # reshuffled.
    np.testing.assert_array_equal(sampler.global_indices(7), sampler.global_indices(7))


def test_batches_are_deterministic_and_resume_exactly(dataset, config):
    full = take(input_pipeline.train_iterator(dataset, config, 0, 6, 0, 1), 6)
    again = take(input_pipeline.train_iterator(dataset, config, 0, 6, 0, 1), 6)
    resumed = take(input_pipeline.train_iterator(dataset, config, 3, 6, 0, 1), 3)
    for a, b in zip(full, again, strict=True):
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])
    for a, b in zip(full[3:], resumed, strict=True):
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])
    assert full[0]["keypoint"].shape == (4, config.data.num_persons, 8, 17, 2)
    assert full[0]["keypoint"].dtype == np.float32 and full[0]["label"].dtype == np.int32
    assert not np.array_equal(full[0]["keypoint"], full[1]["keypoint"])


def test_global_batch_does_not_depend_on_the_number_of_processes(dataset, config):
    whole = take(input_pipeline.train_iterator(dataset, config, 0, 3, 0, 1), 3)
    halves = [take(input_pipeline.train_iterator(dataset, config, 0, 3, p, 2), 3) for p in (0, 1)]
    for step in range(3):
        for key in whole[step]:
            joined = np.concatenate([halves[0][step][key], halves[1][step][key]])
            np.testing.assert_array_equal(joined, whole[step][key])


def test_eval_covers_the_split_once_with_a_padding_mask(dataset, config):
    config.eval_batch_size = 3  # 8 test clips -> 3 batches, the last with one padded row.
    batches = list(input_pipeline.eval_iterator(dataset, config, 0, 1))
    assert len(batches) == 3
    mask = np.concatenate([b["mask"] for b in batches])
    assert mask.tolist() == [True] * 8 + [False]
    assert batches[0]["keypoint"].shape == (
        3,
        config.data.num_test_clips,
        config.data.num_persons,
        8,
        17,
        2,
    )
    labels = np.concatenate([b["label"] for b in batches])[mask]
    assert sorted(np.bincount(labels).tolist()) == [2, 2, 2, 2]
    twice = list(input_pipeline.eval_iterator(dataset, config, 0, 1))
    np.testing.assert_array_equal(batches[1]["keypoint"], twice[1]["keypoint"])


def test_unknown_split_and_missing_dir_are_clear_errors(dataset, tmp_path):
    with pytest.raises(ValueError, match="split 'val' is not in the dataset"):
        input_pipeline.open_source(dataset, "val")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        input_pipeline.load_dataset_info(str(tmp_path / "nowhere"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="holds no TFDS dataset"):
        input_pipeline.load_dataset_info(str(tmp_path / "empty"))


@pytest.fixture(scope="module")
def tfrecord_dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("tfrecord")
    synthetic.make_synthetic_dataset(
        str(out),
        num_train_per_class=3,
        num_test_per_class=2,
        num_classes=4,
        num_frames=20,
        file_format="tfrecord",
    )
    return input_pipeline.load_dataset_info(str(out))


def test_tfrecord_datasets_stream_deterministically_and_resume(tfrecord_dataset, config):
    assert tfrecord_dataset.file_format == "tfrecord"
    config.data.data_dir = tfrecord_dataset.data_dir
    full = take(input_pipeline.train_iterator(tfrecord_dataset, config, 0, 5, 0, 1), 5)
    resumed = take(input_pipeline.train_iterator(tfrecord_dataset, config, 2, 5, 0, 1), 3)
    for a, b in zip(full[2:], resumed, strict=True):
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])
    seen = np.concatenate([b["label"] for b in full[:3]])  # 12 clips, 3 per class, shuffled.
    assert len(set(seen.tolist())) > 1


def test_tfrecord_eval_matches_array_record_eval(tfrecord_dataset, dataset, config):
    config.eval_batch_size = 3
    streamed = list(input_pipeline.eval_iterator(tfrecord_dataset, config, 0, 1))
    indexed = list(input_pipeline.eval_iterator(dataset, config, 0, 1))
    assert len(streamed) == len(indexed) == 3
    for key in ("mask",):
        np.testing.assert_array_equal(
            np.concatenate([b[key] for b in streamed]), np.concatenate([b[key] for b in indexed])
        )
    mask = np.concatenate([b["mask"] for b in streamed])
    labels = np.concatenate([b["label"] for b in streamed])[mask]
    assert sorted(np.bincount(labels).tolist()) == [2, 2, 2, 2]


def test_a_validation_split_carved_from_train_partitions_it(dataset, config):
    """TFDS slice specs ("train[:75%]" / "train[75%:]") size, read and evaluate as splits of their own."""
    info = input_pipeline.load_dataset_info(
        dataset.data_dir, slices=("train[:75%]", "train[75%:]", "train[nope]")
    )
    assert info.split_sizes["train[:75%]"] == 9 and info.split_sizes["train[75%:]"] == 3
    assert (
        "train[nope]" not in info.split_sizes
    )  # an invalid spec is left to the unknown-split error.
    whole = input_pipeline.split_labels(info, "train")
    head = input_pipeline.split_labels(info, "train[:75%]")
    tail = input_pipeline.split_labels(info, "train[75%:]")
    np.testing.assert_array_equal(np.concatenate([head, tail]), whole)
    config.data.test_split = "train[75%:]"
    config.eval_batch_size = 4
    batches = list(input_pipeline.eval_iterator(info, config, 0, 1))
    labels = np.concatenate([b["label"] for b in batches])[
        np.concatenate([b["mask"] for b in batches])
    ]
    np.testing.assert_array_equal(labels, tail)
