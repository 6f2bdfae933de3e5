"""A workdir holds one run: another config is refused before anything in it changes, --restart starts over, a
resume gets past a damaged newest checkpoint without losing one, evaluations are one row a step, saved paths are
absolute, and a run without --workdir goes to runs/<config>[_<variants>] (skclip_jax/workdir.py).

Each command is a real `python -m skclip_jax.main` process on the tiny demo (2 simulated CPU devices); one
finished run, started without --workdir, is copied for the tests that change it.
"""

import glob
import hashlib
import json
import os
import shutil
import subprocess
import sys

import pytest

from skclip_jax import workdir

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(REPO, "configs", "demo.py")


def main_cli(*args, cwd=REPO):
    """Runs `python -m skclip_jax.main ARGS` in `cwd`; returns (exit status, stdout + stderr)."""
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=REPO)
    env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
    proc = subprocess.run(
        [sys.executable, "-m", "skclip_jax.main", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=600,
    )
    return proc.returncode, proc.stdout


def tree_hashes(folder):
    """{relative path: sha256} of every file under `folder` (folders by name): what "nothing changed" means."""
    out = {}
    for root, dirs, files in os.walk(folder):
        for name in dirs:
            out[os.path.relpath(os.path.join(root, name), folder) + "/"] = "dir"
        for name in files:
            path = os.path.join(root, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, folder)] = hashlib.sha256(f.read()).hexdigest()
    return out


def eval_rows(run):
    with open(os.path.join(run, "metrics.jsonl")) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    return [r for r in rows if r["kind"] == "eval"]


def damage(run, step):
    """Cuts every data file of checkpoint `step` short, as a disk error or a bad copy would."""
    files = glob.glob(os.path.join(run, "checkpoints", str(step), "state", "**", "d", "*"))
    assert files
    for path in files:
        with open(path, "r+b") as f:
            f.truncate(8)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("data") / "synthetic_tiny")


@pytest.fixture(scope="module")
def finished(tmp_path_factory, data_dir):
    """A finished tiny run (4 steps, checkpoints 2 and 4, one evaluation) started without --workdir from an
    empty folder: (that folder, the run's workdir, the command's output)."""
    cwd = str(tmp_path_factory.mktemp("cwd"))
    code, out = main_cli(f"--config={CONFIG}:tiny", f"--config.data.data_dir={data_dir}", cwd=cwd)
    assert code == 0, out[-3000:]
    return cwd, os.path.join(cwd, "runs", "demo_tiny"), out


def copy_of(finished, tmp_path, name="run"):
    target = str(tmp_path / name)
    shutil.copytree(finished[1], target)
    return target


def tiny(data_dir, *extra):
    return (f"--config={CONFIG}:tiny", f"--config.data.data_dir={data_dir}", *extra)


def test_without_workdir_a_run_goes_to_runs_config_variants(finished, data_dir):
    cwd, run, out = finished
    assert out.splitlines()[0] == (
        f"workdir: runs/demo_tiny (the default for --config={CONFIG}:tiny; --workdir=DIR names another)"
    )
    assert os.listdir(cwd) == ["runs"]  # the data lives at its absolute data_dir, not here
    assert sorted(os.listdir(os.path.join(run, "checkpoints"))) == ["2", "4"]
    with open(os.path.join(run, "config.json")) as f:
        assert json.load(f)["data"]["data_dir"] == data_dir


def test_default_workdir_names_variants_in_the_order_they_apply():
    assert workdir.default_workdir("configs/ucf101.py") == os.path.join("runs", "ucf101")
    for typed in ("configs/ucf101.py:split2,cpu", "configs/ucf101.py:cpu, split2"):
        module = {"VARIANTS": {"split2": None, "cpu": None}}
        module = type("Module", (), module)
        assert workdir.default_workdir(typed, module) == os.path.join("runs", "ucf101_split2,cpu")


def test_another_config_or_class_set_is_refused_and_nothing_changes(finished, data_dir, tmp_path):
    _, run, _ = finished
    before = tree_hashes(run)
    other_data = str(tmp_path / "synthetic6")
    code, out = main_cli(f"--config={CONFIG}", f"--workdir={run}")  # the 8-class demo
    lines = out.strip().splitlines()
    assert code == 2 and len(lines) == 2 and "Traceback" not in out, out
    assert lines[0].startswith(f"skclip_jax.main: error: {run} holds another run (")
    assert "saved -> requested: batch_size 8 -> 16" in lines[0], lines
    assert "--restart" in lines[1] and "new --workdir" in lines[1], lines
    code, out = main_cli(
        *tiny(other_data, "--config.data.synthetic.num_classes=6"), f"--workdir={run}"
    )
    lines = out.strip().splitlines()
    assert code == 2 and len(lines) == 2, out
    assert f"data.data_dir '{data_dir}' -> '{other_data}'" in lines[0], lines
    assert "data.synthetic.num_classes 4 -> 6" in lines[0], lines
    code, out = main_cli(f"--config={CONFIG}", f"--workdir={run}", "--mode=eval")
    lines = out.strip().splitlines()
    assert code == 2 and len(lines) == 2, out
    assert lines[1].startswith("Omit --config to evaluate the run with its own"), lines
    assert tree_hashes(run) == before
    assert not os.path.exists(other_data)


