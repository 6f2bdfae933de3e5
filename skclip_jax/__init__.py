"""SkeletonCLIP++ in JAX/Flax: skeleton heatmap video encoder + BERT text encoder, WFI, SSM and CSI.

`skclip_jax.load(workdir)` gives a trained run as an object that ranks action names for a clip
(`skclip_jax.api`).
"""


def load(workdir: str, step: int | None = None):
    """A trained run ready to rank clips: see `skclip_jax.api.load` (imported here lazily: `import skclip_jax`
    stays light for the tools and data converters)."""
    from skclip_jax import api

    return api.load(workdir, step)
