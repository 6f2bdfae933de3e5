"""The launch scripts' --dry_run output: the exact training command each would run."""

import json
import os
import shlex
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN_ARGS = ["--config=configs/ntu60.py:xsub,cpu", "--workdir=/shared/runs/a b"]


def run(script: str, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", os.path.join(REPO, "launch", script), *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        cwd=REPO,
        timeout=30,
    )


def test_gpu_single_host_dry_run():
    out = run("gpu_single_host.sh", "--dry_run", "--gpus=0,1", "--", *TRAIN_ARGS)
    assert out.returncode == 0, out.stderr
    argv = shlex.split(out.stdout)
    assert argv == [
        "env",
        f"PYTHONPATH={REPO}"
        + (f":{os.environ['PYTHONPATH']}" if os.environ.get("PYTHONPATH") else ""),
        "CUDA_VISIBLE_DEVICES=0,1",
        os.environ.get("PYTHON", "python"),
        "-m",
        "skclip_jax.main",
        *TRAIN_ARGS,
    ]


@pytest.fixture
def fake_slurm(tmp_path):
    """A SLURM job's environment, with a fake scontrol that expands the node list."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    scontrol = bin_dir / "scontrol"
    scontrol.write_text('#!/bin/sh\n[ "$3" = "gpu[07-08]" ] && printf "gpu07\\ngpu08\\n"\n')
    scontrol.chmod(0o755)
    return {
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "SLURM_JOB_ID": "4242",
        "SLURM_JOB_NODELIST": "gpu[07-08]",
        "SLURM_NNODES": "2",
        "SLURM_GPUS_ON_NODE": "4",
        "SLURM_SUBMIT_DIR": REPO,
    }


def _srun_task(stdout: str) -> tuple[list[str], list[str], dict[str, str]]:
    """Splits `srun ... bash -c TASK` into srun flags, the training argv and the exported env."""
    argv = shlex.split(stdout)
    assert argv[0] == "srun" and argv[-3:-1] == ["bash", "-c"], argv
    exports, command = argv[-1].split(" && exec ")
    assert exports.startswith("export ")
    env = dict(kv.split("=", 1) for kv in exports[len("export ") :].split())
    return argv[1:-3], shlex.split(command), env


@pytest.mark.parametrize("per_gpu", [False, True])
def test_slurm_dry_run(fake_slurm, per_gpu):
    flags = ["--per_gpu"] if per_gpu else []
    out = run("slurm_multinode.sbatch", "--dry_run", *flags, "--", *TRAIN_ARGS, env=fake_slurm)
    assert out.returncode == 0, out.stderr
    srun_flags, command, env = _srun_task(out.stdout)
    processes = 8 if per_gpu else 2
    assert srun_flags[:3] == [
        "--nodes=2",
        f"--ntasks={processes}",
        f"--ntasks-per-node={4 if per_gpu else 1}",
    ]
    assert command == [
        os.environ.get("PYTHON", "python"),
        "-m",
        "skclip_jax.main",
        *TRAIN_ARGS,
        f"--coordinator_address=gpu07:{20000 + 4242}",
        f"--num_processes={processes}",
        "--process_id=$SLURM_PROCID",  # single-quoted: expanded by each task, not the batch script.
    ]
    assert env["JAX_LOCAL_DEVICE_IDS"] == ("$SLURM_LOCALID" if per_gpu else "0,1,2,3")
    assert env["PYTHONPATH"].startswith(REPO)


def test_slurm_overrides_and_errors(fake_slurm):
    env = {**fake_slurm, "MASTER_ADDR": "head", "SLURM_GPUS_ON_NODE": ""}
    out = run(
        "slurm_multinode.sbatch",
        "--dry_run",
        "--gpus_per_node=2",
        "--port=1234",
        "--",
        "--x=1",
        env=env,
    )
    assert out.returncode == 0, out.stderr
    _, command, exported = _srun_task(out.stdout)
    assert "--coordinator_address=head:1234" in command
    assert exported["JAX_LOCAL_DEVICE_IDS"] == "0,1"
    # Outside a SLURM job it refuses, saying why.
    bare = {k: "" for k in fake_slurm if k.startswith("SLURM_")}
    out = run("slurm_multinode.sbatch", "--dry_run", "--", "--x=1", env=bare)
    assert out.returncode != 0 and "SLURM" in out.stderr


def test_tpu_vm_dry_run():
    out = run(
        "tpu_vm.sh",
        "--dry_run",
        "--tpu=skclip-v4",
        "--zone=us-central2-b",
        "--project=p1",
        "--",
        *TRAIN_ARGS,
        "--config.data.prompt_template=it's {}",
    )
    assert out.returncode == 0, out.stderr
    argv = shlex.split(out.stdout)
    assert argv[:9] == [
        "gcloud", "compute", "tpus", "tpu-vm", "ssh", "skclip-v4",
        "--zone=us-central2-b", "--project=p1", "--worker=all",
    ]  # fmt: skip
    assert argv[9].startswith("--command=") and len(argv) == 10
    remote = argv[9][len("--command=") :]
    prefix = "cd ~/skclip_jax && PYTHONPATH=~/skclip_jax "
    assert remote.startswith(prefix)
    # The remote shell sees the training flags intact, spaces and quotes included.
    assert shlex.split(remote[len(prefix) :]) == [
        "python3", "-m", "skclip_jax.main", *TRAIN_ARGS, "--config.data.prompt_template=it's {}",
    ]  # fmt: skip


@pytest.mark.parametrize(
    "script, args",
    [
        ("gpu_single_host.sh", ["--dry_run"]),  # no training flags
        ("gpu_single_host.sh", ["--bogus", "--", "--x=1"]),
        ("tpu_vm.sh", ["--dry_run", "--", "--x=1"]),  # no --tpu/--zone
        ("slurm_multinode.sbatch", ["--dry_run"]),
    ],
)
def test_usage_errors(script, args):
    out = run(script, *args)
    assert out.returncode == 2
    assert "Usage" in out.stdout + out.stderr and "error:" in out.stderr


@pytest.mark.parametrize("script", ["gpu_single_host.sh", "slurm_multinode.sbatch", "tpu_vm.sh"])
def test_help_and_strict_mode(script):
    out = run(script, "--help")
    assert out.returncode == 0 and "Usage" in out.stdout and "--dry_run" in out.stdout
    with open(os.path.join(REPO, "launch", script)) as f:
        assert "set -euo pipefail" in f.read()


def test_gpu_check_cpu_dry_run(tmp_path):
    """launch/gpu_check.sh --cpu --dry_run prints every stage's command and runs nothing."""
    out_file = tmp_path / "check.json"
    temp = tmp_path / "temp"
    temp.mkdir()
    out = run(
        "gpu_check.sh",
        "--cpu",
        "--dry_run",
        f"--out={out_file}",
        env={"PYTHON": os.environ.get("PYTHON", sys.executable), "TMPDIR": str(temp)},
    )
    assert out.returncode == 0, out.stderr
    plan = json.loads(out.stdout)
    assert plan["cpu"] is True and plan["out"] == str(out_file)
    stages = [s["stage"] for s in plan["stages"]]
    # The figures that matter most first, so that a run cut short (--deadline_minutes) still has them.
    assert stages == [
        "env",
        "bench_bfloat16_b8",
        "bench_float32_b8",
        "pipeline_workers_0",
        "pipeline_workers_1",
        "train_bfloat16",
        "bench_bfloat16_max_batch",
        "train_float32",
        "bench_float32_max_batch",
    ]
    bench = plan["stages"][1]["command"]
    assert (
        bench[1:3] == ["-m", "skclip_jax.tools.bench"] and "--config=configs/demo.py:tiny" in bench
    )
    assert not out_file.exists() and not any(
        temp.iterdir()
    )  # a dry run writes nothing, not even scratch


