"""tf.data pipeline (cpc_tf/data/pipeline.py)."""

import numpy as np
import pytest
import tensorflow as tf

from cpc_tf.data import augment
from cpc_tf.data import patches
from cpc_tf.data import pipeline
from cpc_tf.data import sources

IMAGES = np.random.RandomState(0).randint(0, 256, (24, 36, 44, 3)).astype(
    np.uint8)
GEOMETRY = dict(image_size=32, patch_size=8, patch_stride=4)


def source():
  return sources.from_arrays(IMAGES, np.arange(len(IMAGES)))


def batches(count, **kwargs):
  kwargs = {"batch_size": 4, **GEOMETRY, **kwargs}
  dataset = pipeline.patch_dataset(source(), **kwargs).take(count)
  return [tf.nest.map_structure(lambda t: t.numpy(), b) for b in dataset]


def test_shapes_dtype_and_labels():
  (grid, labels), = batches(1, with_labels=True,
                            augment=augment.AugmentConfig.paper(8))
  assert grid.shape == (4, 7, 7, 8, 8, 3) and grid.dtype == np.float32
  assert labels.shape == (4,) and labels.dtype == np.int64
  assert 0.0 <= grid.min() and grid.max() <= 1.0
  # Shuffled: not the first four examples in order.
  assert labels.tolist() != [0, 1, 2, 3]


def test_evaluation_is_one_ordered_pass_matching_export_path():
  out = batches(100, training=False, with_labels=True)
  assert len(out) == 6  # 24 examples, batches of 4, no repeat.
  labels = np.concatenate([labels for _, labels in out])
  np.testing.assert_array_equal(labels, np.arange(24))
  expected = patches.extract_patches(
      pipeline.preprocess_batch(IMAGES[:4], 32), 8, 4)
  np.testing.assert_allclose(out[0][0], expected, atol=1e-6)
  again = batches(1, training=False)
  np.testing.assert_array_equal(again[0], out[0][0])


def test_same_seed_same_batches_with_augmentation():
  config = augment.AugmentConfig.paper(8)
  first = batches(3, augment=config, seed=7)
  again = batches(3, augment=config, seed=7)
  other = batches(3, augment=config, seed=8)
  for a, b in zip(first, again):
    np.testing.assert_array_equal(a, b)
  assert not np.array_equal(first[0], other[0])


def test_skip_batches_continues_where_the_run_stopped():
  # 24 examples in batches of 5 cross epoch boundaries.
  full = batches(7, batch_size=5, augment=augment.AugmentConfig(flip=True))
  resumed = batches(3, batch_size=5, skip_batches=4,
                    augment=augment.AugmentConfig(flip=True))
  for a, b in zip(full[4:], resumed):
    np.testing.assert_array_equal(a, b)


def test_flip_mirrors_whole_images():
  plain = batches(4, seed=3)
  flipped = batches(4, seed=3, augment=augment.AugmentConfig(flip=True))
  mirrored = 0
  for a, b in zip(np.concatenate(plain), np.concatenate(flipped)):
    if not np.array_equal(a, b):
      # Patch (r, c) of the mirror image is patch (r, cols-1-c) mirrored.
      np.testing.assert_allclose(b, a[:, ::-1, :, ::-1], atol=1e-6)
      mirrored += 1
  assert 0 < mirrored < 16


def test_shards_are_disjoint():
  seen = []
  for shard in range(2):
    context = tf.distribute.InputContext(num_input_pipelines=2,
                                         input_pipeline_id=shard)
    seen.append(np.concatenate([labels for _, labels in batches(
        100, training=False, with_labels=True, input_context=context)]))
  assert sorted(np.concatenate(seen).tolist()) == list(range(24))


def test_geometry_is_validated():
  with pytest.raises(ValueError, match="image_size=33"):
    pipeline.patch_dataset(source(), batch_size=4, image_size=33,
                           patch_size=8, patch_stride=4)


def test_preprocess_geometry():
  wide = IMAGES[0, :20]  # 20 x 44: shorter side is the height.
  out = pipeline.preprocess(wide, 16, training=False, crop_scale=1.25)
  assert out.shape == (16, 16, 3) and out.dtype == tf.float32
  # Shorter side to 20 (no resize), then the central 16 x 16.
  np.testing.assert_allclose(out, wide[2:18, 14:30] / 255, atol=1e-6)
  seed = tf.constant([1, 2], tf.int64)
  crop = pipeline.preprocess(wide, 16, training=True, crop_scale=1.25,
                             seed=seed)
  np.testing.assert_array_equal(
      crop, pipeline.preprocess(wide, 16, training=True, crop_scale=1.25,
                                seed=seed))
  with pytest.raises(ValueError, match="seed"):
    pipeline.preprocess(wide, 16, training=True)


def test_preprocess_batch_takes_uint8_or_unit_floats():
  as_uint8 = pipeline.preprocess_batch(IMAGES[:2], 32)
  as_float = pipeline.preprocess_batch(IMAGES[:2] / 255, 32)
  assert as_uint8.shape == (2, 32, 32, 3)
  np.testing.assert_allclose(as_uint8, as_float, atol=1e-6)
  for image, batched in zip(IMAGES[:2], as_uint8):
    np.testing.assert_allclose(
        pipeline.preprocess(image, 32, training=False), batched, atol=1e-6)
