"""Item embeddings from images: one jitted forward (preprocessing + backbone), data-parallel over all devices.

Variables are replicated on every device and each batch is split over the mesh axis 'data'. Each process
feeds its own batches (for one process: all of them) and gets back the vectors of its real rows, in order.
"""

from __future__ import annotations

import functools
import os
import time
from typing import Any, Iterable, Iterator, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxrec.data.embeddings import write_embeddings
from jaxrec.errors import InputError
from jaxrec.models.registry import Backbone

DATA = "data"
_LOG_EVERY_S = 5.0


def make_mesh() -> Mesh:
  """A 1-D mesh ('data',) over all devices of all processes."""
  # Auto axes: the forward has no sharding annotations of its own, so let XLA propagate the batch sharding
  # (make_mesh defaults to Explicit axes, which would need sharding rules for every op of the backbone).
  return jax.make_mesh((jax.device_count(),), (DATA,), axis_types=(jax.sharding.AxisType.Auto,))


def resolve_feature(backbone: Backbone, feature: str | None) -> str:
  feature = feature or backbone.default_feature
  if feature not in backbone.features:
    raise InputError(f"{backbone.arch} has no feature {feature!r}; expected one of {', '.join(backbone.features)}")
  return feature


def _forward(module, preprocessing, feature: str):
  """uint8 RGB [B, S, S, 3] -> float32 [B, D]; spatial maps are average-pooled to vectors."""

  def forward(variables: Any, images: jax.Array) -> jax.Array:
    out = module.apply(variables, preprocessing(images), train=False)[feature]
    if out.ndim == 4:
      out = jnp.mean(out, axis=(1, 2))
    return out.reshape(out.shape[0], -1).astype(jnp.float32)

  return forward


