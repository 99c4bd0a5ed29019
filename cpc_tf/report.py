r"""Data-efficiency report: methods x label fractions, as in Fig. 1 (§4.2).

  python -m cpc_tf.report --flagfile=flags/report_cifar10_cpu.flags \
      --encoder=results/cifar10_cpu/pretraining \
      --sweep_dir=runs/sweep_cifar10 --output_dir=results/cifar10_cpu

Runs every (method, label fraction) missing in --sweep_dir, one
`cpc_tf.evaluate` / `cpc_tf.supervised` process each (an interrupted sweep
resumes), then writes to --output_dir: report.md (the table, the claim
check, the exact commands), report.png (accuracy vs % of labels: CPC fixed
and fine-tuned, supervised from pixels, random-init), results.json and
commands.sh. Both directories may be any tf.io.gfile path (gs://...).
--norun only collects what is there; `write_report` is the library call.
Every field of `ReportConfig` is a flag.
"""

import dataclasses
import io
import json
import os
import shlex
import subprocess
import sys

from absl import app

from cpc_tf import flag_utils
from cpc_tf.flag_utils import field

METHODS = {  # name -> (label, plot colour, line style)
    "cpc_linear": ("Linear on CPC v2 (fixed)", "tab:cyan", ":"),
    "cpc_efficient": ("ResNet on CPC v2 (fixed)", "tab:blue", "--"),
    "cpc_finetune": ("ResNet on CPC v2 (fine-tuned)", "tab:blue", "-"),
    "random_linear": ("Linear on random-init encoder", "tab:gray", ":"),
    "random_efficient": ("ResNet on random-init encoder (fixed)",
                         "tab:gray", "--"),
    "random_finetune": ("ResNet on random-init encoder (fine-tuned)",
                        "tab:gray", "-"),
    "supervised": ("ResNet trained on pixels", "tab:red", "-"),
}
CPC_METHODS = ("cpc_efficient", "cpc_finetune")
CONTROLS = ("supervised", "random_efficient", "random_finetune")
# The subset of every method must be the same for a fraction.
_SAME_DATA = ("dataset", "train_split", "test_split", "num_train",
              "num_validation", "num_test")



@dataclasses.dataclass
class ReportConfig:
  """A sweep of methods x label fractions and where its report goes."""
  sweep_dir: str = field("", "One run per <method>/<N>pct here.")
  output_dir: str = field("", "Where report.md, report.png, results.json "
                          "and commands.sh go.")
  methods: tuple = field(("cpc_efficient", "cpc_finetune", "supervised",
                          "random_efficient"),
                         f"Methods, of: {', '.join(METHODS)}.",
                         tuple(METHODS))
  label_fractions: tuple = field((0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0),
                                 "Label fractions in (0, 1] (paper: 1% to "
                                 "100%).")
  encoder: str = field("", "Pretraining directory or SavedModel of the CPC "
                       "methods (random-init: its architecture), as "
                       "cpc_tf.evaluate's --encoder.")
  linear_flagfile: str = field("", "Flags of the linear runs.")
  efficient_flagfile: str = field("", "Flags of the efficient (fixed "
                                  "encoder) runs.")
  finetune_flagfile: str = field("", "Flags of the fine-tuning runs.")
  supervised_flagfile: str = field("", "Flags of the supervised sweeps.")
  plot_metric: str = field("top1", "Accuracy plotted (Fig. 1: top5).",
                           ("top1", "top5"))
  title: str = field("", "Title of the plot and the report.")
  run: bool = field(True, "Run missing runs; --norun only collects.")

  @property
  def flagfiles(self):
    """{"linear" | "efficient" | "finetune" | "supervised": flagfile}."""
    return {"linear": self.linear_flagfile,
            "efficient": self.efficient_flagfile,
            "finetune": self.finetune_flagfile,
            "supervised": self.supervised_flagfile}

  def validate(self):
    """Raises ValueError naming the first bad value and what is allowed."""
    flag_utils.check_required(self, ("sweep_dir", "output_dir"))
    flag_utils.check_choices(self)
    if not all(0 < f <= 1 for f in self.label_fractions):
      given = ",".join(f"{f:g}" for f in self.label_fractions)
      raise ValueError(f"--label_fractions={given}; allowed: numbers with "
                       "0 < fraction <= 1")
    if self.run:
      for method, _ in plan(self.methods, self.label_fractions[:1]):
        kind = method if method == "supervised" else method.split("_")[1]
        if not self.flagfiles[kind]:
          raise ValueError(f"--{kind}_flagfile is required for {method}")
      if any(m != "supervised" for m in self.methods) and not self.encoder:
        raise ValueError("--encoder is required for the CPC and random-init "
                         "methods")
    return self


