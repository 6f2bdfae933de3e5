r"""One-command accelerator check: `python -m skclip_jax.tools.gpu_check [--cpu] [--dry_run] [--out=FILE]`.

Runs, each stage in its own subprocess with its own time limit, and writes one JSON file of all figures:

  1. ``env``: jax version, devices, and which optional modules are importable;
  2. ``bench``: ``skclip_jax.tools.bench`` at the paper's configuration (UCF-101 sizes, bert-base shapes), float32
     and bfloat16, at batch 32 and at the largest batch that fits (estimated from the batch-32 run's peak device
     memory and the device's memory limit, then run; halved on an out-of-memory error): train and eval clips/s,
     compile time, peak device memory, XLA's FLOPs and the model FLOP utilisation (MFU);
  3. ``pipeline``: the input pipeline alone (ArrayRecord -> grain -> keypoint transforms -> global batch on the
     devices, through ``prefetch.DevicePrefetcher``) in clips/s with 0, 4 and 12 grain workers, and its ratio
     to the device's bf16 train rate (it should be >= 2);
  4. ``train``: a Penn Action training at the paper's sizes for about ``--train_minutes`` (the number of steps
     comes from the measured step rate), with its test top-1.

Stages run in order of value (bench bf16 then fp32 at batch 32, the pipeline, a bf16 training, then the largest
batches and the fp32 training); ``--deadline_minutes`` skips those that would not finish, for a time-limited
device lease. The JSON is rewritten after every stage.

``--cpu`` runs the same stages at tiny sizes on the CPU (the demo's tiny config, MiniLM, a generated synthetic
dataset) so that the script itself is tested anywhere; ``--dry_run`` prints the plan (every stage's command)
as JSON and runs nothing. ``launch/gpu_check.sh`` is the shell entry point.

A stage that cannot run (a missing module such as grain on a bare device image, a missing dataset) is recorded
with its error and the others still run. Without ``--bert_dir`` a bert-base-shaped directory with random
weights is written to a temporary folder (throughput does not depend on the weights).
"""

