"""Per-patch augmentation (cpc_tf/data/augment.py), run inside tf.data."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import flag_error
from conftest import parse_flags
from cpc_tf import config as config_lib
from cpc_tf import eval_config
from cpc_tf.data import augment

P = 8
SWITCHES = {
    "color_drop": augment.AugmentConfig(color_drop=True),
    "auto_augment": augment.AugmentConfig(auto_augment=True),
    "elastic": augment.AugmentConfig(elastic=True),
    "color_jitter": augment.AugmentConfig(color_jitter=True),
    "jitter": augment.AugmentConfig(jitter=2),
}


def run(layer, patches, training=True):
  """Applies `layer` the way the pipeline does: in a tf.data map."""
  dataset = tf.data.Dataset.from_tensors(patches).map(
      lambda x: layer(x, training=training))
  return next(iter(dataset)).numpy()


def tiled(batch=2, rows=7, cols=7):
  """Patches that are all the same random 8x8 RGB patch."""
  patch = np.random.RandomState(0).uniform(0.05, 0.95, (P, P, 3))
  return np.broadcast_to(patch, (batch, rows, cols, P, P, 3)).astype(
      np.float32)


def distinct(patches):
  flat = patches.reshape(-1, P * P * 3).round(4)
  return len(np.unique(flat, axis=0))


def changed(out, patches):
  """Fraction of the patches the augmentation changed."""
  return np.any(np.abs(out - patches) > 1e-6, axis=(-3, -2, -1)).mean()


def seeds(k):
  """A seed stream, as the layer gives each primitive."""
  return augment._SeedStream(  # pylint: disable=protected-access
      tf.constant([k, 17], tf.int64))


def uniform(n=64, size=P, low=0.0, high=1.0, seed=0):
  """`n` random [size, size, 3] images, float32."""
  return np.random.RandomState(seed).uniform(
      low, high, (n, size, size, 3)).astype(np.float32)


@pytest.fixture(scope="module", name="primitive")
def fixture_primitive():
  """primitive(name, images[n, p, p, 3], k=0): the AutoAugment primitive
  `name` as the layer applies it, drawn from seed stream k."""
  layers = {}

  def apply(name, images, k=0):
    size = images.shape[1]
    if size not in layers:
      layers[size] = augment.PatchAugmentation(
          augment.AugmentConfig(auto_augment=True), size, seed=0)
      layers[size].build((None, 1, 1, size, size, 3))
    return layers[size].apply_primitive(name, tf.constant(images),
                                        seeds(k)).numpy()

  return apply


def fitted_factor(out, x, target):
  """Per image, the least-squares f in out = x + f * (target - x)."""
  d = (target - x).reshape(len(x), -1)
  return ((out - x).reshape(len(x), -1) * d).sum(1) / (d * d).sum(1)


@pytest.mark.parametrize("name", SWITCHES)
def test_each_switch_transforms_patches_differently(name):
  patches = tiled()
  out = run(augment.PatchAugmentation(SWITCHES[name], P, seed=1), patches)
  assert out.shape == patches.shape
  # Every patch changes, but for jitter's zero shifts (1 in 25 on average).
  assert changed(out, patches) >= {"jitter": 0.8}.get(name, 1.0)
  # Identical inputs, so differences come from per-patch parameters; colour
  # drop has 3 outcomes, jitter 25 shifts, the others continuous ones.
  assert distinct(out) >= {"color_drop": 3, "jitter": 10}.get(name, 60)
  assert 0.0 <= out.min() and out.max() <= 1.0


def test_from_config_reads_every_switch_of_a_run_config():
  run_config = config_lib.PretrainConfig(color_drop=False, elastic=True,
                                         jitter=3, flip=False)
  assert augment.AugmentConfig.from_config(run_config) == (
      augment.AugmentConfig(auto_augment=True, elastic=True,
                            color_jitter=True, jitter=3))
  supervised = eval_config.SupervisedConfig(auto_augment=False, jitter=0)
  assert augment.AugmentConfig.from_config(supervised) == (
      augment.AugmentConfig(color_drop=True, color_jitter=True, flip=True))


@pytest.mark.parametrize("config_cls", [config_lib.PretrainConfig,
                                        eval_config.SupervisedConfig])
def test_from_config_reads_the_probabilities(config_cls):
  probs = dict(color_drop_prob=0.25, auto_augment_prob=0.5, elastic_prob=0.75,
               color_jitter_prob=0.0)
  got = augment.AugmentConfig.from_config(config_cls(**probs))
  assert {name: getattr(got, name) for name in probs} == probs


@pytest.mark.parametrize("family", augment.FAMILIES)
@pytest.mark.parametrize("prob", [-0.1, 1.5])
def test_probabilities_outside_0_1_are_rejected(family, prob):
  with pytest.raises(ValueError, match=f"{family}_prob={prob}"):
    augment.AugmentConfig(**{family: True, f"{family}_prob": prob})


@pytest.mark.parametrize("config_cls", [config_lib.PretrainConfig,
                                        eval_config.SupervisedConfig])
def test_probability_flag_outside_0_1_stops_in_one_line(config_cls):
  assert flag_error(config_cls, "--model_dir=m", "--color_drop_prob=1.5") == (
      "error: --color_drop_prob=1.5; must be in [0, 1]")
  assert flag_error(config_cls, "--model_dir=m", "--elastic_prob=-0.5") == (
      "error: --elastic_prob=-0.5; must be in [0, 1]")
  config = parse_flags(config_cls, "--model_dir=m", "--color_drop_prob=1",
                       "--auto_augment_prob=0", "--elastic_prob=0.25",
                       "--color_jitter_prob=0.5").validate()
  assert augment.AugmentConfig.from_config(config).elastic_prob == 0.25


@pytest.mark.parametrize("config", [
    augment.AugmentConfig(), augment.AugmentConfig(flip=True),
    augment.AugmentConfig.paper(P)], ids=["off", "flip_only", "paper"])
def test_test_path_is_exact_identity(config):
  patches = np.random.RandomState(1).uniform(size=(2, 3, 3, P, P, 3)).astype(
      np.float32)
  layer = augment.PatchAugmentation(config, P, seed=0)
  np.testing.assert_array_equal(run(layer, patches, training=False), patches)
  if config == augment.AugmentConfig.paper(P):
    return
  # Nothing per patch is on (flip is the pipeline's): identity in training.
  np.testing.assert_array_equal(run(layer, patches), patches)


def test_everything_on_changes_every_patch_its_own_way():
  patches = tiled(batch=2, rows=4, cols=5)
  out = run(augment.PatchAugmentation(augment.AugmentConfig.paper(P), P,
                                      seed=0), patches)
  assert out.shape == patches.shape and out.dtype == np.float32
  assert 0.0 <= out.min() and out.max() <= 1.0
  assert changed(out, patches) == 1.0
  # Identical inputs: distinct outputs come from per-patch parameters.
  assert distinct(out) > 0.9 * out.shape[0] * 4 * 5


def test_color_drop_keeps_exactly_one_channel_per_patch():
  patches = np.random.RandomState(3).uniform(0.6, 1.0, (4, 7, 7, P, P, 3))
  patches = patches.astype(np.float32)
  out = run(augment.PatchAugmentation(augment.AugmentConfig(color_drop=True),
                                      P, seed=0), patches)
  kept = np.all(out == patches, axis=(3, 4))  # [B, rows, cols, 3]
  gray = np.all(out == 0.5, axis=(3, 4))
  np.testing.assert_array_equal(kept.sum(-1), 1)
  np.testing.assert_array_equal(kept | gray, True)
  assert set(np.argmax(kept, -1).ravel()) == {0, 1, 2}


@pytest.mark.parametrize("config", [augment.AugmentConfig(elastic=True),
                                    augment.AugmentConfig(jitter=3)])
def test_geometric_changes_only_move_pixels(config):
  layer = augment.PatchAugmentation(config, P, seed=0)
  flat = np.full((1, 2, 2, P, P, 3), 0.25, np.float32)
  np.testing.assert_allclose(run(layer, flat), flat, atol=1e-6)
  patches = tiled()  # The same layer does move textured patches.
  assert changed(run(layer, patches), patches) > 0.8


@pytest.mark.parametrize("config", [
    augment.AugmentConfig.paper(P),
    augment.AugmentConfig(
        color_drop=True, auto_augment=True, elastic=True, color_jitter=True,
        jitter=1, color_drop_prob=0.5, auto_augment_prob=0.5,
        elastic_prob=0.5, color_jitter_prob=0.5)], ids=["paper", "prob_0.5"])
def test_same_seed_same_output_other_seed_differs(config):
  patches = tiled(batch=1)
  first = run(augment.PatchAugmentation(config, P, seed=5), patches)
  again = run(augment.PatchAugmentation(config, P, seed=5), patches)
  other = run(augment.PatchAugmentation(config, P, seed=6), patches)
  np.testing.assert_array_equal(first, again)
  assert not np.array_equal(first, other)


def test_keras_layers_draw_parameters_per_sample():
  """Each random Keras layer used, on a batch of identical patches, must
  give different outputs (a per-batch parameter would give one)."""
  layer = augment.PatchAugmentation(
      augment.AugmentConfig(auto_augment=True, color_jitter=True, jitter=2),
      P, seed=0)
  same = tiled(batch=1, rows=8, cols=8).reshape(64, P, P, 3)
  for keras_layer in [layer.color_jitter_layer, layer.jitter_layer]:
    out = run(keras_layer, same)
    assert distinct(out) > 1, type(keras_layer).__name__
  # The primitives as the layer runs them (keras-cv's with stateless draws).
  for name in layer.primitives:
    if name in ("auto_contrast", "equalize", "invert"):
      continue  # No random parameter.
    out = layer.apply_primitive(name, tf.constant(same), seeds(0)).numpy()
    assert distinct(out) > 1, name


def test_stays_float32_under_mixed_precision():
  keras.mixed_precision.set_global_policy("mixed_bfloat16")
  try:
    layer = augment.PatchAugmentation(augment.AugmentConfig.paper(P), P)
    out = run(layer, tiled(batch=1))
  finally:
    keras.mixed_precision.set_global_policy("float32")
  assert out.dtype == np.float32
  assert changed(out, tiled(batch=1)) == 1.0


def test_jitter_must_be_smaller_than_patch():
  with pytest.raises(ValueError, match="jitter=8"):
    augment.PatchAugmentation(augment.AugmentConfig(jitter=8), P)


def test_batch_index_alone_sets_the_draws_so_maps_can_run_in_parallel():
  """Batch k is augmented the same in a parallel map as alone, and
  differently from batch k + 1."""
  layer = augment.PatchAugmentation(augment.AugmentConfig.paper(P), P, seed=3)
  patches = tiled(batch=1)
  dataset = tf.data.Dataset.range(4).map(
      lambda k: layer(patches, training=True, batch_index=k),
      num_parallel_calls=4, deterministic=True)
  batches = [b.numpy() for b in dataset]
  alone = tf.data.Dataset.from_tensors(tf.constant(2, tf.int64)).map(
      lambda k: layer(patches, training=True, batch_index=k))
  np.testing.assert_array_equal(next(iter(alone)).numpy(), batches[2])
  assert not np.array_equal(batches[2], batches[3])


def test_color_jitter_equals_keras_random_color_jitter():
  """One HSV round trip instead of Keras's two, same draws, same result."""
  layer = augment.PatchAugmentation(augment.AugmentConfig(color_jitter=True),
                                    P, seed=0)
  x = tf.constant(np.random.RandomState(4).uniform(size=(64, P, P, 3)),
                  tf.float32)
  keras_jitter = layer.color_jitter_layer
  keras_jitter.generator.state.assign([5, 0])
  expected = keras_jitter(x, training=True).numpy()
  got = layer._color_jitter(  # pylint: disable=protected-access
      x, augment._SeedStream(tf.constant([5, 0], tf.int64)))
  np.testing.assert_allclose(got, expected, atol=1e-5)
  assert np.abs(expected - x.numpy()).mean() > 0.05


