"""Classifiers h_psi on the latent grid [B, rows, cols, D] (§2.2, A.3-A.4)."""

import keras
import tensorflow as tf

from cpc_tf.models import resnet

# Efficient-classification head sizes: the paper's (4096-d maps, 1024-d
# bottlenecks, §2.2) and a CPU-sized one.
HEAD_PRESETS = {"paper": (4096, 1024), "small": (256, 64)}


class LinearHead(keras.layers.Layer):
  """A.3: BatchNorm without scale, 1x1 conv to logits, spatial mean pool."""

  def __init__(self, num_classes, **kwargs):
    super().__init__(**kwargs)
    self.norm = keras.layers.BatchNormalization(scale=False, name="norm")
    self.classifier = keras.layers.Conv2D(num_classes, 1, name="logits")

  def call(self, latents, training=False):
    logits = self.classifier(self.norm(latents, training=training))
    return tf.reduce_mean(tf.cast(logits, tf.float32), axis=[1, 2])


class ResNetHead(keras.layers.Layer):
  """§2.2: an 11-block ResNet-v2 on the latent grid, mean pool, linear."""

  def __init__(self, num_classes, preset="small", num_blocks=11,
               dropout=0.0, norm="batch", **kwargs):
    super().__init__(**kwargs)
    if preset not in HEAD_PRESETS:
      raise ValueError(f"head={preset!r}; allowed: {', '.join(HEAD_PRESETS)}")
    width, bottleneck = HEAD_PRESETS[preset]
    self.blocks = [resnet.BottleneckV2(bottleneck, width, 1, norm,
                                       name=f"block{b + 1}")
                   for b in range(num_blocks)]
    self.final_norm = resnet.make_norm(norm, "final_norm")
    self.dropout = keras.layers.Dropout(dropout)
    self.classifier = keras.layers.Dense(num_classes, name="logits")

  def call(self, latents, training=False):
    x = latents
    for block in self.blocks:
      x = block(x, training=training)
    x = tf.nn.relu(self.final_norm(x, training=training))
    x = self.dropout(tf.reduce_mean(x, axis=[1, 2]), training=training)
    return tf.cast(self.classifier(x), tf.float32)
