"""Performance tooling: measurements (`measure`), the machine (`machine`),
FLOP counting (`flops`), op profiles (`op_profile`), the report's headline
numbers (`summary`) and its Markdown (`markdown`); `cpc_tf.benchmark` runs
them."""
