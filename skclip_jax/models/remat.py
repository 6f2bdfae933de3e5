"""Recomputation in the backward pass that XLA:CPU keeps: values tied to the cotangent so CSE cannot merge them.

``jax.checkpoint`` asks XLA to recompute a function's intermediates in the backward pass instead of keeping
them; it marks the recomputation with ``optimization_barrier`` so that common-subexpression elimination does
not merge it with the forward pass's copy. XLA:CPU removes those barriers before it runs CSE, so the
recomputation is merged back and the intermediate stays alive from the forward pass to its use in the backward
pass: at the paper's sizes (B=8, float32) the 3x3 and stem im2col patches (1.9 GB) and each BatchNorm's
centred input (2.3 GB; no longer written at all, ``batch_norm._batch_stats``) were all alive at the step's peak.

Here the recomputation reads its inputs through ``after(x, cotangent)``: the same values, but data-dependent on
the cotangent, so XLA can neither merge them with the forward pass's (different expression) nor schedule them
before the cotangent exists. The dependency is one scalar added to ``x`` inside the fusion that reads ``x``
anyway, so it costs no memory pass.
"""

import jax
import jax.numpy as jnp


def after(x: jax.Array, dep: jax.Array) -> jax.Array:
    """``x``, unchanged in value, but computed from ``dep`` too (an exact zero derived from its first element).

    ``where(isfinite(d), d, 0) * 0`` is ``0`` for every ``d`` (NaN and inf included), and XLA does not fold a
    float multiply by zero (it would be wrong for NaN), so the dependency survives compilation. Adding ``+0``
    leaves every value of ``x`` as it was (``-0.0`` becomes ``+0.0``, which no consumer here distinguishes).
    """
    d = dep.reshape(-1)[0]
    zero = jnp.where(jnp.isfinite(d), d, jnp.zeros_like(d)) * jnp.zeros_like(d)
    return x + zero.astype(x.dtype)


def recompute_in_backward(fn):
    """``fn(*arrays)`` whose backward pass recomputes its intermediates from its inputs after the cotangent.

    What ``jax.checkpoint(fn)`` intends, in a form XLA:CPU keeps: only the inputs are saved for the backward
    pass; intermediates (im2col patches) are rebuilt there from ``after(input, cotangent)``. Outputs of the
    recomputed forward pass that the backward pass does not use (the product itself) are removed by XLA.
    ``fn`` takes and returns arrays only (bind other arguments with ``functools.partial``).
    """

    @jax.custom_vjp
    def wrapped(*args):
        return fn(*args)

    def forward(*args):
        return fn(*args), args

    def backward(args, g):
        dep = jax.tree_util.tree_leaves(g)[0]
        tied = [after(a, dep) for a in args]
        _, vjp = jax.vjp(fn, *tied)
        return vjp(g)

    wrapped.defvjp(forward, backward)
    return wrapped


def recompute_in_backward_if(enabled: bool):
    """``recompute_in_backward`` when ``enabled`` (``model.slowonly.low_memory``), else ``fn`` unchanged."""
    return recompute_in_backward if enabled else (lambda fn: fn)
