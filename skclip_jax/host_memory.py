"""The host allocator for XLA:CPU's large buffers: jemalloc that keeps freed pages, or glibc with huge pages.

Why: XLA:CPU takes each step's temporary buffer (gigabytes at the paper's sizes) from ``malloc`` and frees it
at the step's end. glibc serves every request above 32 MiB with a fresh ``mmap`` and unmaps it at ``free``, so
each step faults its gigabytes in again and the kernel zeroes every page; transparent huge pages
(``GLIBC_TUNABLES=glibc.malloc.hugetlb=1``) make the faults fewer but the zeroing stays. jemalloc configured
never to return freed pages to the kernel (``MALLOC_CONF=dirty_decay_ms:-1,muzzy_decay_ms:-1``, what the
PyTorch peer runs with) reuses them, and the step runs faster (docs/design.md "The host allocator"). It needs
one step at a time (``one_step_at_a_time``): a step dispatched while another runs gets a temp of its own, and
jemalloc would keep both.

Allocators are chosen when a process starts, so the command-line entry points call ``reexec_with_fast_allocator()``
first thing in their ``__main__`` blocks (their modules import little at the top): it re-executes the same
command once with ``LD_PRELOAD`` naming jemalloc where the library is installed (Debian/Ubuntu:
``apt-get install libjemalloc2``), else with glibc's huge-page tunable where glibc >= 2.35 and the kernel's THP
mode is ``madvise``. ``SKCLIP_JAX_ALLOCATOR`` picks: ``auto`` (default), ``jemalloc``, ``glibc`` (huge pages) or
``system`` (leave the process as started); a process already under jemalloc, or with the tunable set, is left
as it is.

Compiling a step leaves the allocator holding freed blocks (XLA's and LLVM's working memory) that the step's
buffers do not reuse, so they sat in the peak RSS under every step. ``release_free_heap()`` hands them back
(jemalloc: purge every arena; glibc: ``malloc_trim(0)``); the entry points call it once after each compilation,
and the trainer before each evaluation too (the train step's kept temp would otherwise lie under the eval step's
memory).
"""

import ctypes
import ctypes.util
import logging
import os
import sys

ALLOCATOR_SWITCH = "SKCLIP_JAX_ALLOCATOR"
ALLOCATORS = ("auto", "jemalloc", "glibc", "system")
TUNABLE = "glibc.malloc.hugetlb"
THP_MODE_FILE = "/sys/kernel/mm/transparent_hugepage/enabled"
_MIN_GLIBC = (2, 35)  # the first glibc with malloc.hugetlb
# Keep every freed page mapped for reuse (no decay to the kernel); the peer's setting.
JEMALLOC_CONF = "dirty_decay_ms:-1,muzzy_decay_ms:-1"
_JEMALLOC_PATHS = (
    "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2",
    "/usr/lib/aarch64-linux-gnu/libjemalloc.so.2",
    "/usr/lib64/libjemalloc.so.2",
    "/usr/lib/libjemalloc.so.2",
    "/usr/local/lib/libjemalloc.so.2",
)
_MALLCTL_ARENAS_ALL = 4096  # jemalloc's "every arena" index in mallctl names


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


def find_jemalloc(paths: tuple[str, ...] = _JEMALLOC_PATHS) -> str | None:
    """The path of an installed ``libjemalloc.so.2``, or None."""
    for path in paths:
        if os.path.exists(path):
            return path
    return ctypes.util.find_library("jemalloc") if sys.platform.startswith("linux") else None


def tunables_with_huge_pages(
    environ: dict[str, str], glibc: tuple[int, int] | None, thp: str | None
) -> str | None:
    """The ``GLIBC_TUNABLES`` value that adds huge pages, or None when it would not help or is set already."""
    if glibc is None or glibc < _MIN_GLIBC or thp != "madvise":
        return None
    current = environ.get("GLIBC_TUNABLES", "")
    if TUNABLE in current:  # set by the user, or by our own re-execution: never loop
        return None
    return f"{current}:{TUNABLE}=1" if current else f"{TUNABLE}=1"


