"""Tests for data_prep: PYSKL, Penn Action and synthetic conversion to TFDS keypoint datasets."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys

import numpy as np
import pytest
import scipy.io
import tensorflow_datasets as tfds

from data_prep import penn_action, pyskl, synthetic, tfds_writer
from data_prep.tfds_writer import ClipError, DataPrepError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_DATA = os.path.join(REPO, "..", "shared", "data")
SAMPLE_PKL = os.path.join(SHARED_DATA, "pyskl_sample", "ntu60_hrnet.pkl")
PENN_LABELS = os.path.join(SHARED_DATA, "penn_action", "labels")
# Mixed classes and splits; several contain joints stored near the origin.
PENN_FILES = ("0001", "0234", "0467", "0700", "0933", "1166", "1399", "1632", "1865", "2098")
CLASSES = ["brush hair", "cartwheel", "catch"]


# ----------------------------------------------------------------------------- helpers


def make_ann(frame_dir: str, label: int, num_frames: int, persons: int, seed: int) -> dict:
    """A PYSKL-style annotation with float16 arrays, like the HRNet pickles."""
    rng = np.random.default_rng(seed)
    return {
        "frame_dir": frame_dir,
        "label": label,
        "img_shape": (480, 640),
        "original_shape": (480, 640),
        "total_frames": num_frames,
        "num_person_raw": persons,
        "keypoint": (rng.random((persons, num_frames, 17, 2)) * 600).astype(np.float16),
        "keypoint_score": rng.random((persons, num_frames, 17)).astype(np.float16),
    }


def make_pyskl(num_train: int = 5, num_test: int = 3) -> dict:
    anns = [make_ann(f"tr{i}", i % 3, 8 + i, 1 + i % 2, i) for i in range(num_train)]
    anns += [make_ann(f"te{i}", i % 3, 9 + i, 1, 100 + i) for i in range(num_test)]
    anns[-1] = make_ann(anns[-1]["frame_dir"], 2, 7, 0, 7)  # No person detected: still a clip.
    anns.append(make_ann("unused", 0, 5, 1, 999))  # In no split: must not be written.
    return {
        "split": {
            "train1": [f"tr{i}" for i in range(num_train)],
            "test1": [f"te{i}" for i in range(num_test)],
        },
        "annotations": anns,
    }


def write_pickle(path, data) -> str:
    with open(path, "wb") as f:
        pickle.dump(data, f)
    return str(path)


def write_classes(path, names) -> str:
    with open(path, "w") as f:
        f.write("\n".join(names) + "\n")
    return str(path)


def by_frame_dir(source) -> dict[str, dict]:
    """Reads a whole random-access split into {frame_dir: example}."""
    out = {}
    for i in range(len(source)):
        ex = source[i]
        out[ex["frame_dir"].decode()] = ex
    return out


def assert_example_matches(ex: dict, ann: dict, label_offset: int = 0) -> None:
    np.testing.assert_array_equal(ex["keypoint"], ann["keypoint"].astype(np.float32))
    np.testing.assert_array_equal(ex["keypoint_score"], ann["keypoint_score"].astype(np.float32))
    assert ex["keypoint"].dtype == np.float32 and ex["keypoint_score"].dtype == np.float32
    assert int(ex["label"]) == ann["label"] - label_offset
    assert tuple(ex["img_shape"].tolist()) == tuple(ann["img_shape"])
    assert ex["img_shape"].dtype == np.int32
    assert int(ex["total_frames"]) == ann["total_frames"]


def leftovers(out_dir) -> list[str]:
    """Every path under out_dir (to prove a failed run left nothing behind)."""
    found = []
    for root, dirs, files in os.walk(out_dir):
        found += [os.path.join(root, n) for n in dirs + files]
    return found


# ----------------------------------------------------------------------------- PYSKL


def test_pyskl_round_trip_array_record(tmp_path):
    data = make_pyskl()
    pkl = write_pickle(tmp_path / "ann.pkl", data)
    classes = write_classes(tmp_path / "classes.txt", CLASSES)
    path, summary = pyskl.convert_pyskl(
        pkl, "toy_pyskl", tmp_path / "out", classes_file=classes, progress=False
    )
    assert path == os.path.join(tmp_path / "out", "toy_pyskl", "1.0.0")

    builder = tfds.builder_from_directory(path)
    assert builder.info.features["label"].names == CLASSES
    assert set(builder.info.splits) == {"train1", "test1"}
    anns = {a["frame_dir"]: a for a in data["annotations"]}
    for split, source in builder.as_data_source().items():
        got = by_frame_dir(source)
        assert sorted(got) == sorted(data["split"][split])
        for fd, ex in got.items():
            assert_example_matches(ex, anns[fd])
    # The same data through tfds.data_source by name, as the input pipeline reads it.
    src = tfds.data_source("toy_pyskl", data_dir=str(tmp_path / "out"), split="test1")
    assert len(src) == 3

    with open(os.path.join(path, "conversion_summary.json")) as f:
        on_disk = json.load(f)
    assert on_disk == json.loads(json.dumps(summary))
    assert summary["splits"]["train1"]["num_clips"] == 5
    assert summary["splits"]["train1"]["per_class"] == {"brush hair": 2, "cartwheel": 2, "catch": 1}
    assert summary["splits"]["train1"]["max_persons"] == 2
    assert summary["annotations_in_no_selected_split"] == 1
    assert summary["splits"]["test1"]["clips_without_persons"] == 1
    assert summary["num_skipped"] == 0
    text = tfds_writer.format_summary(summary)
    assert "train1: 5 clips" in text and "cartwheel" in text


def test_pyskl_tfrecord_read_with_as_dataset(tmp_path):
    data = make_pyskl(num_train=4, num_test=2)
    pkl = write_pickle(tmp_path / "ann.pkl", data)
    classes = write_classes(tmp_path / "classes.txt", CLASSES)
    path, _ = pyskl.convert_pyskl(
        pkl,
        "toy_tfrecord",
        tmp_path / "out",
        classes_file=classes,
        file_format="tfrecord",
        splits=["train1"],
        progress=False,
    )
    assert any(".tfrecord-" in n for n in os.listdir(path))
    builder = tfds.builder_from_directory(path)
    assert list(builder.info.splits) == ["train1"]
    anns = {a["frame_dir"]: a for a in data["annotations"]}
    seen = set()
    for ex in tfds.as_numpy(builder.as_dataset(split="train1")):
        fd = ex["frame_dir"].decode()
        assert_example_matches(ex, anns[fd])
        seen.add(fd)
    assert seen == set(data["split"]["train1"])


def test_pyskl_shipped_class_lists():
    expected = {"hmdb51": 51, "ucf101": 101, "ntu60": 60}
    for name, count in expected.items():
        names = pyskl.class_names_for(name)
        assert len(names) == count and len(set(names)) == count
        assert all(n == n.strip() and n for n in names)
    assert pyskl.class_names_for("hmdb51")[:2] == ["brush hair", "cartwheel"]
    assert pyskl.class_names_for("ntu60")[-1] == "walking apart from each other"
    with pytest.raises(DataPrepError, match="--classes"):
        pyskl.class_names_for("kinetics400")


@pytest.mark.skipif(
    not os.path.exists(SAMPLE_PKL), reason=f"real PYSKL sample not available at {SAMPLE_PKL}"
)
def test_pyskl_real_sample_needs_label_offset(tmp_path):
    # Its labels run 1..16: read as NTU-60's 0-based labels every clip would be one class off.
    with pytest.raises(DataPrepError, match="no clip has label 0") as err:
        pyskl.convert_pyskl(SAMPLE_PKL, "ntu60", tmp_path / "out")
    assert "--label_offset=1" in str(err.value) and "--label_offset=0" in str(err.value)
    classes = write_classes(tmp_path / "c16.txt", [f"class {i}" for i in range(1, 17)])
    with pytest.raises(DataPrepError, match="--label_offset=1") as err:
        pyskl.convert_pyskl(SAMPLE_PKL, "sample", tmp_path / "out", classes_file=classes)
    assert SAMPLE_PKL in str(err.value)
    # Even --skip_bad must not hide a shifted label base.
    with pytest.raises(DataPrepError, match="1-based"):
        pyskl.convert_pyskl(
            SAMPLE_PKL, "sample", tmp_path / "out", classes_file=classes, skip_bad=True
        )
    assert not os.path.exists(tmp_path / "out" / "sample")

    path, summary = pyskl.convert_pyskl(
        SAMPLE_PKL,
        "sample",
        tmp_path / "out",
        classes_file=classes,
        label_offset=1,
        progress=False,
    )
    assert {s: v["num_clips"] for s, v in summary["splits"].items()} == {
        "xsub_train": 388,
        "xsub_test": 98,
    }
    with open(SAMPLE_PKL, "rb") as f:
        data = pickle.load(f)
    anns = {a["frame_dir"]: a for a in data["annotations"]}
    sources = tfds.builder_from_directory(path).as_data_source()
    for split in ("xsub_train", "xsub_test"):
        got = by_frame_dir(sources[split])
        assert sorted(got) == sorted(data["split"][split])
        for fd, ex in got.items():
            assert_example_matches(ex, anns[fd], label_offset=1)


# Each case corrupts clip "tr2" (or the split list) and names a word the error must contain.
def _drop_score(d):
    del d["annotations"][2]["keypoint_score"]


def _rank3(d):
    d["annotations"][2]["keypoint"] = d["annotations"][2]["keypoint"][0]


def _joints25(d):
    a = d["annotations"][2]
    a["keypoint"] = np.zeros((1, a["total_frames"], 25, 2), np.float16)
    a["keypoint_score"] = np.zeros((1, a["total_frames"], 25), np.float16)


def _score_shape(d):
    d["annotations"][2]["keypoint_score"] = d["annotations"][2]["keypoint_score"][:, :-1]


def _nan_kp(d):
    d["annotations"][2]["keypoint"][0, 3, 4, 1] = np.nan


def _inf_score(d):
    d["annotations"][2]["keypoint_score"][0, 1, 0] = np.inf


def _zero_frames(d):
    a = d["annotations"][2]
    a["keypoint"] = a["keypoint"][:, :0]
    a["keypoint_score"] = a["keypoint_score"][:, :0]
    a["total_frames"] = 0


def _total_frames(d):
    d["annotations"][2]["total_frames"] += 1


def _label(d):
    d["annotations"][2]["label"] = 7


def _unknown(d):
    d["annotations"] = [a for a in d["annotations"] if a["frame_dir"] != "tr2"]


def _duplicate(d):
    d["annotations"].append(dict(d["annotations"][2]))


def _listed_twice(d):
    d["split"]["train1"].append("tr2")


BAD_CASES = {
    "missing_key": (_drop_score, "missing keys"),
    "wrong_rank": (_rank3, "shape [M, T, 17, 2]"),
    "joint_count": (_joints25, "25 joints"),
    "score_shape": (_score_shape, "keypoint_score shape"),
    "nan_keypoint": (_nan_kp, "NaN/infinite keypoint"),
    "inf_score": (_inf_score, "NaN/infinite keypoint_score"),
    "zero_frames": (_zero_frames, "zero frames"),
    "total_frames": (_total_frames, "total_frames="),
    "label_range": (_label, "label 7 outside"),
    "unknown_frame_dir": (_unknown, "absent from annotations"),
    "duplicated_frame_dir": (_duplicate, "duplicated frame_dir"),
    "listed_twice": (_listed_twice, "duplicated frame_dir in split"),
}


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_pyskl_bad_clip_errors_and_skip_bad(tmp_path, case):
    corrupt, problem = BAD_CASES[case]
    data = make_pyskl()
    corrupt(data)
    pkl = write_pickle(tmp_path / "bad.pkl", data)
    classes = write_classes(tmp_path / "classes.txt", CLASSES)
    out = tmp_path / "out"

    with pytest.raises(ClipError) as err:
        pyskl.convert_pyskl(pkl, "bad", out, classes_file=classes, progress=False)
    msg = str(err.value)
    assert pkl in msg and "'tr2'" in msg and problem in msg, msg
    assert leftovers(out) == []

    path, summary = pyskl.convert_pyskl(
        pkl, "bad", out, classes_file=classes, skip_bad=True, progress=False
    )
    skipped = summary["skipped"]
    assert [(s["split"], s["frame_dir"]) for s in skipped] == [("train1", "tr2")], skipped
    assert problem in skipped[0]["problem"]
    expected_written = {"tr0", "tr1", "tr3", "tr4"}
    if case == "listed_twice":  # The first listing is fine; only the repeat is dropped.
        expected_written.add("tr2")
    got = by_frame_dir(tfds.builder_from_directory(path).as_data_source()["train1"])
    assert set(got) == expected_written
    assert summary["splits"]["train1"]["num_skipped"] == 1
    assert "skipped 1 clips" in tfds_writer.format_summary(summary)


def test_pyskl_file_level_errors(tmp_path):
    classes = write_classes(tmp_path / "classes.txt", CLASSES)
    out = tmp_path / "out"
    good = pickle.dumps(make_pyskl())
    truncated = tmp_path / "truncated.pkl"
    truncated.write_bytes(good[: len(good) // 2])
    cases = {
        "truncated": (str(truncated), "cannot read PYSKL pickle"),
        "missing": (str(tmp_path / "nope.pkl"), "cannot read PYSKL pickle"),
        "not_dict": (write_pickle(tmp_path / "list.pkl", [1, 2]), "expected a dict"),
        "no_split": (
            write_pickle(tmp_path / "nosplit.pkl", {"annotations": []}),
            "missing top-level keys ['split']",
        ),
        "bad_ann": (
            write_pickle(tmp_path / "badann.pkl", {"split": {"a": ["x"]}, "annotations": [3]}),
            "annotations[0] is a int",
        ),
    }
    for pkl, problem in cases.values():
        with pytest.raises(DataPrepError) as err:
            pyskl.convert_pyskl(pkl, "toy", out, classes_file=classes, progress=False)
        assert pkl in str(err.value) and problem in str(err.value), str(err.value)

    pkl = write_pickle(tmp_path / "ok.pkl", make_pyskl())
    with pytest.raises(
        DataPrepError, match=r"unknown split\(s\) \['val'\]; available: train1, test1"
    ):
        pyskl.convert_pyskl(pkl, "toy", out, classes_file=classes, splits=["val"])
    with pytest.raises(DataPrepError, match="would make them negative"):
        pyskl.convert_pyskl(pkl, "toy", out, classes_file=classes, label_offset=1)
    dup = write_classes(tmp_path / "dup.txt", ["a", "b", "a"])
    with pytest.raises(DataPrepError, match="duplicated class names"):
        pyskl.convert_pyskl(pkl, "toy", out, classes_file=dup)
    assert leftovers(out) == []


def _pyskl_cli(*args, cwd=REPO):
    env = {**os.environ, "PYTHONPATH": REPO}
    return subprocess.run(
        [sys.executable, "-m", "data_prep.pyskl", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.skipif(
    not os.path.exists(SAMPLE_PKL), reason=f"real PYSKL sample not available at {SAMPLE_PKL}"
)
def test_pyskl_cli_refuses_a_pickle_without_label_0(tmp_path):
    """The shared sample (labels 1..16) as NTU-60 without --label_offset: refused in one line, as --help says."""
    proc = _pyskl_cli(f"--ann={SAMPLE_PKL}", "--dataset=ntu60", f"--out_dir={tmp_path / 'out'}")
    assert proc.returncode == 2, proc.stderr
    assert (proc.stdout + proc.stderr).strip().splitlines() == [
        f"data_prep.pyskl: error: {SAMPLE_PKL}: no clip has label 0 (labels run 1..16, 60 classes): "
        "pass --label_offset=1 if they count from 1, or --label_offset=0 if they count from 0"
    ]
    assert not os.path.exists(tmp_path / "out")
    help_text = _pyskl_cli("--helpfull").stdout
    assert "a pickle in which none has is refused" in " ".join(help_text.split())


def test_a_pickle_that_would_run_code_is_refused(tmp_path, file_writing_payload):
    """pickle.load would write the file; the restricted loader refuses the global and writes nothing."""
    from skclip_jax import safe_pickle

    payload, target = file_writing_payload
    data = make_pyskl()
    data["annotations"][0]["label"] = payload
    pkl = write_pickle(tmp_path / "hostile.pkl", data)
    with pytest.raises(safe_pickle.UnsafePickleError, match="refused global builtins.exec"):
        safe_pickle.load(pkl)
    proc = _pyskl_cli(
        f"--ann={pkl}", "--dataset=toy", f"--classes={write_classes(tmp_path / 'c.txt', CLASSES)}",
        f"--out_dir={tmp_path / 'out'}",
    )  # fmt: skip
    assert proc.returncode == 2 and (proc.stdout + proc.stderr).strip().splitlines() == [
        f"data_prep.pyskl: error: {pkl}: refused global builtins.exec: a PYSKL pickle holds only "
        "containers, numbers, strings and NumPy arrays, so this file may run code; it was not loaded"
    ], proc.stderr
    assert not target.exists() and not os.path.exists(tmp_path / "out")
    with open(pkl, "rb") as f:  # the payload is real: the plain loader runs it
        pickle.load(f)
    assert target.read_text() == "pwned"


def test_safe_pickle_reads_what_pyskl_files_hold(tmp_path):
    """Arrays, NumPy scalars and containers in every pickle protocol, and the real sample, as pickle.load."""
    import collections

    from skclip_jax import safe_pickle

    data = make_pyskl()
    data["extra"] = {
        "score": np.float32(0.5), "count": np.int64(3), "names": collections.OrderedDict(a=1),
        "groups": collections.defaultdict(list, {"a": [1]}), "tags": {"x", "y"}, "raw": b"\x00\x01",
    }  # fmt: skip
    for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
        path = tmp_path / f"p{protocol}.pkl"
        path.write_bytes(pickle.dumps(data, protocol=protocol))
        got = safe_pickle.load(path)
        assert got["extra"] == data["extra"] and got["split"] == data["split"], protocol
        for a, b in zip(got["annotations"], data["annotations"], strict=True):
            assert a["keypoint"].dtype == b["keypoint"].dtype
            np.testing.assert_array_equal(a["keypoint"], b["keypoint"])
    if not os.path.exists(SAMPLE_PKL):
        pytest.skip(f"real PYSKL sample not available at {SAMPLE_PKL} (the synthetic cases passed)")
    with open(SAMPLE_PKL, "rb") as f:
        want = pickle.load(f)
    got = safe_pickle.load(SAMPLE_PKL)
    assert got["split"] == want["split"] and len(got["annotations"]) == 486
    for a, b in zip(got["annotations"], want["annotations"], strict=True):
        assert a.keys() == b.keys() and a["frame_dir"] == b["frame_dir"]
        np.testing.assert_array_equal(a["keypoint"], b["keypoint"])
        assert a["keypoint"].dtype == b["keypoint"].dtype == np.float16


def test_pyskl_cli_exit_codes(tmp_path):
    data = make_pyskl()
    data["annotations"][1]["keypoint"][0, 0, 0, 0] = np.nan
    pkl = write_pickle(tmp_path / "bad.pkl", data)
    classes = write_classes(tmp_path / "classes.txt", CLASSES)
    cmd = [
        sys.executable,
        "-m",
        "data_prep.pyskl",
        f"--ann={pkl}",
        "--dataset=cli_toy",
        f"--classes={classes}",
        f"--out_dir={tmp_path / 'out'}",
    ]
    env = {**os.environ, "PYTHONPATH": REPO}
    bad = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2, bad.stderr
    assert f"data_prep.pyskl: error: {pkl}: clip frame_dir='tr1'" in bad.stderr
    assert "Traceback" not in bad.stderr
    assert not os.path.exists(tmp_path / "out" / "cli_toy")

    ok = subprocess.run(
        cmd + ["--skip_bad"], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )
    assert ok.returncode == 0, ok.stderr
    assert "train1: 4 clips, 1 skipped" in ok.stdout
    assert "[train1] tr1" in ok.stdout and "NaN/infinite keypoint" in ok.stdout


# ----------------------------------------------------------------------------- atomicity


def _good(n: int, start: int = 0):
    for i in range(start, start + n):
        yield tfds_writer.Clip("mem", make_ann(f"c{i}", i % 3, 6, 1, i))


def _good_then_bad(n: int):
    """n valid clips, then one with an infinite coordinate."""
    yield from _good(n)
    bad = make_ann("broken", 0, 6, 1, 7)
    bad["keypoint"][0, 0, 0, 0] = np.inf
    yield tfds_writer.Clip("mem", bad)


def _good_then_crash(n: int):
    yield from _good(n)
    raise RuntimeError("disk on fire")


def _write(out, splits, **kw):
    return tfds_writer.write_keypoint_dataset(
        out_dir=out, name="atomic", class_names=CLASSES, splits=splits, sources=["mem"],
        progress=False, **kw,
    )  # fmt: skip


def test_atomic_write_and_overwrite(tmp_path):
    out = tmp_path / "out"
    # A bad clip in the second split, after a complete first split: nothing may remain.
    with pytest.raises(ClipError, match="'broken'"):
        _write(out, {"train": _good(3), "test": _good_then_bad(2)})
    assert leftovers(out) == []
    # A split whose every clip is skipped cannot be stored: a clear error, nothing written.
    with pytest.raises(DataPrepError, match="split 'test' has no valid clips to write"):
        _write(out, {"train": _good(3), "test": _good_then_bad(0)}, skip_bad=True)
    assert leftovers(out) == []
    # Any other exception mid-way (a crash of the source) also leaves nothing behind.
    with pytest.raises(RuntimeError, match="disk on fire"):
        _write(out, {"train": _good(3), "test": _good_then_crash(2)})
    assert leftovers(out) == []

    path, _ = _write(out, {"train": _good(3)})
    assert len(tfds.builder_from_directory(path).as_data_source()["train"]) == 3
    with pytest.raises(DataPrepError, match="already holds a complete dataset; pass --overwrite"):
        _write(out, {"train": _good(2)})
    # A failing overwrite keeps the old dataset intact and readable.
    with pytest.raises(ClipError):
        _write(out, {"train": _good_then_bad(2)}, overwrite=True)
    assert len(tfds.builder_from_directory(path).as_data_source()["train"]) == 3
    _, summary = _write(out, {"train": _good_then_bad(2)}, overwrite=True, skip_bad=True)
    assert len(tfds.builder_from_directory(path).as_data_source()["train"]) == 2
    assert summary["skipped"][0]["frame_dir"] == "broken"
    assert sorted(os.listdir(out)) == ["atomic"] and os.listdir(out / "atomic") == ["1.0.0"]


# ----------------------------------------------------------------------------- Penn Action


@pytest.fixture(scope="module")
def penn_dir(tmp_path_factory):
    if not os.path.isdir(PENN_LABELS):
        pytest.skip(f"Penn Action labels not available at {PENN_LABELS}")
    d = tmp_path_factory.mktemp("penn_labels")
    for stem in PENN_FILES:
        shutil.copy(os.path.join(PENN_LABELS, f"{stem}.mat"), d)
    return d


def test_penn_action_mapping_scores_and_splits(penn_dir, tmp_path):
    path, summary = penn_action.convert_penn_action(penn_dir, tmp_path / "out", progress=False)
    builder = tfds.builder_from_directory(path)
    names = builder.info.features["label"].names
    assert names == sorted(names) and "jumping jacks" in names and len(names) == 15
    sources = builder.as_data_source()
    checked_placeholders = 0
    for split in ("train", "test"):
        for fd, ex in by_frame_dir(sources[split]).items():
            mat = scipy.io.loadmat(os.path.join(penn_dir, f"{fd}.mat"))
            assert split == ("train" if int(mat["train"][0, 0]) == 1 else "test")
            assert names[int(ex["label"])] == str(mat["action"][0]).replace("_", " ")
            h, w, t = (int(v) for v in mat["dimensions"][0])
            assert ex["img_shape"].tolist() == [h, w] and int(ex["total_frames"]) == t
            kp, score = ex["keypoint"], ex["keypoint_score"]
            assert kp.shape == (1, t, 17, 2) and score.shape == (1, t, 17)
            penn_xy = np.stack([mat["x"], mat["y"]], -1).astype(np.float32)
            vis = mat["visibility"]
            placeholder = (mat["x"] <= 1) & (mat["y"] <= 1)
            # Penn index -> COCO index: head->nose, left limbs to COCO's odd "l-" slots.
            pairs = {0: 0, 2: 5, 1: 6, 4: 7, 3: 8, 6: 9, 5: 10, 8: 11, 7: 12, 10: 13, 9: 14}
            pairs |= {12: 15, 11: 16}
            for p, c in pairs.items():
                real = ~placeholder[:, p]
                np.testing.assert_array_equal(kp[0, real, c], penn_xy[real, p])
                np.testing.assert_array_equal(score[0, real, c], vis[real, p].astype(np.float32))
                assert (kp[0, ~real, c] == 0).all() and (score[0, ~real, c] == 0).all()
                checked_placeholders += int((~real).sum())
            # Eyes and ears do not exist in Penn Action.
            assert (score[0, :, 1:5] == 0).all() and (kp[0, :, 1:5] == 0).all()
    assert checked_placeholders > 100  # The chosen files do contain origin placeholders.
    assert summary["splits"]["train"]["num_clips"] == 4
    assert summary["splits"]["test"]["num_clips"] == 6


def test_penn_action_bad_files(penn_dir, tmp_path):
    labels = tmp_path / "labels"
    shutil.copytree(penn_dir, labels)
    mat = scipy.io.loadmat(os.path.join(penn_dir, "0001.mat"))
    mat = {k: v for k, v in mat.items() if not k.startswith("__")}
    scipy.io.savemat(labels / "9001.mat", {k: v for k, v in mat.items() if k != "action"})
    scipy.io.savemat(labels / "9002.mat", {**mat, "action": np.array(["yodelling"])})
    (labels / "9003.mat").write_bytes(b"not a mat file")
    out = tmp_path / "out"
    with pytest.raises(ClipError) as err:
        penn_action.convert_penn_action(labels, out, progress=False)
    assert "9001.mat" in str(err.value) and "'9001'" in str(err.value)
    assert "missing fields ['action']" in str(err.value)
    assert leftovers(out) == []

    _, summary = penn_action.convert_penn_action(labels, out, skip_bad=True, progress=False)
    problems = {s["frame_dir"]: s["problem"] for s in summary["skipped"]}
    assert set(problems) == {"9001", "9002", "9003"}
    assert "unknown action 'yodelling'" in problems["9002"]
    assert "unreadable .mat" in problems["9003"]
    assert sum(s["num_clips"] for s in summary["splits"].values()) == len(PENN_FILES)


def test_penn_action_full_conversion(tmp_path):
    """All 2326 clips (about 2 s here): the official split sizes."""
    if not os.path.isdir(PENN_LABELS):
        pytest.skip(f"Penn Action labels not available at {PENN_LABELS}")
    _, summary = penn_action.convert_penn_action(PENN_LABELS, tmp_path / "out", progress=False)
    assert summary["splits"]["train"]["num_clips"] == 1258
    assert summary["splits"]["test"]["num_clips"] == 1068
    assert summary["num_skipped"] == 0


# ----------------------------------------------------------------------------- synthetic


def test_synthetic_deterministic(tmp_path):
    a = synthetic.generate_clips("train", 2, seed=3)
    b = synthetic.generate_clips("train", 3, seed=3)[: len(a)]
    for x, y in zip(a, b, strict=True):
        assert x["frame_dir"] == y["frame_dir"] and x["label"] == y["label"]
        assert x["keypoint"].tobytes() == y["keypoint"].tobytes()
        assert x["keypoint_score"].tobytes() == y["keypoint_score"].tobytes()
    c = synthetic.generate_clips("train", 2, seed=4)
    assert any(x["keypoint"].shape != z["keypoint"].shape for x, z in zip(a, c, strict=True))
    assert [x["label"] for x in a] == list(range(12)) * 2

    p1 = synthetic.make_synthetic_dataset(tmp_path / "one", 2, 1, seed=3)
    p2 = synthetic.make_synthetic_dataset(tmp_path / "two", 2, 1, seed=3)
    records = sorted(n for n in os.listdir(p1) if ".array_record-" in n)
    assert len(records) == 2
    for name in records:  # Byte-identical record files.
        with open(os.path.join(p1, name), "rb") as f1, open(os.path.join(p2, name), "rb") as f2:
            assert f1.read() == f2.read()
    train = by_frame_dir(
        tfds.data_source("synthetic_actions", data_dir=str(tmp_path / "one"))["train"]
    )
    assert len(train) == 24
    for clip in a:
        ex = train[clip["frame_dir"]]
        assert_example_matches(ex, clip)
    names = tfds.builder_from_directory(p1).info.features["label"].names
    assert names == list(synthetic.CLASS_NAMES)
    # Same arguments: reused, not rebuilt; different arguments need overwrite.
    stamp = os.stat(os.path.join(p1, records[0])).st_mtime_ns
    assert synthetic.make_synthetic_dataset(tmp_path / "one", 2, 1, seed=3) == p1
    assert os.stat(os.path.join(p1, records[0])).st_mtime_ns == stamp
    with pytest.raises(DataPrepError, match="--overwrite"):
        synthetic.make_synthetic_dataset(tmp_path / "one", 2, 1, seed=5)


def test_synthetic_clip_variety():
    clips = synthetic.generate_clips("test", 3, seed=0)
    lengths = [c["total_frames"] for c in clips]
    assert min(lengths) >= 30 and max(lengths) <= 120 and len(set(lengths)) > 20
    assert {c["keypoint"].shape[0] for c in clips} == {1, 2}
    assert len({c["img_shape"] for c in clips}) >= 3
    scores = np.concatenate([c["keypoint_score"].ravel() for c in clips])
    assert (scores == 0).any() and ((scores > 0) & (scores < 0.2)).any() and scores.max() <= 1
    for c in clips:
        tfds_writer.validate_clip(c, num_classes=12)  # Valid PYSKL-style clips.


def test_synthetic_demo_options(tmp_path):
    clips = synthetic.generate_clips(
        "train", 2, seed=1, num_classes=8, num_frames=16, num_persons=1
    )
    assert [c["label"] for c in clips] == list(range(8)) * 2
    assert {c["keypoint"].shape[:2] for c in clips} == {(1, 16)}
    assert all(c["total_frames"] == 16 for c in clips)
    # Same draws as the full-length clips: the resampled frames are a subset of them.
    full = synthetic.generate_clips("train", 1, seed=1, num_persons=1)[0]
    assert np.isin(clips[0]["keypoint"], full["keypoint"]).all()
    path = synthetic.make_synthetic_dataset(
        tmp_path, 2, 1, seed=1, num_classes=8, num_frames=16, num_persons=1
    )
    builder = tfds.builder_from_directory(path)
    assert builder.info.features["label"].names == list(synthetic.CLASS_NAMES[:8])
    assert builder.info.splits["train"].num_examples == 16
    with pytest.raises(ValueError, match="num_classes"):
        synthetic.generate_clips("train", 1, num_classes=13)


def _normalised(clip: dict) -> np.ndarray:
    """Actor's joints [T, 17, 2], centred on the clip's mean joint and divided by its vertical
    spread (unlike the width, that does not depend on the camera yaw); joints with score 0 are
    filled with that joint's mean over the clip."""
    kp = clip["keypoint"][0].astype(np.float64)
    valid = clip["keypoint_score"][0] > 0
    pts = kp[valid]
    x = (kp - pts.mean(0)) / pts[:, 1].std()
    for j in range(17):
        x[~valid[:, j], j] = x[valid[:, j], j].mean(0) if valid[:, j].any() else 0.0
    return x


