"""A zero-shot run's GZSL offset reaches `predict` and the API: read from the restored step's evaluation row,
applied to the trained names only and only when the class list also holds new names, said in the output, and
off with --nocalibrate. The model is a fake with fixed similarities; expectations are plain loops."""

import json
import math
import os

import numpy as np
import pytest

from configs import demo
from skclip_jax import api, gzsl_calibration, predict, run_config

RUN_CLASSES = ("walking", "running", "jumping", "waving")
UNSEEN = ("jumping",)
# Fixed similarity / temperature of every name the fake model is asked about.
LOGITS = {"walking": 2.0, "running": 1.0, "jumping": 1.6, "waving": 0.5, "cartwheeling": 1.5}
GAMMAS = {4: 0.01, 8: 0.15}  # the offset each evaluation chose


@pytest.fixture
def zsl_workdir(tmp_path):
    """A zero-shot run's saved files: config (with unseen classes), class names and two evaluation rows."""
    config = demo.get_config("tiny")
    config.data.unseen_classes = UNSEEN
    workdir = str(tmp_path / "run")
    os.makedirs(workdir)
    run_config.save(workdir, config, RUN_CLASSES)
    with open(os.path.join(workdir, "metrics.jsonl"), "w") as f:
        f.write(json.dumps({"step": 4, "kind": "train", "loss": 1.0}) + "\n")
        for step, gamma in GAMMAS.items():
            row = {"step": step, "kind": "eval", "top1": 0.5, "gzsl_cal_gamma": gamma}
            f.write(json.dumps(row) + "\n")
    return workdir, run_config.load(workdir)


class FakeModel(api.TrainedModel):
    """Scores every clip with LOGITS: softmax over the current class list, frame weights uniform."""

    def set_classes(self, class_names, descriptions=None):
        self.class_names = tuple(class_names)

    def views(self, sample):
        return {"keypoint": None, "keypoint_score": None}


def fake_model(config, workdir, step):
    def scorer(state, keypoint, keypoint_score, class_feats):
        logits = np.array([LOGITS[n.lower()] for n in model.class_names])
        probs = np.exp(logits) / np.exp(logits).sum()
        return probs, np.full((len(logits), 4), 0.25)

    calibration = gzsl_calibration.Calibration.for_run(config, workdir, RUN_CLASSES, step)
    model = FakeModel(config, None, step, scorer, None, None, calibration=calibration)
    model.set_classes(RUN_CLASSES)
    return model


def expected_scores(names, gamma):
    """Plain loop: softmax over `names`; gamma off each trained name when some name is new."""
    total = sum(math.exp(LOGITS[n]) for n in names)
    trained = [n for n in RUN_CLASSES if n not in UNSEEN]
    mixed = any(n not in trained for n in names) and any(n in trained for n in names)
    return [math.exp(LOGITS[n]) / total - (gamma if mixed and n in trained else 0.0) for n in names]


def test_the_offset_of_the_restored_step_is_read(zsl_workdir):
    workdir, config = zsl_workdir
    for step, gamma in GAMMAS.items():
        calibration = gzsl_calibration.Calibration.for_run(config, workdir, RUN_CLASSES, step)
        assert calibration.gamma == gamma and calibration.step == step
        assert calibration.trained_names == ("walking", "running", "waving")
        assert calibration.keep_seen == config.data.calibration_keep_seen
    assert gzsl_calibration.Calibration.for_run(config, workdir, RUN_CLASSES, 6) is None
    config.data.unseen_classes = ()
    assert gzsl_calibration.Calibration.for_run(config, workdir, RUN_CLASSES, 8) is None


