"""TFDS keypoint records -> per-process batches of augmented keypoints -> global arrays on the mesh.

The host ships keypoints (a few KB per clip); heatmap volumes are rendered inside the jitted step. For ArrayRecord
datasets (the converters' default) batches are a pure function of (seed, step): one seeded sampler draws the global
batch of every step, each process reads and augments its own rows of it from a random-access source, so the global
batch is the same for any number of processes and a resumed run continues exactly by starting at its step. grain
runs the reads in parallel threads (or worker processes) and prefetches ahead of the device. TFRecord datasets are
streamed with tf.data (deterministic for a given seed and process count).
"""

import dataclasses
import os
import re
from collections.abc import Iterator, Sequence
from typing import Any

import grain
import jax
import numpy as np
import tensorflow_datasets as tfds

from skclip_jax import class_texts, pose_transforms

KEYPOINT_FEATURES = ("keypoint", "keypoint_score", "img_shape", "total_frames", "label")


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """What the driver needs to know about a converted dataset."""

    data_dir: str
    class_names: tuple[str, ...]
    split_sizes: dict[str, int]
    file_format: str = "array_record"

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


def load_dataset_info(
    data_dir: str, class_names_file: str = "", slices: Sequence[str] = ()
) -> DatasetInfo:
    """Reads the dataset's metadata: split sizes and class names (from the ClassLabel, or a file).

    ``slices``: TFDS split specs such as ``train[:85%]`` / ``train[85%:]`` (a validation split carved from the
    training data, docs/design.md "Validation splits") to size as well; an invalid spec stays out of
    ``split_sizes``, so the caller's unknown-split error names it.
    """
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
    for spec in slices:
        if spec not in sizes and "[" in spec:
            try:
                sizes[spec] = builder.info.splits[spec].num_examples
            except (KeyError, ValueError, AssertionError):
                pass
    file_format = getattr(builder.info.file_format, "value", str(builder.info.file_format))
    return DatasetInfo(builder_dir, names, sizes, file_format)


_PERCENT_SLICE = re.compile(r"^(?P<name>[^\[\]]+?)(?:\[(?P<start>\d*)%?:(?P<end>\d*)%?\])?$")


def carve_split(spec: str, percent: int) -> tuple[str, str]:
    """Splits a split spec into (the rest, its last `percent` points of the whole split) as TFDS slices.

    ``carve_split("train", 10) == ("train[:90%]", "train[90%:]")``; an already sliced spec keeps its bounds,
    ``carve_split("train[:85%]", 10) == ("train[:75%]", "train[75%:85%]")``. TFDS orders a split by hashed
    example keys, so a contiguous slice is a random sample of clips.
    """
    match = _PERCENT_SLICE.match(spec)
    if not match or ("[" in spec and "%" not in spec):
        raise ValueError(
            f"cannot carve {percent}% from split {spec!r}: give a name or a percent slice"
        )
    name = match["name"]
    start, end = int(match["start"] or 0), int(match["end"] or 100)
    cut = end - percent
    if not 0 <= start < cut < end <= 100:
        raise ValueError(f"cannot carve {percent}% from split {spec!r}: it spans {start}%..{end}%")
    lo = f"{start}%" if start else ""
    hi = "" if end == 100 else f"{end}%"
    return f"{name}[{lo}:{cut}%]", f"{name}[{cut}%:{hi}]"


def with_calibration_split(config):
    """The config a zero-shot run trains and evaluates with: data.calibration_split carved from the training split.

    Applies when data.unseen_classes and data.calibration_percent are set (docs/zero_shot.md "Calibrated
    stacking, chosen without test clips"); the saved run config keeps the fields as given, so resolving it again
    gives the same splits. Other configs come back as they are, with data.calibration_split = "".
    """
    config = config.copy_and_resolve_references()
    percent = config.data.get("calibration_percent", 0)
    with config.unlocked():
        config.data.calibration_split = ""
        if config.data.get("unseen_classes") and percent:
            config.data.train_split, config.data.calibration_split = carve_split(
                config.data.train_split, percent
            )
    return config


