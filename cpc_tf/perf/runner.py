"""A measurement in a process of its own, so its peak RSS is its own and one
preset's memory does not inflate the next:

  python -m cpc_tf.perf.runner '<{"kind": ..., "args": ...}>' <output.json>
"""

import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time

from absl import logging

from cpc_tf.perf import machine
from cpc_tf.perf import measure


def run(kind, args, isolate=True, unset=()):
  """`measure.run(kind, args)`, in a subprocess without the environment
  variables `unset` if `isolate`; adds the wall time and load average, or
  returns {"error": ...} with the child's last lines if it failed."""
  start = time.perf_counter()
  if not isolate:
    result = measure.run(kind, args)
  else:
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
      out = f.name
    try:
      env = {k: v for k, v in os.environ.items() if k not in unset}
      proc = subprocess.run(
          [sys.executable, "-m", "cpc_tf.perf.runner",
           json.dumps({"kind": kind, "args": args}), out],
          capture_output=True, text=True, check=False, env=env)
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
  result["load_after"] = machine.load()
  logging.info("%s %s done in %.0f s", kind, args.get("preset", ""),
               result["wall_seconds"])
  return result


if __name__ == "__main__":
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  _spec, _output = json.loads(sys.argv[1]), sys.argv[2]
  _result = measure.run(_spec["kind"], _spec["args"])
  with open(_output, "w") as _f:
    json.dump(_result, _f)
