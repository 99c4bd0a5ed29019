"""Top-1, Top-5 and per-class accuracy of a classifier over a dataset."""

import numpy as np
import tensorflow as tf


def top_k_hits(logits, labels, k):
  """Whether each label is among the k largest logits (k capped at the
  number of classes)."""
  k = min(k, logits.shape[-1])
  return tf.math.in_top_k(tf.cast(labels, tf.int32), logits, k)


def inference(model):
  """`model(x, training=False)` as one tf.function for any batch size."""
  return tf.function(lambda x: model(x, training=False),
                     reduce_retracing=True)


def evaluate(logits_fn, batches, num_classes):
  """Runs `logits_fn` (e.g. `inference(model)`) over (x, labels) `batches`
  once.

  Returns:
    {"top1", "top5": accuracy over all examples, "per_class": top-1
    accuracy of each class (None for a class with no example),
    "examples": number of examples}.
  """
  correct = np.zeros([num_classes])
  total = np.zeros([num_classes])
  top5 = 0
  for x, labels in batches:
    logits = logits_fn(x)
    hit1 = top_k_hits(logits, labels, 1).numpy()
    labels = labels.numpy()
    np.add.at(total, labels, 1)
    np.add.at(correct, labels, hit1)
    top5 += int(top_k_hits(logits, labels, 5).numpy().sum())
  examples = int(total.sum())
  if examples == 0:
    raise ValueError("no example to evaluate")
  per_class = [float(c / t) if t else None for c, t in zip(correct, total)]
  return {"top1": float(correct.sum() / examples),
          "top5": float(top5 / examples), "per_class": per_class,
          "examples": examples}
