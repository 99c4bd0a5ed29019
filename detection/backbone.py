"""The exported CPC encoder as a Model Garden backbone (§4.3).

§4.3 puts Faster R-CNN on top of the CPC representation f_theta, first with
f_theta fixed, then fine-tuned end to end. The encoder arrives only as the
SavedModel written by `python -m cpc_tf.export` (an export base of
numbered versions, `<base>/<step>/`, whose newest is used, or one version
directory); its `features` endpoint maps float32 images in [0, 1] (sides
multiples of 32) to the Model Garden levels {"2": stride 4, "3": 8,
"4": 16, "5": 32}, `same` padding, which is the multi-level input Model
Garden's decoders (FPN) expect.

Backbone type `cpc_savedmodel` (registered with Model Garden's backbone
factory on import):
  frozen      `task.freeze_backbone: true`: Model Garden sets the backbone
              non-trainable; no encoder variable is updated and no gradient
              is computed through the encoder.
  fine-tuned  the default: every encoder variable is a trainable weight of
              the backbone and is updated with the rest of the detector.
"""

import dataclasses
import os
from typing import Optional

import tensorflow as tf
import tf_keras

from official.modeling import hyperparams
from official.vision.configs import backbones as backbones_cfg
from official.vision.modeling.backbones import factory
from official.vision.ops import preprocess_ops

FEATURE_STRIDES = {"2": 4, "3": 8, "4": 16, "5": 32}
BACKBONE_TYPE = "cpc_savedmodel"


@dataclasses.dataclass
class CpcSavedModel(hyperparams.Config):
  """Config of the `cpc_savedmodel` backbone.

  Attributes:
    export_dir: the encoder SavedModel (`python -m cpc_tf.export`): an
      export base (its newest version) or a version directory.
    gradient_multiplier: scales the gradients reaching the encoder variables
      when fine-tuning. With SGD (momentum or not) this is exactly a learning
      rate of `multiplier * lr` for f_theta, the "smaller learning rate" of
      §2.2 that keeps it near the CPC solution; adaptive optimizers (Adam,
      LAMB) largely undo a constant gradient scale.
  """
  export_dir: str = ""
  gradient_multiplier: float = 1.0


@dataclasses.dataclass
class Backbone(backbones_cfg.Backbone):
  """Model Garden's backbone choice, plus `cpc_savedmodel`."""
  cpc_savedmodel: CpcSavedModel = dataclasses.field(
      default_factory=CpcSavedModel)


def saved_model_dir(export_dir):
  """`export_dir` if it holds a SavedModel, else the newest version of the
  export base `export_dir`: the largest numbered subdirectory holding one
  (TF Serving's layout)."""
  if tf.io.gfile.exists(os.path.join(export_dir, "saved_model.pb")):
    return export_dir
  found = tf.io.gfile.glob(os.path.join(export_dir, "*", "saved_model.pb"))
  names = [os.path.basename(os.path.dirname(f)) for f in found]
  versions = [int(name) for name in names if name.isdigit()]
  if not versions:
    raise ValueError(f"{BACKBONE_TYPE}: no SavedModel in {export_dir} nor in "
                     "a numbered version directory below it")
  return os.path.join(export_dir, str(max(versions)))


def _scale_gradient(x, multiplier):
  """Identity whose gradient is multiplied by `multiplier`."""

  @tf.custom_gradient
  def identity(y):
    return tf.identity(y), lambda dy: dy * multiplier

  return identity(x)


