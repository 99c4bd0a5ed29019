"""Pretraining end to end: presets train, loss drops, resume is exact."""

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from cpc_tf import config as config_lib
from cpc_tf.models import resnet
from cpc_tf.train import pretraining

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO_DATA = os.path.join(ROOT, "data", "cifar10_demo")
NO_AUGMENT = dict(color_drop=False, auto_augment=False, elastic=False,
                  color_jitter=False, jitter=0, flip=False)


def small_config(model_dir, **overrides):
  values = dict(model_dir=str(model_dir), dataset=DEMO_DATA, train_steps=4,
                batch_size=4, steps_per_loop=2, checkpoint_every=2,
                summary_every=2, warmup_steps=1, export=False,
                directions=1, **NO_AUGMENT)
  values.update(overrides)
  return config_lib.PretrainConfig(**values)


def checkpoint_tensors(model_dir):
  reader = tf.train.load_checkpoint(model_dir)
  return {name: reader.get_tensor(name)
          for name in reader.get_variable_to_shape_map()
          if name.startswith(("model/", "optimizer/", "step/"))}


@pytest.mark.parametrize("preset", sorted(resnet.PRESETS))
def test_every_preset_runs_a_training_step(tmp_path, preset):
  small = preset == "tiny"
  config = small_config(
      tmp_path, encoder=preset, train_steps=1, batch_size=2,
      image_size=32 if small else 64, patch_size=8 if small else 32,
      patch_stride=4 if small else 16, steps_to_ignore=0,
      steps_to_predict=1 if not small else 3, context_dim=16, target_dim=8,
      directions=2, steps_per_loop=1, checkpoint_every=1, summary_every=1)
  metrics = pretraining.pretrain(config)
  assert metrics["step"] == 1
  assert np.isfinite(metrics["loss"])
  assert tf.train.latest_checkpoint(str(tmp_path)).endswith("ckpt-1")


def test_short_run_learns_well_below_chance(tmp_path):
  # Negatives: every other location of every image in the batch. The loss
  # starts near log(B * rows * cols) and must fall well below it.
  # Predicting the next two rows (i = 0, 1) learns fastest: a short run.
  config = small_config(tmp_path, train_steps=120, batch_size=16,
                        learning_rate=1e-3, warmup_steps=10,
                        steps_to_ignore=0, steps_to_predict=2,
                        steps_per_loop=20, checkpoint_every=60,
                        summary_every=20)
  chance = 2 * math.log(16 * config.grid_size ** 2)
  metrics = pretraining.pretrain(config)
  assert metrics["loss"] < 0.75 * chance, (metrics, chance)
  assert metrics["accuracy/top_down"] > 0.05


def test_resume_continues_exactly(tmp_path):
  straight = small_config(tmp_path / "straight", train_steps=6)
  pretraining.pretrain(straight)
  interrupted = small_config(tmp_path / "resumed", train_steps=2)
  pretraining.pretrain(interrupted)
  resumed = small_config(tmp_path / "resumed", train_steps=6)
  metrics = pretraining.pretrain(resumed)
  assert metrics["step"] == 6
  want = checkpoint_tensors(str(tmp_path / "straight"))
  got = checkpoint_tensors(str(tmp_path / "resumed"))
  assert want.keys() == got.keys() and len(want) > 10
  for name in want:
    np.testing.assert_allclose(got[name], want[name], rtol=1e-5, atol=1e-6,
                               err_msg=name)


def test_summaries_and_config_are_written(tmp_path):
  config = small_config(tmp_path, train_steps=2, directions=2)
  pretraining.pretrain(config)
  saved = json.load(open(tmp_path / "config.json"))
  assert saved["directions"] == 2
  tags = set()
  for name in os.listdir(tmp_path):
    if name.startswith("events.out.tfevents"):
      for event in tf.compat.v1.train.summary_iterator(str(tmp_path / name)):
        tags.update(v.tag for v in event.summary.value)
  for tag in ("loss", "loss/top_down", "loss/bottom_up",
              "accuracy/top_down", "learning_rate", "images_per_sec",
              "patches"):
    assert tag in tags, tags


@pytest.mark.parametrize("args, message", [
    (["--patch_size=40"], "patch"),
    (["--patch_stride=0"], "stride"),
    (["--steps_to_ignore=3", "--steps_to_predict=3"], "steps_to_predict"),
    (["--encoder=resnet9"], "encoder"),
    (["--strategy=gpu"], "strategy"),
    (["--directions=3"], "directions"),
    (["--dataset=no_such_dataset_or_path"], "no_such_dataset_or_path"),
    (["--model_dir=/proc/cpc_tf_run"], "model_dir"),
])
def test_bad_flags_fail_with_one_line(tmp_path, args, message):
  result = subprocess.run(
      [sys.executable, "-m", "cpc_tf.pretrain",
       "--flagfile=flags/demo_cpu.flags", f"--model_dir={tmp_path}", *args],
      cwd=ROOT, capture_output=True, text=True, timeout=120)
  assert result.returncode != 0
  # One line naming the flag (absl adds a line pointing at --helpshort).
  lines = [l for l in result.stderr.strip().splitlines()
           if l.startswith(("error:", "FATAL"))]
  assert len(lines) == 1 and message in lines[0], result.stderr
  assert "Traceback" not in result.stderr, result.stderr
  assert not os.path.exists(tmp_path / "checkpoint")


def test_checkpoint_holds_every_encoder_variable(tmp_path):
  # With BatchNorm (the LN ablation) the moving statistics are not trained
  # by the optimizer: they must still be saved and restored.
  from cpc_tf import export  # pylint: disable=g-import-not-at-top
  config = small_config(tmp_path, train_steps=3, norm="batch")
  pretraining.pretrain(config)
  encoder, _ = export.encoder_from_checkpoint(str(tmp_path))
  reader = tf.train.load_checkpoint(str(tmp_path))
  moving = 0
  for variable in encoder.variables:
    key = "model/" + variable.path.split("/", 1)[1].replace("/", ".S")
    saved = reader.get_tensor(key + "/.ATTRIBUTES/VARIABLE_VALUE")
    np.testing.assert_array_equal(variable.numpy(), saved, err_msg=key)
    moving += "moving_mean" in key
  assert moving > 0
  untrained, _ = export.encoder_from_checkpoint(str(tmp_path), untrained=True)
  assert any(not np.array_equal(a.numpy(), b.numpy()) for a, b in
             zip(encoder.trainable_variables, untrained.trainable_variables))
