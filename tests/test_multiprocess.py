"""Two processes train exactly like one: CPU multi-process runs through `jax.distributed` and gloo.

Two `python -m skclip_jax.main` processes (2 simulated CPU devices each) share a workdir and a
coordinator on localhost; one process with 4 simulated devices trains the same run in another
workdir. The global batch of every step is a pure function of (seed, step) and the mesh has 4
devices either way, so losses, evaluations and checkpoints must agree up to float reduction order.
"""

import json
import os
import subprocess
import sys
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import portpicker
import pytest

from configs import demo

pytestmark = pytest.mark.slow

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOTAL_STEPS = 6
RUN_FLAGS = [
    "--config=configs/demo.py:tiny",
    f"--config.total_steps={TOTAL_STEPS}",
    "--config.log_every_steps=1",
    "--config.checkpoint_every_steps=2",
    f"--config.eval_every_steps={TOTAL_STEPS}",
]
RUN_TIMEOUT_S = 600  # all three training processes together; they share the CPU cores.

# Installed as `sitecustomize` in the runs: logs every Python-level open for writing of a file
# under $SKCLIP_WATCH_DIR, so the test can tell which process wrote what in a shared workdir.
# (tensorstore and TensorBoard write from C++, unseen here: checkpoints are every process's job,
# and TensorBoard event files carry their writer's pid in the name.)
WRITE_HOOK = """
import os, sys

_watch = os.environ.get("SKCLIP_WATCH_DIR")
_log = os.environ.get("SKCLIP_WRITE_LOG")
if _watch and _log:
    _fd = os.open(_log, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    _writing = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC

    def _hook(event, args):
        if event != "open" or not isinstance(args[0], (str, bytes, os.PathLike)):
            return
        if isinstance(args[2], int) and args[2] & _writing:
            path = os.path.abspath(os.fsdecode(args[0]))
            if path.startswith(_watch + os.sep):
                os.write(_fd, (path + "\\n").encode())

    sys.addaudithook(_hook)
"""


def _env(num_devices, hook_dir=None, watch_dir=None, write_log=None):
    # No persistent compilation cache (conftest sets one): a process that loads its step from it reaches the
    # first collective long before one that compiles, and gloo's rendezvous gives up after 30 s.
    env = {k: v for k, v in os.environ.items() if k != "JAX_COMPILATION_CACHE_DIR"}
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={num_devices}"
    env["JAX_PLATFORMS"] = "cpu"
    env["PYTHONPATH"] = os.pathsep.join(p for p in (hook_dir, REPO) if p)
    if write_log:
        env["SKCLIP_WATCH_DIR"] = watch_dir
        env["SKCLIP_WRITE_LOG"] = write_log
    return env


def _start(log_path, env, *flags):
    cmd = [sys.executable, "-m", "skclip_jax.main", *RUN_FLAGS, *flags]
    with open(log_path, "w") as log:
        return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)


def _tail(path, lines=40):
    with open(path, errors="replace") as f:
        return "".join(f.readlines()[-lines:])


def _wait_all(procs, timeout):
    """Waits for every (name, process, log) under one deadline; returns {name: exit code}."""
    deadline = time.monotonic() + timeout
    codes = {}
    for name, proc, log in procs:
        try:
            codes[name] = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            raise AssertionError(f"{name} still running after {timeout} s:\n{_tail(log)}") from None
    return codes


def _reap(procs):
    for _, proc, _ in procs:
        if proc.poll() is None:
            proc.kill()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass


def _records(workdir, kind):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    return [r for r in rows if r["kind"] == kind]


def _written(write_log):
    if not os.path.exists(write_log):
        return set()
    with open(write_log) as f:
        return {line.strip() for line in f if line.strip()}


def _restore_numpy(state_dir):
    """A checkpoint's train state as NumPy arrays: readable whatever devices or processes wrote it."""
    with ocp.PyTreeCheckpointer() as checkpointer:
        tree = checkpointer.metadata(state_dir).item_metadata.tree
        restore_args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), tree)
        return checkpointer.restore(
            state_dir, args=ocp.args.PyTreeRestore(restore_args=restore_args)
        )


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    from data_prep import synthetic

    out = str(tmp_path_factory.mktemp("data") / "synthetic_tiny")
    kwargs = demo.get_config("tiny").data.synthetic.to_dict()
    synthetic.make_synthetic_dataset(out, **kwargs)
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory, data_dir):
    """The two-process run and the one-process run, started together (they are independent)."""
    root = tmp_path_factory.mktemp("multiprocess")
    hook_dir = root / "hook"
    hook_dir.mkdir()
    (hook_dir / "sitecustomize.py").write_text(WRITE_HOOK)
    two, one = str(root / "two_processes"), str(root / "one_process")
    coordinator = f"127.0.0.1:{portpicker.pick_unused_port()}"
    procs = []
    try:
        for i in range(2):
            log = str(root / f"process_{i}.log")
            env = _env(2, str(hook_dir), two, str(root / f"process_{i}.writes"))
            proc = _start(
                log,
                env,
                f"--workdir={two}",
                f"--config.data.data_dir={data_dir}",
                f"--coordinator_address={coordinator}",
                "--num_processes=2",
                f"--process_id={i}",
            )
            procs.append((f"process {i}", proc, log))
        log = str(root / "single.log")
        proc = _start(log, _env(4), f"--workdir={one}", f"--config.data.data_dir={data_dir}")
        procs.append(("single process", proc, log))
        codes = _wait_all(procs, RUN_TIMEOUT_S)
    finally:
        _reap(procs)
    for name, _, log in procs:
        assert codes[name] == 0, f"{name} exited {codes[name]}:\n{_tail(log)}"
    return {
        "two": two,
        "one": one,
        "data_dir": data_dir,
        "pids": [p.pid for _, p, _ in procs[:2]],
        "writes": [_written(str(root / f"process_{i}.writes")) for i in range(2)],
        # Read now: the eval-mode test below appends to the two-process metrics.jsonl.
        "train": {w: _records(w, "train") for w in (two, one)},
        "eval": {w: _records(w, "eval") for w in (two, one)},
        "log0": _tail(procs[0][2], 10_000),
        "events": [n for n in os.listdir(two) if n.startswith("events.out.tfevents")],
    }


