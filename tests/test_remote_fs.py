"""Every directory the binaries take works through tf.io.gfile (gs://, ...).

TensorFlow's in-memory filesystem `ram://` stands in for gs://: it lives in
this process only, so the chain pretrain -> export -> linear evaluation ->
report -> detection backbone runs in-process, from the binaries' library
entry points, with every output directory in ram:// and the working
directory empty. Like gs://, ram:// has no directory rename, which the
export's swap must do without.
"""

import json
import os
import uuid

import numpy as np
import pytest
import tensorflow as tf

from conftest import NO_AUGMENT, ROOT
from cpc_tf import config as config_lib
from cpc_tf import cpc
from cpc_tf import checkpoints
from cpc_tf import eval_config
from cpc_tf import export_lib
from cpc_tf import report
from cpc_tf import results
from cpc_tf.models import classifier
from cpc_tf.train import evaluation
from cpc_tf.train import pretraining

DEMO_DATA = str(ROOT / "data" / "cifar10_demo")
FRACTION = 0.01


def _files(root):
  """Every file below `root`, level by level with tf.io.gfile.glob (ram://
  lists a directory only if it was created explicitly, so walk may miss
  some)."""
  found, pattern = [], root
  while True:
    pattern += "/*"
    paths = tf.io.gfile.glob(pattern)
    if not paths:
      return sorted(found)
    found += [p for p in paths if not tf.io.gfile.isdir(p)]


def _pooled(export_dir):
  images = tf.constant(np.random.default_rng(0).integers(
      0, 256, [2, 32, 32, 3], np.uint8))
  loaded = tf.saved_model.load(export_dir)  # Kept: serve uses its variables.
  return loaded.serve(images)["pooled"].numpy()


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
  """Runs the whole chain into ram://, from an empty working directory."""
  root = f"ram://cpc_tf_{uuid.uuid4().hex}"
  cwd = tmp_path_factory.mktemp("cwd")
  before = os.getcwd()
  os.chdir(cwd)
  try:
    model_dir = f"{root}/pretrain"
    pretrain_config = config_lib.PretrainConfig(
        model_dir=model_dir, dataset=DEMO_DATA, image_size=32, patch_size=8,
        patch_stride=4, directions=1, context_dim=16, target_dim=8,
        batch_size=8, train_steps=4, warmup_steps=1, steps_per_loop=2,
        checkpoint_every=2, summary_every=2, profile_steps="1,3", flip=False,
        **NO_AUGMENT)
    metrics = pretraining.pretrain(pretrain_config)
    export_dir = f"{model_dir}/export"
    trained = _pooled(f"{export_dir}/4")
    # The export binary's path: the random-init control (version 0), then
    # the trained encoder again, over the existing version 4.
    random_init = _pooled(export_lib.export_checkpoint(model_dir,
                                                       untrained=True))
    version = export_lib.export_checkpoint(model_dir)
    sweep_dir = f"{root}/sweep"
    eval_dir = report.run_dir(sweep_dir, "cpc_linear", FRACTION)
    outcome = evaluation.run(eval_config.EvalConfig(
        model_dir=eval_dir, encoder=model_dir, protocol="linear",
        dataset=DEMO_DATA, label_fraction=FRACTION, validation_per_class=2,
        batch_size=8, eval_batch_size=250, train_steps=4, eval_every=2,
        steps_per_loop=2, summary_every=2, learning_rate=1e-2))
    output_dir = f"{root}/report"
    commands = [report.command(
        "cpc_linear", FRACTION, sweep_dir, model_dir,
        {"linear": "flags/eval_cifar10_cpu_linear.flags"})]
    report.write_commands(output_dir, commands)
    text = report.write_report(sweep_dir, output_dir, ["cpc_linear"],
                               [FRACTION], commands, title="ram")
    written = list(tf.io.gfile.walk(root))
    print("tf.io.gfile.walk:", *written, sep="\n  ")
    yield dict(root=root, model_dir=model_dir, export_dir=export_dir,
               version=version, eval_dir=eval_dir, output_dir=output_dir, metrics=metrics,
               outcome=outcome, text=text, trained=trained,
               random_init=random_init, cwd=cwd, files=_files(root),
               commands=commands)
  finally:
    os.chdir(before)
    tf.io.gfile.rmtree(root)


def test_nothing_is_written_to_the_working_directory(chain):
  assert os.listdir(chain["cwd"]) == []


