"""Colour dropping for detection training (§2.2, §4.3).

§2.2: "In addition to color-dropping, we use scale-augmentation for
training" the detector. As in pretraining (cpc_tf's per-patch colour
dropping), each image keeps one of its three channels, chosen at random,
and the other two become mid-gray (0.5). Scale augmentation is Model
Garden's own (`parser.aug_scale_min` / `aug_scale_max`).
"""

import tensorflow as tf

from official.vision.ops import preprocess_ops

MID_GRAY = 0.5


def drop_colors(images):
  """Batched Model Garden-normalized images [B, H, W, 3] -> the same, each
  image with one random channel kept and the others mid-gray.

  The parser has already normalized the images (ImageNet mean and standard
  deviation per channel), so mid-gray is written in normalized units.
  """
  keep = tf.random.uniform([tf.shape(images)[0]], 0, 3, tf.int32)
  mask = tf.one_hot(keep, 3, on_value=True, off_value=False)
  gray = [(MID_GRAY - mean) / std for mean, std in
          zip(preprocess_ops.MEAN_NORM, preprocess_ops.STDDEV_NORM)]
  return tf.where(mask[:, None, None, :], images,
                  tf.constant(gray, images.dtype))
