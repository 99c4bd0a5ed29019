"""Helpers shared by the tests: the repository root, the shared data, and
augmentation switched off.

The workplace's real data (CIFAR-10, a VOC 2007 subset) lies outside the
repository; `CPC_TF_SHARED` names its folder, by default `../shared` beside
the repository. Tests that need it skip with the reason when it is absent.
"""

import os
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
SHARED = pathlib.Path(os.environ.get("CPC_TF_SHARED",
                                     ROOT.parent / "shared"))
SHARED_DATA = SHARED / "data"
# Every per-patch augmentation off (PretrainConfig / AugmentConfig fields).
NO_AUGMENT = dict(color_drop=False, auto_augment=False, elastic=False,
                  color_jitter=False, jitter=0)


def shared_data(name):
  """Path of `name` in the shared data; skips the test when it is absent."""
  path = SHARED_DATA / name
  if not path.exists():
    pytest.skip(f"{path} is absent (set CPC_TF_SHARED to the folder that "
                "holds data/)")
  return path
