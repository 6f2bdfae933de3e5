"""The programs' persistent compilation cache: where it goes, who wins, how it turns off, and that it is used."""

import os
import subprocess
import sys

import jax
import pytest

from skclip_jax import compilation_cache


@pytest.fixture
def restore_cache_dir():
    before = jax.config.jax_compilation_cache_dir
    yield
    jax.config.update("jax_compilation_cache_dir", before)


def test_default_env_and_off(monkeypatch, tmp_path, restore_cache_dir):
    monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", str(tmp_path / "env"))
    assert compilation_cache.enable(str(tmp_path / "flag")) == str(
        tmp_path / "env"
    )  # the environment wins.
    monkeypatch.delenv("JAX_COMPILATION_CACHE_DIR")
    assert compilation_cache.enable("") is None
    monkeypatch.setenv("HOME", str(tmp_path))
    want = str(tmp_path / ".cache" / "skclip_jax" / "xla")
    assert compilation_cache.enable() == want and jax.config.jax_compilation_cache_dir == want
    assert compilation_cache.enable(str(tmp_path / "flag")) == str(tmp_path / "flag")
    monkeypatch.setattr(jax, "process_count", lambda: 2)
    assert (
        compilation_cache.enable(str(tmp_path / "flag")) is None
    )  # processes must compile in step.


def test_a_second_process_loads_the_compiled_program(tmp_path):
    code = (
        "import jax, jax.numpy as jnp\n"
        "from skclip_jax import compilation_cache\n"
        "hits = []\n"
        "jax.monitoring.register_event_listener(lambda e, **kw: hits.append(e) if 'cache_hit' in e else None)\n"
        f"compilation_cache.enable({str(tmp_path / 'cache')!r})\n"
        "jax.config.update('jax_persistent_cache_min_compile_time_secs', 0)\n"
        "jax.jit(lambda x: jnp.tanh(x) @ x.T)(jnp.ones((32, 32))).block_until_ready()\n"
        "print('hits', len(hits))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "JAX_COMPILATION_CACHE_DIR"}
    env["PYTHONPATH"] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    hits = []
    for _ in range(2):
        result = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300
        )
        assert result.returncode == 0, result.stderr[-2000:]
        hits.append(int(result.stdout.split("hits")[-1]))
    assert any(e.startswith("jit__lambda") for e in os.listdir(tmp_path / "cache"))
    assert hits[0] == 0 and hits[1] >= 1, hits  # the first compiled and stored, the second loaded.
