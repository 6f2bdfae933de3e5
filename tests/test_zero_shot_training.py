"""Zero-shot runs: unseen-class clips and texts never reach a training step, counted at the source and the step."""

import io
import json
import os
import re

import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds

from configs import demo
from skclip_jax import class_texts, input_pipeline, train
from skclip_jax import steps as steps_lib
from skclip_jax.models import text
from skclip_jax.tools import gzsl_probe

UNSEEN = 1  # the synthetic dataset's class 1 (of 4).


@pytest.fixture
def dataset(tiny_dataset):
    return tiny_dataset


def tiny_config(dataset):
    config = demo.get_config("tiny")
    config.data.data_dir = dataset.data_dir
    config.data.unseen_classes = (dataset.class_names[UNSEEN],)
    config.data.prompt_templates = ("{}", "a person {}.")
    config.data.repeat = 3  # 9 seen clips x 3 = 27: 3 steps of 8 an epoch.
    config.data.calibration_percent = (
        0  # the whole training split trains (see the calibration test).
    )
    return config


class _CountingSource:
    """Records every index the pipeline reads."""

    def __init__(self, source):
        self.source, self.read = source, []

    def __len__(self):
        return len(self.source)

    def __getitem__(self, index):
        self.read.append(int(index))
        return self.source[index]


