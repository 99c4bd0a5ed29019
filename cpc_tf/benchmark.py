r"""CPC v2 pretraining (§4.1, appendix A.2) against this machine's limits.

  python -m cpc_tf.benchmark           # everything, default flags
  python -m cpc_tf.benchmark --quick   # a smoke run (tests/test_benchmark.py)

Measures, and writes as JSON (--output_json) and a Markdown table
(--output_md):

  * peak: the attainable matmul rate of this machine, a large float32 (and
    bfloat16) `tf.matmul`, best size, FLOP/s;
  * pipeline: the input pipeline alone (`pretraining.make_dataset_fn`, the
    one training uses: decode/cache, crop, patches, per-patch augmentation),
    images/s;
  * train: per preset, batch and precision, the pretraining step of
    `loop.Trainer` (several steps per tf.function call) fed from in-memory
    tensors, and fed by the real pipeline (end to end): images/s,
    patches/s, MFU, compile time apart from the steady state, peak RSS,
    and the loss after N real steps (float32 vs mixed bfloat16);
  * xla: one step as a `tf.function` with and without `jit_compile`;
  * op_profile: a profiler trace of the tiny float32 steps (--trace_dir,
    for TensorBoard) as an op table: the share of the step spent in the
    convolutions and matmuls, their FLOP rate there, and the other ops.

MFU = counted FLOPs per step / median step time / measured float32 (or
bfloat16) matmul peak. FLOPs are counted from the step's graph by
`cpc_tf.flops.graph_flops`: convolutions and matmuls only (2 per
multiply-add), forward + backward, from static shapes; normalisation,
activations and the optimizer update are not counted.

Every measurement runs in its own subprocess (--isolate, the default), so
its peak RSS is its own and one preset's memory does not inflate the next.
Timings are medians over --repeats repetitions with their min/max; the
machine's load average is recorded before and after, since other
processes on the same cores slow everything down.
"""

import contextlib
import dataclasses
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app
from absl import flags
from absl import logging

FLAGS = flags.FLAGS
flags.DEFINE_string("output_json", "results/benchmark_cpu.json",
                    "Where the JSON goes.")
flags.DEFINE_string("output_md", "results/benchmark_cpu.md",
                    "Where the Markdown table goes ('' for none).")
flags.DEFINE_string("dataset", "data/cifar10_demo",
                    "Data set of the pipeline measurements (see "
                    "cpc_tf.pretrain --dataset).")
flags.DEFINE_string("paper_images", "../shared/data/voc2007_subset/JPEGImages",
                    "A folder of JPEGs (e.g. VOC's ~500x375 ones, read as "
                    "one class) on which the pipeline is also measured at "
                    "the paper's geometry (240/80/32, all augmentations, "
                    "no cache); skipped with a note when absent.")
flags.DEFINE_integer("paper_batch_size", 16, "Batch of the paper-geometry "
                     "pipeline measurement.")
flags.DEFINE_integer("batch_size", 32, "Batch of the tiny preset (the "
                     "demo's).")
flags.DEFINE_integer("steps_per_loop", 5, "Optimizer steps per timed "
                     "tf.function call (the Trainer's steps_per_loop).")
flags.DEFINE_integer("repeats", 3, "Timed calls per measurement; medians "
                     "and min/max are over these.")
flags.DEFINE_integer("learn_steps", 20, "Real-data steps before the loss is "
                     "compared between float32 and bfloat16.")
flags.DEFINE_bool("bfloat16", True, "Also measure mixed bfloat16.")
flags.DEFINE_bool("xla", True, "Also measure one step with jit_compile.")
flags.DEFINE_string("trace_dir", "", "Where the profiler trace of the tiny "
                    "float32 steps goes (open with tensorboard --logdir); "
                    "'' = a temporary directory. The op table it gives is in "
                    "the report either way.")
flags.DEFINE_list("extra", ["resnet50@small"],
                  "More train measurements, float32: <preset>@<batch> at the "
                  "demo geometry, or <preset>@small (80x80 images, 32x32 "
                  "patches at stride 16, batch 2).")
flags.DEFINE_bool("resnet161_paper", True, "Run one resnet161 step at the "
                  "paper's geometry (240/80/32) at batch 2.")
flags.DEFINE_float("resnet161_min_free_gb", 12.0, "Skip the resnet161 step "
                   "(recorded as skipped) when less memory than this is "
                   "available (MemAvailable).")
flags.DEFINE_bool("quick", False, "Tiny settings for tests: batch 4, one "
                  "direction, 2 repeats of 2 steps, no extras, no resnet161, "
                  "no XLA.")
flags.DEFINE_bool("isolate", True, "One subprocess per measurement (own "
                  "peak RSS); --noisolate runs all in this process.")
flags.DEFINE_string("child", "", "Internal: a JSON measurement spec to run "
                    "in this process.")
flags.DEFINE_string("child_output", "", "Internal: where the child writes.")