def run_dir(sweep_dir, method, fraction):
  return os.path.join(sweep_dir, method, f"{100 * fraction:g}pct")


def command(method, fraction, sweep_dir, encoder, flagfiles):
  """The command line of one run."""
  model_dir = run_dir(sweep_dir, method, fraction)
  common = [f"--label_fraction={fraction:g}", f"--model_dir={model_dir}"]
  if method == "supervised":
    return ([sys.executable, "-m", "cpc_tf.supervised",
             f"--flagfile={flagfiles['supervised']}"] + common)
  kind, protocol = method.split("_")
  args = [sys.executable, "-m", "cpc_tf.evaluate",
          f"--flagfile={flagfiles[protocol]}", f"--protocol={protocol}",
          f"--encoder={encoder}"] + common
  if kind == "random":
    args.append("--random_init")
  if protocol == "finetune":
    args.append("--init_from=" + run_dir(sweep_dir, f"{kind}_efficient",
                                         fraction))
  return args


def plan(methods, fractions):
  """(method, fraction) in run order: by fraction, and an efficient run
  (added if missing) before the fine-tuning that starts from it."""
  needed = set(methods)
  for m in methods:
    if m.endswith("finetune"):
      needed.add(m.replace("finetune", "efficient"))
  order = sorted(needed, key=lambda m: (m.endswith("finetune"),
                                        list(METHODS).index(m)))
  return [(m, f) for f in fractions for m in order]


def collect(sweep_dir, methods, fractions):
  """{(method, fraction): results} of the finished runs."""
  from cpc_tf import results as results_lib
  found = {}
  for method in methods:
    for fraction in fractions:
      results = results_lib.read(run_dir(sweep_dir, method, fraction))
      if results is not None:
        found[method, fraction] = results
  for fraction in fractions:
    runs = [r for (m, f), r in found.items() if f == fraction]
    for key in _SAME_DATA:
      if len({r[key] for r in runs}) > 1:
        raise ValueError(f"{100 * fraction:g}% runs disagree on {key}: "
                         f"{sorted({r[key] for r in runs})}")
  return found


def _cell(results):
  if results is None:
    return "—"
  test = results["test"]
  return f"{100 * test['top1']:.1f} / {100 * test['top5']:.1f}"


def claim(found, fraction):
  """Does CPC (fixed or fine-tuned) beat every control, on Top-1?"""
  def best(methods):
    scores = [(found[m, fraction]["test"]["top1"], m) for m in methods
              if (m, fraction) in found]
    return max(scores) if scores else None
  cpc, control = best(CPC_METHODS), best(CONTROLS)
  if cpc is None or control is None:
    return f"{100 * fraction:g}%: not enough runs to compare."
  verdict = "yes" if cpc[0] > control[0] else "**no**"
  return (f"{100 * fraction:g}% labels: best CPC {METHODS[cpc[1]][0]} "
          f"{100 * cpc[0]:.1f}% vs best control {METHODS[control[1]][0]} "
          f"{100 * control[0]:.1f}% Top-1 — CPC better: {verdict} "
          f"(margin {100 * (cpc[0] - control[0]):+.1f} points).")


def markdown(found, methods, fractions, commands, title):
  """The report: table, data sizes, claim check, commands."""
  pct = [f"{100 * f:g}%" for f in fractions]
  lines = [f"# {title or 'Data-efficient classification'}", "",
           "Test Top-1 / Top-5 accuracy (%), each run's weights selected on "
           "the held-out validation part of the training split.", "",
           "| Method | " + " | ".join(pct) + " |",
           "| --- |" + " --- |" * len(pct)]
  for method in methods:
    lines.append(f"| {METHODS[method][0]} | " + " | ".join(
        _cell(found.get((method, f))) for f in fractions) + " |")
  lines += ["", "| Labelled data | " + " | ".join(pct) + " |",
            "| --- |" + " --- |" * len(pct)]
  sizes = []
  for f in fractions:
    runs = [r for (m, g), r in found.items() if g == f]
    sizes.append(f"{runs[0]['num_train']} train / {runs[0]['num_validation']}"
                 f" val / {runs[0]['num_test']} test" if runs else "—")
  lines.append("| images | " + " | ".join(sizes) + " |")
  lines += ["", "## Claim: CPC beats supervised and random-init", ""]
  lines += [f"- {claim(found, f)}" for f in fractions
            if f in (0.01, 0.1)] or ["- (1% and 10% not in this sweep)"]
  lines += ["", "## Commands", "", "```sh"] + [
      " ".join(shlex.quote(a) for a in c) for c in commands] + ["```", ""]
  return "\n".join(lines)


