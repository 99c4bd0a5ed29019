r"""Pretrain CPC v2 (§4.1) with one absl command line.

  python -m cpc_tf.pretrain --flagfile=flags/demo_cpu.flags \
      --model_dir=runs/demo [--strategy=tpu --tpu=...] [--train_steps=...]

Every field of `cpc_tf.config.PretrainConfig` is a flag; bad values stop the
run before any work with a one-line message, as do a divergence and a failed
checkpoint write (`cpc_tf.errors`). At the end the encoder is exported to
`<model_dir>/export/<step>/` (`cpc_tf.export_lib`).
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")  # Keep TF's C++ logs quiet.

from absl import app
from absl import logging

from cpc_tf import config as config_lib
from cpc_tf import flag_utils

flag_utils.define_flags(config_lib.PretrainConfig)


def _load_pretrain():
  from cpc_tf.train import pretraining
  return pretraining.pretrain


def main(argv):
  config, metrics = flag_utils.run_main(argv, config_lib.PretrainConfig,
                                        _load_pretrain)
  logging.info("Final metrics: %s", metrics)
  print(f"checkpoints and TensorBoard events: {config.model_dir}")
  if config.export and metrics["step"] >= config.train_steps:
    print("encoder SavedModel: "
          f"{os.path.join(config.model_dir, 'export', str(metrics['step']))}")
  print(f"tensorboard --logdir {config.model_dir}")


if __name__ == "__main__":
  app.run(main)
