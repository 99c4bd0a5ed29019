"""The FLOP counter (cpc_tf/perf/flops.py) and the benchmark binary's report.

No test here asserts a time: the machine is shared, timings are not.
"""

import json
import os
import subprocess
import sys
import tempfile

import keras
import numpy as np
import pytest
import tensorflow as tf

from cpc_tf import benchmark
from cpc_tf.perf import flops
from cpc_tf.perf import measure
from cpc_tf.perf import op_profile
from cpc_tf.perf import summary
from conftest import ROOT, SHARED_DATA, flag_error


def _grads_fn(layer, shape):
  x = tf.TensorSpec(shape, tf.float32)

  @tf.function
  def grads(x):
    with tf.GradientTape() as tape:
      tape.watch(x)
      loss = tf.reduce_sum(layer(x))
    return loss, tape.gradient(loss, [x] + layer.trainable_variables)

  return grads, x


def test_conv2d_forward_backward_flops():
  """Conv2D 3x3, 8 -> 16 channels, on 2 x 10 x 10 SAME: 2*M*N*K per pass
  with M = 2*10*10 output positions, N = 16, K = 3*3*8; the backward pass
  has the input gradient and the filter gradient, each as many again."""
  layer = keras.layers.Conv2D(16, 3, padding="same")
  layer.build((2, 10, 10, 8))
  forward = 2 * (2 * 10 * 10) * 16 * (3 * 3 * 8)
  total, by_type, _ = flops.graph_flops(tf.function(layer),
                                        tf.TensorSpec([2, 10, 10, 8]))
  assert total == forward
  assert by_type == {"Conv2D": forward}
  grads, spec = _grads_fn(layer, [2, 10, 10, 8])
  total, by_type, _ = flops.graph_flops(grads, spec)
  assert by_type == {"Conv2D": forward, "Conv2DBackpropInput": forward,
                     "Conv2DBackpropFilter": forward}
  assert total == 3 * forward


def test_strided_conv_counts_output_positions():
  layer = keras.layers.Conv2D(4, 1, strides=2)
  layer.build((1, 8, 8, 3))
  total, _, _ = flops.graph_flops(tf.function(layer),
                                  tf.TensorSpec([1, 8, 8, 3]))
  assert total == 2 * (4 * 4) * 4 * 3


def test_dense_matmul_flops_and_profiler_agree():
  """Dense 32 -> 24 on 5 rows: 2*M*N*K = 2*5*24*32 forward; the input and
  kernel gradients are two matmuls of the same size. The TF profiler's
  float_ops agree on the matmul and add the bias add (5*24)."""
  layer = keras.layers.Dense(24)
  layer.build((5, 32))
  forward = 2 * 5 * 24 * 32
  fn = tf.function(layer)
  total, by_type, _ = flops.graph_flops(fn, tf.TensorSpec([5, 32]))
  assert total == forward and by_type == {"MatMul": forward}
  assert flops.profiler_float_ops(fn, tf.TensorSpec([5, 32])) == (
      forward + 5 * 24)
  grads, spec = _grads_fn(layer, [5, 32])
  assert flops.graph_flops(grads, spec)[0] == 3 * forward


def test_batch_matmul_and_einsum():
  a = tf.TensorSpec([3, 4, 5])
  b = tf.TensorSpec([3, 5, 6])
  expected = 2 * 3 * 4 * 6 * 5
  assert flops.graph_flops(tf.function(tf.matmul), a, b)[0] == expected
  einsum = tf.function(lambda x, y: tf.einsum("bij,bjk->bik", x, y))
  assert flops.graph_flops(einsum, a, b)[0] == expected


def test_tiny_encoder_forward_flops_match_a_hand_count():
  """The tiny preset on one 8x8 patch, conv by conv (2 * positions * Cout *
  k * k * Cin): 3x3 stem, a 32/128 block at 8x8 with projection, a strided
  64/256 block with projection and a plain one at 4x4; the 1x1 convs run
  as matmuls and count the same."""
  from cpc_tf.models import resnet  # pylint: disable=g-import-not-at-top
  encoder = resnet.Encoder("tiny")
  spec = tf.TensorSpec([1, 1, 1, 8, 8, 3])
  encoder(tf.zeros(spec.shape))

  def conv(positions, cin, cout, k=1):
    return 2 * positions * cout * k * k * cin

  hand = (conv(64, 3, 32, 3)
          + conv(64, 32, 32) + conv(64, 32, 32, 3) + 2 * conv(64, 32, 128)
          + conv(64, 128, 64) + conv(16, 64, 64, 3) + conv(16, 64, 256)
          + conv(16, 128, 256)
          + conv(16, 256, 64) + conv(16, 64, 64, 3) + conv(16, 64, 256))
  total, by_type, _ = flops.graph_flops(tf.function(encoder.call), spec)
  assert total == hand
  assert set(by_type) == {"Conv2D", "MatMul"}