# The demo geometry and augmentation (flags/demo_cpu.flags).
DEMO = dict(image_size=32, patch_size=8, patch_stride=4, directions=4,
            steps_to_ignore=1, steps_to_predict=3, learning_rate=1e-3,
            warmup_steps=50, color_drop=True, auto_augment=True,
            color_jitter=True, elastic=False, jitter=1, flip=True,
            cache_images="true")
SMALL = dict(DEMO, image_size=80, patch_size=32, patch_stride=16)
# Decoded every epoch, as ImageNet must be.
PAPER = dict(DEMO, image_size=240, patch_size=80, patch_stride=32,
             steps_to_ignore=2,
             jitter=10, elastic=True, cache_images="false")
GEOMETRIES = {"demo": DEMO, "small": SMALL, "paper": PAPER}
MATMUL_SIZES = (1024, 2048, 4096)
TPU_V3_BF16_PEAK_PER_CHIP = 123e12  # Public figure, FLOP/s.


@dataclasses.dataclass
class TrainSpec:
  preset: str = "tiny"
  geometry: str = "demo"
  batch_size: int = 32
  precision: str = "float32"  # or "bfloat16" (mixed)
  steps_per_loop: int = 5
  repeats: int = 5
  learn_steps: int = 0  # >0: train this many real steps first, from init.
  end_to_end: bool = True  # Also time steps fed by the real pipeline.
  xla: bool = False  # Time a single jit_compile'd step against graph mode.
  op_profile: str = ""  # A directory: trace k in-memory steps, op table.
  dataset: str = "data/cifar10_demo"
  directions: int = 4
  seed: int = 0


def _load():
  try:
    return list(os.getloadavg())
  except OSError:
    return None


def _proc_bytes(path, key):
  """A "<key>: <n> kB" line of a /proc file, in bytes (None if absent)."""
  with contextlib.suppress(OSError):
    with open(path) as f:
      for line in f:
        if line.startswith(key + ":"):
          return int(line.split()[1]) * 1024
  return None


def _available_bytes():
  return _proc_bytes("/proc/meminfo", "MemAvailable")


def _peak_rss_bytes():
  """High-water mark of this process's resident memory."""
  return (_proc_bytes("/proc/self/status", "VmHWM") or
          resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)


def _cpu_seconds():
  """CPU time of this process (all threads), user + system."""
  usage = resource.getrusage(resource.RUSAGE_SELF)
  return usage.ru_utime + usage.ru_stime


def _stats(values):
  import numpy as np  # pylint: disable=g-import-not-at-top
  values = np.asarray(values, np.float64)
  return {"median": float(np.median(values)), "min": float(values.min()),
          "max": float(values.max()), "n": int(values.size)}


# ---------------------------------------------------------------------------
# Measurements (each runs in one process).
# ---------------------------------------------------------------------------

def measure_peak(sizes=MATMUL_SIZES, repeats=5, bfloat16=True):
  """Best median rate of an n x n x n tf.matmul over `sizes`, per dtype."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  result = {}
  dtypes = ["float32"] + (["bfloat16"] if bfloat16 else [])
  for dtype in dtypes:
    by_size = {}
    for n in sizes:
      a = tf.cast(tf.random.stateless_normal([n, n], seed=(1, 0)), dtype)
      b = tf.cast(tf.random.stateless_normal([n, n], seed=(2, 0)), dtype)
      matmul = tf.function(tf.matmul)
      try:
        matmul(a, b).numpy()
      except (tf.errors.InvalidArgumentError, tf.errors.UnimplementedError):
        by_size = None
        break
      times = []
      for _ in range(repeats):
        start = time.perf_counter()
        matmul(a, b).numpy()
        times.append(time.perf_counter() - start)
      stats = _stats(times)
      by_size[str(n)] = {
          "seconds": stats,
          "flops_per_sec": 2 * n**3 / stats["median"],
          "flops_per_sec_best": 2 * n**3 / stats["min"]}
    if by_size is None:
      result[dtype] = {"supported": False}
      continue
    best = max(by_size, key=lambda k: by_size[k]["flops_per_sec"])
    result[dtype] = {"supported": True, "flops_per_sec":
                     by_size[best]["flops_per_sec"], "best_size": int(best),
                     "by_size": by_size}
  return result


def _config(spec, model_dir):
  from cpc_tf import config as config_lib  # pylint: disable=g-import-not-at-top
  geometry = GEOMETRIES[spec.geometry]
  return config_lib.PretrainConfig(
      model_dir=model_dir, dataset=spec.dataset, encoder=spec.preset,
      batch_size=spec.batch_size, train_steps=10**6, seed=spec.seed,
      mixed_precision="none" if spec.precision == "float32" else
      spec.precision, steps_per_loop=spec.steps_per_loop, export=False,
      **dict(geometry, directions=spec.directions)).validate()


def measure_pipeline(dataset="data/cifar10_demo", batch_size=32, batches=20,
                     repeats=5, geometry="demo"):
  """Images/s of the training input pipeline alone (no model), and images
  per CPU-second of this process: the rate per busy core, which other
  processes on the same cores change less than the wall-clock rate."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from cpc_tf.data import sources  # pylint: disable=g-import-not-at-top
  from cpc_tf.train import pretraining  # pylint: disable=g-import-not-at-top
  spec = TrainSpec(batch_size=batch_size, dataset=dataset, geometry=geometry)
  config = _config(spec, "unused")
  source = sources.load(config.dataset, config.split)
  data = pretraining.make_dataset_fn(config, source)(
      tf.distribute.InputContext(), 0)
  iterator = iter(data)
  start = time.perf_counter()
  next(iterator)
  first = time.perf_counter() - start
  for _ in range(batches):  # Warm up: autotune, cache, thread pools.
    next(iterator)
  times, cpu_times = [], []
  for _ in range(repeats):
    start, cpu_start = time.perf_counter(), _cpu_seconds()
    for _ in range(batches):
      next(iterator)
    times.append((time.perf_counter() - start) / batches)
    cpu_times.append((_cpu_seconds() - cpu_start) / batches)
  stats = _stats(times)
  cpu = _stats(cpu_times)
  grid = config.grid_size
  return {"dataset": dataset, "batch_size": batch_size,
          "geometry": geometry, "first_batch_seconds": first,
          "batch_seconds": stats,
          "images_per_sec": batch_size / stats["median"],
          "patches_per_sec": batch_size * grid * grid / stats["median"],
          "cpu_seconds_per_batch": cpu,
          "images_per_cpu_second": batch_size / cpu["median"],
          "cores_busy": cpu["median"] / stats["median"],
          "augment": {k: getattr(config, k) for k in (
              "color_drop", "auto_augment", "elastic", "color_jitter",
              "jitter", "flip")}}


