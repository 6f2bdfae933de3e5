"""The benchmark's figures: model FLOPs from the lowered program, the trace of two steps, the parts alone."""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from skclip_jax.tools import bench_alternate, bench_profile, trace_summary

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["--config=configs/demo.py:tiny", "--batch_size=4", "--num_classes=4", "--noeval"]


def bench_process(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "skclip_jax.tools.bench", *TINY, *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        # One CPU device (not the suite's 8 simulated ones): the figures need no mesh, and it compiles faster.
        env={**os.environ, "PYTHONPATH": REPO, "XLA_FLAGS": ""},
        timeout=timeout,
    )


def run_bench(*args: str) -> dict:
    out = bench_process(*args)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_conv_flops_are_counted_before_the_backend_rewrites_them():
    """cost() reads the lowered program, whose conv FLOPs are exact (2 x outputs x taps x C_in) on every
    backend; a GPU's compiled program hides convolutions in cuDNN calls that count zero."""

    def conv(x, w):
        return jax.lax.conv_general_dilated(
            x, w, (1, 1, 1), "VALID", dimension_numbers=("NDHWC", "DHWIO", "NDHWC")
        )

    x, w = jnp.ones((2, 8, 16, 16, 8)), jnp.ones((1, 3, 3, 8, 16))
    expected = 2 * (2 * 8 * 14 * 14 * 16) * (3 * 3 * 8)
    assert bench_profile.cost(jax.jit(conv).lower(x, w))["flops"] == expected


def test_bench_times_the_step_and_traces_two_steps(tmp_path):
    result = run_bench("--steps=1", f"--trace_dir={tmp_path}")
    assert result["train_clips_per_sec"] > 0 and result["train_step_gflop"] > 0
    assert result["train_achieved_gflop_per_s"] > 0
    planes = trace_summary.summarise(trace_summary.find_trace(str(tmp_path)), "/host:CPU")
    names = {name for p in planes for (_, name), _, _ in p["by_name"]}
    # The two traced steps ran the compiled train step.
    assert any("train_step" in n for n in names), sorted(names)[:50]
    text = trace_summary.format_summary(planes, top=5)
    assert "/host:CPU" in text and "busy" in text


def test_bench_profiles_the_parts_without_the_whole_step():
    result = run_bench("--notrain_step", "--profile", "--noprofile_layers", "--profile_reps=1")
    assert "train_clips_per_sec" not in result
    parts = {r["part"].split(" (")[0]: r for r in result["profile"]["parts"]}
    assert {"render", "backbone fwd", "backbone fwd+bwd", "text fwd+bwd", "fusion fwd+bwd"} <= set(
        parts
    )
    assert "train_step" not in parts and "unaccounted_s" not in result["profile"]["summary"]
    # The backward pass of a conv net costs about twice its forward.
    fwd, both = parts["backbone fwd"]["gflop"], parts["backbone fwd+bwd"]["gflop"]
    assert 0 < fwd and 2 * fwd < both < 4 * fwd


def test_alternation_runs_each_variant_in_abba_order():
    assert bench_alternate.alternation_order(["A", "B"], 4) == list("ABBAABBA")
    calls = []
    steps = {n: (lambda st, b, n=n: (calls.append((n, b)) or st + 1, {"loss": 0.0})) for n in "AB"}
    state, times = bench_alternate.alternate(steps, 0, ["b0", "b1"], 3, lambda x: x)
    assert state == 6 and [n for n, _ in calls] == list("ABBAAB")
    assert [b for _, b in calls] == ["b0", "b1"] * 3  # the batches cycle as in the timed steps
    assert {n: len(t) for n, t in times.items()} == {"A": 3, "B": 3}
    out = bench_alternate.summary({"A": [2.0, 1.0, 3.0], "B": [1.0, 1.0, 4.0]})
    assert out["A"]["median_step_s"] == 2.0 and out["ratio_b_over_a"] == 0.5


