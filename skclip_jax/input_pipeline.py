"""TFDS keypoint records -> per-process batches of augmented keypoints -> global arrays on the mesh.

The host ships keypoints (a few KB per clip); heatmap volumes are rendered inside the jitted step. Batches are a pure
function of (seed, step): one seeded sampler draws the global batch of every step, each process reads and augments
its own rows of it from a random-access ArrayRecord source, so the global batch is the same for any number of
processes and a resumed run continues exactly by starting at its step. grain runs the reads in parallel threads
(or worker processes) and prefetches ahead of the device.
"""

import dataclasses
import os
from collections.abc import Iterator, Sequence
from typing import Any

import grain
import jax
import numpy as np
import tensorflow_datasets as tfds

from skclip_jax import pose_transforms

KEYPOINT_FEATURES = ("keypoint", "keypoint_score", "img_shape", "total_frames", "label")


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """What the driver needs to know about a converted dataset."""

    data_dir: str
    class_names: tuple[str, ...]
    split_sizes: dict[str, int]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


def find_builder_dir(data_dir: str) -> str:
    """Accepts a converter's --out_dir (holding <name>/<version>/) or the version directory itself."""
    if not os.path.isdir(data_dir):
        raise FileNotFoundError(
            f"data.data_dir={data_dir!r} does not exist; convert a dataset with data_prep "
            "(python -m data_prep.pyskl / data_prep.penn_action / data_prep.synthetic --out_dir=...)."
        )
    if os.path.exists(os.path.join(data_dir, "dataset_info.json")):
        return data_dir
    candidates = []
    for root, _, files in os.walk(data_dir):
        if "dataset_info.json" in files:
            candidates.append(root)
    if not candidates:
        raise FileNotFoundError(
            f"data.data_dir={data_dir!r} holds no TFDS dataset (no dataset_info.json below it); "
            "point it at a data_prep converter's --out_dir."
        )
    if len(candidates) > 1:
        raise ValueError(
            f"data.data_dir={data_dir!r} holds several TFDS datasets {sorted(candidates)}; point it at one."
        )
    return candidates[0]


def read_class_names(path: str) -> tuple[str, ...]:
    if not os.path.exists(path):
        raise FileNotFoundError(f"data.class_names_file={path!r} does not exist")
    with open(path, encoding="utf-8") as f:
        names = tuple(line.strip() for line in f if line.strip())
    if not names:
        raise ValueError(f"data.class_names_file={path!r} holds no class names")
    return names


def load_dataset_info(data_dir: str, class_names_file: str = "") -> DatasetInfo:
    """Reads the dataset's metadata: split sizes and class names (from the ClassLabel, or a file)."""
    builder_dir = find_builder_dir(data_dir)
    builder = tfds.builder_from_directory(builder_dir)
    if class_names_file:
        names = read_class_names(class_names_file)
    else:
        label = builder.info.features["label"]
        names = tuple(getattr(label, "names", None) or ())
        if not names:
            raise ValueError(
                f"the dataset in {builder_dir} has no class names in its metadata; set data.class_names_file"
            )
    sizes = {name: split.num_examples for name, split in builder.info.splits.items()}
    return DatasetInfo(builder_dir, names, sizes)


def open_source(info: DatasetInfo, split: str):
    """A random-access source over one split (ArrayRecord), with a clear error for an unknown split."""
    if split not in info.split_sizes:
        raise ValueError(
            f"split {split!r} is not in the dataset at {info.data_dir}; it has {sorted(info.split_sizes)}"
        )
    builder = tfds.builder_from_directory(info.data_dir)
    try:
        return builder.as_data_source(split=split)
    except NotImplementedError as e:  # TFRecord datasets have no random access.
        raise ValueError(
            f"{info.data_dir} is stored as TFRecord; training needs random access: convert with "
            "--file_format=array_record"
        ) from e


def prompts(class_names: Sequence[str], template: str = "{}") -> list[str]:
    """Natural-language prompts: underscores become spaces ("jumping_jacks" -> "jumping jacks")."""
    return [template.format(name.replace("_", " ")) for name in class_names]


def _as_sample(record: dict[str, Any], where: str) -> dict[str, Any]:
    sample = {k: record[k] for k in KEYPOINT_FEATURES}
    sample["img_shape"] = tuple(int(v) for v in np.asarray(record["img_shape"]))
    sample["total_frames"] = int(record["total_frames"])
    sample["label"] = int(record["label"])
    keypoint = np.asarray(record["keypoint"], np.float32)
    if keypoint.ndim != 4 or keypoint.shape[-1] != 2:
        raise ValueError(f"{where}: keypoint has shape {keypoint.shape}, expected [M, T, V, 2]")
    sample["keypoint"] = keypoint
    sample["keypoint_score"] = np.asarray(record["keypoint_score"], np.float32)
    return sample


@dataclasses.dataclass(frozen=True)
class TrainSampler:
    """Global batch indices of every step: a fresh permutation of the (repeated) split per epoch.

    The original repeats the training split `repeat` times per epoch and shuffles the repeated list; drop_remainder
    keeps every step's batch full (static shapes).
    """

    num_examples: int
    global_batch: int
    repeat: int
    seed: int

    @property
    def steps_per_epoch(self) -> int:
        steps = (self.num_examples * self.repeat) // self.global_batch
        if steps == 0:
            raise ValueError(
                f"batch_size={self.global_batch} exceeds the {self.num_examples * self.repeat} training "
                "clips of an epoch; lower batch_size"
            )
        return steps

    def global_indices(self, step: int) -> np.ndarray:
        epoch, k = divmod(step, self.steps_per_epoch)
        rng = np.random.default_rng([self.seed, epoch])
        order = rng.permutation(self.num_examples * self.repeat)
        return order[k * self.global_batch : (k + 1) * self.global_batch] % self.num_examples


