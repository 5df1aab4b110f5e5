"""Runs many rows of a config file and collects them into one table in the paper's format, with a bar plot.

  python -m launch.sweep --config=configs/table2.py --workdir=OUT                  # every row, here, in turn
  python -m launch.sweep --config=configs/table2.py --workdir=OUT --print_commands # one line per row instead
  python -m launch.sweep --config=configs/table2.py --workdir=OUT --collect_only   # after those have run

Writes OUT/<row>/ (each row's launch.train workdir, embeddings.npz, metrics.json) and OUT/table.md,
table.csv, metrics.json, table.png. `--set key=value` changes every row (e.g. `--set max_epochs=3`,
`--set image_size=32`); rows already trained are reused.
"""

from absl import flags

from jaxrec.errors import run_main

_CONFIG = flags.DEFINE_string("config", "configs/table2.py", "A config file with ROWS and get_config(row).")
_WORKDIR = flags.DEFINE_string("workdir", None, "Folder of the sweep.", required=True)
_ROWS = flags.DEFINE_list("rows", [], "Rows to run (default: every row of the config file).")
_SET = flags.DEFINE_multi_string("set", [], "key=value applied to every row's config (max_epochs, patience "
                                 "and learning_rate alone set every stage's).")
_PRINT = flags.DEFINE_bool("print_commands", False, "Print one launch.train command per row (for a cluster "
                           "scheduler) and the command that collects them; run nothing.")
_COLLECT = flags.DEFINE_bool("collect_only", False, "Train nothing: embed, evaluate and tabulate rows that "
                             "have finished training.")


def main(argv):
  if len(argv) > 1:
    raise ValueError(f"unexpected arguments: {argv[1:]}")
  from jaxrec.train import sweep
  module = sweep.load_config_module(_CONFIG.value)
  rows = sweep.rows_of(module, _CONFIG.value, _ROWS.value)
  # Every row's config with the --set overrides: a bad one fails here, before anything runs.
  configs = {row: sweep.apply_overrides(module.get_config(row), _SET.value) for row in rows}
  if _PRINT.value:
    for row in rows:
      print(sweep.train_command(_CONFIG.value, configs[row], row, _WORKDIR.value, _SET.value))
    extra = "".join(f" --set={s}" for s in _SET.value)
    print(f"python -m launch.sweep --config={_CONFIG.value} --workdir={_WORKDIR.value} --rows={','.join(rows)}"
          f"{extra} --collect_only")
    return
  from jaxrec import report
  results = sweep.run(_CONFIG.value, _WORKDIR.value, rows, _SET.value, train_missing=not _COLLECT.value)
  print("\nMean over transactions:")
  print(report.text_table(results, configs[rows[0]].evaluate.k))
  print(f"\nWrote {_WORKDIR.value}/table.md, table.csv, metrics.json, table.png")


if __name__ == "__main__":
  run_main(main)
