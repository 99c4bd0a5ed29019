"""PASCAL VOC (XML + JPEG) -> Model Garden detection records (§4.3).

`convert` reads ImageSets/Main/<split>.txt, Annotations/<id>.xml and
JPEGImages/<id>.jpg and writes one tf.train.Example per image with the
keys `official.vision.dataloaders.tf_example_decoder` reads:
  image/encoded, image/format, image/height, image/width, image/source_id
  (the VOC id, e.g. "000007"), image/filename,
  image/object/bbox/{xmin,ymin,xmax,ymax}  normalized to [0, 1], from VOC's
      1-based inclusive pixels as continuous [xmin - 1, xmax] / width,
  image/object/class/label  1..20 in voc.CLASSES order, class/text the name,
  image/object/difficult, image/object/truncated  (VOC's flags, kept), and
  image/object/is_crowd  = difficult: Model Garden's parser then leaves
      difficult objects out of training (`skip_crowd_during_training`, as
      VOC Faster R-CNN does) and carries them to evaluation, where the
      VOC 2007 metric ignores them (voc_eval.py).
An annotation or image that is missing, unreadable, malformed or
inconsistent (class outside VOC, box outside the image, size disagreeing
with the JPEG) is reported by name and skipped. `voc_to_tfrecord` is the
binary.
"""

import collections
import dataclasses
import io
import os

from PIL import Image
import tensorflow as tf

from detection import voc


@dataclasses.dataclass
class Report:
  """What a conversion wrote and skipped."""
  images: int = 0
  objects: collections.Counter = dataclasses.field(
      default_factory=collections.Counter)
  difficult: collections.Counter = dataclasses.field(
      default_factory=collections.Counter)
  skipped: list = dataclasses.field(default_factory=list)

  def summary(self):
    lines = [f"{self.images} images, {sum(self.objects.values())} objects "
             f"({sum(self.difficult.values())} difficult)"]
    lines += [f"  {name:12s} {self.objects[name]:6d} objects "
              f"{self.difficult[name]:5d} difficult" for name in voc.CLASSES]
    lines += [f"skipped {path}: {reason}" for path, reason in self.skipped]
    return "\n".join(lines)


def _int64s(values):
  return tf.train.Feature(int64_list=tf.train.Int64List(value=list(values)))


def _floats(values):
  return tf.train.Feature(float_list=tf.train.FloatList(value=list(values)))


def _bytes(values):
  return tf.train.Feature(bytes_list=tf.train.BytesList(value=list(values)))


def make_example(image_id, jpeg, annotation):
  """One image -> tf.train.Example in Model Garden's detection format."""
  width, height = annotation.width, annotation.height
  boxes = [o.continuous_box for o in annotation.objects]
  objects = annotation.objects
  features = {
      "image/encoded": _bytes([jpeg]),
      "image/format": _bytes([b"jpeg"]),
      "image/height": _int64s([height]),
      "image/width": _int64s([width]),
      "image/source_id": _bytes([image_id.encode()]),
      "image/filename": _bytes([f"{image_id}.jpg".encode()]),
      "image/object/bbox/xmin": _floats(b[0] / width for b in boxes),
      "image/object/bbox/ymin": _floats(b[1] / height for b in boxes),
      "image/object/bbox/xmax": _floats(b[2] / width for b in boxes),
      "image/object/bbox/ymax": _floats(b[3] / height for b in boxes),
      "image/object/class/label": _int64s(o.label for o in objects),
      "image/object/class/text": _bytes(o.name.encode() for o in objects),
      "image/object/difficult": _int64s(int(o.difficult) for o in objects),
      "image/object/truncated": _int64s(int(o.truncated) for o in objects),
      "image/object/is_crowd": _int64s(int(o.difficult) for o in objects),
  }
  return tf.train.Example(features=tf.train.Features(feature=features))


def _read_jpeg(path, annotation):
  """The JPEG's bytes, after checking it decodes to the annotated size."""
  with open(path, "rb") as f:
    jpeg = f.read()
  try:
    with Image.open(io.BytesIO(jpeg)) as image:
      image.load()
      if image.format != "JPEG":
        raise voc.AnnotationError(path, f"{image.format} image, not JPEG")
      size = image.size
  except (OSError, SyntaxError) as e:
    raise voc.AnnotationError(path, f"unreadable image ({e})") from None
  if size != (annotation.width, annotation.height):
    raise voc.AnnotationError(
        path, f"image is {size[0]}x{size[1]}, annotation says "
        f"{annotation.width}x{annotation.height}")
  return jpeg


def convert(voc_dir, split, output):
  """Writes `output` (a TFRecord file) from a VOC split; returns a Report.

  The file appears only when complete (written next to it, then renamed).
  """
  report = Report()
  ids = voc.read_split(voc_dir, split)
  os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
  partial = output + ".partial"
  with tf.io.TFRecordWriter(partial) as writer:
    for image_id in ids:
      xml_path = os.path.join(voc_dir, "Annotations", f"{image_id}.xml")
      jpeg_path = os.path.join(voc_dir, "JPEGImages", f"{image_id}.jpg")
      try:
        annotation = voc.parse_annotation(xml_path)
        jpeg = _read_jpeg(jpeg_path, annotation)
      except FileNotFoundError as e:
        report.skipped.append((e.filename, "missing"))
        continue
      except voc.AnnotationError as e:
        report.skipped.append((e.path, e.reason))
        continue
      writer.write(make_example(image_id, jpeg,
                                annotation).SerializeToString())
      report.images += 1
      for o in annotation.objects:
        report.objects[o.name] += 1
        report.difficult[o.name] += o.difficult
  os.replace(partial, output)
  return report
