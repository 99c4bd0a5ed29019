"""PASCAL VOC classes, split lists and annotation XML (§4.3).

VOC boxes are 1-based inclusive pixel indices: a box from xmin to xmax
covers xmax - xmin + 1 pixels. `Object.continuous_box` turns that into
continuous coordinates [xmin - 1, xmax] (the pixel grid starting at 0), in
which width = xmax - xmin + 1 and IoU needs no "+1" (the VOC devkit's +1
on integer boxes gives the same overlaps).
"""

import dataclasses
import os
from xml.etree import ElementTree

# The 20 VOC classes; label = index + 1 (0 is the background of Faster R-CNN).
CLASSES = ("aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car",
           "cat", "chair", "cow", "diningtable", "dog", "horse", "motorbike",
           "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor")
SPLITS = ("train", "val", "trainval", "test")


class AnnotationError(ValueError):
  """A file that cannot be used: its path and the reason."""

  def __init__(self, path, reason):
    super().__init__(f"{path}: {reason}")
    self.path = path
    self.reason = reason


@dataclasses.dataclass(frozen=True)
class Object:
  name: str
  xmin: float
  ymin: float
  xmax: float
  ymax: float
  difficult: bool
  truncated: bool

  @property
  def label(self):
    return CLASSES.index(self.name) + 1

  @property
  def continuous_box(self):
    """(xmin, ymin, xmax, ymax) in continuous pixel coordinates."""
    return self.xmin - 1, self.ymin - 1, self.xmax, self.ymax


@dataclasses.dataclass(frozen=True)
class Annotation:
  width: int
  height: int
  objects: tuple


def read_split(voc_dir, split):
  """The image ids listed in ImageSets/Main/<split>.txt."""
  path = os.path.join(voc_dir, "ImageSets", "Main", f"{split}.txt")
  with open(path) as f:
    return [line.split()[0] for line in f if line.strip()]


def _text(element, tag, path):
  child = element.find(tag)
  if child is None or child.text is None or not child.text.strip():
    raise AnnotationError(path, f"missing <{tag}>")
  return child.text.strip()


def _number(element, tag, path):
  text = _text(element, tag, path)
  try:
    return float(text)
  except ValueError:
    raise AnnotationError(path, f"<{tag}> is {text!r}, not a number") \
        from None


def _flag(element, tag):
  child = element.find(tag)
  return child is not None and (child.text or "").strip() in ("1", "true")


def parse_annotation(path):
  """Annotations/<id>.xml -> Annotation; AnnotationError says what is wrong.

  Checked: well-formed XML, a positive <size>, every object a VOC class
  with a box inside the image and xmin <= xmax, ymin <= ymax.
  """
  try:
    root = ElementTree.parse(path).getroot()
  except ElementTree.ParseError as e:
    raise AnnotationError(path, f"not well-formed XML ({e})") from None
  size = root.find("size")
  if size is None:
    raise AnnotationError(path, "missing <size>")
  width = int(_number(size, "width", path))
  height = int(_number(size, "height", path))
  if width <= 0 or height <= 0:
    raise AnnotationError(path, f"image size {width}x{height}")
  objects = []
  for element in root.findall("object"):
    name = _text(element, "name", path)
    if name not in CLASSES:
      raise AnnotationError(path, f"unknown class {name!r}")
    box = element.find("bndbox")
    if box is None:
      raise AnnotationError(path, f"object {name!r} without <bndbox>")
    xmin, ymin, xmax, ymax = (_number(box, tag, path)
                              for tag in ("xmin", "ymin", "xmax", "ymax"))
    if not (1 <= xmin <= xmax <= width and 1 <= ymin <= ymax <= height):
      raise AnnotationError(
          path, f"{name} box ({xmin}, {ymin}, {xmax}, {ymax}) is empty or "
          f"outside the {width}x{height} image")
    objects.append(Object(name, xmin, ymin, xmax, ymax,
                          _flag(element, "difficult"),
                          _flag(element, "truncated")))
  return Annotation(width, height, tuple(objects))
