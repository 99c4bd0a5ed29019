"""absl flags from a config dataclass: one flag per field, with its help.

A field's default decides the flag type; a tuple default makes a
comma-separated list flag whose items take the type of the default's items
(a sweep axis); `choices` in the field metadata restrict the values (a
string field with choices and an empty default is an enum flag the user
must give). A config class may keep old flag names working for a while:
`RENAMED_FLAGS = {old: new}` defines `--old` as a deprecated alias.

The flags belong to the module that calls `define_flags` (this module
disclaims them), so they are key flags of a binary and its `--help` lists
them. Nothing here imports TensorFlow: binaries parse and validate their
flags before paying for it.
"""

import dataclasses
import importlib
import os
import sys

from absl import app
from absl import flags
from absl import logging

from cpc_tf import errors

flags.disclaim_key_flags()


def field(default, help_text, choices=None):
  """A config dataclass field whose flag has this help (and choices)."""
  return dataclasses.field(default=default,
                           metadata={"help": help_text, "choices": choices})


def with_default(config_cls, name, default):
  """The field `name` of `config_cls` with another default, same help and
  choices: a subclass's field."""
  same = config_cls.__dataclass_fields__[name]
  return field(default, same.metadata["help"], same.metadata["choices"])


def define_flags(config_cls, flag_values=flags.FLAGS):
  """Defines one flag per field of `config_cls`, and the old name of each
  renamed one."""
  fields = {f.name: f for f in dataclasses.fields(config_cls)}
  for f in fields.values():
    _define(f.name, f.default, f.metadata["help"], f.metadata["choices"],
            flag_values)
  for old, new in getattr(config_cls, "RENAMED_FLAGS", {}).items():
    same = fields[new]  # Same type and choices, empty default.
    _define(old, type(same.default)(), f"Deprecated: the old name of "
            f"--{new}.", same.metadata["choices"], flag_values)


def _define(name, default, help_text, choices, flag_values):
  kwargs = dict(flag_values=flag_values)
  if isinstance(default, tuple):
    flags.DEFINE_list(name, [str(v) for v in default], help_text, **kwargs)
  elif choices and isinstance(default, str):
    flags.DEFINE_enum(name, default or None, choices, help_text, **kwargs)
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


def _value(flag_values, name, f):
  value = flag_values[name].value
  if value is None:  # A required enum flag not given.
    return f.default
  if isinstance(f.default, tuple):
    return _parse_list(name, value, f.default)
  return value


def config_from_flags(config_cls, flag_values=flags.FLAGS):
  """The dataclass filled from the parsed flags (list flags as tuples). An
  old flag name, if given, wins over the new one (which a rewritten
  flagfile may set), with a warning."""
  fields = {f.name: f for f in dataclasses.fields(config_cls)}
  values = {name: _value(flag_values, name, f) for name, f in fields.items()}
  for old, new in getattr(config_cls, "RENAMED_FLAGS", {}).items():
    if flag_values[old].present:
      values[new] = _value(flag_values, old, fields[new])
      logging.warning("--%s is deprecated; use --%s (here --%s=%s)", old,
                      new, new, values[new])
  return config_cls(**values)


def checked_config(argv, config_cls, flag_values=flags.FLAGS):
  """The validated config of the parsed flags; a bad value ends the
  program with one line naming the flag and what is allowed."""
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  try:
    return config_from_flags(config_cls, flag_values).validate()
  except ValueError as e:
    sys.exit(f"error: {e}")


def run_main(argv, config_cls, load_run):
  """Flags -> validated config -> `load_run()(config)`; bad values and user
  errors end in one line (`errors.reported_in_one_line`). Returns (config,
  what the run returned)."""
  config = checked_config(argv, config_cls)
  run = load_run()  # Heavy imports (TensorFlow) after the checks.
  with errors.reported_in_one_line():
    return config, run(config)


def check_required(config, names):
  """Raises ValueError naming the first of `names` left empty (and its
  choices, if any)."""
  for name in names:
    if not getattr(config, name):
      choices = config.__dataclass_fields__[name].metadata["choices"]
      allowed = f"; allowed: {', '.join(map(str, choices))}" if choices else ""
      raise ValueError(f"--{name} is required{allowed}")


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


def check_probability(config, names):
  """Raises ValueError naming the first of `names` outside [0, 1]."""
  for name in names:
    value = getattr(config, name)
    if not 0.0 <= value <= 1.0:
      raise ValueError(f"--{name}={value}; must be in [0, 1]")


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
