"""The CPC model: encoder, prediction directions and their losses (§2.1, §4.1).

One top-down `CPCLoss` serves every direction: the latent grid is rotated so
that the wanted direction becomes top-down, and each direction has its own
context network and projections ("BU": +bottom-up, "HP": +horizontal).
"""

import keras
import tensorflow as tf

from cpc_tf import layers
from cpc_tf.models import resnet

# Direction name -> number of counter-clockwise quarter turns of the grid
# that make it top-down.
DIRECTIONS = {
    1: (("top_down", 0),),
    2: (("top_down", 0), ("bottom_up", 2)),
    4: (("top_down", 0), ("bottom_up", 2), ("left_right", 3),
        ("right_left", 1)),
}


def _rot90(latents, turns):
  """`tf.image.rot90(latents, k=turns)` for a Python int `turns`, built as
  the transpose/reverse it selects at run time, without its `tf.case` and
  asserts (control flow in the step graph) and keeping the static shape."""
  turns %= 4
  if turns == 1:
    return tf.transpose(tf.reverse(latents, [2]), [0, 2, 1, 3])
  if turns == 2:
    return tf.reverse(latents, [1, 2])
  if turns == 3:
    return tf.reverse(tf.transpose(latents, [0, 2, 1, 3]), [2])
  return latents


class CPCModel(keras.Model):
  """Encoder f_theta plus one CPCLoss per prediction direction.

  Called on patches `[B, rows, cols, p, p, 3]`, returns a dict with the
  total `loss` (sum over directions) and `loss/<dir>`, `accuracy/<dir>`.
  """

  def __init__(self, architecture="tiny", norm="layer", directions=1,
               target_dim=64, emb_scale=0.1, steps_to_ignore=2,
               steps_to_predict=3, context_dim=256,
               cross_replica_negatives=False, **kwargs):
    super().__init__(**kwargs)
    if directions not in DIRECTIONS:
      raise ValueError(f"directions={directions}; allowed: 1, 2, 4")
    self.encoder = resnet.Encoder(architecture, norm=norm, name="encoder")
    self.directions = DIRECTIONS[directions]
    self.cpc_losses = [
        layers.CPCLoss(target_dim=target_dim, emb_scale=emb_scale,
                       steps_to_ignore=steps_to_ignore,
                       steps_to_predict=steps_to_predict,
                       hidden_dim=context_dim,
                       cross_replica_negatives=cross_replica_negatives,
                       name=f"cpc_{name}")
        for name, _ in self.directions]

  def call(self, patches, training=False):
    latents = self.encoder(patches, training=training)
    outputs = {}
    total = 0.0
    for (name, turns), cpc_loss in zip(self.directions, self.cpc_losses):
      rotated = _rot90(latents, turns)
      loss, accuracy = cpc_loss.loss_and_accuracy(rotated)
      outputs[f"loss/{name}"] = loss
      outputs[f"accuracy/{name}"] = accuracy
      total += loss
    outputs["loss"] = total
    return outputs


def build_model(config):
  """The CPC model described by a `PretrainConfig`, built on one image."""
  model = CPCModel(
      architecture=config.architecture, norm=config.norm,
      directions=config.directions, target_dim=config.target_dim,
      emb_scale=config.emb_scale,
      steps_to_ignore=config.steps_to_ignore,
      steps_to_predict=config.steps_to_predict,
      context_dim=config.context_dim,
      cross_replica_negatives=config.cross_replica_negatives)
  rows = config.grid_size
  model(tf.zeros([1, rows, rows, config.patch_size, config.patch_size, 3]))
  return model