def test_pipeline_never_reads_an_unseen_clip(dataset, monkeypatch):
    config = tiny_config(dataset)
    sources = []

    def counting_open_source(info, split):
        sources.append(_CountingSource(open_source(info, split)))
        return sources[-1]

    open_source = input_pipeline.open_source
    monkeypatch.setattr(input_pipeline, "open_source", counting_open_source)
    labels = input_pipeline.split_labels(dataset, "train")
    assert np.sum(labels == UNSEEN) == 3  # the held-out clips exist in the split.
    steps = 2 * input_pipeline.steps_per_epoch(dataset, config, (UNSEEN,))
    assert steps == 2 * (9 * 3 // 8)
    batches = list(input_pipeline.train_iterator(dataset, config, 0, steps, 0, 1, unseen=(UNSEEN,)))
    read = np.array(sources[0].read)
    assert read.size == steps * config.batch_size  # every clip of every step counted.
    assert not np.any(labels[read] == UNSEEN)
    assert set(read) == set(np.flatnonzero(labels != UNSEEN))  # every seen clip is used.
    # Training labels count the 3 seen classes; they map back to the clips' dataset labels (grain reads
    # steps in parallel threads, so compare the multisets).
    batch_labels = np.concatenate([b["label"] for b in batches])
    seen = np.array([0, 2, 3])
    np.testing.assert_array_equal(np.sort(seen[batch_labels]), np.sort(labels[read]))


def test_training_steps_get_no_unseen_clip_or_text(dataset, tmp_path, monkeypatch):
    config = tiny_config(dataset)
    config.total_steps = 3
    config.eval_every_steps = 3
    config.checkpoint_every_steps = 3
    seen_inputs = []
    compile_steps = steps_lib.compile_steps

    def spying_compile_steps(*args, **kwargs):
        steps = compile_steps(*args, **kwargs)

        def spy_train(state, batch, class_tokens, rng):
            seen_inputs.append(jax.device_get((batch["label"], class_tokens)))
            return steps.train(state, batch, class_tokens, rng)

        return steps_lib.CompiledSteps(spy_train, steps.encode_classes, steps.eval)

    monkeypatch.setattr(steps_lib, "compile_steps", spying_compile_steps)
    result = train.train_and_evaluate(config, str(tmp_path))

    assert len(seen_inputs) == 3
    tokenizer, _ = text.load_tokenizer(text.resolve_bert_dir(config.model.text.bert_dir))
    texts = class_texts.texts_from_config(config.data, dataset.class_names)
    # Tokenized as the run tokenizes its class texts (padded to the longest).
    all_tokens = class_texts.tokens_for(tokenizer, texts, config.data.max_text_len)
    unseen_ids = np.atleast_2d(all_tokens["input_ids"][UNSEEN])
    for labels, class_tokens in seen_inputs:
        assert labels.min() >= 0 and labels.max() < 3
        ids = class_tokens["input_ids"]
        assert ids.shape[0] == 3  # the seen classes' texts only.
        flat = ids.reshape(-1, ids.shape[-1])
        for row in unseen_ids:
            assert not np.any(np.all(flat == row, axis=-1))
        np.testing.assert_array_equal(ids, all_tokens["input_ids"][[0, 2, 3]])
    # Evaluation scores all classes and adds the zero-shot figures, to metrics.jsonl as well.
    for key in ("top1", "zsl_top1", "gzsl_seen", "gzsl_unseen", "gzsl_h", "seen_top1"):
        assert 0.0 <= result[key] <= 1.0, key
    with open(os.path.join(tmp_path, "metrics.jsonl")) as f:
        evals = [r for r in map(json.loads, f) if r["kind"] == "eval"]
    assert evals[-1]["zsl_top1"] == pytest.approx(result["zsl_top1"])
    assert result["zsl_top1"] == 1.0  # one unseen class: choosing among 1 name.


def _clip_key(record) -> bytes:
    return np.asarray(record["keypoint"], np.float32).tobytes()


def test_calibration_clips_never_train_and_choose_the_kept_checkpoint(
    dataset, tmp_path, monkeypatch
):
    config = tiny_config(dataset)
    config.data.calibration_percent = 34  # 12 training clips: about 4 held out for calibration.
    config.total_steps = 2
    config.eval_every_steps = 2
    config.checkpoint_every_steps = 2
    resolved = input_pipeline.with_calibration_split(config)
    assert (resolved.data.train_split, resolved.data.calibration_split) == (
        "train[:66%]",
        "train[66%:]",
    )
    assert (
        config.data.train_split == "train"
    )  # the given config is left as it is (it is what a run saves).
    reads = []
    open_source = input_pipeline.open_source

    def counting_open_source(info, split):
        source = _CountingSource(open_source(info, split))
        reads.append((split, source))
        return source

    monkeypatch.setattr(input_pipeline, "open_source", counting_open_source)
    saved = []
    save = train.checkpointing.save
    monkeypatch.setattr(train.checkpointing, "save", lambda *a: saved.append(a[-1]) or save(*a))
    result = train.train_and_evaluate(config, str(tmp_path))

    builder = tfds.builder_from_directory(dataset.data_dir)
    whole, calibration = (builder.as_data_source(split=s) for s in ("train", "train[66%:]"))
    calibration_keys = {_clip_key(calibration[i]) for i in range(len(calibration))}
    assert 0 < len(calibration_keys) < len(whole)
    trained = [(split, src) for split, src in reads if split == "train[:66%]"]
    assert trained and all(src.read for _, src in trained)
    for _, src in trained:
        for index in src.read:
            assert _clip_key(src.source[index]) not in calibration_keys
    assert any(
        split == "train[66%:]" for split, _ in reads
    )  # evaluation read the calibration clips.
    for key in (
        "gzsl_cal_seen", "gzsl_cal_unseen", "gzsl_cal_h", "calibration_seen_top1",
        "gzsl_gate_seen", "gzsl_gate_unseen", "gzsl_gate_h", "gzsl_gate_ausuc",
    ):  # fmt: skip
        assert 0.0 <= result[key] <= 1.0, key
    assert np.isfinite(result["gzsl_cal_gamma"])
    assert -1.0 <= result["gzsl_gate_threshold"] <= 1.0  # a cosine similarity
    assert saved[-1] == {"top1": result["calibration_seen_top1"]}  # never the test split's clips.
    # The saved run config is the one given: evaluating the workdir again carves the same splits.
    with open(os.path.join(tmp_path, "config.json")) as f:
        assert json.load(f)["data"]["train_split"] == "train"
    # The diagnostic tool recomputes the clips' similarities on its own and reaches the evaluation's GZSL figures.
    out = io.StringIO()
    gzsl_probe.probe(str(tmp_path), None, out=out)
    rows = dict(re.findall(r"^  (\S.*?)\s+([\d. /]+?)\s+[\d.]+$", out.getvalue(), re.M))
    for rule, prefix in (
        ("stacking on probabilities", "gzsl_cal"),
        ("gate on the nearest seen cosine", "gzsl_gate"),
    ):
        figures = [float(x) / 100 for x in rows[rule].split("/")]
        want = [result[f"{prefix}_{k}"] for k in ("seen", "unseen", "h")]
        assert figures == pytest.approx(want, abs=6e-4), rule
