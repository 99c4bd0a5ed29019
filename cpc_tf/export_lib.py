"""The encoder f_theta as a SavedModel: export, check, find (§2.2, §4.3).

Layout, TF Serving's: an export base holds one version per directory,
`<base>/<step>/`, named by the pretraining step of its weights (0: the
untrained encoder). The newest version is the largest number holding a
saved_model.pb; `saved_model_dir` finds it, so every consumer here takes
the base or a version directory.

Endpoints of a version (SavedModel signatures, and methods of the object
`tf.saved_model.load` returns):
  serve        uint8 images [B, H, W, 3] -> {"latents": [B, rows, cols, D],
               "pooled": [B, D]}: images are scaled to [0, 1], resized
               (bilinear, antialiased) so that the shorter side is
               round(1.14 * image_size) with the aspect ratio kept,
               centre-cropped to image_size x image_size
               (`pipeline.preprocess_batch`, the evaluation geometry) and
               cut into the pretraining patch grid (no augmentation). Also
               the default serving signature.
  serve_float  the same for float32 images in [0, 1].
  serve_bytes  encoded images, string [B] (JPEG, PNG, or any format
               `tf.io.decode_image` reads; a GIF's first frame) -> the same
               outputs. Each image is decoded to 3-channel uint8 (grayscale
               is repeated, alpha dropped) and goes through
               `pipeline.preprocess(training=False)`, the same resize and
               central crop as `serve`, one image at a time, so the images
               of a batch may differ in size.
  latents_train  float32 patches [B, rows, cols, p, p, 3] in [0, 1] ->
               latents, in training mode, for fine-tuning.
  features     float32 images [B, H, W, 3] in [0, 1], H and W multiples of
               32 -> {"2": stride 4, "3": 8, "4": 16, "5": 32} maps of the
               encoder on the whole image (Model Garden level keys).
  __call__     TF Hub's reusable SavedModel: float32 images [B, H, W, 3] in
               [0, 1], `training` (Python bool) -> the image feature vector
               `pooled` [B, D] (the `serve_float` path), with `variables`
               and `trainable_variables`, so `hub.KerasLayer(version)`
               loads it frozen or with `trainable=True` for fine-tuning.
               As a signature it runs with `training=False`.
`cpc_config.json` in each version records the pretraining configuration.
"""

import os

from absl import logging
import keras
import numpy as np
import tensorflow as tf

from cpc_tf import checkpoints
from cpc_tf import config as config_lib
from cpc_tf.data import patches as patches_lib
from cpc_tf.data import pipeline
from cpc_tf.data import records

FEATURE_LEVELS = {"2": 4, "3": 8, "4": 16, "5": 32}
CONFIG_FILE = "cpc_config.json"
SAVED_MODEL = "saved_model.pb"


def dense_features(encoder, images):
  """Maps at strides 4..32: for each level, the deepest stack output of at
  most that stride, max-pooled down to it (like FPN's extra levels)."""
  maps = encoder.feature_maps(images, training=False)
  features = {}
  for level, stride in FEATURE_LEVELS.items():
    below = [(s, m) for s, m in maps if s <= stride]
    source_stride, feature = below[-1] if below else maps[0]
    factor = stride // source_stride
    if factor > 1:
      feature = tf.nn.max_pool2d(feature, factor, factor, padding="SAME")
    features[level] = feature
  return features


def _encode_crops(encoder, crops, config, training=False):
  """Preprocessed crops [B, image_size, image_size, 3] -> latents, pooled."""
  grid = patches_lib.extract_patches(crops, config.patch_size,
                                     config.patch_stride)
  latents = encoder(grid, training=training)
  return {"latents": latents, "pooled": tf.reduce_mean(latents, [1, 2])}


def encode_images(encoder, images, config):
  """Test-time path: images (uint8 or float in [0, 1]) -> latents, pooled."""
  return _encode_crops(
      encoder, pipeline.preprocess_batch(images, config.image_size), config)


def encode_bytes(encoder, data, config):
  """Test-time path of encoded images (string [B]) -> latents, pooled."""
  size = config.image_size
  crops = tf.map_fn(
      lambda d: pipeline.preprocess(records.decode_image(d), size,
                                    training=False),
      data, fn_output_signature=tf.TensorSpec([size, size, 3], tf.float32))
  return _encode_crops(encoder, crops, config)


def _hub_call(encoder, config):
  """The reusable SavedModel's `__call__(images, training=False)`."""
  @tf.function
  def call(images, training=False):
    crops = pipeline.preprocess_batch(images, config.image_size)
    return _encode_crops(encoder, crops, config, training)["pooled"]

  spec = tf.TensorSpec([None, None, None, 3], tf.float32, name="images")
  for training in (False, True):
    call.get_concrete_function(spec, training=training)
  return call


def _write(encoder, config, path):
  rows, p = config.grid_size, config.patch_size
  floats = [tf.TensorSpec([None, None, None, 3], tf.float32, name="images")]
  archive = keras.export.ExportArchive()
  archive.track(encoder)
  archive.add_endpoint(
      "serve", lambda x: encode_images(encoder, x, config),
      [tf.TensorSpec([None, None, None, 3], tf.uint8, name="images")])
  archive.add_endpoint("serve_float",
                       lambda x: encode_images(encoder, x, config), floats)
  archive.add_endpoint(
      "serve_bytes", lambda x: encode_bytes(encoder, x, config),
      [tf.TensorSpec([None], tf.string, name="images")])
  archive.add_endpoint(
      "latents_train", lambda x: encoder(x, training=True),
      [tf.TensorSpec([None, rows, rows, p, p, 3], tf.float32,
                     name="patches")])
  archive.add_endpoint("features", lambda x: dense_features(encoder, x),
                       floats)
  archive.add_endpoint("__call__", _hub_call(encoder, config))
  archive.write_out(path, verbose=False)
  config.save(os.path.join(path, CONFIG_FILE))


