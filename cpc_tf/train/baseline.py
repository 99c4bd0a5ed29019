"""The supervised baseline of A.4: a ResNet-v2 trained on pixels.

Every combination of the swept values (architecture, augmentation,
learning rate, weight decay, dropout, batch size) is trained on the same labelled subset
in `<model_dir>/trials/<name>` and selected on the held-out validation
part; only the combination best on validation is evaluated on the test
split. Images are the pipeline's 1x1 patch grid (patch = whole image), so
"full" augmentation is the pretraining's per-patch augmentation applied to
the whole image (A.4: "including the transformations used for CPC
pretraining").
"""

import dataclasses
import itertools
import json
import os
import time

from absl import logging
import keras
import tensorflow as tf

from cpc_tf import checkpoints
from cpc_tf import files
from cpc_tf import results
from cpc_tf.data import augment as augment_lib
from cpc_tf.models import classifier
from cpc_tf.train import accuracy
from cpc_tf.train import classification
from cpc_tf.train import optimizers
from cpc_tf.train import strategy as strategy_lib

_TRIAL_FILE = "trial.json"


@dataclasses.dataclass(frozen=True)
class Trial:
  """One point of the sweep."""
  architecture: str
  augment: str
  learning_rate: float
  weight_decay: float
  dropout: float
  batch_size: int

  @property
  def name(self):
    return (f"{self.architecture}_{self.augment}_lr{self.learning_rate:g}"
            f"_wd{self.weight_decay:g}_do{self.dropout:g}_bs{self.batch_size}")


def trials(config):
  """The sweep grid of a `SupervisedConfig`, in a fixed order."""
  return [Trial(*values) for values in itertools.product(
      config.architecture, config.augment, config.learning_rate,
      config.weight_decay, config.dropout, config.batch_size)]


def augment_config(config, augment):
  if augment == "crop_flip":
    return augment_lib.AugmentConfig(flip=True)
  return augment_lib.AugmentConfig.from_config(config)


def _build(config, trial, strategy, num_classes):
  """The model and optimizer of `trial`, built."""
  with strategy.scope():
    keras.utils.set_random_seed(config.seed)
    model = classifier.PixelClassifier(trial.architecture, num_classes,
                                       dropout=trial.dropout, name="resnet")
    side = config.image_size
    model(tf.zeros([1, 1, 1, side, side, 3]))
    optimizer = optimizers.sgd(
        optimizers.learning_rate_schedule(
            trial.learning_rate, config.train_steps, config.warmup_steps,
            config.schedule),
        trial.weight_decay, config.momentum)
    optimizer.build(model.trainable_variables)
  return model, optimizer


def _fit_trial(config, trial, strategy, data, geometry):
  """Trains (or resumes, or reads) one trial; returns its outcome."""
  trial_dir = os.path.join(config.model_dir, "trials", trial.name)
  path = os.path.join(trial_dir, _TRIAL_FILE)
  if tf.io.gfile.exists(path):
    with tf.io.gfile.GFile(path) as f:
      return json.load(f)
  logging.info("Trial %s", trial.name)
  model, optimizer = _build(config, trial, strategy, data.num_classes)
  outcome = classification.fit(
      config, strategy=strategy, model_dir=trial_dir, model=model,
      logits_fn=accuracy.inference(model), optimizer=optimizer, data=data,
      geometry=geometry,
      augment=augment_config(config, trial.augment),
      batch_size=trial.batch_size)
  outcome["trial"] = dataclasses.asdict(trial)
  if strategy_lib.is_chief(strategy):
    files.write_atomic(path, json.dumps(outcome, indent=2))
  return outcome


def run(config):
  """Runs (or resumes, or just reads) the sweep; returns the results of the
  selected trial (`cpc_tf.results`), also written to results.json."""
  done = classification.start(config)
  if done:
    return done
  start = time.time()
  strategy = strategy_lib.make_strategy(config.strategy, config.tpu)
  data = classification.load_data(config)
  side = config.image_size
  geometry = classification.Geometry(side, side, side)
  grid = trials(config)
  outcomes = [_fit_trial(config, trial, strategy, data, geometry)
              for trial in grid]
  # Best validation top-1; the first of equals (sweep order) wins.
  index = max(range(len(grid)),
              key=lambda i: (outcomes[i]["validation"]["top1"], -i))
  selected, outcome = grid[index], dict(outcomes[index])
  logging.info("Selected %s (validation top-1 %.4f)", selected.name,
               outcome["validation"]["top1"])
  model, _ = _build(config, selected, strategy, data.num_classes)
  best_dir = os.path.join(config.model_dir, "trials", selected.name, "best")
  checkpoints.weights_checkpoint(model).restore(
      tf.train.latest_checkpoint(best_dir)).expect_partial(
      ).assert_existing_objects_matched()
  outcome["test"] = classification.test(
      config, logits_fn=accuracy.inference(model), data=data,
      geometry=geometry,
      writer=strategy_lib.summary_writer(strategy, config.model_dir),
      step=outcome["steps_trained"])
  details = {"selected": outcome.pop("trial"), "trials": outcomes}
  report = results.make(config, data, outcome, time.time() - start, details)
  if strategy_lib.is_chief(strategy):
    results.write(config.model_dir, report)
  return report
