"""Where the train step's time goes: timed sub-jits of its parts, with XLA's cost analysis of each.

Used by ``python -m skclip_jax.tools.bench --profile``. Each part is jitted on its own at the benchmark's shapes and
timed (median of ``reps`` runs after a compile run); FLOPs and bytes come from the compiled executable's
``cost_analysis()``. Parts:

  * ``render``: keypoints -> heatmap volumes, or the patches the patch stem convolves instead
    (``model.slowonly.stem_impl``; forward only: the stem's input needs no gradient);
  * ``backbone``: SlowOnly forward in train mode, and forward + backward (parameter gradients);
  * ``conv <shape>`` / ``bn <shape>``: every distinct convolution and BatchNorm of the backbone alone, forward
    and forward + backward, with how often the network uses it, so their sum can be set against the whole
    backbone (the rest is ReLU, residual adds, max-pool and XLA's glue between them);
  * ``text``: the BERT text pass over the batch's prompts, forward + backward;
  * ``fusion``: the BERT fusion pass (cross-attention) over the 3B CSI pairs, forward + backward;
  * ``optimizer``: clipping + AdamW over all parameters;
  * ``train_step``: the whole compiled step, as the bench timed it, for reference.

Sub-jits do not see XLA's fusion across their borders and each allocates its own buffers, so the parts need
not add up to the step exactly; the gap is reported.
"""

import statistics
import sys
import time
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from skclip_jax import factory, steps
from skclip_jax.models import batch_norm, patch_stem, skclip

# nn.BatchNorm (model.slowonly.batch_norm_impl=flax) or the fused BatchNorm + ReLU (fused)
_BATCH_NORMS = (nn.BatchNorm, batch_norm.BatchNorm)


def cost(lowered) -> dict[str, float]:
    """XLA's cost analysis of a lowered program (or a compiled one): FLOPs and bytes accessed (0 if unknown).

    Pass the lowered (backend-independent) program for model FLOPs: compiled for a GPU, convolutions become
    cuDNN custom calls that the analysis counts as zero FLOPs.
    """
    analysis = lowered.cost_analysis()
    if isinstance(analysis, (list, tuple)):  # older jax: one dict per computation
        analysis = analysis[0] if analysis else {}
    analysis = analysis or {}
    return {
        "flops": float(analysis.get("flops", 0.0)),
        "bytes": float(analysis.get("bytes accessed", 0.0)),
    }


def timed(jitted, *args, reps: int = 3) -> dict[str, float]:
    """Compile (once: on a GPU with autotuning a compile is dear) + one run, then the median wall time of
    ``reps`` runs, with XLA's cost analysis of the lowered program (see ``cost``)."""
    t0 = time.perf_counter()
    lowered = jitted.lower(*args)
    compiled = lowered.compile()
    jax.block_until_ready(compiled(*args))
    first = time.perf_counter() - t0
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        jax.block_until_ready(compiled(*args))
        times.append(time.perf_counter() - t0)
    out = {"s": statistics.median(times), "first_s": first}
    out.update(cost(lowered))
    return out


def backbone_layers(model: skclip.SkeletonCLIP, variables, volume) -> list[dict[str, Any]]:
    """Every conv and BatchNorm call of the video encoder, in order, with its module and input shape."""
    calls = []

    def interceptor(next_fun, args, kwargs, context):
        module = context.module
        convs = (nn.Conv, patch_stem.PatchConv)
        if context.method_name == "__call__" and isinstance(module, (*convs, *_BATCH_NORMS)):
            calls.append({"module": module.clone(parent=None), "shape": tuple(args[0].shape)})
        return next_fun(*args, **kwargs)

    with nn.intercept_methods(interceptor):
        jax.eval_shape(
            lambda v, x: model.apply(
                v, x, True, method=skclip.SkeletonCLIP.encode_video, mutable=["batch_stats"]
            ),
            variables,
            volume,
        )
    return calls


def _layer_key(call) -> tuple:
    m = call["module"]
    if isinstance(m, nn.Conv):
        return ("conv", call["shape"], m.features, tuple(m.kernel_size), tuple(m.strides))
    if isinstance(m, patch_stem.PatchConv):
        return ("conv", call["shape"], m.features, tuple(m.kernel_size), (1, 1, 1), "patches")
    return ("bn", call["shape"], getattr(m, "relu", False))


def _layer_name(key) -> str:
    shape = "x".join(map(str, key[1]))
    if key[0] == "conv":
        _, _, features, kernel, strides, *patches = key
        stride = "" if set(strides) == {1} else " s" + "x".join(map(str, strides))
        kind = "patch conv" if patches else "conv"
        return f"{kind} {'x'.join(map(str, kernel))}{stride} -> {features} on [{shape}]"
    return f"bn{'+relu' if key[2] else ''} [{shape}]"


