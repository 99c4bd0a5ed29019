"""A distributed custom training loop with checkpoints, summaries, progress.

Several optimizer steps run inside one `tf.function` call; the loop resumes
from the newest checkpoint in `model_dir` (step counter, weights, optimizer
state; the data position is the step counter, which the caller's
`dataset_fn` skips to). Only the chief writes checkpoints and summaries.
"""

import time

from absl import logging
import tensorflow as tf

from cpc_tf.train import strategy as strategy_lib


def _format_seconds(seconds):
  seconds = int(seconds)
  return f"{seconds // 3600:d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


class Trainer:
  """Trains `model` with `compute_loss(model, batch) -> {"loss": ..., ...}`.

  `compute_loss` runs per replica and returns per-replica means; the loss is
  scaled by 1/replicas because the optimizer sums gradients over replicas.
  `dataset_fn(input_context, skip_batches)` builds one worker's dataset of
  per-replica batches, starting `skip_batches` batches in.
  """

  def __init__(self, *, strategy, model_dir, model, optimizer, compute_loss,
               dataset_fn, global_batch_size, train_steps, steps_per_loop,
               checkpoint_every, summary_every, keep_checkpoints=3,
               profile_steps=None):
    self.strategy = strategy
    self.model_dir = model_dir
    self.model = model
    self.optimizer = optimizer
    self.compute_loss = compute_loss
    self.dataset_fn = dataset_fn
    self.global_batch_size = global_batch_size
    self.train_steps = train_steps
    self.steps_per_loop = steps_per_loop
    self.checkpoint_every = checkpoint_every
    self.summary_every = summary_every
    self.profile_steps = profile_steps
    self.is_chief = strategy_lib.is_chief(strategy)
    with strategy.scope():
      self.step = tf.Variable(0, dtype=tf.int64, trainable=False,
                              name="global_step")
    self.checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer,
                                          step=self.step)
    # Non-chief workers write to a scratch directory that is never read.
    directory = (model_dir if self.is_chief
                 else tf.io.gfile.join(model_dir, "_worker_scratch"))
    self.manager = tf.train.CheckpointManager(
        self.checkpoint, directory, max_to_keep=keep_checkpoints)
    self.writer = (tf.summary.create_file_writer(model_dir) if self.is_chief
                   else tf.summary.create_noop_writer())
    self._train_fn = None

  def restore(self):
    """Restores the newest checkpoint, if any; returns the step reached."""
    path = self.manager.restore_or_initialize()
    if path:
      logging.info("Resumed from %s at step %d", path, int(self.step))
    return int(self.step)

  def _replica_step(self, batch):
    with tf.GradientTape() as tape:
      outputs = self.compute_loss(self.model, batch)
      loss = tf.cast(outputs["loss"], tf.float32)
      scaled = loss / self.strategy.num_replicas_in_sync
    variables = self.model.trainable_variables
    grads = tape.gradient(scaled, variables)
    self.optimizer.apply_gradients(zip(grads, variables))
    return {k: tf.cast(v, tf.float32) for k, v in outputs.items()}

  def _make_train_fn(self):
    def train_steps(iterator, num_steps):
      totals = None
      for _ in tf.range(num_steps):
        outputs = self.strategy.run(self._replica_step,
                                    args=(next(iterator),))
        means = {k: self.strategy.reduce("MEAN", v, axis=None)
                 for k, v in outputs.items()}
        totals = (means if totals is None else
                  {k: totals[k] + means[k] for k in totals})
        self.step.assign_add(1)
      return {k: v / tf.cast(num_steps, tf.float32)
              for k, v in totals.items()}
    return tf.function(train_steps)

  def _next_stop(self, step):
    """The next step at which the loop must return to Python."""
    stops = [self.train_steps, step + self.steps_per_loop,
             (step // self.checkpoint_every + 1) * self.checkpoint_every,
             (step // self.summary_every + 1) * self.summary_every]
    if self.profile_steps:
      stops += [s for s in self.profile_steps if s > step]
    return min(stops)

  def _write_scalars(self, step, metrics, images_per_sec):
    with self.writer.as_default(step=step):
      for name, value in metrics.items():
        tf.summary.scalar(name, value)
      tf.summary.scalar("learning_rate", self.optimizer.learning_rate)
      tf.summary.scalar("images_per_sec", images_per_sec)

  def train(self):
    """Runs until `train_steps`; returns the last averaged metrics."""
    step = self.restore()
    if step >= self.train_steps:
      logging.info("Already trained %d of %d steps", step, self.train_steps)
      return {}
    dataset = self.strategy.distribute_datasets_from_function(
        lambda ctx: self.dataset_fn(ctx, step))
    iterator = iter(dataset)
    if self._train_fn is None:
      self._train_fn = self._make_train_fn()
    start_step, start_time = step, time.time()
    metrics = {}
    profiling = False
    while step < self.train_steps:
      if self.profile_steps and step == self.profile_steps[0]:
        tf.profiler.experimental.start(self.model_dir)
        profiling = True
      stop = self._next_stop(step)
      tick = time.time()
      metrics = self._train_fn(iterator, tf.constant(stop - step))
      metrics = {k: float(v) for k, v in metrics.items()}
      elapsed = time.time() - tick
      images_per_sec = (stop - step) * self.global_batch_size / elapsed
      step = stop
      if profiling and step >= self.profile_steps[1]:
        tf.profiler.experimental.stop()
        profiling = False
      if step % self.summary_every == 0 or step == self.train_steps:
        self._write_scalars(step, metrics, images_per_sec)
      if step % self.checkpoint_every == 0 or step == self.train_steps:
        self.manager.save(checkpoint_number=step)
      rate = (step - start_step) / max(time.time() - start_time, 1e-9)
      eta = (self.train_steps - step) / max(rate, 1e-9)
      logging.info(
          "step %d/%d  loss %.4f  %s  %.1f img/s  ETA %s", step,
          self.train_steps, metrics["loss"],
          "  ".join(f"{k} {v:.3f}" for k, v in sorted(metrics.items())
                    if k.startswith("accuracy")),
          images_per_sec, _format_seconds(eta))
    if profiling:
      tf.profiler.experimental.stop()
    self.writer.flush()
    return metrics
