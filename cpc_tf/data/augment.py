"""Per-patch augmentation: every patch transformed on its own (§4.1).

§4.1 removes low-level cues shared by neighbouring patches by augmenting
each patch independently: CPC v1's spatial jitter, colour dropping ("RC" in
Fig. 3) and "further patch-based augmentation" ("PA"): AutoAugment's
primitives (Cubuk et al.), elastic deformations and colour transforms.

All patches of a batch are folded into one batch `[N, p, p, 3]`; every
random choice and parameter is drawn per patch. Each family applies to a
patch with its own probability (our choice where the paper gives none:
1.0, every patch, as §4.1 reads). The order, also ours, keeps each
family's effect:

  spatial jitter -> 2 AutoAugment primitives -> elastic -> colour dropping
  -> colour jitter

Colour jitter comes after dropping, so a dropped patch keeps its jittered
brightness, contrast, saturation and hue (before, dropping discarded most
of it); dropping still removes the cross-channel cues, which jitter with
its own per-patch draws cannot restore.

The primitives are keras-cv layers where keras-cv has the op, Keras's
where keras-cv's is not per patch (Posterization: one bit depth per
layer), ignores its seed (Color) or is missing (Invert); `Equalize` is
written here. The random draws of a batch are a function of (seed, batch
index) alone (stateless), so a tf.data map may augment several batches in
parallel and a resumed run augments as the original did.
"""

import dataclasses

import keras
import keras_cv
import tensorflow as tf

# AutoAugment's ImageNet primitives (Cubuk et al., Table 6) and their
# magnitude ranges, scaled to a patch: translation and cutout sizes are
# fractions of the patch side; enhancement factors 0.1..1.9 as PIL's.
_SHEAR = 0.3
_TRANSLATE = 0.3
_ROTATE = 30 / 360  # Fraction of a full turn.
_ENHANCE = 0.9  # Factors 1 +- 0.9.
_CUTOUT = (0.1, 0.4)
# Primitives per augmented patch, two distinct ones as AutoAugment's
# sub-policies (and RandAugment's N=2).
_OPS_PER_PATCH = 2
# Elastic deformation: a coarse grid of Gaussian displacements (std in
# fractions of the patch side), smoothly upsampled to the patch.
_ELASTIC_GRID = 3
_ELASTIC_STD = 0.08
FAMILIES = ("auto_augment", "elastic", "color_drop", "color_jitter")


def primitive_layers():
  """{AutoAugment primitive: its layer, float32 on [0, 1] images}."""
  # The seed is never drawn from (`_run_keras_cv` swaps in stateless draws);
  # without one keras-cv takes TensorFlow's global generator, which
  # --deterministic (op determinism) forbids.
  unit = dict(value_range=(0, 1), dtype="float32", seed=1)
  reflect = dict(fill_mode="reflect", dtype="float32", seed=1)
  cv = keras_cv.layers
  return {
      "shear_x": cv.RandomShear(x_factor=_SHEAR, **reflect),
      "shear_y": cv.RandomShear(y_factor=_SHEAR, **reflect),
      "translate_x": cv.RandomTranslation(0.0, _TRANSLATE, **reflect),
      "translate_y": cv.RandomTranslation(_TRANSLATE, 0.0, **reflect),
      "rotate": cv.RandomRotation(_ROTATE, **reflect),
      "auto_contrast": cv.AutoContrast(**unit),
      "invert": keras.layers.RandomInvert((1.0, 1.0), **unit),
      "equalize": Equalize(),
      # Threshold uniform over the whole range (in keras-cv's 0..255), as
      # AutoAugment's.
      "solarize": cv.Solarization(threshold_factor=(0, 255), **unit),
      # 4..8 bits, as AutoAugment's (the upper bound is exclusive).
      "posterize": keras.layers.RandomPosterization((4, 9), **unit),
      "contrast": cv.RandomContrast(factor=_ENHANCE, **unit),
      # Blends towards gray by f in [-0.9, 0.9], i.e. PIL's Color factor
      # 1 - f in [0.1, 1.9]. Keras's: keras-cv's ignores its seed and takes
      # the global generator.
      "color": keras.layers.RandomColorDegeneration(_ENHANCE, **unit),
      # keras-cv adds a shift (here up to +-0.3) instead of PIL's factor.
      "brightness": cv.RandomBrightness(_ENHANCE / 3, **unit),
      # Blend towards keras-cv's smoothed patch: 0 is the identity.
      "sharpness": cv.RandomSharpness(_ENHANCE, **unit),
      "cutout": cv.RandomCutout(_CUTOUT, _CUTOUT, fill_value=0.5,
                                dtype="float32", seed=1),
  }


