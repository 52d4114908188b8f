"""Datasets and inputs: folder layouts, the pre- and post-processing every path shares, training samples with
the original's augmentations, and Depth-Anything-V2 pseudo-depth."""
