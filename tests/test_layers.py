"""Tests for cpc_tf/layers.py against the paper's appendix A.2 pseudocode.

The NumPy reference below is transcribed from the appendix (`pixelCNN` and
`CPC`), not from cpc_tf/layers.py: convolutions are written out by hand
(1x1 conv as a matmul, 1x3 SAME conv and 2x1 VALID conv with explicit
padding and slicing), and the softmax cross-entropy is an explicit
log-sum-exp, all in float64. Only the weights are read from the Keras layers.
"""

import json
import math
import os
import pathlib
import subprocess
import sys
import textwrap

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
  sys.path.insert(0, str(ROOT))

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

from cpc_tf.layers import CPCLoss, PixelCNN  # noqa: E402


@pytest.fixture(autouse=True)
def _seed():
  # Keras initialisers are unseeded by default: make every test repeatable.
  keras.utils.set_random_seed(0)


# --------------------------------------------------------------------------
# NumPy reference (appendix A.2), float64.
# --------------------------------------------------------------------------

def _w(conv):
  """(kernel [kh, kw, in, out], bias [out]) of a Keras Conv2D as float64."""
  return (np.asarray(conv.kernel.numpy(), np.float64),
          np.asarray(conv.bias.numpy(), np.float64))


def np_conv1x1(x, kernel, bias):
  assert kernel.shape[:2] == (1, 1)
  return x @ kernel[0, 0] + bias


def np_conv1x3_same(x, kernel, bias):
  """Kernel (1, 3), SAME: one zero column on each side, then a sum of three
  shifted 1x1 convs."""
  assert kernel.shape[:2] == (1, 3)
  w = x.shape[2]
  xp = np.pad(x, [(0, 0), (0, 0), (1, 1), (0, 0)])
  return sum(xp[:, :, k:k + w, :] @ kernel[0, k] for k in range(3)) + bias


def np_conv2x1_valid(x, kernel, bias):
  """Kernel (2, 1), VALID: output row r = rows r and r + 1 of the input."""
  assert kernel.shape[:2] == (2, 1)
  h = x.shape[1]
  return x[:, 0:h - 1] @ kernel[0, 0] + x[:, 1:h] @ kernel[1, 0] + bias


def relu(x):
  return np.maximum(x, 0.0)


def np_pixelcnn(latents, blocks):
  """appendix A.2 `pixelCNN`; `blocks` = list of 4 (kernel, bias) pairs."""
  cres = latents
  for (w_in, b_in), (w_row, b_row), (w_up, b_up), (w_out, b_out) in blocks:
    c = relu(np_conv1x1(cres, w_in, b_in))
    c = np_conv1x3_same(c, w_row, b_row)
    c = np.pad(c, [[0, 0], [1, 0], [0, 0], [0, 0]])
    c = relu(np_conv2x1_valid(c, w_up, b_up))
    c = np_conv1x1(c, w_out, b_out)
    cres = cres + c
  return relu(cres)


def np_softmax_xent(logits, labels):
  """Per-row -log softmax(logits)[label], with a stable log-sum-exp."""
  m = logits.max(axis=1, keepdims=True)
  lse = m[:, 0] + np.log(np.exp(logits - m).sum(axis=1))
  return lse - logits[np.arange(len(labels)), labels]


def np_cpc(latents, weights, target_dim, emb_scale, steps_to_ignore,
           steps_to_predict):
  """appendix A.2 `CPC`; per step the cross-entropy is averaged over the
  elements (the `loss +=` of the pseudocode applied to the mean), steps
  summed. Also returns the accuracy (argmax == label) averaged over steps."""
  context = np_pixelcnn(latents, weights["blocks"])
  targets = np_conv1x1(latents, *weights["targets"])
  batch_dim, col_dim, row_dim = targets.shape[:-1]
  targets = targets.reshape(-1, target_dim)
  loss, accs = 0.0, []
  for k, i in enumerate(range(steps_to_ignore, steps_to_predict)):
    col_dim_i = col_dim - i - 1
    total_elements = batch_dim * col_dim_i * row_dim
    preds_i = np_conv1x1(context, *weights["preds"][k])
    preds_i = preds_i[:, :-(i + 1), :, :] * emb_scale
    preds_i = preds_i.reshape(-1, target_dim)
    logits = preds_i @ targets.T
    b = np.arange(total_elements) // (col_dim_i * row_dim)
    col = np.arange(total_elements) % (col_dim_i * row_dim)
    labels = b * col_dim * row_dim + (i + 1) * row_dim + col
    loss += np_softmax_xent(logits, labels).mean()
    accs.append(np.mean(logits.argmax(axis=1) == labels))
  return loss, float(np.mean(accs))


