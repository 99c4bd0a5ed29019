"""Two MultiWorkerMirroredStrategy workers on 127.0.0.1 match one worker,
and a SIGTERM to one of them stops both at one checkpoint."""

import json
import os
import re
import signal
import socket
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NO_AUGMENT = ["--color_drop=false", "--auto_augment=false", "--elastic=false",
              "--color_jitter=false", "--jitter=0", "--flip=false"]


def free_ports(count):
  sockets = [socket.socket() for _ in range(count)]
  for s in sockets:
    s.bind(("127.0.0.1", 0))
  ports = [s.getsockname()[1] for s in sockets]
  for s in sockets:
    s.close()
  return ports


def command(model_dir, strategy):
  return [sys.executable, "-m", "cpc_tf.pretrain",
          "--flagfile=flags/demo_cpu.flags", f"--model_dir={model_dir}",
          f"--strategy={strategy}", "--cross_replica_negatives",
          "--batch_size=8", "--train_steps=8", "--steps_per_loop=2",
          "--summary_every=2", "--checkpoint_every=8", "--directions=2",
          "--export=false", "--seed=3", "--deterministic", *NO_AUGMENT]


def losses(model_dir):
  series = {}
  for name in os.listdir(model_dir):
    if name.startswith("events.out.tfevents"):
      for event in tf.compat.v1.train.summary_iterator(
          os.path.join(model_dir, name)):
        for value in event.summary.value:
          if value.tag == "loss":
            series[event.step] = tf.make_ndarray(value.tensor).item()
  return series


def start_workers(model_dir, stderr=lambda index: subprocess.PIPE):
  """Two workers of one cluster on free local ports; worker 0 is the chief.
  `stderr(index)` gives each worker's stderr target."""
  ports = free_ports(2)
  cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
  workers = []
  for index in range(2):
    env = dict(os.environ, TF_CONFIG=json.dumps(
        {"cluster": cluster, "task": {"type": "worker", "index": index}}))
    workers.append(subprocess.Popen(
        command(model_dir, "multi_worker"), cwd=ROOT, env=env,
        stdout=subprocess.DEVNULL, stderr=stderr(index), text=True))
  return workers


def run_workers(model_dir):
  workers = start_workers(model_dir)
  try:
    for worker in workers:
      _, stderr = worker.communicate(timeout=420)
      assert worker.returncode == 0, stderr[-3000:]
  finally:
    for worker in workers:
      worker.kill()


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
  """The model_dir of an uninterrupted two-worker run."""
  model_dir = str(tmp_path_factory.mktemp("straight"))
  run_workers(model_dir)
  return model_dir


def test_two_workers_match_one_and_only_the_chief_writes(tmp_path, straight):
  single = str(tmp_path / "single")
  subprocess.run(command(single, "default"), cwd=ROOT, check=True,
                 capture_output=True, timeout=300)
  # Same global batch (8 images: 4 per worker), same initial weights,
  # negatives gathered across workers: the same loss at every step.
  want, got = losses(single), losses(straight)
  assert sorted(want) == [2, 4, 6, 8] and sorted(got) == sorted(want)
  for step in want:
    np.testing.assert_allclose(got[step], want[step], rtol=2e-4,
                               err_msg=f"step {step}")
  written = sorted(os.listdir(straight))
  assert sum(n.startswith("events.out") for n in written) == 1, written
  assert [n for n in written if not n.startswith("events.out")] == [
      "checkpoint", "ckpt-8.data-00000-of-00001", "ckpt-8.index",
      "config.json"], written


def test_sigterm_to_one_worker_checkpoints_all_at_one_step(tmp_path,
                                                           straight):
  run = str(tmp_path / "run")
  logs = [tmp_path / "worker0.log", tmp_path / "worker1.log"]
  with open(logs[0], "w") as chief_log:
    workers = start_workers(
        run, stderr=lambda i: chief_log if i == 0 else subprocess.PIPE)
    try:
      # SIGTERM to the non-chief once it has logged step 2 of 8: driven by
      # its progress, so the signal lands mid-run however loaded the machine.
      lines = []
      for line in workers[1].stderr:
        lines.append(line)
        if "step 2/8 " in line:
          workers[1].send_signal(signal.SIGTERM)
          break
      lines += workers[1].stderr.readlines()
      codes = [w.wait(timeout=300) for w in workers]
    finally:
      for worker in workers:
        worker.kill()
  logs[1].write_text("".join(lines))
  logs = [log.read_text() for log in logs]
  assert codes == [0, 0], logs[1][-3000:] + logs[0][-3000:]
  saved = [re.findall(r"Preempted at step (\d+); checkpoint saved, rerun "
                      "the same command to resume", log) for log in logs]
  assert saved[0] and saved[0] == saved[1], saved
  step = int(saved[0][0])
  assert 2 < step < 8
  # One checkpoint, written by the chief, at the step both workers saved.
  latest = tf.train.latest_checkpoint(run)
  assert latest == os.path.join(run, f"ckpt-{step}")
  assert tf.train.load_variable(
      latest, "step/.ATTRIBUTES/VARIABLE_VALUE") == step
  assert sorted(n for n in os.listdir(run) if n.startswith("ckpt")) == [
      f"ckpt-{step}.data-00000-of-00001", f"ckpt-{step}.index"]
  # The same command again resumes there and ends where the uninterrupted
  # run ends, loss for loss.
  run_workers(run)
  want, got = losses(straight), losses(run)
  assert sorted(got) == sorted(want) == [2, 4, 6, 8]
  for s in want:
    np.testing.assert_allclose(got[s], want[s], rtol=1e-5,
                               err_msg=f"step {s}")