import argparse
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OPTIONAL_MODULES = (
    "ml_collections",
    "absl",
    "flax",
    "optax",
    "orbax.checkpoint",
    "transformers",
    "grain",
    "tensorflow_datasets",
    "array_record",
    "clu",
)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--cpu", action="store_true", help="tiny sizes on the CPU (tests the script)")
    p.add_argument("--dry_run", action="store_true", help="print the plan as JSON, run nothing")
    p.add_argument("--out", default="gpu_check.json", help="the JSON file of all figures")
    p.add_argument("--bert_dir", default=os.environ.get("SKCLIP_BERT_BASE", ""))
    p.add_argument(
        "--penn_dir", default="data/penn_action", help="converted Penn Action (data_prep)"
    )
    p.add_argument(
        "--vocab",
        default="",
        help="vocab.txt for the random bert-base (default: MiniLM's, which is bert-base-uncased's)",
    )
    p.add_argument("--batch_size", type=int, default=None, help="default: 32 (GPU), 8 (--cpu)")
    p.add_argument(
        "--steps", type=int, default=None, help="timed bench steps; default 10 (GPU), 2 (--cpu)"
    )
    p.add_argument(
        "--workers", default=None, help="grain worker counts; default 0,4,12 (GPU), 0,1 (--cpu)"
    )
    p.add_argument("--pipeline_seconds", type=float, default=None, help="per worker count")
    p.add_argument("--train_minutes", type=float, default=None, help="default 4 (GPU), 0.5 (--cpu)")
    p.add_argument(
        "--skip", default="", help="comma-separated stages to skip: bench,max_batch,pipeline,train"
    )
    p.add_argument("--dtypes", default="bfloat16,float32", help="bench dtypes, in order")
    p.add_argument("--train_dtypes", default="bfloat16,float32", help="training runs, in order")
    p.add_argument(
        "--bench_eval",
        type=int,
        default=1,
        help="1: bench times the eval step too; 0: train figures only (one compile less)",
    )
    p.add_argument("--bench_timeout", type=float, default=300.0, help="seconds per bench stage")
    p.add_argument(
        "--deadline_minutes",
        type=float,
        default=0.0,
        help="skip the stages that would start too close to this many minutes (0: no deadline)",
    )
    p.add_argument("--python", default=sys.executable)
    p.add_argument(
        "--workdir",
        default="",
        help="scratch folder, kept (default: a temporary one, removed at the end)",
    )
    # Internal: one pipeline measurement, run as a subprocess by the pipeline stage.
    p.add_argument("--_pipeline_worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--_config", default="", help=argparse.SUPPRESS)
    p.add_argument("--_data_dir", default="", help=argparse.SUPPRESS)
    p.add_argument("--_num_workers", type=int, default=0, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def defaults(args: argparse.Namespace) -> argparse.Namespace:
    cpu = args.cpu
    args.batch_size = args.batch_size or (8 if cpu else 32)
    args.steps = args.steps or (2 if cpu else 10)
    args.workers = [int(w) for w in (args.workers or ("0,1" if cpu else "0,4,12")).split(",")]
    args.pipeline_seconds = args.pipeline_seconds or (5.0 if cpu else 20.0)
    args.train_minutes = (
        args.train_minutes if args.train_minutes is not None else (0.5 if cpu else 4.0)
    )
    args.skip = {s for s in args.skip.split(",") if s}
    args.dtypes = [d for d in args.dtypes.split(",") if d]
    args.train_dtypes = [d for d in args.train_dtypes.split(",") if d]
    return args


def bench_config(args) -> list[str]:
    """Config flags of the benchmarked model."""
    if args.cpu:
        return ["--config=configs/demo.py:tiny", "--eval_batch_size=8"]
    return [
        "--config=configs/ucf101.py",
        f"--config.model.text.bert_dir={args.bert_dir}",
        "--eval_batch_size=8",
    ]


def bench_command(args, dtype: str, batch: int) -> list[str]:
    return [
        args.python,
        "-m",
        "skclip_jax.tools.bench",
        *bench_config(args),
        f"--config.model.dtype={dtype}",
        f"--batch_size={batch}",
        f"--steps={args.steps}",
        "--eval" if args.bench_eval else "--noeval",
    ]


def pipeline_command(args, workers: int, data_dir: str) -> list[str]:
    config = "configs/demo.py:tiny" if args.cpu else "configs/penn_action.py"
    return [
        args.python,
        "-m",
        "skclip_jax.tools.gpu_check",
        "--_pipeline_worker",
        f"--_config={config}",
        f"--_data_dir={data_dir}",
        f"--_num_workers={workers}",
        f"--batch_size={args.batch_size}",
        f"--pipeline_seconds={args.pipeline_seconds}",
    ]


def train_command(
    args, data_dir: str, steps: int, workdir: str, dtype: str = "bfloat16"
) -> list[str]:
    if args.cpu:
        config = ["--config=configs/demo.py:tiny", f"--config.data.data_dir={data_dir}"]
    else:
        config = [
            "--config=configs/penn_action.py",
            f"--config.data.data_dir={data_dir}",
            f"--config.model.text.bert_dir={args.bert_dir}",
            "--config.data.num_workers=4",
        ]
    config.append(f"--config.model.dtype={dtype}")
    return [
        args.python,
        "-m",
        "skclip_jax.main",
        *config,
        f"--config.total_steps={steps}",
        f"--config.eval_every_steps={steps}",
        f"--config.checkpoint_every_steps={steps}",
        f"--config.log_every_steps={max(1, steps // 10)}",
        f"--workdir={workdir}",
    ]


def _run_session(cmd: list[str], timeout: float) -> tuple[subprocess.CompletedProcess, bool]:
    """Runs ``cmd`` in its own process group with its output in files, then kills the group.

    Files, not pipes: grain's worker processes inherit the output and would keep a pipe open after the
    measured program has exited; the group kill leaves none of them behind (also on a time-out). Returns the
    process's output (also what it printed before a time-out, which says where it was) and whether it timed out.
    """
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(
            cmd, stdout=out, stderr=err, text=True, cwd=REPO, start_new_session=True
        )
        timed_out = False
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
        finally:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()
        out.seek(0)
        err.seek(0)
        return subprocess.CompletedProcess(cmd, proc.returncode, out.read(), err.read()), timed_out


def _progress(stderr: str) -> list[str]:
    """The program's own progress lines (bench and main log them), the last few."""
    marks = ("bench.py", "trainer.py", "main.py")
    return [ln[-300:] for ln in stderr.splitlines() if any(m in ln for m in marks)][-8:]


def run_json(cmd: list[str], timeout: float, log) -> dict:
    """Runs a command that prints one JSON line last; returns it, or the error (with its progress lines)."""
    t0 = time.perf_counter()
    proc, timed_out = _run_session(cmd, timeout)
    wall = time.perf_counter() - t0
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if timed_out:
        log(f"timed out after {timeout:.0f} s: {' '.join(cmd)}")
        # The figures the program printed before the limit (bench prints its train figures before the
        # eval step compiles).
        partial = json.loads(lines[-1]) if lines else {}
        return {
            **partial,
            "error": f"timed out after {timeout:.0f} s",
            "progress": _progress(proc.stderr),
            "command": cmd,
        }
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr or proc.stdout)[-3000:]
        log(f"failed ({proc.returncode}): {' '.join(cmd)}\n{tail}")
        oom = "RESOURCE_EXHAUSTED" in tail or "out of memory" in tail.lower()
        return {"error": tail, "returncode": proc.returncode, "oom": oom, "command": cmd}
    out = json.loads(lines[-1])
    out["wall_s"] = round(wall, 1)
    return out