def pixelcnn_weights(pixelcnn):
  return [[_w(conv) for conv in block] for block in pixelcnn.blocks]


def cpc_weights(layer):
  return {"blocks": pixelcnn_weights(layer.context_network),
          "targets": _w(layer.target_projection),
          "preds": [_w(p) for p in layer.prediction_projections]}


def _randomize_biases(layer, rng, scale=0.1):
  """Keras initialises biases to zero; give them values so that the bias
  terms of the reference are exercised too."""
  for v in layer.weights:
    if v.path.endswith("bias"):
      v.assign(rng.normal(scale=scale, size=v.shape).astype(np.float32))


# --------------------------------------------------------------------------
# Reference checks of the helpers themselves (against tf.nn.conv2d).
# --------------------------------------------------------------------------

@pytest.mark.parametrize("kh,kw,padding", [(1, 3, "SAME"), (2, 1, "VALID"),
                                           (1, 1, "VALID")])
def test_numpy_conv_helpers_match_tf_conv2d(kh, kw, padding):
  rng = np.random.default_rng(0)
  x = rng.normal(size=(2, 5, 4, 3))
  kernel = rng.normal(size=(kh, kw, 3, 6))
  bias = rng.normal(size=6)
  fn = {(1, 3): np_conv1x3_same, (2, 1): np_conv2x1_valid,
        (1, 1): np_conv1x1}[(kh, kw)]
  expected = tf.nn.conv2d(x, kernel, 1, padding).numpy() + bias
  np.testing.assert_allclose(fn(x, kernel, bias), expected, rtol=1e-12,
                             atol=1e-12)


# --------------------------------------------------------------------------
# PixelCNN.
# --------------------------------------------------------------------------

def test_pixelcnn_structure():
  net = PixelCNN(hidden_dim=16)
  net.build((2, 5, 4, 8))
  assert len(net.blocks) == 5
  for block in net.blocks:
    assert [tuple(c.kernel.shape) for c in block] == [
        (1, 1, 8, 16), (1, 3, 16, 16), (2, 1, 16, 16), (1, 1, 16, 8)]
    assert all(c.bias is not None for c in block)


@pytest.mark.parametrize("shape", [(2, 7, 7, 16), (3, 6, 5, 8), (1, 3, 2, 4)])
def test_pixelcnn_matches_numpy_reference(shape):
  rng = np.random.default_rng(1)
  net = PixelCNN(hidden_dim=16)
  net.build(shape)
  _randomize_biases(net, rng)
  x = rng.normal(size=shape)
  got = net(tf.constant(x, tf.float32)).numpy()
  want = np_pixelcnn(x, pixelcnn_weights(net))
  assert got.shape == shape
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_pixelcnn_is_causal_in_rows():
  """d context[:, r] / d latents[:, r'] == 0 for r' > r (exactly), != 0 for
  r' = r and (when r > 0) for r' = r - 1; with 5 blocks each reaching one
  row up, rows r' < r - 5 are also out of the receptive field."""
  b, h, w, d = 2, 8, 3, 4
  net = PixelCNN(hidden_dim=8)
  net.build((b, h, w, d))
  x = tf.constant(np.random.default_rng(2).normal(size=(b, h, w, d)),
                  tf.float32)
  for r in range(h):
    with tf.GradientTape() as tape:
      tape.watch(x)
      out = tf.reduce_sum(net(x)[:, r])
    g = np.abs(tape.gradient(out, x).numpy()).sum(axis=(0, 2, 3))
    assert np.all(g[r + 1:] == 0.0), (r, g)
    assert g[r] > 0.0, (r, g)
    if r > 0:
      assert g[r - 1] > 0.0, (r, g)
    assert np.all(g[:max(0, r - 5)] == 0.0), (r, g)