def test_invert_is_one_minus_x(primitive):
  x = uniform()
  np.testing.assert_array_equal(primitive("invert", x), 1 - x)


def test_solarize_inverts_above_one_threshold_per_image(primitive):
  x = uniform()
  out = primitive("solarize", x)
  kept = np.isclose(out, x, atol=1e-5)
  inverted = np.isclose(out, 1 - x, atol=1e-5)
  assert np.all(kept | inverted)
  for i in range(len(x)):
    # Below the threshold kept, at or above it inverted.
    below, above = x[i][kept[i] & ~inverted[i]], x[i][inverted[i] & ~kept[i]]
    assert below.max(initial=0.0) < above.min(initial=1.0), i
  # One threshold per image, uniform on [0, 1]: the inverted share varies.
  share = (inverted & ~kept).mean(axis=(1, 2, 3))
  assert len(np.unique(share)) > 30
  assert share.min() < 0.2 and share.max() > 0.8


def posterized(x, bits):
  """Keras's RandomPosterization with `bits` bits: 8-bit values, floored,
  keep their `bits` high bits."""
  shift = 8 - bits
  v = (x * np.float32(255)).astype(np.uint8)
  return ((v >> shift) << shift).astype(np.float32) / np.float32(255)


def test_posterize_keeps_4_to_8_bits_drawn_per_image(primitive):
  x = uniform()
  out = primitive("posterize", x)
  bits = []
  for i in range(len(x)):
    matches = [b for b in range(4, 9)
               if np.array_equal(out[i], posterized(x[i], b))]
    assert len(matches) == 1, (i, matches)
    bits += matches
    levels = np.round(out[i] * 255)
    np.testing.assert_allclose(out[i] * 255, levels, atol=1e-3)
    assert np.all(levels % 2 ** (8 - bits[-1]) == 0)
  assert set(bits) == {4, 5, 6, 7, 8}, bits  # AutoAugment's range, all of it.


