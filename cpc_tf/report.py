r"""Data-efficiency report: methods x label fractions, as in Fig. 1 (§4.2).

  python -m cpc_tf.report --flagfile=flags/report_cifar10_cpu.flags \
      --encoder=results/cifar10_cpu/pretraining \
      --sweep_dir=runs/sweep_cifar10 --output_dir=results/cifar10_cpu

Runs every (method, label fraction, seed) missing in --sweep_dir, one
`cpc_tf.evaluate` / `cpc_tf.supervised` process each (an interrupted sweep
resumes), then writes to --output_dir: report.md (the table, mean ± std over
--eval_seeds, the claim check, the exact commands), report.png (accuracy vs
% of labels with error bars: CPC fixed and fine-tuned, supervised from
pixels, random-init), results.json and commands.sh. Both directories may be
any tf.io.gfile path (gs://...).
--norun only collects what is there; `write_report` is the library call.
Every field of `ReportConfig` is a flag.
"""

import dataclasses
import io
import json
import os
import shlex
import statistics
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
RANDOM_METHODS = ("random_efficient", "random_finetune")
# The claim check (§4.2): (name, methods) of each side; a side with several
# methods is the one of them best on validation.
COMPARISONS = ((("CPC", CPC_METHODS), ("supervised", ("supervised",))),
               (("CPC", CPC_METHODS), ("random-init", RANDOM_METHODS)),
               (("Linear: CPC", ("cpc_linear",)),
                ("random-init", ("random_linear",))))
_PROTOCOLS = {"efficient": "fixed", "finetune": "fine-tuned"}
# Summarised over seeds: name -> (part of results.json, key).
_METRICS = {"top1": ("test", "top1"), "top5": ("test", "top5"),
            "validation_top1": ("validation", "top1")}
# The subset of every method must be the same for a fraction.
_SAME_DATA = ("dataset", "train_split", "test_split", "num_train",
              "num_validation", "num_test")


@dataclasses.dataclass
class ReportConfig:
  """A sweep of methods x label fractions and where its report goes."""
  sweep_dir: str = field("", "One run per <method>/<N>pct/seed<k> here "
                         "(<method>/<N>pct with --eval_seeds=0).")
  output_dir: str = field("", "Where report.md, report.png, results.json "
                          "and commands.sh go.")
  methods: tuple = field(("cpc_efficient", "cpc_finetune", "supervised",
                          "random_efficient"),
                         f"Methods, of: {', '.join(METHODS)}.",
                         tuple(METHODS))
  label_fractions: tuple = field((0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0),
                                 "Label fractions in (0, 1] (paper: 1% to "
                                 "100%).")
  linear_fractions: tuple = field((1.0,), "Label fractions of the linear "
                                  "methods (A.3: 100%).")
  eval_seeds: tuple = field((0,), "Seeds of every run (--seed of "
                            "cpc_tf.evaluate / cpc_tf.supervised); the table "
                            "gives mean ± std over them.")
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

  @property
  def fractions(self):
    """Every label fraction of the sweep, ascending: the table's columns."""
    return all_fractions(self.label_fractions, self.linear_fractions)

  def validate(self):
    """Raises ValueError naming the first bad value and what is allowed."""
    flag_utils.check_required(self, ("sweep_dir", "output_dir"))
    flag_utils.check_choices(self)
    for name in ("label_fractions", "linear_fractions"):
      given = getattr(self, name)
      if not all(0 < f <= 1 for f in given):
        raise ValueError(f"--{name}={','.join(f'{f:g}' for f in given)}; "
                         "allowed: numbers with 0 < fraction <= 1")
    seeds = self.eval_seeds
    if min(seeds) < 0 or len(set(seeds)) < len(seeds):
      raise ValueError(f"--eval_seeds={','.join(map(str, seeds))}; allowed: "
                       "distinct seeds >= 0")
    if self.run:
      for method, _, _ in plan(self.methods, self.label_fractions[:1]):
        kind = method if method == "supervised" else method.split("_")[1]
        if not self.flagfiles[kind]:
          raise ValueError(f"--{kind}_flagfile is required for {method}")
      if any(m != "supervised" for m in self.methods) and not self.encoder:
        raise ValueError("--encoder is required for the CPC and random-init "
                         "methods")
    return self


def run_seeds(eval_seeds):
  """The seeds `run_dir` and `command` take for `eval_seeds`: (None,) for
  (0,), the layout of single-seed sweeps (<method>/<N>pct, the binaries'
  default --seed), so those still collect."""
  return (None,) if tuple(eval_seeds) == (0,) else tuple(eval_seeds)


def run_dir(sweep_dir, method, fraction, seed=None):
  """<sweep_dir>/<method>/<N>pct/seed<k>; <method>/<N>pct if seed is None."""
  path = os.path.join(sweep_dir, method, f"{100 * fraction:g}pct")
  return path if seed is None else os.path.join(path, f"seed{seed}")


