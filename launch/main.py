"""The main job on the embedded default data: `python -m launch.main` with no arguments.

Evaluates the sample shop's embeddings and the Random baseline with the paper's protocol and writes a
Table-1-style table to WORKDIR (results/ by default): table.md, table.csv, metrics.json.
"""

import os

from absl import app, flags, logging

from jaxrec import evaluation, io_utils, report
from jaxrec.errors import exit_on_input_error
from configs import evaluate as evaluate_config

_WORKDIR = flags.DEFINE_string("workdir", "results", "Folder for the tables.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  base = evaluate_config.get_config()
  logging.info("evaluating on %s", base.dataset.dir)
  rows, all_metrics = [], {}
  for embeddings, name in (("", "sample embeddings (max cosine)"), ("random", "Random")):
    config = base.copy_and_resolve_references()
    config.embeddings, config.name = embeddings, name
    result = evaluation.evaluate_config(config)
    rows.append((name, result.metrics))
    all_metrics[name] = result.metrics
  k = base.k
  m = rows[0][1]
  print(f"\nSample shop (simulated log, synthetic embeddings): {m['num_transactions']} transactions of "
        f"{m['num_users']} users, {m['mean_candidates']:.0f} candidates on average\n")
  print("Mean over transactions:")
  print(report.text_table(rows, k))
  print("\nMean over users:")
  print(report.text_table(rows, k, by_user=True))
  out = _WORKDIR.value
  io_utils.write_text(os.path.join(out, "table.md"),
                      "Mean over transactions\n\n" + report.markdown_table(rows, k)
                      + "\nMean over users\n\n" + report.markdown_table(rows, k, by_user=True))
  io_utils.write_text(os.path.join(out, "table.csv"), report.csv_table(rows, k))
  io_utils.write_json(os.path.join(out, "metrics.json"), all_metrics)
  print(f"\nWrote {out}/table.md, table.csv, metrics.json")


if __name__ == "__main__":
  app.run(exit_on_input_error(main))