def measure_train(spec):
  """Compile time, steady step time, MFU inputs, loss, memory of one spec."""
  import keras  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from cpc_tf import cpc  # pylint: disable=g-import-not-at-top
  from cpc_tf import flops as flops_lib  # pylint: disable=g-import-not-at-top
  from cpc_tf import op_profile  # pylint: disable=g-import-not-at-top
  from cpc_tf.data import sources  # pylint: disable=g-import-not-at-top
  from cpc_tf.train import loop  # pylint: disable=g-import-not-at-top
  from cpc_tf.train import pretraining  # pylint: disable=g-import-not-at-top

  model_dir = tempfile.mkdtemp(prefix="cpc_benchmark_")
  config = _config(spec, model_dir)
  policy = keras.mixed_precision.global_policy()
  keras.mixed_precision.set_global_policy(
      "float32" if spec.precision == "float32" else f"mixed_{spec.precision}")
  try:
    keras.utils.set_random_seed(spec.seed)
    strategy = tf.distribute.get_strategy()
    start = time.perf_counter()
    model = cpc.build_model(config)
    optimizer = pretraining.make_optimizer(config)
    optimizer.build(model.trainable_variables)
    build_seconds = time.perf_counter() - start
    grid = config.grid_size
    shape = [spec.batch_size, grid, grid, config.patch_size,
             config.patch_size, 3]

    def loss_and_grads(patches):
      with tf.GradientTape() as tape:
        loss = tf.cast(model(patches, training=True)["loss"], tf.float32)
      return loss, tape.gradient(loss, model.trainable_variables)

    counted, by_type, by_scope = flops_lib.graph_flops(
        tf.function(loss_and_grads), tf.TensorSpec(shape, tf.float32))

    dataset_fn = None
    if spec.end_to_end or spec.learn_steps:
      source = sources.load(config.dataset, config.split)
      dataset_fn = pretraining.make_dataset_fn(config, source)
      real = iter(dataset_fn(tf.distribute.InputContext(), 0))
      batch = next(real)
    else:
      batch = tf.random.stateless_uniform(shape, seed=(spec.seed, 1))
    # In memory: one real batch, repeated (the step's cost does not depend
    # on the values).
    memory = iter(tf.data.Dataset.from_tensors(batch).repeat())
    trainer = loop.Trainer(
        strategy=strategy, model_dir=model_dir, model=model,
        optimizer=optimizer,
        compute_loss=lambda m, b: m(b, training=True),
        dataset_fn=dataset_fn, global_batch_size=spec.batch_size,
        train_steps=config.train_steps, steps_per_loop=spec.steps_per_loop,
        checkpoint_every=10**9, summary_every=10**9)
    train_fn = trainer.make_train_function()
    k = spec.steps_per_loop

    def run(iterator, steps):
      start = time.perf_counter()
      metrics = train_fn(iterator, tf.constant(steps))
      metrics = {n: float(v) for n, v in metrics.items()}
      return time.perf_counter() - start, metrics

    result = {"spec": dataclasses.asdict(spec), "grid": grid,
              "patches_per_image": grid * grid,
              "encoder_params": int(model.encoder.count_params()),
              "model_params": int(model.count_params()),
              "build_seconds": build_seconds,
              "flops_per_step": counted, "flops_by_op_type": by_type,
              "flops_by_scope": by_scope,
              "flops_per_image": counted / spec.batch_size}
    # First call: tracing, Grappler, oneDNN primitive creation + k steps.
    first_iterator = real if spec.learn_steps else memory
    first_seconds, metrics = run(first_iterator, k)
    steps_done = k
    if spec.learn_steps:
      curve = [metrics["loss"]]
      while steps_done < spec.learn_steps:
        _, metrics = run(real, k)
        steps_done += k
        curve.append(metrics["loss"])
      result["learn"] = {"steps": steps_done, "loss_curve": curve,
                         "loss": metrics["loss"],
                         "accuracy": {n: v for n, v in metrics.items()
                                      if n.startswith("accuracy")}}
    memory_times, real_times = [], []
    run(memory, k)  # Warm both paths (the real one's threads) once more.
    if spec.end_to_end:
      run(real, k)
    for _ in range(spec.repeats):
      memory_times.append(run(memory, k)[0] / k)
      if spec.end_to_end:
        real_times.append(run(real, k)[0] / k)
    step = _stats(memory_times)
    result.update({
        "first_call_seconds": first_seconds,
        "compile_seconds": max(first_seconds - k * step["median"], 0.0),
        "step_seconds": step,
        "images_per_sec": spec.batch_size / step["median"],
        "patches_per_sec": spec.batch_size * grid * grid / step["median"],
        "flops_per_sec": counted / step["median"]})
    if spec.end_to_end:
      e2e = _stats(real_times)
      ratios = [m / r for m, r in zip(memory_times, real_times)]
      result["end_to_end"] = {
          "step_seconds": e2e,
          "images_per_sec": spec.batch_size / e2e["median"],
          # Paired: each in-memory timing with the end-to-end one after it.
          "to_memory_ratio": _stats(ratios)["median"],
          "to_memory_ratio_spread": _stats(ratios)}
    if spec.op_profile:
      path = op_profile.trace(lambda: run(memory, k), spec.op_profile)
      result["op_profile"] = op_profile.op_table(
          path, k, step["median"], counted)
      result["op_profile"]["trace"] = path
    if spec.xla:
      result["xla"] = _measure_xla(model, optimizer, batch, spec.repeats,
                                   loss_and_grads)
    result["peak_rss_bytes"] = _peak_rss_bytes()
    return result
  finally:
    keras.mixed_precision.set_global_policy(policy)


