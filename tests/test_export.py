"""The exported SavedModel equals the Keras encoder, keeps its contract and
loads the ways TensorFlow users load one (TF Serving, TF Hub, Keras)."""

import os
import shutil
import subprocess
import sysconfig

import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import shared_data
from cpc_tf import config as config_lib
from cpc_tf import cpc
from cpc_tf import export_lib
from cpc_tf.data import records


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
  """A tiny encoder exported as version 0; (encoder, config, version
  directory, the version loaded)."""
  config = config_lib.PretrainConfig(model_dir="unused", directions=1)
  encoder = cpc.build_model(config).encoder
  base = str(tmp_path_factory.mktemp("export") / "export")
  path = export_lib.export_encoder(encoder, config, base, 0)
  assert path == os.path.join(base, "0")
  return encoder, config, path, tf.saved_model.load(path)


def test_serve_matches_keras_on_any_batch_and_size(exported):
  encoder, config, _, reloaded = exported
  rng = np.random.default_rng(1)
  rows = config.grid_size
  for batch, h, w in [(1, 32, 32), (3, 40, 57), (5, 96, 64)]:
    images = rng.integers(0, 256, [batch, h, w, 3], np.uint8)
    want = export_lib.encode_images(encoder, tf.constant(images), config)
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
    for level, stride in export_lib.FEATURE_LEVELS.items():
      assert features[level].shape[:3] == (2, h // stride, w // stride)


def test_config_travels_with_the_export(exported):
  _, config, path, _ = exported
  assert export_lib.load_config(path) == config


def test_failed_export_keeps_the_previous_one(exported, tmp_path, monkeypatch):
  encoder, config, _, _ = exported
  base = str(tmp_path / "export")
  export_lib.export_encoder(encoder, config, base, 3)
  def broken_verify(*args, **kwargs):
    raise OSError("simulated: disk full")
  monkeypatch.setattr(export_lib, "verify", broken_verify)
  for step in (3, 4):  # The same version again, and a new one.
    with pytest.raises(OSError):
      export_lib.export_encoder(encoder, config, base, step)
  assert _pooled(os.path.join(base, "3")).shape[0] == 1
  assert sorted(os.listdir(base)) == ["3", "3.staging", "4.staging"]
  assert export_lib.saved_model_dir(base) == os.path.join(base, "3")


def _pooled(version):
  loaded = tf.saved_model.load(version)  # Kept: serve uses its variables.
  return loaded.serve(tf.zeros([1, 32, 32, 3], tf.uint8))["pooled"].numpy()


def test_a_new_version_leaves_the_previous_one_in_place(exported, tmp_path):
  encoder, config, _, _ = exported
  base = str(tmp_path / "export")
  first = export_lib.export_encoder(encoder, config, base, 1)
  before = _pooled(first)
  for variable in encoder.trainable_variables:
    variable.assign(variable + 0.1)
  try:
    second = export_lib.export_encoder(encoder, config, base + "/", 2)
  finally:
    for variable in encoder.trainable_variables:
      variable.assign(variable - 0.1)
  assert sorted(os.listdir(base)) == ["1", "2"]
  assert export_lib.saved_model_dir(base) == second
  np.testing.assert_array_equal(_pooled(first), before)
  assert not np.allclose(_pooled(second), before)


def test_newest_version_is_the_largest_number(exported, tmp_path):
  _, _, path, _ = exported
  base = tmp_path / "export"
  for name in ("9", "10", "10.staging", "2.previous"):
    shutil.copytree(path, base / name)
  (base / "11").mkdir()  # Not (yet) a SavedModel: a copy in progress.
  assert export_lib.versions(str(base)) == [9, 10]
  assert export_lib.saved_model_dir(str(base)) == str(base / "10")
  assert export_lib.saved_model_dir(str(base / "9")) == str(base / "9")
  assert export_lib.saved_model_dir(str(tmp_path)) is None


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


def _python_side(encoder, config, encoded):
  """What serve_bytes documents, computed here: decode, then the evaluation
  resize + central crop (`serve`'s path) of that one image."""
  image = records.decode_image(encoded)[None]
  return export_lib.encode_images(encoder, image, config)


def test_serve_bytes_decodes_and_resizes_as_documented(exported):
  encoder, config, _, reloaded = exported
  rng = np.random.default_rng(2)
  rgb = rng.integers(0, 256, [45, 70, 3], np.uint8)
  gray = rng.integers(0, 256, [33, 29, 1], np.uint8)
  rgba = rng.integers(0, 256, [50, 40, 4], np.uint8)
  encoded = [tf.io.encode_jpeg(rgb).numpy(), tf.io.encode_png(gray).numpy(),
             tf.io.encode_png(rgba).numpy()]
  got = reloaded.serve_bytes(tf.constant(encoded))  # Sizes differ.
  originals = [tf.io.decode_jpeg(encoded[0]),
               tf.image.grayscale_to_rgb(tf.constant(gray)),
               tf.constant(rgba[..., :3])]
  for i, (data, original) in enumerate(zip(encoded, originals)):
    want = _python_side(encoder, config, data)
    for key in ("latents", "pooled"):
      np.testing.assert_allclose(got[key][i], want[key][0], atol=1e-4)
    served = reloaded.serve(original[None])["pooled"]
    np.testing.assert_allclose(got["pooled"][i], served[0], atol=1e-4)


def test_saved_model_cli_runs_serve_bytes_on_a_jpeg(exported, tmp_path):
  encoder, config, path, _ = exported
  jpeg = sorted((shared_data("voc2007_subset") / "JPEGImages").glob("*.jpg"))[0]
  data = jpeg.read_bytes()
  np.save(tmp_path / "images.npy", np.array([data], dtype=object))
  cli = os.path.join(sysconfig.get_path("scripts"), "saved_model_cli")
  subprocess.run(
      [cli, "run", "--dir", path, "--tag_set", "serve", "--signature_def",
       "serve_bytes", "--inputs", f"images={tmp_path / 'images.npy'}",
       "--outdir", str(tmp_path / "out")],
      check=True, capture_output=True, timeout=300)
  want = _python_side(encoder, config, data)
  for key in ("latents", "pooled"):
    got = np.load(tmp_path / "out" / f"{key}.npy")
    assert got.shape == tuple(want[key].shape)
    np.testing.assert_allclose(got, want[key], atol=1e-4)


def test_tf_hub_keras_layer_frozen_and_fine_tuned(exported):
  import tensorflow_hub as hub  # pylint: disable=g-import-not-at-top
  import tf_keras  # pylint: disable=g-import-not-at-top
  encoder, config, path, _ = exported
  images = tf.random.stateless_uniform([2, 40, 48, 3], [3, 4])
  want = export_lib.encode_images(encoder, images, config)["pooled"]
  frozen = hub.KerasLayer(path)
  np.testing.assert_allclose(frozen(images), want, atol=1e-4)
  assert not frozen.trainable_weights
  assert len(frozen.non_trainable_weights) == len(encoder.weights)
  tuned = hub.KerasLayer(path, trainable=True)
  assert len(tuned.trainable_weights) == len(encoder.trainable_weights)
  model = tf_keras.Sequential([tf_keras.Input([None, None, 3]), tuned,
                               tf_keras.layers.Dense(3)])
  with tf.GradientTape() as tape:
    loss = tf.reduce_sum(model(images, training=True) ** 2)
  grads = tape.gradient(loss, tuned.trainable_weights)
  assert all(g is not None and np.any(g.numpy()) for g in grads)
  tf_keras.optimizers.SGD(0.1).apply_gradients(
      zip(grads, tuned.trainable_weights))
  assert not np.allclose(tuned(images), want, atol=1e-4)  # Fine-tuned,
  np.testing.assert_allclose(frozen(images), want, atol=1e-4)  # not shared.


def test_keras_tfsm_layer(exported):
  encoder, config, path, _ = exported
  images = tf.random.stateless_uniform([2, 40, 48, 3], [5, 6])
  layer = keras.layers.TFSMLayer(path, call_endpoint="serve_float")
  inputs = keras.Input([None, None, 3])
  model = keras.Model(inputs, layer(inputs)["pooled"])
  np.testing.assert_allclose(
      model(images), export_lib.encode_images(encoder, images, config)
      ["pooled"], atol=1e-4)
  assert len(layer.weights) == len(encoder.weights)