def test_gpu_check_gpu_plan_uses_paper_sizes():
    out = run("gpu_check.sh", "--dry_run", "--bert_dir=/b", env={"PYTHON": sys.executable})
    assert out.returncode == 0, out.stderr
    plan = json.loads(out.stdout)
    stages = {s["stage"]: s.get("command") for s in plan["stages"]}
    assert "--config=configs/ucf101.py" in stages["bench_bfloat16_b32"]
    assert "--config.model.text.bert_dir=/b" in stages["bench_bfloat16_b32"]
    assert [k for k in stages if k.startswith("pipeline")] == [
        "pipeline_workers_0",
        "pipeline_workers_4",
        "pipeline_workers_12",
    ]
    assert "--config=configs/penn_action.py" in stages["train_bfloat16"]
    assert "--config.model.dtype=float32" in stages["train_float32"]


def test_gpu_check_stage_output_survives_children_and_time_outs():
    """A measured program whose child keeps the output open (grain's workers) returns at once, and one that
    times out keeps its progress lines; no process of either is left behind."""
    import time

    from skclip_jax.tools import gpu_check

    child = (
        "import subprocess, sys\n"
        "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        "print(json.dumps({'ok': 1}))"
    )
    started = time.perf_counter()
    out = gpu_check.run_json([sys.executable, "-c", "import json\n" + child], 30, lambda m: None)
    assert out["ok"] == 1 and time.perf_counter() - started < 20
    slow = (
        "import sys, time\n"
        "print('I bench.py] compiling the train step', file=sys.stderr, flush=True)\n"
        "time.sleep(60)"
    )
    out = gpu_check.run_json([sys.executable, "-c", slow], 3, lambda m: None)
    assert (
        out["error"].startswith("timed out") and "compiling the train step" in out["progress"][-1]
    )


def test_gpu_check_keeps_figures_printed_before_a_time_out():
    """bench prints its train figures before the eval step compiles; a stage cut there keeps them."""
    from skclip_jax.tools import gpu_check

    slow = (
        "import json, time\n"
        "print(json.dumps({'train_clips_per_sec': 12.5, 'partial': 'train figures only'}), flush=True)\n"
        "time.sleep(60)"
    )
    out = gpu_check.run_json([sys.executable, "-c", slow], 3, lambda m: None)
    assert out["error"].startswith("timed out") and out["train_clips_per_sec"] == 12.5


def test_gpu_check_bench_eval_switch():
    out = run("gpu_check.sh", "--dry_run", "--bench_eval=0", env={"PYTHON": sys.executable})
    assert out.returncode == 0, out.stderr
    stages = {s["stage"]: s.get("command") for s in json.loads(out.stdout)["stages"]}
    assert (
        "--noeval" in stages["bench_bfloat16_b32"]
        and "--noeval" in stages["bench_float32_max_batch"]
    )


def test_bench_class_names_pad_as_the_peer_or_to_the_asked_length():
    """bench's names reach data.max_text_len as the peer's prompts do, so both sides pad to one length."""
    from skclip_jax import class_texts
    from skclip_jax.models import text
    from skclip_jax.tools import bench

    tokenizer, _ = text.load_tokenizer(text.resolve_bert_dir("minilm"))
    for tokens, expected in ((0, range(3, 11)), (5, [5])):
        names = [[n] for n in bench.class_names(101, tokens, 10)]
        assert sorted(set(class_texts.token_lengths(tokenizer, names))) == list(expected)
        assert class_texts.padded_length(tokenizer, names, 10) == max(expected)
