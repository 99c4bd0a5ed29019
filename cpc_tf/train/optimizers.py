"""Learning-rate schedules and optimizers (§4.1, §2.2, A.3-A.4)."""

import keras
import tensorflow as tf


def learning_rate_schedule(peak, train_steps, warmup_steps=0,
                           schedule="cosine"):
  """Linear warm-up to `peak`, then constant or cosine decay to 0."""
  warmup = min(warmup_steps, train_steps - 1)
  return keras.optimizers.schedules.CosineDecay(
      initial_learning_rate=0.0 if warmup else peak,
      decay_steps=train_steps - warmup,
      alpha=1.0 if schedule == "constant" else 0.0,
      warmup_target=peak if warmup else None, warmup_steps=warmup)


class FusedAdam(keras.optimizers.Adam):
  """`keras.optimizers.Adam` (same math, slots and checkpoints) whose update
  of each variable is TensorFlow's fused `ResourceApplyAdam` kernel: one
  multi-threaded op per variable instead of about ten element-wise ones
  (Keras 3 has no fused Adam; measured by cpc_tf.benchmark)."""

  def update_step(self, gradient, variable, learning_rate):
    if self.amsgrad:
      return super().update_step(gradient, variable, learning_rate)
    dtype = variable.dtype
    step = tf.cast(self.iterations + 1, dtype)
    index = self._get_variable_index(variable)
    beta_1 = tf.cast(self.beta_1, dtype)
    beta_2 = tf.cast(self.beta_2, dtype)
    tf.raw_ops.ResourceApplyAdam(
        var=variable.handle, m=self._momentums[index].handle,
        v=self._velocities[index].handle,
        beta1_power=tf.pow(beta_1, step), beta2_power=tf.pow(beta_2, step),
        lr=tf.cast(learning_rate, dtype), beta1=beta_1, beta2=beta_2,
        epsilon=tf.cast(self.epsilon, dtype),
        grad=tf.cast(gradient, dtype))


class EncoderScaledAdam(FusedAdam):
  """Adam whose steps on the encoder's variables use `encoder_scale` times
  the learning rate: fine-tuning keeps f_theta close to the CPC solution
  with "a smaller learning rate" (§2.2)."""

  def __init__(self, encoder_variables, encoder_scale, **kwargs):
    super().__init__(**kwargs)
    self.encoder_scale = encoder_scale
    self._encoder_keys = {self._var_key(v) for v in encoder_variables}

  def update_step(self, gradient, variable, learning_rate):
    if self._var_key(variable) in self._encoder_keys:
      learning_rate = learning_rate * self.encoder_scale
    super().update_step(gradient, variable, learning_rate)


def sgd(learning_rate, weight_decay, momentum):
  """Nesterov SGD with decoupled weight decay; biases and norm offsets and
  scales are not decayed (A.4)."""
  optimizer = keras.optimizers.SGD(learning_rate=learning_rate,
                                   momentum=momentum, nesterov=True,
                                   weight_decay=weight_decay or None)
  optimizer.exclude_from_weight_decay(var_names=["bias", "beta", "gamma"])
  return optimizer