def allocator_env(
    environ: dict[str, str],
    glibc: tuple[int, int] | None,
    thp: str | None,
    jemalloc: str | None,
) -> dict[str, str] | None:
    """The environment variables to re-execute with, or None when the process should stay as it is.

    Args:
      environ: the process's environment (``SKCLIP_JAX_ALLOCATOR``, ``LD_PRELOAD``, ``MALLOC_CONF``,
        ``GLIBC_TUNABLES``).
      glibc: ``glibc_version()``; thp: ``thp_mode()``; jemalloc: ``find_jemalloc()``.

    Raises:
      ValueError: an unknown ``SKCLIP_JAX_ALLOCATOR``, or ``jemalloc`` asked for and not installed.
    """
    choice = environ.get(ALLOCATOR_SWITCH, "auto") or "auto"
    if choice not in ALLOCATORS:
        raise ValueError(f"{ALLOCATOR_SWITCH}={choice!r}: expected one of {', '.join(ALLOCATORS)}")
    preload = environ.get("LD_PRELOAD", "")
    if choice == "system" or "jemalloc" in preload:  # the user's choice, or our own re-execution
        return None
    if choice in ("auto", "jemalloc") and jemalloc:
        return {
            "LD_PRELOAD": f"{jemalloc}:{preload}" if preload else jemalloc,
            "MALLOC_CONF": environ.get("MALLOC_CONF") or JEMALLOC_CONF,
        }
    if choice == "jemalloc":
        raise ValueError(
            f"{ALLOCATOR_SWITCH}=jemalloc, but no libjemalloc.so.2 is installed "
            "(Debian/Ubuntu: apt-get install libjemalloc2)"
        )
    tunables = tunables_with_huge_pages(environ, glibc, thp)
    return {"GLIBC_TUNABLES": tunables} if tunables else None


def this_process_allocator_env() -> dict[str, str] | None:
    """``allocator_env`` for this process's environment, glibc, kernel and installed libraries."""
    return allocator_env(dict(os.environ), glibc_version(), thp_mode(), find_jemalloc())


def current_allocator() -> str:
    """What serves this process's ``malloc``: ``"jemalloc"``, ``"glibc+hugetlb"`` or ``"glibc"`` (or ``"other"``)."""
    if getattr(ctypes.CDLL(None), "mallctl", None) is not None:
        return "jemalloc"
    if glibc_version() is None:
        return "other"
    return "glibc+hugetlb" if TUNABLE in os.environ.get("GLIBC_TUNABLES", "") else "glibc"


def reexec_with_fast_allocator() -> None:
    """Re-executes this process's command once with the allocator chosen above, if that helps.

    Call it first thing in a ``__main__`` block: everything done before it is done twice. Exits with a message
    (no traceback) on a bad ``SKCLIP_JAX_ALLOCATOR``.
    """
    try:
        changes = this_process_allocator_env()
    except ValueError as e:
        sys.exit(f"error: {e}")
    if not changes or not getattr(sys, "orig_argv", None):
        return
    logging.getLogger(__name__).debug("re-executing with %s", changes)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, sys.orig_argv, dict(os.environ, **changes))


def release_free_heap() -> bool:
    """Returns the allocator's free pages to the kernel; True where the purge ran or glibc released pages.

    Under jemalloc, purges every arena (``mallctl("arena.4096.purge")``, the pages its no-decay setting
    keeps); under glibc, ``malloc_trim(0)``. Milliseconds, and safe while other threads allocate; meant for
    once after a step is compiled (module docstring).
    """
    process = ctypes.CDLL(None)  # the global symbols: a preloaded jemalloc's, else libc's
    mallctl = getattr(process, "mallctl", None)
    if mallctl is not None:
        name = f"arena.{_MALLCTL_ARENAS_ALL}.purge".encode()
        return mallctl(name, None, None, None, ctypes.c_size_t(0)) == 0
    if glibc_version() is None:
        return False
    try:
        return bool(process.malloc_trim(0))
    except AttributeError:
        return False


def one_step_at_a_time(backend: str) -> bool:
    """Whether a training loop should wait for each step to finish before dispatching the next: on CPU, yes.

    Why: XLA:CPU allocates an executable's temporary buffer when the call is dispatched, not when it starts
    running. With steps dispatched back to back, the next step's temp is allocated while the running step's is
    still live. glibc only maps it (untouched pages cost nothing), but jemalloc keeps the pages of both, nearly
    doubling the resident memory. The host has nothing to do between steps that the prefetching thread does not
    already do, so the wait costs no step time. Accelerators keep their queue.
    """
    return backend == "cpu"
