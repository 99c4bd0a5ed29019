"""Where a step's time goes, op type by op type (the MFU gap).

`trace(run, logdir)` records `run()` with the TensorBoard profiler (the
trace stays in `logdir` for TensorBoard's Profile tab); `op_table(path, ...)`
reads the host plane of the XSpace it wrote. TensorFlow names each executed
op's event "<op name>:<op type>"; the types are those after Grappler and
oneDNN rewrote the graph (e.g. `_MklNativeFusedConv2D`). Durations are summed
per type over all threads. Functional ops (`While`, `PartitionedCall`, ...)
wrap the ops they run and are left out so no time is counted twice.

Written by hand because TensorBoard's profile plugin shows the same table
only in its UI, with no Python API to read it; the XSpace protobuf ships
with TF.
"""

import collections
import os
import re

import tensorflow as tf
from tensorflow.tsl.profiler.protobuf import xplane_pb2

_OP_EVENT = re.compile(r"^[^:\s][^:]*:([A-Za-z_][A-Za-z0-9_]*)$")
_WRAPPERS = frozenset({"While", "StatelessWhile", "If", "StatelessIf", "Case",
                       "StatelessCase", "PartitionedCall",
                       "StatefulPartitionedCall"})
# Op types whose FLOPs MFU counts (see flops.py), after Grappler's rewrites.
_COUNTED = re.compile(r"Conv2D|MatMul|Einsum")


def trace(run, logdir):
  """Runs `run()` under the profiler; returns the .xplane.pb path written
  (`logdir` may be any tf.io.gfile path)."""
  # Where the profiler writes and TensorBoard's profile plugin reads.
  pattern = os.path.join(logdir, "plugins", "profile", "*", "*.xplane.pb")
  before = set(tf.io.gfile.glob(pattern))
  tf.profiler.experimental.start(logdir)
  try:
    run()
  finally:
    tf.profiler.experimental.stop()
  written = set(tf.io.gfile.glob(pattern)) - before
  if len(written) != 1:
    raise RuntimeError(f"expected one new profile in {logdir}, found "
                       f"{sorted(written)}")
  return written.pop()


def op_seconds(xplane_path):
  """{op type: (summed seconds, number of executions)} from a host trace."""
  space = xplane_pb2.XSpace()
  with tf.io.gfile.GFile(xplane_path, "rb") as f:
    space.ParseFromString(f.read())
  seconds = collections.Counter()
  counts = collections.Counter()
  for plane in space.planes:
    if not plane.name.startswith("/host:"):
      continue
    types = {}
    for key, metadata in plane.event_metadata.items():
      match = _OP_EVENT.match(metadata.name)
      if match and match.group(1) not in _WRAPPERS:
        types[key] = match.group(1)
    for line in plane.lines:
      for event in line.events:
        kind = types.get(event.metadata_id)
        if kind is not None:
          seconds[kind] += event.duration_ps * 1e-12
          counts[kind] += 1
  return {kind: (seconds[kind], counts[kind]) for kind in seconds}


def op_table(xplane_path, steps, step_seconds, counted_flops, top=12):
  """Per-step op time by type, and how it adds up to the MFU.

  step_seconds: the step's wall time; counted_flops: its model FLOPs
  (flops.graph_flops), all of which run in the Conv2D/MatMul/Einsum family.
  Ops overlap on the cores, so wall time is attributed in proportion to op
  time: MFU = counted share * (counted ops' FLOP rate / peak).
  """
  times = op_seconds(xplane_path)
  if not times:
    raise RuntimeError(f"no TensorFlow op events in {xplane_path}")
  total = sum(seconds for seconds, _ in times.values())
  rows = [{"op_type": kind, "ms_per_step": 1e3 * seconds / steps,
           "share_of_op_time": seconds / total, "calls_per_step": n / steps,
           "counted": bool(_COUNTED.search(kind))}
          for kind, (seconds, n) in times.items()]
  rows.sort(key=lambda row: -row["ms_per_step"])
  share = sum(seconds for kind, (seconds, _) in times.items()
              if _COUNTED.search(kind)) / total
  return {
      "steps_traced": steps,
      "step_seconds": step_seconds,
      "op_seconds_per_step": total / steps,
      # >1 when the executor runs independent ops on both cores at once.
      "op_time_to_step_time": total / steps / step_seconds,
      "counted_ops_share_of_op_time": share,
      # The step's wall time split in proportion to op time: the counted
      # ops' part, and their FLOP rate in it. MFU = share * (this / peak).
      "counted_ops_seconds_per_step": share * step_seconds,
      "counted_ops_flops_per_sec": counted_flops / (share * step_seconds),
      "other_ops_seconds_per_step": (1 - share) * step_seconds,
      "top_ops": rows[:top],
      "other_op_types": max(len(rows) - top, 0),
  }
