r"""Step throughput benchmark: `python -m skclip_jax.tools.bench --config=configs/ucf101.py:cpu [--batch_size=N]`.

Prints one JSON line: train-step and eval clips/s on random keypoint batches of the config's shapes (so the input
pipeline is not measured), compile times apart, peak memory, the device kind, and model FLOPs a step with MFU where
the device's peak is known. Not a test: run it on the machine whose figures you want.

  --profile     also time every part of the train step on its own (`bench_profile`): rendering, the backbone
                forward / backward and each of its distinct convolutions and BatchNorms, the BERT text and
                fusion passes, the optimizer; a table goes to stderr, the figures into the JSON line.
  --notrain_step  with --profile: the parts alone, without compiling the whole step (minutes on a GPU).
  --trace_dir=DIR a jax.profiler trace of two train steps; `python -m skclip_jax.tools.trace_summary DIR` lists the
                heaviest kernels (how the GPU's slow convolutions without autotuning were found).
  --present_persons=N  only the first N persons of each random clip have keypoints, the rest are padding (as
                one-person clips in a two-person config): what the patch stem's skipping gains on such data.
  --peer=FILE   the PyTorch peer's JSON (`../shared/peer/peer_torch.py`'s output): prints both sides' figures
                at this batch size side by side (a Markdown table on stderr, `peer` and `ratio` in the JSON).
                The peer's eval step is B single-view 56x56 clips; compare with
                `--eval_batch_size=8 --config.data.num_test_clips=1 --config.data.test_size=56`.
"""

import json
import os
import resource
import sys
import time

from absl import app, flags, logging
from ml_collections import config_flags

from skclip_jax import host_memory

# The schedule's run length: only the learning rate's value at the measured steps depends on it.
BENCH_RUN_STEPS = 1000

_CONFIG = config_flags.DEFINE_config_file(
    "config", "configs/demo.py", "Config file.", lock_config=False
)
_BATCH = flags.DEFINE_integer(
    "batch_size", None, "Global train batch (default: config.batch_size)."
)
_EVAL_BATCH = flags.DEFINE_integer(
    "eval_batch_size", None, "Global eval batch (default: config's)."
)
_STEPS = flags.DEFINE_integer("steps", 10, "Timed steps after the compile step.")
_NUM_CLASSES = flags.DEFINE_integer("num_classes", 101, "Number of class prompts.")
_PROMPT_TOKENS = flags.DEFINE_integer(
    "prompt_tokens",
    0,
    "Tokens of every class name, [CLS] and [SEP] included; 0: 3 to data.max_text_len, cycling, as the PyTorch "
    "peer's synthetic names (so both sides pad to the same length).",
)
_PRESENT_PERSONS = flags.DEFINE_integer(
    "present_persons",
    None,
    "Persons with keypoints in every random clip (default: all data.num_persons); the rest are padding, zero "
    "coordinates and scores, as the input pipeline pads a clip with fewer persons (most clips of UCF-101, "
    "HMDB-51 and NTU's one-person classes). The patch stem skips what is padding in the whole batch.",
)
_EVAL = flags.DEFINE_bool(
    "eval", True, "Also time the eval step (--noeval: the train figures alone, one compile less)."
)
_PROFILE = flags.DEFINE_bool(
    "profile", False, "Time the parts of the train step (see bench_profile)."
)
_PROFILE_LAYERS = flags.DEFINE_bool(
    "profile_layers", True, "With --profile, also time each distinct conv and BatchNorm alone."
)
_PROFILE_REPS = flags.DEFINE_integer("profile_reps", 2, "With --profile, timed runs per part.")
_TRAIN_STEP = flags.DEFINE_bool(
    "train_step",
    True,
    "Compile and time the whole train step (--notrain_step with --profile: the parts alone, one long compile "
    "less).",
)
_TRACE_DIR = flags.DEFINE_string(
    "trace_dir",
    None,
    "Write a jax.profiler trace of two train steps (after the timed ones) here; summarise it with "
    "`python -m skclip_jax.tools.trace_summary DIR`.",
)
_ALTERNATE = flags.DEFINE_multi_string(
    "alternate",
    [],
    "KEY=VALUE config fields of a variant B (repeatable, e.g. model.slowonly.low_memory=True): after the timed "
    "steps, both train steps are compiled in this process and their steps alternated, A B B A ... "
    "(skclip_jax/tools/bench_alternate.py); prints each one's median step time.",
)
_ALTERNATE_ROUNDS = flags.DEFINE_integer(
    "alternate_rounds", 4, "With --alternate, timed steps per variant."
)
_PEER = flags.DEFINE_string("peer", None, "The PyTorch peer's result JSON, printed side by side.")
_PEER_ALLOCATOR = flags.DEFINE_string(
    "peer_allocator", "jemalloc", "Which of the peer's allocator rows to compare with."
)


