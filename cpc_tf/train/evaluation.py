"""Linear, efficient and fine-tuned classification on CPC latents (§2.2).

linear     A.3: frozen f_theta, `heads.LinearHead`, Adam.
efficient  §2.2: frozen f_theta, the 11-block `heads.ResNetHead`.
finetune   §2.2: f_theta and the ResNet head start from the efficient
           solution (theta*, psi*) and are trained together, the encoder
           at a smaller learning rate, with early stopping on validation;
           the starting point is validated too, so fine-tuning never ends
           below the fixed solution on validation.

Training inputs get the pretraining run's augmentation (per patch), test
inputs a single central crop. With `random_init` the encoder is the same
architecture, untrained: the random-init control.
"""

import dataclasses
import os
import time

from absl import logging
import keras
import tensorflow as tf

from cpc_tf import checkpoints
from cpc_tf import export_lib
from cpc_tf import results
from cpc_tf.data import augment as augment_lib
from cpc_tf.models import classifier
from cpc_tf.models import heads
from cpc_tf.train import accuracy
from cpc_tf.train import classification
from cpc_tf.train import optimizers
from cpc_tf.train import strategy as strategy_lib

# Fields that must agree between a fine-tuning run and the efficient run it
# starts from.
_SHARED_WITH_INIT = ("encoder", "random_init", "head", "head_dropout",
                     "dataset", "train_split", "label_fraction",
                     "images_per_class", "validation_per_class",
                     "subset_seed")


def make_head(config, num_classes):
  if config.protocol == "linear":
    return heads.LinearHead(num_classes, name="head")
  return heads.ResNetHead(num_classes, preset=config.head,
                          dropout=config.head_dropout, name="head")


def make_optimizer(config, model):
  learning_rate = optimizers.learning_rate_schedule(
      config.learning_rate, config.train_steps, config.warmup_steps,
      config.schedule)
  if config.protocol == "finetune":
    return optimizers.EncoderScaledAdam(
        model.encoder.trainable_variables, config.encoder_lr_scale,
        learning_rate=learning_rate)
  return keras.optimizers.Adam(learning_rate=learning_rate)


def _start_from(model, config, init_dir):
  """Loads theta*, psi* of the efficient run in `init_dir` (its best
  validated weights)."""
  init_config = dataclasses.replace(config, model_dir=init_dir,
                                    protocol="efficient", init_from="")
  changed = set(init_config.differences(
      os.path.join(init_dir, "config.json"))) & set(_SHARED_WITH_INIT)
  if changed:
    raise ValueError(f"--init_from={init_dir} was run with other values of "
                     f"--{', --'.join(sorted(changed))}")
  best = tf.train.latest_checkpoint(os.path.join(init_dir, "best"))
  if best is None:
    raise ValueError(f"--init_from={init_dir} has no validated weights "
                     "(best/); finish that run first")
  checkpoints.weights_checkpoint(model).restore(best).expect_partial(
  ).assert_existing_objects_matched()
  logging.info("Fine-tuning from %s", best)


def _encoder_checkpoint(path):
  """The SavedModel version or the checkpoint `--encoder` names."""
  return export_lib.saved_model_dir(path) or tf.train.latest_checkpoint(path)


def _run(config, strategy, data):
  done = classification.prepare_model_dir(config)
  if done:
    logging.info("%s is finished; its results are kept", config.model_dir)
    return done
  init_dir = config.init_from
  if config.protocol == "finetune" and not init_dir:
    init_dir = os.path.join(config.model_dir, "fixed")
    _run(dataclasses.replace(config, protocol="efficient",
                             model_dir=init_dir), strategy, data)
  start = time.time()
  with strategy.scope():
    encoder, pretrain_config = classifier.load_encoder(config.encoder,
                                                       config.random_init)
    keras.utils.set_random_seed(config.seed)
    model = classifier.Classifier(
        encoder, make_head(config, data.num_classes),
        train_encoder=config.protocol == "finetune", name="classifier")
    rows, p = pretrain_config.grid_size, pretrain_config.patch_size
    model(tf.zeros([1, rows, rows, p, p, 3]))
    optimizer = make_optimizer(config, model)
    optimizer.build(model.trainable_variables)
  if init_dir:
    _start_from(model, config, init_dir)
  logging.info("%s on %s (%d train, %d validation images): %s",
               config.method, config.dataset, data.num_train,
               data.num_validation, config.model_dir)
  geometry = classification.Geometry(pretrain_config.image_size,
                                     pretrain_config.patch_size,
                                     pretrain_config.patch_stride)
  logits_fn = accuracy.inference(model)
  outcome = classification.fit(
      config, strategy=strategy, model_dir=config.model_dir, model=model,
      logits_fn=logits_fn, optimizer=optimizer, data=data,
      geometry=geometry,
      augment=augment_lib.AugmentConfig.from_config(pretrain_config),
      batch_size=config.batch_size,
      start_is_candidate=config.protocol == "finetune")
  outcome["test"] = classification.test(
      config, logits_fn=logits_fn, data=data, geometry=geometry,
      writer=strategy_lib.summary_writer(strategy, config.model_dir),
      step=outcome["steps_trained"])
  details = {"encoder": config.encoder,
             "encoder_checkpoint": (None if config.random_init else
                                    _encoder_checkpoint(config.encoder)),
             "random_init": config.random_init,
             "started_from": init_dir or None,
             "pretraining": results.config_dict(pretrain_config)}
  report = results.make(config, data, outcome, time.time() - start, details)
  if strategy_lib.is_chief(strategy):
    results.write(config.model_dir, report)
  return report


def run(config):
  """Runs (or resumes, or just reads) one evaluation; returns its results
  (`cpc_tf.results`), also written to <model_dir>/results.json."""
  done = classification.start(config)
  if done:
    return done
  strategy = strategy_lib.make_strategy(config.strategy, config.tpu)
  return _run(config, strategy, classification.load_data(config))
