"""Run configurations: one dataclass per binary, one help string per field.

`RunConfig` holds the fields every training run shares (pretraining and
evaluation): where it writes, the data, the loop, the devices.
`PretrainConfig` adds CPC v2 pretraining's own. `cpc_tf.pretrain` turns
every field into an absl flag, so the flagfiles in `flags/` and this file
are the whole description of an experiment; the config is saved as
`config.json` beside the checkpoints so that export and evaluation rebuild
the same encoder and patch geometry.

This module imports no TensorFlow (only `save`, `load` and the writability
check do, when called), so a binary rejects a bad flag before loading it.
The choice tuples below are the values the registries accept
(tests/test_flags.py checks that they agree).
"""

import dataclasses
import json
import os
from typing import ClassVar
import uuid

from cpc_tf import flag_utils
from cpc_tf.data import patches as patches_lib
from cpc_tf.flag_utils import field

# The keys of cpc_tf.models.resnet.PRESETS, and its NORMS.
ARCHITECTURES = ("resnet161", "resnet101_3stacks", "resnet50", "resnet101",
                 "resnet152", "resnet200", "tiny")
NORMS = ("layer", "batch")
# cpc_tf.train.strategy.STRATEGIES, and the values its set_precision takes.
STRATEGIES = ("default", "mirrored", "multi_worker", "tpu")
MIXED_PRECISION = ("none", "bfloat16", "float16")
# cpc_tf.data.pipeline.CACHE_CHOICES and CACHE_MEMORY_FRACTION.
CACHE_CHOICES = ("auto", "true", "false")
CACHE_MEMORY_FRACTION = 0.25


@dataclasses.dataclass
class RunConfig:
  """What every training run shares: output, data, loop and devices."""
  model_dir: str = field("", "Where checkpoints, TensorBoard events and "
                          "config.json go, with the export (pretraining) or "
                          "results.json (evaluation); an interrupted run "
                          "there resumes.")
  dataset: str = field(
      "data/cifar10_demo", "A TFDS name (imagenet2012, imagenet2012_subset/"
      "1pct or /10pct, stl10, cifar10, ...), a folder of class sub-folders "
      "of images, or an .npz file / folder of <split>.npz.")
  data_dir: str = field("", "TFDS data_dir (TFDS names only).")
  train_steps: int = field(1000, "Number of optimizer steps (evaluation: at "
                           "most; --patience may stop it earlier).")
  warmup_steps: int = field(100, "Linear learning-rate warm-up steps.")
  steps_per_loop: int = field(20, "Optimizer steps per tf.function call.")
  summary_every: int = field(20, "Write TensorBoard scalars every N steps.")
  keep_checkpoints: int = field(3, "Checkpoints kept (evaluation: besides "
                                "the best validated weights).")
  strategy: str = field("default", "tf.distribute strategy.", STRATEGIES)
  tpu: str = field("", "TPU name or grpc:// address (--strategy=tpu).")
  mixed_precision: str = field("none", "Mixed precision compute dtype; "
                                "bfloat16 for TPU and recent CPUs.",
                                MIXED_PRECISION)
  cache_images: str = field(
      "auto", "Keep decoded images in memory: auto = if one host's share "
      f"fits in {CACHE_MEMORY_FRACTION:g} of the available memory.",
      CACHE_CHOICES)
  seed: int = field(0, "Seed of the initialisation, data order and "
                     "augmentation.")

  def validate(self):
    """Raises ValueError naming the first bad value and what is allowed."""
    flag_utils.check_choices(self)
    flag_utils.check_required(self, ("model_dir",))
    flag_utils.check_positive(self, ("train_steps", "steps_per_loop",
                                     "summary_every", "keep_checkpoints"))
    flag_utils.check_positive(self, ("warmup_steps",), allow_zero=True)
    return self

  def save(self, path):
    """Writes the config as JSON to `path` (any tf.io.gfile path)."""
    from cpc_tf import files  # pylint: disable=g-import-not-at-top
    files.write_atomic(path, json.dumps(dataclasses.asdict(self), indent=2,
                                        sort_keys=True))