def profile_layers(calls, reps: int, log, stem_input=None) -> list[dict[str, Any]]:
    """Times each distinct conv / BN alone, forward and forward + backward (grads w.r.t. params and input).

    Inputs are random, except for a patch stem's, which is ``stem_input`` (the batch's ``HeatmapPatches``:
    their count and placement are what it costs; unused for a dense stem).
    """
    groups: dict[tuple, list] = {}
    for index, call in enumerate(calls):
        groups.setdefault(_layer_key(call), []).append(index)
    rows = []
    rng = np.random.default_rng(0)
    for key, indices in groups.items():
        call = calls[indices[0]]
        module = call["module"]
        if isinstance(module, patch_stem.PatchConv):
            x = stem_input
        else:
            x = jnp.asarray(rng.standard_normal(call["shape"], np.float32))
        # The stem's input (the rendered volume or its patches) needs no gradient.
        wrt_input = indices[0] != 0
        variables = module.init(jax.random.key(0), x)

        def forward(params, x, module=module, variables=variables):
            v = dict(variables)
            v["params"] = params
            if isinstance(module, _BATCH_NORMS):
                return module.apply(v, x, mutable=["batch_stats"])[0]
            return module.apply(v, x)

        def loss(params, x, forward=forward):
            y = forward(params, x)
            return jnp.sum(y * y) * 0.5

        grad = jax.grad(loss, argnums=(0, 1) if wrt_input else 0)
        fwd = timed(jax.jit(forward), variables["params"], x, reps=reps)
        fb = timed(jax.jit(grad), variables["params"], x, reps=reps)
        row = {
            "part": _layer_name(key),
            "kind": key[0],
            "count": len(indices),
            "fwd_s": fwd["s"],
            "fwd_bwd_s": fb["s"],
            "gflop": fb["flops"] / 1e9,
            "fwd_gflop": fwd["flops"] / 1e9,
            "gbytes": fb["bytes"] / 1e9,
        }
        log(row)
        rows.append(row)
    return rows


def summarize(rows, layer_rows, train_step_s: float) -> dict[str, float]:
    """The parts' sum, what the whole step spends beyond them, and the backbone split into convs, BNs, rest."""
    by = {r["part"]: r for r in rows}
    parts_sum = sum(r["s"] for r in rows if r["part"] not in ("train_step", "backbone fwd"))
    summary = {"sum_of_parts_s": parts_sum}
    if train_step_s:
        summary.update(train_step_s=train_step_s, unaccounted_s=train_step_s - parts_sum)
    if layer_rows:
        conv = sum(r["fwd_bwd_s"] * r["count"] for r in layer_rows if r["kind"] == "conv")
        bn = sum(r["fwd_bwd_s"] * r["count"] for r in layer_rows if r["kind"] == "bn")
        conv_gflop = sum(r["gflop"] * r["count"] for r in layer_rows if r["kind"] == "conv")
        summary.update(
            conv_fwd_bwd_s=conv,
            conv_gflop=conv_gflop,
            conv_gflop_per_s=conv_gflop / conv if conv else 0.0,
            bn_fwd_bwd_s=bn,
            backbone_rest_s=by["backbone fwd+bwd"]["s"] - conv - bn,
        )
    return summary


