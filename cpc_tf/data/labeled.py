"""Labelled data for evaluation: subset, held-out validation, test (§2.2).

The labelled training split is cut by `subsets.split_indices` into a
class-balanced training subset (a label fraction, or images per class) and
a held-out validation part, used for model selection and early stopping;
the test split is only read once, at the end. TFDS `imagenet2012_subset/
1pct` and `/10pct` are labelled sets of their own: give them as --dataset
with label fraction 1. Subsets are chosen from the labels alone: only
their images are ever decoded.
"""

import dataclasses

import tensorflow as tf

from cpc_tf.data import patches as patches_lib
from cpc_tf.data import pipeline
from cpc_tf.data import sources
from cpc_tf.data import subsets


@dataclasses.dataclass
class LabeledData:
  """The three labelled parts of an evaluation.

  Attributes:
    train_source, validation_source: the labelled subset and the held-out
      validation part, `sources.Source`s not yet decoded.
    test: tf.data.Dataset of (image uint8, label).
    num_train, num_validation, num_test: their sizes.
    num_classes: number of classes.
    class_names: names of the classes, or "0".."C-1".
  """
  train_source: sources.Source
  validation_source: sources.Source
  test: tf.data.Dataset
  num_train: int
  num_validation: int
  num_test: int
  num_classes: int
  class_names: list

  @property
  def train(self):
    """The labelled subset: tf.data.Dataset of (image uint8, label)."""
    return self.train_source.dataset

  @property
  def validation(self):
    """The validation part: tf.data.Dataset of (image uint8, label)."""
    return self.validation_source.dataset


def load(dataset, *, train_split="train", test_split="test", data_dir=None,
         label_fraction=None, images_per_class=None, validation_per_class=0,
         seed=0):
  """Loads the labelled subset, its validation part and the test split.

  Raises:
    ValueError: unlabeled splits, or subset arguments `split_indices`
      rejects.
  """
  train_source = sources.load(dataset, train_split, data_dir)
  test_source = sources.load(dataset, test_split, data_dir)
  labels = train_source.labels()
  if labels.size == 0 or labels.min() < 0:
    raise ValueError(f"{train_source.name} has no labels; evaluation needs "
                     "a labelled split (--train_split)")
  train_idx, val_idx = subsets.split_indices(
      labels, fraction=label_fraction, per_class=images_per_class,
      validation_per_class=validation_per_class, seed=seed)
  num_classes = train_source.num_classes or int(labels.max()) + 1
  names = train_source.class_names or [str(c) for c in range(num_classes)]
  return LabeledData(
      train_source=train_source.subset(train_idx, "subset"),
      validation_source=train_source.subset(val_idx, "validation"),
      test=test_source.dataset, num_train=len(train_idx),
      num_validation=len(val_idx), num_test=test_source.num_examples,
      num_classes=num_classes, class_names=list(names))


def eval_batches(dataset, *, batch_size, image_size, patch_size,
                 patch_stride):
  """Test-time path (§2.2: no augmentation, a single central crop): one
  pass of (patch grids [B, rows, cols, p, p, 3], labels), last batch kept."""
  patches_lib.grid_size(image_size, patch_size, patch_stride)

  def crop(image, label):
    return pipeline.preprocess(image, image_size, training=False), label

  def cut(images, labels):
    return patches_lib.extract_patches(images, patch_size,
                                       patch_stride), labels

  return (dataset.map(crop, num_parallel_calls=tf.data.AUTOTUNE)
          .batch(batch_size).map(cut).prefetch(tf.data.AUTOTUNE))
