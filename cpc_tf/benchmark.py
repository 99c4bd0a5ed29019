r"""CPC v2 pretraining (§4.1, appendix A.2) against this machine's limits.

  python -m cpc_tf.benchmark           # everything, default flags
  python -m cpc_tf.benchmark --quick   # a smoke run (tests/test_benchmark.py)

Measures, and writes as JSON (--output_json) and a Markdown table
(--output_md):

  * machine: CPU, cores, ISA (AVX2 / AVX-512 / AMX flags: the same CPU
    name comes with and without AVX-512), thread settings, oneDNN; with
    --isa_limit=avx2, an AVX-512 CPU runs oneDNN's and OpenBLAS's AVX2
    kernels, as an AVX2-only machine would;
  * peak: the attainable matmul rate of this machine, a large float32 (and
    bfloat16) `tf.matmul`, best size, FLOP/s; and numpy's BLAS sgemm
    (without OpenBLAS core pins), the best other matmul at hand;
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
bfloat16) matmul peak of TensorFlow; `mfu_vs_best_peak` divides by the
better of TensorFlow's and numpy's float32 peaks instead. `sys_share` is the
kernel's part of the step's CPU time. FLOPs are counted from the step's
graph by `cpc_tf.perf.flops.graph_flops`: convolutions and matmuls only (2 per
multiply-add), forward + backward, from static shapes; normalisation,
activations and the optimizer update are not counted.

Every measurement runs in its own subprocess (--isolate, the default,
`cpc_tf.perf.runner`), so its peak RSS is its own and one preset's memory
does not inflate the next. The measurements live in `cpc_tf/perf/`; this
binary picks them from its flags and writes the report. A full run fails
(after writing it) when the report is inconsistent (`consistent`: MFU above
1, the pipeline slower than the step it feeds).
Timings are medians over --repeats repetitions with their min/max; the
machine's load average is recorded before and after, since other
processes on the same cores slow everything down.
"""

import dataclasses
import json
import os
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app
from absl import logging

from cpc_tf import flag_utils
from cpc_tf.flag_utils import field
from cpc_tf.perf import machine
from cpc_tf.perf import markdown
from cpc_tf.perf import measure
from cpc_tf.perf import runner
from cpc_tf.perf import summary


@dataclasses.dataclass
class BenchmarkConfig:
  """Every flag of the benchmark."""
  output_json: str = field("results/benchmark_cpu.json",
                           "Where the JSON goes (any tf.io.gfile path).")
  output_md: str = field("results/benchmark_cpu.md", "Where the Markdown "
                         "table goes ('' for none).")
  dataset: str = field("data/cifar10_demo", "Data set of the pipeline "
                       "measurements (see cpc_tf.pretrain --dataset).")
  paper_images: str = field(
      "../shared/data/voc2007_subset/JPEGImages", "A folder of JPEGs (e.g. "
      "VOC's ~500x375 ones, read as one class) on which the pipeline is "
      "also measured at the paper's geometry (240/80/32, all augmentations, "
      "no cache); skipped with a note when absent.")
  paper_batch_size: int = field(16, "Batch of the paper-geometry pipeline "
                                "measurement.")
  batch_size: int = field(32, "Batch of the tiny preset (the demo's).")
  steps_per_loop: int = field(5, "Optimizer steps per timed tf.function "
                              "call (the Trainer's steps_per_loop).")
  repeats: int = field(3, "Timed calls per measurement; medians and "
                       "min/max are over these.")
  learn_steps: int = field(20, "Real-data steps before the loss is compared "
                           "between float32 and bfloat16.")
  bfloat16: bool = field(True, "Also measure mixed bfloat16.")
  xla: bool = field(True, "Also measure one step with jit_compile.")
  trace_dir: str = field("", "Where the profiler trace of the tiny float32 "
                         "steps goes (open with tensorboard --logdir); '' = "
                         "a temporary directory. The op table it gives is "
                         "in the report either way.")
  extra: tuple = field(("resnet50@small",), "More train measurements, "
                       "float32: <preset>@<batch> at the demo geometry, or "
                       "<preset>@small (80x80 images, 32x32 patches at "
                       "stride 16, batch 2).")
  resnet161_paper: bool = field(True, "Run one resnet161 step at the "
                                "paper's geometry (240/80/32) at batch 2.")
  resnet161_min_free_gb: float = field(
      12.0, "Skip the resnet161 step (recorded as skipped) when less memory "
      "than this is available (MemAvailable).")
  quick: bool = field(False, "Tiny settings for tests: batch 4, one "
                      "direction, 2 repeats of 2 steps, no extras, no "
                      "resnet161, no XLA.")
  isolate: bool = field(True, "One subprocess per measurement (own peak "
                        "RSS); --noisolate runs all in this process.")
  isa_limit: str = field(
      "none", "avx2: measure as an AVX2-only CPU would run, on a CPU with "
      "AVX-512: oneDNN's kernels limited to AVX2 (ONEDNN_MAX_CPU_ISA) and "
      "OpenBLAS's to Haswell (OPENBLAS_CORETYPE) in every measurement's "
      "process; caches, memory and the OS stay this machine's.",
      ("none", *measure.ISA_LIMITS))

  def validate(self):
    flag_utils.check_positive(self, ("paper_batch_size", "batch_size",
                                     "steps_per_loop", "repeats"))
    flag_utils.check_positive(self, ("learn_steps", "resnet161_min_free_gb"),
                              allow_zero=True)
    if self.isa_limit != "none" and not self.isolate:
      raise ValueError(f"--isa_limit={self.isa_limit} needs --isolate: the "
                       "limit applies to processes started after it is set")
    for extra in self.extra:
      preset, _, size = extra.partition("@")
      if not preset or not (size == "small" or size.isdigit()):
        raise ValueError(f"--extra={extra}; expected <preset>@<batch> or "
                         "<preset>@small")
    return self


