"""Model selection and early stopping on held-out validation data (§2.2).

`BestWeights` validates the model at every checkpoint step, keeps the
weights with the best validation accuracy in `<model_dir>/best` (their
accuracy saved beside them) and says when `patience` validations in a row
brought no improvement. Its state is that checkpoint alone, so it resumes
with the run.
"""

from absl import logging
import tensorflow as tf

from cpc_tf import checkpoints

_VALUE_KEY = "value/.ATTRIBUTES/VARIABLE_VALUE"


class BestWeights:
  """Tracks the best validation score; restores its weights at the end.

  Args:
    model: the Keras model whose weights are kept.
    directory: where the best checkpoint goes.
    validate: () -> dict of metrics; `metric` of it is maximised.
    metric: key of the score to maximise.
    patience: validations without improvement before stopping; 0 never.
    every: steps between validations.
    writer: tf.summary writer for `validation/<metric>` scalars.
  """

  def __init__(self, model, directory, validate, *, metric="top1",
               patience=0, every=1, writer=None):
    self.validate = validate
    self.metric = metric
    self.patience = patience
    self.every = every
    self.writer = writer or tf.summary.create_noop_writer()
    self.value = tf.Variable(-1.0, dtype=tf.float64, trainable=False)
    self.checkpoint = checkpoints.weights_checkpoint(model, value=self.value)
    self.manager = tf.train.CheckpointManager(self.checkpoint, directory,
                                              max_to_keep=1)
    if self.manager.latest_checkpoint:
      reader = tf.train.load_checkpoint(self.manager.latest_checkpoint)
      self.value.assign(reader.get_tensor(_VALUE_KEY))

  @property
  def best_step(self):
    """Step of the best weights, or None before the first validation."""
    path = self.manager.latest_checkpoint
    return int(path.rsplit("-", 1)[1]) if path else None

  @property
  def best_value(self):
    return float(self.value.numpy())

  def should_stop(self, step):
    best = self.best_step
    return bool(self.patience and best is not None and
                step - best >= self.patience * self.every)

  def __call__(self, step):
    """Validates at `step`; returns True when training should stop."""
    metrics = self.validate()
    with self.writer.as_default(step=step):
      for name, value in metrics.items():
        tf.summary.scalar(f"validation/{name}", value)
    score = metrics[self.metric]
    if score > self.best_value:
      self.value.assign(score)
      self.manager.save(checkpoint_number=step)
    logging.info("step %d: validation %s %.4f (best %.4f at step %d)", step,
                 self.metric, score, self.best_value, self.best_step)
    return self.should_stop(step)

  def restore(self):
    """Loads the best weights into the model; returns their step."""
    if self.manager.latest_checkpoint is None:
      raise ValueError("no validated weights to restore")
    self.checkpoint.restore(self.manager.latest_checkpoint).assert_consumed()
    return self.best_step
