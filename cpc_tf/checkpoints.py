"""Checkpoints of Keras weights, and the encoder of a pretraining run.

Training (`loop.Trainer`), model selection (`early_stopping.BestWeights`)
and export read and write model variables the same way, keyed by
`variables_by_path`; pretraining checkpoints also hold the step counter.
"""

import os

import keras
import tensorflow as tf

from cpc_tf import config as config_lib
from cpc_tf import cpc


def variables_by_path(model):
  """{path: variable} of every model variable, for tf.train.Checkpoint.

  Keras 3 layers held in Python lists are not checkpoint dependencies of
  their model, so `Checkpoint(model=model)` would miss them (and every
  non-trainable variable, like BatchNorm statistics); keying each variable
  by its path below the model's own name covers all of them.
  """
  return {v.path.split("/", 1)[1]: v for v in model.variables}


def weights_checkpoint(model, **extra):
  """A tf.train.Checkpoint of every variable of the Keras `model` (batch-norm
  statistics and layers kept in lists included), keyed as `loop.Trainer`
  keys them."""
  return tf.train.Checkpoint(model=variables_by_path(model), **extra)


def newest(model_dir):
  """The newest checkpoint in `model_dir`; ValueError if there is none."""
  latest = tf.train.latest_checkpoint(model_dir)
  if latest is None:
    raise ValueError(f"no checkpoint in {model_dir}")
  return latest


def step_of(checkpoint):
  """The training step a `loop.Trainer` checkpoint was saved at."""
  step = tf.Variable(0, dtype=tf.int64)
  tf.train.Checkpoint(step=step).read(checkpoint).expect_partial()
  return int(step.numpy())


def encoder_from_checkpoint(model_dir, untrained=False, checkpoint=None):
  """Rebuilds the encoder of the pretraining run in `model_dir` (from its
  config.json) and restores `checkpoint`, by default the run's newest (or,
  `untrained`, keeps the random initialisation, for the random-init
  controls); returns (encoder, config)."""
  config_path = os.path.join(model_dir, "config.json")
  if not tf.io.gfile.exists(config_path):
    raise ValueError(f"{model_dir} is not a pretraining directory: it has no "
                     "config.json")
  config = config_lib.PretrainConfig.load(config_path)
  keras.utils.set_random_seed(config.seed)
  model = cpc.build_model(config)
  if untrained:
    return model.encoder, config
  weights_checkpoint(model).restore(
      checkpoint or newest(model_dir)
  ).assert_existing_objects_matched().expect_partial()
  return model.encoder, config
