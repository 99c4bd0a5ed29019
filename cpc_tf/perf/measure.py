"""The measurements, each meant to run in a process of its own (`run`).

peak: TensorFlow's float32 (and bfloat16) matmul rate, and numpy's BLAS
sgemm; pipeline: the training input pipeline alone; train: the Trainer's
pretraining step of one preset, batch and precision, fed from memory and
by the real pipeline, with its FLOP count, CPU time split into user and
kernel, op profile and XLA comparison.
"""

import dataclasses
import os
import resource
import tempfile
import time

from cpc_tf import config as config_lib
from cpc_tf.perf import machine

MATMUL_SIZES = (1024, 2048, 4096)
# Settings that pin OpenBLAS (numpy's BLAS) to a slower kernel; unset for
# the numpy peak alone, which asks what this CPU can do.
OPENBLAS_PINS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
# --isa_limit: what an AVX-512 CPU runs as an AVX2-only one would, set in
# the environment before oneDNN (in TensorFlow) and OpenBLAS (in numpy) load:
# their kernel dispatch. TensorFlow's other (Eigen) kernels are built for
# AVX either way.
ISA_LIMITS = {"avx2": {"ONEDNN_MAX_CPU_ISA": "AVX2",
                       "OPENBLAS_CORETYPE": "Haswell"}}
# What the kernel did for the step, from getrusage (all threads): where
# system time goes (page faults from allocation churn, thread wake-ups).
_KERNEL_EVENTS = {"minor_page_faults": "ru_minflt",
                  "major_page_faults": "ru_majflt",
                  "voluntary_context_switches": "ru_nvcsw",
                  "involuntary_context_switches": "ru_nivcsw"}
DEMO_FLAGS = os.path.join(os.path.dirname(os.path.dirname(
    os.path.dirname(os.path.abspath(__file__)))), "flags", "demo_cpu.flags")
# What a geometry sets of a PretrainConfig: patches, directions, the
# schedule's start, caching and the augmentation (every AugmentFields field).
_GEOMETRY_FIELDS = (
    "image_size", "patch_size", "patch_stride", "directions",
    "steps_to_ignore", "steps_to_predict", "learning_rate", "warmup_steps",
    "cache_images", *(f.name for f in dataclasses.fields(
        config_lib.AugmentFields)))


def geometries():
  """{"demo", "small", "paper"} -> PretrainConfig fields. The demo's are
  read from flags/demo_cpu.flags as `cpc_tf.pretrain` reads them; "small"
  is it on 80x80 images (32x32 patches, stride 16); "paper" the paper's
  240/80/32 with every augmentation, decoded every epoch as ImageNet is."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  from cpc_tf import flag_utils  # pylint: disable=g-import-not-at-top
  values = flags.FlagValues()
  flag_utils.define_flags(config_lib.PretrainConfig, values)
  values(["benchmark", f"--flagfile={DEMO_FLAGS}"])
  config = flag_utils.config_from_flags(config_lib.PretrainConfig, values)
  demo = {name: getattr(config, name) for name in _GEOMETRY_FIELDS}
  return {"demo": demo,
          "small": dict(demo, image_size=80, patch_size=32, patch_stride=16),
          "paper": dict(demo, image_size=240, patch_size=80, patch_stride=32,
                        steps_to_ignore=2, jitter=10, elastic=True,
                        cache_images="false")}


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
      stats = machine.stats(times)
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


def measure_numpy_peak(sizes=MATMUL_SIZES, repeats=5):
  """Best median rate of an n x n x n float32 `numpy.matmul` (its bundled
  BLAS sgemm): the best other matmul this environment has, against which
  TensorFlow's own kernels are judged."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  by_size = {}
  rng = np.random.default_rng(0)
  for n in sizes:
    a, b = (rng.standard_normal((n, n), np.float32) for _ in range(2))
    a @ b  # pylint: disable=pointless-statement
    times = []
    for _ in range(repeats):
      start = time.perf_counter()
      a @ b  # pylint: disable=pointless-statement
      times.append(time.perf_counter() - start)
    by_size[str(n)] = {"seconds": machine.stats(times),
                       "flops_per_sec": 2 * n**3 / machine.stats(times)["median"]}
  best = max(by_size, key=lambda k: by_size[k]["flops_per_sec"])
  config = np.show_config(mode="dicts") if hasattr(np, "show_config") else {}
  blas = config.get("Build Dependencies", {}).get("blas", {})
  return {"flops_per_sec": by_size[best]["flops_per_sec"],
          "best_size": int(best), "by_size": by_size,
          "blas": f"{blas.get('name', '?')} {blas.get('version', '')}".strip()}


