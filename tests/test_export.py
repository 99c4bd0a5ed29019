"""The exported SavedModel equals the Keras encoder and keeps its contract."""

import os

import numpy as np
import pytest
import tensorflow as tf

from cpc_tf import config as config_lib
from cpc_tf import cpc
from cpc_tf import export


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
  config = config_lib.PretrainConfig(model_dir="unused", encoder="tiny",
                                     directions=1)
  encoder = cpc.build_model(config).encoder
  path = str(tmp_path_factory.mktemp("export") / "export")
  export.export_encoder(encoder, config, path)
  return encoder, config, path, tf.saved_model.load(path)


def test_serve_matches_keras_on_any_batch_and_size(exported):
  encoder, config, _, reloaded = exported
  rng = np.random.default_rng(1)
  rows = config.grid_size
  for batch, h, w in [(1, 32, 32), (3, 40, 57), (5, 96, 64)]:
    images = rng.integers(0, 256, [batch, h, w, 3], np.uint8)
    want = export.encode_images(encoder, tf.constant(images), config)
    got = reloaded.serve(tf.constant(images))
    assert got["latents"].shape == (batch, rows, rows, encoder.output_dim)
    assert got["pooled"].shape == (batch, encoder.output_dim)
    np.testing.assert_allclose(got["latents"], want["latents"], atol=1e-4)
    floats = reloaded.serve_float(tf.constant(images / 255.0, tf.float32))
    np.testing.assert_allclose(floats["pooled"], got["pooled"], atol=1e-4)


def test_training_endpoint_and_variables(exported):
  encoder, config, _, reloaded = exported
  p, rows = config.patch_size, config.grid_size
  patches = tf.random.uniform([2, rows, rows, p, p, 3])
  np.testing.assert_allclose(reloaded.latents_train(patches),
                             encoder(patches, training=True), atol=1e-4)
  assert len(reloaded.trainable_variables) == len(encoder.trainable_weights)
  with tf.GradientTape() as tape:
    loss = tf.reduce_sum(reloaded.latents_train(patches))
  grads = tape.gradient(loss, reloaded.trainable_variables)
  assert all(g is not None for g in grads)


def test_features_have_strides_4_to_32(exported):
  _, _, _, reloaded = exported
  for h, w in [(64, 64), (96, 128)]:
    features = reloaded.features(tf.random.uniform([2, h, w, 3]))
    for level, stride in export.FEATURE_LEVELS.items():
      assert features[level].shape[:3] == (2, h // stride, w // stride)


def test_config_travels_with_the_export(exported):
  _, config, path, _ = exported
  assert export.load_config(path) == config


def test_failed_export_keeps_the_previous_one(exported, tmp_path, monkeypatch):
  encoder, config, path, _ = exported
  target = str(tmp_path / "export")
  export.export_encoder(encoder, config, target)
  def broken_verify(*args, **kwargs):
    raise OSError("simulated: disk full")
  monkeypatch.setattr(export, "verify", broken_verify)
  with pytest.raises(OSError):
    export.export_encoder(encoder, config, target)
  reloaded = tf.saved_model.load(target)
  assert reloaded.serve(tf.zeros([1, 32, 32, 3], tf.uint8))["pooled"].shape[0] == 1
  assert sorted(os.listdir(tmp_path)) == ["export", "export.staging"]


@pytest.mark.parametrize("shape, dtype", [
    ([2, 32, 32], tf.uint8),  # Rank 3.
    ([2, 32, 32, 4], tf.uint8),  # RGBA.
    ([2, 32, 32, 1], tf.uint8),  # Grayscale.
    ([2, 32, 32, 3], tf.int32),  # Wrong dtype.
])
def test_serving_rejects_bad_inputs_naming_the_expected_spec(
    exported, shape, dtype):
  reloaded = exported[3]
  with pytest.raises((TypeError, ValueError), match=r"None, None, None, 3"):
    reloaded.serve(tf.zeros(shape, dtype))


def test_serving_takes_small_and_odd_image_sizes(exported):
  _, config, _, reloaded = exported
  for h, w in [(3, 5), (8, 8), (31, 200)]:
    out = reloaded.serve(tf.zeros([2, h, w, 3], tf.uint8))
    assert out["latents"].shape[:3] == (2, config.grid_size,
                                        config.grid_size)