def test_pretraining_writes_config_checkpoints_events_trace(chain):
  model_dir, files = chain["model_dir"], chain["files"]
  assert chain["metrics"]["step"] == 4
  saved = config_lib.PretrainConfig.load(f"{model_dir}/config.json")
  assert saved.model_dir == model_dir and saved.batch_size == 8
  assert tf.train.latest_checkpoint(model_dir) == f"{model_dir}/ckpt-4"
  encoder, _ = checkpoints.encoder_from_checkpoint(model_dir)  # Restores all.
  assert encoder.count_params() > 0
  events = [f for f in files if f.startswith(f"{model_dir}/events.out")]
  tags = {v.tag for f in events
          for e in tf.compat.v1.train.summary_iterator(f)
          for v in e.summary.value}
  assert {"loss", "learning_rate", "patches"} <= tags
  # --profile_steps: where TensorBoard's profile plugin reads a trace.
  traces = tf.io.gfile.glob(f"{model_dir}/plugins/profile/*/*.xplane.pb")
  assert len(traces) == 1 and tf.io.gfile.stat(traces[0]).length > 0


def test_profile_plugin_reads_the_trace(chain, tmp_path):
  # The plugin (a pass-through to xprof) reads gs:// through fsspec, not
  # TensorFlow: it gets a local copy of the trace, at the same place below
  # the log directory.
  import argparse  # pylint: disable=g-import-not-at-top
  from etils import epath  # pylint: disable=g-import-not-at-top
  from tensorboard.plugins import base_plugin  # pylint: disable=g-import-not-at-top
  import tensorboard_plugin_profile  # pylint: disable=g-import-not-at-top
  from xprof.convert import raw_to_tool_data  # pylint: disable=g-import-not-at-top
  model_dir = chain["model_dir"]
  [trace] = tf.io.gfile.glob(f"{model_dir}/plugins/profile/*/*.xplane.pb")
  local = str(tmp_path) + trace[len(model_dir):]
  tf.io.gfile.makedirs(os.path.dirname(local))
  tf.io.gfile.copy(trace, local)
  plugin = tensorboard_plugin_profile.profile_plugin.ProfilePlugin(
      base_plugin.TBContext(logdir=str(tmp_path), flags=argparse.Namespace(
          master_tpu_unsecure_channel="")))
  run = os.path.basename(os.path.dirname(trace))
  assert list(plugin.generate_runs()) == [run]
  table, _ = raw_to_tool_data.xspace_to_tool_data(
      [epath.Path(local)], "framework_op_stats", {})
  assert b"Conv2D" in table  # The encoder's convolutions were traced.


def test_export_replaced_in_place_without_directory_rename(chain):
  export_dir, version, files = (chain["export_dir"], chain["version"],
                                chain["files"])
  assert version == f"{export_dir}/4"
  assert export_lib.saved_model_dir(export_dir) == version
  assert not np.allclose(chain["random_init"], chain["trained"], atol=1e-3)
  np.testing.assert_allclose(_pooled(version), chain["trained"], atol=1e-5)
  assert export_lib.load_config(version).model_dir == chain["model_dir"]
  exported = sorted(f[len(export_dir) + 1:] for f in files
                    if f.startswith(export_dir + "/"))
  assert exported == [
      f"{step}/{name}" for step in (0, 4)
      for name in ("cpc_config.json", "fingerprint.pb", "saved_model.pb",
                   "variables/variables.data-00000-of-00001",
                   "variables/variables.index")]
  for path in (export_dir, version):  # The base, or a version.
    encoder, config = classifier.load_encoder(path)  # Checks latents.
    assert config.image_size == 32 and encoder.count_params() > 0


def test_linear_evaluation_writes_results_and_checkpoints(chain):
  eval_dir = chain["eval_dir"]
  saved = results.read(eval_dir)  # Checks the schema.
  assert saved == json.loads(json.dumps(chain["outcome"]))
  assert saved["method"] == "cpc_linear" and saved["num_test"] == 1000
  assert saved["details"]["encoder_checkpoint"] == (
      f"{chain['model_dir']}/ckpt-4")
  config = eval_config.EvalConfig(**saved["config"])
  assert config.differences(f"{eval_dir}/config.json") == []
  assert tf.train.latest_checkpoint(eval_dir) == f"{eval_dir}/ckpt-4"
  assert tf.train.latest_checkpoint(f"{eval_dir}/best") is not None
  assert any(f.startswith(f"{eval_dir}/validation/events.out")
             for f in chain["files"])
  assert not any(".tmp" in f for f in chain["files"])  # Renamed in place.


