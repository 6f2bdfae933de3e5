"""SkeletonCLIP++ in JAX/Flax: skeleton heatmap video encoder + BERT text encoder, WFI, SSM and CSI."""
