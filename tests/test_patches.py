"""Patch grids (cpc_tf/data/patches.py) against numpy slicing."""

import numpy as np
import pytest
import tensorflow as tf

from cpc_tf.data import patches


def numpy_patches(images, size, stride):
  """The definition: patch (r, c) = images[:, r*s : r*s+p, c*s : c*s+p]."""
  _, height, width, _ = images.shape
  return np.stack([
      np.stack([images[:, r:r + size, c:c + size]
                for c in range(0, width - size + 1, stride)], axis=1)
      for r in range(0, height - size + 1, stride)], axis=1)


@pytest.mark.parametrize("height, width, size, stride, grid", [
    (32, 32, 8, 4, (7, 7)),  # The CIFAR setting.
    (24, 40, 8, 4, (5, 9)),  # Not square.
    (30, 30, 10, 4, (6, 6)),  # 240/80/32 scaled down by 8.
])
def test_extract_patches_matches_slicing(height, width, size, stride, grid):
  images = np.random.RandomState(0).randint(
      0, 256, (2, height, width, 3)).astype(np.uint8)
  got = patches.extract_patches(images, size, stride)
  assert got.dtype == tf.uint8
  assert tuple(got.shape) == (2, *grid, size, size, 3)
  np.testing.assert_array_equal(got.numpy(),
                                numpy_patches(images, size, stride))


def test_extract_patches_is_row_major():
  # Pixel value = its row index, so patch (r, c) starts at row r * stride.
  rows = np.broadcast_to(np.arange(32, dtype=np.float32)[None, :, None, None],
                         (1, 32, 32, 1))
  got = patches.extract_patches(rows, 8, 4).numpy()
  np.testing.assert_array_equal(got[0, :, 0, 0, 0, 0], np.arange(7) * 4)
  np.testing.assert_array_equal(got[0, 0, :, 0, 0, 0], np.zeros(7))


def test_extract_patches_keeps_static_shape_in_graph():
  fn = tf.function(lambda x: patches.extract_patches(x, 8, 4))
  spec = tf.TensorSpec([None, 32, 32, 3], tf.float32)
  assert fn.get_concrete_function(spec).structured_outputs.shape.as_list() == [
      None, 7, 7, 8, 8, 3]


def test_grid_size_of_paper_configs():
  assert patches.grid_size(240, 80, 32) == 6
  assert patches.grid_size(32, 8, 4) == 7


@pytest.mark.parametrize("args, message", [
    ((32, 40, 4), "patch_size=40 is larger than image_size=32"),
    ((32, 8, 0), "patch_stride=0"),
    ((32, 0, 4), "patch_size=0"),
    ((33, 8, 4), "e.g. 32 or 36"),
])
def test_grid_size_errors(args, message):
  with pytest.raises(ValueError, match=message):
    patches.grid_size(*args)
