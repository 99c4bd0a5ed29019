"""Whole-file writes that work on any tf.io.gfile path (local, gs://, ...)."""

import uuid

import tensorflow as tf


def write_atomic(path, content):
  """Writes `content` (str or bytes) to `path` through a uniquely named
  temporary file renamed over it, so readers never see half a file and a
  crash leaves the previous version. Hand-written: tf.io.gfile has no public
  atomic write."""
  temporary = f"{path}.tmp-{uuid.uuid4().hex}"
  with tf.io.gfile.GFile(temporary,
                         "wb" if isinstance(content, bytes) else "w") as f:
    f.write(content)
  tf.io.gfile.rename(temporary, path, overwrite=True)
  return path