class Equalize(keras.layers.Layer):
  """Histogram equalization of each image and channel: a value becomes the
  share of the other values below it, PIL's (and AutoAugment's) cumulative
  histogram lookup without its 8-bit bins. Hand-written: keras-cv's
  Equalization, like PIL's, leaves images of fewer than 256 pixels (an 8x8
  patch) unchanged, its histogram step rounding to 0."""

  def __init__(self, **kwargs):
    super().__init__(dtype="float32", **kwargs)

  def call(self, images):
    shape = tf.shape(images)
    pixels = shape[1] * shape[2]
    # [n * channels, pixels]: one row per image and channel.
    rows = tf.reshape(tf.transpose(images, [0, 3, 1, 2]), [-1, pixels])
    ordered = tf.sort(rows, axis=-1)
    below = tf.searchsorted(ordered, rows, side="left")
    # PIL's lookup reaches 1 at the top value: divide by the pixels that
    # are not at the top.
    not_top = tf.searchsorted(ordered, ordered[:, -1:], side="left")
    out = tf.where(not_top > 0,
                   tf.cast(below, tf.float32) /
                   tf.cast(tf.maximum(not_top, 1), tf.float32), rows)
    return tf.transpose(tf.reshape(out, tf.gather(shape, [0, 3, 1, 2])),
                        [0, 2, 3, 1])


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
  """Which augmentations to apply; all off (the identity) by default.

  Attributes:
    color_drop: keep one of the three channels chosen at random and set
      the other two to 0.5 (mid-gray), "RC" in §4.1.
    auto_augment: two distinct AutoAugment primitives, out of `
      primitive_layers()`, chosen per patch.
    elastic: a random smooth elastic deformation.
    color_jitter: random brightness, contrast, saturation and hue.
    jitter: translate each patch by up to this many whole pixels (CPC v1's
      spatial jitter), reflecting at the borders; 0 is off.
    flip: random horizontal flip of the whole image, done by the pipeline
      before patches are cut (not per patch).
    *_prob: the probability that a patch gets that family, when it is on.
  """
  color_drop: bool = False
  auto_augment: bool = False
  elastic: bool = False
  color_jitter: bool = False
  jitter: int = 0
  flip: bool = False
  color_drop_prob: float = 1.0
  auto_augment_prob: float = 1.0
  elastic_prob: float = 1.0
  color_jitter_prob: float = 1.0

  def __post_init__(self):
    for family in FAMILIES:
      prob = getattr(self, f"{family}_prob")
      if not 0.0 <= prob <= 1.0:
        raise ValueError(f"{family}_prob={prob}; allowed: 0 <= p <= 1")

  def active(self, family):
    """Whether `family` can change a patch: on, with probability > 0."""
    return getattr(self, family) and getattr(self, f"{family}_prob") > 0

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
  its own random choices and parameters, drawn from (seed, k) alone: batch
  k is augmented the same whatever ran before, so a resumed run matches the
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
    # Nearest interpolation: whole-pixel shifts without resampling blur (a
    # crop + resize would also rescale); reflection adds no border.
    shift = config.jitter / patch_size
    self.jitter_layer = keras.layers.RandomTranslation(
        shift, shift, interpolation="nearest", fill_mode="reflect",
        dtype="float32") if config.jitter else None
    self.primitives = primitive_layers() if config.auto_augment else {}
    self.color_jitter_layer = keras.layers.RandomColorJitter(
        brightness_factor=0.2, contrast_factor=0.3,
        saturation_factor=(1 / 3, 2 / 3), hue_factor=0.2, value_range=(0, 1),
        dtype="float32") if config.color_jitter else None

  def build(self, input_shape):
    folded = (None, self.patch_size, self.patch_size, 3)
    for layer in [self.jitter_layer, *self.primitives.values(),
                  self.color_jitter_layer]:
      if layer is not None:
        layer.build(folded)

  def call(self, patches, training=False, batch_index=0):
    config = self.config
    if not training or not (config.jitter or any(
        config.active(f) for f in FAMILIES)):
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
    n = tf.shape(x)[0]

    def chosen(family):
      """Per patch: does it get `family` (drawn with its probability)?"""
      return keras.random.uniform([n], seed=own) < getattr(
          config, f"{family}_prob")

    if config.jitter:
      x = _run(self.jitter_layer, x, stream(1))
    if config.active("auto_augment"):
      x = self._auto_augment(x, own, chosen("auto_augment"), stream)
    if config.active("elastic"):
      x = _apply_to(lambda images: self._elastic(images, own), x,
                    chosen("elastic"))
    if config.active("color_drop"):
      x = self._color_drop(x, own, chosen("color_drop"))
    if config.active("color_jitter"):
      x = _apply_to(lambda images: self._color_jitter(images, stream(2)), x,
                    chosen("color_jitter"))
    return tf.reshape(tf.clip_by_value(x, 0.0, 1.0), shape)

  def apply_primitive(self, name, images, seed):
    """AutoAugment primitive `name` on every image of `[n, p, p, 3]`, its
    parameters drawn per image from the `_SeedStream` `seed`."""
    layer = self.primitives[name]
    if isinstance(layer, Equalize):
      return layer(images)
    if isinstance(layer, keras_cv.layers.VectorizedBaseImageAugmentationLayer):
      return _run_keras_cv(layer, images, seed)
    return _run(layer, images, seed)

  def _auto_augment(self, x, own, augmented, stream):
    """On the `augmented` patches, `_OPS_PER_PATCH` distinct primitives
    drawn per patch; each primitive runs only on the patches that drew it.

    The choice is hand-written: keras-cv's RandomAugmentationPipeline makes
    it per patch too, but maps over the patches one at a time and draws
    from a stateful generator (16x slower on a batch of 1,568 8x8 patches,
    and not reproducible in a parallel map).
    """
    names = list(self.primitives)
    scores = keras.random.uniform([tf.shape(x)[0], len(names)], seed=own)
    picked = tf.reduce_any(tf.one_hot(
        tf.math.top_k(scores, _OPS_PER_PATCH).indices, len(names),
        on_value=True, off_value=False), axis=1) & augmented[:, None]
    for i, name in enumerate(names):
      x = _apply_to(
          lambda images, name=name, seed=stream(3 + i): self.apply_primitive(
              name, images, seed), x, picked[:, i])
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

  def _color_drop(self, x, own, dropped):
    """On the `dropped` patches, keeps one random channel, the others
    mid-gray (0.5)."""
    keep = keras.random.randint([tf.shape(x)[0]], 0, 3, seed=own)
    mask = tf.one_hot(keep, 3, on_value=True, off_value=False) | (
        ~dropped[:, None])
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


