"""metrics.jsonl writing, resume truncation, TensorBoard events, and the PNG plots."""

import glob
import json
import os

import numpy as np
import pytest

from skclip_jax import metrics_io, plots

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _is_png(path: str) -> bool:
    with open(path, "rb") as f:
        data = f.read()
    # Signature, then an IHDR chunk, and the file ends with the IEND chunk.
    return data[:8] == PNG_SIGNATURE and data[12:16] == b"IHDR" and data[-8:-4] == b"IEND"


def _fake_run(workdir: str, steps: int = 40, eval_every: int = 10) -> None:
    writer = metrics_io.MetricsWriter(workdir, enabled=True)
    for step in range(1, steps + 1):
        ssm, csi = 3.0 / step**0.5, 0.7 / step**0.3
        writer.write(step, {"loss": ssm + csi, "ssm_loss": ssm, "csi_loss": csi}, kind="train")
        if step % eval_every == 0:
            acc = 1 - 0.8 / step**0.5
            writer.write(
                step,
                {"top1": acc, "top5": min(1.0, acc + 0.1), "mean_class_accuracy": acc - 0.02},
                kind="eval",
            )
    writer.close()


def test_write_read_and_tensorboard(tmp_path):
    workdir = str(tmp_path)
    writer = metrics_io.MetricsWriter(workdir, enabled=True)
    writer.write(1, {"loss": 2.5, "ssm_loss": np.float32(2.0)}, kind="train")
    # Flushed at once: readable before close.
    assert metrics_io.read_metrics(workdir) == [
        {"step": 1, "kind": "train", "loss": 2.5, "ssm_loss": 2.0}
    ]
    writer.write(2, {"top1": 0.5}, kind="eval")
    with pytest.raises(ValueError, match="kind"):
        writer.write(3, {"loss": 1.0}, kind="test")
    writer.close()
    records = metrics_io.read_metrics(os.path.join(workdir, "metrics.jsonl"))
    assert records[-1] == {"step": 2, "kind": "eval", "top1": 0.5}
    assert glob.glob(os.path.join(workdir, "events.out.tfevents.*"))


def test_without_tensorflow_metrics_still_go_to_jsonl(tmp_path, monkeypatch):
    """A bare accelerator image has no TensorFlow, so clu's writers cannot import: jsonl alone, no crash."""
    import sys

    monkeypatch.setitem(sys.modules, "clu", None)  # `from clu import ...` now raises ImportError.
    workdir = str(tmp_path)
    writer = metrics_io.MetricsWriter(workdir, enabled=True)
    writer.write(1, {"loss": 2.5}, kind="train")
    writer.close()
    assert metrics_io.read_metrics(workdir) == [{"step": 1, "kind": "train", "loss": 2.5}]
    assert not glob.glob(os.path.join(workdir, "events.out.tfevents.*"))


def test_disabled_writer_writes_no_files(tmp_path):
    workdir = str(tmp_path / "run")
    writer = metrics_io.MetricsWriter(workdir, enabled=False)
    writer.write(1, {"loss": 1.0}, kind="train")
    writer.truncate_after(0)
    writer.close()
    assert not os.path.exists(workdir)


def test_resume_truncates_then_appends(tmp_path):
    workdir = str(tmp_path)
    _fake_run(workdir, steps=30)
    # A restart from the checkpoint of step 20: steps 21-30 (train and eval) are dropped...
    writer = metrics_io.MetricsWriter(workdir, enabled=True)
    writer.truncate_after(20)
    records = metrics_io.read_metrics(workdir)
    assert max(r["step"] for r in records) == 20
    assert sum(r["kind"] == "eval" for r in records) == 2
    # ...and the re-run steps are appended after the kept ones, with no duplicates.
    for step in range(21, 31):
        writer.write(step, {"loss": 0.1}, kind="train")
    writer.close()
    records = metrics_io.read_metrics(workdir)
    train_steps = [r["step"] for r in records if r["kind"] == "train"]
    assert train_steps == list(range(1, 31))


def test_read_metrics_skips_a_partial_last_line(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text(json.dumps({"step": 1, "kind": "train", "loss": 1.0}) + '\n{"step": 2, "ki')
    assert metrics_io.read_metrics(str(path)) == [{"step": 1, "kind": "train", "loss": 1.0}]
    assert metrics_io.read_metrics(str(tmp_path / "missing.jsonl")) == []


def test_write_all_plots(tmp_path):
    workdir = str(tmp_path)
    _fake_run(workdir)
    rng = np.random.default_rng(0)
    confusion = rng.integers(0, 3, (15, 15)) + np.diag(rng.integers(5, 30, 15))
    names = [f"class_{i}" for i in range(15)]
    written = plots.write_all_plots(workdir, confusion, names)
    assert sorted(os.path.basename(p) for p in written) == [
        "accuracy.png",
        "confusion.png",
        "loss.png",
    ]
    assert all(_is_png(p) for p in written)


def test_plots_before_any_eval_are_skipped(tmp_path):
    workdir = str(tmp_path)
    writer = metrics_io.MetricsWriter(workdir, enabled=True)
    writer.write(1, {"loss": 1.0, "ssm_loss": 1.0}, kind="train")
    writer.close()
    written = plots.write_all_plots(workdir, None, [])
    assert [os.path.basename(p) for p in written] == ["loss.png"]
    assert not os.path.exists(os.path.join(workdir, "accuracy.png"))
    # An empty workdir writes nothing and raises nothing.
    assert plots.write_all_plots(str(tmp_path / "empty"), None, []) == []


def test_confusion_with_101_classes_and_absent_rows(tmp_path):
    path = str(tmp_path / "confusion.png")
    matrix = np.eye(101, dtype=int) * 3
    matrix[5] = 0  # a class with no test examples must not divide by zero.
    plots.plot_confusion(matrix, [f"action_name_{i}" for i in range(101)], path)
    assert _is_png(path)
    with pytest.raises(ValueError, match="class names"):
        plots.plot_confusion(matrix, ["a", "b"], path)
