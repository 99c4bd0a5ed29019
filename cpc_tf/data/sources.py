"""Where images come from: .npz arrays, image folders or TFDS (§4).

`load` returns a `Source` whose `dataset` yields `(image, label)`: image
uint8 `[H, W, 3]` at its own size (the pipeline crops it), label int64,
-1 when the split has no labels (e.g. STL-10's "unlabeled").
"""

import concurrent.futures
import dataclasses
import os

from absl import logging
import numpy as np
import PIL.Image
import tensorflow as tf
import tensorflow_datasets as tfds

SPLITS = ("train", "test", "validation", "unlabeled")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".gif", ".bmp", ".webp")
# Leading bytes of JPEG, PNG, GIF and BMP files (WebP is checked apart).
_MAGIC = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF87a", b"GIF89a", b"BM")
_FORMS = ("give a .npz file, a directory with <split>.npz files or "
          "<class>/ image folders, or a TFDS name such as cifar10, stl10, "
          "imagenet2012")


@dataclasses.dataclass
class Source:
  """A split of a data set.

  Attributes:
    dataset: tf.data.Dataset of (image uint8 [H, W, 3], label int64 scalar).
    num_examples: examples in the split, or None if unknown.
    num_classes: number of classes, or None if unknown or unlabeled.
    class_names: class i's name at index i, or None.
    name: "<dataset>:<split>", for logs.
    skipped: (path, reason) of each file rejected while listing an image
      folder.
  """
  dataset: tf.data.Dataset
  num_examples: int | None
  num_classes: int | None
  class_names: list | None
  name: str
  skipped: list = dataclasses.field(default_factory=list)


def load(dataset, split, data_dir=None, min_size=1):
  """Loads split `split` of `dataset`.

  Args:
    dataset: a .npz file with arrays x (uint8 [N, H, W, 3]) and y (int
      [N]); a directory with <split>.npz (and optionally class_names.txt);
      a directory of images <dir>/<split>/<class>/* or <dir>/<class>/*; or
      a TFDS name (an existing path wins over a TFDS name).
    split: "train", "test", "validation", "unlabeled" (or any TFDS split).
    data_dir: TFDS data directory; None for TFDS's default.
    min_size: image-folder files smaller than this on their shorter side
      are skipped (e.g. the patch size).

  Raises:
    ValueError: unknown data set or split, no usable image, or a TFDS data
      set that is not prepared.
  """
  name = f"{dataset}:{split}"
  if os.path.isfile(dataset):
    if not dataset.endswith(".npz"):
      raise ValueError(f"{dataset} is not a .npz file; {_FORMS}")
    return _from_npz(dataset, name)
  if os.path.isdir(dataset):
    splits = sorted(f[:-4] for f in os.listdir(dataset) if f.endswith(".npz"))
    if not splits:
      return _from_folder(dataset, split, name, min_size)
    if split not in splits:
      raise ValueError(f"split {split!r} not in {dataset}; splits there: "
                       f"{', '.join(splits)}")
    return _from_npz(os.path.join(dataset, f"{split}.npz"), name)
  return _from_tfds(dataset, split, data_dir, name)


def _class_names(directory):
  path = os.path.join(directory, "class_names.txt")
  if not os.path.isfile(path):
    return None
  with open(path) as f:
    return [line.strip() for line in f if line.strip()]


def _from_npz(path, name):
  with np.load(path) as arrays:
    if "x" not in arrays or "y" not in arrays:
      raise ValueError(f"{path} has arrays {arrays.files}; expected x (uint8 "
                       "[N, H, W, 3]) and y (int [N])")
    images, labels = arrays["x"], arrays["y"].astype(np.int64)
  if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
    raise ValueError(f"{path}: x is {images.dtype} {images.shape}; expected "
                     "uint8 [N, H, W, 3]")
  class_names = _class_names(os.path.dirname(path))
  if class_names:
    num_classes = len(class_names)
  else:  # Labels 0..max, or all -1 when unlabeled.
    num_classes = int(labels.max()) + 1 or None
  return Source(tf.data.Dataset.from_tensor_slices((images, labels)),
                len(images), num_classes, class_names, name)


def _is_image(path):
  """True if the file starts like a JPEG, PNG, GIF, BMP or WebP."""
  with open(path, "rb") as f:
    head = f.read(12)
  return head.startswith(_MAGIC) or (head[:4] == b"RIFF" and
                                     head[8:] == b"WEBP")


def _decode(path, label):
  image = tf.io.decode_image(tf.io.read_file(path), channels=3,
                             expand_animations=False)
  return image, label


