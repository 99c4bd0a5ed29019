"""The Trainer's step compiled by XLA (as TPUStrategy compiles each replica's
step) trains under a MirroredStrategy of two replicas exactly like the
graph-mode step, and holds no host-side op.

Each case runs in a subprocess that splits the CPU into two logical devices
before TensorFlow starts, so the other tests keep the default device setup.
"""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Ops that run on the host (Python callbacks, printing, strings, summaries):
# none may sit inside the compiled step.
HOST_OPS = {"PyFunc", "PyFuncStateless", "EagerPyFunc", "StringFormat",
            "PrintV2", "Print", "AsString", "StringJoin", "WriteScalarSummary",
            "WriteSummary", "WriteImageSummary", "IteratorGetNext"}
# Ops proving the compiled functions hold the whole step: convolutions
# forward and backward, the CPC loss's softmax cross-entropy, the non-finite
# check, and FusedAdam's fused update.
STEP_OPS = {"Conv2D", "Conv2DBackpropFilter",
            "SparseSoftmaxCrossEntropyWithLogits", "IsFinite",
            "ResourceApplyAdam"}

GEOMETRY = {
    # 32x32 images, 8x8 patches at stride 4: a 7x7 grid.
    "tiny": dict(architecture="tiny", image_size=32, patch_size=8,
                 patch_stride=4, steps_to_ignore=1, steps_to_predict=3),
    # 64x64 images, 32x32 patches at stride 16: a 3x3 grid, predicting the
    # row two below the context (i = 1).
    "resnet50": dict(architecture="resnet50", image_size=64, patch_size=32,
                     patch_stride=16, steps_to_ignore=1, steps_to_predict=2),
}


def compiled_op_types(concrete):
  """Op types of the XLA-compiled functions in a traced graph and of every
  function they call (loop bodies, branches, nested calls)."""
  library = {f.signature.name: f for f in
             concrete.graph.as_graph_def().library.function}
  pending = [name for name, f in library.items()
             if f.attr["_XlaMustCompile"].b]
  seen, types = set(), set()
  while pending:
    name = pending.pop()
    if name in seen or name not in library:
      continue
    seen.add(name)
    for node in library[name].node_def:
      types.add(node.op)
      for value in node.attr.values():
        if value.HasField("func"):
          pending.append(value.func.name)
        pending += [f.name for f in value.list.func]
  return sorted(types)


def measure(encoder):
  """Three steps (the second on a NaN batch) under a MirroredStrategy of two
  logical CPUs, in graph mode and compiled by XLA, from the same initial
  weights."""
  import tempfile  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  cpu = tf.config.list_physical_devices("CPU")[0]
  tf.config.set_logical_device_configuration(
      cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
  import keras  # pylint: disable=g-import-not-at-top
  from cpc_tf import config as config_lib  # pylint: disable=g-import-not-at-top
  from cpc_tf import cpc  # pylint: disable=g-import-not-at-top
  from cpc_tf.train import loop  # pylint: disable=g-import-not-at-top
  from cpc_tf.train import pretraining  # pylint: disable=g-import-not-at-top

  # Two images per replica: each replica's CPC loss has negatives.
  config = config_lib.PretrainConfig(
      model_dir="unused", batch_size=4, directions=4, learning_rate=1e-3,
      warmup_steps=0, train_steps=3, **GEOMETRY[encoder])
  rows, size = config.grid_size, config.patch_size
  shape = [config.batch_size, rows, rows, size, size, 3]
  batches = tf.stack([tf.random.stateless_uniform(shape, seed=(1, 0)),
                      tf.fill(shape, float("nan")),
                      tf.random.stateless_uniform(shape, seed=(2, 0))])

  def trainer(model_dir, weights):
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    with strategy.scope():
      keras.utils.set_random_seed(0)
      model = cpc.build_model(config)
      if weights is not None:
        model.set_weights(weights)
      optimizer = pretraining.make_optimizer(config)
      optimizer.build(model.trainable_variables)
    return loop.Trainer(
        strategy=strategy, model_dir=model_dir, model=model,
        optimizer=optimizer, compute_loss=lambda m, b: m(b, training=True),
        dataset_fn=None, global_batch_size=config.batch_size,
        train_steps=3, steps_per_loop=1, checkpoint_every=100,
        summary_every=100)

  result, weights = {"encoder": encoder}, None
  with tempfile.TemporaryDirectory() as model_dir:
    for mode in ("graph", "xla"):
      t = trainer(os.path.join(model_dir, mode), weights)
      weights = t.model.get_weights()
      train_fn = t.make_train_function(jit_compile=mode == "xla")
      iterator = iter(t.strategy.experimental_distribute_dataset(
          tf.data.Dataset.from_tensor_slices(batches).unbatch().batch(
              config.batch_size)))
      result[mode] = [{k: float(v) for k, v in
                       train_fn(iterator, tf.constant(1)).items()}
                      for _ in range(3)]
      result[mode + "_updates"] = int(t.optimizer.iterations.numpy())
      result[mode + "_weights_equal_across_replicas"] = all(
          bool(tf.reduce_all(v.value.values[0] == v.value.values[1]))
          for v in t.model.trainable_variables)
      if mode == "xla":
        result["ops"] = compiled_op_types(train_fn.get_concrete_function(
            iterator, tf.constant(1)))
  return result


@pytest.fixture(scope="module", params=sorted(GEOMETRY))
def measured(request):
  completed = subprocess.run(
      [sys.executable, os.path.abspath(__file__), request.param], cwd=ROOT,
      env=dict(os.environ, PYTHONPATH=ROOT), capture_output=True, text=True,
      timeout=900)
  assert completed.returncode == 0, completed.stderr[-4000:]
  return json.loads(completed.stdout.strip().splitlines()[-1])


def test_xla_step_trains_like_the_graph_step(measured):
  graph, xla = measured["graph"], measured["xla"]
  names = set(graph[0])
  # Every direction's loss and accuracy, the total, the skip counter.
  assert {f"loss/{d}" for d in ("top_down", "bottom_up", "left_right",
                                "right_left")} <= names
  assert [step["skipped_steps"] for step in graph] == [0.0, 1.0, 0.0]
  assert [step["skipped_steps"] for step in xla] == [0.0, 1.0, 0.0]
  assert measured["graph_updates"] == measured["xla_updates"] == 2
  for step, (want, got) in enumerate(zip(graph, xla), 1):
    assert set(got) == names
    # Step 1 is the forward pass alone; step 3 follows an update. ResNet-50's
    # XLA gradients differ from graph mode's by rounding that Adam's
    # normalised first step amplifies (3.7e-4 measured at step 3); then a
    # near-tie among 12 candidates may rank the other way, so its step-3
    # accuracies are not compared.
    rel = 1e-3 if step == 3 and measured["encoder"] == "resnet50" else 1e-5
    for name in names:
      if rel > 1e-5 and name.startswith("accuracy/"):
        continue
      assert got[name] == pytest.approx(want[name], rel=rel, abs=1e-6), (
          f"{name} at step {step}")


def test_xla_step_holds_the_whole_step_and_no_host_op(measured):
  ops = set(measured["ops"])
  assert STEP_OPS <= ops, sorted(STEP_OPS - ops)
  assert not ops & HOST_OPS, sorted(ops & HOST_OPS)


def test_both_replicas_hold_the_same_weights_after_compiled_updates(measured):
  assert measured["graph_weights_equal_across_replicas"]
  assert measured["xla_weights_equal_across_replicas"]


if __name__ == "__main__":
  print(json.dumps(measure(sys.argv[1])))
