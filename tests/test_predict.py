"""`python -m skclip_jax.predict`: every input format, bad files, open-vocabulary class lists, one compile.

A one-step run of the tiny demo config (with its saved config) is the trained model.
"""

import json
import os
import pickle
import subprocess
import sys

import jax
import numpy as np
import pytest

import skclip_jax
from configs import demo
from skclip_jax import api, class_texts, predict, run_config, train
from skclip_jax import steps as steps_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    from data_prep import synthetic

    data = tmp_path_factory.mktemp("data")
    synthetic.make_synthetic_dataset(
        str(data), num_train_per_class=2, num_test_per_class=1, num_classes=4, num_frames=20
    )
    config = demo.get_config("tiny")
    config.data.data_dir = str(data)
    config.data.generate_synthetic = False  # the fixture's own dataset, not the tiny demo's.
    config.total_steps = 1
    config.eval_every_steps = 1
    config.checkpoint_every_steps = 1
    config.data.prompt_templates = ("{}", "a person {}.")
    workdir = str(tmp_path_factory.mktemp("run"))
    train.train_and_evaluate(config, workdir)  # saves config.json and class_names.txt.
    return workdir


@pytest.fixture(scope="module")
def config(run_dir):
    return run_config.load(run_dir)


def walk(num_frames=30, num_persons=1, seed=0):
    """A plausible COCO-17 skeleton moving across the frame: [M, T, 17, 2] pixels."""
    rng = np.random.default_rng(seed)
    base = np.stack([rng.uniform(80, 120, 17), np.linspace(40, 200, 17)], -1)
    t = np.arange(num_frames)[:, None, None]
    kp = base[None] + np.concatenate([3 * t, 5 * np.sin(t / 3)], -1)
    return np.stack([kp + 40 * m for m in range(num_persons)]).astype(np.float32)


def write_inputs(d):
    """One file of every accepted format; returns {format: path}."""
    kp2 = walk(40, 2, seed=1)
    ann = {
        "frame_dir": "clip_a",
        "label": 2,
        "img_shape": (240, 320),
        "total_frames": 40,
        "keypoint": kp2,
        "keypoint_score": np.ones(kp2.shape[:-1], np.float32),
    }
    other = dict(ann, frame_dir="clip_b", keypoint=walk(25, 1, seed=2))
    other["keypoint_score"] = np.full((1, 25, 17), 0.9, np.float32)
    paths = {}
    for name, data in {
        "dict": ann,
        "list": [ann, other],
        "dataset": {
            "split": {"train": ["clip_a"], "test": ["clip_b"]},
            "annotations": [ann, other],
        },
    }.items():
        paths[name] = os.path.join(d, f"{name}.pkl")
        with open(paths[name], "wb") as f:
            pickle.dump(data, f)
    paths["npz"] = os.path.join(d, "walk.npz")
    np.savez(paths["npz"], keypoint=walk(33)[0])  # [T, V, 2], no score, no img_shape.
    paths["json"] = os.path.join(d, "walk.json")
    with open(paths["json"], "w") as f:
        json.dump({"keypoint": walk(12, 2).tolist(), "img_shape": [300, 300]}, f)
    return paths


