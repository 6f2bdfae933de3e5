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
