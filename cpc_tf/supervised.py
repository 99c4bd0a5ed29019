r"""The supervised baseline from pixels (A.4) with one command.

  python -m cpc_tf.supervised --architecture=tiny \
      --dataset=../shared/data/cifar10 --label_fraction=0.01 \
      --learning_rate=0.05,0.1,0.2 --weight_decay=1e-4,1e-3 \
      --model_dir=runs/eval/supervised_1pct

Trains a ResNet-v2 for every combination of the list flags, picks the one
best on the held-out validation part and tests only that one. Writes
Top-1/Top-5 and per-class accuracy to <model_dir>/results.json and
TensorBoard; rerunning resumes. Every field of
`cpc_tf.eval_config.SupervisedConfig` is a flag.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")  # Keep TF's C++ logs quiet.

from absl import app

from cpc_tf import eval_config
from cpc_tf import flag_utils

main = flag_utils.evaluation_binary(eval_config.SupervisedConfig, "cpc_tf.train.baseline")

if __name__ == "__main__":
  app.run(main)
