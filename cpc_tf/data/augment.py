"""Per-patch augmentation: every patch transformed on its own (§4.1).

§4.1 removes low-level cues shared by neighbouring patches by augmenting
each patch independently: CPC v1's spatial jitter, colour dropping ("RC" in
Fig. 3) and "further patch-based augmentation" ("PA"): AutoAugment
primitives (Cubuk et al.), elastic deformations and colour transforms.

All patches of a batch are folded into one batch `[N, p, p, 3]` and every
random parameter is drawn per patch. The Keras layers used here all draw
their parameters per sample (checked in tests/test_augment.py); Keras's
own `RandAugment` picks its operations once per batch and
`RandomElasticTransform` draws one distortion strength per batch, so
neither is used.
"""

import dataclasses

import keras
import numpy as np
import tensorflow as tf

# AutoAugment primitives each patch draws (two distinct ones, like
# RandAugment's N=2), with magnitudes sampled per patch up to these.
_SHEAR = 0.3
_ROTATE = 30 / 360  # Fraction of a full turn.
_TRANSLATE = 0.3  # Fraction of the patch side.
_OPS_PER_PATCH = 2
# Elastic deformation: a coarse grid of Gaussian displacements (std in
# fractions of the patch side), smoothly upsampled to the patch.
_ELASTIC_GRID = 3
_ELASTIC_STD = 0.08


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
  """Which augmentations to apply; all off (the identity) by default.

  Attributes:
    color_drop: keep one of the three channels chosen at random per patch
      and set the other two to 0.5 (mid-gray), "RC" in §4.1.
    auto_augment: two AutoAugment primitives per patch, out of shear,
      rotate, translate, contrast, auto-contrast, equalize, solarize,
      posterize and sharpness.
    elastic: a random smooth elastic deformation of every patch.
    color_jitter: random brightness, contrast, saturation and hue per patch.
    jitter: translate each patch by up to this many whole pixels (CPC v1's
      spatial jitter), reflecting at the borders; 0 is off.
    flip: random horizontal flip of the whole image, done by the pipeline
      before patches are cut (not per patch).
  """
  color_drop: bool = False
  auto_augment: bool = False
  elastic: bool = False
  color_jitter: bool = False
  jitter: int = 0
  flip: bool = False

  @classmethod
  def paper(cls, patch_size):
    """Everything on (§4.1); jitter of patch_size // 16 (at least 1) px."""
    return cls(color_drop=True, auto_augment=True, elastic=True,
               color_jitter=True, jitter=max(1, patch_size // 16), flip=True)


class PatchAugmentation(keras.layers.Layer):
  """`[B, rows, cols, p, p, 3]` float in [0, 1] -> same shape and range.

  `layer(patches, training=True)` augments each patch with its own random
  parameters; with `training=False` (the default) or everything off it
  returns `patches` unchanged. Create it outside `tf.data` (its random
  state is a variable) and map it over batches: the random stream is
  reproducible given `seed` when the map runs sequentially.
  """

  def __init__(self, config, patch_size, seed=None, **kwargs):
    # float32 regardless of the global mixed-precision policy.
    super().__init__(dtype="float32", **kwargs)
    if not 0 <= config.jitter < patch_size:
      raise ValueError(f"jitter={config.jitter}; allowed: 0 <= jitter < "
                       f"patch_size={patch_size}")
    self.config = config
    self.patch_size = patch_size
    self.seed = seed or 0
    # One independent seed per random layer (equal seeds give equal draws).
    rng = np.random.default_rng(seed)

    def new_seed():
      return None if seed is None else int(rng.integers(2**31))

    self.generator = keras.random.SeedGenerator(new_seed())
    unit = dict(value_range=(0, 1), dtype="float32")
    geometry = dict(fill_mode="reflect", dtype="float32")
    # Nearest interpolation: whole-pixel shifts without resampling blur (a
    # crop + resize would also rescale); reflection adds no border.
    shift = config.jitter / patch_size
    self.jitter_layer = keras.layers.RandomTranslation(
        shift, shift, interpolation="nearest", seed=new_seed(),
        **geometry) if config.jitter else None
    self.auto_augment_layers = [
        keras.layers.RandomShear(_SHEAR, _SHEAR, seed=new_seed(), **geometry),
        keras.layers.RandomRotation(_ROTATE, seed=new_seed(), **geometry),
        keras.layers.RandomTranslation(_TRANSLATE, _TRANSLATE,
                                       seed=new_seed(), **geometry),
        keras.layers.RandomContrast(0.5, seed=new_seed(), **unit),
        keras.layers.AutoContrast(**unit),
        keras.layers.Equalization(**unit),
        # Threshold uniform over the whole range, as AutoAugment's.
        keras.layers.Solarization(threshold_factor=1.0, seed=new_seed(),
                                  **unit),
        keras.layers.RandomPosterization((4, 8), seed=new_seed(), **unit),
        keras.layers.RandomSharpness((0.1, 0.9), seed=new_seed(), **unit),
    ] if config.auto_augment else []
    self.color_jitter_layer = keras.layers.RandomColorJitter(
        brightness_factor=0.2, contrast_factor=0.3,
        saturation_factor=(1 / 3, 2 / 3), hue_factor=0.2, seed=new_seed(),
        **unit) if config.color_jitter else None

  def build(self, input_shape):
    folded = (None, self.patch_size, self.patch_size, 3)
    for layer in [self.jitter_layer, *self.auto_augment_layers,
                  self.color_jitter_layer]:
      if layer is not None:
        layer.build(folded)

  def reseed(self, batch_index):
    """Sets every random state of this layer from (seed, batch_index), so
    a batch's augmentation depends only on its index: a resumed run
    augments batch k exactly as the uninterrupted run did. Each state's
    second word counts the draws within the batch."""
    states = [v for v in self.variables if v.dtype != "float32"]
    batch_index = tf.cast(batch_index, "int64")
    ops = []
    for k, state in enumerate(states):
      value = tf.stack([tf.constant(self.seed * 7919 + k, tf.int64),
                        batch_index * 4096])
      ops.append(state.assign(tf.cast(value, state.dtype)))
    return ops

  def call(self, patches, training=False):
    config = self.config
    if not training or not (config.jitter or config.auto_augment or
                            config.elastic or config.color_jitter or
                            config.color_drop):
      return patches
    if patches.shape[-2] != self.patch_size:
      raise ValueError(f"patches of size {patches.shape[-2]}; this layer "
                       f"was made for patch_size={self.patch_size}")
    shape = tf.shape(patches)
    x = tf.reshape(patches, [-1, self.patch_size, self.patch_size, 3])
    if config.jitter:
      x = self.jitter_layer(x, training=True)
    if config.auto_augment:
      x = self._auto_augment(x)
    if config.elastic:
      x = self._elastic(x)
    if config.color_jitter:
      x = self.color_jitter_layer(x, training=True)
    if config.color_drop:
      x = self._color_drop(x)
    return tf.reshape(tf.clip_by_value(x, 0.0, 1.0), shape)

  def _auto_augment(self, x):
    """Applies `_OPS_PER_PATCH` distinct primitives, drawn per patch.

    Each primitive runs only on the patches that drew it (3x faster than
    running all of them on every patch and selecting).
    """
    num_ops = len(self.auto_augment_layers)
    scores = keras.random.uniform([tf.shape(x)[0], num_ops],
                                  seed=self.generator)
    picked = tf.reduce_any(tf.one_hot(
        tf.math.top_k(scores, _OPS_PER_PATCH).indices, num_ops,
        on_value=True, off_value=False), axis=1)
    for i, op in enumerate(self.auto_augment_layers):
      x = _apply_to(op, x, picked[:, i])
    return x

  def _elastic(self, x):
    """Smooth random displacement field per patch, bilinear resampling.

    Hand-written: keras.layers.RandomElasticTransform unrolls a Python loop
    over the batch and draws x and y displacements from one seed, and
    keras.ops.image.map_coordinates (interpolating along every axis) is ~6x
    slower than gathering whole RGB pixels at the 4 neighbours as here.
    """
    p = self.patch_size
    n = tf.shape(x)[0]
    coarse = keras.random.normal([n, _ELASTIC_GRID, _ELASTIC_GRID, 2],
                                 stddev=_ELASTIC_STD * p, seed=self.generator)
    grid = tf.stack(tf.meshgrid(tf.range(p, dtype=tf.float32),
                                tf.range(p, dtype=tf.float32),
                                indexing="ij"), -1)
    source = _reflect(
        grid + tf.image.resize(coarse, [p, p], method="bicubic"), p)
    low = tf.floor(source)
    frac = tf.reshape(source - low, [n, p * p, 2, 1])
    low = tf.cast(low, tf.int32)
    high = tf.minimum(low + 1, p - 1)
    pixels = tf.reshape(x, [n, p * p, 3])

    def corner(rows, cols):
      index = tf.reshape(rows * p + cols, [n, p * p])
      return tf.gather(pixels, index, batch_dims=1)

    wy, wx = frac[:, :, 0], frac[:, :, 1]
    out = ((corner(low[..., 0], low[..., 1]) * (1 - wx) +
            corner(low[..., 0], high[..., 1]) * wx) * (1 - wy) +
           (corner(high[..., 0], low[..., 1]) * (1 - wx) +
            corner(high[..., 0], high[..., 1]) * wx) * wy)
    return tf.reshape(out, [n, p, p, 3])

  def _color_drop(self, x):
    """Keeps one random channel per patch, the others mid-gray (0.5)."""
    keep = keras.random.randint([tf.shape(x)[0]], 0, 3, seed=self.generator)
    mask = tf.one_hot(keep, 3, on_value=True, off_value=False)
    return tf.where(mask[:, None, None, :], x, 0.5)


def _apply_to(layer, images, mask):
  """Runs `layer` on the images where `mask` is true, keeps the others."""
  chosen = tf.where(mask)
  # Skipped when empty: keras.layers.Equalization fails on 0 images.
  return tf.cond(
      tf.size(chosen) > 0,
      lambda: tf.tensor_scatter_nd_update(
          images, chosen, layer(tf.gather_nd(images, chosen), training=True)),
      lambda: images)


def _reflect(coords, size):
  """Folds pixel coordinates back into [0, size - 1] by mirroring at the
  borders (d c b a | a b c d | d c b a), as fill_mode="reflect" above."""
  period = 2.0 * size
  folded = tf.math.floormod(coords + 0.5, period)
  return tf.clip_by_value(tf.minimum(folded, period - folded) - 0.5, 0.0,
                          size - 1.0)