class _StatelessDraws:
  """A keras-cv layer's random sources, drawn from a `_SeedStream`.

  keras-cv's layers draw from a stateful tf.random.Generator and
  op-seeded FactorSamplers, which a parallel tf.data map cannot reproduce;
  `_run_keras_cv` swaps in these for one call: the same distributions,
  seeds from (seed, batch index).
  """

  def __init__(self, stream):
    self.stream = stream

  def uniform(self, shape, minval=0.0, maxval=None, dtype=tf.float32):
    return tf.random.stateless_uniform(shape, self.stream.next(), minval,
                                       maxval, dtype)


class _StatelessUniform(keras_cv.core.FactorSampler):
  """A keras-cv UniformFactorSampler's range, drawn from `_StatelessDraws`."""

  def __init__(self, draws, lower, upper):
    self.draws, self.lower, self.upper = draws, lower, upper

  def __call__(self, shape=(), dtype="float32"):
    return self.draws.uniform(shape, self.lower, self.upper, dtype)


def _run_keras_cv(layer, images, seed):
  """A keras-cv layer's transform of `images`, its parameters per image from
  the `_SeedStream` `seed` (its own random sources restored after)."""
  draws = _StatelessDraws(seed)
  swapped = {"_random_generator": draws}
  for name, value in vars(layer).items():
    if isinstance(value, keras_cv.core.UniformFactorSampler):
      swapped[name] = _StatelessUniform(draws, value.lower, value.upper)
  saved = {name: vars(layer)[name] for name in swapped}
  try:
    for name, value in swapped.items():
      object.__setattr__(layer, name, value)
    transformation = layer.get_random_transformation_batch(
        tf.shape(images)[0], images=images)
    return layer.augment_images(images, transformation)
  finally:
    for name, value in saved.items():
      object.__setattr__(layer, name, value)


def _run(layer, images, seed):
  """`layer(images, training=True)` for a Keras preprocessing layer, its
  random parameters drawn from the SeedGenerator `seed`."""
  transformation = layer.get_random_transformation(images, training=True,
                                                   seed=seed)
  return layer.transform_images(images, transformation, training=True)


def _apply_to(fn, images, mask):
  """Applies `fn` to the images where `mask` is true, keeps the others."""
  chosen = tf.where(mask)
  # Skipped when empty: some keras-cv layers fail on 0 images.
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
