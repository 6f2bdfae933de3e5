r"""Step throughput benchmark: `python -m skclip_jax.bench --config=configs/ucf101.py:cpu [--batch_size=N]`.

Prints one JSON line: train-step and eval clips/s on random keypoint batches of the config's shapes (so the input
pipeline is not measured), compile times apart, peak memory and the device kind. Not a test: run it on the machine
whose figures you want.
"""

import json
import os
import resource
import time

from absl import app, flags
from ml_collections import config_flags

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


def random_batch(rng, batch, views, config, size):
    import numpy as np

    lead = (batch,) if views is None else (batch, views)
    shape = lead + (config.data.num_persons, config.data.clip_len, config.data.num_keypoints)
    out = {
        "keypoint": rng.uniform(0, size, shape + (2,)).astype(np.float32),
        "keypoint_score": rng.uniform(0, 1, shape).astype(np.float32),
        "label": rng.integers(0, _NUM_CLASSES.value, batch).astype(np.int32),
    }
    if views is not None:
        out["mask"] = np.ones(batch, bool)
    return out


def peak_memory_bytes(device) -> tuple[int | None, str]:
    stats = device.memory_stats() if hasattr(device, "memory_stats") else None
    if stats and "peak_bytes_in_use" in stats:
        return int(stats["peak_bytes_in_use"]), "device peak_bytes_in_use"
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "host max RSS (CPU backend)"


def main(argv):
    del argv
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import jax
    import jax.numpy as jnp
    import numpy as np

    from skclip_jax import sharding, train
    from skclip_jax.models import text

    config = _CONFIG.value
    batch = _BATCH.value or config.batch_size
    eval_batch = _EVAL_BATCH.value or config.eval_batch_size
    mesh = sharding.make_mesh(config.mesh_shape)
    sharding.check_batch_divisible(batch, mesh)
    sharding.check_batch_divisible(eval_batch, mesh, "eval_batch_size")
    bert_dir = text.resolve_bert_dir(config.model.text.bert_dir)
    tokenizer, enc_id = text.load_tokenizer(bert_dir)
    names = [f"action number {i}" for i in range(_NUM_CLASSES.value)]
    tokens = text.tokenize(tokenizer, names, config.data.max_text_len)
    class_tokens = jax.device_put(
        {k: jnp.asarray(v) for k, v in tokens.items()}, sharding.replicated(mesh)
    )
    model = train.build_model(config, text.bert_config(bert_dir, len(tokenizer), 0.1), enc_id)
    schedule = train.learning_rate_schedule(config.optim.lr, 1000, 10, 0.1)
    state, shardings = train.create_train_state(
        model,
        train.make_optimizer(config, schedule),
        mesh,
        jax.random.key(0),
        num_keypoints=config.model.slowonly.in_channels,
        max_text_len=config.data.max_text_len,
        shard_params=config.shard_params,
    )
    steps = train.compile_steps(
        model, train.StepOptions.from_config(config), schedule, mesh, shardings
    )
    rng = np.random.default_rng(0)
    key = jax.random.key(0)
    batches = [
        sharding.make_global_batch(
            mesh, random_batch(rng, batch, None, config, config.data.train_size)
        )
        for _ in range(2)
    ]

    t0 = time.perf_counter()
    state, metrics = steps.train(state, batches[0], class_tokens, key)
    jax.block_until_ready(metrics)
    train_compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for i in range(_STEPS.value):
        state, metrics = steps.train(state, batches[i % 2], class_tokens, key)
    jax.block_until_ready((state, metrics))
    train_s = time.perf_counter() - t0

    views = config.data.num_test_clips
    eval_batch_arrays = sharding.make_global_batch(
        mesh, random_batch(rng, eval_batch, views, config, config.data.test_size)
    )
    class_feats = steps.encode_classes(state, class_tokens)
    t0 = time.perf_counter()
    jax.block_until_ready(steps.eval(state, eval_batch_arrays, class_feats))
    eval_compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(_STEPS.value):
        out = steps.eval(state, eval_batch_arrays, class_feats)
    jax.block_until_ready(out)
    eval_s = time.perf_counter() - t0

    peak, peak_kind = peak_memory_bytes(jax.devices()[0])
    print(
        json.dumps(
            {
                "device_kind": jax.devices()[0].device_kind,
                "num_devices": jax.device_count(),
                "dtype": config.model.dtype,
                "batch_size": batch,
                "clip_len": config.data.clip_len,
                "train_size": config.data.train_size,
                "train_clips_per_sec": round(batch * _STEPS.value / train_s, 2),
                "train_compile_s": round(train_compile_s, 2),
                "eval_videos_per_sec": round(eval_batch * _STEPS.value / eval_s, 2),
                "eval_clips_per_sec": round(eval_batch * views * _STEPS.value / eval_s, 2),
                "eval_compile_s": round(eval_compile_s, 2),
                "peak_memory_mb": round(peak / 2**20, 1),
                "peak_memory_kind": peak_kind,
            }
        )
    )


if __name__ == "__main__":
    app.run(main)
