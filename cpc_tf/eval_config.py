"""Configurations of the evaluation binaries, one help string per field.

`EvalConfig` drives `cpc_tf.evaluate` (linear, efficient and fine-tuned
classification on CPC latents, §2.2, A.3) and `SupervisedConfig`
`cpc_tf.supervised` (the ResNet-from-pixels baseline of A.4, a sweep);
both share the labelled data and model selection fields of
`ClassificationConfig`, and with pretraining those of `config.RunConfig`.
Each config is saved as `config.json` in its `model_dir`. Like
`cpc_tf.config`, this module imports no TensorFlow.
"""

import dataclasses
import json

from cpc_tf import config as config_lib
from cpc_tf import flag_utils
from cpc_tf.flag_utils import field

PROTOCOLS = ("linear", "efficient", "finetune")
SCHEDULES = ("constant", "cosine")
AUGMENTS = ("full", "crop_flip")
# The keys of cpc_tf.models.heads.HEAD_PRESETS.
HEADS = ("paper", "small")


@dataclasses.dataclass
class ClassificationConfig(config_lib.RunConfig):
  """A classifier trained on a labelled subset and selected on a held-out
  validation part; evaluation's defaults for the warm-up and kept
  checkpoints."""
  train_split: str = field("train", "Labelled split the training subset and "
                            "the validation part are drawn from.")
  test_split: str = field("test", "Split reported once at the end "
                           "(ImageNet: validation).")
  label_fraction: float = field(
      1.0, "Fraction of each class's labelled training images used (paper: "
      "0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1); nested across fractions.")
  images_per_class: int = field(0, "If > 0, this many labelled images per "
                                 "class instead of --label_fraction.")
  validation_per_class: int = field(
      50, "Images per class held out of --train_split for model selection "
      "and early stopping (the same for every fraction and method).")
  subset_seed: int = field(0, "Seed of the subsets and the validation part.")
  eval_batch_size: int = field(256, "Batch size of validation and test.")
  warmup_steps: int = flag_utils.with_default(config_lib.RunConfig,
                                              "warmup_steps", 0)
  schedule: str = field("cosine", "Learning rate after warm-up: constant, "
                         "or cosine decay to 0 at --train_steps.", SCHEDULES)
  eval_every: int = field(100, "Validate (and checkpoint) every N steps.")
  patience: int = field(0, "Stop after this many validations without "
                         "improvement; 0 never stops early. The best "
                         "validated weights are tested either way.")
  keep_checkpoints: int = flag_utils.with_default(config_lib.RunConfig,
                                                  "keep_checkpoints", 2)

  def validate(self):
    """Raises ValueError naming the first bad value and what is allowed."""
    super().validate()
    if not 0 < self.label_fraction <= 1:
      raise ValueError(f"--label_fraction={self.label_fraction}; allowed: "
                       "0 < label_fraction <= 1")
    if (self.dataset.startswith("imagenet2012_subset/") and
        self.label_fraction != 1 and not self.images_per_class):
      raise ValueError(f"--label_fraction={self.label_fraction} with "
                       f"--dataset={self.dataset}; allowed: 1 (the TFDS "
                       "subset is the labelled set)")
    flag_utils.check_positive(self, ("images_per_class",
                                     "validation_per_class", "patience"),
                              allow_zero=True)
    flag_utils.check_positive(self, ("eval_batch_size", "eval_every"))
    return self

  def subset_name(self):
    """'1%', '10%' or '25/class', for tables and logs."""
    if self.images_per_class:
      return f"{self.images_per_class}/class"
    return f"{100 * self.label_fraction:g}%"

  def differences(self, path):
    """Fields whose value differs from the config saved at `path` (any
    tf.io.gfile path)."""
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    with tf.io.gfile.GFile(path) as f:
      saved = json.load(f)
    now = json.loads(json.dumps(dataclasses.asdict(self)))
    return sorted(k for k in now if saved.get(k) != now[k])


