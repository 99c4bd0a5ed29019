"""The binaries: libraries never import one, and each ends on a user-facing
error with one line and no traceback."""

import ast
import subprocess
import sys

from absl import flags
from absl.testing import flagsaver
import pytest

from conftest import ROOT
from cpc_tf import errors

PACKAGE = ROOT / "cpc_tf"
KNOWN_BINARIES = {"cpc_tf.pretrain", "cpc_tf.evaluate", "cpc_tf.supervised",
                  "cpc_tf.report", "cpc_tf.export", "cpc_tf.benchmark"}


def _modules():
  """{module name: parsed source} of every module in cpc_tf/."""
  modules = {}
  for path in sorted(PACKAGE.rglob("*.py")):
    parts = path.relative_to(ROOT).with_suffix("").parts
    if parts[-1] == "__init__":
      parts = parts[:-1]
    modules[".".join(parts)] = (ast.parse(path.read_text()),
                                path.name == "__init__.py")
  return modules


def _is_binary(tree):
  """An absl binary: it calls `app.run`, or defines `main(argv)`."""
  for node in ast.walk(tree):
    if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
        and node.func.attr == "run" and isinstance(node.func.value, ast.Name)
        and node.func.value.id == "app"):
      return True
  return any(isinstance(node, ast.FunctionDef) and node.name == "main"
             and [a.arg for a in node.args.args] == ["argv"]
             for node in tree.body)


def _imported(name, tree, is_package):
  """Every module name `name`'s source imports (at any depth, relative
  imports resolved, `importlib.import_module("...")` included)."""
  package = name if is_package else name.rpartition(".")[0]
  found = set()
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      found.update(alias.name for alias in node.names)
    elif isinstance(node, ast.ImportFrom):
      base = node.module or ""
      if node.level:
        anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
        base = ".".join(anchor + ([base] if base else []))
      found.add(base)
      found.update(f"{base}.{alias.name}" for alias in node.names)
    elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
          and node.func.attr == "import_module" and node.args
          and isinstance(node.args[0], ast.Constant)):
      found.add(node.args[0].value)
  return found


def test_no_module_imports_a_binary():
  modules = _modules()
  binaries = {name for name, (tree, _) in modules.items() if _is_binary(tree)}
  assert binaries >= KNOWN_BINARIES
  assert "cpc_tf.export_lib" not in binaries
  for name, (tree, is_package) in modules.items():
    imported = _imported(name, tree, is_package) & binaries
    assert not imported, f"{name} imports the binary {', '.join(imported)}"


@pytest.mark.parametrize("args, message", [
    ([], "error: --model_dir is required"),
    (["--model_dir={dir}"], "error: no checkpoint in {dir}"),
    (["--model_dir={dir}", "--untrained"],
     "error: {dir} is not a pretraining directory: it has no config.json"),
])
def test_export_stops_in_one_line(tmp_path, args, message):
  from cpc_tf import export  # pylint: disable=g-import-not-at-top
  args = [a.format(dir=tmp_path) for a in args]
  with flagsaver.flagsaver(), pytest.raises(SystemExit) as stop:
    flags.FLAGS(["export", *args])
    export.main(["export"])
  assert stop.value.code == message.format(dir=tmp_path)


def test_preemption_ends_a_binary_cleanly():
  with flagsaver.flagsaver(), pytest.raises(SystemExit) as stop:
    flags.FLAGS(["binary"])
    with errors.reported_in_one_line():
      raise errors.Preempted("preempted at step 3; rerun to resume")
  assert stop.value.code == 0


# The checkpoint of step 2 is written, the next write finds the disk full.
_DISK_FULL_AFTER_STEP_2 = """
from absl import app
import tensorflow as tf
from cpc_tf import pretrain

save = tf.train.CheckpointManager.save
def disk_full_after_step_2(self, checkpoint_number=None, **kwargs):
  if checkpoint_number > 2:
    raise OSError(28, "No space left on device")
  return save(self, checkpoint_number=checkpoint_number, **kwargs)
tf.train.CheckpointManager.save = disk_full_after_step_2
app.run(pretrain.main)
"""


def _pretrain(model_dir, entry, *args):
  """Runs the pretraining binary, from `entry` (`-m cpc_tf.pretrain` or a
  `-c` script), on a small demo setting; returns its stderr lines."""
  done = subprocess.run(
      [sys.executable, *entry, "--flagfile=flags/demo_cpu.flags",
       f"--model_dir={model_dir}", "--batch_size=4", "--directions=1",
       "--steps_per_loop=2", "--checkpoint_every=2", "--summary_every=2",
       "--export=false", *args],
      cwd=ROOT, capture_output=True, text=True, timeout=600)
  assert done.returncode == 1, done.stderr
  assert "Traceback" not in done.stderr, done.stderr
  return done.stderr.strip().splitlines()


def test_pretrain_stops_in_one_line_when_the_loss_diverges(tmp_path):
  # The first update at this rate leaves weights near the float32 maximum:
  # every loss after it overflows.
  lines = _pretrain(tmp_path, ["-m", "cpc_tf.pretrain"],
                    "--learning_rate=1e38", "--warmup_steps=0",
                    "--train_steps=20")
  assert lines[-1].startswith(
      "error: 10 consecutive steps with a non-finite loss or gradient"), lines


def test_pretrain_stops_in_one_line_when_a_checkpoint_write_fails(tmp_path):
  lines = _pretrain(tmp_path, ["-c", _DISK_FULL_AFTER_STEP_2],
                    "--train_steps=4")
  assert lines[-1] == (
      f"error: writing the step-4 checkpoint to {tmp_path} failed ([Errno "
      f"28] No space left on device); the previous checkpoint "
      f"{tmp_path}/ckpt-2 is intact and a rerun resumes from it"), lines