def pretrain_config(spec, model_dir):
  geometry = geometries()[spec.geometry]
  return config_lib.PretrainConfig(
      model_dir=model_dir, dataset=spec.dataset, architecture=spec.preset,
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
  from cpc_tf.data import augment as augment_lib  # pylint: disable=g-import-not-at-top
  from cpc_tf.data import sources  # pylint: disable=g-import-not-at-top
  from cpc_tf.train import pretraining  # pylint: disable=g-import-not-at-top
  spec = TrainSpec(batch_size=batch_size, dataset=dataset, geometry=geometry)
  config = pretrain_config(spec, tempfile.mkdtemp(prefix="cpc_benchmark_"))
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
    start, cpu_start = time.perf_counter(), machine.cpu_seconds()
    for _ in range(batches):
      next(iterator)
    times.append((time.perf_counter() - start) / batches)
    cpu_times.append((machine.cpu_seconds() - cpu_start) / batches)
  stats = machine.stats(times)
  cpu = machine.stats(cpu_times)
  grid = config.grid_size
  return {"dataset": dataset, "batch_size": batch_size,
          "geometry": geometry, "first_batch_seconds": first,
          "batch_seconds": stats,
          "images_per_sec": batch_size / stats["median"],
          "patches_per_sec": batch_size * grid * grid / stats["median"],
          "cpu_seconds_per_batch": cpu,
          "images_per_cpu_second": batch_size / cpu["median"],
          "cores_busy": cpu["median"] / stats["median"],
          "augment": dataclasses.asdict(
              augment_lib.AugmentConfig.from_config(config))}


def measure_train(spec):
  """Compile time, steady step time, MFU inputs, loss, memory of one spec."""
  import keras  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from cpc_tf import cpc  # pylint: disable=g-import-not-at-top
  from cpc_tf.perf import flops as flops_lib  # pylint: disable=g-import-not-at-top
  from cpc_tf.perf import op_profile  # pylint: disable=g-import-not-at-top
  from cpc_tf.data import sources  # pylint: disable=g-import-not-at-top
  from cpc_tf.train import loop  # pylint: disable=g-import-not-at-top
  from cpc_tf.train import pretraining  # pylint: disable=g-import-not-at-top

  model_dir = tempfile.mkdtemp(prefix="cpc_benchmark_")
  config = pretrain_config(spec, model_dir)
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
    user = system = 0.0  # CPU seconds of the in-memory steps.
    events = dict.fromkeys(_KERNEL_EVENTS, 0)
    for _ in range(spec.repeats):
      before = resource.getrusage(resource.RUSAGE_SELF)
      memory_times.append(run(memory, k)[0] / k)
      after = resource.getrusage(resource.RUSAGE_SELF)
      user += after.ru_utime - before.ru_utime
      system += after.ru_stime - before.ru_stime
      for name, field_name in _KERNEL_EVENTS.items():
        events[name] += getattr(after, field_name) - getattr(before,
                                                             field_name)
      if spec.end_to_end:
        real_times.append(run(real, k)[0] / k)
    step = machine.stats(memory_times)
    result.update({
        "first_call_seconds": first_seconds,
        "compile_seconds": max(first_seconds - k * step["median"], 0.0),
        "step_seconds": step,
        "images_per_sec": spec.batch_size / step["median"],
        "patches_per_sec": spec.batch_size * grid * grid / step["median"],
        "flops_per_sec": counted / step["median"],
        "cpu_seconds_per_step": {
            "user": user / (k * spec.repeats),
            "system": system / (k * spec.repeats)},
        # Kernel time: thread-pool waits, page faults, allocation churn.
        "sys_share": system / max(user + system, 1e-9),
        "kernel_events_per_step": {name: count / (k * spec.repeats)
                                   for name, count in events.items()}})
    if spec.end_to_end:
      e2e = machine.stats(real_times)
      ratios = [m / r for m, r in zip(memory_times, real_times)]
      result["end_to_end"] = {
          "step_seconds": e2e,
          "images_per_sec": spec.batch_size / e2e["median"],
          # Paired: each in-memory timing with the end-to-end one after it.
          "to_memory_ratio": machine.stats(ratios)["median"],
          "to_memory_ratio_spread": machine.stats(ratios)}
    if spec.op_profile:
      path = op_profile.trace(lambda: run(memory, k), spec.op_profile)
      result["op_profile"] = op_profile.op_table(
          path, k, step["median"], counted)
      result["op_profile"]["trace"] = path
    if spec.xla:
      result["xla"] = _measure_xla(model, optimizer, batch, spec.repeats,
                                   loss_and_grads)
    result["peak_rss_bytes"] = machine.peak_rss_bytes()
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
    stats = machine.stats(times)
    out[name] = {"first_call_seconds": first, "step_seconds": stats}
  if "step_seconds" in out.get("graph", {}) and "step_seconds" in out.get(
      "xla", {}):
    out["xla_speedup"] = (out["graph"]["step_seconds"]["median"] /
                          out["xla"]["step_seconds"]["median"])
  return out


def run(kind, args):
  """Runs the measurement `kind` in this process; adds its peak RSS."""
  if kind == "peak":
    result = measure_peak(**args)
  elif kind == "numpy_peak":
    result = measure_numpy_peak(**args)
  elif kind == "pipeline":
    result = measure_pipeline(**args)
  elif kind == "train":
    result = measure_train(TrainSpec(**args))
  else:
    raise ValueError(f"unknown measurement {kind!r}")
  result.setdefault("peak_rss_bytes", machine.peak_rss_bytes())
  return result