def _assert_rows_close(got, want, rel):
    assert [r["step"] for r in got] == [r["step"] for r in want]
    for g, w in zip(got, want, strict=True):
        assert set(g) == set(w), w["step"]
        for key, value in w.items():
            if key in ("kind", "clips_per_sec"):
                continue
            assert g[key] == pytest.approx(value, rel=rel, abs=1e-6), (w["step"], key)


def test_two_processes_train_like_one_with_four_devices(runs):
    two, one = runs["two"], runs["one"]
    assert "JAX process 0/2, 2 local devices" in runs["log0"]
    assert "global batch 8 on 4 devices" in runs["log0"]
    train_two, train_one = runs["train"][two], runs["train"][one]
    assert [r["step"] for r in train_two] == list(range(1, TOTAL_STEPS + 1))
    _assert_rows_close(train_two, train_one, rel=1e-4)
    # Training moved: equal losses of a run that never updated would prove little.
    assert train_two[-1]["loss"] < train_two[0]["loss"]
    eval_two, eval_one = runs["eval"][two], runs["eval"][one]
    assert [r["step"] for r in eval_two] == [TOTAL_STEPS]
    _assert_rows_close(eval_two, eval_one, rel=1e-9)


def test_only_process_0_writes_metrics_and_plots(runs):
    two = runs["two"]
    outputs = {os.path.join(two, n) for n in ("metrics.jsonl", "loss.png", "accuracy.png")}
    outputs.add(os.path.join(two, "confusion.png"))
    writes_0, writes_1 = runs["writes"]
    assert (
        outputs <= writes_0
    )  # the hook sees process 0's writes, so its silence on 1 means something.
    not_checkpoints = {p for p in writes_1 if not p.startswith(os.path.join(two, "checkpoints"))}
    assert not not_checkpoints
    events = runs["events"]  # listed before the eval-mode run adds its own (it is a process 0 too).
    assert events and all(f".{runs['pids'][0]}." in n for n in events), (events, runs["pids"])


def test_two_process_checkpoint_restores_in_one_process(runs, tmp_path):
    two, data_dir = runs["two"], runs["data_dir"]
    log = str(tmp_path / "eval.log")
    procs = [
        (
            "eval",
            _start(
                log,
                _env(4),
                f"--workdir={two}",
                f"--config.data.data_dir={data_dir}",
                "--mode=eval",
            ),
            log,
        )
    ]
    try:
        codes = _wait_all(procs, 300)
    finally:
        _reap(procs)
    assert codes["eval"] == 0, _tail(log)
    after = _records(two, "eval")
    # The re-evaluation replaces its step's row (one evaluation row a step) with the same figures.
    assert [r["step"] for r in after] == [r["step"] for r in runs["eval"][two]]
    _assert_rows_close(after[-1:], runs["eval"][two][-1:], rel=1e-9)


def test_two_process_checkpoint_holds_the_one_process_state(runs):
    step = str(TOTAL_STEPS)
    two = _restore_numpy(os.path.join(runs["two"], "checkpoints", step, "state"))
    one = _restore_numpy(os.path.join(runs["one"], "checkpoints", step, "state"))
    assert jax.tree.structure(two) == jax.tree.structure(one)
    # Adam divides by the gradient's own scale, so where a gradient is float noise (its sign set by reduction
    # order) an element may move by up to lr a step either way: a few such elements may differ by up to the sum
    # of the steps' largest learning rate (seen: 1 of 24,576 by 1.7e-4); everything else agrees to 1e-4.
    optim = demo.get_config("tiny").optim
    adam_bound = TOTAL_STEPS * optim.lr * max(1.0, optim.video_lr_mult, optim.text_lr_mult)
    leaves_two = jax.tree.leaves_with_path(two)
    for (path, a), b in zip(leaves_two, jax.tree.leaves(one), strict=True):
        name = jax.tree_util.keystr(path)
        np.testing.assert_allclose(a, b, rtol=0, atol=adam_bound, err_msg=name)
        far = ~np.isclose(a, b, rtol=1e-4, atol=1e-4)
        assert far.sum() <= max(1, far.size // 1000), (name, int(far.sum()), far.size)
