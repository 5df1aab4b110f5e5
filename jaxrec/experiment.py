"""One Table-1-style experiment on the default shop, end to end:

  Fashion-MNIST photos (TFDS, array_record) -> default shop log (simulated purchases)
  weights file -> backbone folder (orbax) -> embeddings.npz -> replay + metrics (and Random) -> table, picture

Every intermediate lands under WORKDIR/cache and is reused when it is already there and matches (same
source file sha256, same feature), so a second run only evaluates.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import numpy as np
from absl import logging

from jaxrec import evaluation, io_utils, report
from jaxrec.data import default_shop, image_datasets
from jaxrec.data.embeddings import read_embeddings
from jaxrec.data.pipeline import image_batches
from jaxrec.data.purchase_logs import read_jaxrec_log
from jaxrec.errors import InputError
from jaxrec.models import registry
from jaxrec.visualize import recommendation_grid


def _shop(config, cache: str):
  """The Fashion-MNIST dataset and the default shop's log over its first items."""
  source = fashion_mnist_photos(os.path.join(cache, "tfds"), config.dataset.source_dir, config.dataset.num_items)
  return source, read_jaxrec_log(default_shop_log(source, cache, config.shop.num_users, config.shop.initial_stock))


def fashion_mnist_photos(data_dir: str, manual_dir: str | None, limit: int | None, split: str = "train"):
  """Fashion-MNIST's first `limit` photos of `split` as a TFDS source, built under `data_dir` when needed
  (the Debian package installed first when it is missing)."""
  manual_dir = image_datasets.ensure_fashion_mnist(manual_dir or image_datasets.FASHION_MNIST_DIR)
  image_datasets.build_dataset("fashion_mnist", data_dir=data_dir, manual_dir=manual_dir, limit=limit)
  return image_datasets.data_source("fashion_mnist", data_dir=data_dir, split=split, limit=limit)


def default_shop_log(source, parent: str, num_users: int, initial_stock: int) -> str:
  """The default shop's log over `source`, in a folder of `parent` keyed by what shapes it, so a run with
  another shop size never reuses it."""
  folder = os.path.join(parent, f"shop-{len(source)}items-{num_users}users-{initial_stock}stock")
  return simulate_shop(source, folder, num_users, initial_stock)


def simulate_shop(source, shop_dir: str, num_users: int, initial_stock: int) -> str:
  """Writes the default shop's simulated log over the photos of `source` to `shop_dir` (once)."""
  if not os.path.exists(os.path.join(shop_dir, "purchases.csv")):
    logging.info("simulating the default shop's purchases over %d photos", len(source))
    examples = [source[i] for i in range(len(source))]
    shop = dataclasses.replace(default_shop.CONFIG, num_users=num_users, initial_stock=initial_stock)
    default_shop.build_default_shop(shop_dir, [e["item_id"] for e in examples],
                                    np.stack([e["image"] for e in examples]),
                                    np.array([e["label"] for e in examples]), config=shop)
  return shop_dir


def check_row(config) -> str | None:
  """The weights file of the configured row (None for Random); fails fast, before any data is built, with
  what to supply when the row cannot run."""
  from jaxrec.convert.dispatch import default_weights

  if config.arch == "random":
    return None
  if config.arch not in registry.ARCHS:
    raise InputError(f"{config.name}: there is no Flax port of {config.arch} yet (ported: "
                     f"{', '.join(registry.ARCHS)}); this row cannot run")
  weights = config.weights or default_weights(config.arch)
  if not weights:
    expected = config.get("expected_weights_file", "") or "its ImageNet weights file"
    raise InputError(f"{config.name} needs ImageNet weights that cannot be downloaded here: supply "
                     f"{expected} with --config.weights=/path/to/{expected} "
                     f"(layout {config.layout or 'default'}; see README, 'Backbones and weight conversion')")
  if not os.path.isfile(weights):
    raise InputError(f"{weights}: weights file not found")
  return weights


def _backbone(config, cache: str):
  """(backbone, variables, folder) of the configured row, converted once and cached by source sha256."""
  from jaxrec.convert.dispatch import convert_cached
  return convert_cached(config.arch, config.layout or None, check_row(config), cache)


def _embeddings(config, cache: str, source) -> str:
  from jaxrec import extract

  backbone, variables, folder = _backbone(config, cache)
  feature = extract.resolve_feature(backbone, config.feature or None)
  size = config.get("image_size") or backbone.preprocessing.size
  path = os.path.join(cache, f"embeddings-{os.path.basename(folder)}-{feature}"
                             f"{'' if size == backbone.preprocessing.size else f'-{size}px'}.npz")
  if os.path.isfile(path):
    meta = read_embeddings(path).metadata
    if meta.get("checkpoint") == folder and meta.get("feature") == feature:
      logging.info("reusing %s", path)
      return path
  batches = image_batches(source, size=size, batch_size=config.batch_size)
  extract.extract_to_file(path, backbone, variables, batches, feature=feature, metadata={"checkpoint": folder},
                          total=len(source))
  return path


def run(config, workdir: str) -> dict[str, Any]:
  """Evaluates the configured row and Random; writes table.md, table.csv, metrics.json and
  recommendations.png to `workdir`. Returns {row name: metrics}."""
  check_row(config)
  cache = os.path.join(workdir, "cache")
  source, log = _shop(config, cache)
  ev = config.evaluate
  options = dict(k=ev.k, similarity=ev.similarity, profile=ev.profile, profile_topk=ev.profile_topk,
                 convention=ev.convention, universe=ev.universe, drop_profile_items=ev.drop_profile_items,
                 ground_truth=ev.ground_truth, seed=ev.seed)
  rows, results = [], {}
  if config.arch != "random":
    embeddings = read_embeddings(_embeddings(config, cache, source))
    results[config.name] = evaluation.evaluate(log, embeddings, **options)
  results["Random"] = evaluation.evaluate(log, None, **options)
  for name, result in results.items():
    rows.append((name, result.metrics))

  io_utils.write_text(os.path.join(workdir, "table.md"),
                      "Mean over transactions\n\n" + report.markdown_table(rows, ev.k)
                      + "\nMean over users\n\n" + report.markdown_table(rows, ev.k, by_user=True))
  io_utils.write_text(os.path.join(workdir, "table.csv"), report.csv_table(rows, ev.k))
  io_utils.write_json(os.path.join(workdir, "metrics.json"), {name: m for name, m in rows})
  _picture(results[next(iter(results))], log, source, config, os.path.join(workdir, "recommendations.png"))
  return dict(rows)


def _picture(result: evaluation.Evaluation, log, source, config, path: str) -> None:
  """The first `grid_users` evaluated transactions: profile, top `grid_k`, hits outlined."""
  replay, ranking = result.replay, result.ranking
  index = {source[i]["item_id"]: i for i in range(len(source))}
  ids = replay.universe_ids
  rows = []
  for t in range(min(config.grid_users, replay.num_transactions)):
    profile = [ids[i] for i in replay.profile[t] if i >= 0]
    top = [ids[i] for i in ranking.items[t][:config.grid_k] if i >= 0]
    truth = {ids[i] for i in replay.truth[t] if i >= 0}
    rows.append((profile, top, truth))
  grid = recommendation_grid(rows, lambda item: source[index[item]]["image"])
  with io_utils.atomic_path(path) as tmp:
    grid.save(tmp, format="PNG")
