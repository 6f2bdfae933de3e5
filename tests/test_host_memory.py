"""host_memory: when the entry points re-execute with glibc's huge-page tunable, and that they do it once."""

import os
import subprocess
import sys

import pytest

from skclip_jax import host_memory

GLIBC = (2, 36)


@pytest.mark.parametrize(
    "environ,glibc,thp,expected",
    [
        ({}, GLIBC, "madvise", "glibc.malloc.hugetlb=1"),
        (
            {"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"},
            GLIBC,
            "madvise",
            "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1",
        ),
        ({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"}, GLIBC, "madvise", None),  # the user's choice
        ({"SKCLIP_JAX_HUGE_PAGES": "0"}, GLIBC, "madvise", None),
        ({}, GLIBC, "always", None),  # huge pages already
        ({}, GLIBC, "never", None),  # no huge pages to ask for
        ({}, GLIBC, None, None),  # not Linux
        ({}, (2, 34), "madvise", None),  # glibc before the tunable
        ({}, None, "madvise", None),  # musl
    ],
)
def test_tunables_with_huge_pages(environ, glibc, thp, expected):
    assert host_memory.tunables_with_huge_pages(environ, glibc, thp) == expected


def test_thp_mode_reads_the_bracketed_word(tmp_path):
    path = tmp_path / "enabled"
    path.write_text("always [madvise] never\n")
    assert host_memory.thp_mode(str(path)) == "madvise"
    path.write_text("[always] madvise never\n")
    assert host_memory.thp_mode(str(path)) == "always"
    assert host_memory.thp_mode(str(tmp_path / "missing")) is None


def test_reexecutes_once_with_the_tunable():
    """A real re-execution where this machine supports it (and none where it does not): the new process sees
    the tunable, the command runs to its end exactly once more, and it does not loop."""
    env = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", host_memory.SWITCH)}
    code = (
        "import os, sys; from skclip_jax import host_memory; "
        "print('start', flush=True); host_memory.reexec_with_huge_pages(); "
        "print('tunables=' + os.environ.get('GLIBC_TUNABLES', ''))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout.split()
    expected = host_memory.tunables_with_huge_pages(
        env, host_memory.glibc_version(), host_memory.thp_mode()
    )
    if expected is None:
        assert out == ["start", "tunables="]
    else:  # the first process printed "start", then became the second, which printed both lines
        assert out == ["start", "start", f"tunables={expected}"]


_RELEASE_CODE = """
import ctypes
from skclip_jax import host_memory
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
libc.mallopt(-3, 1 << 30)  # M_MMAP_THRESHOLD: 64 KB blocks on the heap, as compile-time garbage is
def rss_mb():
    return int(open("/proc/self/status").read().split("VmRSS:")[1].split()[0]) // 1024
blocks = [libc.malloc(64 << 10) for _ in range(4096)]
for b in blocks:
    ctypes.memset(b, 1, 64 << 10)
keep = libc.malloc(64 << 10)
for b in blocks:
    libc.free(b)
before = rss_mb()
released = host_memory.release_free_heap()
print(before, rss_mb(), released)
"""


def test_release_free_heap_returns_freed_heap_pages():
    """Frees 256 MB of 64 KB heap blocks behind a live one (so glibc cannot shrink the heap's top itself): the
    process keeps them resident until release_free_heap() hands them back. A fresh process, so that the RSS is
    this test's alone."""
    if host_memory.glibc_version() is None:
        assert host_memory.release_free_heap() is False
        return
    out = subprocess.run(
        [sys.executable, "-c", _RELEASE_CODE],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout.split()
    before, after, released = int(out[0]), int(out[1]), out[2]
    assert released == "True"
    assert before - after > 200, (before, after)