def test_every_input_format(run_dir, config, tmp_path):
    paths = write_inputs(str(tmp_path))
    out_dir = str(tmp_path / "out")
    records = predict.run(
        config, run_dir, [paths[k] for k in ("dict", "list", "dataset", "npz", "json")],
        top_k=3, output=out_dir,
    )  # fmt: skip
    assert len(records) == 1 + 2 + 1 + 1 + 1
    # The dataset pickle gives its test split's clip_b only.
    assert [r.get("frame_dir") for r in records] == [
        "clip_a",
        "clip_a",
        "clip_b",
        "clip_b",
        None,
        None,
    ]
    names = run_config.load_class_names(run_dir)
    with open(os.path.join(out_dir, "predictions.jsonl")) as f:
        lines = [json.loads(line) for line in f]
    assert lines == records
    for r in records:
        probs = [c["prob"] for c in r["top_k"]]
        assert len(probs) == 3 and probs == sorted(probs, reverse=True) and sum(probs) <= 1 + 1e-5
        assert all(c["class"] in names for c in r["top_k"])
        steps = config.data.clip_len // 2  # SlowOnly's temporal strides (1, 1, 2).
        assert len(r["frame_weights"]) == steps == len(r["frame_positions"])
        assert sum(r["frame_weights"]) == pytest.approx(1.0, rel=1e-4)  # softmax WFI.
    pngs = sorted(f for f in os.listdir(out_dir) if f.endswith(".png"))
    assert pngs == sorted(
        ["clip_a_frames.png", "clip_a_2_frames.png", "clip_b_frames.png", "clip_b_2_frames.png",
         "walk_frames.png", "walk_2_frames.png"]
    )  # fmt: skip
    for png in pngs:
        with open(os.path.join(out_dir, png), "rb") as f:
            assert f.read(8) == PNG_MAGIC
    assert not [f for f in os.listdir(out_dir) if f.startswith(".")]  # no temporary leftovers.
    # --frame_dir picks clips of a dataset pickle.
    picked = predict.run(
        config, run_dir, [paths["dataset"]], frame_dirs=["clip_a"], output=out_dir + "2"
    )
    assert [r["frame_dir"] for r in picked] == ["clip_a"]