def _measure_xla(model, optimizer, batch, repeats, loss_and_grads):
  """One optimizer step per call, graph mode vs jit_compile=True."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  out = {}
  for name, jit in (("graph", False), ("xla", True)):
    @tf.function(jit_compile=jit)
    def step(patches):
      loss, grads = loss_and_grads(patches)
      optimizer.apply_gradients(zip(grads, model.trainable_variables))
      return loss
    start = time.perf_counter()
    try:
      step(batch).numpy()
    except Exception as e:  # pylint: disable=broad-except
      out[name] = {"error": f"{type(e).__name__}: {str(e)[:300]}"}
      continue
    first = time.perf_counter() - start
    step(batch).numpy()
    times = []
    for _ in range(repeats):
      start = time.perf_counter()
      step(batch).numpy()
      times.append(time.perf_counter() - start)
    stats = _stats(times)
    out[name] = {"first_call_seconds": first, "step_seconds": stats}
  if "step_seconds" in out.get("graph", {}) and "step_seconds" in out.get(
      "xla", {}):
    out["xla_speedup"] = (out["graph"]["step_seconds"]["median"] /
                          out["xla"]["step_seconds"]["median"])
  return out


# ---------------------------------------------------------------------------
# Orchestration.
# ---------------------------------------------------------------------------

def _run_child(kind, args):
  """Runs one measurement in this process and adds its peak RSS."""
  if kind == "peak":
    result = measure_peak(**args)
  elif kind == "pipeline":
    result = measure_pipeline(**args)
  elif kind == "train":
    result = measure_train(TrainSpec(**args))
  else:
    raise ValueError(f"unknown measurement {kind!r}")
  result.setdefault("peak_rss_bytes", _peak_rss_bytes())
  return result


def _measure(kind, args, isolate):
  start = time.perf_counter()
  if not isolate:
    result = _run_child(kind, args)
  else:
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
      out = f.name
    try:
      command = [sys.executable, "-m", "cpc_tf.benchmark",
                 "--child=" + json.dumps({"kind": kind, "args": args}),
                 "--child_output=" + out]
      proc = subprocess.run(command, capture_output=True, text=True,
                            check=False)
      if proc.returncode != 0:
        tail = "\n".join(proc.stderr.strip().splitlines()[-15:])
        return {"error": f"exit {proc.returncode}: {tail}",
                "wall_seconds": time.perf_counter() - start}
      with open(out) as f:
        result = json.load(f)
    finally:
      with contextlib.suppress(OSError):
        os.remove(out)
  result["wall_seconds"] = time.perf_counter() - start
  result["load_after"] = _load()
  logging.info("%s %s done in %.0f s", kind, args.get("preset", ""),
               result["wall_seconds"])
  return result


def _name(spec):
  spec = dataclasses.asdict(TrainSpec(**spec))
  return (f"{spec['preset']}/{spec['geometry']}/b{spec['batch_size']}/"
          f"{spec['precision']}")


def _machine():
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  cpu = platform.processor()
  with contextlib.suppress(OSError):
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith("model name"):
          cpu = line.split(":", 1)[1].strip()
          break
  return {"cpu": cpu, "cores": os.cpu_count(),
          "tensorflow": tf.__version__, "python": platform.python_version(),
          "intra_op_threads": tf.config.threading
                              .get_intra_op_parallelism_threads(),
          "inter_op_threads": tf.config.threading
                              .get_inter_op_parallelism_threads(),
          "onednn": os.environ.get("TF_ENABLE_ONEDNN_OPTS", "default (on)"),
          "ld_preload": os.environ.get("LD_PRELOAD", "")}


def tpu_estimate(flops_per_image, batch_size=512, chips=(8, 16, 32),
                 mfu=(0.3, 0.5)):
  """Computed (not measured): step time of the paper's configuration on TPU
  v3 from the FLOP count, at assumed MFUs."""
  step_flops = flops_per_image * batch_size
  rows = []
  for n in chips:
    for m in mfu:
      seconds = step_flops / (n * TPU_V3_BF16_PEAK_PER_CHIP * m)
      rows.append({"chips": n, "assumed_mfu": m, "step_seconds": seconds,
                   "images_per_sec": batch_size / seconds,
                   "hours_per_100k_steps": seconds * 1e5 / 3600})
  return {"computed_estimate": True, "batch_size": batch_size,
          "flops_per_image": flops_per_image, "flops_per_step": step_flops,
          "peak_per_chip_bf16": TPU_V3_BF16_PEAK_PER_CHIP, "rows": rows,
          "assumptions": (
              "TPU v3 at 123 TFLOP/s bf16 per chip (2 cores); FLOPs per image "
              "from this graph count of resnet161 at 240/80/32 (fwd+bwd, "
              "conv+matmul only), scaled linearly to the batch (the logits "
              "term grows with the global batch with cross-replica "
              "negatives, <1% here); MFU 30-50% assumed, not measured; "
              "input pipeline and all-reduce assumed hidden.")}


def run_all():
  quick = FLAGS.quick
  batch = 4 if quick else FLAGS.batch_size
  repeats = 2 if quick else FLAGS.repeats
  k = 2 if quick else FLAGS.steps_per_loop
  learn = 4 if quick else FLAGS.learn_steps
  isolate = FLAGS.isolate
  started = time.perf_counter()
  report = {"command": " ".join(["python -m cpc_tf.benchmark"] +
                                sys.argv[1:]),
            "load_before": _load(), "machine": _machine(),
            "flop_counting": (
                "cpc_tf.flops.graph_flops on the concrete function of one "
                "forward+backward step (static shapes): Conv2D, "
                "Conv2DBackpropInput/Filter, MatMul, BatchMatMul, Einsum; 2 "
                "FLOPs per multiply-add; ops that feed no output are "
                "pruned; normalisation, activations, softmax and the "
                "optimizer are not counted")}
  logging.info("load before: %s", report["load_before"])
  report["peak"] = _measure(
      "peak", {"sizes": [512, 1024] if quick else list(MATMUL_SIZES),
               "repeats": 2 if quick else 5, "bfloat16": FLAGS.bfloat16},
      isolate)
  report["pipeline"] = _measure(
      "pipeline", {"dataset": FLAGS.dataset, "batch_size": batch,
                   "batches": 3 if quick else 20, "repeats": repeats},
      isolate)
  report["pipeline_paper"] = _measure_paper_pipeline(quick, repeats,
                                                     isolate)
  base = dict(preset="tiny", geometry="demo", batch_size=batch,
              steps_per_loop=k, repeats=repeats, dataset=FLAGS.dataset,
              directions=1 if quick else 4)
  specs = [dict(base, learn_steps=learn, xla=FLAGS.xla and not quick,
                op_profile=FLAGS.trace_dir or tempfile.mkdtemp(
                    prefix="cpc_benchmark_trace_"))]
  if FLAGS.bfloat16:
    specs.append(dict(base, precision="bfloat16", learn_steps=learn))
  if not quick:
    for extra in FLAGS.extra:
      preset, _, size = extra.partition("@")
      if size == "small":
        specs.append(dict(base, preset=preset, geometry="small",
                          batch_size=2, end_to_end=False, repeats=3,
                          steps_per_loop=2))
      else:
        specs.append(dict(base, preset=preset, batch_size=int(size),
                          end_to_end=False))
    if FLAGS.resnet161_paper:
      specs.append(dict(base, preset="resnet161", geometry="paper",
                        batch_size=2, end_to_end=False, repeats=1,
                        steps_per_loop=1))
  report["train"] = {}
  for spec in specs:
    if spec["preset"] == "resnet161":
      available = _available_bytes()
      if available is not None and (
          available < FLAGS.resnet161_min_free_gb * 2**30):
        report["train"][_name(spec)] = {
            "spec": spec, "skipped": (
                f"MemAvailable {available / 2**30:.1f} GiB < "
                f"--resnet161_min_free_gb={FLAGS.resnet161_min_free_gb}")}
        continue
    report["train"][_name(spec)] = _measure("train", spec, isolate)
  report["load_after"] = _load()
  _summarise(report)
  report["wall_seconds"] = time.perf_counter() - started
  return report


def _measure_paper_pipeline(quick, repeats, isolate):
  """The pipeline at the paper's geometry on --paper_images, or why not."""
  folder = FLAGS.paper_images
  if not folder or not os.path.isdir(folder):
    return {"skipped": f"--paper_images={folder!r} is not a folder"}
  # An image-folder data set: its one class is a link to the folder.
  root = tempfile.mkdtemp(prefix="cpc_benchmark_images_")
  os.symlink(os.path.abspath(folder), os.path.join(root, "all"))
  result = _measure(
      "pipeline", {"dataset": root, "geometry": "paper",
                   "batch_size": 2 if quick else FLAGS.paper_batch_size,
                   "batches": 2 if quick else 10, "repeats": repeats},
      isolate)
  result["dataset"] = folder
  return result


