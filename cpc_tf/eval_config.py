"""Configurations of the evaluation binaries, one help string per field.

`EvalConfig` drives `cpc_tf.evaluate` (linear, efficient and fine-tuned
classification on CPC latents, §2.2, A.3) and `SupervisedConfig`
`cpc_tf.supervised` (the ResNet-from-pixels baseline of A.4, a sweep);
both share the labelled data and training-loop fields of `CommonConfig`.
Each config is saved as `config.json` in its `model_dir`.
"""

import dataclasses
import json

import tensorflow as tf

from cpc_tf import config as pretrain_config
from cpc_tf.data import pipeline
from cpc_tf import files
from cpc_tf import flag_utils
from cpc_tf.flag_utils import field
from cpc_tf.models import heads
from cpc_tf.models import resnet
from cpc_tf.train import strategy as strategy_lib

PROTOCOLS = ("linear", "efficient", "finetune")
SCHEDULES = ("constant", "cosine")
AUGMENTS = ("full", "crop_flip")


def _pretraining_field(name):
  """The pretraining flag `name`, same default and help."""
  same = pretrain_config.PretrainConfig.__dataclass_fields__[name]
  return field(same.default, same.metadata["help"])


@dataclasses.dataclass
class CommonConfig:
  """Labelled data, model selection and the training loop."""
  model_dir: str = field("", "Where checkpoints, TensorBoard events and "
                          "results.json go; an interrupted run there resumes.")
  dataset: str = field(
      "data/cifar10_demo", "Labelled data set: a TFDS name (imagenet2012, "
      "imagenet2012_subset/1pct or /10pct with --label_fraction=1, cifar10, "
      "...), a folder of class sub-folders of images, or an .npz file / "
      "folder of <split>.npz.")
  data_dir: str = _pretraining_field("data_dir")
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
  train_steps: int = field(1000, "Optimizer steps (at most).")
  warmup_steps: int = field(0, "Linear learning-rate warm-up steps.")
  schedule: str = field("cosine", "Learning rate after warm-up: constant, "
                         "or cosine decay to 0 at --train_steps.", SCHEDULES)
  eval_every: int = field(100, "Validate (and checkpoint) every N steps.")
  patience: int = field(0, "Stop after this many validations without "
                         "improvement; 0 never stops early. The best "
                         "validated weights are tested either way.")
  steps_per_loop: int = field(20, "Optimizer steps per tf.function call.")
  summary_every: int = field(20, "Write TensorBoard scalars every N steps.")
  keep_checkpoints: int = field(2, "Checkpoints kept (besides the best).")
  strategy: str = field("default", "tf.distribute strategy.",
                         strategy_lib.STRATEGIES)
  tpu: str = field("", "TPU name or grpc:// address (--strategy=tpu).")
  mixed_precision: str = field("none", "Mixed precision compute dtype.",
                                pretrain_config.MIXED_PRECISION)
  cache_images: str = field(
      "auto", "Keep decoded images in memory: auto = if one host's share "
      f"fits in {pipeline.CACHE_MEMORY_FRACTION:g} of the available memory.",
      pipeline.CACHE_CHOICES)
  seed: int = field(0, "Seed of initialisation, data order and "
                     "augmentation.")

  def validate(self):
    """Raises ValueError naming the first bad value and what is allowed."""
    flag_utils.check_choices(self)
    if not self.model_dir:
      raise ValueError("--model_dir is required")
    if not 0 < self.label_fraction <= 1:
      raise ValueError(f"--label_fraction={self.label_fraction}; allowed: "
                       "0 < label_fraction <= 1")
    if (self.dataset.startswith("imagenet2012_subset/") and
        self.label_fraction != 1 and not self.images_per_class):
      raise ValueError(f"--label_fraction={self.label_fraction} with "
                       f"--dataset={self.dataset}; allowed: 1 (the TFDS "
                       "subset is the labelled set)")
    flag_utils.check_positive(self, ("images_per_class",
                                     "validation_per_class", "warmup_steps",
                                     "patience"), allow_zero=True)
    flag_utils.check_positive(self, ("eval_batch_size", "train_steps",
                                     "eval_every", "steps_per_loop",
                                     "summary_every", "keep_checkpoints"))
    return self

  def subset_name(self):
    """'1%', '10%' or '25/class', for tables and logs."""
    if self.images_per_class:
      return f"{self.images_per_class}/class"
    return f"{100 * self.label_fraction:g}%"

  def save(self, path):
    """Writes the config as JSON to `path` (any tf.io.gfile path)."""
    files.write_atomic(path, json.dumps(dataclasses.asdict(self), indent=2,
                                        sort_keys=True))

  def differences(self, path):
    """Fields whose value differs from the config saved at `path`."""
    with tf.io.gfile.GFile(path) as f:
      saved = json.load(f)
    now = json.loads(json.dumps(dataclasses.asdict(self)))
    return sorted(k for k in now if saved.get(k) != now[k])


@dataclasses.dataclass
class EvalConfig(CommonConfig):
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
                     "paper = 4096-d maps, 1024-d bottlenecks.",
                     tuple(heads.HEAD_PRESETS))
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
    if not self.encoder:
      raise ValueError("--encoder is required")
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
class SupervisedConfig(CommonConfig):
  """A ResNet-v2 trained on pixels (A.4); list flags are swept, and the
  combination best on validation is tested."""
  architecture: tuple = field(("tiny",), "ResNet-v2 presets to sweep "
                               "(A.4: resnet50, resnet101, resnet152, "
                               "resnet200).", tuple(resnet.PRESETS))
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
  color_drop: bool = _pretraining_field("color_drop")
  auto_augment: bool = _pretraining_field("auto_augment")
  elastic: bool = _pretraining_field("elastic")
  color_jitter: bool = _pretraining_field("color_jitter")
  jitter: int = _pretraining_field("jitter")
  flip: bool = _pretraining_field("flip")

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
    return self