def open_source(info: DatasetInfo, split: str):
    """A random-access source over one split (ArrayRecord), with a clear error for an unknown split."""
    if split not in info.split_sizes:
        raise ValueError(
            f"split {split!r} is not in the dataset at {info.data_dir}; it has {sorted(info.split_sizes)}"
        )
    return tfds.builder_from_directory(info.data_dir).as_data_source(split=split)


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


def _train_clip(sample: dict[str, Any], data, seed: int, step: int, position: int):
    # Augmentation randomness depends on (seed, step, position in the global batch) only.
    rng = np.random.default_rng([seed, step, position])
    out = pose_transforms.train_transform(
        sample,
        rng,
        clip_len=data.clip_len,
        out_size=data.train_size,
        short_side=data.short_side,
        area_range=tuple(data.crop_area),
        flip_ratio=data.flip_ratio,
        num_persons=data.num_persons,
    )
    return out["keypoint"], out["keypoint_score"], sample["label"]


def _test_clip(sample: dict[str, Any], data):
    out = pose_transforms.test_transform(
        sample,
        clip_len=data.clip_len,
        num_clips=data.num_test_clips,
        out_size=data.test_size,
        num_persons=data.num_persons,
    )
    return out["keypoint"], out["keypoint_score"], sample["label"]


def _stack(clips, mask=None) -> dict[str, np.ndarray]:
    keypoints, scores, labels = zip(*clips, strict=True)
    batch = {
        "keypoint": np.stack(keypoints).astype(np.float32),
        "keypoint_score": np.stack(scores).astype(np.float32),
        "label": np.asarray(labels, np.int32),
    }
    if mask is not None:
        batch["mask"] = np.asarray(mask, bool)
    return batch


class TrainBatches:
    """Callable step -> this process's slice of the step's global batch, as NumPy arrays."""

    def __init__(
        self,
        source,
        sampler: TrainSampler,
        config,
        process_index: int,
        process_count: int,
        split: "TrainSplit | None" = None,
    ):
        self.source = source
        self.sampler = sampler
        self.data = config.data
        self.seed = config.seed
        self.rows = process_rows(sampler.global_batch, process_index, process_count)
        self.split = split

    def __call__(self, step: int) -> dict[str, np.ndarray]:
        indices = self.sampler.global_indices(step)
        clips = []
        for position in range(self.rows.start, self.rows.stop):
            index = int(indices[position])
            if self.split is not None:
                index = int(self.split.indices[index])
            sample = _as_sample(self.source[index], f"training example {index}")
            if self.split is not None:
                sample["label"] = int(self.split.label_map[sample["label"]])
            clips.append(_train_clip(sample, self.data, self.seed, step, position))
        return _stack(clips)


@dataclasses.dataclass(frozen=True)
class TrainSplit:
    """The training split of a zero-shot run: only seen-class examples, labels renumbered over seen classes.

    indices: the examples of the split the sampler draws from (every unseen-class example is left out);
    label_map: [L] dataset label -> training label in [0, len(seen)), -1 for unseen classes;
    seen: the dataset labels of training label 0, 1, ...
    """

    indices: np.ndarray
    label_map: np.ndarray
    seen: tuple[int, ...]


def split_labels(info: DatasetInfo, split: str) -> np.ndarray:
    """int [N] labels of every example of an ArrayRecord split, read once (keypoints are not decoded)."""
    builder = tfds.builder_from_directory(info.data_dir)
    skip = {k: tfds.decode.SkipDecoding() for k in ("keypoint", "keypoint_score")}
    source = builder.as_data_source(split=split, decoders=skip)
    return np.fromiter((int(source[i]["label"]) for i in range(len(source))), np.int64, len(source))