def _summarise(report):
  """The headline numbers: MFU, ratios, speed-ups, memory."""
  paper_pipeline = report.get("pipeline_paper", {})
  if "images_per_sec" in paper_pipeline:
    # Per core of this machine: tf.data runs on all of them.
    report["pipeline_paper_images_per_sec_per_core"] = (
        paper_pipeline["images_per_sec"] / os.cpu_count())
    report["pipeline_paper_images_per_cpu_second"] = (
        paper_pipeline["images_per_cpu_second"])
  peak = report["peak"]
  train = report["train"]
  f32_peak = peak.get("float32", {}).get("flops_per_sec")
  bf16_peak = peak.get("bfloat16", {}).get("flops_per_sec")
  for result in train.values():
    if "flops_per_sec" not in result or not f32_peak:
      continue
    result["mfu"] = result["flops_per_sec"] / f32_peak
    if result["spec"]["precision"] == "bfloat16" and bf16_peak:
      result["mfu_of_bf16_peak"] = result["flops_per_sec"] / bf16_peak
  tiny = next((r for n, r in train.items()
               if n.endswith("float32") and "mfu" in r
               and r["spec"]["preset"] == "tiny"
               and r["spec"]["geometry"] == "demo"), None)
  if tiny is None:
    return
  report["mfu"] = tiny["mfu"]
  pipeline = report["pipeline"].get("images_per_sec")
  if pipeline:
    report["pipeline_to_step_ratio"] = pipeline / tiny["images_per_sec"]
  if "end_to_end" in tiny:
    report["end_to_end_to_step_ratio"] = tiny["end_to_end"][
        "to_memory_ratio"]
  bf16 = train.get(_name(dict(tiny["spec"], precision="bfloat16")))
  if bf16 and "step_seconds" in bf16:
    comparison = {
        "speedup": (tiny["step_seconds"]["median"] /
                    bf16["step_seconds"]["median"])}
    if "learn" in tiny and "learn" in bf16:
      comparison.update(
          steps=tiny["learn"]["steps"],
          loss_float32=tiny["learn"]["loss"],
          loss_bfloat16=bf16["learn"]["loss"],
          # Mean loss of the first loop: how far each fell from there.
          first_loss_float32=tiny["learn"]["loss_curve"][0],
          first_loss_bfloat16=bf16["learn"]["loss_curve"][0],
          loss_relative_difference=abs(
              bf16["learn"]["loss"] - tiny["learn"]["loss"]) /
          abs(tiny["learn"]["loss"]))
    report["bfloat16"] = comparison
    report["bf16_speedup"] = comparison["speedup"]
  if "xla" in tiny:
    report["xla"] = tiny["xla"]
  if "op_profile" in tiny and f32_peak:
    profile = tiny["op_profile"]
    profile["counted_ops_fraction_of_peak"] = (
        profile["counted_ops_flops_per_sec"] / f32_peak)
    report["op_profile"] = profile
  paper = next((r for r in train.values()
                if r.get("spec", {}).get("preset") == "resnet161"
                and r["spec"]["geometry"] == "paper"
                and "flops_per_image" in r), None)
  if paper:
    report["tpu_estimate"] = tpu_estimate(paper["flops_per_image"])
  report["consistent"] = {
      "mfu_at_most_1": all(r.get("mfu", 0) <= 1.0 for r in train.values()),
      "pipeline_at_least_end_to_end": (
          pipeline is None or "end_to_end" not in tiny or
          pipeline >= tiny["end_to_end"]["images_per_sec"])}