@dataclasses.dataclass
class AugmentFields:
  """Per-patch augmentation (§4.1), of pretraining and of the supervised
  baseline (A.4); `data.augment.AugmentConfig.from_config` reads them.
  A family that is on applies to each patch with its probability."""
  color_drop: bool = field(True, "Per-patch colour dropping (§4.1 RC).")
  auto_augment: bool = field(True, "Per-patch AutoAugment primitives, 2 of "
                              "15 chosen per patch (§4.1 PA).")
  elastic: bool = field(False, "Per-patch random elastic deformation "
                         "(§4.1 PA).")
  color_jitter: bool = field(True, "Per-patch colour transforms (§4.1 PA).")
  jitter: int = field(1, "Per-patch spatial jitter in pixels; 0 is off.")
  flip: bool = field(True, "Random horizontal flip of the whole image.")
  color_drop_prob: float = field(1.0, "Probability that a patch is colour-"
                                 "dropped (with --color_drop).")
  auto_augment_prob: float = field(1.0, "Probability that a patch gets "
                                   "AutoAugment primitives (with "
                                   "--auto_augment).")
  elastic_prob: float = field(1.0, "Probability that a patch is deformed "
                              "(with --elastic).")
  color_jitter_prob: float = field(1.0, "Probability that a patch is "
                                   "colour-jittered (with --color_jitter).")

  def validate_augment(self):
    flag_utils.check_probability(self, (
        "color_drop_prob", "auto_augment_prob", "elastic_prob",
        "color_jitter_prob"))
    flag_utils.check_positive(self, ("jitter",), allow_zero=True)


@dataclasses.dataclass
class PretrainConfig(RunConfig, AugmentFields):
  """CPC v2 pretraining (§4.1). Defaults: the `tiny` encoder on 32x32
  images cut into 8x8 patches at stride 4 (a 7x7 grid), in 4 directions;
  the CPC loss of appendix A.2's pseudocode (target_dim 64, emb_scale 0.1,
  steps_to_ignore 2, steps_to_predict 3) with a 256-wide context network;
  batch 64, Adam at 4e-4 after 100 warm-up steps, 1000 steps; every
  per-patch augmentation but elastic, plus flips. flags/demo_cpu.flags is
  the CPU demo, flags/*_imagenet.flags the paper's settings."""
  # Old flag and config.json names, still read.
  RENAMED_FLAGS: ClassVar[dict] = {"encoder": "architecture"}

  split: str = field("train", "Split of --dataset to pretrain on.")
  batch_size: int = field(64, "Global batch size in images.")
  image_size: int = field(32, "Images are resized and cropped to this side "
                           "(paper: 240).")
  patch_size: int = field(8, "Side of a square patch (paper: 80).")
  patch_stride: int = field(4, "Stride between patches (paper: 32).")
  architecture: str = field("tiny", "Encoder preset (LN ResNet-v2).",
                            ARCHITECTURES)
  norm: str = field("layer", "Encoder normalisation; batch only for the LN "
                     "ablation of Fig. 3.", NORMS)
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
  learning_rate: float = field(4e-4, "Peak Adam learning rate; cosine decay "
                               "to 0 after the warm-up.")
  checkpoint_every: int = field(200, "Save a checkpoint every N steps.")
  profile_steps: str = field("", "'START,END': trace these steps with the "
                              "TensorBoard profiler.")
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
    super().validate()
    flag_utils.check_positive(self, (
        "batch_size", "image_size", "patch_size", "patch_stride",
        "target_dim", "context_dim", "checkpoint_every", "learning_rate"))
    flag_utils.check_positive(self, ("steps_to_ignore",), allow_zero=True)
    self.validate_augment()
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

  @classmethod
  def load(cls, path):
    """Reads a config saved by `save` (any tf.io.gfile path); old names of
    renamed fields are read as the new ones, unknown keys are ignored."""
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    with tf.io.gfile.GFile(path) as f:
      saved = json.load(f)
    for old, new in cls.RENAMED_FLAGS.items():
      if old in saved:
        saved.setdefault(new, saved.pop(old))
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
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
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
