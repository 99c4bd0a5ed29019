"""Faults a long run must survive: non-finite steps, SIGTERM, SIGKILL."""

import os
import signal
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from cpc_tf import errors
from cpc_tf.train import loop

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def toy_trainer(model_dir, poisoned, train_steps=8, max_bad_steps=3):
  """A linear model fed batch i = ones * i, NaN for i in `poisoned`."""
  keras.utils.set_random_seed(0)
  strategy = tf.distribute.get_strategy()
  model = keras.Sequential([keras.layers.Dense(1)])
  model.build((None, 2))
  optimizer = keras.optimizers.Adam(0.01)
  optimizer.build(model.trainable_variables)

  def dataset_fn(ctx, skip):
    del ctx
    values = [float("nan") if i in poisoned else float(i)
              for i in range(100)]
    return tf.data.Dataset.from_tensor_slices(values).skip(skip).map(
        lambda v: tf.fill([4, 2], v))

  def compute_loss(m, batch):
    return {"loss": tf.reduce_mean(tf.square(m(batch) - 1.0))}

  return loop.Trainer(
      strategy=strategy, model_dir=str(model_dir), model=model,
      optimizer=optimizer, compute_loss=compute_loss, dataset_fn=dataset_fn,
      global_batch_size=4, train_steps=train_steps, steps_per_loop=2,
      checkpoint_every=2, summary_every=2, max_bad_steps=max_bad_steps)


def test_non_finite_step_is_not_applied(tmp_path):
  trainer = toy_trainer(tmp_path / "a", poisoned={3})
  metrics = trainer.train()
  assert int(trainer.step) == 8
  assert int(trainer.optimizer.iterations) == 7  # Step 3 was skipped.
  assert all(np.isfinite(w).all() for w in trainer.model.get_weights())
  assert np.isfinite(metrics["loss"])
  # The same run without the bad batch at all differs only by that step:
  # its first three updates are identical.
  reference = toy_trainer(tmp_path / "b", poisoned=set(), train_steps=2)
  reference.train()
  restored = toy_trainer(tmp_path / "c", poisoned={3}, train_steps=2)
  restored.train()
  for got, want in zip(restored.model.get_weights(),
                       reference.model.get_weights()):
    np.testing.assert_array_equal(got, want)


def test_divergence_stops_and_keeps_the_last_good_checkpoint(tmp_path):
  trainer = toy_trainer(tmp_path, poisoned=set(range(4, 100)),
                        train_steps=20, max_bad_steps=3)
  with pytest.raises(errors.DivergenceError, match="consecutive"):
    trainer.train()
  # Steps 4 and 5 were skipped, so ckpt-6 holds the weights of step 4;
  # the third bad step in a row (6) stopped the run before any save.
  latest = tf.train.latest_checkpoint(str(tmp_path))
  assert latest.endswith("ckpt-6")
  last, good = (tf.train.load_checkpoint(str(tmp_path / name))
                for name in ("ckpt-6", "ckpt-4"))
  names = [n for n in last.get_variable_to_shape_map()
           if n.startswith(("model/", "optimizer/_trainable_variables"))]
  assert names
  for name in names:
    assert np.isfinite(last.get_tensor(name)).all(), name
    np.testing.assert_array_equal(last.get_tensor(name), good.get_tensor(name))


def pretrain_command(model_dir, *extra):
  return [sys.executable, "-m", "cpc_tf.pretrain",
          "--flagfile=flags/demo_cpu.flags", f"--model_dir={model_dir}",
          "--batch_size=4", "--directions=1", "--steps_per_loop=1",
          "--summary_every=1", "--checkpoint_every=3", "--export=false",
          "--seed=1", "--deterministic", *extra]


def scalar_series(model_dir, tag):
  series = {}
  for name in sorted(os.listdir(model_dir)):
    if name.startswith("events.out.tfevents"):
      for event in tf.compat.v1.train.summary_iterator(
          os.path.join(model_dir, name)):
        for value in event.summary.value:
          if value.tag == tag:
            series[event.step] = tf.make_ndarray(value.tensor).item()
  return series


def signal_on_line(command, marker, sig):
  """Runs `command`, sends `sig` once a stderr line contains `marker`.

  Returns (exit code, log). Driven by the run's own progress lines, so the
  signal lands mid-run however fast or loaded the machine is.
  """
  process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)
  log = []
  for line in process.stderr:
    log.append(line)
    if marker in line:
      process.send_signal(sig)
      break
  log += process.stderr.readlines()
  return process.wait(timeout=120), "".join(log)


