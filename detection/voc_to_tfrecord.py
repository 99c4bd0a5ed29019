r"""PASCAL VOC (XML + JPEG) -> Model Garden detection TFRecords (§4.3).

  python -m detection.voc_to_tfrecord --voc_dir=VOCdevkit/VOC2007 \
      --split=trainval --output=data/voc2007/trainval.tfrecord

Writes one tf.train.Example per image of the split (`voc_records` has the
keys and how boxes and difficult objects are stored), prints the objects
per class and the files skipped with their reason. Every field of
`ConversionConfig` is a flag; they are checked before TensorFlow loads.
"""

import dataclasses
import os

from absl import app

from cpc_tf import flag_utils
from detection import voc


@dataclasses.dataclass
class ConversionConfig:
  """One VOC split to convert, and where to."""
  voc_dir: str = flag_utils.field(
      "", "VOC year directory (Annotations/, JPEGImages/, ImageSets/Main/), "
      "e.g. VOCdevkit/VOC2007.")
  split: str = flag_utils.field(
      "", "Image list ImageSets/Main/<split>.txt to convert.", voc.SPLITS)
  output: str = flag_utils.field("", "TFRecord file to write.")

  def validate(self):
    """Raises ValueError naming the first bad value and what is allowed."""
    flag_utils.check_required(self, ("voc_dir", "split", "output"))
    flag_utils.check_choices(self)
    if not os.path.isdir(self.voc_dir):
      raise ValueError(f"--voc_dir={self.voc_dir} is not a directory")
    listing = os.path.join("ImageSets", "Main", f"{self.split}.txt")
    if not os.path.isfile(os.path.join(self.voc_dir, listing)):
      raise ValueError(f"--voc_dir={self.voc_dir} has no {listing} "
                       f"(--split={self.split})")
    return self


def main(argv):
  config = flag_utils.checked_config(argv, ConversionConfig)
  # TensorFlow loads here, after the checks.
  from detection import voc_records  # pylint: disable=g-import-not-at-top
  report = voc_records.convert(config.voc_dir, config.split, config.output)
  print(report.summary())
  print(f"TFRecord: {config.output}")


if __name__ == "__main__":
  flag_utils.define_flags(ConversionConfig)
  app.run(main)
