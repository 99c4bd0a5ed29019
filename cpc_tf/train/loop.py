"""A distributed custom training loop with checkpoints, summaries, progress.

Several optimizer steps run inside one `tf.function` call; the loop resumes
from the newest checkpoint in `model_dir` (step counter, weights, optimizer
state; the data position is the step counter, which the caller's
`dataset_fn` skips to). Only the chief writes checkpoints and summaries.
A step whose loss or gradients are not finite is not applied; after
`max_bad_steps` such steps in a row the run stops. SIGTERM (preemption)
saves a checkpoint and stops cleanly; with several workers, a SIGTERM to any
one of them stops all of them at the same step.
"""

import signal
import tempfile
import time

from absl import logging
import tensorflow as tf

from cpc_tf import checkpoints
from cpc_tf import errors
from cpc_tf.train import strategy as strategy_lib


def _num_workers(strategy):
  """Worker processes of a MultiWorkerMirroredStrategy cluster, else 1 (a
  TPU pod's hosts are driven by one client process)."""
  resolver = getattr(strategy, "cluster_resolver", None)
  if (not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
      or resolver is None):
    return 1
  spec = resolver.cluster_spec()
  return sum(spec.num_tasks(job) for job in ("chief", "worker")
             if job in spec.jobs)


def _compiled_per_variable(update_step):
  """An optimizer's `update_step(gradient, variable, learning_rate)` compiled
  by XLA, one function per variable and device: a traced update looks the
  variable's slots up at trace time, so variables must not share a trace."""
  compiled = {}

  def step(gradient, variable, learning_rate):
    key = variable.ref()
    if key not in compiled:
      compiled[key] = tf.function(
          lambda g, lr: update_step(g, variable, lr), jit_compile=True)
    with tf.device(variable.device):
      return compiled[key](gradient, learning_rate)
  return step


def _format_seconds(seconds):
  seconds = int(seconds)
  return f"{seconds // 3600:d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


