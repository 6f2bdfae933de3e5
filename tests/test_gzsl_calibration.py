"""A zero-shot run's GZSL gate reaches `predict` and the API: its threshold read from the restored step's evaluation
row, applied only when the class list mixes trained and new names, said in the output, and off with --nocalibrate.
The model is a fake with fixed similarities; expectations are plain loops."""

import json
import math
import os

import numpy as np
import pytest

from configs import demo
from skclip_jax import api, gzsl_calibration, predict, run_config

RUN_CLASSES = ("walking", "running", "jumping", "waving")
UNSEEN = ("jumping",)
TEMPERATURE = 0.1
# Fixed cosine similarity of each of the clip's two views to every name the fake model is asked about.
SIMS = {
    "walking": (0.7, 0.5),
    "running": (0.2, 0.6),
    "jumping": (0.4, 0.45),
    "waving": (0.1, 0.0),
    "cartwheeling": (0.5, 0.3),
}
THRESHOLDS = {4: 0.3, 8: 0.65}  # the gate threshold each evaluation chose


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
        for step, threshold in THRESHOLDS.items():
            row = {"step": step, "kind": "eval", "top1": 0.5, "gzsl_gate_threshold": threshold}
            f.write(json.dumps(row) + "\n")
    return workdir, run_config.load(workdir)


class FakeModel(api.TrainedModel):
    """Scores every clip with SIMS: two views, logits = similarity / TEMPERATURE, frame weights uniform."""

    def set_classes(self, class_names, descriptions=None):
        self.class_names = tuple(class_names)

    def views(self, sample):
        return {"keypoint": None, "keypoint_score": None}


def fake_model(config, workdir, step):
    def scorer(state, keypoint, keypoint_score, class_feats):
        sims = np.array([SIMS[n.lower()] for n in model.class_names]).T  # [views, L]
        return sims / TEMPERATURE, np.full((len(model.class_names), 4), 0.25), TEMPERATURE

    calibration = gzsl_calibration.Calibration.for_run(config, workdir, RUN_CLASSES, step)
    model = FakeModel(config, None, step, scorer, None, None, calibration=calibration)
    model.set_classes(RUN_CLASSES)
    return model


def expected_scores(names, threshold):
    """Plain loop: a mixed list goes to the trained names when the nearest one's view-mean similarity reaches the
    threshold, else to the new names; the softmax of each view over that side, averaged over the views. No
    threshold (None): every name, no gate."""
    trained = [n for n in RUN_CLASSES if n not in UNSEEN]
    side = list(names)
    mixed = any(n in trained for n in names) and any(n not in trained for n in names)
    if threshold is not None and mixed:
        nearest = max(sum(SIMS[n]) / 2 for n in names if n in trained)
        side = [n for n in names if (n in trained) == (nearest >= threshold)]
    scores = []
    for n in names:
        if n not in side:
            scores.append(0.0)
            continue
        per_view = [
            math.exp(SIMS[n][v] / TEMPERATURE)
            / sum(math.exp(SIMS[m][v] / TEMPERATURE) for m in side)
            for v in range(2)
        ]
        scores.append(sum(per_view) / 2)
    return scores


def test_the_threshold_of_the_restored_step_is_read(zsl_workdir):
    workdir, config = zsl_workdir
    for step, threshold in THRESHOLDS.items():
        calibration = gzsl_calibration.Calibration.for_run(config, workdir, RUN_CLASSES, step)
        assert calibration.threshold == threshold and calibration.step == step
        assert calibration.trained_names == ("walking", "running", "waving")
        assert calibration.keep_seen == config.data.calibration_keep_seen
    assert gzsl_calibration.Calibration.for_run(config, workdir, RUN_CLASSES, 6) is None
    config.data.unseen_classes = ()
    assert gzsl_calibration.Calibration.for_run(config, workdir, RUN_CLASSES, 8) is None


@pytest.mark.parametrize("step", sorted(THRESHOLDS))
@pytest.mark.parametrize(
    "names",
    [
        ("walking", "running", "waving", "jumping", "cartwheeling"),  # trained + new: gated
        ("Walking", "cartwheeling"),  # names compare as text: any case
        ("running", "waving", "jumping"),  # the nearest trained name is running (0.4)
        ("walking", "running", "waving"),  # trained only: nothing to gate
        ("jumping", "cartwheeling"),  # new only: nothing to gate
    ],
)
def test_the_gate_sends_a_mixed_list_to_one_side(zsl_workdir, names, step):
    workdir, config = zsl_workdir
    model = fake_model(config, workdir, step)
    sample = {"keypoint_score": np.ones((1, 4, 17))}
    model.set_classes(names)
    probs, _, gate = model.scores(sample)
    lowered = tuple(n.lower() for n in names)
    np.testing.assert_allclose(probs, expected_scores(lowered, THRESHOLDS[step]), rtol=1e-12)
    assert (gate is None) == (model.calibrated_mask is None)
    if gate is not None:
        trained = [n for n in lowered if n in RUN_CLASSES and n not in UNSEEN]
        assert gate.similarity == pytest.approx(max(sum(SIMS[n]) / 2 for n in trained))
        assert gate.trained == (gate.similarity >= THRESHOLDS[step])
    model.calibrate = False
    probs, _ = model(sample)
    np.testing.assert_allclose(probs, expected_scores(lowered, None), rtol=1e-12)


def test_the_api_ranks_a_new_name_first_when_the_gate_says_so(zsl_workdir):
    workdir, config = zsl_workdir
    model = fake_model(config, workdir, 8)  # walking's 0.6 is below 0.65: the new names
    clip = np.tile(np.linspace(10, 90, 17)[None, :, None], (6, 1, 2)).astype(np.float32)
    names = ("walking", "running", "waving", "jumping")
    assert model.rank(clip, classes=names, top_k=1) == [("jumping", pytest.approx(1.0))]
    model.calibrate = False
    assert model.rank(clip, classes=names, top_k=1)[0][0] == "walking"
    model = fake_model(config, workdir, 4)  # 0.6 reaches 0.3: the trained names
    assert model.rank(clip, classes=names, top_k=1)[0][0] == "walking"


@pytest.mark.parametrize("calibrate", [True, False])
def test_predict_applies_and_says_the_runs_gate(zsl_workdir, tmp_path, monkeypatch, calibrate):
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
    want = expected_scores(names, THRESHOLDS[8] if calibrate else None)
    order = sorted(range(len(names)), key=lambda i: -want[i])
    assert [r["class"] for r in records[0]["top_k"]] == [names[i] for i in order]
    assert [r["prob"] for r in records[0]["top_k"]] == pytest.approx([want[i] for i in order])
    saved = [json.loads(line) for line in open(tmp_path / "p" / "predictions.jsonl")]
    if calibrate:
        assert records[0]["top_k"][0]["class"] == "jumping"
        assert "below 0.6500" in text and "step 8" in text and "--nocalibrate" in text
        assert "0.600 < 0.650: ranked among the new names" in text
        assert saved[0]["gzsl_gate"] == {
            "similarity": pytest.approx(0.6),
            "threshold": 0.65,
            "ranked_among": "new names",
        }
    else:
        assert records[0]["top_k"][0]["class"] == "walking"
        assert "GZSL gate off" in text and "gzsl_gate" not in saved[0]


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
    assert records[0]["top_k"][0] == {
        "class": "walking",
        "prob": pytest.approx(expected_scores(names, None)[0]),
    }
    assert "no GZSL gate (only a zero-shot run records one)" in out.read_text()