def environment(python: str) -> dict:
    code = (
        "import importlib.util, json, os, jax\n"
        f"mods = {OPTIONAL_MODULES!r}\n"
        "def have(m):\n"
        "    try:\n"
        "        return importlib.util.find_spec(m) is not None\n"
        "    except ModuleNotFoundError:\n"
        "        return False\n"
        "flax_bert = False\n"
        "try:\n"
        "    from transformers.models.bert.modeling_flax_bert import FlaxBertModule  # noqa\n"
        "    flax_bert = True\n"
        "except Exception:\n"
        "    pass\n"
        "d = jax.devices()\n"
        "print(json.dumps({'jax': jax.__version__, 'backend': jax.default_backend(),\n"
        "  'devices': [x.device_kind for x in d], 'modules': {m: have(m) for m in mods},\n"
        "  'transformers_flax_bert': flax_bert, 'xla_flags': os.environ.get('XLA_FLAGS', '')}))\n"
    )
    return run_json([python, "-c", code], 120, lambda m: None)


def make_random_bert(path: str, vocab: str = "") -> str:
    """A bert-base-shaped directory (config.json, vocab.txt, model.safetensors) with random weights.

    ``vocab``: a bert-base-uncased vocab.txt; default MiniLM's (the same vocabulary), so a device without the
    MiniLM package can be given the 232 kB file alone.
    """
    import numpy as np
    from safetensors.numpy import save_file

    from skclip_jax.models import text

    os.makedirs(path, exist_ok=True)
    vocab = vocab or os.path.join(text.resolve_bert_dir(text.MINILM), "vocab.txt")
    shutil.copy(vocab, os.path.join(path, "vocab.txt"))
    d, inner, layers, v = 768, 3072, 12, 30522
    config = {
        "architectures": ["BertModel"],
        "model_type": "bert",
        "hidden_size": d,
        "num_hidden_layers": layers,
        "num_attention_heads": 12,
        "intermediate_size": inner,
        "vocab_size": v,
        "max_position_embeddings": 512,
        "type_vocab_size": 2,
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.1,
        "attention_probs_dropout_prob": 0.1,
        "layer_norm_eps": 1e-12,
        "pad_token_id": 0,
        "position_embedding_type": "absolute",
    }
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
    rng = np.random.default_rng(0)

    def normal(*shape):
        return (rng.standard_normal(shape, np.float32) * 0.02).astype(np.float32)

    ones, zeros = (lambda n: np.ones(n, np.float32)), (lambda n: np.zeros(n, np.float32))
    t = {
        "embeddings.word_embeddings.weight": normal(v, d),
        "embeddings.position_embeddings.weight": normal(512, d),
        "embeddings.token_type_embeddings.weight": normal(2, d),
        "embeddings.LayerNorm.weight": ones(d),
        "embeddings.LayerNorm.bias": zeros(d),
    }
    for i in range(layers):
        p = f"encoder.layer.{i}."
        for k in ("query", "key", "value"):
            t[p + f"attention.self.{k}.weight"] = normal(d, d)
            t[p + f"attention.self.{k}.bias"] = zeros(d)
        t[p + "attention.output.dense.weight"] = normal(d, d)
        t[p + "attention.output.dense.bias"] = zeros(d)
        t[p + "attention.output.LayerNorm.weight"] = ones(d)
        t[p + "attention.output.LayerNorm.bias"] = zeros(d)
        t[p + "intermediate.dense.weight"] = normal(inner, d)
        t[p + "intermediate.dense.bias"] = zeros(inner)
        t[p + "output.dense.weight"] = normal(d, inner)
        t[p + "output.dense.bias"] = zeros(d)
        t[p + "output.LayerNorm.weight"] = ones(d)
        t[p + "output.LayerNorm.bias"] = zeros(d)
    save_file(t, os.path.join(path, "model.safetensors"), metadata={"format": "pt"})
    return path


