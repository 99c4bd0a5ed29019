"""Cutting an image into the grid of overlapping patches CPC encodes (§2.1).

The paper's ImageNet setting is 80x80 patches at stride 32 from a 240x240
image, a 6x6 grid (appendix A.3); the CIFAR-sized analogue used here is
8x8 patches at stride 4 from 32x32, a 7x7 grid.

Only `extract_patches` imports TensorFlow, so the flag checks can call
`grid_size` before it is loaded.
"""


def grid_size(image_size, patch_size, stride):
  """Patches per side, (image_size - patch_size) // stride + 1.

  Raises:
    ValueError: if the patches do not tile `image_size` exactly.
  """
  if patch_size <= 0:
    raise ValueError(f"patch_size={patch_size}; must be > 0")
  if stride <= 0:
    raise ValueError(f"patch_stride={stride}; must be > 0")
  if patch_size > image_size:
    raise ValueError(f"patch_size={patch_size} is larger than "
                     f"image_size={image_size}; must be <= image_size")
  if (image_size - patch_size) % stride:
    fits = [patch_size + k * stride
            for k in range((image_size - patch_size) // stride,
                           (image_size - patch_size) // stride + 2)]
    raise ValueError(
        f"image_size={image_size} is not tiled exactly by {patch_size}-pixel "
        f"patches at stride {stride}; use image_size = {patch_size} + "
        f"{stride}*k, e.g. {fits[0]} or {fits[1]}")
  return (image_size - patch_size) // stride + 1


def extract_patches(images, patch_size, stride):
  """`[B, H, W, C]` -> `[B, rows, cols, patch_size, patch_size, C]`.

  Patch (r, c) is `images[:, r*stride : r*stride+patch_size,
  c*stride : c*stride+patch_size, :]`, rows top to bottom; any dtype.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  images = tf.convert_to_tensor(images)
  patches = tf.image.extract_patches(
      images, sizes=[1, patch_size, patch_size, 1],
      strides=[1, stride, stride, 1], rates=[1, 1, 1, 1], padding="VALID")
  shape = tf.shape(patches)
  # Built from tf.shape slices; TF's shape inference keeps the static dims.
  return tf.reshape(patches, [shape[0], shape[1], shape[2], patch_size,
                              patch_size, tf.shape(images)[-1]])