flag_utils.define_flags(BenchmarkConfig)


def run_all(config):
  """Every measurement the flags ask for -> the report (a dict)."""
  quick = config.quick
  batch = 4 if quick else config.batch_size
  repeats = 2 if quick else config.repeats
  k = 2 if quick else config.steps_per_loop
  learn = 4 if quick else config.learn_steps
  isolate = config.isolate
  started = time.perf_counter()
  limit = measure.ISA_LIMITS.get(config.isa_limit, {})
  os.environ.update(limit)  # Inherited by every measurement's process.
  # TensorFlow sends bfloat16 to oneDNN by the CPU's own flags, and oneDNN
  # limited to AVX2 then aborts: an AVX2 machine's bfloat16 is not simulated.
  bfloat16 = config.bfloat16 and not limit
  described = machine.describe()
  report = {"command": " ".join(["python -m cpc_tf.benchmark"] +
                                sys.argv[1:]),
            "load_before": machine.load(), "machine": described,
            "isa": described["isa"], "isa_limit": config.isa_limit,
            **({"bfloat16_skipped": f"--isa_limit={config.isa_limit}: "
                "TensorFlow routes bfloat16 by the CPU's flags, oneDNN "
                "limited to AVX2 has no bfloat16 kernel"}
               if config.bfloat16 and limit else {}),
            "flop_counting": (
                "cpc_tf.perf.flops.graph_flops on the concrete function of one "
                "forward+backward step (static shapes): Conv2D, "
                "Conv2DBackpropInput/Filter, MatMul, BatchMatMul, Einsum; 2 "
                "FLOPs per multiply-add; ops that feed no output are "
                "pruned; normalisation, activations, softmax and the "
                "optimizer are not counted")}
  logging.info("load before: %s", report["load_before"])
  report["peak"] = runner.run(
      "peak", {"sizes": [512, 1024] if quick else list(measure.MATMUL_SIZES),
               "repeats": 2 if quick else 5, "bfloat16": bfloat16},
      isolate)
  report["numpy_peak"] = runner.run(
      "numpy_peak", {"sizes": [512, 1024] if quick else
                     list(measure.MATMUL_SIZES), "repeats": 2 if quick else 5},
      isolate,
      unset=() if limit else measure.OPENBLAS_PINS)
  report["numpy_peak"]["unset"] = [k for k in measure.OPENBLAS_PINS
                                   if k in os.environ and not limit]
  report["pipeline"] = runner.run(
      "pipeline", {"dataset": config.dataset, "batch_size": batch,
                   "batches": 3 if quick else 20, "repeats": repeats},
      isolate)
  report["pipeline_paper"] = _measure_paper_pipeline(config, quick, repeats,
                                                     isolate)
  base = dict(preset="tiny", geometry="demo", batch_size=batch,
              steps_per_loop=k, repeats=repeats, dataset=config.dataset,
              directions=1 if quick else 4)
  specs = [dict(base, learn_steps=learn, xla=config.xla and not quick,
                op_profile=config.trace_dir or tempfile.mkdtemp(
                    prefix="cpc_benchmark_trace_"))]
  if bfloat16:
    specs.append(dict(base, precision="bfloat16", learn_steps=learn))
  if not quick:
    for extra in config.extra:
      preset, _, size = extra.partition("@")
      if size == "small":
        specs.append(dict(base, preset=preset, geometry="small",
                          batch_size=2, end_to_end=False, repeats=3,
                          steps_per_loop=2))
      else:
        specs.append(dict(base, preset=preset, batch_size=int(size),
                          end_to_end=False))
    if config.resnet161_paper:
      specs.append(dict(base, preset="resnet161", geometry="paper",
                        batch_size=2, end_to_end=False, repeats=1,
                        steps_per_loop=1))
  report["train"] = {}
  for spec in specs:
    if spec["preset"] == "resnet161":
      available = machine.available_bytes()
      if available is not None and (
          available < config.resnet161_min_free_gb * 2**30):
        report["train"][summary.spec_name(spec)] = {
            "spec": spec, "skipped": (
                f"MemAvailable {available / 2**30:.1f} GiB < "
                f"--resnet161_min_free_gb={config.resnet161_min_free_gb}")}
        continue
    report["train"][summary.spec_name(spec)] = runner.run("train", spec,
                                                          isolate)
  report["load_after"] = machine.load()
  summary.summarise(report)
  report["wall_seconds"] = time.perf_counter() - started
  return report