def _check_image(path, min_size):
  """None if `path` decodes fully and is at least min_size pixels on its
  shorter side, else the reason to skip it. PIL, not tf.io: it names the
  fault and runs outside the graph, so every bad file can be listed."""
  if not os.path.getsize(path):
    return "empty file"
  if not _is_image(path):
    return "not a JPEG, PNG, GIF, BMP or WebP file"
  try:
    with PIL.Image.open(path) as image:
      image.load()
      width, height = image.size
  except (OSError, SyntaxError, ValueError) as e:
    return f"unreadable: {e}"
  if min(width, height) < min_size:
    return f"too small: {width}x{height}, smaller than {min_size} pixels"
  return None


def _from_folder(root, split, name, min_size=1):
  """<root>/<split>/<class>/* or, without split folders, <root>/<class>/*.

  Every file is checked once while listing (in parallel): empty,
  unreadable, truncated and too small images are skipped, with their
  reason in `Source.skipped`; grayscale, CMYK and PNG-with-alpha images are
  converted to RGB when decoded.
  """
  split_dirs = [d for d in SPLITS if os.path.isdir(os.path.join(root, d))]
  if split_dirs:
    if split not in split_dirs:
      raise ValueError(f"split {split!r} not in {root}; splits there: "
                       f"{', '.join(split_dirs)}")
    root = os.path.join(root, split)
  class_names = sorted(d for d in os.listdir(root)
                       if os.path.isdir(os.path.join(root, d)))
  candidates = []
  for label, class_name in enumerate(class_names):
    folder = os.path.join(root, class_name)
    for file_name in sorted(os.listdir(folder)):
      path = os.path.join(folder, file_name)
      if (file_name.lower().endswith(IMAGE_EXTENSIONS) and
          os.path.isfile(path)):
        candidates.append((path, label))
  if len(candidates) > 10000:
    logging.info("Checking %d image files in %s", len(candidates), root)
  with concurrent.futures.ThreadPoolExecutor(max(4, os.cpu_count())) as pool:
    reasons = list(pool.map(lambda c: _check_image(c[0], min_size),
                            candidates))
  paths, labels, skipped = [], [], []
  for (path, label), reason in zip(candidates, reasons):
    if reason:
      skipped.append((path, reason))
    else:
      paths.append(path)
      labels.append(label)
  if not paths:
    raise ValueError(
        f"no usable image in {root}/<class>/ ({len(skipped)} rejected; "
        f"allowed extensions: {', '.join(IMAGE_EXTENSIONS)}, at least "
        f"{min_size} pixels on the shorter side)")
  dataset = tf.data.Dataset.from_tensor_slices(
      (paths, np.array(labels, np.int64)))
  dataset = dataset.map(_decode, num_parallel_calls=tf.data.AUTOTUNE)
  # A file that still fails to decode is dropped with a warning.
  dataset = dataset.ignore_errors(log_warning=True)
  return Source(dataset, len(paths), len(class_names), class_names, name,
                skipped)


def _from_tfds(dataset, split, data_dir, name):
  try:
    builder = tfds.builder(dataset, data_dir=data_dir)
  except ValueError as e:
    reason = str(e).splitlines()[0]
    raise ValueError(f"unknown data set {dataset!r}: no such path, and not "
                     f"a TFDS data set ({reason}); {_FORMS}") from None
  if not builder.is_prepared():
    raise ValueError(
        f"TFDS data set {dataset!r} is not downloaded/prepared in "
        f"{builder.data_dir}; run `tfds build {dataset} --data_dir=DIR` "
        "where there is internet access, then pass --data_dir=DIR")
  try:
    num_examples = builder.info.splits[split].num_examples
  except (KeyError, ValueError):
    raise ValueError(f"split {split!r} not in TFDS {dataset!r}; splits: "
                     f"{', '.join(builder.info.splits)}") from None
  keys = builder.info.supervised_keys
  image_key, label_key = keys if keys else ("image", None)
  label_feature = builder.info.features[label_key] if label_key else None
  class_names = getattr(label_feature, "names", None)
  channels = builder.info.features[image_key].shape[-1]
  data = tfds.load(dataset, split=split, data_dir=data_dir,
                   as_supervised=bool(keys), download=False)

  def to_pair(*example):
    image, label = (example if keys
                    else (example[0][image_key], tf.constant(-1, tf.int64)))
    if channels == 1:
      image = tf.image.grayscale_to_rgb(image)
    return image, tf.cast(label, tf.int64)

  return Source(data.map(to_pair), num_examples,
                len(class_names) if class_names else None, class_names, name)