def command(method, fraction, sweep_dir, encoder, flagfiles, seed=None):
  """The command line of one run (`seed` as `run_seeds` gives it)."""
  model_dir = run_dir(sweep_dir, method, fraction, seed)
  common = [f"--label_fraction={fraction:g}", f"--model_dir={model_dir}"]
  if seed is not None:
    common.append(f"--seed={seed}")
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
                                         fraction, seed))
  return args


def all_fractions(fractions, linear_fractions=()):
  """The label fractions of the other and the linear methods, ascending."""
  return tuple(sorted(set(fractions) | set(linear_fractions)))


def plan(methods, fractions, eval_seeds=(0,), linear_fractions=()):
  """(method, fraction, seed) in run order, seeds as `run_seeds` gives
  them: one seed's whole sweep before the next seed's (an interrupted sweep
  has a full table first), by fraction, and an efficient run (added if
  missing) before the fine-tuning that starts from it. The linear methods
  run at `linear_fractions` if given, the others at `fractions`."""
  needed = set(methods)
  for m in methods:
    if m.endswith("finetune"):
      needed.add(m.replace("finetune", "efficient"))
  order = sorted(needed, key=lambda m: (m.endswith("finetune"),
                                        list(METHODS).index(m)))
  at = {m: linear_fractions if m.endswith("linear") and linear_fractions
        else fractions for m in order}
  return [(m, f, s) for s in run_seeds(eval_seeds)
          for f in all_fractions(fractions, linear_fractions)
          for m in order if f in at[m]]


def collect(sweep_dir, methods, fractions, eval_seeds=(0,)):
  """{(method, fraction): {seed: results}} of the finished runs."""
  from cpc_tf import results as results_lib
  found = {}
  for method in methods:
    for fraction in fractions:
      runs = {}
      for seed, path_seed in zip(eval_seeds, run_seeds(eval_seeds)):
        results = results_lib.read(run_dir(sweep_dir, method, fraction,
                                           path_seed))
        if results is not None:
          runs[seed] = results
      if runs:
        found[method, fraction] = runs
  for fraction in fractions:
    runs = _runs_at(found, fraction)
    for key in _SAME_DATA:
      if len({r[key] for r in runs}) > 1:
        raise ValueError(f"{100 * fraction:g}% runs disagree on {key}: "
                         f"{sorted({r[key] for r in runs})}")
  return found


def _runs_at(found, fraction):
  """The results of every method and seed `collect` found at `fraction`."""
  return [r for (_, f), by_seed in found.items() if f == fraction
          for r in by_seed.values()]


def mean_std(runs, metric):
  """Mean and sample standard deviation (None for one seed) of `metric`
  (a key of _METRICS) over `runs` ({seed: results})."""
  part, key = _METRICS[metric]
  values = [r[part][key] for r in runs.values()]
  return (statistics.mean(values),
          statistics.stdev(values) if len(values) > 1 else None)


def summary(runs):
  """results.json's entry of one method and fraction: each seed's test
  metrics and validation Top-1, and their mean and std over the seeds."""
  stats = {metric: mean_std(runs, metric) for metric in _METRICS}
  return {"seeds": {str(s): r["test"] | {"validation_top1":
                                         r["validation"]["top1"]}
                    for s, r in sorted(runs.items())},
          "mean": {metric: m for metric, (m, _) in stats.items()},
          "std": {metric: sd for metric, (_, sd) in stats.items()}}


def _percent(runs, metric):
  """'56.3 ± 0.4' (no ± for one seed)."""
  mean, std = mean_std(runs, metric)
  return f"{100 * mean:.1f}" + ("" if std is None else f" ± {100 * std:.1f}")


def _cell(runs, num_seeds):
  """'Top-1 mean ± std / Top-5 mean', and the seeds found if fewer than
  asked."""
  if not runs:
    return "—"
  text = (f"{_percent(runs, 'top1')} / "
          f"{100 * mean_std(runs, 'top5')[0]:.1f}")
  if len(runs) < num_seeds:
    text += f" ({len(runs)} of {num_seeds} seeds)"
  return text


def _side(found, name, methods, fraction):
  """(text, mean test Top-1) of the method of `methods` with the best mean
  validation Top-1 at `fraction` (§4.2, A.4: chosen on validation), or
  None if none ran."""
  ran = [m for m in methods if (m, fraction) in found]
  if not ran:
    return None
  best = max(ran, key=lambda m: mean_std(found[m, fraction],
                                          "validation_top1")[0])
  if len(methods) > 1:
    chosen = ", chosen on validation" if len(ran) > 1 else ""
    name += f" ({_PROTOCOLS[best.split('_')[1]]}{chosen})"
  runs = found[best, fraction]
  return f"{name} {_percent(runs, 'top1')}", mean_std(runs, "top1")[0]


