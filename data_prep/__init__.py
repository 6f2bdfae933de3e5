"""Offline converters from pose annotations to TFDS datasets of keypoints.

skclip_jax never imports this package; it only reads the datasets it writes.
"""
