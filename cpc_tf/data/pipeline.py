"""tf.data pipeline: images -> crops -> patch grids -> augmented batches.

`preprocess` is the one place deciding pixel scaling ([0, 1] floats) and
image geometry, for training, evaluation and the exported SavedModel
alike. `patch_dataset` turns (image, label) examples into the batches of
patch grids CPC trains on (§2.1), each patch augmented on its own (§4.1).
"""

import tensorflow as tf

from cpc_tf.data import augment as augment_lib
from cpc_tf.data import patches as patches_lib

# Resize to 1.14x the crop size before cropping, as ImageNet's 256 -> 224.
CROP_SCALE = 1.14


def _resized(images, image_size, crop_scale):
  """[..., H, W, 3] uint8 or [0, 1] float -> float32 in [0, 1], shorter
  side round(image_size * crop_scale), aspect ratio kept."""
  images = tf.image.convert_image_dtype(images, tf.float32)
  size = round(image_size * crop_scale)
  hw = tf.cast(tf.shape(images)[-3:-1], tf.float32)
  new_hw = tf.cast(tf.round(hw * (size / tf.reduce_min(hw))), tf.int32)
  # max(): float rounding must not leave the shorter side below `size`.
  return tf.image.resize(images, tf.maximum(new_hw, size), antialias=True)


def _central_crop(images, size):
  hw = tf.shape(images)[-3:-1]
  top, left = tf.unstack((hw - size) // 2)
  return tf.image.crop_to_bounding_box(images, top, left, size, size)


def preprocess(image, image_size, training, crop_scale=CROP_SCALE,
               seed=None):
  """uint8 [H, W, 3] -> float32 [image_size, image_size, 3] in [0, 1].

  Resizes the shorter side to round(image_size * crop_scale), keeping the
  aspect ratio, then crops image_size x image_size: at random when
  training (from the stateless `seed`, shape [2] int), else centrally.
  """
  image = _resized(image, image_size, crop_scale)
  if not training:
    return _central_crop(image, image_size)
  if seed is None:
    raise ValueError("preprocess(training=True) needs a stateless seed")
  return tf.image.stateless_random_crop(image, [image_size, image_size, 3],
                                        seed)


def preprocess_batch(images, image_size, crop_scale=CROP_SCALE):
  """Evaluation `preprocess` of a batch [B, H, W, 3].

  uint8 images are scaled to [0, 1]; float images are taken as already in
  [0, 1].
  """
  return _central_crop(_resized(images, image_size, crop_scale), image_size)


def patch_dataset(source_dataset, *, batch_size, image_size, patch_size,
                  patch_stride, augment=augment_lib.AugmentConfig(),
                  training=True, seed=0, skip_batches=0, shuffle_buffer=10000,
                  with_labels=False, input_context=None, cache=False):
  """(image, label) examples -> batches of patch grids.

  Yields float32 `[batch_size, rows, cols, patch_size, patch_size, 3]`
  (and int64 labels `[batch_size]` with `with_labels`), the last partial
  batch dropped. When training, examples are shuffled and repeated
  forever, cropped at random, flipped if `augment.flip`, and every patch
  augmented on its own; a dataset built with the same arguments yields
  the same batches. Evaluation makes one pass with central crops.

  Args:
    source_dataset: tf.data.Dataset of (image uint8 [H, W, 3], label).
    batch_size: examples per batch on this worker / replica.
    image_size, patch_size, patch_stride: the crop and its patch grid.
    augment: an `augment.AugmentConfig`.
    training: training or evaluation pipeline.
    seed: seed of the order, crops, flips and patch augmentation.
    skip_batches: batches to skip, so a resumed run continues where it
      stopped (examples are skipped before they are cropped or augmented;
      a decoding source still reads them).
    shuffle_buffer: examples in the shuffle buffer.
    with_labels: yield (patches, labels) instead of patches.
    input_context: tf.distribute.InputContext; this worker reads its shard.
    cache: keep the source's decoded images in memory (small data sets).
  """
  patches_lib.grid_size(image_size, patch_size, patch_stride)
  augmentation = augment_lib.PatchAugmentation(augment, patch_size, seed=seed)
  dataset = source_dataset
  if cache:
    dataset = dataset.cache()
  if training:
    dataset = dataset.shuffle(shuffle_buffer, seed=seed).repeat()
  # Each example's position seeds its crop and flip, so they do not depend
  # on map parallelism and a resumed run crops as the original did.
  dataset = dataset.enumerate()
  workers, worker = 1, 0
  if input_context:
    # Sharded after the seeded shuffle: the workers' step-k batches together
    # hold exactly the images of a single worker's step-k global batch.
    workers = input_context.num_input_pipelines
    worker = input_context.input_pipeline_id
    dataset = dataset.shard(workers, worker)
  dataset = dataset.skip(skip_batches * batch_size)

  def crop(index, example):
    image, label = example
    crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(
        tf.stack([tf.constant(seed, tf.int64), index]), 2))
    image = preprocess(image, image_size, training, seed=crop_seed)
    if training and augment.flip:
      image = tf.image.stateless_random_flip_left_right(image, flip_seed)
    return image, label

  def cut(batch_index, batch):
    images, labels = batch
    with tf.control_dependencies(
        augmentation.reseed(batch_index * workers + worker)):
      grid = augmentation(
          patches_lib.extract_patches(images, patch_size, patch_stride),
          training=training)
    return (grid, labels) if with_labels else grid

  dataset = dataset.map(crop, num_parallel_calls=tf.data.AUTOTUNE)
  dataset = dataset.batch(batch_size, drop_remainder=True)
  # Sequential: the augmentation's random state is a variable, and
  # concurrent calls would race for it. It is reset from the batch index.
  dataset = dataset.enumerate(start=skip_batches).map(cut)
  return dataset.prefetch(tf.data.AUTOTUNE)
