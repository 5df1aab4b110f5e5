"""What each task predicts: a label the dataset stores, or a target derived from the image or a label.

A task's `target` names one of:
* a stored feature of the dataset (`label` of fashion_mnist / shop_folder / deepfashion; `artist`, `type`,
  `year` of omniart): classes for classification, numbers for regression;
* `mean_intensity` (derived): the image's mean pixel value in [0, 1], a regression target any image has;
* `fashion_group` (derived from Fashion-MNIST's `label`): 4 coarse groups (upper body, lower/full body,
  footwear, bags), a coarser classification like OmniArt's artwork `type`.

The default shop has one real label per photo (its category); the derived targets give it the second and
third tasks that the paper's multitask rows need. They are stand-ins, said so in configs/table2.py and the
README.
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Any, Mapping, Sequence

import numpy as np
from absl import logging

from jaxrec.data import image_datasets
from jaxrec.errors import InputError
from jaxrec.train.data import LabelledSplit
from jaxrec.train.model import Task

DERIVED = ("mean_intensity", "fashion_group")
# Fashion-MNIST class index -> coarse group.
FASHION_GROUPS = ("upper body", "lower or full body", "footwear", "bag")
_FASHION_GROUP_OF = np.array([0, 1, 0, 1, 0, 2, 0, 2, 3, 2])  # t-shirt, trouser, pullover, dress, coat, sandal,
#                                                                shirt, sneaker, bag, ankle boot


@dataclasses.dataclass(frozen=True)
class TaskSpec:
  """A task as configured: name, kind, the target it reads, its loss weight."""

  name: str
  kind: str
  target: str
  weight: float = 1.0


@dataclasses.dataclass(frozen=True)
class Standardisation:
  """Regression targets are trained as (y - mean) / std of the training split, so MAE is comparable across
  targets (years vs intensities); the values are kept to report errors in the target's own units."""

  mean: float
  std: float


def _num_classes(target: str, names: Sequence[str] | None, where: str) -> int:
  if target == "fashion_group":
    return len(FASHION_GROUPS)
  if names is None:
    raise InputError(f"{where}: target {target!r} is not a class label of the dataset")
  return len(names)


def _mean_intensity(source: Sequence[Mapping[str, Any]], positions: np.ndarray, where: str) -> np.ndarray:
  out = np.empty(len(positions), np.float32)
  start = last = time.monotonic()
  for i, position in enumerate(positions):
    out[i] = np.asarray(source[int(position)]["image"], np.float32).mean() / 255.0
    if time.monotonic() - last > 10:
      last = time.monotonic()
      logging.info("%s: mean_intensity %d/%d (%.0f images/s)", where, i + 1, len(positions),
                   (i + 1) / (last - start))
  return out


def _raw_targets(spec: TaskSpec, columns: Mapping[str, np.ndarray], source, positions: np.ndarray,
                 where: str) -> np.ndarray:
  if spec.target == "mean_intensity":
    return _mean_intensity(source, positions, where)
  if spec.target == "fashion_group":
    if "label" not in columns:
      raise InputError(f"{where}: task {spec.name!r}: fashion_group needs the dataset's 'label'")
    labels = columns["label"][positions].astype(np.int64)
    if labels.max(initial=-1) >= len(_FASHION_GROUP_OF):
      raise InputError(f"{where}: task {spec.name!r}: fashion_group needs Fashion-MNIST's 10 classes, found "
                       f"label {int(labels.max())}")
    return np.where(labels >= 0, _FASHION_GROUP_OF[np.maximum(labels, 0)], -1)
  if spec.target not in columns or spec.target == "item_id":
    stored = [k for k in columns if k != "item_id"]
    raise InputError(f"{where}: task {spec.name!r} reads {spec.target!r}, which this dataset has no labels for "
                     f"(it has: {', '.join(stored) or 'no labels'}; derived targets: {', '.join(DERIVED)})")
  values = columns[spec.target][positions]
  if spec.kind == "classification":
    return values.astype(np.int64)
  return values.astype(np.float32)


