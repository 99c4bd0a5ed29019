"""Pretraining end to end: presets train, loss drops, resume is exact;
bad flags are rejected before any work."""

import json
import math
import os

from absl import flags
import numpy as np
import pytest
import tensorflow as tf

from conftest import flag_error
from conftest import parse_flags
from cpc_tf import config as config_lib
from cpc_tf.models import resnet
from cpc_tf.train import pretraining

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO_DATA = os.path.join(ROOT, "data", "cifar10_demo")
DEMO_FLAGS = f"--flagfile={os.path.join(ROOT, 'flags', 'demo_cpu.flags')}"
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
      tmp_path, architecture=preset, train_steps=1, batch_size=2,
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
    (["--patch_size=0"], "error: --patch_size=0; must be > 0"),
    (["--patch_size=40"], "error: patch_size=40 is larger than "
     "image_size=32; must be <= image_size"),
    (["--patch_stride=0"], "error: --patch_stride=0; must be > 0"),
    (["--image_size=34"], "error: image_size=34 is not tiled exactly by "
     "8-pixel patches at stride 4; use image_size = 8 + 4*k, e.g. 32 or 36"),
    (["--steps_to_ignore=3", "--steps_to_predict=3"],
     "error: --steps_to_predict=3 must be greater than --steps_to_ignore=3"),
    (["--steps_to_predict=7"], "error: --steps_to_predict=7 needs a grid of "
     "more than 7 rows; this geometry gives 7"),
    (["--directions=3"], "error: --directions=3; allowed: 1, 2, 4"),
    (["--profile_steps=5"], "error: --profile_steps='5'; expected "
     "'START,END' with 0 <= START < END"),
    (["--model_dir="], "error: --model_dir is required"),
    (["--model_dir=/proc/cpc_tf_run"], "error: --model_dir=/proc/cpc_tf_run "
     "is not writable"),
])
def test_bad_flags_stop_with_one_line_naming_them(tmp_path, args, message):
  got = flag_error(config_lib.PretrainConfig, DEMO_FLAGS,
                   f"--model_dir={tmp_path}", *args)
  assert got.startswith(message) and "\n" not in got, got
  assert not os.path.exists(tmp_path / "checkpoint")


@pytest.mark.parametrize("flag", ["--architecture=resnet9", "--norm=group",
                                  "--strategy=gpu", "--cache_images=maybe"])
def test_choice_flags_reject_other_values_when_parsed(flag):
  # absl prints them as "FATAL Flags parsing error: flag --<name>=...".
  with pytest.raises(flags.IllegalFlagValueError, match=flag):
    parse_flags(config_lib.PretrainConfig, DEMO_FLAGS, flag)


def test_missing_dataset_stops_before_training(tmp_path):
  config = parse_flags(config_lib.PretrainConfig, DEMO_FLAGS,
                       f"--model_dir={tmp_path}",
                       "--dataset=no_such_dataset_or_path")
  with pytest.raises(ValueError, match="no_such_dataset_or_path"):
    pretraining.pretrain(config)
  assert not os.path.exists(tmp_path / "checkpoint")


def test_old_encoder_flag_still_sets_the_architecture(caplog):
  # Over the flagfile's --architecture=tiny, as old commands expect.
  config = parse_flags(config_lib.PretrainConfig, DEMO_FLAGS,
                       "--encoder=resnet50")
  assert config.architecture == "resnet50"
  assert [r.getMessage() for r in caplog.records] == [
      "--encoder is deprecated; use --architecture (here "
      "--architecture=resnet50)"]
  assert parse_flags(config_lib.PretrainConfig,
                     DEMO_FLAGS).architecture == "tiny"


def test_old_config_json_with_encoder_loads(tmp_path):
  config = config_lib.PretrainConfig(model_dir="m", architecture="resnet50",
                                     image_size=64)
  config.save(str(tmp_path / "config.json"))
  saved = json.loads((tmp_path / "config.json").read_text())
  saved["encoder"] = saved.pop("architecture")  # As written before the rename.
  saved["a_field_of_the_future"] = 1
  (tmp_path / "old.json").write_text(json.dumps(saved))
  assert config_lib.PretrainConfig.load(str(tmp_path / "old.json")) == config


def test_checkpoint_holds_every_encoder_variable(tmp_path):
  # With BatchNorm (the LN ablation) the moving statistics are not trained
  # by the optimizer: they must still be saved and restored.
  from cpc_tf import checkpoints  # pylint: disable=g-import-not-at-top
  config = small_config(tmp_path, train_steps=3, norm="batch")
  pretraining.pretrain(config)
  encoder, _ = checkpoints.encoder_from_checkpoint(str(tmp_path))
  reader = tf.train.load_checkpoint(str(tmp_path))
  moving = 0
  for variable in encoder.variables:
    key = "model/" + variable.path.split("/", 1)[1].replace("/", ".S")
    saved = reader.get_tensor(key + "/.ATTRIBUTES/VARIABLE_VALUE")
    np.testing.assert_array_equal(variable.numpy(), saved, err_msg=key)
    moving += "moving_mean" in key
  assert moving > 0
  untrained, _ = checkpoints.encoder_from_checkpoint(str(tmp_path),
                                                     untrained=True)
  assert any(not np.array_equal(a.numpy(), b.numpy()) for a, b in
             zip(encoder.trainable_variables, untrained.trainable_variables))
