"""tf.data pipeline: images -> crops -> patch grids -> augmented batches.

`preprocess` is the one place deciding pixel scaling ([0, 1] floats) and
image geometry, for training, evaluation and the exported SavedModel
alike. `patch_dataset` turns a source's examples, decoded once this host
has chosen them, into the batches of patch grids CPC trains on (§2.1), each
patch augmented on its own (§4.1).
"""

from absl import logging
import tensorflow as tf

from cpc_tf.data import augment as augment_lib
from cpc_tf.data import patches as patches_lib
from cpc_tf.perf import machine

# Resize to 1.14x the crop size before cropping, as ImageNet's 256 -> 224.
CROP_SCALE = 1.14
# --cache_images=auto caches decoded images if one host's share takes at
# most this fraction of the available memory: filling the cache briefly
# holds the images twice, and the model, shuffle buffer and prefetched
# batches need the rest.
CACHE_MEMORY_FRACTION = 0.25
CACHE_CHOICES = ("auto", "true", "false")


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


def patch_dataset(source, *, batch_size, image_size, patch_size,
                  patch_stride, augment=augment_lib.AugmentConfig(),
                  training=True, seed=0, skip_batches=0, shuffle_buffer=10000,
                  with_labels=False, input_context=None, cache=False):
  """A `sources.Source` -> batches of patch grids.

  Yields float32 `[batch_size, rows, cols, patch_size, patch_size, 3]`
  (and int64 labels `[batch_size]` with `with_labels`), the last partial
  batch dropped. When training, each epoch's order is drawn from (seed,
  epoch) and epochs follow each other forever; examples are cropped at
  random, flipped if `augment.flip`, and every patch augmented on its own;
  a dataset built with the same arguments yields the same batches.
  Evaluation makes one pass in the split's order with central crops.
  Examples are decoded only once this input pipeline has chosen them: a
  host decodes only what it trains on (`records`).

  Args:
    source: a `sources.Source`.
    batch_size: examples per batch on this worker / replica.
    image_size, patch_size, patch_stride: the crop and its patch grid.
    augment: an `augment.AugmentConfig`.
    training: training or evaluation pipeline.
    seed: seed of the order, crops, flips and patch augmentation.
    skip_batches: steps already trained; this pipeline starts after the
      batches it gave for them (one per replica it feeds), without reading
      the epochs before, nor decoding what it skips.
    shuffle_buffer: TFDS sources: records (still encoded) in the shuffle
      buffer after the file order is shuffled; in-memory and folder sources
      are permuted whole each epoch.
    with_labels: yield (patches, labels) instead of patches.
    input_context: tf.distribute.InputContext; this worker reads its share.
    cache: keep the decoded images this worker reads in memory (see
      `use_cache`); the order does not change.
  """
  patches_lib.grid_size(image_size, patch_size, patch_stride)
  augmentation = augment_lib.PatchAugmentation(augment, patch_size, seed=seed)
  context = input_context or tf.distribute.InputContext()
  workers, worker = context.num_input_pipelines, context.input_pipeline_id
  first_batch = skip_batches * max(1, context.num_replicas_in_sync // workers)
  records = source.records
  if cache:
    records = records.cached(workers, worker)
  if training:
    # (position, key): positions are unique across workers and seed the
    # crop and flip, so they do not depend on map parallelism and a resumed
    # run crops as the original did.
    keys = records.stream(seed=seed, start=first_batch * batch_size,
                          workers=workers, worker=worker,
                          shuffle_buffer=shuffle_buffer)
  else:
    keys = records.keys().enumerate().shard(workers, worker)

  def crop(position, key):
    image, label = records.decode(*key)
    crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(
        tf.stack([tf.constant(seed, tf.int64), position]), 2))
    image = preprocess(image, image_size, training, seed=crop_seed)
    if training and augment.flip:
      image = tf.image.stateless_random_flip_left_right(image, flip_seed)
    return image, label

  def cut(batch_index, batch):
    images, labels = batch
    grid = augmentation(
        patches_lib.extract_patches(images, patch_size, patch_stride),
        training=training, batch_index=batch_index * workers + worker)
    return (grid, labels) if with_labels else grid

  dataset = keys.map(crop, num_parallel_calls=tf.data.AUTOTUNE)
  if records.skip_errors:  # An image file that fails to decode is dropped.
    dataset = dataset.ignore_errors(log_warning=True)
  dataset = dataset.batch(batch_size, drop_remainder=True)
  # Batch k's augmentation draws from (seed, k) alone: maps may run in
  # parallel; `deterministic` keeps the batches in order.
  dataset = dataset.enumerate(start=first_batch).map(
      cut, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  return dataset.prefetch(tf.data.AUTOTUNE)


def use_cache(source, cache_images, workers=1):
  """Whether to cache `source`'s decoded images: --cache_images true,
  false, or auto (if one host's share, decoded, fits in
  CACHE_MEMORY_FRACTION of the available memory); logs the choice."""
  if cache_images not in CACHE_CHOICES:
    raise ValueError(f"cache_images={cache_images!r}; allowed: "
                     f"{', '.join(CACHE_CHOICES)}")
  if cache_images == "false":
    return False
  size = source.records.decoded_bytes(workers)
  if not size:
    logging.info("%s: images are decoded in memory already; no cache",
                 source.name)
    return False
  if cache_images == "true":
    logging.info("%s: caching %.2f GiB of decoded images (--cache_images="
                 "true)", source.name, size / 2**30)
    return True
  budget = CACHE_MEMORY_FRACTION * machine.available_bytes()
  logging.info("%s: decoded images %.2f GiB, cache budget %.2f GiB (%g of "
               "the available memory): %s", source.name, size / 2**30,
               budget / 2**30, CACHE_MEMORY_FRACTION,
               "cached" if size <= budget else "decoded every epoch")
  return size <= budget