def class_names(num_classes: int, tokens: int, max_text_len: int) -> list[str]:
    """Names of ``tokens`` tokens with [CLS] and [SEP] (one word-piece each), or of 3 to ``max_text_len``
    tokens, cycling, when ``tokens`` is 0 (the peer draws 1 to 8 words for its length-10 prompts)."""
    words = ("action", "person", "hand", "jump", "walk", "run", "kick", "wave")
    lengths = [
        tokens - 2 if tokens else 1 + i % max(1, max_text_len - 2) for i in range(num_classes)
    ]
    return [" ".join(words[(i + j) % len(words)] for j in range(n)) for i, n in enumerate(lengths)]


def random_batch(rng, batch, views, config, size, num_classes, present_persons=None):
    """Random keypoints of the config's shapes; the persons after the first ``present_persons`` are padding."""
    import numpy as np

    lead = (batch,) if views is None else (batch, views)
    shape = lead + (config.data.num_persons, config.data.clip_len, config.data.num_keypoints)
    out = {
        "keypoint": rng.uniform(0, size, shape + (2,)).astype(np.float32),
        "keypoint_score": rng.uniform(0, 1, shape).astype(np.float32),
        "label": rng.integers(0, num_classes, batch).astype(np.int32),
    }
    if present_persons is not None:
        out["keypoint"][..., present_persons:, :, :, :] = 0.0
        out["keypoint_score"][..., present_persons:, :, :] = 0.0
    if views is not None:
        out["mask"] = np.ones(batch, bool)
    return out


# Dense peak FLOP/s per device (vendor data sheets; fp32 matmuls run as TF32 on GPUs by default).
_PEAK_TFLOPS = {
    ("H100", "bfloat16"): 989.4,
    ("H100", "float32"): 494.7,
    ("H200", "bfloat16"): 989.4,
    ("H200", "float32"): 494.7,
    ("A100", "bfloat16"): 312.0,
    ("A100", "float32"): 156.0,
    ("L4", "bfloat16"): 121.0,
    ("L4", "float32"): 60.0,
    ("TPU v4", "bfloat16"): 275.0,
    ("TPU v5 lite", "bfloat16"): 197.0,
    ("TPU v5p", "bfloat16"): 459.0,
}


def device_peak_flops(device, dtype: str) -> float | None:
    """The device's dense peak FLOP/s for ``dtype`` from ``_PEAK_TFLOPS``; None when unknown (CPUs)."""
    kind = device.device_kind
    for (name, dt), tflops in _PEAK_TFLOPS.items():
        if name in kind and dt == dtype:
            return tflops * 1e12
    return None


def executable_figures(prefix: str, lowered, compiled, step_s: float) -> dict:
    """FLOPs and buffer sizes of a step.

    FLOPs come from XLA's cost analysis of the *lowered* (backend-independent) program: after compilation for a
    GPU, convolutions are cuDNN custom calls that the compiled program's analysis counts as zero (on the H200 it
    reported 630 of the bf16 step's 3,641 GFLOP at B=32), which would make MFU meaningless. Buffer sizes come from the
    compiled executable's memory analysis.
    """
    from skclip_jax.tools import bench_profile

    out = {}
    try:
        flops = bench_profile.cost(lowered)["flops"]
        out[f"{prefix}_step_gflop"] = round(flops / 1e9, 1)
        out[f"{prefix}_achieved_gflop_per_s"] = round(flops / 1e9 / step_s, 1)
    except Exception as e:  # not every backend implements it
        out[f"{prefix}_cost_analysis_error"] = repr(e)
    try:
        out[f"{prefix}_compiled_step_gflop"] = round(bench_profile.cost(compiled)["flops"] / 1e9, 1)
    except Exception:
        pass
    try:
        mem = compiled.memory_analysis()
        out[f"{prefix}_temp_mb"] = round(mem.temp_size_in_bytes / 2**20, 1)
        out[f"{prefix}_argument_mb"] = round(mem.argument_size_in_bytes / 2**20, 1)
        out[f"{prefix}_output_mb"] = round(mem.output_size_in_bytes / 2**20, 1)
    except Exception as e:
        out[f"{prefix}_memory_analysis_error"] = repr(e)
    return out


