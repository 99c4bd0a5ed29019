"""Small tensor ops shared by the encoder and the CPC head."""

import tensorflow as tf


def pointwise(conv, x):
  """`conv(x)` for a built, unstrided 1x1 `Conv2D` layer, as one matmul
  over all positions from the layer's own kernel and bias."""
  x = tf.cast(x, conv.compute_dtype)
  shape = tf.shape(x)
  y = tf.matmul(tf.reshape(x, [-1, x.shape[-1]]),
                tf.cast(conv.kernel, x.dtype)[0, 0])
  if conv.use_bias:
    y = tf.nn.bias_add(y, tf.cast(conv.bias, x.dtype))
  return tf.reshape(y, tf.concat([shape[:-1], [conv.filters]], 0))