class EncoderFeatures(tf_keras.layers.Layer):
  """Model Garden-normalized images -> the encoder's {"2".."5"} maps.

  Model Garden's parsers normalize images with the ImageNet mean and
  standard deviation; the encoder expects [0, 1], so that is undone first.
  A tf_keras layer finds no weights inside a loaded SavedModel, so each
  encoder variable is registered explicitly (the ones the export marks
  trainable as trainable weights, the rest, e.g. BatchNorm statistics, as
  non-trainable ones): this is what makes fine-tuning update them, and
  `trainable = False` freeze them.
  """

  def __init__(self, export_dir, gradient_multiplier=1.0,
               kernel_regularizer=None, **kwargs):
    super().__init__(**kwargs)
    self._export_dir = export_dir
    self._gradient_multiplier = gradient_multiplier
    self._kernel_regularizer = tf_keras.regularizers.get(kernel_regularizer)
    self._encoder = tf.saved_model.load(saved_model_dir(export_dir))
    # Attribute assignment is how tf_keras registers existing variables.
    self.encoder_trainable_variables = list(
        self._encoder.trainable_variables)
    self.encoder_non_trainable_variables = list(
        self._encoder.non_trainable_variables)
    if self._kernel_regularizer is not None:
      # Weight decay on the encoder's kernels (rank >= 2), as Model Garden
      # applies `losses.l2_weight_decay` to the kernels of its backbones.
      for variable in self.encoder_trainable_variables:
        if variable.shape.rank >= 2:
          self.add_loss(lambda v=variable: self._kernel_regularizer(v))
    self._mean = tf.constant(preprocess_ops.MEAN_NORM, tf.float32)
    self._stddev = tf.constant(preprocess_ops.STDDEV_NORM, tf.float32)

  def call(self, images):
    height, width = images.shape[1], images.shape[2]
    for side in (height, width):
      if side is not None and side % 32:
        raise ValueError(f"cpc_savedmodel: image sides must be multiples of "
                         f"32 (the coarsest stride), got {height}x{width}")
    images = tf.cast(images, tf.float32) * self._stddev + self._mean
    features = self._encoder.features(images)
    outputs = {}
    for level, stride in FEATURE_STRIDES.items():
      feature = features[level]
      if not self.trainable:
        feature = tf.stop_gradient(feature)
      elif self._gradient_multiplier != 1.0:
        feature = _scale_gradient(feature, self._gradient_multiplier)
      # The endpoint's spatial shapes are dynamic; the decoders want them
      # static (same padding: side / stride exactly).
      feature = tf.ensure_shape(feature, [
          None, None if height is None else height // stride,
          None if width is None else width // stride, feature.shape[-1]])
      outputs[level] = tf.cast(feature, self.compute_dtype)
    return outputs

  def get_config(self):
    config = super().get_config()
    config.update(export_dir=self._export_dir,
                  gradient_multiplier=self._gradient_multiplier,
                  kernel_regularizer=tf_keras.regularizers.serialize(
                      self._kernel_regularizer))
    return config


class CpcSavedModelBackbone(tf_keras.Model):
  """Functional tf_keras backbone: images -> {"2".."5"} feature maps."""

  def __init__(self, export_dir,
               input_specs=tf_keras.layers.InputSpec(
                   shape=[None, None, None, 3]),
               gradient_multiplier=1.0, kernel_regularizer=None, **kwargs):
    inputs = tf_keras.Input(shape=input_specs.shape[1:])
    encoder = EncoderFeatures(export_dir, gradient_multiplier,
                              kernel_regularizer, name="cpc_encoder")
    endpoints = encoder(inputs)
    super().__init__(inputs=inputs, outputs=endpoints, **kwargs)
    self._output_specs = {level: endpoints[level].get_shape()
                          for level in endpoints}
    self._config_dict = dict(
        export_dir=export_dir, gradient_multiplier=gradient_multiplier,
        kernel_regularizer=tf_keras.regularizers.serialize(kernel_regularizer))
    self.encoder = encoder

  @property
  def output_specs(self):
    """{level: TensorShape} of the outputs, what decoders are built from."""
    return self._output_specs

  def get_config(self):
    return dict(self._config_dict)

  @classmethod
  def from_config(cls, config, custom_objects=None):
    return cls(**config)


@factory.register_backbone_builder(BACKBONE_TYPE)
def build_cpc_savedmodel(
    input_specs: tf_keras.layers.InputSpec,
    backbone_config: hyperparams.Config,
    norm_activation_config: hyperparams.Config,
    l2_regularizer: Optional[tf_keras.regularizers.Regularizer] = None
) -> tf_keras.Model:
  """Model Garden builder for `backbone.type: cpc_savedmodel`."""
  # The encoder brings its own normalization (LayerNorm, §4.1).
  del norm_activation_config
  if backbone_config.type != BACKBONE_TYPE:
    raise ValueError(f"backbone type {backbone_config.type!r} given to the "
                     f"{BACKBONE_TYPE} builder")
  config = backbone_config.get()
  if not config.export_dir:
    raise ValueError("backbone.cpc_savedmodel.export_dir is empty: pass "
                     "--encoder=<export base or version dir> (python -m "
                     "cpc_tf.export)")
  return CpcSavedModelBackbone(
      config.export_dir, input_specs=input_specs,
      gradient_multiplier=config.gradient_multiplier,
      kernel_regularizer=l2_regularizer)
