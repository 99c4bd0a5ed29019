"""Class-balanced, nested label subsets for efficient classification (§2.2).

Each class's examples are put in one fixed order (from the seed); the first
`validation_per_class` of them form the held-out validation part, and a
training subset of fraction f takes the first round(f * n_c) of the rest of
each class c. So subsets are class-balanced, deterministic per seed, nested
(1% inside 2% inside ... 100%) and never overlap the validation part, and
every method compared gets the same images.
"""

import numpy as np

PAPER_FRACTIONS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)


def _class_orders(labels, seed):
  rng = np.random.default_rng(seed)
  return {c: rng.permutation(np.flatnonzero(labels == c))
          for c in np.unique(labels)}


def split_indices(labels, *, fraction=None, per_class=None,
                  validation_per_class=0, seed=0):
  """Returns (train_indices, validation_indices) into `labels`.

  Give either `fraction` in (0, 1] of each class's training pool or
  `per_class` images of each class. Every class keeps at least one image.
  """
  if (fraction is None) == (per_class is None):
    raise ValueError("give exactly one of fraction or per_class")
  if fraction is not None and not 0 < fraction <= 1:
    raise ValueError(f"label fraction {fraction}; allowed: 0 < fraction <= 1")
  if per_class is not None and per_class < 1:
    raise ValueError(f"images per class {per_class}; must be >= 1")
  labels = np.asarray(labels)
  train, validation = [], []
  for c, order in sorted(_class_orders(labels, seed).items()):
    if len(order) <= validation_per_class:
      raise ValueError(
          f"class {c} has {len(order)} examples, not more than "
          f"validation_per_class={validation_per_class}")
    validation.append(order[:validation_per_class])
    pool = order[validation_per_class:]
    count = (per_class if per_class is not None
             else max(1, int(round(fraction * len(pool)))))
    train.append(pool[:min(count, len(pool))])
  return np.sort(np.concatenate(train)), np.sort(np.concatenate(validation))
