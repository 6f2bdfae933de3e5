"""JAX's persistent compilation cache, on by default for the programs (``main``, ``predict``).

A restarted or resumed run, a second demo, an ``--mode=eval`` after training and every ``predict`` call compile
the same programs again: on 2 CPU cores that is most of their start-up (the demo's train step alone takes ~40 s
to compile). XLA keys each entry on the program, the compiler options, the devices and the jax/jaxlib versions,
so a stale entry is never used. ``JAX_COMPILATION_CACHE_DIR``, when set, wins (the way jax users already
configure it); an empty path turns the cache off.

Multi-process runs leave it off: there process 0 found its programs in the cache while process 1 compiled its
own, so process 0 reached the first collective ~40 s early and gloo's 30 s rendezvous timed out (seen in
``tests/test_multiprocess.py``). Every process compiling keeps them in step.
"""

import os

import jax

DEFAULT_DIR = os.path.join("~", ".cache", "skclip_jax", "xla")


def enable(path: str | None = None) -> str | None:
    """Points JAX's persistent cache at `path` (None: DEFAULT_DIR; ``~`` expanded; "": off).

    Nothing changes when the environment chose a directory or several processes run. Returns the directory in
    use, or None when off. Only programs that took >= 1 s to compile are stored (jax's default).
    """
    chosen = os.environ.get("JAX_COMPILATION_CACHE_DIR")
    if chosen is None:
        if path == "" or jax.process_count() > 1:
            return None
        chosen = os.path.expanduser(DEFAULT_DIR if path is None else path)
        jax.config.update("jax_compilation_cache_dir", chosen)
    return chosen or None
