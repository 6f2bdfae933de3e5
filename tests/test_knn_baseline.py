"""The 1-nearest-neighbour baseline: trajectory vectors and neighbour search against plain loops."""

import numpy as np

from data_prep import synthetic
from skclip_jax import input_pipeline
from skclip_jax.tools import knn_baseline


def test_nearest_labels_equal_a_plain_loop():
    rng = np.random.default_rng(0)
    train, test = rng.normal(size=(30, 7)), rng.normal(size=(11, 7))
    labels = rng.integers(0, 5, size=30)
    want = [labels[min(range(30), key=lambda j: float(np.sum((x - train[j]) ** 2)))] for x in test]
    np.testing.assert_array_equal(knn_baseline.nearest_labels(train, labels, test), want)
    # A training clip is its own nearest neighbour.
    np.testing.assert_array_equal(knn_baseline.nearest_labels(train, labels, train[:5]), labels[:5])


def test_clip_vector_ignores_position_and_scale_and_picks_the_confident_person():
    rng = np.random.default_rng(1)
    actor = rng.uniform(100, 200, size=(1, 40, 17, 2)).astype(np.float32)
    bystander = rng.uniform(0, 50, size=(1, 40, 17, 2)).astype(np.float32)
    keypoint = np.concatenate([bystander, actor])
    score = np.concatenate([np.full((1, 40, 17), 0.2), np.full((1, 40, 17), 0.9)]).astype(
        np.float32
    )
    vector = knn_baseline.clip_vector(keypoint, score, frames=8)
    moved = knn_baseline.clip_vector(keypoint * 3.0 + 50.0, score, frames=8)
    np.testing.assert_allclose(vector, moved, atol=1e-5)
    alone = knn_baseline.clip_vector(actor, score[1:], frames=8)
    np.testing.assert_allclose(vector, alone, atol=1e-6)
    assert vector.shape == (8 * 17 * 2,)
    score[1, :, 3] = 0.0  # a missing joint is zeroed, not left at its (0, 0) placeholder position.
    assert np.all(knn_baseline.clip_vector(keypoint, score, frames=8).reshape(8, 17, 2)[:, 3] == 0)


def test_the_baseline_beats_chance_on_the_synthetic_set(tmp_path):
    synthetic.make_synthetic_dataset(
        str(tmp_path), num_classes=4, num_train_per_class=8, num_test_per_class=4, num_persons=1
    )
    info = input_pipeline.load_dataset_info(str(tmp_path))
    train, train_labels = knn_baseline.split_vectors(info, "train", 16, 0.05)
    test, test_labels = knn_baseline.split_vectors(info, "test", 16, 0.05)
    assert train.shape == (32, 16 * 17 * 2) and test.shape == (16, 16 * 17 * 2)
    accuracy = np.mean(knn_baseline.nearest_labels(train, train_labels, test) == test_labels)
    assert accuracy > 0.5  # chance is 0.25.


def test_mirror_matches_a_clip_done_with_the_other_hand():
    rng = np.random.default_rng(2)
    keypoint = rng.uniform(0, 100, size=(1, 10, 17, 2)).astype(np.float32)
    score = np.ones((1, 10, 17), np.float32)
    mirrored = keypoint[:, :, list(knn_baseline.COCO_FLIP)] * np.array([-1.0, 1.0], np.float32)
    vector = knn_baseline.clip_vector(keypoint, score, frames=10)
    other_hand = knn_baseline.clip_vector(mirrored, score, frames=10)
    np.testing.assert_allclose(knn_baseline.mirror_vector(vector), other_hand, atol=1e-5)
    np.testing.assert_allclose(knn_baseline.mirror_vector(other_hand), vector, atol=1e-5)
    decoy = knn_baseline.clip_vector(rng.uniform(0, 100, size=(1, 10, 17, 2)), score, frames=10)
    train = np.stack([vector, decoy])
    # Without the mirror a random decoy may win; with it the same action done with the other hand does.
    assert (
        knn_baseline.nearest_labels(train, np.array([0, 1]), other_hand[None], mirror=True)[0] == 0
    )