@pytest.mark.parametrize(
    "names",
    [
        ("walking", "running", "waving", "jumping", "cartwheeling"),  # trained + new: calibrated
        ("Walking", "cartwheeling"),  # names compare as text: any case
        ("walking", "running", "waving"),  # trained only: nothing to calibrate
        ("jumping", "cartwheeling"),  # new only: nothing to calibrate
    ],
)
def test_the_offset_lowers_the_trained_names_only_beside_new_ones(zsl_workdir, names):
    workdir, config = zsl_workdir
    model = fake_model(config, workdir, 8)
    sample = {"keypoint_score": np.ones((1, 4, 17))}
    model.set_classes(names)
    probs, _ = model(sample)
    lowered = tuple(n.lower() for n in names)
    np.testing.assert_allclose(probs, expected_scores(lowered, GAMMAS[8]), rtol=1e-12)
    model.calibrate = False
    probs, _ = model(sample)
    np.testing.assert_allclose(probs, expected_scores(lowered, 0.0), rtol=1e-12)


def test_the_api_ranks_a_new_name_first_when_calibrated(zsl_workdir):
    workdir, config = zsl_workdir
    model = fake_model(config, workdir, 8)
    clip = np.tile(np.linspace(10, 90, 17)[None, :, None], (6, 1, 2)).astype(np.float32)
    names = ("walking", "running", "waving", "jumping")
    assert model.rank(clip, classes=names, top_k=1)[0][0] == "jumping"
    model.calibrate = False
    assert model.rank(clip, classes=names, top_k=1)[0][0] == "walking"


@pytest.mark.parametrize("calibrate", [True, False])
def test_predict_applies_and_says_the_runs_calibration(
    zsl_workdir, tmp_path, monkeypatch, calibrate
):
    workdir, config = zsl_workdir
    monkeypatch.setattr(
        api, "restore", lambda config, workdir, step: fake_model(config, workdir, 8)
    )
    clip = str(tmp_path / "clip.npz")
    kp = np.tile(np.linspace(10, 90, 17)[None, None, :, None], (1, 6, 1, 2)).astype(np.float32)
    np.savez(clip, keypoint=kp, keypoint_score=np.ones(kp.shape[:-1], np.float32))
    names = ("walking", "running", "waving", "jumping", "cartwheeling")
    out = tmp_path / "out.txt"
    with open(out, "w") as f:
        records = predict.run(
            config, workdir, [clip], class_names=names, top_k=5, output=str(tmp_path / "p"),
            out=f, calibrate=calibrate,
        )  # fmt: skip
    text = out.read_text()
    want = expected_scores(names, GAMMAS[8] if calibrate else 0.0)
    order = sorted(range(len(names)), key=lambda i: -want[i])
    assert [r["class"] for r in records[0]["top_k"]] == [names[i] for i in order]
    assert [r["prob"] for r in records[0]["top_k"]] == pytest.approx([want[i] for i in order])
    saved = [json.loads(line) for line in open(tmp_path / "p" / "predictions.jsonl")]
    if calibrate:
        assert records[0]["top_k"][0]["class"] == "jumping"
        assert "lowered by 0.1500" in text and "step 8" in text and "--nocalibrate" in text
        assert saved[0]["gzsl_offset"] == GAMMAS[8]
    else:
        assert records[0]["top_k"][0]["class"] == "walking"
        assert "GZSL calibration off" in text and "gzsl_offset" not in saved[0]


def test_a_run_without_held_out_classes_ranks_plainly_and_says_so(
    zsl_workdir, tmp_path, monkeypatch
):
    """No class held out: no offset to apply; mixing in a new name prints why the trained names are favoured."""
    workdir, config = zsl_workdir
    config.data.unseen_classes = ()
    monkeypatch.setattr(
        api, "restore", lambda config, workdir, step: fake_model(config, workdir, 8)
    )
    clip = str(tmp_path / "clip.npz")
    kp = np.tile(np.linspace(10, 90, 17)[None, None, :, None], (1, 6, 1, 2)).astype(np.float32)
    np.savez(clip, keypoint=kp)
    names = ("walking", "running", "cartwheeling")
    out = tmp_path / "out.txt"
    with open(out, "w") as f:
        records = predict.run(
            config, workdir, [clip], class_names=names, output=str(tmp_path / "p"), out=f
        )
    total = sum(math.exp(LOGITS[n]) for n in names)
    assert records[0]["top_k"][0] == {
        "class": "walking",
        "prob": pytest.approx(math.exp(2.0) / total),
    }
    assert "no GZSL calibration (only a zero-shot run records one)" in out.read_text()
