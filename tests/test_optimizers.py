"""FusedAdam is keras Adam: same updates, same slots, on one or two replicas."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import tensorflow as tf

from cpc_tf.train import optimizers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _train(optimizer_cls, steps=6):
  rng = np.random.default_rng(0)
  variables = [keras.Variable(rng.normal(size=s).astype(np.float32),
                              name=f"w{i}")
               for i, s in enumerate([(5, 7), (7,)])]
  gradients = [[rng.normal(size=v.shape).astype(np.float32)
                for v in variables] for _ in range(steps)]
  optimizer = optimizer_cls(
      learning_rate=optimizers.learning_rate_schedule(1e-2, 10, 2))

  @tf.function
  def step(grads):
    optimizer.apply_gradients(zip(grads, variables))

  for grads in gradients:
    step(grads)
  return variables, optimizer


def test_keras_adam_checkpoint_restores_into_fused_adam(tmp_path):
  """Runs checkpointed with keras Adam resume with FusedAdam."""
  keras_vars, keras_opt = _train(keras.optimizers.Adam)
  path = tf.train.Checkpoint(optimizer=keras_opt).save(str(tmp_path / "c"))
  _, fused_opt = _train(optimizers.FusedAdam, steps=1)
  tf.train.Checkpoint(optimizer=fused_opt).restore(path).assert_consumed()
  assert int(fused_opt.iterations) == int(keras_opt.iterations) == 6
  for a, b in zip(keras_opt.variables, fused_opt.variables):
    np.testing.assert_array_equal(b.numpy(), a.numpy())


def test_fused_adam_equals_keras_adam():
  keras_vars, keras_opt = _train(keras.optimizers.Adam)
  fused_vars, fused_opt = _train(optimizers.FusedAdam)
  for a, b in zip(keras_vars, fused_vars):
    np.testing.assert_allclose(b.numpy(), a.numpy(), rtol=1e-5, atol=1e-6)
  # Same slot variables in the same order (checkpoints are object-based, so
  # they are interchangeable; only the optimizer's own name differs).
  def slots(optimizer):
    return [v.path.split("/", 1)[1] for v in optimizer.variables]
  assert slots(fused_opt) == slots(keras_opt)
  for a, b in zip(keras_opt.variables, fused_opt.variables):
    np.testing.assert_allclose(b.numpy(), a.numpy(), rtol=1e-5, atol=1e-7)


_MIRRORED = """
import json, sys
import numpy as np, tensorflow as tf, keras
cpu, = tf.config.list_physical_devices("CPU")
tf.config.set_logical_device_configuration(
    cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from cpc_tf.train import optimizers
out = {}
for name, cls in (("keras", keras.optimizers.Adam),
                  ("fused", optimizers.FusedAdam)):
  strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
  with strategy.scope():
    w = keras.Variable(np.arange(6, dtype=np.float32).reshape(2, 3))
    opt = cls(learning_rate=0.1)
    opt.build([w])
  grads = tf.constant([[1.0, -2.0, 3.0], [0.5, 0.0, -1.0]])

  @tf.function
  def step():
    def replica_fn():
      ctx = tf.distribute.get_replica_context()
      g = grads * tf.cast(ctx.replica_id_in_sync_group + 1, tf.float32)
      opt.apply_gradients([(g, w)])
    strategy.run(replica_fn)

  for _ in range(3):
    step()
  out[name] = [v.numpy().tolist()
               for v in strategy.experimental_local_results(w.value)]
json.dump(out, open(sys.argv[1], "w"))
"""


def test_fused_adam_under_mirrored_strategy(tmp_path):
  """Two replicas (logical CPUs): the replicas' gradients are summed and
  every copy of the variable gets the same update as with keras Adam."""
  out = tmp_path / "out.json"
  proc = subprocess.run([sys.executable, "-c", _MIRRORED, str(out)],
                        cwd=ROOT, capture_output=True, text=True,
                        timeout=300, check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  result = json.loads(out.read_text())
  keras_copies, fused_copies = result["keras"], result["fused"]
  assert len(fused_copies) == 2
  np.testing.assert_allclose(fused_copies[0], fused_copies[1])
  np.testing.assert_allclose(fused_copies[0], keras_copies[0], rtol=1e-5)
  # And the update did happen.
  assert not np.allclose(fused_copies[0], np.arange(6).reshape(2, 3))
