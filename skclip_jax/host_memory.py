"""Transparent huge pages for the host's large buffers: glibc's ``malloc.hugetlb`` tunable, set at start-up.

Why: XLA:CPU takes its buffers from ``malloc``. glibc serves every request above 32 MiB with a fresh ``mmap``
and unmaps it again at ``free``, so each train step touches its gigabytes of activations for the first time,
one 4 KiB page fault at a time. On the 2-core development machine that made an elementwise pass over a
154 MB array 3x slower than with huge pages (0.048 s against 0.016 s). The GEMM forms of the convolutions
(``models/conv_impl.py``) copy and pad large arrays and gain; XLA's conv op does not (README "Benchmarks").
With ``GLIBC_TUNABLES=glibc.malloc.hugetlb=1`` glibc asks the kernel for transparent huge pages
(``madvise``) on those regions: 2 MiB pages, 512x fewer faults. PyTorch's peer gets the same effect from
jemalloc, which keeps freed memory mapped.

glibc reads tunables once, when the process starts, so the command-line entry points call
``reexec_with_huge_pages()`` first thing in their ``__main__`` blocks (their modules import little at the
top): it re-executes the same command with the tunable added, once. Nothing happens where it cannot help:
not Linux with glibc >= 2.35, transparent huge pages set to ``never`` (or already ``always``), the tunable
already present, or ``SKCLIP_JAX_HUGE_PAGES=0``.

Compiling a step leaves the heap full of freed blocks (XLA's and LLVM's working memory: 0.7 GB for the
paper-size train step) that glibc keeps for reuse but that the step's own buffers, fresh ``mmap`` regions,
never reuse, so they sat in the process's peak RSS under every step. ``release_free_heap()`` (glibc's
``malloc_trim(0)``) hands those pages back; the entry points call it once after each compilation.
"""

import ctypes
import logging
import os
import sys

TUNABLE = "glibc.malloc.hugetlb"
SWITCH = "SKCLIP_JAX_HUGE_PAGES"  # "0" keeps glibc's defaults
THP_MODE_FILE = "/sys/kernel/mm/transparent_hugepage/enabled"
_MIN_GLIBC = (2, 35)  # the first glibc with malloc.hugetlb


def glibc_version() -> tuple[int, int] | None:
    """``(major, minor)`` of the running glibc, or None (another libc, or not Linux)."""
    try:
        name, version = os.confstr("CS_GNU_LIBC_VERSION").split()
        major, minor = version.split(".")[:2]
        return (int(major), int(minor)) if name == "glibc" else None
    except (AttributeError, OSError, ValueError):
        return None


def thp_mode(path: str = THP_MODE_FILE) -> str | None:
    """The kernel's transparent-huge-page mode (``always``, ``madvise`` or ``never``), or None if unknown."""
    try:
        with open(path) as f:
            text = f.read()
    except OSError:
        return None
    for word in text.split():
        if word.startswith("[") and word.endswith("]"):
            return word[1:-1]
    return None


def tunables_with_huge_pages(
    environ: dict[str, str], glibc: tuple[int, int] | None, thp: str | None
) -> str | None:
    """The ``GLIBC_TUNABLES`` value to re-execute with, or None when re-executing would not help."""
    if environ.get(SWITCH, "1") == "0" or glibc is None or glibc < _MIN_GLIBC or thp != "madvise":
        return None
    current = environ.get("GLIBC_TUNABLES", "")
    if TUNABLE in current:  # set by the user, or by our own re-execution: never loop
        return None
    return f"{current}:{TUNABLE}=1" if current else f"{TUNABLE}=1"


def this_process_tunables() -> str | None:
    """``tunables_with_huge_pages`` for this process's environment, glibc and kernel."""
    return tunables_with_huge_pages(dict(os.environ), glibc_version(), thp_mode())


def reexec_with_huge_pages() -> None:
    """Re-executes this process's command with huge pages for malloc's large buffers, if that helps (above).

    Call it first thing in a ``__main__`` block: everything done before it is done twice.
    """
    value = this_process_tunables()
    if value is None or not getattr(sys, "orig_argv", None):
        return
    env = dict(os.environ, GLIBC_TUNABLES=value)
    logging.getLogger(__name__).debug("re-executing with GLIBC_TUNABLES=%s", value)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, sys.orig_argv, env)


def release_free_heap() -> bool:
    """Returns the free pages of glibc's heaps to the kernel (``malloc_trim(0)``); True if any went back.

    One pass over the free lists, safe while other threads allocate; meant for once after a step is compiled,
    whose freed working memory would otherwise stay resident (module docstring). False without glibc.
    """
    if glibc_version() is None:
        return False
    try:
        return bool(ctypes.CDLL(None).malloc_trim(0))
    except (AttributeError, OSError):
        return False
