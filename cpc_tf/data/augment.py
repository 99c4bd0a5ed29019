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

The random draws of a batch are a function of (seed, batch index) alone
(stateless), so a tf.data map may augment several batches in parallel.
"""

import dataclasses

import keras
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
  def from_config(cls, config):
    """The augmentation named by a run config's fields of the same names
    (`config.AugmentFields`: pretraining, the supervised baseline)."""
    return cls(**{f.name: getattr(config, f.name)
                  for f in dataclasses.fields(cls)})

  @classmethod
  def paper(cls, patch_size):
    """Everything on (§4.1); jitter of patch_size // 16 (at least 1) px."""
    return cls(color_drop=True, auto_augment=True, elastic=True,
               color_jitter=True, jitter=max(1, patch_size // 16), flip=True)


class PatchAugmentation(keras.layers.Layer):
  """`[B, rows, cols, p, p, 3]` float in [0, 1] -> same shape and range.

  `layer(patches, training=True, batch_index=k)` augments each patch with
  its own random parameters, drawn from (seed, k) alone: batch k is
  augmented the same whatever ran before, so a resumed run matches the
  uninterrupted one and a tf.data map may run in parallel. With
  `training=False` (the default) or everything off it returns `patches`
  unchanged.
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
    # Only the Keras layers' parameter distributions and transforms are
    # used: their draws take seeds from `_SeedStream`s, not their own state.
    unit = dict(value_range=(0, 1), dtype="float32")
    geometry = dict(fill_mode="reflect", dtype="float32")
    # Nearest interpolation: whole-pixel shifts without resampling blur (a
    # crop + resize would also rescale); reflection adds no border.
    shift = config.jitter / patch_size
    self.jitter_layer = keras.layers.RandomTranslation(
        shift, shift, interpolation="nearest", **geometry
    ) if config.jitter else None
    self.auto_augment_layers = [
        keras.layers.RandomShear(_SHEAR, _SHEAR, **geometry),
        keras.layers.RandomRotation(_ROTATE, **geometry),
        keras.layers.RandomTranslation(_TRANSLATE, _TRANSLATE, **geometry),
        keras.layers.RandomContrast(0.5, **unit),
        keras.layers.AutoContrast(**unit),
        keras.layers.Equalization(**unit),
        # Threshold uniform over the whole range, as AutoAugment's.
        keras.layers.Solarization(threshold_factor=1.0, **unit),
        keras.layers.RandomPosterization((4, 8), **unit),
        keras.layers.RandomSharpness((0.1, 0.9), **unit),
    ] if config.auto_augment else []
    self.color_jitter_layer = keras.layers.RandomColorJitter(
        brightness_factor=0.2, contrast_factor=0.3,
        saturation_factor=(1 / 3, 2 / 3), hue_factor=0.2, **unit
    ) if config.color_jitter else None

  def build(self, input_shape):
    folded = (None, self.patch_size, self.patch_size, 3)
    for layer in [self.jitter_layer, *self.auto_augment_layers,
                  self.color_jitter_layer]:
      if layer is not None:
        layer.build(folded)

  def call(self, patches, training=False, batch_index=0):
    config = self.config
    if not training or not (config.jitter or config.auto_augment or
                            config.elastic or config.color_jitter or
                            config.color_drop):
      return patches
    if patches.shape[-2] != self.patch_size:
      raise ValueError(f"patches of size {patches.shape[-2]}; this layer "
                       f"was made for patch_size={self.patch_size}")
    # Independent streams: 0 for this layer's own draws, 1 jitter, 2 colour
    # jitter, 3 + i AutoAugment primitive i.
    base = tf.stack([tf.constant(self.seed * 7919, tf.int64),
                     tf.cast(batch_index, tf.int64) * 4096])

    def stream(k):
      return _SeedStream(base + tf.constant([k, 0], tf.int64))

    own = stream(0)
    shape = tf.shape(patches)
    x = tf.reshape(patches, [-1, self.patch_size, self.patch_size, 3])
    if config.jitter:
      x = _run(self.jitter_layer, x, stream(1))
    if config.auto_augment:
      x = self._auto_augment(x, own, [stream(3 + i) for i in range(
          len(self.auto_augment_layers))])
    if config.elastic:
      x = self._elastic(x, own)
    if config.color_jitter:
      x = self._color_jitter(x, stream(2))
    if config.color_drop:
      x = self._color_drop(x, own)
    return tf.reshape(tf.clip_by_value(x, 0.0, 1.0), shape)

  def _auto_augment(self, x, own, streams):
    """Applies `_OPS_PER_PATCH` distinct primitives, drawn per patch.

    Each primitive runs only on the patches that drew it (3x faster than
    running all of them on every patch and selecting).
    """
    num_ops = len(self.auto_augment_layers)
    scores = keras.random.uniform([tf.shape(x)[0], num_ops], seed=own)
    picked = tf.reduce_any(tf.one_hot(
        tf.math.top_k(scores, _OPS_PER_PATCH).indices, num_ops,
        on_value=True, off_value=False), axis=1)
    for i, (op, seed) in enumerate(zip(self.auto_augment_layers, streams)):
      x = _apply_to(lambda images, op=op, seed=seed: _run(op, images, seed),
                    x, picked[:, i])
    return x

  def _elastic(self, x, own):
    """Smooth random displacement field per patch, bilinear resampling.

    Hand-written: keras.layers.RandomElasticTransform unrolls a Python loop
    over the batch and draws x and y displacements from one seed, and
    keras.ops.image.map_coordinates (interpolating along every axis) is ~6x
    slower than gathering whole RGB pixels at the 4 neighbours as here.
    """
    p = self.patch_size
    n = tf.shape(x)[0]
    coarse = keras.random.normal([n, _ELASTIC_GRID, _ELASTIC_GRID, 2],
                                 stddev=_ELASTIC_STD * p, seed=own)
    grid = tf.stack(tf.meshgrid(tf.range(p, dtype=tf.float32),
                                tf.range(p, dtype=tf.float32),
                                indexing="ij"), -1)
    # Bicubic upsampling is separable: tf.image.resize(coarse, [p, p],
    # "bicubic") as one [p, grid] matrix per axis, ~20x cheaper.
    up = tf.image.resize(tf.eye(_ELASTIC_GRID)[None, :, :, None],
                         [p, _ELASTIC_GRID], method="bicubic")[0, :, :, 0]
    source = _reflect(
        grid + tf.einsum("yi,nijc,xj->nyxc", up, coarse, up), p)
    # Top-left neighbour, at most p - 2 so that the other three exist (a
    # source on the last row or column takes weight 1 there).
    low = tf.minimum(tf.floor(source), p - 2.0)
    frac = tf.reshape(source - low, [n, p * p, 2, 1])
    low = tf.cast(tf.reshape(low, [n, p * p, 2]), tf.int32)
    top_left = low[..., 0] * p + low[..., 1]
    # The four neighbours of every pixel in one gather of whole RGB pixels.
    corners = tf.gather(
        tf.reshape(x, [n, p * p, 3]),
        tf.concat([top_left, top_left + 1, top_left + p, top_left + p + 1],
                  1), batch_dims=1)
    a, b, c, d = tf.split(corners, 4, axis=1)
    wy, wx = frac[:, :, 0], frac[:, :, 1]
    top = a + (b - a) * wx
    bottom = c + (d - c) * wx
    return tf.reshape(top + (bottom - top) * wy, [n, p, p, 3])

  def _color_jitter(self, x, seed):
    """keras.layers.RandomColorJitter with the same draws, but saturation
    and hue in one HSV round trip instead of two (rgb_to_hsv is most of its
    cost)."""
    jitter = self.color_jitter_layer
    x = _run(jitter.random_brightness, x, seed)
    contrast = jitter.random_contrast
    change = contrast.get_random_transformation(x, seed=seed)
    # Cast as RandomColorJitter does (its sublayers follow the global
    # policy, e.g. bfloat16).
    change["contrast_factor"] = tf.cast(change["contrast_factor"], x.dtype)
    x = contrast.transform_images(x, change)
    saturation = tf.cast(jitter.random_saturation.get_random_transformation(
        x, seed=seed)["factor"], x.dtype)[:, None, None]
    hue = tf.cast(jitter.random_hue.get_random_transformation(
        x, seed=seed)["factor"], x.dtype)[:, None, None]
    h, s, v = tf.unstack(tf.image.rgb_to_hsv(x), axis=-1)
    s = tf.clip_by_value(s * saturation, 0.0, 1.0)
    h = h + hue  # Wrapped into [0, 1] as RandomHue does (|hue| <= 0.1).
    h = tf.where(h > 1.0, h - 1.0, tf.where(h < 0.0, h + 1.0, h))
    return tf.clip_by_value(tf.image.hsv_to_rgb(tf.stack([h, s, v], -1)),
                            0.0, 1.0)

  def _color_drop(self, x, own):
    """Keeps one random channel per patch, the others mid-gray (0.5)."""
    keep = keras.random.randint([tf.shape(x)[0]], 0, 3, seed=own)
    mask = tf.one_hot(keep, 3, on_value=True, off_value=False)
    return tf.where(mask[:, None, None, :], x, 0.5)


class _SeedStream(keras.random.SeedGenerator):
  """A stateless stand-in for a keras SeedGenerator: draw d uses the seed
  `start + [0, d]`, as a SeedGenerator whose state is `start` would.

  Keras's random ops take a SeedGenerator (a variable, which parallel
  tf.data calls would race for) or a Python int; this counts the draws
  while tracing, so the seeds are tensors computed from the batch index.
  """

  def __init__(self, start):  # pylint: disable=super-init-not-called
    self.start = start
    self.draws = 0

  def next(self, ordered=True):
    del ordered  # Always in order.
    self.draws += 1
    return self.start + tf.constant([0, self.draws - 1], tf.int64)


def _run(layer, images, seed):
  """`layer(images, training=True)` for a Keras preprocessing layer, its
  random parameters drawn from the SeedGenerator `seed`."""
  transformation = layer.get_random_transformation(images, training=True,
                                                   seed=seed)
  return layer.transform_images(images, transformation, training=True)


def _apply_to(fn, images, mask):
  """Applies `fn` to the images where `mask` is true, keeps the others."""
  chosen = tf.where(mask)
  # Skipped when empty: keras.layers.Equalization fails on 0 images.
  return tf.cond(
      tf.size(chosen) > 0,
      lambda: tf.tensor_scatter_nd_update(
          images, chosen, fn(tf.gather_nd(images, chosen))),
      lambda: images)


def _reflect(coords, size):
  """Folds pixel coordinates back into [0, size - 1] by mirroring at the
  borders (d c b a | a b c d | d c b a), as fill_mode="reflect" above."""
  period = 2.0 * size
  folded = coords + 0.5
  # floormod(folded, period), ~3x faster as floor and multiply.
  folded -= period * tf.floor(folded * (1 / period))
  return tf.clip_by_value(tf.minimum(folded, period - folded) - 0.5, 0.0,
                          size - 1.0)