def process_rows(global_batch: int, process_index: int, process_count: int) -> slice:
    per_process = global_batch // process_count
    return slice(process_index * per_process, (process_index + 1) * per_process)


class TrainBatches:
    """Callable step -> this process's slice of the step's global batch, as NumPy arrays."""

    def __init__(
        self, source, sampler: TrainSampler, config, process_index: int, process_count: int
    ):
        self.source = source
        self.sampler = sampler
        self.data = config.data
        self.seed = config.seed
        self.rows = process_rows(sampler.global_batch, process_index, process_count)

    def __call__(self, step: int) -> dict[str, np.ndarray]:
        indices = self.sampler.global_indices(step)
        keypoints, scores, labels = [], [], []
        for position in range(self.rows.start, self.rows.stop):
            index = int(indices[position])
            sample = _as_sample(self.source[index], f"training example {index}")
            # Augmentation randomness depends on (seed, step, position in the global batch) only.
            rng = np.random.default_rng([self.seed, step, position])
            out = pose_transforms.train_transform(
                sample,
                rng,
                clip_len=self.data.clip_len,
                out_size=self.data.train_size,
                short_side=self.data.short_side,
                area_range=tuple(self.data.crop_area),
                flip_ratio=self.data.flip_ratio,
                num_persons=self.data.num_persons,
            )
            keypoints.append(out["keypoint"])
            scores.append(out["keypoint_score"])
            labels.append(sample["label"])
        return {
            "keypoint": np.stack(keypoints).astype(np.float32),
            "keypoint_score": np.stack(scores).astype(np.float32),
            "label": np.asarray(labels, np.int32),
        }


def train_iterator(
    info: DatasetInfo,
    config,
    start_step: int,
    num_steps: int,
    process_index: int | None = None,
    process_count: int | None = None,
) -> Iterator[dict[str, np.ndarray]]:
    """Local batches for steps start_step .. num_steps - 1, read and augmented ahead of time by grain."""
    process_index = jax.process_index() if process_index is None else process_index
    process_count = jax.process_count() if process_count is None else process_count
    source = open_source(info, config.data.train_split)
    sampler = TrainSampler(len(source), config.batch_size, config.data.repeat, config.seed)
    make_batch = TrainBatches(source, sampler, config, process_index, process_count)
    dataset = grain.MapDataset.range(start_step, num_steps).map(make_batch)
    if config.data.num_workers > 0:
        iter_ds = dataset.to_iter_dataset(grain.ReadOptions(num_threads=1, prefetch_buffer_size=2))
        iter_ds = iter_ds.mp_prefetch(
            grain.MultiprocessingOptions(num_workers=config.data.num_workers)
        )
    else:
        iter_ds = dataset.to_iter_dataset(grain.ReadOptions(num_threads=2, prefetch_buffer_size=4))
    return iter(iter_ds)


def steps_per_epoch(info: DatasetInfo, config) -> int:
    return TrainSampler(
        info.split_sizes[config.data.train_split],
        config.batch_size,
        config.data.repeat,
        config.seed,
    ).steps_per_epoch


def eval_iterator(
    info: DatasetInfo,
    config,
    process_index: int | None = None,
    process_count: int | None = None,
) -> Iterator[dict[str, np.ndarray]]:
    """The whole test split once, in order, as local batches padded to a full global batch with a `mask`.

    Every video yields num_test_clips deterministic views (PYSKL test mode). Padding rows repeat a real clip and are
    masked out of the metrics, so every batch has the same shape (no recompilation on the last one).
    """
    process_index = jax.process_index() if process_index is None else process_index
    process_count = jax.process_count() if process_count is None else process_count
    source = open_source(info, config.data.test_split)
    n = len(source)
    global_batch = config.eval_batch_size
    num_batches = -(-n // global_batch)
    rows = process_rows(global_batch, process_index, process_count)
    data = config.data

    def make_batch(batch_index: int) -> dict[str, np.ndarray]:
        keypoints, scores, labels, mask = [], [], [], []
        for position in range(rows.start, rows.stop):
            index = batch_index * global_batch + position
            valid = index < n
            sample = _as_sample(source[min(index, n - 1)], f"test example {min(index, n - 1)}")
            out = pose_transforms.test_transform(
                sample,
                clip_len=data.clip_len,
                num_clips=data.num_test_clips,
                out_size=data.test_size,
                num_persons=data.num_persons,
            )
            keypoints.append(out["keypoint"])
            scores.append(out["keypoint_score"])
            labels.append(sample["label"])
            mask.append(valid)
        return {
            "keypoint": np.stack(keypoints).astype(np.float32),
            "keypoint_score": np.stack(scores).astype(np.float32),
            "label": np.asarray(labels, np.int32),
            "mask": np.asarray(mask, bool),
        }

    dataset = grain.MapDataset.range(num_batches).map(make_batch)
    return iter(dataset.to_iter_dataset(grain.ReadOptions(num_threads=2, prefetch_buffer_size=4)))