def test_unused_gradient_ops_are_pruned():
  """Gradients w.r.t. the weights only: TF builds the conv's input
  gradient too, but nothing uses it, so it is not counted."""
  layer = keras.layers.Conv2D(4, 3)
  layer.build((1, 6, 6, 2))

  @tf.function
  def weight_grads(x):
    with tf.GradientTape() as tape:
      loss = tf.reduce_sum(layer(x))
    return loss, tape.gradient(loss, layer.trainable_variables)

  spec = tf.TensorSpec([1, 6, 6, 2])
  forward = 2 * 16 * 4 * 18
  assert flops.graph_flops(weight_grads, spec)[0] == 2 * forward
  assert flops.graph_flops(weight_grads, spec, prune=False)[0] == 3 * forward


def test_dynamic_shapes_are_rejected():
  layer = keras.layers.Dense(3)
  layer.build((None, 4))
  with pytest.raises(ValueError, match="dynamic shape"):
    flops.graph_flops(tf.function(layer), tf.TensorSpec([None, 4]))


def test_tpu_estimate_is_labelled_and_scales():
  estimate = summary.tpu_estimate(1e12, batch_size=512, chips=(8, 16),
                                    mfu=(0.5,))
  assert estimate["computed_estimate"] is True
  eight, sixteen = estimate["rows"]
  np.testing.assert_allclose(
      eight["step_seconds"], 512e12 / (8 * 123e12 * 0.5))
  np.testing.assert_allclose(eight["step_seconds"],
                             2 * sixteen["step_seconds"])


def test_op_profile_counts_every_executed_op(tmp_path):
  """The profiler's op table sees each executed matmul once per call and
  puts it among the ops whose FLOPs MFU counts."""
  w = tf.Variable(tf.eye(64))

  @tf.function
  def three_layers(x):
    for _ in range(3):
      x = tf.nn.relu(tf.matmul(x, w))
    return x

  x = tf.ones([32, 64])
  three_layers(x)
  path = op_profile.trace(lambda: [three_layers(x).numpy() for _ in range(2)],
                          str(tmp_path))
  calls = {kind: n for kind, (_, n) in op_profile.op_seconds(path).items()}
  assert sum(n for kind, n in calls.items() if "MatMul" in kind) == 6, calls
  flops_per_call = 3 * 2 * 32 * 64 * 64
  table = op_profile.op_table(path, steps=2, step_seconds=1.0,
                              counted_flops=flops_per_call)
  matmul_rows = [r for r in table["top_ops"] if "MatMul" in r["op_type"]]
  assert matmul_rows and all(r["counted"] for r in matmul_rows)
  assert sum(r["calls_per_step"] for r in matmul_rows) == 3
  share = table["counted_ops_share_of_op_time"]
  assert 0 < share <= 1
  # MFU = counted share of the step x the counted ops' rate in that share.
  np.testing.assert_allclose(
      share * table["counted_ops_flops_per_sec"] * 1.0, flops_per_call)


