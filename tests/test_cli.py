"""The training program as users run it: train, checkpoint, evaluate, resume after kill -9, SIGTERM or Ctrl-C,
mistakes on the command line.

Each run is a real `python -m skclip_jax.main` process on the tiny synthetic demo (2 simulated CPU devices).
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import jax.numpy as jnp
import pytest

from skclip_jax import train

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOTAL_STEPS = 8
RUN_FLAGS = [
    f"--config.total_steps={TOTAL_STEPS}",
    "--config.log_every_steps=1",
    "--config.checkpoint_every_steps=2",
    "--config.eval_every_steps=4",
]


def _env():
    env = dict(os.environ)
    env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
    env["JAX_PLATFORMS"] = "cpu"
    env["PYTHONPATH"] = REPO
    return env


def start(workdir, data_dir, *extra, config="configs/demo.py:tiny"):
    cmd = [
        sys.executable,
        "-m",
        "skclip_jax.main",
        f"--config={config}",
        f"--workdir={workdir}",
        f"--config.data.data_dir={data_dir}",
        *RUN_FLAGS,
        *extra,
    ]
    return subprocess.Popen(
        cmd, cwd=REPO, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def run(workdir, data_dir, *extra, timeout=600, **kwargs):
    proc = start(workdir, data_dir, *extra, **kwargs)
    out, _ = proc.communicate(timeout=timeout)
    return proc.returncode, out


def records(workdir, kind):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    return {r["step"]: r for r in rows if r["kind"] == kind}


def finished_steps(workdir):
    ckpt = os.path.join(workdir, "checkpoints")
    if not os.path.isdir(ckpt):
        return []
    return sorted(int(d) for d in os.listdir(ckpt) if d.isdigit())


def assert_same_run(workdir, reference):
    """Every logged train step and every evaluation equal the uninterrupted run's."""
    for kind in ("train", "eval"):
        got, want = records(workdir, kind), records(reference, kind)
        assert sorted(got) == sorted(want), kind
        for step, row in want.items():
            for key, value in row.items():
                if key in ("clips_per_sec", "kind"):
                    continue
                assert got[step][key] == pytest.approx(value, rel=1e-5, abs=1e-6), (kind, step, key)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("data") / "synthetic_tiny")


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory, data_dir):
    workdir = str(tmp_path_factory.mktemp("reference"))
    code, out = run(workdir, data_dir)
    assert code == 0, out
    return workdir, out


