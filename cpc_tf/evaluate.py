r"""Evaluate a CPC encoder on labelled data (§2.2, A.3) with one command.

  python -m cpc_tf.evaluate --protocol=efficient --encoder=runs/cifar_long \
      --dataset=../shared/data/cifar10 --label_fraction=0.01 \
      --model_dir=runs/eval/cpc_efficient_1pct [--random_init]

--protocol: linear (frozen encoder, BatchNorm + 1x1 conv + mean pool, A.3),
efficient (frozen encoder, 11-block ResNet head) or finetune (encoder and
head together from the efficient solution: --init_from, or a first phase
in <model_dir>/fixed). Writes Top-1/Top-5 and per-class accuracy to
<model_dir>/results.json and TensorBoard; rerunning resumes. Every field of
`cpc_tf.eval_config.EvalConfig` is a flag.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")  # Keep TF's C++ logs quiet.

from absl import app

from cpc_tf import eval_config
from cpc_tf import flag_utils

main = flag_utils.evaluation_binary(eval_config.EvalConfig, "cpc_tf.train.evaluation")

if __name__ == "__main__":
  app.run(main)