def test_scorer_is_the_runs_evaluation_and_compiles_once(run_dir, config):
    predictor = api.restore(config, run_dir)
    predictor.set_classes(run_config.load_class_names(run_dir))
    clips = [
        predict.Clip("a", None, api.validate_clip({"keypoint": walk(n, m)}, "a", 17))
        for n, m in ((40, 2), (9, 1), (120, 3))
    ]
    for clip in clips:
        probs, weights = predictor(clip.sample)
        views = predictor.views(clip.sample)
        batch = {
            "keypoint": views["keypoint"][None],
            "keypoint_score": views["keypoint_score"][None],
            "label": np.zeros(1, np.int32),
            "mask": np.ones(1, bool),
        }
        want = steps_lib.eval_step(
            predictor.state, batch, predictor.class_feats, model=predictor.model,
            opts=predictor.opts,
        )["probs"][0]  # fmt: skip
        np.testing.assert_allclose(probs, np.asarray(want), rtol=1e-5, atol=1e-6)
        assert weights.shape == (4, config.data.clip_len // 2)
    assert (
        predictor.scorer._cache_size() == 1
    )  # clips of 9 to 120 frames, 1 to 3 persons: one trace.


def test_python_api_ranks_as_the_scorer(run_dir, config):
    """skclip_jax.load(...).rank: the scorer's probabilities, sorted, for the run's classes or any names."""
    model = skclip_jax.load(run_dir)
    run_classes = run_config.load_class_names(run_dir)
    assert model.class_names == tuple(run_classes)
    kp = walk(40, 2)
    sample = api.validate_clip({"keypoint": kp}, "a", 17)
    probs, _ = model(sample)
    ranked = model.rank(kp, top_k=3)
    order = np.argsort(-probs)[:3]
    assert [n for n, _ in ranked] == [run_classes[i] for i in order]
    np.testing.assert_allclose([p for _, p in ranked], probs[order], rtol=1e-6)
    # A [T, V, 2] clip is one person; new names re-encode the classes and sum to one over them.
    names = sorted({"waving a flag", "jumping very high", run_classes[0]})
    ranked = model.rank(kp[0], classes=names, top_k=10)
    assert sorted(n for n, _ in ranked) == sorted(names)
    assert abs(sum(p for _, p in ranked) - 1.0) < 1e-5
    # classes=None is the run's own classes again, not the list ranked last.
    assert [n for n, _ in model.rank(kp, top_k=3)] == [run_classes[i] for i in order]
    with pytest.raises(api.PredictError, match="keypoint has shape"):
        model.rank(np.zeros((5, 17)))
    with pytest.raises(api.PredictError, match="no such folder"):
        skclip_jax.load(os.path.join(run_dir, "missing"))


def test_classes_the_run_never_saw(run_dir, config, tmp_path):
    paths = write_inputs(str(tmp_path))
    records = predict.run(
        config,
        run_dir,
        [paths["npz"]],
        class_names=predict.parse_classes("juggling;riding a bike;doing a handstand", None),
        output=str(tmp_path / "out"),
    )
    probs = {c["class"]: c["prob"] for c in records[0]["top_k"]}
    assert set(probs) == {"juggling", "riding a bike", "doing a handstand"}
    assert sum(probs.values()) == pytest.approx(1.0, rel=1e-5)
    classes_file = tmp_path / "c.txt"
    classes_file.write_text("juggling\n\nswimming\n")
    assert predict.parse_classes(None, str(classes_file)) == ("juggling", "swimming")
    with pytest.raises(predict.PredictError, match="at least 2"):
        predict.parse_classes("juggling", None)
    with pytest.raises(predict.PredictError, match="repeated"):
        predict.parse_classes("a;b;a", None)


def test_a_long_new_name_is_read_whole(run_dir, config):
    """A typed action name longer than the run's data.max_text_len is encoded whole, not cut to it."""
    predictor = api.restore(config, run_dir)
    long_name = (
        "a person slowly lifting both arms above the head and then bending down to touch the toes"
    )
    predictor.set_classes(["waving hand", long_name])
    texts = class_texts.class_texts(
        ["waving hand", long_name], class_texts.templates_of(config.data), None
    )
    length = max(
        len(ids) for ids in predictor.tokenizer([s for t in texts for s in t])["input_ids"]
    )
    assert length > config.data.max_text_len
    whole = class_texts.tokenize_class_texts(predictor.tokenizer, texts, length)
    cut = class_texts.tokenize_class_texts(predictor.tokenizer, texts, config.data.max_text_len)
    want = predictor.encode(predictor.state, whole)
    np.testing.assert_allclose(predictor.class_feats, want, rtol=1e-5, atol=1e-6)
    assert not np.allclose(predictor.encode(predictor.state, cut)[1], want[1], atol=1e-4)
    # Short lists keep the training length (no new program for the run's own classes).
    assert class_texts.fitting_length(predictor.tokenizer, [["waving hand"]], 10) == 10
    assert class_texts.fitting_length(predictor.tokenizer, [[long_name * 40]], 10, limit=64) == 64


def _bad_files(d):
    files = {}

    def npz(name, **arrays):
        files[name] = os.path.join(d, f"{name}.npz")
        np.savez(files[name], **arrays)

    npz("rank", keypoint=np.zeros((5, 17)))
    npz("joints", keypoint=walk(10)[:, :, :13])
    nan = walk(10)
    nan[0, 3, 4, 1] = np.nan
    npz("nan", keypoint=nan)
    npz("empty", keypoint=np.zeros((1, 0, 17, 2)))
    npz("score", keypoint=walk(10), keypoint_score=np.ones((1, 9, 17)))
    npz("score2d", keypoint=walk(10), keypoint_score=np.ones((3, 3)))
    files["notzip"] = os.path.join(d, "text.npz")
    open(files["notzip"], "w").write("keypoint = [[1, 2]]\n")
    files["format"] = os.path.join(d, "clip.xyz")
    open(files["format"], "wb").write(b"\x00\x00")
    files["pickle"] = os.path.join(d, "broken.pkl")
    open(files["pickle"], "wb").write(b"\x80\x04not a pickle")
    files["json"] = os.path.join(d, "nokp.json")
    open(files["json"], "w").write('{"kp": [1, 2]}')
    return files


BAD_MESSAGES = {
    "rank": r"rank\.npz: keypoint has shape \(5, 17\)",
    "joints": r"joints\.npz: 13 keypoints per person, but the model takes 17",
    "nan": r"nan\.npz: keypoint has 1 NaN",
    "empty": r"empty\.npz: empty clip",
    "score": r"score\.npz: keypoint_score has shape \(1, 9, 17\)",
    "score2d": r"score2d\.npz: keypoint_score has shape \(3, 3\), expected \(1, 10, 17\)",
    "notzip": r"text\.npz: not a \.npz archive \(a \.npz is a zip of \.npy arrays",
    "format": r"clip\.xyz: unknown input format '\.xyz'",
    "pickle": r"broken\.pkl: cannot read",
    "json": r"nokp\.json: no 'keypoint' array",
}


def test_bad_files_stop_before_anything_is_written(run_dir, config, tmp_path):
    files = _bad_files(str(tmp_path))
    good = write_inputs(str(tmp_path))["npz"]
    out_dir = tmp_path / "out"
    for name, pattern in BAD_MESSAGES.items():
        with pytest.raises(predict.PredictError, match=pattern):
            predict.run(config, run_dir, [good, files[name]], output=str(out_dir))
        assert not out_dir.exists(), name
    with pytest.raises(predict.PredictError, match="no such file"):
        predict.run(config, run_dir, [str(tmp_path / "missing.npz")], output=str(out_dir))
    with pytest.raises(predict.PredictError, match="no checkpoint"):
        predict.run(config, str(tmp_path), [good], output=str(out_dir))
    assert not out_dir.exists()


def _cli(*args):
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=REPO)
    env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=1"
    return subprocess.run(
        [sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=600
    )


def test_cli_with_the_workdir_alone(run_dir, tmp_path):
    paths = write_inputs(str(tmp_path))
    out_dir = str(tmp_path / "out")
    proc = _cli(
        "-m", "skclip_jax.predict", f"--workdir={run_dir}", f"--input={paths['json']}",
        "--top_k=2", f"--output={out_dir}", "--classes=waving hand;kicking;swimming",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "rank  class" in proc.stdout and "swimming" in proc.stdout
    assert os.path.exists(os.path.join(out_dir, "walk_frames.png"))
    bad = _bad_files(str(tmp_path))["nan"]
    proc = _cli("-m", "skclip_jax.predict", f"--workdir={run_dir}", f"--input={bad}")
    assert proc.returncode == 2
    assert "skclip_jax.predict: error:" in proc.stderr and "NaN" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not os.path.exists(os.path.join(run_dir, "predict"))


def test_a_clip_without_any_scored_keypoint_is_ranked_with_a_warning(run_dir, tmp_path):
    blank = str(tmp_path / "blank.npz")
    np.savez(blank, keypoint=walk(20), keypoint_score=np.zeros((1, 20, 17)))
    scored = write_inputs(str(tmp_path))["npz"]
    proc = _cli(
        "-m", "skclip_jax.predict", f"--workdir={run_dir}", f"--input={blank}",
        f"--input={scored}", f"--output={tmp_path / 'out'}",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    warnings = [line for line in proc.stderr.splitlines() if "warning:" in line]
    assert warnings == [
        f"skclip_jax.predict: warning: {blank}: every keypoint_score is 0, so its heatmaps are empty "
        "and its ranking says nothing about the clip (no person detected?)"
    ], proc.stderr[-3000:]
    assert proc.stdout.count("rank  class") == 2


def _predict_lines(*args):
    proc = _cli("-m", "skclip_jax.predict", *args)
    return proc.returncode, (proc.stdout + proc.stderr).strip().splitlines()


def test_predict_mistakes_are_one_or_two_lines(run_dir, tmp_path):
    """A missing workdir, another run's config, a mistyped field: exit 2, no traceback, before jax."""
    good = write_inputs(str(tmp_path))["npz"]
    missing = str(tmp_path / "no_run")
    code, lines = _predict_lines(f"--workdir={missing}", f"--input={good}")
    assert code == 2 and lines == [
        f"skclip_jax.predict: error: {missing}: no such folder; pass --workdir of a trained run"
    ]
    # The 4-class run with the 8-class demo config: refused, not ranked against the wrong classes.
    code, lines = _predict_lines(
        f"--workdir={run_dir}", f"--input={good}", "--config=configs/demo.py"
    )
    assert code == 2 and len(lines) == 2, lines
    assert lines[0].startswith(f"skclip_jax.predict: error: {run_dir} holds another run (")
    assert "config field(s) differ, saved -> requested: " in lines[0], lines
    assert (
        lines[1] == "Omit --config to use the run's own, or name this config's run with --workdir."
    )
    code, lines = _predict_lines(
        f"--workdir={run_dir}", f"--input={good}", "--config=configs/demo.py:tiny",
        "--config.data.clip_lenn=3",
    )  # fmt: skip
    assert code == 2 and len(lines) == 1 and "did you mean --config.data.clip_len?" in lines[0]
    assert not os.path.exists(os.path.join(run_dir, "predict"))


def test_a_checkpoint_that_does_not_fit_is_one_line(run_dir, tmp_path):
    """A config.json edited after training (or a checkpoint of another model): one line naming the folder and
    the first array that differs, from predict and from --mode=eval."""
    import shutil

    workdir = str(tmp_path / "edited")
    shutil.copytree(run_dir, workdir)
    path = os.path.join(workdir, "config.json")
    with open(path) as f:
        saved = json.load(f)
    saved["model"]["embed_dim"] = 2 * saved["model"]["embed_dim"]
    with open(path, "w") as f:
        json.dump(saved, f)
    good = write_inputs(str(tmp_path))["npz"]
    code, lines = _predict_lines(f"--workdir={workdir}", f"--input={good}")
    assert code == 2 and len(lines) == 1 and "Traceback" not in lines[0], lines[-20:]
    ckpt = os.path.join(workdir, "checkpoints")
    assert lines[0].startswith(
        f"skclip_jax.predict: error: checkpoint step 1 in {ckpt} does not fit"
    )
    assert "in the checkpoint" in lines[0] and "for the config" in lines[0], lines
    proc = _cli("-m", "skclip_jax.main", f"--workdir={workdir}", "--mode=eval")
    errors = [line for line in proc.stderr.splitlines() if "error:" in line]
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert errors == [lines[0].replace("skclip_jax.predict", "skclip_jax.main")], errors


def test_frame_weight_axis_starts_at_zero_and_marks_the_uniform_weight():
    """Nearly uniform weights (0.12-0.13 over 8 steps) look nearly uniform: the axis starts at 0 and the
    1/T' line is drawn; sigmoid weights (not summing to 1) get the (0, 1) range and no line."""
    from matplotlib.figure import Figure

    weights = np.array([[0.12, 0.13, 0.125, 0.125, 0.12, 0.13, 0.125, 0.125]])
    ax = Figure().subplots()
    predict.frame_weight_axis(ax, weights)
    lo, hi = ax.get_ylim()
    assert lo == 0 and hi >= 2 / 8 and len(ax.lines) == 1 and ax.lines[0].get_ydata()[0] == 1 / 8
    ax = Figure().subplots()
    predict.frame_weight_axis(ax, np.full((2, 8), 0.6))
    assert ax.get_ylim() == (0, 1.05) and not ax.lines


def test_eval_mode_reads_the_saved_config(run_dir):
    proc = _cli("-m", "skclip_jax.main", f"--workdir={run_dir}", "--mode=eval")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "final evaluation: top1" in proc.stdout
    proc = _cli("-m", "skclip_jax.main", f"--workdir={run_dir}/nowhere", "--mode=eval")
    assert proc.returncode == 2 and "nowhere: no such folder" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_saved_config_round_trips(run_dir, config):
    assert config.data.prompt_templates == ("{}", "a person {}.")
    assert isinstance(config.model.slowonly.stage_blocks, tuple)
    assert jax.tree.leaves(config.to_dict()) == jax.tree.leaves(run_config.load(run_dir).to_dict())
    with open(os.path.join(run_dir, "config.json")) as f:
        assert json.load(f)["data"]["unseen_classes"] == []


def test_a_pickle_that_would_run_code_is_refused_before_it_runs(tmp_path, file_writing_payload):
    payload, target = file_writing_payload
    path = tmp_path / "clip.pkl"
    with open(path, "wb") as f:
        pickle.dump({"keypoint": walk(10), "label": payload}, f)
    with pytest.raises(predict.PredictError, match="refused global builtins.exec"):
        predict.load_clips([str(path)], 17, None, "test")
    assert not target.exists()