def _measure_paper_pipeline(config, quick, repeats, isolate):
  """The pipeline at the paper's geometry on --paper_images, or why not."""
  folder = config.paper_images
  if not folder or not os.path.isdir(folder):
    return {"skipped": f"--paper_images={folder!r} is not a folder"}
  # An image-folder data set: its one class is a link to the folder.
  root = tempfile.mkdtemp(prefix="cpc_benchmark_images_")
  os.symlink(os.path.abspath(folder), os.path.join(root, "all"))
  result = runner.run(
      "pipeline", {"dataset": root, "geometry": "paper",
                   "batch_size": 2 if quick else config.paper_batch_size,
                   "batches": 2 if quick else 10, "repeats": repeats},
      isolate)
  result["dataset"] = folder
  return result


def _without_temporary_paths(text):
  """Temporary directories (trace, images) as `<tmp>/...`: a report names
  no machine's paths."""
  return text.replace(tempfile.gettempdir().rstrip("/") + "/", "<tmp>/")


def main(argv):
  config, report = flag_utils.run_main(argv, BenchmarkConfig,
                                       lambda: run_all)
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  text = _without_temporary_paths(markdown.markdown(report))
  for path, content in ((config.output_json, _without_temporary_paths(
      json.dumps(report, indent=2))),
                        (config.output_md, text if config.output_md
                         else None)):
    if path and content is not None:
      if os.path.dirname(path):  # Any tf.io.gfile path (gs://...).
        tf.io.gfile.makedirs(os.path.dirname(path))
      with tf.io.gfile.GFile(path, "w") as f:
        f.write(content + ("\n" if not content.endswith("\n") else ""))
  print(text)
  print(f"written: {config.output_json} {config.output_md}")
  failed = [name for name, ok in report.get("consistent", {}).items()
            if not ok]
  # --quick's peak comes from small matmuls on a possibly busy machine: a
  # smoke run reports, a real one must add up.
  if failed and not config.quick:
    sys.exit(f"error: inconsistent measurements ({', '.join(failed)}): see "
             f"{config.output_json}")


if __name__ == "__main__":
  app.run(main)