def figure(found, methods, fractions, metric, title):
  """Accuracy vs % of labels (log axis), one line per method (Fig. 1): a
  matplotlib Figure, off screen."""
  from matplotlib import figure as figure_lib
  fig = figure_lib.Figure(figsize=(6, 4.5))
  ax = fig.subplots()
  for method in methods:
    points = [(100 * f, 100 * found[method, f]["test"][metric])
              for f in fractions if (method, f) in found]
    if points:
      label, colour, style = METHODS[method]
      xs, ys = zip(*points)
      ax.plot(xs, ys, style, marker="o", color=colour, label=label)
  ax.set_xscale("log")
  ax.set_xticks([100 * f for f in fractions])
  ax.set_xticklabels([f"{100 * f:g}%" for f in fractions])
  ax.minorticks_off()
  ax.set_xlabel("Percentage of labeled data")
  ax.set_ylabel(f"{'Top-1' if metric == 'top1' else 'Top-5'} accuracy (%)")
  ax.set_title(title or "Data-efficient image recognition")
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8)
  fig.tight_layout()
  return fig


def plot(found, methods, fractions, metric, title, path):
  """`figure` as a PNG at `path` (any tf.io.gfile path)."""
  png = io.BytesIO()
  figure(found, methods, fractions, metric, title).savefig(png, format="png",
                                                          dpi=120)
  _write(path, png.getvalue())


def _write(path, content):
  from cpc_tf import files  # pylint: disable=g-import-not-at-top
  files.write_atomic(path, content)


def _shell(commands):
  """The commands as shell lines; this interpreter relative to the working
  directory when it lies inside it (`.venv/bin/python`), so the file names
  no machine's paths."""
  python = os.path.relpath(sys.executable)
  if python.startswith(".."):
    python = "python"
  return "\n".join(" ".join(shlex.quote(python if a == sys.executable else a)
                            for a in c) for c in commands)


def write_commands(output_dir, commands):
  """Creates `output_dir` (any tf.io.gfile path) and writes commands.sh."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  tf.io.gfile.makedirs(output_dir)
  _write(os.path.join(output_dir, "commands.sh"), _shell(commands) + "\n")


def write_report(sweep_dir, output_dir, methods, fractions, commands,
                 title="", metric="top1"):
  """Collects the finished runs in `sweep_dir` and writes report.md,
  results.json (test metrics and validation top-1 per run) and report.png
  to `output_dir` (both any tf.io.gfile path); returns report.md's text.

  Raises:
    ValueError: runs of one fraction disagree on their data (`collect`).
  """
  found = collect(sweep_dir, methods, fractions)
  text = markdown(found, methods, fractions, commands, title)
  _write(os.path.join(output_dir, "report.md"), text)
  _write(os.path.join(output_dir, "results.json"), json.dumps(
      {f"{m}/{100 * g:g}pct": r["test"] | {"validation_top1":
                                           r["validation"]["top1"]}
       for (m, g), r in sorted(found.items())}, indent=2))
  plot(found, methods, fractions, metric, title,
       os.path.join(output_dir, "report.png"))
  return text


def run_sweep(config):
  """Writes commands.sh, runs the sweep's missing runs (unless --norun) and
  writes the report; returns report.md's text."""
  commands = [command(m, f, config.sweep_dir, config.encoder,
                      config.flagfiles)
              for m, f in plan(config.methods, config.label_fractions)]
  write_commands(config.output_dir, commands)
  if config.run:
    for args in commands:
      print("+ " + _shell([args]), flush=True)
      if subprocess.run(args, check=False).returncode:
        sys.exit(f"error: a run failed; fix it and rerun to resume:\n"
                 f"{_shell([args])}")
  return write_report(config.sweep_dir, config.output_dir, config.methods,
                      config.label_fractions, commands, config.title,
                      config.plot_metric)


def main(argv):
  _, text = flag_utils.run_main(argv, ReportConfig, lambda: run_sweep)
  print(text)


if __name__ == "__main__":
  flag_utils.define_flags(ReportConfig)
  app.run(main)
