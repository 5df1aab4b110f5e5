"""Many training configs, one table: train each row, embed the shop with its export, replay the purchases.

  rows of a config file (configs/table2.py) -> launch.train's loop per row -> WORKDIR/<row>/export
  -> embeddings of the shop's photos -> the protocol and metrics -> WORKDIR/table.md, table.csv,
  metrics.json, table.png (bars per metric), with the Random baseline

Rows whose export exists are not trained again (a finished or resumed row is reused), so a sweep that was
stopped continues where it was.
"""

from __future__ import annotations

import ast
import importlib.util
import os
from typing import Any, Sequence

import ml_collections
from absl import logging

from jaxrec import evaluation, io_utils, report
from jaxrec.errors import InputError

EMBEDDINGS = "embeddings.npz"


def load_config_module(path: str):
  """The config file as a module: its ROWS and get_config(row)."""
  if not os.path.isfile(path):
    raise InputError(f"{path}: config file not found")
  spec = importlib.util.spec_from_file_location(f"sweep_config_{abs(hash(path))}", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  if not hasattr(module, "get_config"):
    raise InputError(f"{path}: a config file defines get_config()")
  return module


def rows_of(module, path: str, rows: Sequence[str]) -> list[str]:
  available = list(getattr(module, "ROWS", {}) or [])
  if not rows:
    if not available:
      raise InputError(f"{path} has no ROWS: name the rows to run with --rows")
    return available
  unknown = [r for r in rows if available and r not in available]
  if unknown:
    raise InputError(f"{path} has no row(s) {', '.join(unknown)}; rows: {', '.join(available)}")
  return list(rows)


def _parse_value(text: str) -> Any:
  try:
    return ast.literal_eval(text)
  except (ValueError, SyntaxError):
    return text


def apply_overrides(config: ml_collections.ConfigDict, overrides: Sequence[str]) -> ml_collections.ConfigDict:
  """'key.sub=value' overrides, checked against the config (an unknown key is an error). `max_epochs=`,
  `patience=` and `learning_rate=` without a path set every stage's."""
  for item in overrides:
    if "=" not in item:
      raise InputError(f"override {item!r}: expected key=value")
    key, text = item.split("=", 1)
    value = _parse_value(text)
    if key in ("max_epochs", "patience", "learning_rate"):
      for stage in config.stages.values():
        stage[key] = type(stage[key])(value)
      continue
    *parents, leaf = key.split(".")
    node = config
    for part in parents:
      if part not in node:
        raise InputError(f"override {item!r}: the config has no key {part!r} (at {key})")
      node = node[part]
    if leaf not in node:
      raise InputError(f"override {item!r}: the config has no key {key!r}")
    current = node[leaf]
    if isinstance(current, tuple) and isinstance(value, list):
      value = tuple(value)
    node[leaf] = value if current is None or isinstance(value, type(current)) else type(current)(value)
  return config


def train_command(config_path: str, config: ml_collections.ConfigDict, row: str, workdir: str,
                  overrides: Sequence[str]) -> str:
  """One launch.train command line (for a cluster scheduler); stage-wide overrides expand per stage."""
  flags = []
  for item in overrides:
    key, value = item.split("=", 1)
    if key in ("max_epochs", "patience", "learning_rate"):
      flags += [f"--config.stages.{s}.{key}={value}" for s in config.stage_order]
    else:
      flags.append(f"--config.{key}={value}")
  return " ".join(["python -m launch.train", f"--config={config_path}:{row}",
                   f"--workdir={os.path.join(workdir, row)}", *flags])


def _shop_log(config, workdir: str):
  """The default shop's log (one copy for the whole sweep) and its photos' dataset."""
  from jaxrec import experiment
  from jaxrec.data.purchase_logs import read_jaxrec_log
  ds = config.datasets.shop
  if ds.name != "fashion_mnist":
    raise InputError("the sweep evaluates on the default shop: config.datasets.shop.name must be fashion_mnist "
                     f"(got {ds.name!r}); evaluate other data with launch.extract + launch.evaluate")
  source = experiment.fashion_mnist_photos(os.path.expanduser(ds.data_dir), ds.manual_dir, ds.limit or None,
                                           ds.train_split)
  return source, read_jaxrec_log(experiment.default_shop_log(source, workdir, config.shop.num_users,
                                                             config.shop.initial_stock))


def _embed(export_dir: str, source, batch_size: int, path: str) -> str:
  from jaxrec import extract
  from jaxrec.data.embeddings import read_embeddings
  from jaxrec.data.pipeline import image_batches
  from jaxrec.models import store
  if os.path.isfile(path) and read_embeddings(path).metadata.get("checkpoint") == export_dir:
    return path
  backbone, variables, _ = store.load_backbone(export_dir)
  batches = image_batches(source, size=backbone.preprocessing.size, batch_size=batch_size)
  extract.extract_to_file(path, backbone, variables, batches, feature=None, metadata={"checkpoint": export_dir},
                          total=len(source))
  return path


def _options(ev) -> dict:
  return dict(k=ev.k, similarity=ev.similarity, profile=ev.profile, profile_topk=ev.profile_topk,
              convention=ev.convention, universe=ev.universe, drop_profile_items=ev.drop_profile_items,
              ground_truth=ev.ground_truth, seed=ev.seed)


def run(config_path: str, workdir: str, rows: Sequence[str], overrides: Sequence[str] = (), *,
        train_missing: bool = True, random_row: bool = True) -> list[tuple[str, dict]]:
  """Trains (unless exported already), embeds and evaluates each row; writes the tables and the plot."""
  from jaxrec.data.embeddings import read_embeddings
  from jaxrec.train import loop
  from jaxrec.visualize import metric_bars

  module = load_config_module(config_path)
  rows = rows_of(module, config_path, rows)
  configs = {row: apply_overrides(module.get_config(row), overrides) for row in rows}
  for config in configs.values():
    loop.validate(config)
  first = configs[rows[0]]
  source, log = _shop_log(first, workdir)
  results = []
  for number, row in enumerate(rows, 1):
    config = configs[row]
    row_dir = os.path.join(workdir, row)
    export_dir = os.path.join(row_dir, loop.EXPORT)
    print(f"[{number}/{len(rows)}] {row}: {config.get('name') or row}", flush=True)
    if not os.path.isfile(os.path.join(row_dir, loop.SUMMARY)):
      if not train_missing:
        raise InputError(f"{row_dir}: this row has not finished training (no {loop.SUMMARY}); run its "
                         "launch.train command first")
      loop.train(config, row_dir)
    embeddings = read_embeddings(_embed(export_dir, source, config.batch_size, os.path.join(row_dir, EMBEDDINGS)))
    result = evaluation.evaluate(log, embeddings, **_options(config.evaluate))
    io_utils.write_json(os.path.join(row_dir, "metrics.json"), result.metrics)
    results.append((config.get("name") or row, result.metrics))
    logging.info("%s: %s", row, {k: v for k, v in result.metrics.items() if "@" in k})
  k = first.evaluate.k
  results.sort(key=lambda r: -r[1][f"ndcg@{k}"])  # best first, as the paper's table
  if random_row:
    results.append(("Random", evaluation.evaluate(log, None, **_options(first.evaluate)).metrics))
  io_utils.write_text(os.path.join(workdir, "table.md"),
                      "Mean over transactions\n\n" + report.markdown_table(results, k)
                      + "\nMean over users\n\n" + report.markdown_table(results, k, by_user=True))
  io_utils.write_text(os.path.join(workdir, "table.csv"), report.csv_table(results, k))
  io_utils.write_json(os.path.join(workdir, "metrics.json"), dict(results))
  metric_bars(results, k, os.path.join(workdir, "table.png"))
  return results