def _assert_close(got, want, what, atol):
  np.testing.assert_allclose(got, want, atol=atol, rtol=1e-4,
                             err_msg=f"export {what} differs")


def verify(encoder, config, path, batch_size=2, atol=1e-4):
  """Reloads the export and checks it against the Keras encoder."""
  rng = np.random.default_rng(0)
  size = config.image_size + 5
  images = rng.integers(0, 256, [batch_size, size, size + 3, 3], np.uint8)
  expected = encode_images(encoder, tf.constant(images), config)
  reloaded = tf.saved_model.load(path)
  got = reloaded.serve(tf.constant(images))
  pngs = tf.stack([tf.io.encode_png(image) for image in images])
  from_bytes = reloaded.serve_bytes(pngs)
  for key in ("latents", "pooled"):
    _assert_close(got[key], expected[key], f"{path}: serve {key}", atol)
    _assert_close(from_bytes[key], expected[key],
                  f"{path}: serve_bytes {key}", atol)
  _assert_close(reloaded(tf.constant(images / 255, tf.float32)),
                expected["pooled"], f"{path}: __call__", atol)
  side = 64
  whole = tf.constant(rng.random([1, side, side, 3]), tf.float32)
  features = reloaded.features(whole)
  for level, stride in FEATURE_LEVELS.items():
    shape = tuple(features[level].shape[1:3])
    if shape != (side // stride, side // stride):
      raise AssertionError(f"export {path}: level {level} has spatial shape "
                           f"{shape}, expected stride {stride}")


def is_saved_model(path):
  return tf.io.gfile.exists(os.path.join(path, SAVED_MODEL))


def versions(export_base):
  """The versions (steps) below `export_base` that hold a SavedModel,
  ascending."""
  found = tf.io.gfile.glob(os.path.join(export_base, "*", SAVED_MODEL))
  names = (os.path.basename(os.path.dirname(f)) for f in found)
  return sorted(int(name) for name in names if name.isdigit())


def saved_model_dir(path):
  """The SavedModel at `path`: `path` itself if it holds one (a version
  directory), else the newest version of the export base `path`; None if
  neither."""
  if is_saved_model(path):
    return path
  found = versions(path)
  return os.path.join(path, str(found[-1])) if found else None


def _delete(path):
  """Removes the directory tree `path` if there is one."""
  try:
    tf.io.gfile.rmtree(path)
  except tf.errors.NotFoundError:
    pass


def _copy_in(staging, version):
  """Replaces `version` by a copy of `staging`, file by file; the old
  saved_model.pb goes first and the new one comes last (see
  `export_encoder`)."""
  marker = os.path.join(version, SAVED_MODEL)
  if tf.io.gfile.exists(marker):
    tf.io.gfile.remove(marker)
  _delete(version)
  files = []
  for folder, _, names in tf.io.gfile.walk(staging):
    tf.io.gfile.makedirs(version + folder[len(staging):])
    files += [os.path.join(folder, name) for name in names]
  for source in sorted(files, key=lambda f: f.endswith("/" + SAVED_MODEL)):
    tf.io.gfile.copy(source, version + source[len(staging):], overwrite=True)


def export_encoder(encoder, config, export_base, step):
  """Writes the export of the weights of `step` aside, verifies it, then
  puts it at `<export_base>/<step>` (any tf.io.gfile path), so a failed or
  interrupted export never leaves a broken SavedModel in place of a good
  one, and other versions are never touched. Returns the version directory.

  1. `<step>.staging` beside it is written and verified (`verify`); until
     then an earlier export of that step is untouched.
  2. Local disk (renaming a directory is atomic): an earlier export of the
     step is renamed to `<step>.previous`, the staging directory to
     `<step>`, then `.previous` is deleted. A crash between the renames
     leaves both verified exports, under those two names.
     gs:// and other object stores (no directory rename): the earlier
     export's saved_model.pb is deleted first, then the rest of it, and the
     staging files are copied in with saved_model.pb last, so a
     saved_model.pb in a version always stands beside a complete, verified
     export. A crash during the copy leaves the version without
     saved_model.pb (not loadable; the newest version is then the one
     before) and the verified copy in `.staging`; rerunning the export
     writes it again.
  3. `.staging` is deleted.
  """
  version = os.path.join(export_base.rstrip("/"), str(step))
  staging, previous = version + ".staging", version + ".previous"
  for leftover in (staging, previous):
    _delete(leftover)
  _write(encoder, config, staging)
  verify(encoder, config, staging)
  if "://" in version:
    _copy_in(staging, version)
    _delete(staging)
  else:
    if tf.io.gfile.exists(version):
      tf.io.gfile.rename(version, previous)
    tf.io.gfile.rename(staging, version)
    _delete(previous)
  logging.info("Exported and verified the encoder SavedModel at %s", version)
  return version


def export_checkpoint(model_dir, export_base="", untrained=False):
  """Exports the newest checkpoint of the pretraining run in `model_dir`
  (or, `untrained`, its encoder randomly initialised, as version 0) to
  `<export_base>/<step>`, by default under `<model_dir>/export`; returns
  the version directory."""
  checkpoint = None if untrained else checkpoints.newest(model_dir)
  encoder, config = checkpoints.encoder_from_checkpoint(
      model_dir, untrained, checkpoint)
  step = checkpoints.step_of(checkpoint) if checkpoint else 0
  return export_encoder(encoder, config,
                        export_base or os.path.join(model_dir, "export"), step)


def load_config(version):
  """The PretrainConfig a version directory was exported with."""
  return config_lib.PretrainConfig.load(os.path.join(version, CONFIG_FILE))
