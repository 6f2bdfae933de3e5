"""Throughput of the keypoint path: host transforms, device rendering, NumPy baseline.

    python -m skclip_jax.tools.bench_heatmaps [--batch=32] [--iters=20]

Prints one JSON line:
  host_train_transform_clips_per_s  ``train_transform`` on synthetic samples, one core;
  device_render_clips_per_s         jitted ``render_heatmaps`` [B, 2, 48, 17, 2] ->
                                    [B, 48, 56, 56, 17], compile time reported apart;
  numpy_render_clips_per_s          PYSKL-style per-clip loop rendering (the baseline
                                    the device path replaces).
"""

import argparse
import json
import math
import time

import jax
import jax.numpy as jnp
import numpy as np

from skclip_jax import heatmaps, host_memory, pose_transforms


def synthetic_sample(rng: np.random.Generator, total_frames: int = 150, persons: int = 2) -> dict:
    """A jittering COCO-17 skeleton per person in a 240 x 320 frame (UCF101-like sizes)."""
    v = 17
    base = rng.uniform((80, 60), (240, 140), (persons, 1, 1, 2))
    body = rng.uniform((-30, -50), (30, 60), (persons, 1, v, 2))
    drift = np.cumsum(rng.normal(0, 1.0, (persons, total_frames, 1, 2)), axis=1)
    keypoint = (base + body + drift + rng.normal(0, 1.5, (persons, total_frames, v, 2))).astype(
        np.float32
    )
    score = rng.uniform(0.3, 1.0, (persons, total_frames, v)).astype(np.float32)
    return {
        "keypoint": keypoint,
        "keypoint_score": score,
        "img_shape": (240, 320),
        "total_frames": total_frames,
        "label": 0,
    }


def numpy_render(
    keypoint: np.ndarray, score: np.ndarray, size: int, sigma: float = 0.6
) -> np.ndarray:
    """PYSKL-style host rendering of one clip: loop frames/keypoints/persons, paint patches."""
    m, t, v = score.shape
    out = np.zeros((t, v, size, size), np.float32)
    for f in range(t):
        for j in range(v):
            for p in range(m):
                value = score[p, f, j]
                if value < heatmaps.PYSKL_EPS:
                    continue
                x, y = keypoint[p, f, j]
                x0, x1 = max(int(x - 3 * sigma), 0), min(int(x + 3 * sigma) + 1, size)
                y0, y1 = max(int(y - 3 * sigma), 0), min(int(y + 3 * sigma) + 1, size)
                if x1 <= x0 or y1 <= y0:
                    continue
                xs = np.arange(x0, x1, dtype=np.float32)
                ys = np.arange(y0, y1, dtype=np.float32)[:, None]
                patch = np.exp(-((xs - x) ** 2 + (ys - y) ** 2) / (2 * sigma**2)) * value
                region = out[f, j, y0:y1, x0:x1]
                np.maximum(region, patch, out=region)
    return out


def _rate(count: int, seconds: float) -> float:
    return round(count / seconds, 2) if seconds > 0 else math.inf


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32, help="clips per device render call")
    parser.add_argument("--iters", type=int, default=20, help="timed device render calls")
    parser.add_argument("--host_clips", type=int, default=200, help="clips for the host timing")
    parser.add_argument("--numpy_clips", type=int, default=4, help="clips for the NumPy baseline")
    parser.add_argument("--bf16", action="store_true", help="render in bfloat16")
    args = parser.parse_args()
    clip_len, size, persons = 48, 56, 2
    rng = np.random.default_rng(0)
    samples = [synthetic_sample(rng) for _ in range(16)]

    start = time.perf_counter()
    clips = [
        pose_transforms.train_transform(
            samples[i % len(samples)], rng, clip_len=clip_len, out_size=size, num_persons=persons
        )
        for i in range(args.host_clips)
    ]
    host_s = time.perf_counter() - start

    kp = np.stack([clips[i % len(clips)]["keypoint"] for i in range(args.batch)])
    score = np.stack([clips[i % len(clips)]["keypoint_score"] for i in range(args.batch)])
    kp, score = jax.device_put(kp), jax.device_put(score)
    dtype = jnp.bfloat16 if args.bf16 else jnp.float32
    render = jax.jit(lambda k, s: heatmaps.render_heatmaps(k, s, size, size, dtype=dtype))
    start = time.perf_counter()
    compiled = render.lower(kp, score).compile()
    compile_s = time.perf_counter() - start
    compiled(kp, score).block_until_ready()  # warm-up
    start = time.perf_counter()
    for _ in range(args.iters):
        out = compiled(kp, score)
    out.block_until_ready()
    device_s = time.perf_counter() - start

    start = time.perf_counter()
    for i in range(args.numpy_clips):
        clip = clips[i % len(clips)]
        numpy_render(clip["keypoint"], clip["keypoint_score"], size)
    numpy_s = time.perf_counter() - start

    print(
        json.dumps(
            {
                "device": str(jax.devices()[0].device_kind),
                "batch": args.batch,
                "out_shape": list(out.shape),
                "dtype": str(out.dtype),
                "host_train_transform_clips_per_s": _rate(args.host_clips, host_s),
                "device_render_clips_per_s": _rate(args.batch * args.iters, device_s),
                "device_compile_s": round(compile_s, 3),
                "numpy_render_clips_per_s": _rate(args.numpy_clips, numpy_s),
            }
        )
    )


if __name__ == "__main__":
    host_memory.reexec_with_fast_allocator()  # first: the allocator is chosen at start-up
    main()