def _trajectory(clip: dict, num: int = 32) -> np.ndarray:
    """Time-normalised (linearly resampled to num frames), centred trajectory, flattened."""
    x = _normalised(clip)
    pos = np.linspace(0, len(x) - 1, num)
    lo = np.floor(pos).astype(int)
    hi = np.minimum(lo + 1, len(x) - 1)
    w = (pos - lo)[:, None, None]
    return ((1 - w) * x[lo] + w * x[hi]).ravel()


def _nearest_centroid(ftr, ytr, fte, yte) -> float:
    classes = np.unique(ytr)
    cents = np.stack([ftr[ytr == k].mean(0) for k in classes])
    pred = classes[((fte[:, None] - cents[None]) ** 2).sum(-1).argmin(1)]
    return float((pred == yte).mean())


def _one_nn(ftr, ytr, fte, yte) -> float:
    pred = ytr[((fte[:, None] - ftr[None]) ** 2).sum(-1).argmin(1)]
    return float((pred == yte).mean())


def test_synthetic_needs_motion_not_one_joint():
    """Default-size data (40/15 per class): no single joint's mean position gives the class,
    whole trajectories do, and one pair (sitting down / standing up) needs the time order."""
    train = synthetic.generate_clips("train", 40, seed=0)
    test = synthetic.generate_clips("test", 15, seed=0)
    ytr = np.array([c["label"] for c in train])
    yte = np.array([c["label"] for c in test])

    def joint_means(clips):
        return np.stack([_normalised(c).mean(0) for c in clips])  # [N, 17, 2]

    jtr, jte = joint_means(train), joint_means(test)
    single = [_nearest_centroid(jtr[:, j], ytr, jte[:, j], yte) for j in range(17)]
    raw = [
        _nearest_centroid(
            np.stack([c["keypoint"][0, :, j].mean(0) for c in train]), ytr,
            np.stack([c["keypoint"][0, :, j].mean(0) for c in test]), yte,
        )
        for j in range(17)
    ]  # fmt: skip
    assert max(single) < 0.55, single  # Chance is 1/12; observed max 0.44 (an eye).
    assert max(raw) < 0.55, raw  # Unnormalised pixels: observed max 0.14.

    ttr = np.stack([_trajectory(c) for c in train])
    tte = np.stack([_trajectory(c) for c in test])
    assert _one_nn(ttr, ytr, tte, yte) > 0.85  # Observed 0.94, although phases are not aligned.

    sit = [synthetic.CLASS_NAMES.index(n) for n in ("sitting down", "standing up")]
    mtr, mte = np.isin(ytr, sit), np.isin(yte, sit)
    flat_tr, flat_te = jtr[mtr].reshape(mtr.sum(), -1), jte[mte].reshape(mte.sum(), -1)
    assert _nearest_centroid(flat_tr, ytr[mtr], flat_te, yte[mte]) < 0.75  # Observed 0.43.
    assert _one_nn(ttr[mtr], ytr[mtr], tte[mte], yte[mte]) > 0.9  # Observed 1.0.