def test_report_files(chain):
  output_dir = chain["output_dir"]
  outcome = chain["outcome"]
  with tf.io.gfile.GFile(f"{output_dir}/report.md") as f:
    assert f.read() == chain["text"]
  top1, top5 = (100 * outcome["test"][k] for k in ("top1", "top5"))
  assert f"| Linear on CPC v2 (fixed) | {top1:.1f} / {top5:.1f} |" in (
      chain["text"])
  with tf.io.gfile.GFile(f"{output_dir}/results.json") as f:
    summary = json.load(f)
  entry = summary["cpc_linear/1pct"]  # One seed, 0.
  assert (entry["seeds"]["0"]["top1"] == entry["mean"]["top1"] ==
          outcome["test"]["top1"])
  with tf.io.gfile.GFile(f"{output_dir}/report.png", "rb") as f:
    assert f.read(8) == b"\x89PNG\r\n\x1a\n"
  with tf.io.gfile.GFile(f"{output_dir}/commands.sh") as f:
    lines = f.read().splitlines()
  assert len(lines) == 1 and f"--model_dir={chain['eval_dir']}" in lines[0]
  # No machine's path: the interpreter relative to the working directory
  # (here a temporary one, so plain "python").
  python, *command = lines[0].split()
  assert not os.path.isabs(python) and command[:2] == [
      "-m", "cpc_tf.evaluate"], lines[0]


def test_detection_backbone_loads_the_ram_export(chain):
  import tf_keras  # pylint: disable=g-import-not-at-top
  from detection import backbone as backbone_lib  # pylint: disable=g-import-not-at-top
  from detection import experiment  # pylint: disable=g-import-not-at-top
  from official.vision.modeling.backbones import factory  # pylint: disable=g-import-not-at-top
  from official.vision.ops import preprocess_ops  # pylint: disable=g-import-not-at-top
  config = experiment.FasterRCNN().backbone
  config.cpc_savedmodel.export_dir = chain["export_dir"]
  backbone = factory.build_backbone(
      tf_keras.layers.InputSpec(shape=[None, 64, 64, 3]), config,
      experiment.FasterRCNN().norm_activation)
  pixels = tf.random.uniform([1, 64, 64, 3], 0, 256, tf.int32)
  got = backbone(preprocess_ops.normalize_image(tf.cast(pixels, tf.uint8)))
  loaded = tf.saved_model.load(chain["version"])
  want = loaded.features(tf.cast(pixels, tf.float32) / 255.0)
  for level, stride in backbone_lib.FEATURE_STRIDES.items():
    assert got[level].shape[1:3] == (64 // stride, 64 // stride)
    np.testing.assert_allclose(got[level], want[level], atol=1e-4)


# --- the export's swap on a filesystem without directory rename ----------


@pytest.fixture(scope="module")
def tiny_encoder():
  config = config_lib.PretrainConfig(model_dir="unused", directions=1)
  return cpc.build_model(config).encoder, config


def test_failed_verification_keeps_the_previous_ram_export(tiny_encoder,
                                                           monkeypatch):
  encoder, config = tiny_encoder
  export_dir = f"ram://cpc_tf_{uuid.uuid4().hex}/export"
  version = export_lib.export_encoder(encoder, config, export_dir, 7)
  before = _pooled(version)
  def broken_verify(*args, **kwargs):
    raise AssertionError("simulated: the new export differs")
  monkeypatch.setattr(export_lib, "verify", broken_verify)
  with pytest.raises(AssertionError, match="simulated"):
    export_lib.export_encoder(encoder, config, export_dir, 7)
  np.testing.assert_array_equal(_pooled(version), before)


def test_crash_during_the_copy_leaves_no_loadable_half_export(tiny_encoder,
                                                              monkeypatch):
  # The copy's contract: saved_model.pb at the path only beside a complete
  # export; the verified new one stays in .staging.
  encoder, config = tiny_encoder
  export_dir = f"ram://cpc_tf_{uuid.uuid4().hex}/export"
  older = export_lib.export_encoder(encoder, config, export_dir, 6)
  version = export_lib.export_encoder(encoder, config, export_dir, 7)
  copy, copied = tf.io.gfile.copy, []
  def crash_after_two(source, target, overwrite=False):
    if len(copied) == 2:
      raise tf.errors.UnavailableError(None, None, "simulated: preempted")
    copied.append(target)
    copy(source, target, overwrite)
  monkeypatch.setattr(tf.io.gfile, "copy", crash_after_two)
  with pytest.raises(tf.errors.UnavailableError):
    export_lib.export_encoder(encoder, config, export_dir, 7)
  assert copied and not any(c.endswith("saved_model.pb") for c in copied)
  assert not export_lib.is_saved_model(version)
  assert export_lib.is_saved_model(version + ".staging")
  # Consumers of the base get the version before, whole.
  assert export_lib.saved_model_dir(export_dir) == older
  monkeypatch.setattr(tf.io.gfile, "copy", copy)
  export_lib.export_encoder(encoder, config, export_dir, 7)  # Rerun: complete.
  assert _pooled(version).shape == (2, encoder.output_dim)
  assert export_lib.saved_model_dir(export_dir) == version
  assert not tf.io.gfile.glob(version + ".staging/*")
