"""Tests for cpc_tf/models/resnet.py: shapes of every preset, per-patch
independence under LayerNorm (paper §4.1), and feature-map strides."""

import pathlib
import sys
import time

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
  sys.path.insert(0, str(ROOT))

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

from cpc_tf.models.resnet import (  # noqa: E402
    BottleneckV2, Encoder, LayerNorm, PRESETS)

EXPECTED_DIMS = {"tiny": 256, "resnet50": 2048, "resnet101": 2048,
                 "resnet152": 2048, "resnet200": 2048, "resnet161": 4096,
                 "resnet101_3stacks": 1024}


def test_presets_are_the_expected_ones():
  """The paper's encoders and the CPU presets, each with its width."""
  assert set(EXPECTED_DIMS) == set(PRESETS)
  for name, dim in EXPECTED_DIMS.items():
    assert PRESETS[name].output_dim == dim
    assert Encoder(name).output_dim == dim


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_preset_builds_and_returns_latents(preset):
  keras.utils.set_random_seed(0)
  start = time.time()
  encoder = Encoder(preset)
  if preset == "tiny":
    batch, rows, cols, p = 2, 3, 2, 8
  else:  # Keep the big ones cheap: 1 image, 2x2 grid of 32x32 patches.
    batch, rows, cols, p = 1, 2, 2, 32
  patches = tf.random.stateless_uniform([batch, rows, cols, p, p, 3],
                                        seed=(1, 0))
  latents = encoder(patches)
  dim = EXPECTED_DIMS[preset]  # Written out here, not read off the preset.
  assert encoder.output_dim == dim
  assert latents.shape == (batch, rows, cols, dim)
  assert latents.dtype == tf.float32
  values = latents.numpy()
  assert np.all(np.isfinite(values))
  # Mean of a ReLU map: non-negative and not all zero.
  assert values.min() >= 0.0 and values.max() > 0.0
  # Different patches give different latents.
  assert not np.allclose(values[0, 0, 0], values[0, 1, 1])
  elapsed = time.time() - start
  print(f"{preset}: {encoder.count_params()} params, {elapsed:.1f}s")


def _cross_patch_gradient(norm, training):
  """|d latents[:, r, c] / d patches| summed per grid position (r, c)."""
  keras.utils.set_random_seed(0)
  encoder = Encoder("tiny", norm=norm)
  patches = tf.random.stateless_uniform([2, 2, 2, 8, 8, 3], seed=(2, 0))
  grads = {}
  for r in range(2):
    for c in range(2):
      with tf.GradientTape() as tape:
        tape.watch(patches)
        out = tf.reduce_sum(encoder(patches, training=training)[:, r, c])
      g = tape.gradient(out, patches).numpy()
      grads[r, c] = np.abs(g).sum(axis=(3, 4, 5))  # [B, rows, cols]
  return grads


@pytest.mark.parametrize("training", [False, True])
def test_layer_norm_keeps_patches_independent(training):
  grads = _cross_patch_gradient("layer", training)
  for (r, c), g in grads.items():
    for b in range(g.shape[0]):
      for r2 in range(g.shape[1]):
        for c2 in range(g.shape[2]):
          if (r2, c2) == (r, c):
            assert g[b, r2, c2] > 0.0, (r, c, b)
          else:
            assert g[b, r2, c2] == 0.0, (r, c, b, r2, c2, g[b, r2, c2])


def test_batch_norm_in_training_mixes_patches():
  """Paper §4.1: with batch statistics, a patch's latent depends on the other
  patches (and images) in the batch; LayerNorm removes this."""
  grads = _cross_patch_gradient("batch", training=True)
  for (r, c), g in grads.items():
    others = g.copy()
    others[:, r, c] = 0.0
    assert others.max() > 0.0, (r, c)
    assert g[:, r, c].min() > 0.0


def test_batch_norm_in_inference_keeps_patches_independent():
  grads = _cross_patch_gradient("batch", training=False)
  for (r, c), g in grads.items():
    others = g.copy()
    others[:, r, c] = 0.0
    assert others.max() == 0.0, (r, c)


def test_unknown_preset_and_norm_are_rejected():
  with pytest.raises(ValueError):
    Encoder("resnet18")
  with pytest.raises(ValueError):
    Encoder("tiny", norm="instance")


