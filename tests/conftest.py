"""Helpers shared by the tests: the repository root, the shared data,
augmentation switched off, and a binary's flags parsed in-process.

The workplace's real data (CIFAR-10, a VOC 2007 subset) lies outside the
repository; `CPC_TF_SHARED` names its folder, by default `../shared` beside
the repository. Tests that need it skip with the reason when it is absent.
"""

import os
import pathlib

from absl import flags
import pytest

from cpc_tf import flag_utils

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


def _flag_values(config_cls, args):
  """A binary's flags (its own, not the global ones) parsed from `args`."""
  values = flags.FlagValues()
  flag_utils.define_flags(config_cls, values)
  values(["binary", *args])
  return values


def parse_flags(config_cls, *args):
  """The config a binary of `config_cls` reads from command-line `args`,
  not yet validated."""
  return flag_utils.config_from_flags(config_cls,
                                      _flag_values(config_cls, args))


def flag_error(config_cls, *args):
  """The message a binary of `config_cls` exits with when it rejects
  `args` (`flag_utils.checked_config`)."""
  with pytest.raises(SystemExit) as stop:
    flag_utils.checked_config(["binary"], config_cls,
                              _flag_values(config_cls, args))
  return stop.value.code
