r"""Faster R-CNN on VOC from an exported CPC encoder (§4.3), Model Garden's
trainer.

  python -m detection.train --experiment=cpc_faster_rcnn_voc \
      --encoder=runs/demo/export --mode=train_and_eval --model_dir=runs/det \
      [--config_file=detection/configs/voc_subset_cpu.yaml] \
      [--params_override='task.freeze_backbone=true,trainer.train_steps=10']

Every Model Garden flag and config option applies (modes, strategies,
mixed precision, schedules, FPN or not, ...): this is Model Garden's vision
driver (official.core.train_lib.run_experiment) for the experiment
registered by detection.experiment, plus `--encoder`, which sets
`task.model.backbone.cpc_savedmodel.export_dir` (over the config files).
Each evaluation (VOC07 mAP and AP per class, step) is also recorded in
<model_dir>/eval_metrics.jsonl.
"""

import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")  # Keep TF's C++ logs quiet.

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags
import numpy as np
import tensorflow as tf

from detection import experiment  # pylint: disable=unused-import  # Registers.
from official.common import distribute_utils
from official.common import flags as tfm_flags
from official.core import task_factory
from official.core import train_lib
from official.core import train_utils
from official.modeling import performance

METRICS_FILE = "eval_metrics.jsonl"


class WriteMetrics:
  """Orbit eval action: {"step": ..., <metric>: value} of every evaluation
  so far, one JSON line each (scalars only; NaN for an undefined AP).

  The file is rewritten whole each time, through a temporary file and a
  rename (tf.io.gfile: GCS has no append, and a "w" handle on some
  filesystems appends); a resumed run keeps the lines already there.
  """

  def __init__(self, path, global_step):
    self._path = path
    self._global_step = global_step
    self._lines = []
    if tf.io.gfile.exists(path):
      with tf.io.gfile.GFile(path) as f:
        self._lines = f.read().splitlines()

  def __call__(self, output):
    record = {"step": int(self._global_step.numpy())}
    for name, value in sorted(output.items()):
      value = np.asarray(value)
      if value.ndim == 0 and np.issubdtype(value.dtype, np.number):
        record[name] = value.item()
    self._lines.append(json.dumps(record))
    partial = self._path + ".partial"
    with tf.io.gfile.GFile(partial, "w") as f:
      f.write("\n".join(self._lines) + "\n")
    tf.io.gfile.rename(partial, self._path, overwrite=True)


def parse_params(flags_obj, encoder=None):
  """Experiment config from --experiment, --config_file, --params_override
  (Model Garden's order), then the encoder SavedModel if given."""
  params = train_utils.parse_configuration(flags_obj, lock_return=False,
                                           print_return=False)
  if encoder:
    params.override({"task": {"model": {"backbone": {
        "cpc_savedmodel": {"export_dir": encoder}}}}})
  params.validate()
  params.lock()
  return params


def run(params, model_dir, mode):
  """Model Garden's vision driver; returns run_experiment's (model, logs)."""
  if "train" in mode:
    train_utils.serialize_config(params, model_dir)
  if params.runtime.mixed_precision_dtype:
    performance.set_mixed_precision_policy(params.runtime.mixed_precision_dtype)
  strategy = distribute_utils.get_distribution_strategy(
      distribution_strategy=params.runtime.distribution_strategy,
      all_reduce_alg=params.runtime.all_reduce_alg,
      num_gpus=params.runtime.num_gpus,
      tpu_address=params.runtime.tpu)
  with strategy.scope():
    task = task_factory.get_task(params.task, logging_dir=model_dir)
    # Built here (as run_experiment would) to give the metrics file the step.
    trainer = train_utils.create_trainer(
        params, task, train="train" in mode, evaluate="eval" in mode,
        checkpoint_exporter=train_utils.maybe_create_best_ckpt_exporter(
            params, model_dir))
  tf.io.gfile.makedirs(model_dir)
  return train_lib.run_experiment(
      distribution_strategy=strategy, task=task, mode=mode, params=params,
      model_dir=model_dir, trainer=trainer,
      eval_actions=[WriteMetrics(os.path.join(model_dir, METRICS_FILE),
                                 trainer.global_step)])


def main(argv):
  del argv
  FLAGS = flags.FLAGS
  params = parse_params(FLAGS, FLAGS.encoder)
  run(params, FLAGS.model_dir, FLAGS.mode)


if __name__ == "__main__":
  tfm_flags.define_flags()
  flags.DEFINE_string("encoder", None, "Encoder export base (its newest "
                      "version) or version directory (python -m "
                      "cpc_tf.export); sets "
                      "task.model.backbone.cpc_savedmodel.export_dir.")
  flags.mark_flags_as_required(["experiment", "mode", "model_dir"])
  app.run(main)
