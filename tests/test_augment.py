"""Per-patch augmentation (cpc_tf/data/augment.py), run inside tf.data."""

import keras
import numpy as np
import pytest
import tensorflow as tf

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


def test_same_seed_same_output_other_seed_differs():
  patches = tiled(batch=1)
  config = augment.AugmentConfig.paper(P)
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
  keras_layers = layer.auto_augment_layers + [layer.color_jitter_layer,
                                              layer.jitter_layer]
  for keras_layer in keras_layers:
    if isinstance(keras_layer, (keras.layers.AutoContrast,
                                keras.layers.Equalization)):
      continue  # No random parameter.
    out = run(keras_layer, same)
    assert distinct(out) > 1, type(keras_layer).__name__


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
