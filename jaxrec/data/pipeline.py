"""Fixed-shape batches of item images with grain, in index order, for jitted image backbones.

Every batch has exactly `batch_size` rows: the last one is padded with black images (`mask` False), so a
jitted function compiles once. With `shard=(i, n)` each of n processes reads a contiguous block of
ceil(len / n) indices and all shards yield the same number of batches (padded), so hosts stay in step.
Images stay RGB 0-255; the backbone's own `preprocessing` normalises them.
"""

from __future__ import annotations

import math
from typing import Any, Iterator, Mapping, Sequence

import grain
import numpy as np
from absl import flags

from jaxrec.data import images
from jaxrec.errors import InputError


class _Load:
  """Position in this shard -> one example at `size` x `size` (picklable, for grain workers)."""

  def __init__(self, source: Sequence[Mapping[str, Any]], start: int, stop: int, size: int, labelled: bool):
    self.source, self.start, self.stop, self.size, self.labelled = source, start, stop, size, labelled

  def __call__(self, position: int) -> dict[str, Any]:
    index = self.start + position
    if index >= self.stop:  # padding
      out = {"image": np.zeros((self.size, self.size, 3), np.uint8), "item_id": "", "mask": False}
      if self.labelled:
        out["label"] = -1
      return out
    example = self.source[index]
    image = example["image"]
    if isinstance(image, (bytes, bytearray)):  # a source that keeps images encoded: decode in the worker
      image = images.decode_image(bytes(image), source=f"example {index} ({example.get('item_id', '?')!r})")
    item_id = example["item_id"]
    out = {"image": images.resize(np.asarray(image, dtype=np.uint8), self.size),
           "item_id": item_id.decode("utf-8") if isinstance(item_id, bytes) else str(item_id),
           "mask": True}
    if self.labelled:
      out["label"] = int(example["label"])
    return out


def _stack(examples: Sequence[Mapping[str, Any]]) -> dict[str, np.ndarray]:
  out = {"image": np.stack([e["image"] for e in examples]),
         "item_id": np.array([e["item_id"] for e in examples], dtype=object),
         "mask": np.array([e["mask"] for e in examples], dtype=bool)}
  if "label" in examples[0]:
    out["label"] = np.array([e["label"] for e in examples], dtype=np.int32)
  return out


def image_batches(source: Sequence[Mapping[str, Any]], *, size: int, batch_size: int, worker_count: int = 0,
                  shard: tuple[int, int] | None = None) -> Iterator[dict[str, np.ndarray]]:
  """Yields {'image': uint8 [B, size, size, 3], 'item_id': object str [B], 'label': int32 [B] (if the
  examples have one; -1 on padding), 'mask': bool [B]} over `source` (len + [i], e.g. `data_source`).

  Images are squashed to squares (`images.resize`). `worker_count` > 0 decodes in that many processes;
  the order is the same either way.
  """
  if size < 1 or batch_size < 1:
    raise InputError(f"image_batches: size and batch_size must be positive, got {size} and {batch_size}")
  if worker_count < 0:
    raise InputError(f"image_batches: worker_count must be >= 0, got {worker_count}")
  n = len(source)
  shard_index, shard_count = shard if shard is not None else (0, 1)
  if shard_count < 1 or not 0 <= shard_index < shard_count:
    raise InputError(f"image_batches: shard {shard!r} must be (index, count) with 0 <= index < count")
  per_shard = math.ceil(n / shard_count)
  start = min(n, shard_index * per_shard)
  stop = min(n, start + per_shard)
  padded = math.ceil(per_shard / batch_size) * batch_size
  if padded == 0:
    return iter(())
  labelled = n > 0 and "label" in source[0]
  dataset = (grain.MapDataset.range(padded)
             .map(_Load(source, start, stop, size, labelled))
             .batch(batch_size, batch_fn=_stack))
  if worker_count == 0:
    return iter(dataset)
  if not flags.FLAGS.is_parsed():  # outside an absl app (tests, notebooks) grain's workers read its flags
    flags.FLAGS.mark_as_parsed()
  return iter(dataset.to_iter_dataset().mp_prefetch(grain.MultiprocessingOptions(num_workers=worker_count)))
