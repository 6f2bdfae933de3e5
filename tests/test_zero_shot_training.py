"""Zero-shot runs: unseen-class clips and texts never reach a training step, counted at the source and the step."""

import json
import os

import jax
import numpy as np
import pytest

from configs import demo
from skclip_jax import class_texts, input_pipeline, train, trainer
from skclip_jax.models import text

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
    compile_steps = train.compile_steps

    def spying_compile_steps(*args, **kwargs):
        steps = compile_steps(*args, **kwargs)

        def spy_train(state, batch, class_tokens, rng):
            seen_inputs.append(jax.device_get((batch["label"], class_tokens)))
            return steps.train(state, batch, class_tokens, rng)

        return train.CompiledSteps(spy_train, steps.encode_classes, steps.eval)

    monkeypatch.setattr(train, "compile_steps", spying_compile_steps)
    result = trainer.train_and_evaluate(config, str(tmp_path))

    assert len(seen_inputs) == 3
    tokenizer, _ = text.load_tokenizer(text.resolve_bert_dir(config.model.text.bert_dir))
    texts = class_texts.texts_from_config(config.data, dataset.class_names)
    unseen_ids = text.tokenize(tokenizer, texts[UNSEEN], config.data.max_text_len)["input_ids"]
    all_tokens = class_texts.tokenize_class_texts(tokenizer, texts, config.data.max_text_len)
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
