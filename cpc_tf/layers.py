"""The appendix's two networks as Keras layers, readable side by side with it.

`PixelCNN` is the context network of appendix A.2 (pixelCNN pseudocode) and
`CPCLoss` is its `CPC` function (InfoNCE, paper §2.1 eq. 1). Latents are
`[B, H, W, D]`; predictions go top-down, from row r to row r + i + 1.
"""

import keras
import tensorflow as tf

from cpc_tf.ops import pointwise


class PixelCNN(keras.layers.Layer):
  """Five masked residual blocks; the context at row r sees only rows <= r.

  Each block (appendix A.2): 1x1 conv -> ReLU -> 1x3 conv -> pad one row on
  top -> 2x1 VALID conv -> ReLU -> 1x1 conv back to D, residual add; a final
  ReLU on the sum.
  """

  def __init__(self, hidden_dim=256, num_blocks=5, **kwargs):
    super().__init__(**kwargs)
    self.hidden_dim = hidden_dim
    self.num_blocks = num_blocks

  def build(self, input_shape):
    dim = int(input_shape[-1])
    self.blocks = []
    for b in range(self.num_blocks):
      block = [
          keras.layers.Conv2D(self.hidden_dim, (1, 1), name=f"block{b}_in"),
          keras.layers.Conv2D(self.hidden_dim, (1, 3), padding="same",
                              name=f"block{b}_row"),
          keras.layers.Conv2D(self.hidden_dim, (2, 1), padding="valid",
                              name=f"block{b}_up"),
          keras.layers.Conv2D(dim, (1, 1), name=f"block{b}_out"),
      ]
      shape = tuple(input_shape)
      block[0].build(shape)
      hidden = shape[:-1] + (self.hidden_dim,)
      block[1].build(hidden)
      block[2].build(hidden)
      block[3].build(hidden)
      self.blocks.append(block)
    super().build(input_shape)

  def call(self, latents):
    cres = latents
    for conv_in, conv_row, conv_up, conv_out in self.blocks:
      # The 1x1 convs run as one matmul over all positions (same weights).
      c = tf.nn.relu(pointwise(conv_in, cres))
      c = conv_row(c)
      c = tf.pad(c, [[0, 0], [1, 0], [0, 0], [0, 0]])
      c = tf.nn.relu(conv_up(c))
      cres = cres + pointwise(conv_out, c)
    return tf.nn.relu(cres)

  def get_config(self):
    return {**super().get_config(), "hidden_dim": self.hidden_dim,
            "num_blocks": self.num_blocks}


class CPCLoss(keras.layers.Layer):
  """InfoNCE over a latent grid, top-down (appendix A.2 `CPC`).

  Calling it on latents `[B, H, W, D]` returns the scalar loss: for each step
  i in range(steps_to_ignore, steps_to_predict), the softmax cross-entropy
  averaged over the B*(H-i-1)*W predictions, summed over steps. Every
  location of every image in the batch is a candidate target; with
  `cross_replica_negatives` the targets of all replicas are gathered, so the
  negatives come from the global batch.
  """

  def __init__(self, target_dim=64, emb_scale=0.1, steps_to_ignore=2,
               steps_to_predict=3, hidden_dim=256,
               cross_replica_negatives=False, **kwargs):
    super().__init__(**kwargs)
    if steps_to_predict <= steps_to_ignore:
      raise ValueError(
          f"steps_to_predict={steps_to_predict} must exceed "
          f"steps_to_ignore={steps_to_ignore}")
    self.target_dim = target_dim
    self.emb_scale = emb_scale
    self.steps_to_ignore = steps_to_ignore
    self.steps_to_predict = steps_to_predict
    self.hidden_dim = hidden_dim
    self.cross_replica_negatives = cross_replica_negatives
    self.context_network = PixelCNN(hidden_dim, name="context_network")
    self.target_projection = keras.layers.Conv2D(
        target_dim, (1, 1), name="target_projection")
    self.prediction_projections = [
        keras.layers.Conv2D(target_dim, (1, 1), name=f"prediction_step{i}")
        for i in range(steps_to_ignore, steps_to_predict)]

  def build(self, input_shape):
    shape = tuple(input_shape)
    self.context_network.build(shape)
    self.target_projection.build(shape)
    for projection in self.prediction_projections:
      projection.build(shape)
    super().build(input_shape)

  def call(self, latents):
    return self.loss_and_accuracy(latents)[0]

  def loss_and_accuracy(self, latents):
    """Returns (loss, accuracy): accuracy is the share of predictions whose
    highest logit is the positive, averaged over steps."""
    if latents.shape[1] <= self.steps_to_predict:
      raise ValueError(
          f"a latent grid of {latents.shape[1]} rows is too short to predict "
          f"{self.steps_to_predict} rows ahead; need more than "
          f"steps_to_predict={self.steps_to_predict} rows")
    if not self.built:
      self.build(latents.shape)
    latents = tf.cast(latents, self.compute_dtype)
    context = self.context_network(latents)
    targets = pointwise(self.target_projection, latents)
    batch_dim, col_dim, row_dim = (tf.shape(targets)[0], targets.shape[1],
                                   targets.shape[2])
    targets = tf.cast(tf.reshape(targets, [-1, self.target_dim]), tf.float32)
    label_offset = 0
    if self.cross_replica_negatives:
      replica = tf.distribute.get_replica_context()
      if replica is not None and replica.num_replicas_in_sync > 1:
        # Replicas may hold uneven batches: offset by the images before ours.
        sizes = replica.all_gather(tf.reshape(batch_dim, [1]), axis=0)
        replica_id = tf.cast(replica.replica_id_in_sync_group, tf.int32)
        label_offset = (tf.reduce_sum(sizes[:replica_id]) * col_dim
                        * row_dim)
        targets = replica.all_gather(targets, axis=0)
    loss = 0.0
    accuracy = 0.0
    for i, projection in zip(range(self.steps_to_ignore,
                                   self.steps_to_predict),
                             self.prediction_projections):
      col_dim_i = col_dim - i - 1
      total_elements = batch_dim * col_dim_i * row_dim
      # Only the rows that have a target i + 1 rows below are projected.
      # tf.slice: its gradient (a Pad) is much cheaper than StridedSlice's.
      preds_i = pointwise(projection, tf.slice(
          context, [0, 0, 0, 0], [-1, col_dim_i, -1, -1]))
      preds_i = preds_i * self.emb_scale
      preds_i = tf.cast(tf.reshape(preds_i, [-1, self.target_dim]),
                        tf.float32)
      logits = tf.matmul(preds_i, targets, transpose_b=True)
      element = tf.range(total_elements)
      b = element // (col_dim_i * row_dim)
      col = element % (col_dim_i * row_dim)
      labels = (label_offset + b * col_dim * row_dim + (i + 1) * row_dim
                + col)
      loss += tf.reduce_mean(
          tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits))
      accuracy += tf.reduce_mean(tf.cast(
          tf.equal(tf.argmax(logits, axis=-1, output_type=tf.int32), labels),
          tf.float32))
    return loss, accuracy / len(self.prediction_projections)

  def get_config(self):
    return {**super().get_config(), "target_dim": self.target_dim,
            "emb_scale": self.emb_scale,
            "steps_to_ignore": self.steps_to_ignore,
            "steps_to_predict": self.steps_to_predict,
            "hidden_dim": self.hidden_dim,
            "cross_replica_negatives": self.cross_replica_negatives}
