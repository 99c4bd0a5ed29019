"""Two MultiWorkerMirroredStrategy workers on 127.0.0.1 match one worker."""

import json
import os
import socket
import subprocess
import sys

import numpy as np
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
          "--batch_size=8", "--train_steps=4", "--steps_per_loop=2",
          "--summary_every=1", "--checkpoint_every=2", "--directions=2",
          "--export=false", "--seed=3", *NO_AUGMENT]


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


def test_two_workers_match_one_and_only_the_chief_writes(tmp_path):
  single = str(tmp_path / "single")
  subprocess.run(command(single, "default"), cwd=ROOT, check=True,
                 capture_output=True, timeout=300)
  multi = str(tmp_path / "multi")
  ports = free_ports(2)
  cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
  workers = []
  for index in range(2):
    env = dict(os.environ, TF_CONFIG=json.dumps(
        {"cluster": cluster, "task": {"type": "worker", "index": index}}))
    workers.append(subprocess.Popen(
        command(multi, "multi_worker"), cwd=ROOT, env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True))
  try:
    for worker in workers:
      _, stderr = worker.communicate(timeout=420)
      assert worker.returncode == 0, stderr[-3000:]
  finally:
    for worker in workers:
      worker.kill()
  # Same global batch (8 images: 4 per worker), same initial weights,
  # negatives gathered across workers: the same loss at every step.
  want, got = losses(single), losses(multi)
  assert sorted(want) == [1, 2, 3, 4] and sorted(got) == sorted(want)
  for step in want:
    np.testing.assert_allclose(got[step], want[step], rtol=2e-4,
                               err_msg=f"step {step}")
  written = sorted(os.listdir(multi))
  assert sum(n.startswith("events.out") for n in written) == 1, written
  assert [n for n in written if not n.startswith("events.out")] == [
      "checkpoint", "ckpt-2.data-00000-of-00001", "ckpt-2.index",
      "ckpt-4.data-00000-of-00001", "ckpt-4.index", "config.json"], written
