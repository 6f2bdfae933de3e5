r"""A 1-nearest-neighbour baseline on the same keypoints a config trains on: the bar a trained model must clear.

    python -m skclip_jax.tools.knn_baseline --config=configs/penn_action.py --config.data.data_dir=data/penn_action

Each clip becomes one vector: its most confident person's joints, resampled to ``--frames`` evenly spaced frames,
centred on the clip's mean joint position and scaled by the clip's spread (so image size and position do not
count), low-score joints zeroed; a test clip takes the label of the closest training clip (Euclidean), itself or
its left-right mirror (``--mirror``: actions are done with either hand, the model's training flips too). Prints one
JSON line with top-1 and mean class accuracy on the config's test split (``data.train_split`` /
``data.test_split``, so ``:val`` carves a validation split as for training).
"""

import json
import sys

import numpy as np
from absl import app, flags
from ml_collections import config_flags
from tqdm import tqdm

from skclip_jax import evaluators, input_pipeline
from skclip_jax.heatmaps import COCO_LEFT_KP, COCO_RIGHT_KP

FLAGS = flags.FLAGS


def define_flags() -> None:
    """The command line's flags, defined only when this module is the program: importing it defines none, so it
    imports beside the other tools (``predict``, ``main``) that also take ``--config``."""
    config_flags.DEFINE_config_file("config", None, "Dataset config (configs/*.py[:variants]).")
    flags.DEFINE_integer("frames", 32, "Frames each clip is resampled to.")
    flags.DEFINE_float("min_score", 0.05, "Joints scored below this count as missing.")
    flags.DEFINE_bool("mirror", True, "Also match each test clip's left-right mirror image.")
    flags.mark_flags_as_required(["config"])


def _flip_permutation(num_joints: int = 17) -> tuple[int, ...]:
    """Joint order of the mirror image: the training flip's COCO-17 left/right pairs swapped."""
    order = list(range(num_joints))
    for left, right in zip(COCO_LEFT_KP, COCO_RIGHT_KP, strict=True):
        order[left], order[right] = right, left
    return tuple(order)


COCO_FLIP = _flip_permutation()


def mirror_vector(vector: np.ndarray, num_joints: int = 17) -> np.ndarray:
    """The trajectory vector of the clip's mirror image: x negated (vectors are centred), joints swapped."""
    points = vector.reshape(-1, num_joints, 2)[:, list(COCO_FLIP)] * np.array(
        [-1.0, 1.0], np.float32
    )
    return points.reshape(vector.shape)


def clip_vector(
    keypoint: np.ndarray, score: np.ndarray, frames: int = 32, min_score: float = 0.05
) -> np.ndarray:
    """[M, T, V, 2] keypoints and [M, T, V] scores -> a [frames * V * 2] trajectory vector (see module doc)."""
    person = int(np.argmax(score.reshape(score.shape[0], -1).mean(axis=1)))
    kp, sc = keypoint[person], score[person]  # [T, V, 2], [T, V]
    index = np.round(np.linspace(0, kp.shape[0] - 1, frames)).astype(int)
    kp, valid = kp[index], sc[index] >= min_score
    if not valid.any():
        return np.zeros(frames * kp.shape[1] * 2, np.float32)
    points = kp[valid]
    centre = points.mean(axis=0)
    # The RMS distance to the centre: invariant to the mirror, unlike the std of the flattened (x, y) values.
    spread = float(np.sqrt(np.mean(np.sum((points - centre) ** 2, axis=-1))))
    centred = (kp - centre) / max(spread, 1e-6)
    return np.where(valid[..., None], centred, 0.0).astype(np.float32).reshape(-1)


def split_vectors(info, split: str, frames: int, min_score: float) -> tuple[np.ndarray, np.ndarray]:
    """Every clip of a split as (vectors [N, D], labels [N])."""
    source = input_pipeline.open_source(info, split)
    vectors, labels = [], []
    for i in tqdm(range(len(source)), desc=split, unit="clip", file=sys.stderr):
        record = source[i]
        vectors.append(
            clip_vector(
                np.asarray(record["keypoint"], np.float32),
                np.asarray(record["keypoint_score"], np.float32),
                frames,
                min_score,
            )
        )
        labels.append(int(record["label"]))
    return np.stack(vectors), np.asarray(labels, np.int64)


def squared_distances(test: np.ndarray, train: np.ndarray) -> np.ndarray:
    return (
        np.sum(test**2, axis=1)[:, None] - 2.0 * test @ train.T + np.sum(train**2, axis=1)[None, :]
    )


def nearest_labels(
    train: np.ndarray, train_labels: np.ndarray, test: np.ndarray, mirror: bool = False
) -> np.ndarray:
    """Label of each test vector's closest training vector (squared Euclidean, first index on ties).

    With ``mirror``, a test vector's distance to a training vector is the smaller of its own and its mirror's.
    """
    distances = squared_distances(test, train)
    if mirror:
        mirrored = np.stack([mirror_vector(v) for v in test])
        distances = np.minimum(distances, squared_distances(mirrored, train))
    return train_labels[np.argmin(distances, axis=1)]


def main(argv):
    del argv
    config = FLAGS.config
    info = input_pipeline.load_dataset_info(
        config.data.data_dir,
        config.data.class_names_file,
        slices=(config.data.train_split, config.data.test_split),
    )
    train, train_labels = split_vectors(
        info, config.data.train_split, FLAGS.frames, FLAGS.min_score
    )
    test, test_labels = split_vectors(info, config.data.test_split, FLAGS.frames, FLAGS.min_score)
    predicted = nearest_labels(train, train_labels, test, mirror=FLAGS.mirror)
    one_hot = np.eye(info.num_classes)[predicted]
    print(
        json.dumps(
            {
                "data_dir": info.data_dir,
                "train_split": config.data.train_split,
                "test_split": config.data.test_split,
                "mirror": FLAGS.mirror,
                "knn_top1": round(float(np.mean(predicted == test_labels)), 4),
                "knn_mean_class_accuracy": round(
                    float(evaluators.mean_class_accuracy(one_hot, test_labels)), 4
                ),
            }
        )
    )


if __name__ == "__main__":
    define_flags()
    app.run(main)
