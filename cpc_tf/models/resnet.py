"""ResNet-v2 bottleneck encoders with LayerNorm, applied to each patch (§4.1).

Every patch goes through the network on its own (the patch grid is folded
into the batch), so no information flows between patches; its final map is
mean-pooled to one vector, giving latents `[B, rows, cols, D]`. LayerNorm
here normalises each sample over (H, W, C) with a per-channel scale and
offset (Ba et al.), i.e. `GroupNormalization(groups=1)`; `norm="batch"`
exists only to reproduce the paper's LN ablation ("+LN" in Fig. 3).

Performance (measured by cpc_tf/benchmark.py): `LayerNorm` is
`GroupNormalization(groups=1)` (same weights, same output) with a
hand-written gradient and the following ReLU fused in, and a block's 1x1
convolutions run as one matmul over all pixels of all patches; the weights
stay in the same Keras layers, so checkpoints are unchanged.
"""

import dataclasses

import keras
import tensorflow as tf

from cpc_tf.ops import pointwise


@dataclasses.dataclass(frozen=True)
class Stack:
  num_blocks: int
  bottleneck: int
  width: int
  stride: int


@dataclasses.dataclass(frozen=True)
class Preset:
  stem_width: int
  stem_kernel: int
  stem_stride: int
  stem_pool: bool
  stacks: tuple

  @property
  def output_dim(self):
    return self.stacks[-1].width


def _resnet_v2(blocks_per_stack):
  return Preset(64, 7, 2, True, tuple(
      Stack(n, 64 * 2**s, 256 * 2**s, 1 if s == 0 else 2)
      for s, n in enumerate(blocks_per_stack)))


PRESETS = {
    # CPC v1's first three stacks of ResNet-101, the third converted to 46
    # blocks of 4096-d maps with 512-d bottlenecks (§4.1 "Model capacity").
    "resnet161": Preset(64, 7, 2, True, (
        Stack(3, 64, 256, 1), Stack(4, 128, 512, 2),
        Stack(46, 512, 4096, 2))),
    # CPC v1's encoder: the first three stacks of ResNet-101 ("CPC v1" in
    # Fig. 3).
    "resnet101_3stacks": Preset(64, 7, 2, True, (
        Stack(3, 64, 256, 1), Stack(4, 128, 512, 2),
        Stack(23, 256, 1024, 2))),
    "resnet50": _resnet_v2((3, 4, 6, 3)),
    "resnet101": _resnet_v2((3, 4, 23, 3)),
    "resnet152": _resnet_v2((3, 8, 36, 3)),
    "resnet200": _resnet_v2((3, 24, 36, 3)),
    # A genuine LN ResNet-v2 bottleneck encoder small enough for a CPU demo
    # on 8x8 patches: 3x3 stem without pooling, two stacks.
    "tiny": Preset(32, 3, 1, False, (
        Stack(1, 32, 128, 1), Stack(2, 64, 256, 2))),
}

NORMS = ("layer", "batch")


def layer_norm(x, gamma, beta, epsilon, relu=False, dtype=None):
  """[relu](gamma * (x - mean) / sqrt(var + epsilon) + beta), LayerNorm as
  in §4.1: statistics per sample over all axes but the first, gamma and
  beta per channel (last axis).

  Computed in float32 and returned in `dtype` (default: x's dtype). The
  gradient is written out (per-(sample, channel) sums, then one
  element-wise expression) instead of differentiating through
  `tf.nn.moments` and the ReLU.
  """
  dtype = dtype or x.dtype
  gamma = tf.cast(gamma, tf.float32)
  beta = tf.cast(beta, tf.float32)
  axes = list(range(1, x.shape.rank))

  @tf.custom_gradient
  def forward(x, gamma, beta):
    x32 = tf.cast(x, tf.float32)
    mean, variance = tf.nn.moments(x32, axes, keepdims=True)
    rstd = tf.math.rsqrt(variance + epsilon)
    scale = rstd * gamma  # [N, 1, ..., C]
    y = x32 * scale + (beta - mean * scale)
    if relu:
      y = tf.nn.relu(y)
    y = tf.cast(y, dtype)

    def backward(dy):
      if relu:
        dy = tf.raw_ops.ReluGrad(gradients=dy, features=y)
      dy = tf.cast(dy, tf.float32)
      centred = x32 - mean
      spatial = axes[:-1]
      # Per (sample, channel): sums over positions of dy and dy * xhat.
      dy_sum = tf.reduce_sum(dy, spatial, keepdims=True)
      dy_xhat = rstd * tf.reduce_sum(dy * centred, spatial, keepdims=True)
      batch_axes = [0] + spatial
      dgamma = tf.reduce_sum(dy_xhat, batch_axes)
      dbeta = tf.reduce_sum(dy_sum, batch_axes)
      # dx = rstd * (g - mean(g) - xhat * mean(g * xhat)), g = dy * gamma,
      # means per sample over all its elements.
      count = tf.cast(tf.reduce_prod(tf.shape(x)[1:]), tf.float32)
      g_mean = tf.reduce_sum(dy_sum * gamma, -1, keepdims=True) / count
      gx_mean = tf.reduce_sum(dy_xhat * gamma, -1, keepdims=True) / count
      dx = dy * scale - centred * (rstd * rstd * gx_mean) - rstd * g_mean
      return tf.cast(dx, x.dtype), dgamma, dbeta

    return y, backward

  return forward(x, gamma, beta)


