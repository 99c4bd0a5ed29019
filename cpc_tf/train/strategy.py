"""Flag value -> tf.distribute strategy."""

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


def is_chief(strategy):
  """Only the chief writes checkpoints, summaries and exports."""
  resolver = getattr(strategy, "cluster_resolver", None)
  if resolver is None or not resolver.task_type:
    return True
  return (resolver.task_type == "chief"
          or (resolver.task_type == "worker" and resolver.task_id == 0
              and "chief" not in resolver.cluster_spec().as_dict()))