def profile(
    *,
    model: skclip.SkeletonCLIP,
    state: factory.TrainState,
    opts: steps.StepOptions,
    batch: dict[str, jax.Array],
    class_tokens: dict[str, jax.Array],
    train_step_s: float,
    train_step_gflop: float,
    reps: int = 3,
    layers: bool = True,
) -> dict[str, Any]:
    """Per-part times and XLA costs of one train step at the benchmark's shapes (see the module docstring).

    Returns:
      ``{"parts": [...], "layers": [...], "summary": {...}}``; every part row has ``s`` (median seconds),
      ``gflop`` and ``gbytes`` from XLA's cost analysis, and ``gflop_per_s``.
    """

    def log(row):
        print(
            "profile: "
            + ", ".join(
                f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()
            ),
            file=sys.stderr,
            flush=True,
        )

    params, batch_stats = state.params, state.batch_stats
    rows = []

    def add(name, jitted, *args):
        r = timed(jitted, *args, reps=reps)
        row = {
            "part": name,
            "s": r["s"],
            "gflop": r["flops"] / 1e9,
            "gbytes": r["bytes"] / 1e9,
            "gflop_per_s": r["flops"] / 1e9 / r["s"] if r["s"] > 0 else 0.0,
            "compile_and_first_s": r["first_s"],
        }
        log(row)
        rows.append(row)
        return row

    render = jax.jit(lambda kp, score: steps.render_volume(kp, score, opts.train_size, opts))
    add("render", render, batch["keypoint"], batch["keypoint_score"])
    volume = jax.block_until_ready(render(batch["keypoint"], batch["keypoint_score"]))

    def video(params, volume):
        (frames, tokens), mutated = model.apply(
            {"params": params, "batch_stats": batch_stats},
            volume,
            True,
            method=skclip.SkeletonCLIP.encode_video,
            mutable=["batch_stats"],
        )
        return frames, tokens, mutated

    def video_loss(params, volume):
        frames, tokens, _ = video(params, volume)
        return jnp.sum(frames) + jnp.sum(tokens)

    add("backbone fwd", jax.jit(video), params, volume)
    add("backbone fwd+bwd", jax.jit(jax.grad(video_loss)), params, volume)

    labels = batch["label"]
    ids = class_tokens["input_ids"][labels]
    mask = class_tokens["attention_mask"][labels]
    key = jax.random.key(0)

    def text_loss(params):
        z = model.apply(
            {"params": params},
            ids,
            mask,
            True,
            method=skclip.SkeletonCLIP.encode_text,
            rngs={"dropout": key},
        )
        return jnp.sum(z)

    add(f"text fwd+bwd ({ids.shape[0]} prompts)", jax.jit(jax.grad(text_loss)), params)

    _, tokens, _ = jax.jit(video)(params, volume)
    pair_ids = jnp.concatenate([ids] * 3)
    pair_mask = jnp.concatenate([mask] * 3)
    # As the train step pairs them: every clip with two texts, and a third text with a (here: the same) clip.
    pair_clips = jnp.concatenate([jnp.arange(tokens.shape[0])] * 3)

    def fusion_loss(params, tokens):
        logits = model.apply(
            {"params": params},
            pair_ids,
            pair_mask,
            tokens,
            True,
            pair_clips,
            method=skclip.SkeletonCLIP.match_logits,
            rngs={"dropout": key},
        )
        return jnp.sum(logits)

    add(
        f"fusion fwd+bwd ({pair_ids.shape[0]} pairs)",
        jax.jit(jax.grad(fusion_loss, argnums=(0, 1))),
        params,
        tokens,
    )

    grads = jax.tree.map(lambda p: jnp.full_like(p, 1e-3), params)

    def optimizer(state, grads):
        return state.apply_gradients(grads=grads)

    add("optimizer (clip + AdamW)", jax.jit(optimizer), state, grads)

    # The bench has compiled and timed the (state-donating) train step already (unless --notrain_step).
    if train_step_s:
        step_row = {
            "part": "train_step",
            "s": train_step_s,
            "gflop": train_step_gflop,
            "gbytes": 0.0,
            "gflop_per_s": train_step_gflop / train_step_s,
            "compile_and_first_s": 0.0,
        }
        log(step_row)
        rows.append(step_row)

    layer_rows = []
    if layers:
        calls = backbone_layers(model, {"params": params, "batch_stats": batch_stats}, volume)
        layer_rows = profile_layers(calls, reps, log, stem_input=volume)

    summary = summarize(rows, layer_rows, train_step_s)
    log(summary)
    return {"parts": rows, "layers": layer_rows, "summary": summary}


def format_table(result: dict[str, Any]) -> str:
    """A plain-text table of ``profile``'s result, slowest first."""
    lines = [f"{'part':58s} {'s':>8s} {'GFLOP':>9s} {'GFLOP/s':>8s} {'GB':>7s}"]
    for r in sorted(result["parts"], key=lambda r: -r["s"]):
        lines.append(
            f"{r['part']:58s} {r['s']:8.3f} {r['gflop']:9.1f} {r['gflop_per_s']:8.1f} {r['gbytes']:7.2f}"
        )
    if result["layers"]:
        lines.append("")
        lines.append(
            f"{'layer (x count)':58s} {'fwd s':>8s} {'f+b s':>8s} {'total s':>8s} {'GFLOP/s':>8s}"
        )
        for r in sorted(result["layers"], key=lambda r: -r["fwd_bwd_s"] * r["count"]):
            total = r["fwd_bwd_s"] * r["count"]
            rate = r["gflop"] / r["fwd_bwd_s"] if r["fwd_bwd_s"] else 0.0
            lines.append(
                f"{r['part'] + ' x' + str(r['count']):58s} {r['fwd_s']:8.3f} {r['fwd_bwd_s']:8.3f} "
                f"{total:8.3f} {rate:8.1f}"
            )
    lines.append("")
    lines.extend(f"{k}: {v:.3f}" for k, v in result["summary"].items())
    return "\n".join(lines)