def test_train_writes_checkpoints_metrics_and_plots(reference_run):
    workdir, out = reference_run
    train_rows, eval_rows = records(workdir, "train"), records(workdir, "eval")
    assert sorted(train_rows) == list(range(1, TOTAL_STEPS + 1))
    for row in train_rows.values():
        assert {"loss", "ssm_loss", "csi_loss", "learning_rate", "clips_per_sec"} <= set(row)
    assert sorted(eval_rows) == [4, 8]
    assert {"top1", "top5", "mean_class_accuracy"} <= set(eval_rows[8])
    assert TOTAL_STEPS in finished_steps(workdir)
    for name in ("loss.png", "accuracy.png", "confusion.png"):
        with open(os.path.join(workdir, name), "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n", name
    assert "final evaluation: top1" in out


def test_eval_mode_reproduces_training_evaluation(reference_run, data_dir, tmp_path):
    workdir, _ = reference_run
    before = records(workdir, "eval")[TOTAL_STEPS]
    code, out = run(workdir, data_dir, "--mode=eval")
    assert code == 0, out
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    last = rows[-1]
    assert last["kind"] == "eval" and last["step"] == TOTAL_STEPS
    for key in ("top1", "top5", "mean_class_accuracy"):
        assert last[key] == pytest.approx(before[key], abs=1e-9), key
    # The evaluation replaced the training run's row of that step: one evaluation row per step.
    evals = [(r["step"], r["kind"]) for r in rows if r["kind"] == "eval"]
    assert sorted(evals) == [(4, "eval"), (TOTAL_STEPS, "eval")]


def _wait_for(predicate, proc, timeout=300):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        if proc.poll() is not None:
            raise AssertionError(
                f"run ended (code {proc.returncode}) before the condition:\n{proc.stdout.read()}"
            )
        time.sleep(0.02)
    raise AssertionError("timed out")


def test_kill_9_then_restart_continues_exactly(reference_run, data_dir, tmp_path):
    reference, _ = reference_run
    workdir = str(tmp_path / "killed")
    proc = start(workdir, data_dir)
    _wait_for(lambda: 2 in finished_steps(workdir), proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert max(finished_steps(workdir)) < TOTAL_STEPS
    code, out = run(workdir, data_dir)
    assert code == 0, out
    assert "Resuming at step" in out
    assert_same_run(workdir, reference)


def _first_train_record(workdir):
    return os.path.exists(os.path.join(workdir, "metrics.jsonl")) and records(workdir, "train")


def test_ctrl_c_saves_the_step_in_flight_and_exits_130(reference_run, data_dir, tmp_path):
    """SIGINT (Ctrl-C) as SIGTERM: the step in flight finishes and is checkpointed; one line names it."""
    reference, _ = reference_run
    workdir = str(tmp_path / "interrupted")
    proc = start(workdir, data_dir)
    _wait_for(lambda: _first_train_record(workdir), proc)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, out
    assert "Traceback" not in out and "KeyboardInterrupt" not in out, out
    saved = finished_steps(workdir)
    assert saved and max(saved) == max(records(workdir, "train")), (saved, out)
    where = os.path.join(os.path.abspath(workdir), "checkpoints", str(max(saved)))
    last = out.strip().splitlines()[-1]
    assert last == (
        f"skclip_jax.main: interrupted: checkpoint of step {max(saved)} saved in {where}; run the "
        "same command to resume"
    ), out[-2000:]
    code, out = run(workdir, data_dir)
    assert code == 0, out
    assert_same_run(workdir, reference)


def test_second_ctrl_c_exits_at_once_and_the_next_run_resumes_a_complete_checkpoint(
    reference_run, data_dir, tmp_path
):
    """A second Ctrl-C does not wait for the save; whatever it cut short is not what the next run resumes from
    (orbax's temporary folder is never a step). A leftover temporary folder of a later step proves it."""
    reference, _ = reference_run
    workdir = str(tmp_path / "twice")
    proc = start(workdir, data_dir)
    _wait_for(lambda: 2 in finished_steps(workdir) and len(records(workdir, "train")) >= 3, proc)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130, out
    assert "Traceback" not in out and "Second Ctrl-C: exiting now" in out, out[-2000:]
    ckpt = os.path.join(workdir, "checkpoints")
    # A save killed half-way, as orbax leaves it: a later step's temporary folder without its commit.
    shutil.copytree(
        os.path.join(ckpt, "2"), os.path.join(ckpt, "7.orbax-checkpoint-tmp-1796333000")
    )
    os.remove(os.path.join(ckpt, "7.orbax-checkpoint-tmp-1796333000", "commit_success.txt"))
    complete = finished_steps(workdir)  # before the next run keeps only its latest ones
    code, out = run(workdir, data_dir)
    assert code == 0, out
    resumed = int(out.split("Resuming at step ")[1].split()[0])
    assert resumed in complete and resumed < 7, (complete, out)
    assert_same_run(workdir, reference)


def test_sigterm_saves_a_checkpoint_and_exits_zero(reference_run, data_dir, tmp_path):
    reference, _ = reference_run
    workdir = str(tmp_path / "preempted")
    proc = start(workdir, data_dir)
    _wait_for(
        lambda: (
            os.path.exists(os.path.join(workdir, "metrics.jsonl")) and records(workdir, "train")
        ),
        proc,
    )
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, out
    saved = finished_steps(workdir)
    assert saved and max(saved) == max(records(workdir, "train")), (saved, out)
    assert "Preempted" in out or max(saved) == TOTAL_STEPS
    code, out = run(workdir, data_dir)
    assert code == 0, out
    assert_same_run(workdir, reference)


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--config.data.clip_len=0"], "data.clip_len"),
        (["--config.model.activation=relu"], "model.activation"),
        (["--config.batch_size=7"], "batch_size=7 is not divisible by the 2 devices"),
    ],
)
def test_bad_config_stops_with_a_message_naming_the_field(data_dir, tmp_path, extra, message):
    code, out = run(str(tmp_path / "bad"), data_dir, *extra)
    assert code == 2 and "Traceback" not in out
    assert message in out


def _main(*args, cwd=REPO, env=None):
    """`python -m skclip_jax.main ARGS` (no tiny-run flags): (exit status, stdout + stderr)."""
    proc = subprocess.run(
        [sys.executable, "-m", "skclip_jax.main", *args],
        cwd=cwd,
        env=env or _env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=300,
    )
    return proc.returncode, proc.stdout


def _broken_configs(d):
    """Config files a user could write wrong: a syntax error, a name error in get_config, no get_config."""
    files = {
        "syntax": "def get_config(:\n    pass\n",
        "name": "def get_config(arg=None):\n    return undefined_name\n",
        "noget": "CONFIG = 1\n",
    }
    for name, text in files.items():
        with open(os.path.join(d, f"{name}.py"), "w") as f:
            f.write(text)
    return {name: os.path.join(d, f"{name}.py") for name in files}