def largest_batch(bench: dict, batch: int, multiple: int) -> int | None:
    """The largest batch (a multiple of ``multiple``) whose peak device memory should stay under 90 % of
    the limit, extrapolating linearly from one run at ``batch``; None without device memory figures."""
    peak = bench.get("peak_memory_mb")
    limit = bench.get("device_memory_limit_mb")
    state = bench.get("train_argument_mb", 0.0)
    if not peak or not limit or bench.get("peak_memory_kind", "").startswith("host"):
        return None
    per_clip = max(peak - state, 1.0) / batch
    best = int((0.9 * limit - state) / per_clip)
    return max(multiple, best // multiple * multiple)


def pipeline_worker(args) -> None:
    """Times train_iterator + DevicePrefetcher alone: global batches per second, after a warm-up batch."""
    import importlib

    import jax
    from absl import flags

    from skclip_jax import input_pipeline, prefetch, sharding

    # grain's worker processes read absl flags (as `main` has parsed them); this program uses argparse.
    flags.FLAGS.mark_as_parsed()

    module, _, variant = args._config.partition(":")
    config = importlib.import_module(module.replace("/", ".").removesuffix(".py")).get_config(
        variant or None
    )
    config.data.data_dir = args._data_dir
    config.data.num_workers = args._num_workers
    config.batch_size = args.batch_size
    info = input_pipeline.load_dataset_info(config.data.data_dir)
    mesh = sharding.make_mesh((-1, 1))
    total = 100_000
    local = input_pipeline.train_iterator(info, config, 0, total)
    batches = prefetch.DevicePrefetcher(local, mesh, size=2)
    t0 = time.perf_counter()
    jax.block_until_ready(next(batches))
    first = time.perf_counter() - t0
    n = 0
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < args.pipeline_seconds:
        jax.block_until_ready(next(batches))
        n += 1
    wall = time.perf_counter() - t0
    batches.close()
    print(
        json.dumps(
            {
                "num_workers": args._num_workers,
                "batch_size": args.batch_size,
                "batches": n,
                "clips_per_sec": round(n * args.batch_size / wall, 2),
                "first_batch_s": round(first, 2),
            }
        ),
        flush=True,
    )
    # grain's worker processes: stop them and leave without waiting for the rest of the (long) iterator.
    import multiprocessing

    for child in multiprocessing.active_children():
        child.kill()
    os._exit(0)


def stage_names(args) -> list[str]:
    """The stages in the order they run: the figures that matter most first, so that a run cut by
    ``--deadline_minutes`` (or a device lease) still has them."""
    b = args.batch_size
    names = ["env"]
    if "bench" not in args.skip:
        names += [f"bench_{d}_b{b}" for d in args.dtypes]
    if "pipeline" not in args.skip:
        names += [f"pipeline_workers_{w}" for w in args.workers]
    trains = [] if "train" in args.skip else [f"train_{d}" for d in args.train_dtypes]
    big = (
        [] if {"bench", "max_batch"} & args.skip else [f"bench_{d}_max_batch" for d in args.dtypes]
    )
    return names + trains[:1] + big[:1] + trains[1:] + big[1:]


def data_dir_of(args, scratch: str) -> str:
    return os.path.join(scratch, "synthetic") if args.cpu else args.penn_dir


def plan(args, scratch: str) -> list[dict]:
    """Every stage with its command (the largest batch and the training steps are decided at run time)."""
    data_dir = data_dir_of(args, scratch)
    stages = []
    for name in stage_names(args):
        kind, _, rest = name.partition("_")
        if kind == "bench":
            dtype, _, size = rest.partition("_")
            batch = (
                f"<from the batch-{args.batch_size} run's memory>"
                if size == "max_batch"
                else args.batch_size
            )
            cmd = bench_command(args, dtype, batch)
            stages.append({"stage": name, "command": cmd})
        elif kind == "pipeline":
            workers = int(rest.rpartition("_")[2])
            stages.append({"stage": name, "command": pipeline_command(args, workers, data_dir)})
        elif kind == "train":
            cmd = train_command(args, data_dir, 0, os.path.join(scratch, name), rest)[:-5]
            cmd.append(f"--config.total_steps=<{args.train_minutes} min at the measured step rate>")
            stages.append({"stage": name, "command": cmd})
        else:
            stages.append({"stage": name})
    return stages


def _synthetic_dataset(data_dir: str) -> None:
    if not os.path.isdir(data_dir):
        from data_prep import synthetic

        synthetic.make_synthetic_dataset(
            data_dir, num_train_per_class=4, num_test_per_class=2, num_classes=4, num_frames=20
        )


def train_stage(args, data_dir: str, dtype: str, workdir: str, bench: dict, timeout: float, log):
    """A short training run; its steps come from the bench's step rate in the same dtype."""
    rate = bench.get(f"{dtype}_b{args.batch_size}", {}).get("train_clips_per_sec")
    if args.cpu:
        steps = 4
    elif rate:
        # Penn Action's config trains at its own batch size (32, as the bench).
        steps = max(10, int(args.train_minutes * 60 * rate / args.batch_size))
    else:
        steps = 200
    shutil.rmtree(workdir, ignore_errors=True)
    cmd = train_command(args, data_dir, steps, workdir, dtype)
    log(f"train {steps} steps: {' '.join(cmd)}")
    t0 = time.perf_counter()
    proc, timed_out = _run_session(cmd, timeout)
    out = {"returncode": proc.returncode, "steps": steps, "dtype": dtype}
    if timed_out:
        out["error"] = f"timed out after {timeout:.0f} s"
        out["progress"] = _progress(proc.stderr)
    elif proc.returncode != 0:
        out["error"] = proc.stderr[-3000:]
    out["wall_s"] = round(time.perf_counter() - t0, 1)
    from skclip_jax import metrics_io

    # read_metrics skips the partial last line a run killed at its time limit can leave.
    rows = metrics_io.read_metrics(workdir)
    evals = [r for r in rows if "top1" in r]
    trains = [r for r in rows if "clips_per_sec" in r]
    if evals:
        out["top1"] = evals[-1]["top1"]
        out["mean_class_accuracy"] = evals[-1].get("mean_class_accuracy")
    if trains:
        out["train_clips_per_sec_logged"] = trains[-1]["clips_per_sec"]
    return out


def main(argv=None) -> int:
    args = defaults(parse_args(argv))
    if args._pipeline_worker:
        pipeline_worker(args)
        return 0
    # A dry run creates nothing: its plan names the folder a run would make.
    if args.workdir or args.dry_run:
        return run(args, args.workdir or os.path.join(tempfile.gettempdir(), "gpu_check_scratch"))
    # The default scratch (a random BERT of 420 MB, a synthetic dataset, the train stages' workdirs) is removed
    # at the end; the figures are in --out.
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as scratch:
        return run(args, scratch)


def run(args, scratch: str) -> int:
    """Runs the stages with ``scratch`` as the working folder (or prints their plan, with --dry_run)."""
    if not args.cpu and not args.bert_dir:
        args.bert_dir = os.path.join(scratch, "bert_base_random")
    if args.dry_run:
        print(
            json.dumps({"cpu": args.cpu, "out": args.out, "stages": plan(args, scratch)}, indent=1)
        )
        return 0

    def log(msg):
        print(f"[gpu_check {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)

    t_start = time.perf_counter()
    deadline = t_start + args.deadline_minutes * 60 if args.deadline_minutes else math.inf
    result: dict = {"cpu_mode": args.cpu, "started": time.strftime("%Y-%m-%dT%H:%M:%S")}
    bench = result.setdefault("bench", {})
    pipe = result.setdefault("pipeline", {})
    train = result.setdefault("train", {})
    result["skipped"] = []
    data_dir = data_dir_of(args, scratch)

    def save():
        result["wall_s"] = round(time.perf_counter() - t_start, 1)
        tmp = args.out + ".tmp"
        with open(tmp, "w") as f:
            json.dump(result, f, indent=1)
        os.replace(tmp, args.out)

    def time_left(limit: float, needed: float) -> float | None:
        """The stage's time limit within the deadline, or None when less than ``needed`` is left."""
        left = deadline - time.perf_counter()
        return None if left < needed else min(limit, left)

    result["env"] = environment(args.python)
    log(f"env: {result['env']}")
    save()
    if not args.cpu and not os.path.isdir(args.bert_dir):
        log(f"writing a bert-base-shaped random BERT to {args.bert_dir}")
        make_random_bert(args.bert_dir, args.vocab)
    if args.cpu and ("pipeline" not in args.skip or "train" not in args.skip):
        _synthetic_dataset(data_dir)

    multiple = max(1, len(result["env"].get("devices", [None])))
    for name in stage_names(args)[1:]:
        kind, _, rest = name.partition("_")
        limit = {"bench": args.bench_timeout, "pipeline": 120 + args.pipeline_seconds}.get(
            kind, args.train_minutes * 60 * 2 + 300
        )
        timeout = time_left(limit, needed=min(limit, 60 if kind != "pipeline" else 30))
        if timeout is None:
            log(f"{name}: skipped, the deadline is near")
            result["skipped"].append(name)
            save()
            continue
        if kind == "bench" and rest.endswith("_max_batch"):
            dtype = rest.partition("_")[0]
            base = bench.get(f"{dtype}_b{args.batch_size}", {})
            # No device memory figures on the CPU: there the stage is only exercised, at twice the batch.
            big = (
                2 * args.batch_size
                if args.cpu
                else largest_batch(base, args.batch_size, 8 * multiple)
            )
            tries = 0
            while big and big > args.batch_size and tries < 3 and timeout:
                log(f"bench {dtype} at batch {big}")
                out = run_json(bench_command(args, dtype, big), timeout, log)
                tries += 1
                if out.get("oom"):
                    big = big // 2 // (8 * multiple) * (8 * multiple)
                    timeout = time_left(limit, needed=60)
                    continue
                bench[f"{dtype}_max_batch"] = out
                break
        elif kind == "bench":
            dtype = rest.partition("_")[0]
            log(f"bench {rest}")
            bench[rest] = run_json(bench_command(args, dtype, args.batch_size), timeout, log)
        elif kind == "pipeline":
            workers = int(rest.rpartition("_")[2])
            log(f"pipeline with {workers} workers")
            pipe[rest] = run_json(pipeline_command(args, workers, data_dir), timeout, log)
            device_rate = bench.get(f"bfloat16_b{args.batch_size}", {}).get(
                "train_clips_per_sec"
            ) or bench.get(f"float32_b{args.batch_size}", {}).get("train_clips_per_sec")
            if device_rate:
                result["host_over_device"] = {
                    k.rpartition("_")[2]: round(v["clips_per_sec"] / device_rate, 2)
                    for k, v in pipe.items()
                    if v.get("clips_per_sec")
                }
        elif kind == "train":
            train[rest] = train_stage(
                args, data_dir, rest, os.path.join(scratch, name), bench, timeout, log
            )
        save()

    summary = {}
    for name, b in bench.items():
        if "train_clips_per_sec" in b:
            summary[name] = {
                k: b.get(k)
                for k in (
                    "batch_size",
                    "train_clips_per_sec",
                    "eval_clips_per_sec",
                    "train_compile_s",
                    "peak_memory_mb",
                    "train_mfu",
                )
            }
    for name, t in train.items():
        summary[f"train_{name}"] = {k: t.get(k) for k in ("steps", "top1", "wall_s")}
    result["summary"] = summary
    save()
    log(f"wrote {args.out} after {math.ceil(time.perf_counter() - t_start)} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
