"""Image sources, patch grids, per-patch augmentation, tf.data pipelines."""