@pytest.mark.parametrize(
    "args,message",
    [
        (
            ["--config=configs/demo.py:tiny", "--config.data.clip_lenn=4"],
            "--config.data.clip_lenn: config.data has no field 'clip_lenn'; did you mean "
            "--config.data.clip_len?",
        ),
        (
            ["--config=configs/demo.py:tiny", "--config.model.slowonly.base_chanels=4"],
            "config.model.slowonly has no field 'base_chanels'; did you mean "
            "--config.model.slowonly.base_channels?",
        ),
        (
            ["--config=configs/demo.py:tiny", "--config.dat.clip_len=4"],
            "config has no field 'dat'; did you mean --config.data?",
        ),
        (["--config=configs/demo.py:tny"], "Unknown config variant(s) ['tny']"),
        (["--config=configs/nosuch.py"], "configs/nosuch.py does not exist"),
        (["--config=configs/demo.py:tiny", "--config.batch_size=eight"], "--config.batch_size"),
        (["--config=configs/demo.py:tiny", "--worksdir=x"], "Unknown command line flag 'worksdir'"),
        (["--config=configs/demo.py:tiny", "--mode=predict"], "flag --mode=predict"),
        (["--mode=eval"], "w: no such folder; pass --workdir of a trained run"),
        (["--mode=eval", "--restart"], "--restart applies to training only"),
        (["--config=configs/demo.py:tiny", "positional"], "unexpected arguments ['positional']"),
        (
            ["--config=configs/demo.py:tiny", "--config.model.activation=relu"],
            "config.model.activation='relu': must be one of",
        ),
    ],
)
def test_a_mistake_is_one_or_two_lines_exit_2(tmp_path, args, message):
    code, out = _main(*args, f"--workdir={tmp_path / 'w'}")
    lines = out.strip().splitlines()
    assert code == 2, out
    assert 1 <= len(lines) <= 2 and "Traceback" not in out, out
    assert lines[0].startswith("skclip_jax.main: error: ") and message in out, out
    assert not os.path.exists(tmp_path / "w")


def test_a_broken_config_file_is_named_with_its_line(tmp_path):
    files = _broken_configs(str(tmp_path))
    for name, message in {
        "syntax": f"{files['syntax']}:1: invalid syntax",
        "name": f"{files['name']}:2: NameError: name 'undefined_name' is not defined",
        "noget": f"{files['noget']} defines no get_config()",
    }.items():
        code, out = _main(f"--config={files[name]}", f"--workdir={tmp_path / 'w'}")
        assert code == 2 and len(out.strip().splitlines()) == 1, out
        assert "Traceback" not in out and message in out, (name, out)


def test_mistakes_fail_before_jax_is_imported(tmp_path):
    """A mistyped field is reported in the time it takes to read the config, not to import jax and TF: with a
    `jax` on the path that fails on import, the mistake is still the message."""
    poisoned = tmp_path / "poisoned"
    (poisoned / "jax").mkdir(parents=True)
    (poisoned / "jax" / "__init__.py").write_text('raise ImportError("jax was imported")\n')
    env = dict(_env(), PYTHONPATH=os.pathsep.join([str(poisoned), REPO]))
    for args, message in [
        (["--config.data.clip_lenn=4"], "did you mean --config.data.clip_len?"),
        (["--config.dat.clip_len=4"], "did you mean --config.data?"),
    ]:
        code, out = _main("--config=configs/demo.py:tiny", *args, env=env)
        assert code == 2 and message in out, out
        assert "jax was imported" not in out
    # The poisoned jax does fail a run that gets as far as importing it: the check above can fail.
    proc = subprocess.run(
        [sys.executable, "-c", "import jax"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    assert "jax was imported" in proc.stdout.decode()


def test_missing_data_dir_and_checkpoint_are_clear_errors(tmp_path):
    code, out = run(
        str(tmp_path / "w"), str(tmp_path / "absent"), config="configs/penn_action.py:cpu"
    )
    assert code != 0 and "does not exist" in out and "data_prep" in out
    code, out = run(str(tmp_path / "w2"), str(tmp_path / "absent"), "--mode=eval")
    assert code != 0 and "no checkpoint" in out


def test_demo_data_of_other_generator_settings_is_not_reused(tmp_path):
    """A demo data_dir made with another seed is refused by name, not silently trained on.

    (The same settings reuse it: every test here after the reference run trains on the data_dir it generated.)
    """
    from configs import demo
    from data_prep import synthetic

    other = str(tmp_path / "seed5")
    kwargs = dict(demo.get_config("tiny").data.synthetic.to_dict(), seed=5)
    synthetic.make_synthetic_dataset(other, **kwargs)
    code, out = run(str(tmp_path / "w"), other)
    assert code != 0 and "Traceback" not in out
    assert f"data.data_dir {other} holds another dataset than data.synthetic describes" in out
    assert not os.path.exists(os.path.join(str(tmp_path / "w"), "checkpoints"))


def test_non_finite_loss_names_its_step():
    buffer = [(5, {"loss": jnp.float32(1.0)}), (6, {"loss": jnp.float32(float("nan"))})]
    with pytest.raises(train.NonFiniteLossError, match="at step 6"):
        train._fetch_train_metrics(buffer)
