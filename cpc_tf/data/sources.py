"""Where images come from: .npz arrays, image folders or TFDS (§4).

`load` returns a `Source` holding the split still encoded (`records`: the
pipeline decodes only what a host trains on); its `dataset` yields
`(image, label)`: image uint8 `[H, W, 3]` at its own size (the pipeline
crops it), label int64, -1 when the split has no labels (e.g. STL-10's
"unlabeled").
"""

import concurrent.futures
import dataclasses
import os

from absl import logging
import numpy as np
import PIL.Image
import tensorflow as tf
import tensorflow_datasets as tfds

from cpc_tf.data import records as records_lib

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
    records: `records.ArrayRecords` or `records.FileRecords`, the examples
      still encoded.
    num_examples: examples in the split.
    num_classes: number of classes, or None if unknown or unlabeled.
    class_names: class i's name at index i, or None.
    name: "<dataset>:<split>", for logs.
    skipped: (path, reason) of each file rejected while listing an image
      folder.
  """
  records: records_lib.ArrayRecords | records_lib.FileRecords
  num_examples: int
  num_classes: int | None
  class_names: list | None
  name: str
  skipped: list = dataclasses.field(default_factory=list)

  @property
  def dataset(self):
    """tf.data.Dataset of (image uint8 [H, W, 3], label int64 scalar), in
    the split's order."""
    return self.records.dataset()

  def labels(self):
    """Every label in the split's order, read without decoding images."""
    return self.records.labels()

  def subset(self, indices, part):
    """The examples at `indices` (sorted) of this split, not decoded; `part`
    names them in logs."""
    return dataclasses.replace(
        self, records=self.records.select(indices),
        num_examples=len(indices), name=f"{self.name}:{part}", skipped=[])


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
  return from_arrays(images, labels, _class_names(os.path.dirname(path)),
                     name)


def from_arrays(images, labels, class_names=None, name="arrays"):
  """A Source of uint8 images [N, H, W, 3] and int labels [N] in memory."""
  labels = np.asarray(labels, np.int64)
  if class_names:
    num_classes = len(class_names)
  else:  # Labels 0..max, or all -1 when unlabeled.
    num_classes = int(labels.max()) + 1 or None
  return Source(records_lib.ArrayRecords(images, labels), len(images),
                num_classes, class_names, name)


def _is_image(path):
  """True if the file starts like a JPEG, PNG, GIF, BMP or WebP."""
  with open(path, "rb") as f:
    head = f.read(12)
  return head.startswith(_MAGIC) or (head[:4] == b"RIFF" and
                                     head[8:] == b"WEBP")


def _check_image(path, min_size):
  """(None, width * height) if `path` decodes fully and is at least
  min_size pixels on its shorter side, else (the reason to skip it, 0).
  PIL, not tf.io: it names the fault and runs outside the graph, so every
  bad file can be listed."""
  if not os.path.getsize(path):
    return "empty file", 0
  if not _is_image(path):
    return "not a JPEG, PNG, GIF, BMP or WebP file", 0
  try:
    with PIL.Image.open(path) as image:
      image.load()
      width, height = image.size
  except (OSError, SyntaxError, ValueError) as e:
    return f"unreadable: {e}", 0
  if min(width, height) < min_size:
    return (f"too small: {width}x{height}, smaller than {min_size} pixels",
            0)
  return None, width * height


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
    checks = list(pool.map(lambda c: _check_image(c[0], min_size),
                           candidates))
  paths, labels, pixels, skipped = [], [], [], []
  for (path, label), (reason, size) in zip(candidates, checks):
    if reason:
      skipped.append((path, reason))
    else:
      paths.append(path)
      labels.append(label)
      pixels.append(size)
  if not paths:
    raise ValueError(
        f"no usable image in {root}/<class>/ ({len(skipped)} rejected; "
        f"allowed extensions: {', '.join(IMAGE_EXTENSIONS)}, at least "
        f"{min_size} pixels on the shorter side)")
  # A file that still fails to decode is dropped with a warning.
  records = records_lib.ArrayRecords(np.array(paths), labels,
                                     np.array(pixels, np.int64))
  return Source(records, len(paths), len(class_names), class_names, name,
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
  if builder.info.file_format != tfds.core.FileFormat.TFRECORD:
    raise ValueError(f"TFDS {dataset!r} is stored as "
                     f"{builder.info.file_format.value}; only tfrecord is "
                     "read (`tfds build --file_format=tfrecord`)")
  keys = builder.info.supervised_keys
  image_key, label_key = keys if keys else ("image", None)
  label_feature = builder.info.features[label_key] if label_key else None
  class_names = getattr(label_feature, "names", None)
  records = records_lib.FileRecords(
      builder.info.splits[split].file_instructions,
      _parser(builder.info.features, image_key, label_key),
      builder.info.features[image_key].shape)
  return Source(records, num_examples,
                len(class_names) if class_names else None, class_names, name)


def _parser(features, image_key, label_key):
  """serialized record, label_only -> (encoded image, label) or label, the
  image left undecoded (`tfds.decode.SkipDecoding`) and other features not
  parsed (`tfds.decode.PartialDecoding`)."""
  def parser(wanted, decoders=None):
    partial = tfds.decode.PartialDecoding({key: True for key in wanted},
                                          decoders=decoders)
    return partial.extract_features(features), partial.decoders
  labels = [label_key] if label_key else []
  with_image = parser([image_key, *labels],
                      {image_key: tfds.decode.SkipDecoding()})
  just_label = parser(labels) if label_key else None

  def parse(serialized, label_only):
    if label_only and not label_key:
      return tf.constant(-1, tf.int64)
    spec, decoders = just_label if label_only else with_image
    example = spec.deserialize_example(serialized, decoders=decoders)
    label = (tf.cast(example[label_key], tf.int64) if label_key
             else tf.constant(-1, tf.int64))
    return label if label_only else (example[image_key], label)
  return parse
