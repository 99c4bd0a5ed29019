"""Classifiers for evaluation: h_psi on CPC latents, or a ResNet on pixels.

`Classifier` is h_psi o f_theta (§2.2) with the encoder fixed (linear and
efficient classification) or trained along (fine-tuning); `PixelClassifier`
is the supervised baseline of appendix A.4. `load_encoder` gives f_theta
as a Keras encoder from a pretraining run or an exported SavedModel,
trained or, for the random-init control, freshly initialised.
"""

import os

import keras
import numpy as np
import tensorflow as tf

from cpc_tf import checkpoints
from cpc_tf import cpc
from cpc_tf import export_lib
from cpc_tf.models import resnet


def _load_saved_weights(encoder, config, path):
  """Copies an export's variables into the Keras encoder of its config (the
  export tracks them in the encoder's order) and checks both agree."""
  loaded = tf.saved_model.load(path)
  if ([tuple(v.shape) for v in loaded.variables] !=
      [tuple(v.shape) for v in encoder.variables]):
    raise ValueError(f"--encoder={path}: its variables do not fit the "
                     f"{config.architecture} encoder of its "
                     f"{export_lib.CONFIG_FILE}")
  for target, source in zip(encoder.variables, loaded.variables):
    target.assign(source)
  images = tf.constant(np.random.default_rng(0).integers(
      0, 256, [2, config.image_size, config.image_size, 3], np.uint8))
  want = loaded.serve(images)["latents"]
  got = export_lib.encode_images(encoder, images, config)["latents"]
  if not np.allclose(got, want, atol=1e-4, rtol=1e-4):
    raise ValueError(f"--encoder={path}: the rebuilt encoder does not "
                     "reproduce the SavedModel's latents")


def load_encoder(path, random_init=False):
  """The Keras encoder f_theta and its PretrainConfig from `path`.

  Args:
    path: a pretraining directory (config.json + checkpoints; its newest
      checkpoint is restored), or an export base or one of its version
      directories (`cpc_tf.export_lib`; the newest version of a base): the
      SavedModel's weights go into the Keras encoder its cpc_config.json
      describes.
    random_init: the same encoder, randomly initialised (the control).

  Raises:
    ValueError: nothing to load there.
  """
  version = export_lib.saved_model_dir(path)
  if version is None:
    if not tf.io.gfile.exists(os.path.join(path, "config.json")):
      raise ValueError(f"--encoder={path}: neither a SavedModel, an export "
                       "base of numbered SavedModel versions, nor a "
                       "pretraining directory with config.json")
    return checkpoints.encoder_from_checkpoint(path, untrained=random_init)
  config = export_lib.load_config(version)
  keras.utils.set_random_seed(config.seed)
  encoder = cpc.build_model(config).encoder
  if not random_init:
    _load_saved_weights(encoder, config, version)
  return encoder, config


class Classifier(keras.Model):
  """h_psi o f_theta on patch grids [B, rows, cols, p, p, 3] -> logits.

  With `train_encoder=False` the encoder is frozen: not trainable, run in
  inference mode, and no gradient reaches it.
  """

  def __init__(self, encoder, head, train_encoder, **kwargs):
    super().__init__(**kwargs)
    self.encoder = encoder
    self.head = head
    self.train_encoder = train_encoder
    encoder.trainable = train_encoder

  def call(self, patches, training=False):
    latents = self.encoder(patches, training=training and self.train_encoder)
    if not self.train_encoder:
      latents = tf.stop_gradient(latents)
    return self.head(latents, training=training)


class PixelClassifier(keras.Model):
  """A.4: a ResNet-v2 on whole images, dropout before the linear classifier.

  Takes images as a 1x1 patch grid `[B, 1, 1, H, W, 3]`, so it shares the
  patch pipeline (and its augmentations) with the CPC classifiers.
  """

  def __init__(self, preset, num_classes, dropout=0.0, norm="batch",
               **kwargs):
    super().__init__(**kwargs)
    self.backbone = resnet.Encoder(preset, norm=norm, name="backbone")
    self.dropout = keras.layers.Dropout(dropout)
    self.classifier = keras.layers.Dense(num_classes, name="logits")

  def build(self, grid_shape):
    # The backbone runs through feature_maps, not __call__: build it here.
    self.backbone.feature_maps(tf.zeros([1, *grid_shape[3:]]))
    super().build(grid_shape)

  def call(self, grid, training=False):
    images = grid[:, 0, 0]
    top = self.backbone.feature_maps(images, training=training)[-1][1]
    pooled = self.dropout(tf.reduce_mean(top, axis=[1, 2]),
                          training=training)
    return tf.cast(self.classifier(pooled), tf.float32)