def _cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system


def peak_rss_bytes() -> int:
    """This process's peak resident set size (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def load_peer(path: str, batch: int, allocator: str) -> dict:
    """The peer's figures at ``batch`` from its JSON (``train_eval[allocator][str(batch)]``)."""
    with open(path) as f:
        peer = json.load(f)
    rows = peer.get("train_eval", {})
    if allocator not in rows:
        raise ValueError(f"{path}: no {allocator!r} rows; has {sorted(rows)}")
    if str(batch) not in rows[allocator]:
        raise ValueError(
            f"{path}: no batch size {batch} under {allocator!r}; has {sorted(rows[allocator], key=int)}"
        )
    r = rows[allocator][str(batch)]
    return {
        "source": os.path.abspath(path),
        "allocator": allocator,
        "cpu": peer.get("cpu"),
        "torch": peer.get("versions", {}).get("torch"),
        "batch_size": batch,
        "train_clips_per_sec": r["train_clips_per_s"],
        "train_step_s": r["train_step_s_median"],
        "eval_clips_per_sec": batch / r["eval_step_s_median"],
        "eval_step_s": r["eval_step_s_median"],
        "peak_rss_mb": max(r["peak_rss_train_mib"], r.get("peak_rss_after_eval_mib", 0.0)),
        "train_step_gflop": r["train_step_flops"] / 1e9,
    }


def side_by_side(ours: dict, peer: dict) -> str:
    """A Markdown table of both sides' figures (docs/benchmarks.md "Beside the PyTorch original")."""
    rows = [
        ("train clips/s", "train_clips_per_sec", "{:.2f}"),
        ("train step s", "train_step_s", "{:.2f}"),
        ("eval clips/s", "eval_clips_per_sec", "{:.2f}"),
        ("eval step s", "eval_step_s", "{:.2f}"),
        ("peak RSS MiB", "peak_rss_mb", "{:.0f}"),
    ]
    lines = [
        f"| B={ours['batch_size']} | skclip_jax ({ours['device_kind']}) | PyTorch peer "
        f"({peer['torch']}, {peer['allocator']}) | ratio |",
        "|---|---|---|---|",
    ]
    for label, key, fmt in rows:
        a, b = ours.get(key), peer.get(key)
        ratio = f"{a / b:.2f}" if a and b else ""
        cells = [fmt.format(x) if x is not None else "-" for x in (a, b)]
        lines.append(f"| {label} | {cells[0]} | {cells[1]} | {ratio} |")
    return "\n".join(lines)


def peak_memory_bytes(device) -> tuple[int | None, str]:
    stats = device.memory_stats() if hasattr(device, "memory_stats") else None
    if stats and "peak_bytes_in_use" in stats:
        return int(stats["peak_bytes_in_use"]), "device peak_bytes_in_use"
    return peak_rss_bytes(), "host max RSS (CPU backend)"


