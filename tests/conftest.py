"""Test-wide setup: 8 simulated CPU devices, set before jax is imported anywhere."""

import os
import tempfile

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
# One persistent XLA cache for the session's processes (pytest workers and the CLI tests' subprocesses): the
# tiny models compile once, not once per test and per restarted run. Keys include program, options and devices.
os.environ.setdefault(
    "JAX_COMPILATION_CACHE_DIR",
    os.path.join(tempfile.gettempdir(), f"skclip_jax_test_xla_cache_{os.getuid()}"),
)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
