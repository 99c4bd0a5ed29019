"""Export the encoder f_theta as a SavedModel, then check it (§2.2, §4.3).

Endpoints (the contract `detection/` and serving rely on):
  serve        uint8 images [B, H, W, 3] -> {"latents": [B, rows, cols, D],
               "pooled": [B, D]}; images are resized and centre-cropped to
               the pretraining image size, cut into the pretraining patch
               grid (test-time path: no augmentation). Also the default
               serving signature.
  serve_float  the same for float32 images in [0, 1].
  latents_train  float32 patches [B, rows, cols, p, p, 3] in [0, 1] ->
               latents, in training mode, for fine-tuning.
  features     float32 images [B, H, W, 3] in [0, 1], H and W multiples of
               32 -> {"2": stride 4, "3": 8, "4": 16, "5": 32} maps of the
               encoder on the whole image (Model Garden level keys).
`cpc_config.json` beside it records the pretraining configuration.

Usage: python -m cpc_tf.export --model_dir=<pretraining dir> [--export_dir=]
       [--untrained]  (the same encoder, randomly initialised: a control)
"""

import os

from absl import app
from absl import flags
from absl import logging
import keras
import numpy as np
import tensorflow as tf

from cpc_tf import config as config_lib
from cpc_tf import cpc
from cpc_tf.data import patches as patches_lib
from cpc_tf.data import pipeline
from cpc_tf.train import loop

FEATURE_LEVELS = {"2": 4, "3": 8, "4": 16, "5": 32}
CONFIG_FILE = "cpc_config.json"
_SAVED_MODEL = "saved_model.pb"


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


def encode_images(encoder, images, config):
  """Test-time path: images (uint8 or float in [0, 1]) -> latents, pooled."""
  images = pipeline.preprocess_batch(images, config.image_size)
  grid = patches_lib.extract_patches(images, config.patch_size,
                                     config.patch_stride)
  latents = encoder(grid, training=False)
  return {"latents": latents, "pooled": tf.reduce_mean(latents, [1, 2])}


def _write(encoder, config, path):
  rows, p = config.grid_size, config.patch_size
  archive = keras.export.ExportArchive()
  archive.track(encoder)
  images = [tf.TensorSpec([None, None, None, 3], tf.uint8, name="images")]
  archive.add_endpoint("serve", lambda x: encode_images(encoder, x, config),
                       images)
  archive.add_endpoint(
      "serve_float", lambda x: encode_images(encoder, x, config),
      [tf.TensorSpec([None, None, None, 3], tf.float32, name="images")])
  archive.add_endpoint(
      "latents_train", lambda x: encoder(x, training=True),
      [tf.TensorSpec([None, rows, rows, p, p, 3], tf.float32,
                     name="patches")])
  archive.add_endpoint(
      "features", lambda x: dense_features(encoder, x),
      [tf.TensorSpec([None, None, None, 3], tf.float32, name="images")])
  archive.write_out(path, verbose=False)
  config.save(os.path.join(path, CONFIG_FILE))