def test_auto_contrast_stretches_each_channel_to_0_1(primitive):
  x = uniform(low=0.2, high=0.7)
  low = x.min(axis=(1, 2), keepdims=True)
  high = x.max(axis=(1, 2), keepdims=True)
  np.testing.assert_allclose(primitive("auto_contrast", x),
                             (x - low) / (high - low), atol=1e-5)


def equalized(x):
  """PIL's equalization of one channel without its 8-bit bins: each value
  -> (number of values below it) / (number of values below the top one)."""
  values = x.ravel()
  below = (values[None, :] < values[:, None]).sum(1)
  not_top = (values < values.max()).sum()
  return (below / not_top).reshape(x.shape).astype(np.float32)


@pytest.mark.parametrize("size", [8, 32])
def test_equalize_is_the_cumulative_histogram_lookup(primitive, size):
  x = np.concatenate([uniform(n=2, size=size, low=0.4, high=0.6),
                      uniform(n=2, size=size, seed=1)])
  x[0, :2, :2] = 0.5  # Ties share their value.
  out = primitive("equalize", x)
  for i in range(len(x)):
    for c in range(3):
      np.testing.assert_allclose(out[i, ..., c], equalized(x[i, ..., c]),
                                 atol=1e-6, err_msg=f"{(i, c)}")