@keras.saving.register_keras_serializable("cpc_tf")
class LayerNorm(keras.layers.GroupNormalization):
  """`GroupNormalization(groups=1)` (same weights `gamma`, `beta`, same
  output), computed by `layer_norm`; `call(x, relu=True)` also applies the
  ReLU that follows every norm in a pre-activation ResNet."""

  def __init__(self, epsilon=1e-5, **kwargs):
    super().__init__(**{**kwargs, "groups": 1, "epsilon": epsilon})
    if not (self.scale and self.center and self.axis == -1):
      raise ValueError("LayerNorm: channels-last with gamma and beta only")

  def call(self, inputs, relu=False):
    return layer_norm(inputs, self.gamma, self.beta, self.epsilon,
                      relu=relu, dtype=self.compute_dtype)


def make_norm(norm, name):
  if norm == "layer":
    return LayerNorm(epsilon=1e-5, name=name)
  if norm == "batch":
    return keras.layers.BatchNormalization(epsilon=1e-5, name=name)
  raise ValueError(f"norm={norm!r}; allowed: {', '.join(NORMS)}")


def norm_relu(norm, x, training):
  """relu(norm(x)); for LayerNorm the ReLU is fused into `layer_norm`."""
  if isinstance(norm, LayerNorm):
    return norm(x, relu=True)
  return tf.nn.relu(norm(x, training=training))


class BottleneckV2(keras.layers.Layer):
  """Pre-activation bottleneck block (He et al. 2016, "v2")."""

  def __init__(self, bottleneck, width, stride, norm, **kwargs):
    super().__init__(**kwargs)
    self.stride = stride
    self.width = width
    self.norm1 = make_norm(norm, "norm1")
    self.conv1 = keras.layers.Conv2D(bottleneck, 1, use_bias=False,
                                     name="conv1")
    self.norm2 = make_norm(norm, "norm2")
    self.conv2 = keras.layers.Conv2D(bottleneck, 3, strides=stride,
                                     padding="same", use_bias=False,
                                     name="conv2")
    self.norm3 = make_norm(norm, "norm3")
    self.conv3 = keras.layers.Conv2D(width, 1, name="conv3")
    self.projection = None

  def build(self, input_shape):
    shape = (None, None, None, input_shape[-1])
    if input_shape[-1] != self.width or self.stride != 1:
      self.projection = keras.layers.Conv2D(
          self.width, 1, strides=self.stride, name="projection")
      self.projection.build(shape)
    # The 1x1 convs run as matmuls (`pointwise`) and are never called:
    # build them here.
    self.conv1.build(shape)
    self.conv3.build(shape[:-1] + (self.conv2.filters,))
    super().build(input_shape)

  def call(self, x, training=False):
    preact = norm_relu(self.norm1, x, training)
    if self.projection is None:
      shortcut = x
    elif self.stride == 1:
      shortcut = pointwise(self.projection, preact)
    else:  # A strided 1x1 conv: oneDNN's strided kernels beat slicing.
      shortcut = self.projection(preact)
    h = pointwise(self.conv1, preact)
    h = self.conv2(norm_relu(self.norm2, h, training))
    h = pointwise(self.conv3, norm_relu(self.norm3, h, training))
    return shortcut + h


class Encoder(keras.Model):
  """f_theta: patches [B, rows, cols, p, p, 3] in [0, 1] -> [B, rows, cols, D].

  `feature_maps` runs the same weights on whole images and returns each
  stack's output with its stride, for dense transfer (detection, §4.3).
  """

  def __init__(self, preset="tiny", norm="layer", **kwargs):
    super().__init__(**kwargs)
    if preset not in PRESETS:
      raise ValueError(f"architecture={preset!r}; allowed: "
                       f"{', '.join(PRESETS)}")
    self.preset_name = preset
    self.norm = norm
    spec = PRESETS[preset]
    self.spec = spec
    self.stem = keras.layers.Conv2D(spec.stem_width, spec.stem_kernel,
                                    strides=spec.stem_stride, padding="same",
                                    name="stem")
    self.stem_pool = (keras.layers.MaxPooling2D(3, 2, padding="same")
                      if spec.stem_pool else None)
    self.stacks = []
    for s, stack in enumerate(spec.stacks):
      self.stacks.append([
          BottleneckV2(stack.bottleneck, stack.width,
                       stack.stride if b == 0 else 1, norm,
                       name=f"stack{s + 1}_block{b + 1}")
          for b in range(stack.num_blocks)])
    self.final_norm = make_norm(norm, "final_norm")

  @property
  def output_dim(self):
    return self.spec.output_dim

  def feature_maps(self, images, training=False):
    """images [N, H, W, 3] in [0, 1] -> [(stride, map)] for every stack; the
    last map is after the final pre-activation norm + ReLU."""
    x = self.stem(images * 2.0 - 1.0)
    stride = self.spec.stem_stride
    if self.stem_pool is not None:
      x = self.stem_pool(x)
      stride *= 2
    maps = []
    for stack, blocks in zip(self.spec.stacks, self.stacks):
      for block in blocks:
        x = block(x, training=training)
      stride *= stack.stride
      maps.append([stride, x])
    maps[-1][1] = norm_relu(self.final_norm, x, training)
    return [tuple(m) for m in maps]

  def call(self, patches, training=False):
    grid = tf.shape(patches)[:3]
    p, channels = patches.shape[-2], patches.shape[-1]
    flat = tf.reshape(patches, [-1, patches.shape[-3], p, channels])
    top = self.feature_maps(flat, training=training)[-1][1]
    pooled = tf.reduce_mean(top, axis=[1, 2])
    return tf.reshape(pooled, tf.concat([grid, [self.output_dim]], 0))
