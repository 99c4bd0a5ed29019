"""Label subsets (cpc_tf/data/subsets.py) and labelled splits (labeled.py)."""

import numpy as np
import pytest
import tensorflow as tf

from cpc_tf.data import labeled
from cpc_tf.data import subsets

# 10 classes of unequal size (120..210 images), shuffled.
LABELS = np.random.default_rng(3).permutation(
    np.repeat(np.arange(10), np.arange(120, 220, 10)))


def counts(indices, labels=LABELS):
  return np.bincount(labels[indices], minlength=10)


def test_fraction_subsets_are_class_balanced():
  train, validation = subsets.split_indices(LABELS, fraction=0.1,
                                            validation_per_class=20)
  assert (counts(validation) == 20).all()
  pools = np.bincount(LABELS) - 20
  np.testing.assert_array_equal(counts(train), np.round(0.1 * pools))
  # Every class keeps at least one image, even at tiny fractions.
  train, _ = subsets.split_indices(LABELS, fraction=0.001)
  assert (counts(train) == 1).all()


def test_images_per_class():
  train, _ = subsets.split_indices(LABELS, per_class=7,
                                   validation_per_class=5)
  assert (counts(train) == 7).all()


def test_deterministic_per_seed():
  first = subsets.split_indices(LABELS, fraction=0.05, seed=1,
                                validation_per_class=3)
  again = subsets.split_indices(LABELS, fraction=0.05, seed=1,
                                validation_per_class=3)
  other = subsets.split_indices(LABELS, fraction=0.05, seed=2,
                                validation_per_class=3)
  for a, b in zip(first, again):
    np.testing.assert_array_equal(a, b)
  assert not np.array_equal(first[0], other[0])


def test_nested_and_disjoint_from_validation():
  previous, validation0 = None, None
  for fraction in subsets.PAPER_FRACTIONS:
    train, validation = subsets.split_indices(
        LABELS, fraction=fraction, validation_per_class=15, seed=4)
    assert not set(train) & set(validation)
    if previous is not None:
      assert set(previous) <= set(train), fraction  # 1% inside 2% ...
      np.testing.assert_array_equal(validation, validation0)
    previous, validation0 = train, validation
  assert len(previous) + len(validation0) == len(LABELS)  # 100%: the rest.
  small, _ = subsets.split_indices(LABELS, per_class=3, seed=4)
  large, _ = subsets.split_indices(LABELS, per_class=9, seed=4)
  assert set(small) <= set(large)


@pytest.mark.parametrize("kwargs, message", [
    (dict(fraction=0.0), "0 < fraction <= 1"),
    (dict(fraction=1.5), "0 < fraction <= 1"),
    (dict(per_class=0), "must be >= 1"),
    (dict(), "exactly one"),
    (dict(fraction=0.1, per_class=2), "exactly one"),
    (dict(fraction=0.1, validation_per_class=120), "class 0 has 120"),
])
def test_bad_arguments(kwargs, message):
  with pytest.raises(ValueError, match=message):
    subsets.split_indices(LABELS, **kwargs)


@pytest.fixture(scope="module")
def npz_dir(tmp_path_factory):
  """4 classes, 12 train images each (pixel value = image index), 3 test."""
  root = tmp_path_factory.mktemp("labeled")
  y = np.repeat(np.arange(4), 12)[np.random.default_rng(0).permutation(48)]
  x = np.broadcast_to(np.arange(48, dtype=np.uint8)[:, None, None, None],
                      (48, 8, 8, 3)).copy()
  np.savez(root / "train.npz", x=x, y=y)
  np.savez(root / "test.npz", x=x[:12], y=np.repeat(np.arange(4), 3))
  return str(root), y


def test_labeled_load_selects_the_subset_images(npz_dir):
  root, y = npz_dir
  data = labeled.load(root, label_fraction=0.5, validation_per_class=2,
                      seed=5)
  train_idx, val_idx = subsets.split_indices(y, fraction=0.5,
                                             validation_per_class=2, seed=5)
  got = [(int(image[0, 0, 0]), int(label)) for image, label in data.train]
  assert got == [(i, y[i]) for i in train_idx]
  assert [int(image[0, 0, 0]) for image, _ in data.validation] == list(
      val_idx)
  assert (data.num_train, data.num_validation, data.num_test,
          data.num_classes) == (20, 8, 12, 4)
  assert data.class_names == ["0", "1", "2", "3"]


def test_eval_batches_keep_the_last_partial_batch(npz_dir):
  root, _ = npz_dir
  data = labeled.load(root, label_fraction=1.0)
  batches = list(labeled.eval_batches(data.test, batch_size=5, image_size=8,
                                      patch_size=4, patch_stride=4))
  assert [b[0].shape[0] for b in batches] == [5, 5, 2]
  assert batches[0][0].shape[1:] == (2, 2, 4, 4, 3)
  assert batches[0][0].dtype == tf.float32