@pytest.mark.parametrize("size", [8, 80])
def test_equalize_flattens_the_histogram(primitive, size):
  """A low-contrast patch (8x8 as on CIFAR, 80x80 as the paper's) spreads
  over [0, 1] with a near-uniform distribution, order kept."""
  x = uniform(n=2, size=size, low=0.4, high=0.6)
  out = primitive("equalize", x)
  for i in range(len(x)):
    for c in range(3):
      values = out[i, ..., c].ravel()
      assert values.min() == 0.0 and values.max() == 1.0, (i, c)
      cdf = np.searchsorted(np.sort(values), values, side="right") / len(
          values)
      assert np.abs(cdf - values).max() < 0.05, (i, c)
      order = np.argsort(x[i, ..., c].ravel(), kind="stable")
      assert np.all(np.diff(values[order]) >= 0), (i, c)


def test_equalize_keeps_a_constant_channel():
  x = np.full((1, P, P, 3), 0.3, np.float32)
  np.testing.assert_array_equal(augment.Equalize()(x).numpy(), x)


def test_contrast_scales_around_each_channel_mean(primitive):
  """keras-cv's RandomContrast: clip((x - mean) * f + mean), the mean over
  the image per channel, one f in [0.1, 1.9] per image."""
  x = uniform()
  out = primitive("contrast", x)
  mean = x.mean(axis=(1, 2), keepdims=True)
  inside = (out > 0) & (out < 1)
  factors = []
  for i in range(len(x)):
    d = (x[i] - mean[i])[inside[i]]
    factors.append(((out[i] - mean[i])[inside[i]] * d).sum() / (d * d).sum())
    np.testing.assert_allclose(
        out[i], np.clip((x[i] - mean[i]) * factors[-1] + mean[i], 0, 1),
        atol=1e-5)
  assert 0.1 - 1e-4 <= min(factors) < 0.5 and 1.5 < max(factors) <= 1.9 + 1e-4