def _time_train_step(result, steps, state, batches, class_tokens, key, batch):
    """Compiles the train step ahead of time (so compile time, XLA's cost analysis and its memory analysis
    come from the very executable that is timed), times it into ``result``; returns the new state and the
    executable."""
    import jax

    logging.info("compiling the train step (batch %d, %s)", batch, result["dtype"])
    t0, c0 = time.perf_counter(), _cpu_seconds()
    train_lowered = steps.train.lower(state, batches[0], class_tokens, key)
    train_exec = train_lowered.compile()
    host_memory.release_free_heap()  # as the trainer does after its first step
    train_compile_s = time.perf_counter() - t0
    train_compile_cpu_s = _cpu_seconds() - c0
    logging.info("train step compiled in %.1f s; timing %d steps", train_compile_s, _STEPS.value)
    t0 = time.perf_counter()
    state, metrics = train_exec(state, batches[0], class_tokens, key)
    jax.block_until_ready(metrics)
    train_first_s = time.perf_counter() - t0
    logging.info("first train step ran in %.2f s", train_first_s)
    t0, c0 = time.perf_counter(), _cpu_seconds()
    await_each_step = host_memory.one_step_at_a_time(jax.default_backend())  # as the trainer does
    for i in range(_STEPS.value):
        if await_each_step:
            jax.block_until_ready(state)
        state, metrics = train_exec(state, batches[i % 2], class_tokens, key)
    jax.block_until_ready((state, metrics))
    train_s = time.perf_counter() - t0
    train_cpu_s = _cpu_seconds() - c0
    peak, peak_kind = peak_memory_bytes(jax.devices()[0])
    # The train step's kept temp goes back before anything else runs, as before the trainer's evaluations.
    host_memory.release_free_heap()
    logging.info("%d timed train steps ran in %.2f s", _STEPS.value, train_s)
    result.update(
        train_clips_per_sec=round(batch * _STEPS.value / train_s, 2),
        train_compile_s=round(train_compile_s, 2),
        train_compile_cpu_s=round(train_compile_cpu_s, 2),
        train_first_step_s=round(train_first_s, 2),
        peak_memory_mb=round(peak / 2**20, 1),
        peak_memory_kind=peak_kind,
        train_step_s=round(train_s / _STEPS.value, 3),
        # Process CPU seconds (user + system) per step: on a shared machine, wall time grows with
        # other processes' load, CPU time much less.
        train_step_cpu_s=round(train_cpu_s / _STEPS.value, 3),
    )
    result.update(executable_figures("train", train_lowered, train_exec, train_s / _STEPS.value))
    peak_flops = device_peak_flops(jax.devices()[0], result["dtype"])
    if peak_flops:
        result["device_peak_tflops"] = peak_flops / 1e12
        result["train_mfu"] = round(
            result["train_step_gflop"]
            * 1e9
            / (train_s / _STEPS.value)
            / (peak_flops * jax.device_count()),
            4,
        )
    # The train figures now, before the eval step compiles: a run cut short by a time limit still has them.
    print(json.dumps(dict(result, partial="train figures only")), flush=True)
    if _TRACE_DIR.value:
        logging.info("tracing two train steps into %s", _TRACE_DIR.value)
        with jax.profiler.trace(_TRACE_DIR.value):
            for i in range(2):
                state, metrics = train_exec(state, batches[i % 2], class_tokens, key)
            jax.block_until_ready((state, metrics))
        logging.info("trace written")
    return state, train_exec


def _time_alternating(
    result,
    variant,
    steps,
    train_exec,
    tower,
    mesh,
    shardings,
    state,
    batches,
    class_tokens,
    key,
):
    """Variant B (``--alternate``; ``variant`` is its config) compiled beside the run's train step (``train_exec``
    when ``_time_train_step`` compiled it, else compiled here); their steps alternated into ``result``."""
    import jax

    from skclip_jax import classifier_steps, factory
    from skclip_jax import steps as steps_lib
    from skclip_jax.tools import bench_alternate

    overrides = _ALTERNATE.value
    parts_b = factory.build(
        variant, total_steps=BENCH_RUN_STEPS, tower=tower, num_classes=_NUM_CLASSES.value
    )
    compile_steps = (
        classifier_steps.compile_steps
        if factory.is_classifier(variant)
        else steps_lib.compile_steps
    )
    steps_b = compile_steps(
        parts_b.model, steps_lib.StepOptions.from_config(variant), parts_b.schedule, mesh, shardings
    )

    def compile_train(name, s):
        logging.info("compiling variant %s of the train step", name)
        try:
            return s.train.lower(state, batches[0], class_tokens, key).compile()
        except Exception as e:  # a variant with other parameters cannot take this state
            sys.exit(
                f"error: --alternate {' '.join(overrides)}: variant B does not fit the run's train state "
                f"(only fields that keep the parameters can be alternated): {type(e).__name__}: {e}"
            )

    compiled = {
        "A": train_exec if train_exec is not None else compile_train("A", steps),
        "B": compile_train("B", steps_b),
    }
    executables = {n: (lambda st, b, c=c: c(st, b, class_tokens, key)) for n, c in compiled.items()}
    host_memory.release_free_heap()
    # One untimed step each: their first runs fault in memory that the timed ones reuse.
    state, times = bench_alternate.alternate(executables, state, batches, 1, jax.block_until_ready)
    state, times = bench_alternate.alternate(
        executables, state, batches, _ALTERNATE_ROUNDS.value, jax.block_until_ready
    )
    result["alternate"] = dict(bench_alternate.summary(times), b_overrides=list(overrides))
    logging.info("alternating A / B (%s): %s", " ".join(overrides), result["alternate"])
    return state