def test_alternate_overrides_are_checked_against_the_config():
    from configs import demo

    config = demo.get_config("tiny")
    variant = bench_alternate.with_overrides(
        config, ["model.slowonly.low_memory=True", "model.dtype=bfloat16"]
    )
    assert variant.model.slowonly.low_memory is True and variant.model.dtype == "bfloat16"
    assert config.model.slowonly.low_memory is False  # the run's own config is left as it was
    for bad in [
        "model.slowonly.low_memory",
        "model.no_such_field=1",
        "model.slowonly.low_memory='x'",
    ]:
        with pytest.raises(ValueError, match="--alternate="):
            bench_alternate.with_overrides(config, [bad])


def test_bench_alternates_a_variant_in_one_process():
    result = run_bench(
        "--steps=1", "--alternate=model.slowonly.low_memory=True", "--alternate_rounds=2"
    )
    alt = result["alternate"]
    assert alt["b_overrides"] == ["model.slowonly.low_memory=True"]
    assert len(alt["A"]["steps_s"]) == len(alt["B"]["steps_s"]) == 2
    assert alt["A"]["median_step_s"] > 0 and alt["ratio_b_over_a"] > 0


def test_a_bad_alternate_field_fails_at_start_up_with_a_message():
    out = bench_process("--alternate=model.no_such_field=1", timeout=300)
    assert out.returncode == 1
    assert "error: --alternate='model.no_such_field=1'" in out.stderr
    assert "Traceback" not in out.stderr


def test_profile_layers_time_the_patch_stem_on_the_batch_patches():
    """With the patch stem, the per-layer profile times it on the batch's own patches, not random volumes."""
    from skclip_jax import factory, heatmap_patches
    from skclip_jax.config_lib import default
    from skclip_jax.models import text

    config = default.get_config()
    config.model.slowonly.base_channels = 4
    config.model.slowonly.stage_blocks = (1, 1, 1)
    model = factory.build_model(config, text.tiny_bert_config(30524), 30523)
    rng = np.random.default_rng(0)
    patches = heatmap_patches.keypoint_patches(
        rng.uniform(0, 16, (2, 2, 4, 17, 2)), rng.uniform(0, 1, (2, 2, 4, 17)), 16, 16
    )
    ids = jnp.ones((2, 4), jnp.int32)
    variables = model.init(jax.random.key(0), patches, ids, ids)
    calls = bench_profile.backbone_layers(model, variables, patches)
    rows = bench_profile.profile_layers(calls[:2], 1, lambda row: None, stem_input=patches)
    assert rows[0]["part"] == "patch conv 1x7x7 -> 4 on [2x4x16x16x17]", rows[0]
    assert rows[0]["count"] == 1 and rows[0]["fwd_bwd_s"] > 0
    assert rows[1]["part"].startswith("bn+relu [2x4x16x16x4]")


def test_random_batch_pads_the_absent_persons_as_the_pipeline_does():
    from skclip_jax.config_lib import default
    from skclip_jax.tools import bench

    config = default.get_config()
    assert config.data.num_persons == 2
    rng = np.random.default_rng(0)
    for views in (None, 3):
        full = bench.random_batch(rng, 4, views, config, 56, 101)
        one = bench.random_batch(rng, 4, views, config, 56, 101, present_persons=1)
        person = 1 if views is None else 2  # the axis after the batch (and view) axes
        assert full["keypoint"].shape == one["keypoint"].shape
        assert np.all(np.take(full["keypoint_score"], 1, axis=person) > 0)
        assert np.all(np.take(one["keypoint"], 1, axis=person) == 0)
        assert np.all(np.take(one["keypoint_score"], 1, axis=person) == 0)
        assert np.all(np.take(one["keypoint_score"], 0, axis=person) > 0)
        assert np.all((one["label"] >= 0) & (one["label"] < 101))


def test_present_persons_beyond_the_config_fails_with_a_message():
    out = bench_process("--present_persons=3", timeout=300)
    assert out.returncode == 1
    assert "error: --present_persons=3: expected 1 to data.num_persons=2" in out.stderr
    assert "Traceback" not in out.stderr