def test_brightness_adds_one_delta_per_image(primitive):
  x = uniform()
  out = primitive("brightness", x)
  inside = (out > 0) & (out < 1)
  deltas = np.array([np.median((out[i] - x[i])[inside[i]])
                     for i in range(len(x))])
  np.testing.assert_allclose(
      out, np.clip(x + deltas[:, None, None, None], 0, 1), atol=1e-6)
  assert np.abs(deltas).max() <= 0.3 + 1e-6
  assert deltas.min() < -0.15 and deltas.max() > 0.15


def test_color_blends_towards_grayscale(primitive):
  """AutoAugment's Color: PIL's enhancement 1 - f in [0.1, 1.9], i.e. a
  blend towards the grayscale patch by f in [-0.9, 0.9], clipped."""
  x = uniform(low=0.25, high=0.75)
  out = primitive("color", x)
  gray = np.repeat(x @ np.float32([0.2989, 0.5870, 0.1140])[:, None], 3, -1)
  inside = (out > 0) & (out < 1)
  factors = fitted_factor(np.where(inside, out, x), np.where(inside, x, x),
                          np.where(inside, gray, x))
  np.testing.assert_allclose(
      out, np.clip(x + factors[:, None, None, None] * (gray - x), 0, 1),
      atol=1e-5)
  assert factors.min() >= -0.9 - 1e-4 and factors.max() <= 0.9 + 1e-4
  assert factors.min() < -0.5 and factors.max() > 0.5


def test_sharpness_blends_inside_towards_a_3x3_smoothing(primitive):
  """keras-cv's RandomSharpness: border kept, inside pixels blended towards
  the [[1, 1, 1], [1, 5, 1], [1, 1, 1]] / 13 average, factor in [0, 0.9]."""
  x = uniform()
  out = primitive("sharpness", x)
  border = np.ones((P, P), bool)
  border[1:-1, 1:-1] = False
  np.testing.assert_allclose(out[:, border], x[:, border], atol=1e-6)
  smooth = x.copy()
  smooth[:, 1:-1, 1:-1] = 4 / 13 * x[:, 1:-1, 1:-1] + sum(
      x[:, 1 + dy:P - 1 + dy, 1 + dx:P - 1 + dx]
      for dy in (-1, 0, 1) for dx in (-1, 0, 1)) / 13
  factors = fitted_factor(out, x, smooth)
  np.testing.assert_allclose(
      out, x + factors[:, None, None, None] * (smooth - x), atol=1e-5)
  assert factors.min() >= -1e-4 and factors.max() <= 0.9 + 1e-4
  assert factors.min() < 0.2 and factors.max() > 0.7


