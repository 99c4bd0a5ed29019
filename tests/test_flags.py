"""Flags of every binary: one dataclass each, parsed and checked before
TensorFlow loads, listed by --help, rejected in one line."""

import dataclasses
import os
import subprocess
import sys

import keras
import pytest

from conftest import ROOT
from conftest import flag_error
from conftest import parse_flags
from cpc_tf import config as config_lib
from cpc_tf import eval_config
from cpc_tf import report
from cpc_tf.data import pipeline
from cpc_tf.models import heads
from cpc_tf.models import resnet
from cpc_tf.train import strategy as strategy_lib
from detection import voc_to_tfrecord

BINARIES = {
    "cpc_tf.pretrain": config_lib.PretrainConfig,
    "cpc_tf.evaluate": eval_config.EvalConfig,
    "cpc_tf.supervised": eval_config.SupervisedConfig,
    "cpc_tf.report": report.ReportConfig,
    "detection.voc_to_tfrecord": voc_to_tfrecord.ConversionConfig,
}


def python(*args):
  return subprocess.run([sys.executable, *args], cwd=ROOT,
                        capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("module", ["cpc_tf.config", "cpc_tf.eval_config",
                                    "cpc_tf.flag_utils", *BINARIES])
def test_configs_and_binaries_import_no_tensorflow(module):
  done = python("-c", f"import sys, {module}; print(sorted(m for m in "
                "sys.modules if m.split('.')[0] in ('tensorflow', 'keras')))")
  assert done.returncode == 0, done.stderr
  assert done.stdout.strip() == "[]"


def test_choices_are_the_registries():
  assert config_lib.ARCHITECTURES == tuple(resnet.PRESETS)
  assert config_lib.NORMS == resnet.NORMS
  assert config_lib.STRATEGIES == strategy_lib.STRATEGIES
  assert config_lib.CACHE_CHOICES == pipeline.CACHE_CHOICES
  assert config_lib.CACHE_MEMORY_FRACTION == pipeline.CACHE_MEMORY_FRACTION
  assert eval_config.HEADS == tuple(heads.HEAD_PRESETS)
  compute = {"none": "float32", "bfloat16": "bfloat16", "float16": "float16"}
  assert set(config_lib.MIXED_PRECISION) == set(compute)
  try:
    for choice in config_lib.MIXED_PRECISION:
      strategy_lib.set_precision(choice)
      policy = keras.mixed_precision.global_policy()
      assert (policy.variable_dtype, policy.compute_dtype) == (
          "float32", compute[choice])
  finally:
    strategy_lib.set_precision("none")


def test_encoder_is_a_path_and_architecture_a_preset_in_every_binary():
  for config_cls in BINARIES.values():
    fields = {f.name: f.metadata for f in dataclasses.fields(config_cls)}
    if "encoder" in fields:
      assert fields["encoder"]["choices"] is None
      assert "SavedModel" in fields["encoder"]["help"]
    if "architecture" in fields:
      assert fields["architecture"]["choices"] == config_lib.ARCHITECTURES
  # Pretraining's old --encoder only as a deprecated alias.
  assert config_lib.PretrainConfig.RENAMED_FLAGS == {
      "encoder": "architecture"}


@pytest.mark.parametrize("module", BINARIES)
def test_help_lists_the_binary_flags(module):
  done = python("-m", module, "--help")
  text = "".join(done.stdout.split())  # absl wraps the help text.
  config_cls = BINARIES[module]
  for f in dataclasses.fields(config_cls):
    flag = f"--[no]{f.name}:" if isinstance(f.default, bool) else (
        f"--{f.name}:")
    assert flag in text, (flag, done.stdout)
    assert "".join(f.metadata["help"].split()) in text, (f.name, done.stdout)


def test_a_bad_flag_stops_the_binary_in_one_line(tmp_path):
  done = python("-m", "cpc_tf.pretrain", "--flagfile=flags/demo_cpu.flags",
                f"--model_dir={tmp_path}", "--patch_size=0")
  assert done.returncode == 1
  assert done.stderr == "error: --patch_size=0; must be > 0\n"
  assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("args, message", [
    (["--label_fractions=0.01,1.5"], "error: --label_fractions=0.01,1.5; "
     "allowed: numbers with 0 < fraction <= 1"),
    (["--label_fractions=0.01,all"], "error: --label_fractions=0.01,all; "
     "expected comma-separated float values"),
    (["--linear_fractions=0.1,0"], "error: --linear_fractions=0.1,0; "
     "allowed: numbers with 0 < fraction <= 1"),
    (["--methods=cpc_efficient,cpc_best"], "error: --methods='cpc_best'; "
     "allowed: cpc_linear, "),
    (["--methods=supervised"], "error: --supervised_flagfile is required "
     "for supervised"),
    (["--efficient_flagfile=e", "--finetune_flagfile=f",
      "--supervised_flagfile=s"],
     "error: --encoder is required for the CPC and random-init methods"),
    (["--output_dir="], "error: --output_dir is required"),
    (["--eval_seeds=0,1,0"], "error: --eval_seeds=0,1,0; allowed: "
     "distinct seeds >= 0"),
    (["--eval_seeds=-1"], "error: --eval_seeds=-1; allowed: distinct "),
])
def test_report_flags_stop_in_one_line(args, message):
  got = flag_error(report.ReportConfig, "--sweep_dir=s", "--output_dir=o",
                   *args)
  assert got.startswith(message) and "\n" not in got, got


def test_report_collects_without_flagfiles_with_norun():
  config = parse_flags(report.ReportConfig, "--sweep_dir=s",
                       "--output_dir=o", "--norun",
                       "--label_fractions=0.01,1",
                       "--eval_seeds=0,1,2").validate()
  assert config.label_fractions == (0.01, 1.0)
  assert config.eval_seeds == (0, 1, 2)


@pytest.mark.parametrize("args, message", [
    (["--voc_dir={missing}", "--split=train"],
     "error: --voc_dir={missing} is not a directory"),
    (["--voc_dir={voc}", "--split=train"],
     "error: --voc_dir={voc} has no ImageSets/Main/train.txt (--split=train)"),
    (["--voc_dir={voc}"],
     "error: --split is required; allowed: train, val, trainval, test"),
])
def test_voc_converter_stops_in_one_line(tmp_path, args, message):
  paths = dict(missing=tmp_path / "missing", voc=tmp_path)
  got = flag_error(voc_to_tfrecord.ConversionConfig,
                   f"--output={tmp_path / 'out.tfrecord'}",
                   *(a.format(**paths) for a in args))
  assert got == message.format(**paths)
  assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("flagfile", ["supervised_imagenet.flags",
                                      "supervised_cifar10_cpu.flags"])
def test_supervised_baselines_sweep_standard_crop_and_flip(flagfile,
                                                           monkeypatch):
  """A.4's baseline is not held to the CPC patch augmentations: its sweeps
  include the standard random crop + flip, which is nothing else."""
  from cpc_tf.data import augment  # pylint: disable=g-import-not-at-top
  from cpc_tf.train import baseline  # pylint: disable=g-import-not-at-top
  monkeypatch.chdir(ROOT)
  config = parse_flags(eval_config.SupervisedConfig,
                       f"--flagfile=flags/{flagfile}", "--model_dir=unused")
  assert "crop_flip" in config.augment
  assert baseline.augment_config(config, "crop_flip") == (
      augment.AugmentConfig(flip=True))