def test_feature_maps_strides_resnet50():
  keras.utils.set_random_seed(0)
  encoder = Encoder("resnet50")
  images = tf.random.stateless_uniform([1, 64, 64, 3], seed=(3, 0))
  maps = encoder.feature_maps(images)
  assert [s for s, _ in maps] == [4, 8, 16, 32]
  assert [tuple(m.shape) for _, m in maps] == [
      (1, 16, 16, 256), (1, 8, 8, 512), (1, 4, 4, 1024), (1, 2, 2, 2048)]
  # The last map is after the final norm + ReLU.
  assert float(tf.reduce_min(maps[-1][1])) >= 0.0


def test_feature_maps_strides_tiny():
  keras.utils.set_random_seed(0)
  encoder = Encoder("tiny")
  images = tf.random.stateless_uniform([2, 16, 16, 3], seed=(4, 0))
  maps = encoder.feature_maps(images)
  assert [s for s, _ in maps] == [1, 2]
  assert [tuple(m.shape) for _, m in maps] == [(2, 16, 16, 128),
                                               (2, 8, 8, 256)]


def test_latents_are_pooled_last_feature_map():
  """encoder(patches)[b, r, c] == spatial mean of feature_maps(patch)[-1]."""
  keras.utils.set_random_seed(0)
  encoder = Encoder("tiny")
  patches = tf.random.stateless_uniform([2, 2, 3, 8, 8, 3], seed=(5, 0))
  latents = encoder(patches).numpy()
  for b in range(2):
    for r in range(2):
      for c in range(3):
        top = encoder.feature_maps(patches[b, r, c][None])[-1][1]
        np.testing.assert_allclose(latents[b, r, c],
                                   tf.reduce_mean(top, axis=[0, 1, 2]),
                                   rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("shape", [(3, 5, 4, 6), (2, 7)])
def test_layer_norm_matches_group_normalization(shape, relu):
  """The hand-written LayerNorm (custom gradient, fused ReLU) computes
  GroupNormalization(groups=1), values and gradients w.r.t. input, gamma
  and beta, float32."""
  rng = np.random.default_rng(0)
  # Far from zero mean: the gradient must not lose it to cancellation.
  x = tf.constant(rng.normal(4.0, 0.5, shape), tf.float32)
  cotangent = tf.constant(rng.normal(size=shape), tf.float32)
  ours = LayerNorm(epsilon=1e-5)
  reference = keras.layers.GroupNormalization(groups=1, epsilon=1e-5)
  for layer in (ours, reference):
    layer.build(shape)
  for name in ("gamma", "beta"):
    value = rng.normal(size=shape[-1]).astype(np.float32)
    getattr(ours, name).assign(value)
    getattr(reference, name).assign(value)

  def value_and_grads(layer, apply):
    with tf.GradientTape() as tape:
      tape.watch(x)
      y = apply(layer)
      loss = tf.reduce_sum(y * cotangent)
    return [y] + tape.gradient(loss, [x, layer.gamma, layer.beta])

  got = value_and_grads(ours, lambda n: n(x, relu=relu))
  want = value_and_grads(
      reference, lambda n: tf.nn.relu(n(x)) if relu else n(x))
  for name, g, w in zip(("y", "dx", "dgamma", "dbeta"), got, want):
    np.testing.assert_allclose(g.numpy(), w.numpy(), rtol=1e-4, atol=1e-5,
                               err_msg=name)


def test_bottleneck_matches_keras_layers():
  """The block's 1x1 convs run as matmuls (`pointwise`, strided for the
  projection); the result equals calling its Keras layers, with
  GroupNormalization(groups=1) as the norm."""
  keras.utils.set_random_seed(0)
  block = BottleneckV2(8, 16, 2, "layer")
  x = tf.random.stateless_normal([2, 7, 7, 4], seed=(6, 0))
  got = block(x)

  def norm(n, h):
    reference = keras.layers.GroupNormalization(groups=1, epsilon=1e-5)
    reference.build(h.shape)
    reference.gamma.assign(n.gamma)
    reference.beta.assign(n.beta)
    return tf.nn.relu(reference(h))

  preact = norm(block.norm1, x)
  h = block.conv2(norm(block.norm2, block.conv1(preact)))
  want = block.projection(preact) + block.conv3(norm(block.norm3, h))
  np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-5,
                             atol=1e-5)
