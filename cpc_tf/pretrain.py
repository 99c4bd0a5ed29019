r"""Pretrain CPC v2 (§4.1) with one absl command line.

  python -m cpc_tf.pretrain --flagfile=flags/demo_cpu.flags \
      --model_dir=runs/demo [--strategy=tpu --tpu=...] [--train_steps=...]

Every field of `cpc_tf.config.PretrainConfig` is a flag; bad values stop the
run before any work with a one-line message.
"""

import dataclasses
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")  # Keep TF's C++ logs quiet.

from absl import app
from absl import flags
from absl import logging

from cpc_tf import config as config_lib

FLAGS = flags.FLAGS


def define_flags(config_cls):
  """One absl flag per dataclass field, with its default and help."""
  for field in dataclasses.fields(config_cls):
    name, default = field.name, field.default
    help_text = field.metadata["help"]
    choices = field.metadata["choices"]
    if choices and isinstance(default, str):
      flags.DEFINE_enum(name, default, choices, help_text)
    elif isinstance(default, bool):
      flags.DEFINE_bool(name, default, help_text)
    elif isinstance(default, int):
      flags.DEFINE_integer(name, default, help_text)
    elif isinstance(default, float):
      flags.DEFINE_float(name, default, help_text)
    else:
      flags.DEFINE_string(name, default, help_text)


def config_from_flags(config_cls):
  return config_cls(**{f.name: FLAGS[f.name].value
                       for f in dataclasses.fields(config_cls)})


define_flags(config_lib.PretrainConfig)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  try:
    config = config_from_flags(config_lib.PretrainConfig).validate()
  except ValueError as e:
    sys.exit(f"error: {e}")
  from cpc_tf.train import pretraining  # Heavy: TensorFlow, after checks.
  try:
    metrics = pretraining.pretrain(config)
  except ValueError as e:  # User errors (data, paths) found while building.
    if FLAGS.verbosity > 0:  # --verbosity=1 shows the traceback.
      raise
    sys.exit(f"error: {e}")
  logging.info("Final metrics: %s", metrics)
  print(f"checkpoints and TensorBoard events: {config.model_dir}\n"
        f"encoder SavedModel: {config.model_dir}/export\n"
        f"tensorboard --logdir {config.model_dir}")


if __name__ == "__main__":
  app.run(main)