def test_sigterm_checkpoints_and_sigkill_resumes_exactly(tmp_path):
  straight = str(tmp_path / "straight")
  subprocess.run(pretrain_command(straight, "--train_steps=12"), cwd=ROOT,
                 check=True, capture_output=True, timeout=600)
  run = str(tmp_path / "run")
  command = pretrain_command(run, "--train_steps=12")
  # SIGKILL between checkpoints (ckpt-3 written, step 5 done, ckpt-6 not yet).
  code, log = signal_on_line(command, "step 5/12 ", signal.SIGKILL)
  assert code == -signal.SIGKILL, log
  killed_at = int(tf.train.latest_checkpoint(run).rsplit("-", 1)[1])
  assert killed_at in (3, 6), log
  # SIGTERM once training is under way again: a checkpoint at the step
  # reached, then a clean exit.
  code, log = signal_on_line(command, f"step {killed_at + 1}/12 ",
                             signal.SIGTERM)
  assert f"ckpt-{killed_at} at step {killed_at}" in log, log
  assert code == 0, log
  preempted = [l for l in log.splitlines() if "Preempted at step" in l]
  assert preempted, log
  saved_step = int(tf.train.load_variable(
      tf.train.latest_checkpoint(run), "step/.ATTRIBUTES/VARIABLE_VALUE"))
  assert f"Preempted at step {saved_step};" in preempted[0]
  assert killed_at < saved_step < 12
  # The same command again finishes the run.
  subprocess.run(pretrain_command(run, "--train_steps=12"), cwd=ROOT,
                 check=True, capture_output=True, timeout=600)
  want, got = (scalar_series(straight, "loss"), scalar_series(run, "loss"))
  assert sorted(want) == list(range(1, 13))
  for step in want:
    np.testing.assert_allclose(got[step], want[step], rtol=1e-5,
                               err_msg=f"loss at step {step}")


def test_bad_images_are_skipped_and_named(tmp_path):
  from PIL import Image  # pylint: disable=g-import-not-at-top
  from cpc_tf import config as config_lib  # pylint: disable=g-import-not-at-top
  from cpc_tf.train import pretraining  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  folder = tmp_path / "images" / "things"
  folder.mkdir(parents=True)
  for i in range(6):
    Image.fromarray(rng.integers(0, 256, (40, 36, 3), np.uint8)).save(
        folder / f"good{i}.jpg")
  Image.fromarray(rng.integers(0, 256, (40, 36), np.uint8)).save(
      folder / "gray.png")
  Image.fromarray(rng.integers(0, 256, (40, 36, 4), np.uint8)).save(
      folder / "alpha.png")
  Image.fromarray(rng.integers(0, 256, (40, 36, 3), np.uint8)).convert(
      "CMYK").save(folder / "cmyk.jpg")
  Image.fromarray(rng.integers(0, 256, (5, 5, 3), np.uint8)).save(
      folder / "tiny.png")
  (folder / "zero.jpg").write_bytes(b"")
  (folder / "cut.jpg").write_bytes((folder / "good0.jpg").read_bytes()[:200])
  (folder / "noise.png").write_bytes(os.urandom(300))
  config = config_lib.PretrainConfig(
      model_dir=str(tmp_path / "run"), dataset=str(tmp_path / "images"),
      train_steps=2, batch_size=4, steps_per_loop=1, directions=1,
      export=False)
  assert pretraining.pretrain(config)["step"] == 2
  listed = (tmp_path / "run" / "skipped_files.txt").read_text().splitlines()
  assert sorted(os.path.basename(l.split("\t")[0]) for l in listed) == [
      "cut.jpg", "noise.png", "tiny.png", "zero.jpg"]


def test_no_usable_image_fails_at_start(tmp_path):
  from cpc_tf import config as config_lib  # pylint: disable=g-import-not-at-top
  from cpc_tf.train import pretraining  # pylint: disable=g-import-not-at-top
  folder = tmp_path / "images" / "things"
  folder.mkdir(parents=True)
  (folder / "zero.jpg").write_bytes(b"")
  config = config_lib.PretrainConfig(model_dir=str(tmp_path / "run"),
                                     dataset=str(tmp_path / "images"))
  with pytest.raises(ValueError, match="no usable image"):
    pretraining.pretrain(config)
  assert tf.train.latest_checkpoint(str(tmp_path / "run")) is None


def test_failed_checkpoint_write_keeps_the_previous_one(tmp_path):
  trainer = toy_trainer(tmp_path, poisoned=set(), train_steps=4)
  trainer.train()
  real_save = trainer.manager.save

  def disk_full(checkpoint_number):
    # Part of the new checkpoint reaches the disk, then the write fails.
    (tmp_path / f"ckpt-{checkpoint_number}.index").write_bytes(b"\0" * 7)
    raise OSError(28, "No space left on device")

  trainer.manager.save = disk_full
  trainer.train_steps = 6
  with pytest.raises(errors.CheckpointWriteError, match="ckpt-4 is intact"):
    trainer.train()
  trainer.manager.save = real_save
  resumed = toy_trainer(tmp_path, poisoned=set(), train_steps=8)
  assert resumed.restore() == 4
  resumed.train()
  assert tf.train.latest_checkpoint(str(tmp_path)).endswith("ckpt-8")