class Trainer:
  """Trains `model` with `compute_loss(model, batch) -> {"loss": ..., ...}`.

  `compute_loss` runs per replica and returns per-replica means; the loss is
  scaled by 1/replicas because the optimizer sums gradients over replicas.
  `dataset_fn(input_context, skip_batches)` builds one worker's dataset of
  per-replica batches, starting `skip_batches` batches in.
  `on_checkpoint(step) -> bool`, if given, runs at every checkpoint step
  (not on preemption) before the checkpoint is written, e.g. to validate;
  True ends training there (early stopping).
  """

  def __init__(self, *, strategy, model_dir, model, optimizer, compute_loss,
               dataset_fn, global_batch_size, train_steps, steps_per_loop,
               checkpoint_every, summary_every, keep_checkpoints=3,
               profile_steps=None, max_bad_steps=10, on_checkpoint=None):
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
    self.max_bad_steps = max_bad_steps
    self.on_checkpoint = on_checkpoint
    self.is_chief = strategy_lib.is_chief(strategy)
    with strategy.scope():
      self.step = tf.Variable(0, dtype=tf.int64, trainable=False,
                              name="global_step")
      self.bad_steps = tf.Variable(0, dtype=tf.int64, trainable=False,
                                   name="consecutive_bad_steps")
    self.checkpoint = checkpoints.weights_checkpoint(
        model, optimizer=optimizer, step=self.step)
    # Every worker saves (saving may synchronise), but only the chief into
    # model_dir; the others into a scratch directory that is never read.
    directory = model_dir if self.is_chief else tempfile.mkdtemp()
    self.manager = tf.train.CheckpointManager(
        self.checkpoint, directory, max_to_keep=keep_checkpoints)
    self.writer = strategy_lib.summary_writer(strategy, model_dir)
    self._train_fn = None
    self._agree_fn = None
    self.multi_worker = _num_workers(strategy) > 1
    self.preempted_at = None  # The step saved on SIGTERM, if any.

  def restore(self):
    """Restores the newest checkpoint in `model_dir`, if any (on every
    worker: all must start from the chief's state); returns the step."""
    path = tf.train.latest_checkpoint(self.model_dir)
    if path:
      self.checkpoint.restore(path)
      logging.info("Resumed from %s at step %d", path, int(self.step.numpy()))
    return int(self.step.numpy())

  def _replica_gradients(self, batch):
    with tf.GradientTape() as tape:
      outputs = self.compute_loss(self.model, batch)
      loss = tf.cast(outputs["loss"], tf.float32)
      scaled = loss / self.strategy.num_replicas_in_sync
    grads = tape.gradient(scaled, self.model.trainable_variables)
    # One sum per gradient (cheaper than is_finite + reduce_all): a sum is
    # non-finite iff an element is, or the gradient is beyond 1e38 anyway.
    total = tf.add_n([loss] + [tf.reduce_sum(tf.cast(g, tf.float32))
                               for g in grads if g is not None])
    bad = 1.0 - tf.cast(tf.math.is_finite(total), tf.float32)
    return grads, bad, {k: tf.cast(v, tf.float32) for k, v in outputs.items()}

  def _replica_apply(self, grads):
    self.optimizer.apply_gradients(
        zip(grads, self.model.trainable_variables))

  def _on_replica_device(self, compiled):
    """`compiled` called on the device of the calling replica's variables
    (an XLA cluster runs on one device; a MirroredStrategy replica thread
    does not place a function call by itself)."""
    def call(*args):
      with tf.device(self.model.trainable_variables[0].value.device):
        return compiled(*args)
    return call

  def _train_step(self, batch, replica_gradients):
    """One step; the update is skipped (on every replica) if any replica
    saw a non-finite loss or gradient. The condition is taken outside the
    replica function: synchronising inside a replica's cond is not
    supported by tf.distribute."""
    grads, bad, outputs = self.strategy.run(replica_gradients,
                                            args=(batch,))
    applied = self.strategy.reduce("SUM", bad, axis=None) == 0

    def apply():
      self.strategy.run(self._replica_apply, args=(grads,))
      self.bad_steps.assign(0)
      return tf.constant(0.0)

    def skip():
      self.bad_steps.assign_add(1)
      return tf.constant(1.0)

    skipped = tf.cond(applied, apply, skip)
    means = {k: self.strategy.reduce("MEAN", v, axis=None)
             for k, v in outputs.items()}
    return means, skipped

  def make_train_function(self, jit_compile=False):
    """`train_steps(iterator, num_steps) -> averaged metrics` as a
    `tf.function` running up to `num_steps` steps.

    With `jit_compile`, each replica's part of a step is compiled by XLA,
    as TPUStrategy compiles it: forward, loss, backward and the non-finite
    check in one function, then the optimizer's update of each variable
    (this optimizer's `update_step` stays compiled). The loop, the input and
    tf.distribute's gradient all-reduce stay in the graph: XLA has no
    iterator ops, and holds no collective on CPU or GPU.
    """
    replica_gradients = self._replica_gradients
    # TPUStrategy compiles each replica's step itself.
    if jit_compile and not isinstance(self.strategy,
                                      tf.distribute.TPUStrategy):
      replica_gradients = self._on_replica_device(
          tf.function(replica_gradients, jit_compile=True))
      self.optimizer.update_step = _compiled_per_variable(
          self.optimizer.update_step)

    def train_steps(iterator, num_steps):
      totals = None
      skipped = 0.0
      for _ in tf.range(num_steps):
        means, skip = self._train_step(next(iterator), replica_gradients)
        # Averages over applied steps only (a skipped step's loss is NaN).
        means = {k: tf.where(skip > 0, 0.0, v) for k, v in means.items()}
        totals = (means if totals is None else
                  {k: totals[k] + means[k] for k in totals})
        skipped += skip
        self.step.assign_add(1)
        if self.bad_steps >= self.max_bad_steps:
          break
      applied = tf.maximum(tf.cast(num_steps, tf.float32) - skipped, 1.0)
      metrics = {k: v / applied for k, v in totals.items()}
      metrics["skipped_steps"] = skipped
      return metrics
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

  def _save(self, step):
    """Saves a checkpoint; the state file naming the newest checkpoint is
    written last, so a failed write leaves the previous one in force."""
    try:
      self.manager.save(checkpoint_number=step)
    except (OSError, tf.errors.OpError) as e:
      reason = e.message if isinstance(e, tf.errors.OpError) else str(e)
      raise errors.CheckpointWriteError(
          f"writing the step-{step} checkpoint to {self.model_dir} failed "
          f"({reason.splitlines()[0]}); the previous checkpoint "
          f"{self.manager.latest_checkpoint} is intact and a rerun resumes "
          "from it") from e

  def _on_sigterm(self, signum, frame):
    del signum, frame
    logging.warning("SIGTERM: saving a checkpoint after the current steps")
    self._preempted = True

  def _any_worker_preempted(self):
    """Whether any worker got SIGTERM. One all-reduce of the flags, made
    at the same step by every worker, so all of them save that step (the
    PreemptionCheckpointHandler does this too, but switches itself off on
    GCE CPU VMs and probes the GCE metadata server at start)."""
    if self._agree_fn is None:
      def any_flag(flag):
        return self.strategy.reduce(
            "SUM", self.strategy.run(lambda: tf.identity(flag)), axis=None)
      self._agree_fn = tf.function(any_flag)
    return float(self._agree_fn(tf.constant(float(self._preempted)))) > 0

  def train(self):
    """Runs until `train_steps`; returns the last averaged metrics."""
    self._preempted = False
    self.preempted_at = None
    previous_handler = signal.signal(signal.SIGTERM, self._on_sigterm)
    try:
      step = self.restore()
      if step >= self.train_steps:
        logging.info("Already trained %d of %d steps", step,
                     self.train_steps)
        return {}
      dataset = self.strategy.distribute_datasets_from_function(
          lambda ctx: self.dataset_fn(ctx, step))
      iterator = iter(dataset)
      if self._train_fn is None:
        self._train_fn = self.make_train_function()
      return self._run(iterator, step)
    finally:
      signal.signal(signal.SIGTERM, previous_handler)
      self.writer.flush()

  def _run(self, iterator, step):
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
      done, step = int(self.step.numpy()) - step, int(self.step.numpy())
      if int(self.bad_steps.numpy()) >= self.max_bad_steps:
        raise errors.DivergenceError(
            f"{int(self.bad_steps.numpy())} consecutive steps with a non-finite loss "
            f"or gradient (up to step {step}); stopped without saving. The "
            f"last good checkpoint in {self.model_dir} is intact: lower "
            "--learning_rate or check the data, then rerun to resume.")
      images_per_sec = done * self.global_batch_size / elapsed
      if profiling and step >= self.profile_steps[1]:
        tf.profiler.experimental.stop()
        profiling = False
      # One read of the SIGTERM flag per iteration: a signal arriving later
      # is handled after the next steps, never reported without a save.
      preempted = (self._any_worker_preempted() if self.multi_worker
                   else self._preempted)
      at_checkpoint = (step % self.checkpoint_every == 0
                       or step == self.train_steps)
      # Checkpoint steps get their callback (e.g. validation) even when
      # preempted, so a resumed run sees the same history.
      stop_early = bool(at_checkpoint and self.on_checkpoint
                        and self.on_checkpoint(step))
      if step % self.summary_every == 0 or step == self.train_steps:
        self._write_scalars(step, metrics, images_per_sec)
      if at_checkpoint or preempted:
        self._save(step)
      rate = (step - start_step) / max(time.time() - start_time, 1e-9)
      eta = (self.train_steps - step) / max(rate, 1e-9)
      logging.info(
          "step %d/%d  loss %.4f  %s  %.1f img/s  ETA %s%s", step,
          self.train_steps, metrics["loss"],
          "  ".join(f"{k} {v:.3f}" for k, v in sorted(metrics.items())
                    if k.startswith("accuracy")),
          images_per_sec, _format_seconds(eta),
          f"  ({metrics['skipped_steps']:.0f} non-finite steps skipped)"
          if metrics["skipped_steps"] else "")
      if preempted:
        self.preempted_at = step
        logging.warning("Preempted at step %d; checkpoint saved, rerun the "
                        "same command to resume", step)
        break
      if stop_early:
        logging.info("Stopped early at step %d", step)
        break
    if profiling:
      tf.profiler.experimental.stop()
    return metrics
