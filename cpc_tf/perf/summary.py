"""The headline numbers of a benchmark report: MFU against TensorFlow's and
the best matmul peak, kernel share, pipeline and precision ratios, and the
paper's configuration on TPU estimated from the FLOP count."""

import dataclasses
import os

from cpc_tf.perf import measure

TPU_V3_BF16_PEAK_PER_CHIP = 123e12  # Public figure, FLOP/s.


def summarise(report):
  """Adds the headline numbers to `report`: MFU, ratios, speed-ups, the
  TPU estimate, and the `consistent` checks."""
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
  best_peak = max(f32_peak or 0,
                  report.get("numpy_peak", {}).get("flops_per_sec", 0))
  report["best_float32_peak"] = best_peak
  for result in train.values():
    if "flops_per_sec" not in result or not f32_peak:
      continue
    result["mfu"] = result["flops_per_sec"] / f32_peak
    result["mfu_vs_best_peak"] = result["flops_per_sec"] / best_peak
    if result["spec"]["precision"] == "bfloat16" and bf16_peak:
      result["mfu_of_bf16_peak"] = result["flops_per_sec"] / bf16_peak
  tiny = next((r for n, r in train.items()
               if n.endswith("float32") and "mfu" in r
               and r["spec"]["preset"] == "tiny"
               and r["spec"]["geometry"] == "demo"), None)
  if tiny is None:
    return
  report["mfu"] = tiny["mfu"]
  report["mfu_vs_best_peak"] = tiny["mfu_vs_best_peak"]
  report["sys_share"] = tiny["sys_share"]
  report["kernel_events_per_step"] = tiny["kernel_events_per_step"]
  pipeline = report["pipeline"].get("images_per_sec")
  if pipeline:
    report["pipeline_to_step_ratio"] = pipeline / tiny["images_per_sec"]
  if "end_to_end" in tiny:
    report["end_to_end_to_step_ratio"] = tiny["end_to_end"][
        "to_memory_ratio"]
  bf16 = train.get(spec_name(dict(tiny["spec"], precision="bfloat16")))
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


def spec_name(spec):
  spec = dataclasses.asdict(measure.TrainSpec(**spec))
  return (f"{spec['preset']}/{spec['geometry']}/b{spec['batch_size']}/"
          f"{spec['precision']}")
