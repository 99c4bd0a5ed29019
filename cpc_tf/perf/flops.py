"""FLOPs of a traced TensorFlow graph, counted op by op (for MFU).

`graph_flops(concrete_function)` walks the graph of a `tf.function`'s
concrete function (forward and, if the function takes gradients, the
backward ops TF generated for it) and counts the multiply-adds of its
convolutions and matrix products, 2 FLOPs each, from the static shapes:

  MatMul, BatchMatMul*:   2 * M * N * K (per batch entry)
  Conv2D and its two gradients (BackpropInput / BackpropFilter):
                          2 * N * OH * OW * Cout * KH * KW * Cin
  Einsum (two operands):  2 * product of the sizes of all its indices

Only ops that contribute to the function's outputs or side effects are
counted (TF builds e.g. the input gradient of the first convolution, which
nothing uses and Grappler prunes). Element-wise ops, reductions and
normalisation are not counted: MFU here is the usual "model FLOPs" of the
matmuls and convolutions. Nested functions (`PartitionedCall`, `While`
bodies) are not entered: count a function holding one step.
"""

import collections
import re

import numpy as np
import tensorflow as tf

CONV_OPS = ("Conv2D", "Conv2DBackpropInput", "Conv2DBackpropFilter")
MATMUL_OPS = ("MatMul", "BatchMatMul", "BatchMatMulV2", "BatchMatMulV3")
COUNTED_OPS = CONV_OPS + MATMUL_OPS + ("Einsum",)


def _shape(tensor):
  shape = tensor.shape
  if shape.rank is None or any(d is None for d in shape.as_list()):
    raise ValueError(f"{tensor.name} has a dynamic shape {shape}; count "
                     "FLOPs on a function traced with static shapes")
  return shape.as_list()


def op_flops(op):
  """FLOPs of one graph op (0 for ops that are not counted)."""
  kind = op.type
  if kind == "MatMul":
    a = _shape(op.inputs[0])
    k = a[0] if op.get_attr("transpose_a") else a[1]
    return 2 * int(np.prod(_shape(op.outputs[0]))) * k
  if kind in MATMUL_OPS:
    a = _shape(op.inputs[0])
    k = a[-2] if op.get_attr("adj_x") else a[-1]
    return 2 * int(np.prod(_shape(op.outputs[0]))) * k
  if kind == "Conv2D":
    kh, kw, cin, _ = _shape(op.inputs[1])
    return 2 * int(np.prod(_shape(op.outputs[0]))) * kh * kw * cin
  if kind == "Conv2DBackpropInput":
    kh, kw, cin, _ = _shape(op.inputs[1])
    # out_backprop has the forward output's shape.
    return 2 * int(np.prod(_shape(op.inputs[2]))) * kh * kw * cin
  if kind == "Conv2DBackpropFilter":
    kh, kw, cin, _ = _shape(op.outputs[0])
    return 2 * int(np.prod(_shape(op.inputs[2]))) * kh * kw * cin
  if kind == "Einsum":
    equation = op.get_attr("equation").decode().replace(" ", "")
    inputs = equation.split("->")[0].split(",")
    if len(inputs) != 2 or "." in equation:
      raise ValueError(f"Einsum {equation!r}: only two operands without "
                       "ellipsis are counted")
    sizes = {}
    for letters, tensor in zip(inputs, op.inputs):
      for letter, size in zip(letters, _shape(tensor)):
        sizes[letter] = size
    return 2 * int(np.prod(list(sizes.values())))
  return 0


def _live_ops(graph, outputs):
  """Ops the outputs, control outputs or stateful ops depend on."""
  roots = [t.op for t in outputs]
  roots += list(getattr(graph, "control_outputs", []))
  roots += [op for op in graph.get_operations() if op._is_stateful]  # pylint: disable=protected-access
  live, stack = set(), list(roots)
  while stack:
    op = stack.pop()
    if op in live:
      continue
    live.add(op)
    stack.extend(t.op for t in op.inputs)
    stack.extend(op.control_inputs)
  return live


def graph_flops(function, *args, prune=True):
  """Counted FLOPs of a `tf.function` (traced on `args`) or concrete function.

  Returns (total, {op_type: flops}, {name_scope: flops}); the name scopes
  are the first component of each op's name (e.g. "encoder", "cpc_top_down"
  or "gradient_tape"), for a breakdown.
  """
  if not hasattr(function, "graph"):
    function = function.get_concrete_function(*args)
  graph = function.graph
  ops = graph.get_operations()
  if prune:
    live = _live_ops(graph, graph.outputs)
    ops = [op for op in ops if op in live]
  by_type = collections.Counter()
  by_scope = collections.Counter()
  for op in ops:
    if op.type not in COUNTED_OPS:
      continue
    flops = op_flops(op)
    by_type[op.type] += flops
    by_scope[_scope(op.name)] += flops
  return sum(by_type.values()), dict(by_type), dict(by_scope)


def _scope(name):
  # Gradient ops live under gradient_tape/<forward scope>/...
  parts = name.split("/")
  if parts[0] == "gradient_tape" and len(parts) > 1:
    return "backward/" + _strip(parts[1])
  return "forward/" + _strip(parts[0])


def _strip(part):
  return re.sub(r"_\d+$", "", part)


def profiler_float_ops(function, *args):
  """tf.compat.v1.profiler's `float_ops` of the same graph (every op with a
  registered FLOP statistic, element-wise ones included, dead code too): a
  cross-check of `graph_flops`, not what MFU uses."""
  if not hasattr(function, "graph"):
    function = function.get_concrete_function(*args)
  options = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
  options["output"] = "none"
  result = tf.compat.v1.profiler.profile(function.graph, options=options)
  return int(result.total_float_ops)