def _check_missing(spec: TaskSpec, values: np.ndarray, item_ids: np.ndarray, where: str, allow: bool) -> None:
  missing = np.flatnonzero(values < 0) if spec.kind == "classification" else np.flatnonzero(~np.isfinite(values))
  if missing.size == 0:
    return
  examples = ", ".join(str(item_ids[i]) for i in missing[:5])
  message = (f"{where}: task {spec.name!r}: {missing.size} of {len(values)} items have no {spec.target!r} "
             f"(e.g. {examples})")
  if not allow:
    raise InputError(message + "; label them, or set allow_missing_labels=True in the dataset's config to leave "
                     "them out of this task's loss")
  logging.warning("%s; left out of this task's loss", message)


def build_splits(dataset: Any, specs: Sequence[TaskSpec], *, data_dir: str,
                 where: str) -> tuple[LabelledSplit, LabelledSplit, tuple[Task, ...], dict[str, Standardisation]]:
  """(train, validation, tasks, standardisations) of one configured dataset (`configs/table2.py` datasets).

  Validation is `dataset.validation_split` when given, else a seeded hash split of the training split
  (`validation_fraction` of it).
  """
  name = dataset.name
  limit = dataset.limit or None
  manual_dir = os.path.expanduser(dataset.manual_dir) if dataset.manual_dir else None
  if name == "fashion_mnist":
    manual_dir = image_datasets.ensure_fashion_mnist(manual_dir or image_datasets.FASHION_MNIST_DIR)
  image_datasets.build_dataset(name, data_dir=data_dir, manual_dir=manual_dir, limit=limit)

  def split(split_name: str, subset: str | None) -> tuple[Any, np.ndarray, dict[str, np.ndarray]]:
    source = image_datasets.data_source(name, data_dir=data_dir, split=split_name, limit=limit)
    columns = image_datasets.label_columns(name, data_dir=data_dir, split=split_name, limit=limit)
    positions = np.arange(len(source))
    if subset is not None:
      fraction = float(dataset.validation_fraction)
      if not 0 < fraction < 1:
        raise InputError(f"{where}: validation_fraction must be in (0, 1), got {fraction}")
      assigned = image_datasets.split_by_hash(list(columns["item_id"]),
                                              (("train", 1 - fraction), ("validation", fraction)),
                                              seed="jaxrec-finetune-validation")
      positions = np.array([i for i, item in enumerate(columns["item_id"]) if assigned[item] == subset], np.int64)
    return source, positions, columns

  if dataset.validation_split:
    parts = {"train": split(dataset.train_split, None), "validation": split(dataset.validation_split, None)}
  else:
    parts = {s: split(dataset.train_split, s) for s in ("train", "validation")}

  names = {}
  for spec in specs:
    if spec.target not in DERIVED:
      names[spec.name] = image_datasets.label_names(name, data_dir=data_dir, limit=limit, feature=spec.target)
  tasks, standard, splits = [], {}, {}
  for part, (source, positions, columns) in parts.items():
    part_where = f"{where} ({name}, {part})"
    targets = {}
    for spec in specs:
      values = _raw_targets(spec, columns, source, positions, part_where)
      _check_missing(spec, values, columns["item_id"][positions], part_where, bool(dataset.allow_missing_labels))
      targets[spec.name] = values
    splits[part] = LabelledSplit(f"{where}/{part}", source, positions, columns["item_id"][positions], targets)

  for spec in specs:
    if spec.kind == "classification":
      tasks.append(Task(spec.name, "classification", num_classes=_num_classes(spec.target, names.get(spec.name),
                                                                               f"{where}: task {spec.name!r}"),
                        weight=spec.weight))
    else:
      y = splits["train"].targets[spec.name]
      y = y[np.isfinite(y)]
      if y.size == 0:
        raise InputError(f"{where}: task {spec.name!r}: no training item has a {spec.target!r} value")
      standard[spec.name] = Standardisation(float(y.mean()), float(max(y.std(), 1e-6)))
      tasks.append(Task(spec.name, "regression", weight=spec.weight))
  for part in splits:
    targets = dict(splits[part].targets)
    for task_name, s in standard.items():
      targets[task_name] = ((targets[task_name] - s.mean) / s.std).astype(np.float32)
    splits[part] = dataclasses.replace(splits[part], targets=targets)
  if len(splits["validation"]) == 0:
    raise InputError(f"{where}: the validation split of {name} is empty")
  return splits["train"], splits["validation"], tuple(tasks), standard
