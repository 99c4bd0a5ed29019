"""absl flags from a config dataclass: one flag per field, with its help.

A field's default decides the flag type; a tuple default makes a
comma-separated list flag whose items take the type of the default's items
(a sweep axis); `choices` in the field metadata restrict the values.
"""

import dataclasses
import importlib
import os
import sys

from absl import app
from absl import flags
from absl import logging


def field(default, help_text, choices=None):
  """A config dataclass field whose flag has this help (and choices)."""
  return dataclasses.field(default=default,
                           metadata={"help": help_text, "choices": choices})


def define_flags(config_cls, flag_values=flags.FLAGS):
  """Defines one flag per field of `config_cls`."""
  for field in dataclasses.fields(config_cls):
    name, default = field.name, field.default
    help_text = field.metadata["help"]
    choices = field.metadata.get("choices")
    kwargs = dict(flag_values=flag_values)
    if isinstance(default, tuple):
      flags.DEFINE_list(name, [str(v) for v in default], help_text, **kwargs)
    elif choices and isinstance(default, str):
      flags.DEFINE_enum(name, default, choices, help_text, **kwargs)
    elif isinstance(default, bool):
      flags.DEFINE_bool(name, default, help_text, **kwargs)
    elif isinstance(default, int):
      flags.DEFINE_integer(name, default, help_text, **kwargs)
    elif isinstance(default, float):
      flags.DEFINE_float(name, default, help_text, **kwargs)
    else:
      flags.DEFINE_string(name, default, help_text, **kwargs)


def _parse_list(name, items, default):
  kind = type(default[0])
  try:
    return tuple(kind(item) for item in items)
  except ValueError:
    raise ValueError(f"--{name}={','.join(items)}; expected comma-separated "
                     f"{kind.__name__} values") from None


def config_from_flags(config_cls, flag_values=flags.FLAGS):
  """The dataclass filled from the parsed flags (list flags as tuples)."""
  values = {}
  for field in dataclasses.fields(config_cls):
    value = flag_values[field.name].value
    if isinstance(field.default, tuple):
      value = _parse_list(field.name, value, field.default)
    values[field.name] = value
  return config_cls(**values)


def run_main(argv, config_cls, load_run):
  """Flags -> validated config -> `load_run()(config)`; bad values and user
  errors end in one line (--verbosity=1 shows the traceback). Returns
  (config, what the run returned)."""
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  try:
    config = config_from_flags(config_cls).validate()
  except ValueError as e:
    sys.exit(f"error: {e}")
  run = load_run()  # Heavy imports (TensorFlow) after the checks.
  from cpc_tf.train import loop  # pylint: disable=g-import-not-at-top
  try:
    return config, run(config)
  except loop.Preempted as e:  # SIGTERM: checkpointed; not a failure.
    logging.warning("%s", e)
    sys.exit(0)
  except ValueError as e:  # User errors (data, paths) found while building.
    if flags.FLAGS.verbosity > 0:
      raise
    sys.exit(f"error: {e}")


def check_choices(config):
  """Raises ValueError if a field (or an item of a list field) is not among
  its choices, or a list field is empty."""
  for f in dataclasses.fields(config):
    choices, value = f.metadata["choices"], getattr(config, f.name)
    for item in value if isinstance(value, tuple) else (value,):
      if choices and item not in choices:
        raise ValueError(f"--{f.name}={item!r}; allowed: "
                         f"{', '.join(map(str, choices))}")
    if isinstance(value, tuple) and not value:
      raise ValueError(f"--{f.name} is empty; give at least one value")


def check_positive(config, names, allow_zero=False):
  """Raises ValueError naming the first of `names` that is <= 0 (< 0)."""
  for name in names:
    value = getattr(config, name)
    if value < 0 or (value == 0 and not allow_zero):
      raise ValueError(f"--{name}={value}; must be "
                       f"{'>= 0' if allow_zero else '> 0'}")


def evaluation_binary(config_cls, run_module):
  """Defines the flags of `config_cls` and returns the absl main of an
  evaluation binary: `run_main` with `<run_module>.run`, then the test
  accuracy and where results.json went."""
  define_flags(config_cls)

  def main(argv):
    config, outcome = run_main(
        argv, config_cls, lambda: importlib.import_module(run_module).run)
    print(f"{outcome['method']} {outcome['subset']}: test top-1 "
          f"{outcome['test']['top1']:.4f}, top-5 {outcome['test']['top5']:.4f}"
          f" (validation top-1 {outcome['validation']['top1']:.4f})")
    print(f"results: {os.path.join(config.model_dir, 'results.json')}")
  return main