def _fmt_time(seconds):
  return f"{seconds * 1e3:.0f} ms" if seconds < 10 else f"{seconds:.1f} s"


def markdown(report):
  """The report as Markdown tables."""
  lines = [f"Command: `{report['command']}`  ",
           f"Machine: {report['machine']['cpu']}, "
           f"{report['machine']['cores']} cores, TensorFlow "
           f"{report['machine']['tensorflow']}; load average before "
           f"{report['load_before']}, after {report['load_after']}; "
           f"{report['wall_seconds']:.0f} s in all.", ""]
  head = []
  if "mfu" in report:
    head.append(f"**MFU (tiny, float32): {100 * report['mfu']:.1f}%**")
  if "pipeline_to_step_ratio" in report:
    head.append(f"pipeline alone / step: "
                f"{report['pipeline_to_step_ratio']:.1f}x")
  if "end_to_end_to_step_ratio" in report:
    head.append(f"end-to-end / in-memory step: "
                f"{report['end_to_end_to_step_ratio']:.2f}x")
  if "bf16_speedup" in report:
    head.append(f"bfloat16 speed-up: {report['bf16_speedup']:.2f}x")
  lines += [" · ".join(head), ""]
  lines += ["| peak matmul | FLOP/s (median, best size) |", "| --- | --- |"]
  for dtype, value in report["peak"].items():
    if isinstance(value, dict) and value.get("supported"):
      lines.append(f"| {dtype} {value['best_size']}^3 | "
                   f"{value['flops_per_sec'] / 1e9:.0f} GFLOP/s |")
  pipe = report["pipeline"]
  if "images_per_sec" in pipe:
    lines += ["", f"Input pipeline alone ({pipe['dataset']}, batch "
              f"{pipe['batch_size']}): **{pipe['images_per_sec']:.0f} "
              f"images/s** ({pipe['patches_per_sec']:.0f} patches/s), "
              f"batch time median {_fmt_time(pipe['batch_seconds']['median'])}"
              f" [{_fmt_time(pipe['batch_seconds']['min'])}, "
              f"{_fmt_time(pipe['batch_seconds']['max'])}]."]
  paper = report.get("pipeline_paper", {})
  if "images_per_sec" in paper:
    lines += ["", f"Input pipeline at the paper's geometry (240/80/32, all "
              f"augmentations, JPEGs decoded every time, {paper['dataset']}, "
              f"batch {paper['batch_size']}): **"
              f"{paper['images_per_sec']:.1f} images/s**, "
              f"{report['pipeline_paper_images_per_sec_per_core']:.1f} per "
              f"core of {report['machine']['cores']}; "
              f"{paper['images_per_cpu_second']:.1f} images per CPU-second "
              f"({paper['cores_busy']:.1f} cores busy)."]
  elif "skipped" in paper:
    lines += ["", f"Paper-geometry pipeline skipped: {paper['skipped']}."]
  lines += ["", "| preset / geometry / batch / precision | step (median "
            "[min, max]) | images/s | patches/s | GFLOP/step | MFU | "
            "end-to-end images/s | compile | peak RSS | loss after N |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
  for name, r in report["train"].items():
    if "skipped" in r:
      lines.append(f"| {name} | skipped: {r['skipped']} | | | | | | | | |")
      continue
    if "error" in r:
      lines.append(f"| {name} | error: {r['error'].splitlines()[-1][:80]} "
                   "| | | | | | | | |")
      continue
    s = r["step_seconds"]
    e2e = r.get("end_to_end")
    learn = r.get("learn")
    e2e_cell = (f"{e2e['images_per_sec']:.1f} ({e2e['to_memory_ratio']:.2f}x)"
                if e2e else "–")
    learn_cell = f"{learn['loss']:.3f} @ {learn['steps']}" if learn else "–"
    lines.append(
        f"| {name} | {_fmt_time(s['median'])} [{_fmt_time(s['min'])}, "
        f"{_fmt_time(s['max'])}] | {r['images_per_sec']:.1f} | "
        f"{r['patches_per_sec']:.0f} | {r['flops_per_step'] / 1e9:.1f} | "
        f"{100 * r.get('mfu', float('nan')):.1f}% | {e2e_cell} | "
        f"{r['compile_seconds']:.1f} s | "
        f"{r['peak_rss_bytes'] / 2**30:.2f} GiB | {learn_cell} |")
  if "bfloat16" in report and "loss_relative_difference" in report[
      "bfloat16"]:
    b = report["bfloat16"]
    lines += ["", f"bfloat16 vs float32 after {b['steps']} real steps: loss "
              f"{b['loss_bfloat16']:.4f} vs {b['loss_float32']:.4f} "
              f"({100 * b['loss_relative_difference']:.2f}% apart; fallen "
              f"from {b['first_loss_bfloat16']:.4f} and "
              f"{b['first_loss_float32']:.4f} in the first loop), step "
              f"{b['speedup']:.2f}x faster."]
  if "xla" in report:
    x = report["xla"]
    parts = []
    for mode in ("graph", "xla"):
      if "step_seconds" in x.get(mode, {}):
        parts.append(f"{mode} {_fmt_time(x[mode]['step_seconds']['median'])}"
                     f" (first call {x[mode]['first_call_seconds']:.1f} s)")
      elif mode in x:
        parts.append(f"{mode}: {x[mode].get('error', '?')[:80]}")
    lines += ["", "One step per call, tiny float32: " + ", ".join(parts) +
              (f"; XLA speed-up {x['xla_speedup']:.2f}x."
               if "xla_speedup" in x else ".")]
  if "op_profile" in report:
    lines += [""] + _op_profile_markdown(report["op_profile"])
  if "tpu_estimate" in report:
    t = report["tpu_estimate"]
    lines += ["", "**Computed estimate, not measured**: resnet161 at "
              f"240/80/32, batch {t['batch_size']}, "
              f"{t['flops_per_step'] / 1e15:.2f} PFLOP per step, on TPU v3:",
              "", "| chips | assumed MFU | step | images/s | hours / 100k "
              "steps |", "| --- | --- | --- | --- | --- |"]
    for row in t["rows"]:
      lines.append(f"| {row['chips']} | {row['assumed_mfu']:.0%} | "
                   f"{row['step_seconds']:.2f} s | "
                   f"{row['images_per_sec']:.0f} | "
                   f"{row['hours_per_100k_steps']:.0f} |")
    lines += ["", t["assumptions"]]
  return "\n".join(lines) + "\n"


def _op_profile_markdown(p):
  """The MFU gap: time in the counted ops, how fast they run, the rest."""
  lines = [
      f"Where the tiny float32 step's time goes (profiler trace of "
      f"{p['steps_traced']} steps, op time summed over threads): "
      f"{1e3 * p['op_seconds_per_step']:.0f} ms of op time per "
      f"{1e3 * p['step_seconds']:.0f} ms step "
      f"({p['op_time_to_step_time']:.2f}x: ops overlap on the cores). "
      f"Convolutions and matmuls take "
      f"{100 * p['counted_ops_share_of_op_time']:.0f}% of op time; in that "
      f"share of the step ({1e3 * p['counted_ops_seconds_per_step']:.0f} ms)"
      f" they run at {p['counted_ops_flops_per_sec'] / 1e9:.0f} GFLOP/s"
      + (f" ({100 * p['counted_ops_fraction_of_peak']:.0f}% of the matmul "
         "peak)" if "counted_ops_fraction_of_peak" in p else "") +
      f"; all other ops take the other "
      f"{1e3 * p['other_ops_seconds_per_step']:.0f} ms. MFU = share x "
      "fraction of peak.", "",
      "| op type (after Grappler/oneDNN) | ms / step | share of op time | "
      "calls / step | FLOPs counted |", "| --- | --- | --- | --- | --- |"]
  for row in p["top_ops"]:
    lines.append(f"| {row['op_type']} | {row['ms_per_step']:.1f} | "
                 f"{100 * row['share_of_op_time']:.1f}% | "
                 f"{row['calls_per_step']:.0f} | "
                 f"{'yes' if row['counted'] else 'no'} |")
  if p["other_op_types"]:
    lines.append(f"| ({p['other_op_types']} more types) | | | | |")
  return lines


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  if FLAGS.child:
    spec = json.loads(FLAGS.child)
    result = _run_child(spec["kind"], spec["args"])
    with open(FLAGS.child_output, "w") as f:
      json.dump(result, f)
    return
  report = run_all()
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  for path, text in ((FLAGS.output_json, json.dumps(report, indent=2)),
                     (FLAGS.output_md, markdown(report) if FLAGS.output_md
                      else None)):
    if path and text is not None:
      if os.path.dirname(path):  # Any tf.io.gfile path (gs://...).
        tf.io.gfile.makedirs(os.path.dirname(path))
      with tf.io.gfile.GFile(path, "w") as f:
        f.write(text + ("\n" if not text.endswith("\n") else ""))
  print(markdown(report))
  print(f"written: {FLAGS.output_json} {FLAGS.output_md}")


if __name__ == "__main__":
  app.run(main)
