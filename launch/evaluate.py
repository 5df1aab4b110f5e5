"""Evaluates item embeddings (or the Random baseline) on a purchase log; writes WORKDIR/metrics.json.

  python -m launch.evaluate --config=configs/evaluate.py --config.dataset.format=ugallery \
      --config.dataset.dir=DIR --config.embeddings=FILE|random --config.k=20 --workdir=OUT
"""

import json
import os

from absl import app, flags
from ml_collections import config_flags

from jaxrec import evaluation, io_utils, report
from jaxrec.errors import run_main

_CONFIG = config_flags.DEFINE_config_file(
    "config", os.path.join(os.path.dirname(__file__), "..", "configs", "evaluate.py"), "Evaluation config.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Folder for metrics.json and config.json.", required=True)
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Replace results of a differently configured run.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  config = _CONFIG.value
  config_json = json.loads(config.to_json())
  config_path = os.path.join(_WORKDIR.value, "config.json")
  if os.path.exists(config_path) and not _OVERWRITE.value:
    with open(config_path) as f:
      if json.load(f) != config_json:
        raise app.UsageError(f"{_WORKDIR.value} holds the results of a differently configured run "
                             f"(see {config_path}); choose another --workdir or pass --overwrite")
  result = evaluation.evaluate_config(config)
  name = evaluation.row_name(config)
  print(report.text_table([(name, result.metrics)], config.k))
  print(f"({result.metrics['num_transactions']} transactions of {result.metrics['num_users']} users, "
        f"{result.metrics['mean_candidates']:.0f} candidates on average)")
  io_utils.write_json(os.path.join(_WORKDIR.value, "metrics.json"), result.metrics)
  io_utils.write_json(config_path, config_json)


if __name__ == "__main__":
  run_main(main)