def label_map_of(num_classes: int, unseen: Sequence[int]) -> np.ndarray:
    """[L] dataset label -> training label (seen classes renumbered in order), -1 for unseen."""
    seen = class_texts.seen_classes(num_classes, unseen)
    label_map = np.full(num_classes, -1, np.int64)
    label_map[list(seen)] = np.arange(len(seen))
    return label_map


def train_split(info: DatasetInfo, config, unseen: Sequence[int]) -> TrainSplit | None:
    """The seen-class part of the training split; None when no class is held out."""
    if not unseen:
        return None
    labels = split_labels(info, config.data.train_split)
    label_map = label_map_of(info.num_classes, unseen)
    indices = np.flatnonzero(label_map[labels] >= 0)
    if indices.size == 0:
        raise ValueError(
            f"data.unseen_classes leaves no example in the training split {config.data.train_split!r}"
        )
    return TrainSplit(indices, label_map, class_texts.seen_classes(info.num_classes, unseen))


def _resolve_process(process_index, process_count):
    return (
        jax.process_index() if process_index is None else process_index,
        jax.process_count() if process_count is None else process_count,
    )


def train_iterator(
    info: DatasetInfo,
    config,
    start_step: int,
    num_steps: int,
    process_index: int | None = None,
    process_count: int | None = None,
    unseen: Sequence[int] = (),
) -> Iterator[dict[str, np.ndarray]]:
    """Local batches for steps start_step .. num_steps - 1, read and augmented ahead of time by grain.

    TFRecord datasets are streamed with tf.data instead (see `_streamed_train_batches`). With `unseen`
    classes (zero-shot runs) their examples are never read and labels count the seen classes only
    (`TrainSplit`).
    """
    process_index, process_count = _resolve_process(process_index, process_count)
    if info.file_format == "tfrecord":
        if unseen:
            raise ValueError(
                "data.unseen_classes needs an ArrayRecord dataset (the converters' default), not tfrecord"
            )
        return _streamed_train_batches(
            info, config, start_step, num_steps, process_index, process_count
        )
    source = open_source(info, config.data.train_split)
    split = train_split(info, config, unseen)
    num_examples = len(source) if split is None else len(split.indices)
    sampler = TrainSampler(num_examples, config.batch_size, config.data.repeat, config.seed)
    make_batch = TrainBatches(source, sampler, config, process_index, process_count, split)
    dataset = grain.MapDataset.range(start_step, num_steps).map(make_batch)
    if config.data.num_workers > 0:
        iter_ds = dataset.to_iter_dataset(grain.ReadOptions(num_threads=1, prefetch_buffer_size=2))
        iter_ds = iter_ds.mp_prefetch(
            grain.MultiprocessingOptions(num_workers=config.data.num_workers)
        )
    else:
        iter_ds = dataset.to_iter_dataset(grain.ReadOptions(num_threads=2, prefetch_buffer_size=4))
    return iter(iter_ds)


def _tf_records(
    info: DatasetInfo,
    split: str,
    *,
    shuffle_seed: int | None,
    process_index: int,
    process_count: int,
):
    """A split as a NumPy iterator over tf.data: files sharded over processes, optionally shuffled and repeated."""
    import tensorflow as tf

    if split not in info.split_sizes:
        raise ValueError(
            f"split {split!r} is not in the dataset at {info.data_dir}; it has {sorted(info.split_sizes)}"
        )
    builder = tfds.builder_from_directory(info.data_dir)
    read_config = tfds.ReadConfig(
        shuffle_seed=shuffle_seed,
        input_context=tf.distribute.InputContext(
            num_input_pipelines=process_count, input_pipeline_id=process_index
        ),
    )
    dataset = builder.as_dataset(
        split=split, shuffle_files=shuffle_seed is not None, read_config=read_config
    )
    if shuffle_seed is not None:
        dataset = dataset.repeat().shuffle(4096, seed=shuffle_seed)
    return iter(tfds.as_numpy(dataset.prefetch(tf.data.AUTOTUNE)))


