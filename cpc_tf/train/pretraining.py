"""CPC v2 pretraining from a `PretrainConfig` (§2.1, §4.1)."""

import os

from absl import logging
import keras
import tensorflow as tf

from cpc_tf import config as config_lib
from cpc_tf import cpc
from cpc_tf import export_lib
from cpc_tf import files
from cpc_tf.data import augment as augment_lib
from cpc_tf.data import pipeline
from cpc_tf.data import sources
from cpc_tf.train import loop
from cpc_tf.train import optimizers
from cpc_tf.train import strategy as strategy_lib


def make_optimizer(config):
  """Adam with linear warm-up to the peak rate, then cosine decay to 0."""
  return optimizers.FusedAdam(learning_rate=optimizers.learning_rate_schedule(
      config.learning_rate, config.train_steps, config.warmup_steps))


def make_dataset_fn(config, source):
  """(input_context, skip_batches) -> this worker's per-replica batches,
  from the step `skip_batches` on."""
  def dataset_fn(input_context, skip_batches):
    return pipeline.patch_dataset(
        source,
        batch_size=input_context.get_per_replica_batch_size(
            config.batch_size),
        image_size=config.image_size, patch_size=config.patch_size,
        patch_stride=config.patch_stride,
        augment=augment_lib.AugmentConfig.from_config(config),
        training=True, seed=config.seed, skip_batches=skip_batches,
        input_context=input_context, cache=pipeline.use_cache(
            source, config.cache_images, input_context.num_input_pipelines))
  return dataset_fn


def _patch_mosaic(patches, gap=1):
  """[rows, cols, p, p, 3] -> one image with the patches laid out on a grid
  separated by `gap` white pixels, to look at them in TensorBoard."""
  padded = tf.pad(patches, [[0, 0], [0, 0], [0, gap], [0, gap], [0, 0]],
                  constant_values=1.0)
  rows, cols, h, w, c = padded.shape
  mosaic = tf.reshape(tf.transpose(padded, [0, 2, 1, 3, 4]),
                      [rows * h, cols * w, c])
  return mosaic[None]


def _log_first_batch(writer, dataset_fn):
  batch = next(iter(dataset_fn(tf.distribute.InputContext(), 0)))
  with writer.as_default(step=0):
    tf.summary.image("patches", tf.concat(
        [_patch_mosaic(p) for p in tf.unstack(batch[:3])], 0),
                     max_outputs=3)


def report_skipped(skipped, model_dir):
  """Logs the files a folder source rejected and lists them all in
  <model_dir>/skipped_files.txt."""
  if not skipped:
    return
  path = files.write_atomic(
      os.path.join(model_dir, "skipped_files.txt"),
      "".join(f"{name}\t{reason}\n" for name, reason in skipped))
  shown = "; ".join(f"{name} ({reason})" for name, reason in skipped[:5])
  logging.warning("Skipped %d unusable image files, all listed in %s: %s%s",
                  len(skipped), path, shown,
                  " ..." if len(skipped) > 5 else "")


def pretrain(config):
  """Pretrains, checkpoints, resumes, exports; returns the final metrics."""
  config.validate()
  keras.utils.set_random_seed(config.seed)
  if config.deterministic:
    tf.config.experimental.enable_op_determinism()
  strategy_lib.set_precision(config.mixed_precision)
  strategy = strategy_lib.make_strategy(config.strategy, config.tpu)
  tf.io.gfile.makedirs(config.model_dir)
  source = sources.load(config.dataset, config.split,
                        data_dir=config.data_dir or None,
                        min_size=config.patch_size)
  if strategy_lib.is_chief(strategy):
    config.save(os.path.join(config.model_dir, "config.json"))
    report_skipped(source.skipped, config.model_dir)
  logging.info("Pretraining on %s (%s examples), %d replica(s), grid %dx%d",
               source.name, source.num_examples,
               strategy.num_replicas_in_sync, config.grid_size,
               config.grid_size)
  with strategy.scope():
    model = cpc.build_model(config)
    optimizer = make_optimizer(config)
    optimizer.build(model.trainable_variables)
  logging.info("Encoder %s: %d parameters; CPC model: %d parameters",
               config.architecture, model.encoder.count_params(),
               model.count_params())
  dataset_fn = make_dataset_fn(config, source)
  profile = (config_lib.parse_profile_steps(config.profile_steps)
             if config.profile_steps else None)
  trainer = loop.Trainer(
      strategy=strategy, model_dir=config.model_dir, model=model,
      optimizer=optimizer,
      compute_loss=lambda m, batch: m(batch, training=True),
      dataset_fn=dataset_fn, global_batch_size=config.batch_size,
      train_steps=config.train_steps, steps_per_loop=config.steps_per_loop,
      checkpoint_every=config.checkpoint_every,
      summary_every=config.summary_every,
      keep_checkpoints=config.keep_checkpoints, profile_steps=profile)
  if trainer.is_chief and trainer.manager.latest_checkpoint is None:
    _log_first_batch(trainer.writer, dataset_fn)
  metrics = trainer.train()
  if (config.export and trainer.is_chief
      and int(trainer.step.numpy()) >= config.train_steps):
    export_lib.export_encoder(model.encoder, config,
                              os.path.join(config.model_dir, "export"),
                              int(trainer.step.numpy()))
  if trainer.is_chief:
    report_skipped(source.skipped, config.model_dir)
  return dict(metrics, step=int(trainer.step.numpy()))