def verify(encoder, config, path, batch_size=2, atol=1e-4):
  """Reloads the export and checks it against the Keras encoder."""
  rng = np.random.default_rng(0)
  size = config.image_size + 5
  images = rng.integers(0, 256, [batch_size, size, size + 3, 3], np.uint8)
  expected = encode_images(encoder, tf.constant(images), config)
  reloaded = tf.saved_model.load(path)
  got = reloaded.serve(tf.constant(images))
  for key in ("latents", "pooled"):
    np.testing.assert_allclose(got[key].numpy(), expected[key].numpy(),
                               atol=atol, rtol=1e-4,
                               err_msg=f"export {path}: {key} differs")
  side = 64
  whole = tf.constant(rng.random([1, side, side, 3]), tf.float32)
  features = reloaded.features(whole)
  for level, stride in FEATURE_LEVELS.items():
    shape = tuple(features[level].shape[1:3])
    if shape != (side // stride, side // stride):
      raise AssertionError(f"export {path}: level {level} has spatial shape "
                           f"{shape}, expected stride {stride}")


def _delete(path):
  """Removes the directory tree `path` if there is one."""
  try:
    tf.io.gfile.rmtree(path)
  except tf.errors.NotFoundError:
    pass


def _copy_in(staging, export_dir):
  """Replaces `export_dir` by a copy of `staging`, file by file; the old
  saved_model.pb goes first and the new one comes last (see
  `export_encoder`)."""
  marker = os.path.join(export_dir, _SAVED_MODEL)
  if tf.io.gfile.exists(marker):
    tf.io.gfile.remove(marker)
  _delete(export_dir)
  files = []
  for folder, _, names in tf.io.gfile.walk(staging):
    tf.io.gfile.makedirs(export_dir + folder[len(staging):])
    files += [os.path.join(folder, name) for name in names]
  for source in sorted(files, key=lambda f: f.endswith("/" + _SAVED_MODEL)):
    tf.io.gfile.copy(source, export_dir + source[len(staging):],
                     overwrite=True)


def export_encoder(encoder, config, export_dir):
  """Writes the export aside, verifies it, then puts it at `export_dir` (any
  tf.io.gfile path), so a failed or interrupted export never leaves a broken
  SavedModel in place of a good one.

  1. `<export_dir>.staging` is written and verified (`verify`); until then
     the previous export is untouched.
  2. Local disk (renaming a directory is atomic): the previous export is
     renamed to `<export_dir>.previous`, the staging directory to
     `export_dir`, then `.previous` is deleted. A crash between the renames
     leaves both verified exports, under those two names.
     gs:// and other object stores (no directory rename): the previous
     export's saved_model.pb is deleted first, then the rest of it, and the
     staging files are copied in with saved_model.pb last, so a
     saved_model.pb at `export_dir` always stands beside a complete,
     verified export. A crash during the copy leaves `export_dir` without
     saved_model.pb (not loadable) and the verified copy in `.staging`;
     rerunning the export writes it again.
  3. `.staging` is deleted.
  """
  export_dir = export_dir.rstrip("/")
  staging, previous = export_dir + ".staging", export_dir + ".previous"
  for leftover in (staging, previous):
    _delete(leftover)
  _write(encoder, config, staging)
  verify(encoder, config, staging)
  if "://" in export_dir:
    _copy_in(staging, export_dir)
    _delete(staging)
  else:
    if tf.io.gfile.exists(export_dir):
      tf.io.gfile.rename(export_dir, previous)
    tf.io.gfile.rename(staging, export_dir)
    _delete(previous)
  logging.info("Exported and verified the encoder SavedModel at %s",
               export_dir)
  return export_dir


def load_config(export_dir):
  """The PretrainConfig an export was made with."""
  return config_lib.PretrainConfig.load(os.path.join(export_dir, CONFIG_FILE))


def encoder_from_checkpoint(model_dir, untrained=False):
  """Rebuilds the encoder of a pretraining run and restores its newest
  checkpoint (or keeps the random initialisation, for the random-init
  controls); returns (encoder, config)."""
  config = config_lib.PretrainConfig.load(
      os.path.join(model_dir, "config.json"))
  keras.utils.set_random_seed(config.seed)
  model = cpc.build_model(config)
  if untrained:
    return model.encoder, config
  latest = tf.train.latest_checkpoint(model_dir)
  if latest is None:
    raise ValueError(f"no checkpoint in {model_dir}")
  tf.train.Checkpoint(model=loop.variables_by_path(model)).restore(
      latest).assert_existing_objects_matched().expect_partial()
  return model.encoder, config


def main(argv):
  del argv
  FLAGS = flags.FLAGS
  encoder, config = encoder_from_checkpoint(FLAGS.model_dir,
                                            FLAGS.untrained)
  path = export_encoder(encoder, config, FLAGS.export_dir
                        or os.path.join(FLAGS.model_dir, "export"))
  print(f"SavedModel: {path}")


if __name__ == "__main__":
  # Defined here only: pretraining imports this module and owns --model_dir.
  flags.DEFINE_string("model_dir", None, "Pretraining directory "
                      "(config.json and checkpoints).")
  flags.DEFINE_string("export_dir", None, "Where to write the SavedModel; "
                      "default <model_dir>/export.")
  flags.DEFINE_bool("untrained", False, "Export the randomly initialised "
                    "encoder of this configuration (random-init control).")
  flags.mark_flag_as_required("model_dir")
  app.run(main)
