"""results.json: what one evaluation run reports (schema version 1).

  method            cpc_linear | cpc_efficient | cpc_finetune | random_... |
                    supervised
  subset            "1%", "10%", "25/class", ...
  label_fraction    float, or null with images_per_class
  images_per_class  int or null
  dataset, train_split, test_split
  num_classes, num_train, num_validation, num_test   ints
  validation        {"top1"}: the selected weights on held-out validation
  test              {"top1", "top5", "examples", "per_class": {name: top1}}
  best_step, steps_trained   ints;  stopped_early   bool
  seconds           wall-clock seconds of the run
  config            the run's flags
  details           method-specific: the encoder used, or the sweep trials
"""

import dataclasses
import json
import os

import tensorflow as tf

from cpc_tf import files

SCHEMA_VERSION = 1
FILE_NAME = "results.json"
_TYPES = {
    "schema_version": int, "method": str, "subset": str, "dataset": str,
    "train_split": str, "test_split": str, "num_classes": int,
    "num_train": int, "num_validation": int, "num_test": int,
    "validation": dict, "test": dict, "best_step": int, "steps_trained": int,
    "stopped_early": bool, "seconds": float, "config": dict, "details": dict,
}


def make(config, data, outcome, seconds, details):
  """Results of `config` (an eval_config config) on `data`
  (`labeled.LabeledData`) given `classification.train_and_test`'s
  `outcome`."""
  return dict(
      schema_version=SCHEMA_VERSION, method=config.method,
      subset=config.subset_name(),
      label_fraction=None if config.images_per_class else
      config.label_fraction,
      images_per_class=config.images_per_class or None,
      dataset=config.dataset, train_split=config.train_split,
      test_split=config.test_split, num_classes=data.num_classes,
      num_train=data.num_train, num_validation=data.num_validation,
      num_test=data.num_test, seconds=float(seconds), config=config_dict(
          config), details=details, **outcome)


def config_dict(config):
  return json.loads(json.dumps(dataclasses.asdict(config)))


def check(results):
  """Raises ValueError if `results` does not follow the schema."""
  for key, kind in _TYPES.items():
    if not isinstance(results.get(key), kind):
      raise ValueError(f"results: {key!r} should be a {kind.__name__}, got "
                       f"{results.get(key)!r}")
  if results["schema_version"] != SCHEMA_VERSION:
    raise ValueError(f"results schema {results['schema_version']}; this "
                     f"code reads {SCHEMA_VERSION}")
  test = results["test"]
  for part, key in (("validation", "top1"), ("test", "top1"),
                    ("test", "top5")):
    value = results[part].get(key)
    if not isinstance(value, float) or not 0 <= value <= 1:
      raise ValueError(f"results: {part}.{key} should be in [0, 1], got "
                       f"{value!r}")
  if (not isinstance(test.get("per_class"), dict) or
      len(test["per_class"]) != results["num_classes"]):
    raise ValueError("results: test.per_class should map each of the "
                     f"{results['num_classes']} classes to its accuracy")
  if test.get("examples") != results["num_test"]:
    raise ValueError(f"results: test.examples {test.get('examples')} != "
                     f"num_test {results['num_test']}")
  return results


def write(directory, results):
  """Checks and writes `<directory>/results.json` (any tf.io.gfile path)
  atomically."""
  check(results)
  return files.write_atomic(os.path.join(directory, FILE_NAME),
                            json.dumps(results, indent=2, sort_keys=True))


def read(directory):
  """The checked results in `directory`, or None if there are none yet."""
  try:
    with tf.io.gfile.GFile(os.path.join(directory, FILE_NAME)) as f:
      return check(json.load(f))
  except tf.errors.NotFoundError:
    return None