def test_cutout_fills_one_rectangle_with_gray(primitive):
  x = uniform()
  out = primitive("cutout", x)
  rectangles = set()
  for i in range(len(x)):
    rows, cols = np.nonzero(np.any(out[i] != x[i], -1))
    if not len(rows):
      continue
    box = (rows.min(), rows.max() + 1, cols.min(), cols.max() + 1)
    rectangles.add(box)
    inside = np.zeros((P, P), bool)
    inside[box[0]:box[1], box[2]:box[3]] = True
    assert np.all(out[i][inside] == 0.5), i
    np.testing.assert_array_equal(out[i][~inside], x[i][~inside])
    # Sides of 0.1 to 0.4 patch sides, rounded up (less at the border).
    assert box[1] - box[0] <= 4 and box[3] - box[2] <= 4, box
  assert len(rectangles) > 20


def rows_constant(n=64):
  """Images whose every row is one random colour."""
  return np.repeat(uniform(n=n, size=P)[:, :, :1], P, axis=2)


@pytest.mark.parametrize("name, along", [
    ("shear_x", "x"), ("translate_x", "x"), ("shear_y", "y"),
    ("translate_y", "y")])
def test_shear_and_translate_move_pixels_along_their_axis(primitive, name,
                                                          along):
  """Pixels move along `along` only: images constant along that axis stay,
  those constant along the other one change."""
  if along == "x":
    constant_along, other = rows_constant(), rows_constant().swapaxes(1, 2)
  else:
    constant_along, other = rows_constant().swapaxes(1, 2), rows_constant()
  np.testing.assert_allclose(primitive(name, constant_along), constant_along,
                             atol=1e-6)
  moved = np.abs(primitive(name, other) - other).max(axis=(1, 2, 3)) > 1e-3
  assert moved.mean() > 0.9


@pytest.mark.parametrize("name", ["shear_x", "shear_y", "translate_x",
                                  "translate_y", "rotate"])
def test_geometric_primitives_keep_a_flat_patch(primitive, name):
  flat = np.full((8, P, P, 3), 0.3, np.float32)
  np.testing.assert_allclose(primitive(name, flat), flat, atol=1e-6)
  x = uniform()
  assert changed(primitive(name, x), x) > 0.9


def test_rotate_moves_pixels_along_both_axes(primitive):
  for images in (rows_constant(), rows_constant().swapaxes(1, 2)):
    out = primitive("rotate", images)
    assert (np.abs(out - images).max(axis=(1, 2, 3)) > 1e-3).mean() > 0.9


def tagged(monkeypatch, layer):
  """Makes each primitive add its own power of two (in units of 2**-17) to
  the patches it runs on: out - in tells which primitives a patch got."""
  names = list(layer.primitives)

  def tag(name, images, seed):
    del seed
    return images + 2.0 ** (names.index(name) - 17)

  monkeypatch.setattr(layer, "apply_primitive", tag)


def primitive_sets(out, start):
  """Per patch, the bit set of primitives `tagged` recorded."""
  codes = np.round((out - start) * 2 ** 17).astype(np.int64)
  assert np.all(codes == codes[..., :1, :1, :1])
  return codes[..., 0, 0, 0].ravel()


def test_two_distinct_primitives_are_chosen_per_patch(monkeypatch):
  layer = augment.PatchAugmentation(augment.AugmentConfig(auto_augment=True),
                                    P, seed=0)
  tagged(monkeypatch, layer)
  start = np.full((2, 7, 7, P, P, 3), 0.25, np.float32)
  sets = primitive_sets(run(layer, start), 0.25)
  assert all(bin(s).count("1") == 2 for s in sets)
  assert len(set(sets)) > 40  # 105 pairs, 98 patches.
  used = np.bitwise_or.reduce(sets)
  assert used == 2 ** len(layer.primitives) - 1


