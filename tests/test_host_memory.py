"""host_memory: which allocator the entry points re-execute with, that they do it once, and the heap release."""

import os
import subprocess
import sys

import pytest

from skclip_jax import host_memory

GLIBC = (2, 36)
JE = "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"
JE_ENV = {"LD_PRELOAD": JE, "MALLOC_CONF": host_memory.JEMALLOC_CONF}
HUGE = {"GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"}


@pytest.mark.parametrize(
    "environ,glibc,thp,jemalloc,expected",
    [
        ({}, GLIBC, "madvise", JE, JE_ENV),  # auto: jemalloc where installed
        ({}, GLIBC, "madvise", None, HUGE),  # else glibc's huge pages
        ({"SKCLIP_JAX_ALLOCATOR": "glibc"}, GLIBC, "madvise", JE, HUGE),
        ({"SKCLIP_JAX_ALLOCATOR": "jemalloc"}, None, None, JE, JE_ENV),
        ({"SKCLIP_JAX_ALLOCATOR": "system"}, GLIBC, "madvise", JE, None),
        (
            {"LD_PRELOAD": "/opt/libjemalloc.so"},
            GLIBC,
            "madvise",
            JE,
            None,
        ),  # the user's (or our) jemalloc
        (
            {"LD_PRELOAD": "/opt/libfoo.so", "MALLOC_CONF": "narenas:2"},
            GLIBC,
            "madvise",
            JE,
            {"LD_PRELOAD": f"{JE}:/opt/libfoo.so", "MALLOC_CONF": "narenas:2"},
        ),
        (
            {"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"},
            GLIBC,
            "madvise",
            None,
            {"GLIBC_TUNABLES": "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1"},
        ),
        ({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"}, GLIBC, "madvise", None, None),  # the user's
        ({}, GLIBC, "always", None, None),  # huge pages already
        ({}, GLIBC, "never", None, None),  # no huge pages to ask for
        ({}, GLIBC, None, None, None),  # not Linux
        ({}, (2, 34), "madvise", None, None),  # glibc before the tunable
        ({}, None, "madvise", None, None),  # musl
    ],
)
def test_allocator_env(environ, glibc, thp, jemalloc, expected):
    assert host_memory.allocator_env(environ, glibc, thp, jemalloc) == expected


@pytest.mark.parametrize(
    "environ,jemalloc,message",
    [
        ({"SKCLIP_JAX_ALLOCATOR": "tcmalloc"}, JE, "expected one of auto, jemalloc, glibc, system"),
        ({"SKCLIP_JAX_ALLOCATOR": "jemalloc"}, None, "apt-get install libjemalloc2"),
    ],
)
def test_allocator_env_rejects_bad_choices(environ, jemalloc, message):
    with pytest.raises(ValueError, match=message):
        host_memory.allocator_env(environ, GLIBC, "madvise", jemalloc)


def test_bad_allocator_choice_exits_with_a_message():
    env = dict(os.environ, SKCLIP_JAX_ALLOCATOR="tcmalloc")
    env.pop("LD_PRELOAD", None)
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            "from skclip_jax import host_memory as h; h.reexec_with_fast_allocator()",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1
    assert proc.stderr.strip() == (
        "error: SKCLIP_JAX_ALLOCATOR='tcmalloc': expected one of auto, jemalloc, glibc, system"
    )


def test_thp_mode_reads_the_bracketed_word(tmp_path):
    path = tmp_path / "enabled"
    path.write_text("always [madvise] never\n")
    assert host_memory.thp_mode(str(path)) == "madvise"
    path.write_text("[always] madvise never\n")
    assert host_memory.thp_mode(str(path)) == "always"
    assert host_memory.thp_mode(str(tmp_path / "missing")) is None


def _clean_env(**extra):
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("GLIBC_TUNABLES", "LD_PRELOAD", "MALLOC_CONF", host_memory.ALLOCATOR_SWITCH)
    }
    return dict(env, **extra)


def _python_output(code: str, env: dict[str, str]) -> list[str]:
    """The words a fresh ``python -c code`` prints under ``env`` (it must succeed)."""
    return subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout.split()


def test_reexecutes_once_with_the_allocator():
    """A real re-execution where this machine has something to switch to (and none where it has not): the new
    process runs under the chosen allocator, the command runs to its end exactly once more, and it does not
    loop."""
    env = _clean_env()
    code = (
        "from skclip_jax import host_memory as h; "
        "print('start', flush=True); h.reexec_with_fast_allocator(); print(h.current_allocator())"
    )
    out = _python_output(code, env)
    expected = host_memory.allocator_env(
        env, host_memory.glibc_version(), host_memory.thp_mode(), host_memory.find_jemalloc()
    )
    if expected is None:
        assert out == ["start", "glibc" if host_memory.glibc_version() else "other"]
    else:  # the first process printed "start", then became the second, which printed both lines
        allocator = "jemalloc" if "LD_PRELOAD" in expected else "glibc+hugetlb"
        assert out == ["start", "start", allocator]


_RELEASE_CODE = """
import ctypes
from skclip_jax import host_memory
process = ctypes.CDLL(None)  # the allocator in use (a preloaded jemalloc's malloc, else glibc's)
process.malloc.restype = ctypes.c_void_p
process.malloc.argtypes = [ctypes.c_size_t]
process.free.argtypes = [ctypes.c_void_p]
if host_memory.current_allocator().startswith("glibc"):
    process.mallopt(-3, 1 << 30)  # M_MMAP_THRESHOLD: 64 KB blocks on the heap, as compile-time garbage is
def rss_mb():
    return int(open("/proc/self/status").read().split("VmRSS:")[1].split()[0]) // 1024
blocks = [process.malloc(64 << 10) for _ in range(4096)]
for b in blocks:
    ctypes.memset(b, 1, 64 << 10)
keep = process.malloc(64 << 10)
for b in blocks:
    process.free(b)
before = rss_mb()
released = host_memory.release_free_heap()
print(host_memory.current_allocator(), before, rss_mb(), released)
"""


@pytest.mark.parametrize("allocator", ["glibc", "jemalloc"])
def test_release_free_heap_returns_freed_pages(allocator):
    """Frees 256 MB of 64 KB blocks behind a live one (glibc cannot shrink its heap's top; jemalloc, told to
    keep freed pages, keeps them): the process holds them until release_free_heap() hands them back. A fresh
    process, so the RSS is this test's alone."""
    if host_memory.glibc_version() is None:
        assert host_memory.release_free_heap() is False
        return
    env = _clean_env()
    if allocator == "jemalloc":
        path = host_memory.find_jemalloc()
        if path is None:
            pytest.skip("libjemalloc.so.2 is not installed here (apt-get install libjemalloc2)")
        env.update(LD_PRELOAD=path, MALLOC_CONF=host_memory.JEMALLOC_CONF)
    out = _python_output(_RELEASE_CODE, env)
    name, before, after, released = out[0], int(out[1]), int(out[2]), out[3]
    assert name == allocator
    assert released == "True"
    assert before - after > 200, (before, after)


def test_trainer_dispatches_one_train_step_at_a_time_on_cpu(tiny_dataset, tmp_path, monkeypatch):
    """On CPU each train step is awaited before the next is dispatched (``one_step_at_a_time``): XLA:CPU
    allocates a step's temp at dispatch, and two in flight keep two temps resident under jemalloc. The spy
    records the order of the trainer's train calls and its waits on the state."""
    from configs import demo
    from skclip_jax import steps as steps_lib
    from skclip_jax import train

    assert host_memory.one_step_at_a_time("cpu")
    assert not host_memory.one_step_at_a_time("gpu") and not host_memory.one_step_at_a_time("tpu")
    config = demo.get_config("tiny")
    config.data.data_dir = tiny_dataset.data_dir
    config.total_steps = 3
    config.eval_every_steps = config.checkpoint_every_steps = config.log_every_steps = 3
    events = []
    compile_steps = steps_lib.compile_steps

    def spying_compile_steps(*args, **kwargs):
        steps = compile_steps(*args, **kwargs)

        def spy_train(state, *rest):
            events.append("train")
            return steps.train(state, *rest)

        return steps_lib.CompiledSteps(spy_train, steps.encode_classes, steps.eval)

    def spying_block_until_ready(x):
        events.append("wait")
        return block_until_ready(x)

    block_until_ready = train.jax.block_until_ready
    monkeypatch.setattr(steps_lib, "compile_steps", spying_compile_steps)
    monkeypatch.setattr(train.jax, "block_until_ready", spying_block_until_ready)
    train.train_and_evaluate(config, str(tmp_path))
    first_eval_wait = len(events) - events[::-1].index("train")
    assert events[:first_eval_wait] == ["wait", "train"] * 3
