"""A benchmark report as Markdown."""


def markdown(report):
  """The report as Markdown tables."""
  lines = [f"Command: `{report['command']}`  ",
           f"Machine: {report['machine']['cpu']}, "
           f"{report['machine']['cores']} cores, ISA "
           f"{' '.join(report['machine']['isa']) or 'unknown'}, TensorFlow "
           f"{report['machine']['tensorflow']}; load average before "
           f"{report['load_before']}, after {report['load_after']}; "
           f"{report['wall_seconds']:.0f} s in all.", ""]
  if report.get("isa_limit", "none") != "none":
    described = report["machine"]
    lines += [
        f"**ISA limited to {report['isa_limit'].upper()}** (an "
        f"{report['isa_limit'].upper()}-only machine's kernels on this "
        f"CPU): oneDNN `ONEDNN_MAX_CPU_ISA={described['onednn_max_cpu_isa']}`"
        f", OpenBLAS `OPENBLAS_CORETYPE={described['openblas_coretype']}`; "
        "the cores' caches, memory and OS are this machine's."
        + (f" bfloat16 not measured ({report['bfloat16_skipped']})."
           if "bfloat16_skipped" in report else ""), ""]
  head = []
  if "mfu" in report:
    head.append(f"**MFU (tiny, float32): {100 * report['mfu']:.1f}%** of "
                f"TensorFlow's matmul peak, "
                f"{100 * report['mfu_vs_best_peak']:.1f}% of the best "
                f"(`mfu_vs_best_peak`); kernel time "
                f"{100 * report['sys_share']:.1f}% of the step's CPU time"
                + _kernel_events(report.get("kernel_events_per_step")))
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
      lines.append(f"| TensorFlow {dtype} {value['best_size']}^3 | "
                   f"{value['flops_per_sec'] / 1e9:.0f} GFLOP/s |")
  blas = report.get("numpy_peak", {})
  if "flops_per_sec" in blas:
    lines.append(f"| numpy ({blas['blas']}) float32 {blas['best_size']}^3 | "
                 f"{blas['flops_per_sec'] / 1e9:.0f} GFLOP/s |")
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


def _fmt_time(seconds):
  return f"{seconds * 1e3:.0f} ms" if seconds < 10 else f"{seconds:.1f} s"


def _kernel_events(events):
  """' (N minor page faults, M context switches per step)', or ''."""
  if not events:
    return ""
  switches = (events["voluntary_context_switches"] +
              events["involuntary_context_switches"])
  return (f" ({events['minor_page_faults']:.0f} minor page faults, "
          f"{switches:.0f} context switches per step)")