def claim(found, fraction):
  """The claim check at `fraction` (§4.2), one line per comparison: CPC
  (the better of fixed and fine-tuned on validation) vs supervised and vs
  random-init (likewise), linear CPC vs linear random-init; margins are
  differences of mean test Top-1, in points."""
  lines = []
  for ours, control in COMPARISONS:
    a, b = _side(found, *ours, fraction), _side(found, *control, fraction)
    if a and b:
      margin = f"{100 * (a[1] - b[1]):+.1f} points"
      lines.append(f"{a[0]} vs {b[0]}: margin "
                   f"{margin if a[1] > b[1] else f'**{margin}**'}")
  return lines or ["not enough runs to compare"]


def markdown(found, methods, fractions, commands, title, eval_seeds=(0,)):
  """The report: table, data sizes, claim check, commands."""
  pct = [f"{100 * f:g}%" for f in fractions]
  seeds = ("" if len(eval_seeds) == 1 else
           f", mean over seeds {', '.join(map(str, eval_seeds))} (± the "
           "sample std of Top-1)")
  lines = [f"# {title or 'Data-efficient classification'}", "",
           f"Test Top-1 / Top-5 accuracy (%){seeds}; each run's weights "
           "selected on the held-out validation part of the training "
           "split.", "",
           "| Method | " + " | ".join(pct) + " |",
           "| --- |" + " --- |" * len(pct)]
  for method in methods:
    lines.append(f"| {METHODS[method][0]} | " + " | ".join(
        _cell(found.get((method, f)), len(eval_seeds)) for f in fractions)
                 + " |")
  lines += ["", "| Labelled data | " + " | ".join(pct) + " |",
            "| --- |" + " --- |" * len(pct)]
  sizes = []
  for f in fractions:
    runs = _runs_at(found, f)
    sizes.append(f"{runs[0]['num_train']} train / {runs[0]['num_validation']}"
                 f" val / {runs[0]['num_test']} test" if runs else "—")
  lines.append("| images | " + " | ".join(sizes) + " |")
  lines += ["", "## Claim: CPC beats supervised and random-init", "",
            "Test Top-1 (%); fixed or fine-tuned is chosen on the mean "
            "validation Top-1; a margin is the difference of the means.", ""]
  for f in fractions:
    lines.append(f"- {100 * f:g}% labels:")
    lines += [f"  - {line}" for line in claim(found, f)]
  lines += ["", "## Commands", "", "```sh"] + [
      " ".join(shlex.quote(a) for a in c) for c in commands] + ["```", ""]
  return "\n".join(lines)


def figure(found, methods, fractions, metric, title):
  """Mean accuracy vs % of labels (log axis), one line per method with
  the std over seeds as error bars (Fig. 1): a matplotlib Figure, off
  screen."""
  from matplotlib import figure as figure_lib
  fig = figure_lib.Figure(figsize=(6, 4.5))
  ax = fig.subplots()
  for method in methods:
    points = [(100 * f, *mean_std(found[method, f], metric))
              for f in fractions if (method, f) in found]
    if points:
      label, colour, style = METHODS[method]
      xs, ys, stds = zip(*points)
      ax.errorbar(xs, [100 * y for y in ys],
                  yerr=[100 * (s or 0) for s in stds], fmt=style,
                  marker="o", color=colour, capsize=3, label=label)
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
                 title="", metric="top1", eval_seeds=(0,)):
  """Collects the finished runs in `sweep_dir` and writes report.md,
  results.json (per method and fraction: each seed's test metrics and
  validation top-1, their mean and std) and report.png to `output_dir`
  (both any tf.io.gfile path); returns report.md's text.

  Raises:
    ValueError: runs of one fraction disagree on their data (`collect`).
  """
  found = collect(sweep_dir, methods, fractions, eval_seeds)
  text = markdown(found, methods, fractions, commands, title, eval_seeds)
  _write(os.path.join(output_dir, "report.md"), text)
  _write(os.path.join(output_dir, "results.json"), json.dumps(
      {f"{m}/{100 * g:g}pct": summary(runs)
       for (m, g), runs in sorted(found.items())}, indent=2))
  plot(found, methods, fractions, metric, title,
       os.path.join(output_dir, "report.png"))
  return text


def run_sweep(config):
  """Writes commands.sh, runs the sweep's missing runs (unless --norun) and
  writes the report; returns report.md's text."""
  commands = [command(m, f, config.sweep_dir, config.encoder,
                      config.flagfiles, s)
              for m, f, s in plan(config.methods, config.label_fractions,
                                  config.eval_seeds, config.linear_fractions)]
  write_commands(config.output_dir, commands)
  if config.run:
    for args in commands:
      print("+ " + _shell([args]), flush=True)
      if subprocess.run(args, check=False).returncode:
        sys.exit(f"error: a run failed; fix it and rerun to resume:\n"
                 f"{_shell([args])}")
  return write_report(config.sweep_dir, config.output_dir, config.methods,
                      config.fractions, commands, config.title,
                      config.plot_metric, config.eval_seeds)


def main(argv):
  _, text = flag_utils.run_main(argv, ReportConfig, lambda: run_sweep)
  print(text)


if __name__ == "__main__":
  flag_utils.define_flags(ReportConfig)
  app.run(main)
