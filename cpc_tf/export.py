r"""Export the encoder of a pretraining run as a versioned SavedModel.

  python -m cpc_tf.export --model_dir=<pretraining dir> [--export_dir=]
      [--untrained]  (the same encoder, randomly initialised: a control)

Writes `<export_dir>/<step>/` (default `<model_dir>/export/<step>/`), the
step of the newest checkpoint (0 with --untrained), verified before it is
put in place; `cpc_tf.export_lib` describes the layout and endpoints.
Every field of `ExportConfig` is a flag.
"""

import dataclasses
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")  # Keep TF's C++ logs quiet.

from absl import app

from cpc_tf import flag_utils
from cpc_tf.flag_utils import field


@dataclasses.dataclass
class ExportConfig:
  """What to export, and where."""
  model_dir: str = field("", "Pretraining directory (config.json and "
                          "checkpoints).")
  export_dir: str = field("", "Export base: the SavedModel goes to "
                           "<export_dir>/<step>/; default <model_dir>/export.")
  untrained: bool = field(False, "Export the randomly initialised encoder of "
                          "this configuration as version 0 (random-init "
                          "control).")

  def validate(self):
    """Raises ValueError naming the first bad value."""
    flag_utils.check_required(self, ("model_dir",))
    return self


flag_utils.define_flags(ExportConfig)


def _load_export():
  from cpc_tf import export_lib  # pylint: disable=g-import-not-at-top
  return lambda config: export_lib.export_checkpoint(
      config.model_dir, config.export_dir, config.untrained)


def main(argv):
  _, path = flag_utils.run_main(argv, ExportConfig, _load_export)
  print(f"SavedModel: {path}")


if __name__ == "__main__":
  app.run(main)