def _streamed_train_batches(info, config, start_step, num_steps, process_index, process_count):
    """TFRecord training: a seeded shuffle buffer over this process's files, deterministic for a given seed
    and process count; resume skips the clips of the steps already taken. Unlike the ArrayRecord path the
    batches depend on the number of processes and the shuffle is only as wide as its buffer.
    """
    local = config.batch_size // process_count
    records = _tf_records(
        info,
        config.data.train_split,
        shuffle_seed=config.seed,
        process_index=process_index,
        process_count=process_count,
    )
    for _ in range(start_step * local):
        next(records)
    for step in range(start_step, num_steps):
        clips = []
        for row in range(local):
            sample = _as_sample(next(records), f"training example of step {step}")
            clips.append(
                _train_clip(sample, config.data, config.seed, step, process_index * local + row)
            )
        yield _stack(clips)


def num_train_examples(info: DatasetInfo, config, unseen: Sequence[int] = ()) -> int:
    """The clips the training sampler draws from: the training split's, less any unseen-class clips."""
    if not unseen:
        return info.split_sizes[config.data.train_split]
    if info.file_format == "tfrecord":
        raise ValueError(
            "data.unseen_classes needs an ArrayRecord dataset (the converters' default), not tfrecord"
        )
    return len(train_split(info, config, unseen).indices)


def steps_per_epoch(info: DatasetInfo, config, unseen: Sequence[int] = ()) -> int:
    return TrainSampler(
        num_train_examples(info, config, unseen),
        config.batch_size,
        config.data.repeat,
        config.seed,
    ).steps_per_epoch


def eval_iterator(
    info: DatasetInfo,
    config,
    process_index: int | None = None,
    process_count: int | None = None,
    split: str | None = None,
) -> Iterator[dict[str, np.ndarray]]:
    """The whole test split (or `split`) once, in order, as local batches padded to a full global batch with a `mask`.

    Every video yields num_test_clips deterministic views (PYSKL test mode). Padding rows repeat a real clip and are
    masked out of the metrics, so every batch has the same shape (no recompilation on the last one).
    """
    process_index, process_count = _resolve_process(process_index, process_count)
    global_batch = config.eval_batch_size
    rows = process_rows(global_batch, process_index, process_count)
    split = split or config.data.test_split
    n = info.split_sizes.get(split, 0)
    num_batches = -(-n // global_batch)
    if info.file_format == "tfrecord":
        return _streamed_eval_batches(info, config, rows, num_batches, split)
    source = open_source(info, split)

    def make_batch(batch_index: int) -> dict[str, np.ndarray]:
        clips, mask = [], []
        for position in range(rows.start, rows.stop):
            index = min(batch_index * global_batch + position, n - 1)
            clips.append(
                _test_clip(_as_sample(source[index], f"test example {index}"), config.data)
            )
            mask.append(batch_index * global_batch + position < n)
        return _stack(clips, mask)

    dataset = grain.MapDataset.range(num_batches).map(make_batch)
    return iter(dataset.to_iter_dataset(grain.ReadOptions(num_threads=2, prefetch_buffer_size=4)))


def _streamed_eval_batches(info, config, rows: slice, num_batches: int, split: str):
    """TFRecord evaluation: every process reads the split in order and keeps its rows of each global batch."""
    records = _tf_records(info, split, shuffle_seed=None, process_index=0, process_count=1)
    last = None
    for _ in range(num_batches):
        global_rows = []
        for _ in range(config.eval_batch_size):
            record = next(records, None)
            if record is not None:
                last = _as_sample(record, "test example")
            global_rows.append((last, record is not None))
        mine = global_rows[rows]
        yield _stack(
            [_test_clip(sample, config.data) for sample, _ in mine], [valid for _, valid in mine]
        )
