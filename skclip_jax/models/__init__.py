"""Flax modules: the SlowOnly video tower, the BERT text tower and the two-tower SkeletonCLIP++ model."""
