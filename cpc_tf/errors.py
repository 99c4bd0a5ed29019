"""What stops a run for its user to act on, and how binaries report it.

Every binary ends on these, and on the ValueErrors raised for bad flag
values, data and paths, with one line and no traceback
(`reported_in_one_line`; `--verbosity=1` shows the traceback).
"""

import contextlib
import sys

from absl import flags
from absl import logging


class Preempted(Exception):
  """SIGTERM stopped training after a checkpoint; rerunning resumes."""


class CheckpointWriteError(RuntimeError):
  """A checkpoint could not be written (e.g. the disk is full)."""


class DivergenceError(RuntimeError):
  """Too many consecutive steps with a non-finite loss or gradient."""


USER_ERRORS = (ValueError, CheckpointWriteError, DivergenceError)


@contextlib.contextmanager
def reported_in_one_line():
  """Ends the process on what the user acts on: `Preempted` exits 0 after a
  warning (its checkpoint is saved), `USER_ERRORS` print `error: <message>`
  and exit 1."""
  try:
    yield
  except Preempted as e:
    logging.warning("%s", e)
    sys.exit(0)
  except USER_ERRORS as e:
    if flags.FLAGS.verbosity > 0:
      raise
    sys.exit(f"error: {e}")