def test_auto_augment_probability_is_per_patch(monkeypatch):
  layer = augment.PatchAugmentation(
      augment.AugmentConfig(auto_augment=True, auto_augment_prob=0.5), P,
      seed=0)
  tagged(monkeypatch, layer)
  start = np.full((8, 7, 7, P, P, 3), 0.25, np.float32)
  sets = primitive_sets(run(layer, start), 0.25)
  assert all(bin(s).count("1") in (0, 2) for s in sets)
  assert 0.4 < (sets == 0).mean() < 0.6


def test_patches_of_one_image_are_augmented_independently():
  patches = tiled(batch=1)
  out = run(augment.PatchAugmentation(augment.AugmentConfig.paper(P), P,
                                      seed=2), patches)
  assert distinct(out) >= 47


@pytest.mark.parametrize("families", [(f,) for f in augment.FAMILIES] + [
    augment.FAMILIES], ids=[*augment.FAMILIES, "all"])
def test_probability_0_is_the_identity(families):
  patches = np.random.RandomState(5).uniform(size=(2, 7, 7, P, P, 3))
  patches = patches.astype(np.float32)
  config = augment.AugmentConfig(**{k: v for f in families for k, v in (
      (f, True), (f"{f}_prob", 0.0))})
  out = run(augment.PatchAugmentation(config, P, seed=0), patches)
  np.testing.assert_array_equal(out, patches)


@pytest.mark.parametrize("family", augment.FAMILIES)
def test_probability_is_drawn_per_patch(family):
  patches = np.random.RandomState(6).uniform(size=(8, 7, 7, P, P, 3))
  patches = patches.astype(np.float32)
  config = augment.AugmentConfig(**{family: True, f"{family}_prob": 0.5})
  out = run(augment.PatchAugmentation(config, P, seed=0), patches)
  assert 0.4 < changed(out, patches) < 0.6


def test_color_drop_probability_drops_about_that_share():
  patches = np.random.RandomState(6).uniform(size=(8, 7, 7, P, P, 3))
  patches = patches.astype(np.float32)
  config = augment.AugmentConfig(color_drop=True, color_drop_prob=0.5)
  out = run(augment.PatchAugmentation(config, P, seed=0), patches)
  gray = np.all(out == 0.5, axis=(3, 4)).sum(-1)  # Gray channels per patch.
  assert set(gray.ravel()) == {0, 2}
  assert 0.4 < (gray == 2).mean() < 0.6
  kept = gray == 0
  np.testing.assert_array_equal(out[kept], patches[kept])


def test_color_jitter_comes_after_color_drop():
  """Drop then jitter: jitter (its own seed stream) applied to the dropped
  patches; the other order would leave two channels at exactly 0.5."""
  patches = np.random.RandomState(7).uniform(size=(2, 7, 7, P, P, 3))
  patches = patches.astype(np.float32)
  both = run(augment.PatchAugmentation(
      augment.AugmentConfig(color_drop=True, color_jitter=True), P, seed=4),
             patches)
  dropped = run(augment.PatchAugmentation(
      augment.AugmentConfig(color_drop=True), P, seed=4), patches)
  jittered = run(augment.PatchAugmentation(
      augment.AugmentConfig(color_jitter=True), P, seed=4), dropped)
  np.testing.assert_allclose(both, jittered, atol=1e-6)
  gray = np.all(both == 0.5, axis=(3, 4)).sum(-1)
  assert (gray == 2).mean() < 0.1


def test_primitive_parameters_are_a_function_of_the_seed_stream(primitive):
  """keras-cv's own stateful draws are replaced: the same stream gives the
  same parameters, another stream others."""
  x = uniform(n=16)
  for name in ["shear_x", "rotate", "solarize", "posterize", "contrast",
               "color", "brightness", "sharpness", "cutout"]:
    first = primitive(name, x, k=3)
    np.testing.assert_array_equal(primitive(name, x, k=3), first,
                                  err_msg=name)
    assert not np.array_equal(primitive(name, x, k=4), first), name