def test_eval_twice_from_another_folder_keeps_one_row_and_creates_nothing(finished, tmp_path):
    run = copy_of(finished, tmp_path)
    trained = eval_rows(run)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    for _ in range(2):
        code, out = main_cli(f"--workdir={run}", "--mode=eval", cwd=str(elsewhere))
        assert code == 0, out[-3000:]
    rows = eval_rows(run)
    assert [r["step"] for r in rows] == [4]
    assert rows[0]["top1"] == pytest.approx(trained[0]["top1"], abs=1e-9)
    assert os.listdir(elsewhere) == []


def test_a_resume_gets_past_a_damaged_newest_checkpoint(finished, data_dir, tmp_path):
    """Step 4's files cut short: one line names it and why, the run resumes from step 2 (run length and
    cadence changed on the way, as allowed) and step 4 is kept aside, not deleted."""
    run = copy_of(finished, tmp_path)
    damage(run, 4)
    code, out = main_cli(
        *tiny(data_dir, "--config.total_steps=6", "--config.log_every_steps=2"),
        "--config.data.device_prefetch=0",
        f"--workdir={run}",
    )
    assert code == 0, out[-3000:]
    ckpt = os.path.join(run, "checkpoints")
    warnings = [line for line in out.splitlines() if "cannot be read" in line]
    assert len(warnings) == 1, out[-3000:]
    assert f"checkpoint step 4 in {ckpt} cannot be read: " in warnings[0]
    assert warnings[0].endswith("resuming from step 2 instead (step 4 is kept as 4.unreadable)")
    assert "Resuming at step 2" in out
    assert os.path.isdir(os.path.join(ckpt, "4.unreadable"))
    assert {"4", "6"} <= set(os.listdir(ckpt))
    assert [r["step"] for r in eval_rows(run)] == [4, 6]
    with open(os.path.join(run, "config.json")) as f:
        assert json.load(f)["total_steps"] == 6


def test_when_no_checkpoint_reads_nothing_is_changed(finished, data_dir, tmp_path):
    run = copy_of(finished, tmp_path)
    damage(run, 4)
    damage(run, 2)
    before = tree_hashes(run)
    code, out = main_cli(*tiny(data_dir), f"--workdir={run}")
    errors = [line for line in out.splitlines() if line.startswith("skclip_jax.main: error:")]
    assert code == 2 and "Traceback" not in out, out[-3000:]
    ckpt = os.path.join(run, "checkpoints")
    assert len(errors) == 1 and errors[0].startswith(
        f"skclip_jax.main: error: no checkpoint in {ckpt} can be read (steps [4, 2]: "
    ), errors
    assert errors[0].endswith("nothing was changed. Pass --restart to start over"), errors
    assert tree_hashes(run) == before


def test_another_class_list_than_the_run_saved_is_refused(finished, data_dir, tmp_path):
    """The same config over a dataset whose classes are not the run's (here: class_names.txt edited)."""
    run = copy_of(finished, tmp_path)
    path = os.path.join(run, "class_names.txt")
    with open(path) as f:
        names = f.read().splitlines()
    with open(path, "w") as f:
        f.write("\n".join(["juggling", *names[1:]]) + "\n")
    before = tree_hashes(run)
    code, out = main_cli(*tiny(data_dir), f"--workdir={run}")
    errors = [line for line in out.splitlines() if line.startswith("skclip_jax.main: error:")]
    assert code == 2 and "Traceback" not in out and len(errors) == 1, out[-3000:]
    assert (
        f"{run} trained on 4 classes (class_names.txt) but {data_dir} holds 4: class 0 is "
        in (errors[0])
    )
    assert tree_hashes(run) == before


def test_restart_starts_over_once_the_setup_succeeds(finished, data_dir, tmp_path):
    run = copy_of(finished, tmp_path)
    with open(os.path.join(run, "notes.txt"), "w") as f:
        f.write("mine\n")
    before = tree_hashes(run)
    code, out = main_cli(
        *tiny(data_dir, "--config.data.train_split=nosuch"), f"--workdir={run}", "--restart"
    )
    assert code == 2 and "'nosuch' is not a split" in out, out[-3000:]
    assert tree_hashes(run) == before  # a failed setup deletes nothing
    code, out = main_cli(
        *tiny(data_dir, "--config.total_steps=2", "--config.seed=1"),
        f"--workdir={run}",
        "--restart",
    )
    assert code == 0, out[-3000:]
    deleted = [line for line in out.splitlines() if line.startswith("--restart: deleted ")]
    assert len(deleted) == 1 and deleted[0].endswith(f" from {run}"), out[-3000:]
    for name in ("checkpoints", "config.json", "metrics.jsonl", "accuracy.png"):
        assert name in deleted[0]
    assert "notes.txt" not in deleted[0]
    with open(os.path.join(run, "notes.txt")) as f:
        assert f.read() == "mine\n"
    assert sorted(os.listdir(os.path.join(run, "checkpoints"))) == ["2"]
    assert [r["step"] for r in eval_rows(run)] == [2]
    with open(os.path.join(run, "config.json")) as f:
        assert json.load(f)["seed"] == 1