# --------------------------------------------------------------------------
# CPCLoss.
# --------------------------------------------------------------------------

CPC_CASES = [
    # (shape, steps_to_ignore, steps_to_predict, target_dim)
    ((2, 7, 7, 16), 2, 3, 8),
    ((2, 7, 7, 16), 0, 3, 64),
    ((2, 7, 7, 16), 1, 4, 8),
    ((3, 6, 5, 8), 2, 3, 64),
    ((3, 6, 5, 8), 0, 3, 8),
    ((3, 6, 5, 8), 1, 4, 64),
]


@pytest.mark.parametrize("shape,ignore,predict,target_dim", CPC_CASES)
def test_cpc_loss_matches_numpy_reference(shape, ignore, predict, target_dim):
  rng = np.random.default_rng(3)
  layer = CPCLoss(target_dim=target_dim, steps_to_ignore=ignore,
                  steps_to_predict=predict, hidden_dim=16)
  layer.build(shape)
  assert len(layer.prediction_projections) == predict - ignore
  _randomize_biases(layer, rng)
  # Large enough latents that the logits are far from uniform (so the loss
  # and the argmax are not trivially log N / ties).
  x = rng.normal(scale=3.0, size=shape)
  xt = tf.constant(x, tf.float32)
  loss, acc = layer.loss_and_accuracy(xt)
  want_loss, want_acc = np_cpc(x, cpc_weights(layer), target_dim, 0.1,
                               ignore, predict)
  np.testing.assert_allclose(float(loss), want_loss, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(float(layer(xt)), want_loss, rtol=1e-5,
                             atol=1e-5)
  np.testing.assert_allclose(float(acc), want_acc, atol=1e-6)


def test_cpc_loss_emb_scale_matches_reference():
  shape = (2, 5, 4, 8)
  rng = np.random.default_rng(4)
  layer = CPCLoss(target_dim=8, emb_scale=0.5, steps_to_ignore=0,
                  steps_to_predict=2, hidden_dim=16)
  layer.build(shape)
  x = rng.normal(size=shape)
  loss = float(layer(tf.constant(x, tf.float32)))
  want, _ = np_cpc(x, cpc_weights(layer), 8, 0.5, 0, 2)
  np.testing.assert_allclose(loss, want, rtol=1e-5, atol=1e-5)


def test_cpc_loss_at_init_is_near_log_num_candidates():
  """With emb_scale=0.1 the logits start small, so each step's loss is close
  to log(B*H*W) (uniform over every location in the batch)."""
  shape = (4, 7, 7, 16)
  layer = CPCLoss(target_dim=64, steps_to_ignore=0, steps_to_predict=3,
                  hidden_dim=32)
  layer.build(shape)
  x = tf.random.stateless_uniform(shape, seed=(5, 0))
  loss, acc = layer.loss_and_accuracy(x)
  expected = 3 * math.log(4 * 7 * 7)
  assert abs(float(loss) - expected) < 0.02 * expected, (float(loss), expected)
  assert float(acc) < 0.05


def test_cpc_loss_rejects_empty_step_range():
  with pytest.raises(ValueError):
    CPCLoss(steps_to_ignore=3, steps_to_predict=3)


def test_cpc_loss_training_makes_latents_predictable():
  """A few optimiser steps on one fixed batch lower the loss and raise the
  accuracy: the gradients of the loss reach every sub-layer and point the
  right way."""
  shape = (2, 5, 4, 8)
  layer = CPCLoss(target_dim=16, steps_to_ignore=0, steps_to_predict=2,
                  hidden_dim=16)
  layer.build(shape)
  x = tf.random.stateless_normal(shape, seed=(6, 0))
  opt = keras.optimizers.Adam(1e-2)

  @tf.function
  def step():
    with tf.GradientTape() as tape:
      loss, acc = layer.loss_and_accuracy(x)
    grads = tape.gradient(loss, layer.trainable_variables)
    opt.apply_gradients(zip(grads, layer.trainable_variables))
    return loss, acc, grads

  loss0, acc0, grads = step()
  # Every weight (pixelCNN, target and prediction projections) gets gradient,
  # except the target projection's bias: it adds the same pred . bias to
  # every logit of a row, which the softmax ignores, so its gradient is 0 up
  # to float32 round-off.
  names = [v.path for v in layer.trainable_variables]
  for name, g in zip(names, grads):
    assert g is not None, name
    size = float(tf.reduce_max(tf.abs(g)))
    if name.endswith("target_projection/bias"):
      assert size < 1e-5, (name, size)
    else:
      assert size > 1e-6, (name, size)
  for _ in range(40):
    loss, acc = step()[:2]
  assert float(loss) < 0.5 * float(loss0), (float(loss0), float(loss))
  assert float(acc) > float(acc0)
  # The trained weights give non-trivial logits (accuracy neither 0 nor 1
  # at init-like ties): the reference still agrees on loss and accuracy.
  loss, acc = layer.loss_and_accuracy(x)
  want_loss, want_acc = np_cpc(x.numpy().astype(np.float64),
                               cpc_weights(layer), 16, 0.1, 0, 2)
  assert 0.0 < want_acc
  np.testing.assert_allclose(float(loss), want_loss, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(float(acc), want_acc, atol=1e-6)


# --------------------------------------------------------------------------
# Cross-replica negatives (2 logical CPUs, MirroredStrategy) in a subprocess:
# logical devices must be configured before TF runs any op.
# --------------------------------------------------------------------------

_CROSS_REPLICA_SCRIPT = textwrap.dedent("""
    import json
    import numpy as np
    import tensorflow as tf

    cpus = tf.config.list_physical_devices("CPU")
    tf.config.set_logical_device_configuration(
        cpus[0], [tf.config.LogicalDeviceConfiguration()] * 2)

    from cpc_tf.layers import CPCLoss

    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    assert strategy.num_replicas_in_sync == 2
    B, H, W, D = 4, 5, 4, 8
    latents = tf.constant(np.random.default_rng(0).normal(
        size=(B, H, W, D)).astype(np.float32))
    kwargs = dict(target_dim=8, hidden_dim=16, steps_to_ignore=0,
                  steps_to_predict=3)
    local = strategy.experimental_distribute_values_from_function(
        lambda ctx: latents[ctx.replica_id_in_sync_group * (B // 2):
                            (ctx.replica_id_in_sync_group + 1) * (B // 2)])
    result = {}
    for cross in (True, False):
      with strategy.scope():
        dist = CPCLoss(cross_replica_negatives=cross, **kwargs)
        dist.build(latents.shape)
      rng = np.random.default_rng(1)
      for v in dist.weights:
        if v.path.endswith("bias"):
          v.assign(rng.normal(scale=0.1, size=v.shape).astype(np.float32))
      single = CPCLoss(**kwargs)
      single.build(latents.shape)
      single.set_weights(dist.get_weights())

      @tf.function
      def run(x):
        def replica_fn(x):
          with tf.GradientTape() as tape:
            loss, acc = dist.loss_and_accuracy(x)
          return loss, acc, tape.gradient(loss, dist.trainable_variables)
        loss, acc, grads = strategy.run(replica_fn, args=(x,))
        return (strategy.experimental_local_results(loss),
                strategy.reduce("MEAN", acc, None),
                [strategy.reduce("SUM", g, None) / 2 for g in grads])

      losses, acc, grads = run(local)
      with tf.GradientTape() as tape:
        s_loss, s_acc = single.loss_and_accuracy(latents)
      s_grads = tape.gradient(s_loss, single.trainable_variables)
      result[str(cross)] = {
          "replica_losses": [float(l) for l in losses],
          "acc": float(acc),
          "single_loss": float(s_loss),
          "single_acc": float(s_acc),
          "grad_names": [v.path.split("/", 1)[1]
                         for v in dist.trainable_variables],
          "single_grad_names": [v.path.split("/", 1)[1]
                                for v in single.trainable_variables],
          "grad_max_abs_diff": [float(tf.reduce_max(tf.abs(a - b)))
                                for a, b in zip(grads, s_grads)],
          "grad_max_abs": [float(tf.reduce_max(tf.abs(b)))
                           for b in s_grads],
      }

    # Uneven replica batches (3 + 2 images, as in a final partial batch):
    # all_gather accepts different sizes along the gathered axis.
    B = 5
    latents = tf.constant(np.random.default_rng(2).normal(
        size=(B, H, W, D)).astype(np.float32))
    splits = [0, 3, 5]
    local = strategy.experimental_distribute_values_from_function(
        lambda ctx: latents[splits[ctx.replica_id_in_sync_group]:
                            splits[ctx.replica_id_in_sync_group + 1]])
    with strategy.scope():
      dist = CPCLoss(cross_replica_negatives=True, **kwargs)
      dist.build(latents.shape)
    single = CPCLoss(**kwargs)
    single.build(latents.shape)
    single.set_weights(dist.get_weights())

    @tf.function
    def run_uneven(x):
      return strategy.experimental_local_results(
          strategy.run(dist.loss_and_accuracy, args=(x,)))

    per_replica = run_uneven(local)
    s_loss, s_acc = single.loss_and_accuracy(latents)
    result["uneven"] = {
        "sizes": [3, 2],
        "replica_losses": [float(l) for l, _ in per_replica],
        "replica_accs": [float(a) for _, a in per_replica],
        "single_loss": float(s_loss),
    }
    print("RESULT" + json.dumps(result))
""")


@pytest.fixture(scope="module")
def cross_replica_result():
  env = dict(os.environ, PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL="2")
  proc = subprocess.run([sys.executable, "-c", _CROSS_REPLICA_SCRIPT],
                        cwd=str(ROOT), env=env, capture_output=True,
                        text=True, timeout=300)
  lines = [l for l in proc.stdout.splitlines() if l.startswith("RESULT")]
  assert proc.returncode == 0 and lines, proc.stdout + proc.stderr[-5000:]
  return json.loads(lines[-1][len("RESULT"):])


def test_cross_replica_negatives_match_global_batch(cross_replica_result):
  r = cross_replica_result["True"]
  assert r["grad_names"] == r["single_grad_names"]
  # Equal per-replica batches: the global mean is the mean of replica means.
  np.testing.assert_allclose(np.mean(r["replica_losses"]), r["single_loss"],
                             rtol=1e-5)
  np.testing.assert_allclose(r["acc"], r["single_acc"], atol=1e-6)
  # Gradients (summed over replicas / 2) equal the single-call gradients,
  # including the cross terms that flow back through all_gather into the
  # other replica's target projection.
  for name, diff, scale in zip(r["grad_names"], r["grad_max_abs_diff"],
                               r["grad_max_abs"]):
    # (The target bias gets no gradient: softmax shift invariance.)
    if not name.endswith("target_projection/bias"):
      assert scale > 1e-6, name
    assert diff <= 1e-5 * max(scale, 1.0), (name, diff, scale)


def test_local_negatives_differ_from_global_batch(cross_replica_result):
  """Without cross_replica_negatives each replica only contrasts against
  its own half of the batch (fewer candidates -> lower loss at init)."""
  r = cross_replica_result["False"]
  local = np.mean(r["replica_losses"])
  assert abs(local - r["single_loss"]) > 0.1, (local, r["single_loss"])
  assert local < r["single_loss"]
  # And the gradients differ from the global-batch ones.
  assert max(r["grad_max_abs_diff"]) > 1e-3


def test_cross_replica_negatives_with_uneven_replica_batches(
    cross_replica_result):
  """Every prediction has the same weight as in the single call, so the
  global loss is the size-weighted mean of the per-replica means."""
  r = cross_replica_result["uneven"]
  weighted = np.dot(r["sizes"], r["replica_losses"]) / sum(r["sizes"])
  np.testing.assert_allclose(weighted, r["single_loss"], rtol=1e-5)


@pytest.mark.parametrize("turns", [0, 1, 2, 3])
def test_rot90_matches_tf_image(turns):
  """cpc._rot90 (static transposes/reverses, no control flow) is
  tf.image.rot90 on a non-square latent grid."""
  from cpc_tf import cpc  # pylint: disable=g-import-not-at-top
  latents = tf.reshape(tf.range(2 * 3 * 4 * 5, dtype=tf.float32),
                       [2, 3, 4, 5])
  np.testing.assert_array_equal(cpc._rot90(latents, turns),  # pylint: disable=protected-access
                                tf.image.rot90(latents, k=turns))