def test_benchmark_writes_documented_keys(tmp_path):
  """The binary with its quickest settings (in one process, float32 only)
  writes the documented JSON keys and a Markdown table; with real JPEGs
  (a few of the shared VOC subset's, when present) also the pipeline's
  rate at the paper's geometry."""
  out_json, out_md = tmp_path / "b.json", tmp_path / "b.md"
  voc = SHARED_DATA / "voc2007_subset" / "JPEGImages"
  jpegs = tmp_path / "jpegs"
  if voc.is_dir():
    jpegs.mkdir()
    for path in sorted(voc.glob("*.jpg"))[:4]:
      (jpegs / path.name).symlink_to(path)
  proc = subprocess.run(
      [sys.executable, "-m", "cpc_tf.benchmark", "--quick", "--noisolate",
       "--nobfloat16", f"--output_json={out_json}",
       f"--output_md={out_md}", f"--paper_images={jpegs}"],
      cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  report = json.loads(out_json.read_text())
  for key in ("mfu", "pipeline_to_step_ratio", "end_to_end_to_step_ratio",
              "peak", "pipeline", "train", "machine", "flop_counting",
              "load_before", "load_after", "consistent", "wall_seconds"):
    assert key in report, key
  assert 0.0 < report["mfu"]
  # The hardware, and MFU against the better of TensorFlow's and numpy's
  # float32 matmul peaks.
  for key in ("isa", "mfu_vs_best_peak", "sys_share", "numpy_peak",
              "best_float32_peak"):
    assert key in report, key
  with open("/proc/cpuinfo") as f:
    flags = next(line for line in f if line.startswith("flags")).split()
  assert report["isa"] == report["machine"]["isa"]
  assert set(report["isa"]) <= set(flags)
  assert set(report["isa"]) == {f for f in flags if f in ("avx2", "fma") or
                                f.startswith(("avx512", "amx"))}
  assert report["numpy_peak"]["flops_per_sec"] > 0
  assert report["best_float32_peak"] == max(
      report["peak"]["float32"]["flops_per_sec"],
      report["numpy_peak"]["flops_per_sec"])
  assert report["mfu_vs_best_peak"] == pytest.approx(
      report["train"]["tiny/demo/b4/float32"]["flops_per_sec"] /
      report["best_float32_peak"])
  assert report["mfu_vs_best_peak"] <= report["mfu"]
  assert 0.0 <= report["sys_share"] < 1.0
  # What the kernel did per step (the profile of sys_share).
  assert set(report["kernel_events_per_step"]) == {
      "minor_page_faults", "major_page_faults", "voluntary_context_switches",
      "involuntary_context_switches"}
  assert all(v >= 0 for v in report["kernel_events_per_step"].values())
  assert "context switches per step" in out_md.read_text()
  assert "ISA " in out_md.read_text()
  assert report["peak"]["float32"]["flops_per_sec"] > 0
  assert report["pipeline"]["images_per_sec"] > 0
  (name, tiny), = report["train"].items()
  assert name == "tiny/demo/b4/float32"
  for key in ("flops_per_step", "step_seconds", "compile_seconds",
              "images_per_sec", "patches_per_sec", "mfu", "end_to_end",
              "learn", "peak_rss_bytes"):
    assert key in tiny, key
  for key in ("median", "min", "max", "n"):
    assert key in tiny["step_seconds"]
  assert tiny["patches_per_image"] == 49
  # The step's FLOPs are its convolutions and matmuls, forward+backward.
  assert set(tiny["flops_by_op_type"]) >= {
      "Conv2D", "Conv2DBackpropInput", "Conv2DBackpropFilter", "MatMul"}
  assert sum(tiny["flops_by_op_type"].values()) == tiny["flops_per_step"]
  # The profile of the same step: its convolutions are among the counted ops.
  profile = report["op_profile"]
  assert any(r["counted"] and "Conv2D" in r["op_type"]
             for r in profile["top_ops"])
  assert 0 < profile["counted_ops_fraction_of_peak"]
  if voc.is_dir():
    paper = report["pipeline_paper"]
    assert paper["geometry"] == "paper" and paper["batch_size"] == 2
    assert paper["augment"]["elastic"] and paper["augment"]["jitter"] == 10
    assert report["pipeline_paper_images_per_sec_per_core"] == (
        paper["images_per_sec"] / report["machine"]["cores"])
    assert report["pipeline_paper_images_per_cpu_second"] > 0
    assert "paper's geometry" in out_md.read_text()
  else:
    assert "is not a folder" in report["pipeline_paper"]["skipped"]
    assert "pipeline_paper_images_per_sec_per_core" not in report
  assert "MFU" in out_md.read_text()
  # The trace went to a temporary directory; the report names no such path.
  assert tempfile.gettempdir() not in out_json.read_text()
  assert "<tmp>/cpc_benchmark_trace_" in out_json.read_text()
  assert "Where the tiny float32 step's time goes" in out_md.read_text()


def test_isa_limit_makes_onednn_run_avx2_kernels():
  """--isa_limit=avx2's environment, inherited by a measurement's process,
  makes TensorFlow's oneDNN dispatch to its AVX2 kernels (also on an
  AVX-512 CPU); it needs one process per measurement."""
  env = dict(os.environ, ONEDNN_VERBOSE="1", **measure.ISA_LIMITS["avx2"])
  proc = subprocess.run(
      [sys.executable, "-c", "import tensorflow as tf; x = tf.ones([64, 64])"
       "; tf.function(tf.matmul)(x, x).numpy()"],
      env=env, capture_output=True, text=True, timeout=300, check=True)
  isa = [line for line in proc.stdout.splitlines()
         if line.startswith("onednn_verbose") and ",isa:" in line]
  assert isa and isa[0].endswith("isa:Intel AVX2"), isa
  assert flag_error(benchmark.BenchmarkConfig, "--isa_limit=avx2",
                    "--noisolate") == (
      "error: --isa_limit=avx2 needs --isolate: the limit applies to "
      "processes started after it is set")