@dataclasses.dataclass
class EvalConfig(ClassificationConfig):
  """Classification on CPC latents z = f_theta(x) (§2.2, A.3)."""
  protocol: str = field(
      "efficient", "linear: frozen encoder, BatchNorm without scale + 1x1 "
      "conv + mean pool (A.3); efficient: frozen encoder, 11-block ResNet "
      "head (§2.2); finetune: encoder and head trained together, the "
      "encoder at a smaller rate, early stopping (§2.2).", PROTOCOLS)
  encoder: str = field("", "Pretraining directory (config.json + "
                        "checkpoints; preferred) or encoder SavedModel.")
  random_init: bool = field(False, "Use the encoder's architecture, "
                             "randomly initialised (the random-init "
                             "control).")
  head: str = field("small", "ResNet head size (efficient, finetune): "
                     "paper = 4096-d maps, 1024-d bottlenecks.", HEADS)
  head_dropout: float = field(0.0, "Dropout before the ResNet head's "
                               "classifier.")
  batch_size: int = field(64, "Global batch size in images (A.3: 512).")
  learning_rate: float = field(5e-4, "Peak Adam learning rate of the head "
                                "(A.3: 5e-4).")
  encoder_lr_scale: float = field(
      0.1, "finetune: the encoder's learning rate is this times "
      "--learning_rate (§2.2: smaller).")
  init_from: str = field(
      "", "finetune: model_dir of an efficient run on the same subset whose "
      "best weights start the fine-tuning (§2.2); empty = run that phase "
      "first, with these flags, in <model_dir>/fixed.")

  @property
  def method(self):
    return f"{'random' if self.random_init else 'cpc'}_{self.protocol}"

  def validate(self):
    super().validate()
    flag_utils.check_required(self, ("encoder",))
    flag_utils.check_positive(self, ("batch_size", "learning_rate"))
    if not 0 < self.encoder_lr_scale <= 1:
      raise ValueError(f"--encoder_lr_scale={self.encoder_lr_scale}; "
                       "allowed: 0 < encoder_lr_scale <= 1")
    if not 0 <= self.head_dropout < 1:
      raise ValueError(f"--head_dropout={self.head_dropout}; allowed: "
                       "0 <= head_dropout < 1")
    if self.init_from and self.protocol != "finetune":
      raise ValueError(f"--init_from with --protocol={self.protocol}; "
                       "allowed only with --protocol=finetune")
    return self


@dataclasses.dataclass
class SupervisedConfig(ClassificationConfig, config_lib.AugmentFields):
  """A ResNet-v2 trained on pixels (A.4); list flags are swept, and the
  combination best on validation is tested."""
  architecture: tuple = field(("tiny",), "ResNet-v2 presets to sweep "
                               "(A.4: resnet50, resnet101, resnet152, "
                               "resnet200).", config_lib.ARCHITECTURES)
  image_size: int = field(32, "Images are resized and cropped to this "
                           "side (ImageNet: 224).")
  learning_rate: tuple = field((0.1,), "SGD learning rates to sweep (A.4: "
                                "0.05, 0.1, 0.2).")
  weight_decay: tuple = field((1e-4,), "Weight decays to sweep (A.4: 1e-5 "
                               "to 1e-2, logarithmically).")
  dropout: tuple = field((0.0,), "Dropout rates before the classifier to "
                          "sweep (A.4: 0 to 1).")
  batch_size: tuple = field((64,), "Global batch sizes to sweep.")
  augment: tuple = field(
      ("full",), "Augmentations to sweep: full = the per-patch ones below "
      "applied to the whole image, plus crop and flip; crop_flip = random "
      "crop and flip only.", AUGMENTS)
  momentum: float = field(0.9, "SGD momentum.")

  @property
  def method(self):
    return "supervised"

  def validate(self):
    super().validate()

    def text(name):
      return f"--{name}={','.join(f'{v:g}' for v in getattr(self, name))}"

    for name in ("learning_rate", "batch_size"):
      if min(getattr(self, name)) <= 0:
        raise ValueError(f"{text(name)}; must be > 0")
    if min(self.weight_decay) < 0:
      raise ValueError(f"{text('weight_decay')}; must be >= 0")
    if not all(0 <= d < 1 for d in self.dropout):
      raise ValueError(f"{text('dropout')}; allowed: 0 <= dropout < 1")
    if self.image_size <= 0:
      raise ValueError(f"--image_size={self.image_size}; must be > 0")
    if not 0 <= self.momentum < 1:
      raise ValueError(f"--momentum={self.momentum}; allowed: "
                       "0 <= momentum < 1")
    self.validate_augment()
    return self
