"""Offline converters from pose annotations to TFDS datasets of keypoints (never imported by skclip_jax)."""
