"""Labelled images for fine-tuning: a dataset split, its task targets, and the batches a step consumes.

Targets are computed once per split (`targets.py`) and kept as arrays beside the image source, so the
loaders only decode and resize images. Training batches are a seeded shuffle per epoch (drop remainder: one
compiled shape); evaluation batches are in order, padded and masked. With several processes each process
loads its slice of every global batch (`shard`), in the same global order.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Iterator, Mapping, Sequence

import grain
import numpy as np
from absl import flags

from jaxrec.data import images
from jaxrec.errors import InputError


@dataclasses.dataclass(frozen=True)
class LabelledSplit:
  """`source[positions[i]]` is example i; `targets[task][i]` its target (class -1 / NaN: missing)."""

  name: str  # for messages, e.g. 'shop/train'
  source: Sequence[Mapping[str, Any]]
  positions: np.ndarray  # int64 [N]
  item_ids: np.ndarray  # object [N]
  targets: Mapping[str, np.ndarray]

  def __len__(self) -> int:
    return len(self.positions)


class _LoadImage:
  """Index into a split (-1: padding) -> uint8 image at `size` (picklable, for grain workers)."""

  def __init__(self, source: Sequence[Mapping[str, Any]], positions: np.ndarray, size: int):
    self.source, self.positions, self.size = source, positions, size

  def __call__(self, index: int) -> dict[str, Any]:
    if index < 0:
      return {"image": np.zeros((self.size, self.size, 3), np.uint8), "index": -1}
    example = self.source[int(self.positions[index])]
    image = example["image"]
    if isinstance(image, (bytes, bytearray)):
      image = images.decode_image(bytes(image), source=f"example {index} ({example.get('item_id', '?')!r})")
    return {"image": images.resize(np.asarray(image, np.uint8), self.size), "index": index}


class _AttachLabels:
  """A stacked batch of images + split indices -> {'image', 'mask', 'labels': {task: [B]}}."""

  def __init__(self, targets: Mapping[str, np.ndarray]):
    self.targets = targets

  def __call__(self, examples: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    index = np.array([e["index"] for e in examples], np.int64)
    mask = index >= 0
    safe = np.where(mask, index, 0)
    labels = {}
    for task, values in self.targets.items():
      picked = values[safe]
      labels[task] = np.where(mask, picked, -1 if values.dtype.kind == "i" else np.nan).astype(values.dtype)
    return {"image": np.stack([e["image"] for e in examples]), "mask": mask, "labels": labels}


def _check_batch_size(batch_size: int, shard: tuple[int, int]) -> int:
  index, count = shard
  if batch_size < 1 or batch_size % count:
    raise InputError(f"batch_size {batch_size} must be a positive multiple of the {count} process(es)")
  if not 0 <= index < count:
    raise InputError(f"shard {shard}: index must be in [0, {count})")
  return batch_size // count


def _iterate(split: LabelledSplit, order: np.ndarray, size: int, local: int, worker_count: int) -> Iterator[dict]:
  dataset = (grain.MapDataset.source(order.tolist())
             .map(_LoadImage(split.source, split.positions, size))
             .batch(local, batch_fn=_AttachLabels(split.targets)))
  if worker_count == 0:
    return iter(dataset)
  if not flags.FLAGS.is_parsed():  # grain's workers read absl flags
    flags.FLAGS.mark_as_parsed()
  return iter(dataset.to_iter_dataset().mp_prefetch(grain.MultiprocessingOptions(num_workers=worker_count)))


def steps_per_epoch(split: LabelledSplit, batch_size: int) -> int:
  return len(split) // batch_size


def epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
  """The seeded permutation of epoch `epoch`: the same on every process and after a restart."""
  return np.random.default_rng([seed, epoch]).permutation(n)


def train_batches(split: LabelledSplit, *, size: int, batch_size: int, seed: int, epoch: int, start_step: int = 0,
                  shard: tuple[int, int] = (0, 1), worker_count: int = 0) -> Iterator[dict]:
  """This process's part of each global batch of epoch `epoch`, from step `start_step` on (a resumed run
  skips what it already trained on). The last incomplete global batch is dropped."""
  local = _check_batch_size(batch_size, shard)
  steps = steps_per_epoch(split, batch_size)
  if steps == 0:
    raise InputError(f"{split.name}: {len(split)} examples, fewer than one batch of {batch_size}; lower "
                     "config.batch_size or use more data")
  order = epoch_order(len(split), seed, epoch)[:steps * batch_size].reshape(steps, batch_size)
  mine = order[start_step:, shard[0] * local:(shard[0] + 1) * local].reshape(-1)
  return _iterate(split, mine, size, local, worker_count)


def eval_batches(split: LabelledSplit, *, size: int, batch_size: int, shard: tuple[int, int] = (0, 1),
                 worker_count: int = 0) -> Iterator[dict]:
  """Every example once, in order; the last global batch padded (mask False, labels missing)."""
  local = _check_batch_size(batch_size, shard)
  steps = math.ceil(len(split) / batch_size)
  order = np.full(steps * batch_size, -1, np.int64)
  order[:len(split)] = np.arange(len(split))
  mine = order.reshape(steps, batch_size)[:, shard[0] * local:(shard[0] + 1) * local].reshape(-1)
  return _iterate(split, mine, size, local, worker_count)
