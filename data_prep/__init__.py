"""Offline converters from pose annotations to TFDS datasets of keypoints.

The training driver imports `data_prep.synthetic` to generate the demo's data on first use; otherwise
skclip_jax reads only the datasets these converters write.
"""