def _check_batch(batch: Mapping[str, Any], index: int, local_devices: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  missing = [k for k in ("image", "item_id", "mask") if k not in batch]
  if missing:
    raise InputError(f"batch {index}: missing key(s) {', '.join(missing)} (found: {', '.join(batch)})")
  images, item_ids, mask = np.asarray(batch["image"]), np.asarray(batch["item_id"]), np.asarray(batch["mask"], bool)
  if images.ndim != 4 or images.shape[-1] != 3:
    raise InputError(f"batch {index}: images must be [B, H, W, 3] RGB, got shape {images.shape}")
  size = images.shape[0]
  if item_ids.shape != (size,) or mask.shape != (size,):
    raise InputError(f"batch {index}: {size} images but item_id {item_ids.shape} and mask {mask.shape}")
  if size % local_devices:
    raise InputError(f"batch {index}: batch size {size} is not divisible by the {local_devices} device(s) it is "
                     f"split over; choose a batch size that is a multiple of {local_devices}")
  return images, item_ids, mask


def _to_host(out: jax.Array) -> np.ndarray:
  """This process's rows of a batch-sharded output, in batch order."""
  shards = sorted(out.addressable_shards, key=lambda s: s.index[0].start or 0)
  return np.concatenate([np.asarray(s.data) for s in shards])


class _Progress:
  """Images/s and ETA, logged at most every `_LOG_EVERY_S` seconds."""

  def __init__(self, total: int | None):
    self.total = total
    self.count = 0
    self.start = time.perf_counter()
    self.last = self.start
    self.first: tuple[int, float] | None = None  # (count, time) after the first batch, which compiles

  def update(self, n: int) -> None:
    self.count += n
    now = time.perf_counter()
    if self.first is None:
      self.first = (self.count, now)
    if now - self.last < _LOG_EVERY_S:
      return
    self.last = now
    rate = self.count / (now - self.start)
    if self.total:
      eta = max(self.total - self.count, 0) / rate if rate else float("inf")
      logging.info("extracted %d/%d images, %.1f images/s, ETA %.0f s", self.count, self.total, rate, eta)
    else:
      logging.info("extracted %d images, %.1f images/s", self.count, rate)

  def done(self) -> float:
    now = time.perf_counter()
    elapsed = now - self.start
    rate = self.count / elapsed if elapsed > 0 else 0.0
    steady = ""
    if self.first is not None and self.count > self.first[0]:
      steady = f", {(self.count - self.first[0]) / (now - self.first[1]):.1f} images/s after the first batch"
    logging.info("extracted %d images in %.1f s (%.1f images/s with compilation%s)", self.count, elapsed, rate, steady)
    return rate


@functools.lru_cache(maxsize=16)
def _compiled_forward(module, preprocessing, feature: str, mesh: Mesh):
  """One jitted forward per (module, preprocessing, feature, mesh): repeated extractions (several
  datasets, benchmarks) reuse its compilations instead of tracing a new closure each call."""
  replicated = NamedSharding(mesh, PartitionSpec())
  sharded = NamedSharding(mesh, PartitionSpec(DATA))
  return jax.jit(_forward(module, preprocessing, feature), in_shardings=(replicated, sharded),
                 out_shardings=sharded)


def extract(backbone: Backbone, variables: Any, batches: Iterable[Mapping[str, Any]], *,
            feature: str | None = None, total: int | None = None) -> tuple[np.ndarray, np.ndarray]:
  """(item ids str [N], float32 [N, D]) of the real (mask True) rows of `batches`, in input order.

  `total`: the expected number of real images, for the ETA only.
  """
  feature = resolve_feature(backbone, feature)
  mesh = make_mesh()
  replicated = NamedSharding(mesh, PartitionSpec())
  sharded = NamedSharding(mesh, PartitionSpec(DATA))
  forward = _compiled_forward(backbone.module, backbone.preprocessing, feature, mesh)
  variables = jax.device_put(variables, replicated)
  local_devices = jax.local_device_count()

  ids: list[np.ndarray] = []
  vectors: list[np.ndarray] = []
  progress = _Progress(total)
  pending = None  # (output, item ids, mask) of the batch in flight: fetch it after dispatching the next one

  def collect(out: jax.Array, item_ids: np.ndarray, mask: np.ndarray) -> None:
    rows = _to_host(out)
    ids.append(item_ids[mask])
    vectors.append(rows[mask])
    progress.update(int(mask.sum()))

  for index, batch in enumerate(batches):
    images, item_ids, mask = _check_batch(batch, index, local_devices)
    out = forward(variables, jax.make_array_from_process_local_data(sharded, images))
    if pending is not None:
      collect(*pending)
    pending = (out, item_ids, mask)
  if pending is not None:
    collect(*pending)
  progress.done()

  dim = backbone.features[feature]
  if not vectors:
    return np.zeros((0,), dtype=str).astype(object), np.zeros((0, dim or 0), np.float32)
  return np.concatenate(ids).astype(str).astype(object), np.concatenate(vectors).astype(np.float32, copy=False)


def extract_to_file(path: str | os.PathLike, backbone: Backbone, variables: Any,
                    batches: Iterable[Mapping[str, Any]], *, feature: str | None, metadata: Mapping[str, Any],
                    total: int | None = None) -> tuple[np.ndarray, np.ndarray]:
  """Extracts and writes the project's .npz; written only once every batch is done, and atomically.

  The file's metadata: arch, layout, feature, preprocessing (name), image_size, checkpoint (from
  `metadata`, like any other extra key there).
  """
  if jax.process_count() > 1:
    # Each process holds only the rows it fed; gathering the string ids across hosts is not implemented.
    raise InputError("extract_to_file runs on one process; call extract() per process and merge the rows")
  feature = resolve_feature(backbone, feature)
  sizes: set[tuple[int, int]] = set()

  def seen(batches: Iterable[Mapping[str, Any]]) -> Iterator[Mapping[str, Any]]:
    for index, batch in enumerate(batches):
      size = tuple(np.shape(batch["image"])[1:3]) if "image" in batch else None
      if size is not None:
        if sizes and size not in sizes:
          raise InputError(f"batch {index}: images of {size[0]}x{size[1]} after {next(iter(sizes))} before; "
                           "the file records one image size")
        sizes.add(size)
      yield batch

  item_ids, vectors = extract(backbone, variables, seen(batches), feature=feature, total=total)
  if not len(item_ids):
    raise InputError(f"{path}: no images to extract (every batch was empty or all padding)")
  (height, width), = sizes
  info = {"checkpoint": "", **metadata, "arch": backbone.arch, "layout": backbone.layout, "feature": feature,
          "preprocessing": backbone.preprocessing.name, "image_size": height if height == width else [height, width]}
  write_embeddings(path, item_ids, vectors, **info)
  return item_ids, vectors