def describe_run(config, opts, batch: int, init_s: float, present: int | None) -> dict:
    """The JSON line's description of what is measured: device, shapes and the kernels `auto` chose."""
    import jax

    from skclip_jax.models import batch_norm, conv_impl

    return {
        "device_kind": jax.devices()[0].device_kind,
        "num_devices": jax.device_count(),
        "dtype": config.model.dtype,
        "batch_size": batch,
        "clip_len": config.data.clip_len,
        "train_size": config.data.train_size,
        "state_init_s": round(init_s, 2),
        "conv_impl": conv_impl.resolve(config.model.slowonly.get("conv_impl", "xla")),
        "batch_norm_impl": batch_norm.resolve(config.model.slowonly.get("batch_norm_impl", "flax")),
        "low_memory": bool(config.model.slowonly.get("low_memory", False)),
        "stem_impl": "patches" if opts.stem_patches else "conv",
        "present_persons": present or config.data.num_persons,
        # set by host_memory's re-execution (docs/benchmarks.md)
        "host_allocator": host_memory.current_allocator(),
    }


def _time_eval_step(result, steps, state, config, mesh, eval_batch, class_tokens, rng, present):
    """Compiles and times the eval step on one random batch of test views; adds its figures to `result`."""
    import jax

    from skclip_jax import sharding

    views = config.data.num_test_clips
    eval_batch_arrays = sharding.make_global_batch(
        mesh,
        random_batch(
            rng, eval_batch, views, config, config.data.test_size, _NUM_CLASSES.value, present
        ),
    )
    class_feats = steps.encode_classes(state, class_tokens)
    logging.info("compiling the eval step (batch %d x %d views)", eval_batch, views)
    t0 = time.perf_counter()
    eval_lowered = steps.eval.lower(state, eval_batch_arrays, class_feats)
    eval_exec = eval_lowered.compile()
    host_memory.release_free_heap()
    eval_compile_s = time.perf_counter() - t0
    logging.info("eval step compiled in %.1f s", eval_compile_s)
    jax.block_until_ready(eval_exec(state, eval_batch_arrays, class_feats))
    t0, c0 = time.perf_counter(), _cpu_seconds()
    # The trainer's evaluation fetches each batch's output; on CPU, so does this loop.
    await_each_step = host_memory.one_step_at_a_time(jax.default_backend())
    for _ in range(_STEPS.value):
        out = eval_exec(state, eval_batch_arrays, class_feats)
        if await_each_step:
            jax.block_until_ready(out)
    jax.block_until_ready(out)
    eval_s = time.perf_counter() - t0
    eval_cpu_s = _cpu_seconds() - c0
    result.update(
        eval_videos_per_sec=round(eval_batch * _STEPS.value / eval_s, 2),
        eval_clips_per_sec=round(eval_batch * views * _STEPS.value / eval_s, 2),
        eval_compile_s=round(eval_compile_s, 2),
        eval_step_s=round(eval_s / _STEPS.value, 3),
        eval_step_cpu_s=round(eval_cpu_s / _STEPS.value, 3),
    )
    result.update(executable_figures("eval", eval_lowered, eval_exec, eval_s / _STEPS.value))
    peak, _ = peak_memory_bytes(jax.devices()[0])
    result["peak_memory_mb"] = round(peak / 2**20, 1)


