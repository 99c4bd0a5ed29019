"""The pretraining configuration: one dataclass, one help string per field.

`cpc_tf.pretrain` turns every field into an absl flag, so the flagfiles in
`flags/` and this file are the whole description of an experiment; the
config is saved as `config.json` beside the checkpoints so that export and
evaluation rebuild the same encoder and patch geometry.
"""

import dataclasses
import json
import os
import uuid

import tensorflow as tf

from cpc_tf.data import patches as patches_lib
from cpc_tf.data import pipeline
from cpc_tf import files
from cpc_tf import flag_utils
from cpc_tf.flag_utils import field
from cpc_tf.models import resnet
from cpc_tf.train import strategy as strategy_lib

MIXED_PRECISION = ("none", "bfloat16", "float16")


@dataclasses.dataclass
class PretrainConfig:
  """CPC v2 pretraining (§4.1); defaults are the small CPU demo."""
  model_dir: str = field("", "Where checkpoints, summaries and the export "
                          "go; an existing run there is resumed.")
  dataset: str = field(
      "data/cifar10_demo", "A TFDS name (imagenet2012, stl10, cifar10, ...), "
      "a folder of class sub-folders of images, or an .npz file / folder of "
      "<split>.npz.")
  data_dir: str = field("", "TFDS data_dir (TFDS names only).")
  split: str = field("train", "Split of --dataset to pretrain on.")
  train_steps: int = field(1000, "Number of optimizer steps.")
  batch_size: int = field(64, "Global batch size in images.")
  image_size: int = field(32, "Images are resized and cropped to this side "
                           "(paper: 240).")
  patch_size: int = field(8, "Side of a square patch (paper: 80).")
  patch_stride: int = field(4, "Stride between patches (paper: 32).")
  encoder: str = field("tiny", "Encoder preset.", tuple(resnet.PRESETS))
  norm: str = field("layer", "Encoder normalisation; batch only for the LN "
                     "ablation of Fig. 3.", resnet.NORMS)
  directions: int = field(4, "Prediction directions: 1 top-down, 2 +bottom-"
                           "up, 4 +left/right (§4.1 BU, HP).", (1, 2, 4))
  target_dim: int = field(64, "Dimension of the CPC targets and "
                           "predictions.")
  emb_scale: float = field(0.1, "Scale of the predictions before the dot "
                            "product.")
  steps_to_ignore: int = field(2, "Rows skipped before the first "
                                "predicted row (appendix A.2).")
  steps_to_predict: int = field(3, "Predict rows i+1 for i in "
                                 "[steps_to_ignore, steps_to_predict).")
  context_dim: int = field(256, "Hidden width of the PixelCNN context "
                            "network.")
  cross_replica_negatives: bool = field(
      False, "Gather CPC targets from all replicas, so negatives come from "
      "the global batch (logits memory grows with the number of replicas).")
  color_drop: bool = field(True, "Per-patch colour dropping (§4.1 RC).")
  auto_augment: bool = field(True, "Per-patch AutoAugment primitives "
                              "(§4.1 PA).")
  elastic: bool = field(False, "Per-patch random elastic deformation "
                         "(§4.1 PA).")
  color_jitter: bool = field(True, "Per-patch colour transforms (§4.1 PA).")
  jitter: int = field(1, "Per-patch spatial jitter in pixels; 0 is off.")
  flip: bool = field(True, "Random horizontal flip of the whole image.")
  learning_rate: float = field(4e-4, "Peak Adam learning rate.")
  warmup_steps: int = field(100, "Linear warm-up steps; cosine decay to 0 "
                             "after.")
  strategy: str = field("default", "tf.distribute strategy.",
                         strategy_lib.STRATEGIES)
  tpu: str = field("", "TPU name or grpc:// address (--strategy=tpu).")
  mixed_precision: str = field("none", "Mixed precision compute dtype; "
                                "bfloat16 for TPU and recent CPUs.",
                                MIXED_PRECISION)
  steps_per_loop: int = field(20, "Optimizer steps per tf.function call.")
  checkpoint_every: int = field(200, "Save a checkpoint every N steps.")
  keep_checkpoints: int = field(3, "Checkpoints kept.")
  summary_every: int = field(20, "Write TensorBoard scalars every N steps.")
  profile_steps: str = field("", "'START,END': trace these steps with the "
                              "TensorBoard profiler.")
  cache_images: str = field(
      "auto", "Keep decoded images in memory: auto = if one host's share "
      f"fits in {pipeline.CACHE_MEMORY_FRACTION:g} of the available memory.",
      pipeline.CACHE_CHOICES)
  seed: int = field(0, "Seed of the initialisation, data order and "
                     "augmentation.")
  deterministic: bool = field(False, "Deterministic TF ops "
                               "(tf.config.experimental."
                               "enable_op_determinism): bit-exact reruns and "
                               "resumes, somewhat slower.")
  export: bool = field(True, "Export the encoder SavedModel at the end.")

  @property
  def grid_size(self):
    return patches_lib.grid_size(self.image_size, self.patch_size,
                                 self.patch_stride)

  def validate(self):
    """Raises ValueError naming the first bad value and what is allowed."""
    flag_utils.check_choices(self)
    if not self.model_dir:
      raise ValueError("--model_dir is required")
    flag_utils.check_positive(self, (
        "train_steps", "batch_size", "image_size", "target_dim",
        "context_dim", "steps_per_loop", "checkpoint_every",
        "keep_checkpoints", "summary_every", "learning_rate"))
    flag_utils.check_positive(self, ("warmup_steps", "jitter",
                                     "steps_to_ignore"), allow_zero=True)
    if self.steps_to_predict <= self.steps_to_ignore:
      raise ValueError(
          f"--steps_to_predict={self.steps_to_predict} must be greater than "
          f"--steps_to_ignore={self.steps_to_ignore}")
    rows = self.grid_size
    if self.steps_to_predict >= rows:
      raise ValueError(
          f"--steps_to_predict={self.steps_to_predict} needs a grid of more "
          f"than {self.steps_to_predict} rows; this geometry gives {rows}")
    if self.profile_steps:
      parse_profile_steps(self.profile_steps)
    check_writable(self.model_dir, "--model_dir")
    return self

  def save(self, path):
    """Writes the config as JSON to `path` (any tf.io.gfile path)."""
    files.write_atomic(path, json.dumps(dataclasses.asdict(self), indent=2,
                                        sort_keys=True))

  @classmethod
  def load(cls, path):
    """Reads a config saved by `save`; unknown keys are ignored."""
    with tf.io.gfile.GFile(path) as f:
      saved = json.load(f)
    known = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in saved.items() if k in known})


def parse_profile_steps(text):
  """'START,END' -> (start, end) with 0 <= start < end."""
  try:
    start, end = (int(v) for v in text.split(","))
  except ValueError:
    start = end = -1
  if not 0 <= start < end:
    raise ValueError(f"--profile_steps={text!r}; expected 'START,END' with "
                     "0 <= START < END")
  return start, end


def check_writable(directory, flag):
  """Fails early (not after hours of training) if `directory` can't be
  created or written: creates it and writes and removes a probe file, through
  tf.io.gfile, so gs:// and other TensorFlow filesystems are checked too."""
  probe = os.path.join(directory, f".write_check_{uuid.uuid4().hex}")
  try:
    tf.io.gfile.makedirs(directory)
    with tf.io.gfile.GFile(probe, "w") as f:
      f.write("")
    tf.io.gfile.remove(probe)
  except (OSError, tf.errors.OpError) as e:
    reason = e.message if isinstance(e, tf.errors.OpError) else e.strerror
    raise ValueError(f"{flag}={directory} is not writable: "
                     f"{reason.splitlines()[0] if reason else e}") from None
