"""How a run uses its devices: --strategy -> tf.distribute strategy,
--mixed_precision -> Keras dtype policy, and which worker writes."""

import keras
import tensorflow as tf

STRATEGIES = ("default", "mirrored", "multi_worker", "tpu")


def make_strategy(name, tpu=""):
  """Returns the strategy named by `--strategy` (TPU address from `--tpu`)."""
  if name == "default":
    return tf.distribute.get_strategy()
  if name == "mirrored":
    return tf.distribute.MirroredStrategy()
  if name == "multi_worker":
    return tf.distribute.MultiWorkerMirroredStrategy()
  if name == "tpu":
    resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu)
    tf.config.experimental_connect_to_cluster(resolver)
    tf.tpu.experimental.initialize_tpu_system(resolver)
    return tf.distribute.TPUStrategy(resolver)
  raise ValueError(f"strategy={name!r}; allowed: {', '.join(STRATEGIES)}")


def set_precision(mixed_precision):
  """Sets Keras's global dtype policy from `--mixed_precision`: none ->
  float32, else mixed_<dtype> (float32 variables, <dtype> compute)."""
  keras.mixed_precision.set_global_policy(
      "float32" if mixed_precision == "none" else f"mixed_{mixed_precision}")


def is_chief(strategy):
  """Only the chief writes checkpoints, summaries and exports."""
  resolver = getattr(strategy, "cluster_resolver", None)
  if resolver is None or not resolver.task_type:
    return True
  return (resolver.task_type == "chief"
          or (resolver.task_type == "worker" and resolver.task_id == 0
              and "chief" not in resolver.cluster_spec().as_dict()))


def summary_writer(strategy, logdir):
  """A TensorBoard writer into `logdir` on the chief, a no-op writer on the
  other workers."""
  if is_chief(strategy):
    return tf.summary.create_file_writer(logdir)
  return tf.summary.create_noop_writer()
