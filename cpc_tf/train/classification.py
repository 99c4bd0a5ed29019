"""Train a classifier on a labelled subset, select it on validation, test it
once (§2.2, A.3-A.4).

`fit` trains in `loop.Trainer` (distributed steps, checkpoints, resume,
summaries); at every checkpoint step the model is validated on the
held-out part of the training split and the best weights are kept
(`early_stopping.BestWeights`) and restored at the end. `test` then
evaluates the selected model on the test split, the only time it is read.
"""

import dataclasses
import os

from absl import logging
import tensorflow as tf

from cpc_tf import errors
from cpc_tf import results
from cpc_tf.data import labeled
from cpc_tf.data import pipeline
from cpc_tf.train import accuracy
from cpc_tf.train import early_stopping
from cpc_tf.train import loop
from cpc_tf.train import strategy as strategy_lib


@dataclasses.dataclass(frozen=True)
class Geometry:
  """Crop and patch grid of the inputs; a whole image is one patch."""
  image_size: int
  patch_size: int
  patch_stride: int


def prepare_model_dir(config):
  """Creates model_dir and saves the config there, or checks that the run
  there used the same flags (if it wrote anything besides its config);
  returns its finished results, if any."""
  tf.io.gfile.makedirs(config.model_dir)
  path = os.path.join(config.model_dir, "config.json")
  names = set(tf.io.gfile.listdir(config.model_dir))
  if "config.json" in names and names - {"config.json"}:
    changed = config.differences(path)
    if changed:
      raise ValueError(f"--model_dir={config.model_dir} holds a run with "
                       f"other values of --{', --'.join(changed)}; use a "
                       "new --model_dir")
  else:
    config.save(path)
  return results.read(config.model_dir)


def start(config):
  """Validates `config` and prepares its model_dir; returns the run's
  finished results if it has them, else sets the precision policy and
  returns None."""
  config.validate()
  done = prepare_model_dir(config)
  if not done:
    strategy_lib.set_precision(config.mixed_precision)
  return done


def load_data(config):
  """The labelled subset, validation part and test split of `config`."""
  return labeled.load(
      config.dataset, train_split=config.train_split,
      test_split=config.test_split, data_dir=config.data_dir or None,
      label_fraction=None if config.images_per_class else
      config.label_fraction,
      images_per_class=config.images_per_class or None,
      validation_per_class=config.validation_per_class,
      seed=config.subset_seed)


def cross_entropy(model, batch):
  """Per-replica mean cross-entropy and training accuracy of a batch."""
  x, labels = batch
  logits = model(x, training=True)
  loss = tf.keras.losses.sparse_categorical_crossentropy(labels, logits,
                                                         from_logits=True)
  hits = accuracy.top_k_hits(logits, labels, 1)
  return {"loss": tf.reduce_mean(loss),
          "accuracy/train": tf.reduce_mean(tf.cast(hits, tf.float32))}


def _eval_batches(config, dataset, geometry):
  return labeled.eval_batches(dataset, batch_size=config.eval_batch_size,
                              **dataclasses.asdict(geometry))


def fit(config, *, strategy, model_dir, model, logits_fn, optimizer, data,
        geometry, augment, batch_size, start_is_candidate=False):
  """Trains `model` on `data.train`, validating at every checkpoint step,
  and leaves the best validated weights in it.

  Args:
    config: an `eval_config.ClassificationConfig` (loop, validation, data
      options).
    strategy: the tf.distribute strategy `model` and `optimizer` live in.
    model_dir: checkpoints (`best/` holds the selected weights), events.
    model: a Keras model on patch grids, returning logits.
    logits_fn: its inference function, `accuracy.inference(model)`.
    optimizer: a built Keras optimizer.
    data: `labeled.LabeledData`.
    geometry: the `Geometry` of the model's inputs.
    augment: `augment.AugmentConfig` of the training inputs.
    batch_size: global training batch size.
    start_is_candidate: also validate the starting weights (step 0), so
      that training which never beats them selects them (fine-tuning: the
      fixed solution it starts from).

  Returns:
    {"validation": {"top1"} of the selected weights, "best_step",
    "steps_trained", "stopped_early"}.
  """
  def dataset_fn(input_context, skip_batches):
    return pipeline.patch_dataset(
        data.train_source,
        batch_size=input_context.get_per_replica_batch_size(batch_size),
        augment=augment, training=True, seed=config.seed,
        skip_batches=skip_batches, with_labels=True,
        input_context=input_context, cache=pipeline.use_cache(
            data.train_source, config.cache_images,
            input_context.num_input_pipelines),
        **dataclasses.asdict(geometry))

  validation = data.validation.cache() if pipeline.use_cache(
      data.validation_source, config.cache_images) else data.validation

  def validate():
    metrics = accuracy.evaluate(
        logits_fn, _eval_batches(config, validation, geometry),
        data.num_classes)
    return {"top1": metrics["top1"], "top5": metrics["top5"]}

  best = None
  trainer = loop.Trainer(
      strategy=strategy, model_dir=model_dir, model=model,
      optimizer=optimizer, compute_loss=cross_entropy, dataset_fn=dataset_fn,
      global_batch_size=batch_size, train_steps=config.train_steps,
      steps_per_loop=config.steps_per_loop,
      checkpoint_every=config.eval_every, summary_every=config.summary_every,
      keep_checkpoints=config.keep_checkpoints,
      on_checkpoint=lambda step: best(step))
  best = early_stopping.BestWeights(
      model, os.path.join(trainer.manager.directory, "best"), validate,
      patience=config.patience, every=config.eval_every,
      writer=strategy_lib.summary_writer(
          strategy, os.path.join(model_dir, "validation")))
  step = trainer.restore()
  if start_is_candidate and step == 0 and best.best_step is None:
    best(0)
  if step < config.train_steps and not best.should_stop(step):
    trainer.train()
    if trainer.preempted_at is not None:
      raise errors.Preempted(
          f"preempted at step {trainer.preempted_at}; checkpoint saved in "
          f"{model_dir}, rerun the same command to resume")
  steps_trained = int(trainer.step.numpy())
  best_step = best.restore()
  logging.info("Selected the weights of step %d (validation top-1 %.4f)",
               best_step, best.best_value)
  return {"validation": {"top1": best.best_value}, "best_step": best_step,
          "steps_trained": steps_trained,
          "stopped_early": steps_trained < config.train_steps}


def test(config, *, logits_fn, data, geometry, writer, step):
  """Evaluates a model (its `accuracy.inference` function) on the test split
  (once, at the end): Top-1, Top-5 and per-class accuracy keyed by class
  name, also written to `writer`."""
  metrics = accuracy.evaluate(logits_fn,
                              _eval_batches(config, data.test, geometry),
                              data.num_classes)
  with writer.as_default(step=step):
    for key in ("top1", "top5"):
      tf.summary.scalar(f"test/{key}", metrics[key])
    for name, value in zip(data.class_names, metrics["per_class"]):
      if value is not None:
        tf.summary.scalar(f"test_per_class/{name}", value)
  writer.flush()
  metrics["per_class"] = dict(zip(data.class_names, metrics["per_class"]))
  logging.info("Test top-1 %.4f, top-5 %.4f", metrics["top1"],
               metrics["top5"])
  return metrics