def main(argv):
    del argv
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import jax
    import jax.numpy as jnp
    import numpy as np

    from skclip_jax import class_texts, classifier_steps, factory, sharding
    from skclip_jax import steps as steps_lib
    from skclip_jax.tools import bench_alternate

    config = _CONFIG.value
    variant = None
    if _ALTERNATE.value:  # a bad field fails now, not after the first compile
        try:
            variant = bench_alternate.with_overrides(config, _ALTERNATE.value)
        except ValueError as e:
            sys.exit(f"error: {e}")
    present = _PRESENT_PERSONS.value
    if present is not None and not 1 <= present <= config.data.num_persons:
        sys.exit(
            f"error: --present_persons={present}: expected 1 to data.num_persons={config.data.num_persons}"
        )
    batch = _BATCH.value or config.batch_size
    eval_batch = _EVAL_BATCH.value or config.eval_batch_size
    mesh = sharding.make_mesh(config.mesh_shape)
    sharding.check_batch_divisible(batch, mesh)
    sharding.check_batch_divisible(eval_batch, mesh, "eval_batch_size")
    parts = factory.build(config, total_steps=BENCH_RUN_STEPS, num_classes=_NUM_CLASSES.value)
    if factory.is_classifier(config):  # the PoseConv3D baseline: class indices, no texts
        tokens = classifier_steps.class_index_tokens(_NUM_CLASSES.value)
    else:
        names = class_names(_NUM_CLASSES.value, _PROMPT_TOKENS.value, config.data.max_text_len)
        # Padded as a training run pads its class texts (to the longest, at most data.max_text_len).
        tokens = class_texts.tokens_for(
            parts.text.tokenizer, [[n] for n in names], config.data.max_text_len
        )
    class_tokens = jax.device_put(
        {k: jnp.asarray(v) for k, v in tokens.items()}, sharding.replicated(mesh)
    )
    logging.info("initialising the train state")
    t0 = time.perf_counter()
    # Random weights (no BERT checkpoint read): throughput does not depend on them.
    state, shardings = factory.init_state(parts, config, mesh, load_pretrained=False)
    jax.block_until_ready(state)
    init_s = time.perf_counter() - t0
    logging.info("train state ready in %.1f s", init_s)
    opts = steps_lib.StepOptions.from_config(config)
    compile_steps = (
        classifier_steps.compile_steps if factory.is_classifier(config) else steps_lib.compile_steps
    )
    steps = compile_steps(parts.model, opts, parts.schedule, mesh, shardings)
    rng = np.random.default_rng(0)
    key = jax.random.key(0)
    batches = [
        sharding.make_global_batch(
            mesh,
            random_batch(
                rng, batch, None, config, config.data.train_size, _NUM_CLASSES.value, present
            ),
        )
        for _ in range(2)
    ]

    result = describe_run(config, opts, batch, init_s, present)
    train_exec = None
    if _TRAIN_STEP.value:
        state, train_exec = _time_train_step(
            result, steps, state, batches, class_tokens, key, batch
        )
    if variant is not None:
        state = _time_alternating(
            result,
            variant,
            steps,
            train_exec,
            parts.text,
            mesh,
            shardings,
            state,
            batches,
            class_tokens,
            key,
        )
    if _EVAL.value:
        _time_eval_step(result, steps, state, config, mesh, eval_batch, class_tokens, rng, present)
    result["peak_rss_mb"] = round(peak_rss_bytes() / 2**20, 1)
    result["loadavg_1min"] = round(os.getloadavg()[0], 2)
    stats = jax.devices()[0].memory_stats() if hasattr(jax.devices()[0], "memory_stats") else None
    if stats and "bytes_limit" in stats:
        result["device_memory_limit_mb"] = round(stats["bytes_limit"] / 2**20, 1)
    if _PEER.value:
        peer = load_peer(_PEER.value, batch, _PEER_ALLOCATOR.value)
        result["peer"] = peer
        result["ratio"] = {
            k: round(result[k] / peer[k], 3)
            for k in ("train_clips_per_sec", "eval_clips_per_sec", "peak_rss_mb")
            if k in result and k in peer
        }
        print(side_by_side(result, peer), file=sys.stderr, flush=True)
    if _PROFILE.value:
        from skclip_jax.tools import bench_profile

        prof = bench_profile.profile(
            model=parts.model,
            state=state,
            opts=opts,
            batch=batches[0],
            class_tokens=class_tokens,
            train_step_s=result.get("train_step_s", 0.0),
            train_step_gflop=result.get("train_step_gflop", 0.0),
            layers=_PROFILE_LAYERS.value,
            reps=_PROFILE_REPS.value,
        )
        print(bench_profile.format_table(prof), file=sys.stderr, flush=True)
        result["profile"] = prof
        result["peak_rss_mb_after_profile"] = round(peak_rss_bytes() / 2**20, 1)
    print(json.dumps(result))


if __name__ == "__main__":
    host_memory.reexec_with_fast_allocator()  # first: the allocator is chosen at start-up
    app.run(main)
