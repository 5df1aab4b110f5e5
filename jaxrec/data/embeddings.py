"""Item embeddings files.

* `.npz` (the project's format): `item_ids` (str [N]) and `embeddings` (float32 [N, D]); any other
  arrays are kept as metadata (arch, feature name, checkpoint, preprocessing, ...).
* `.npy` (the UGallery release): an object array of `[item_id, vector]` rows. Loading it unpickles, so
  read only files you trust.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Mapping, Sequence

import numpy as np

from jaxrec import io_utils
from jaxrec.errors import InputError


@dataclasses.dataclass(frozen=True)
class Embeddings:
  item_ids: np.ndarray  # str [N], unique
  vectors: np.ndarray  # float32 [N, D], finite
  source: str
  metadata: Mapping[str, Any] = dataclasses.field(default_factory=dict)

  @property
  def dim(self) -> int:
    return self.vectors.shape[1]


def read_embeddings(path: str | os.PathLike) -> Embeddings:
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise InputError(f"{path}: embeddings file not found")
  if path.endswith(".npz"):
    item_ids, vectors, metadata = _read_npz(path)
  elif path.endswith(".npy"):
    item_ids, vectors = _read_ugallery_npy(path)
    metadata = {}
  else:
    raise InputError(f"{path}: unknown embeddings format; expected .npz (jaxrec) or .npy (UGallery)")
  return validate_embeddings(item_ids, vectors, source=path, metadata=metadata)


def _read_npz(path: str):
  try:
    with np.load(path, allow_pickle=False) as data:
      missing = [k for k in ("item_ids", "embeddings") if k not in data.files]
      if missing:
        raise InputError(f"{path}: missing array(s) {', '.join(missing)} (found: {', '.join(data.files)})")
      item_ids = data["item_ids"]
      vectors = data["embeddings"]
      metadata = {k: data[k].item() if data[k].ndim == 0 else data[k]
                  for k in data.files if k not in ("item_ids", "embeddings")}
  except InputError:
    raise
  except Exception as e:  # zipfile/pickle errors: a truncated or foreign file
    raise InputError(f"{path}: not a readable .npz embeddings file ({type(e).__name__}: {e})") from e
  return item_ids, vectors, metadata


def _read_ugallery_npy(path: str):
  try:
    rows = np.load(path, allow_pickle=True)
  except Exception as e:
    raise InputError(f"{path}: not a readable .npy file ({type(e).__name__}: {e})") from e
  if rows.ndim != 2 or rows.shape[1] != 2:
    raise InputError(f"{path}: expected an array of [item_id, vector] rows, got shape {rows.shape}")
  item_ids = np.array([str(r) for r in rows[:, 0]], dtype=object)
  dims = {np.asarray(v).shape for v in rows[:, 1]}
  if len(dims) != 1 or len(next(iter(dims))) != 1:
    raise InputError(f"{path}: vectors of differing shapes {sorted(dims)[:5]}")
  return item_ids, np.stack([np.asarray(v, dtype=np.float32) for v in rows[:, 1]])


def validate_embeddings(item_ids, vectors, *, source: str, metadata=None) -> Embeddings:
  item_ids = np.asarray(item_ids)
  if item_ids.dtype.kind not in "USO":
    raise InputError(f"{source}: item_ids must be strings, got dtype {item_ids.dtype}")
  item_ids = item_ids.astype(str).astype(object)
  vectors = np.asarray(vectors)
  if vectors.ndim != 2:
    raise InputError(f"{source}: embeddings must be 2-D [items, dim], got shape {vectors.shape}")
  if vectors.shape[0] != item_ids.shape[0]:
    raise InputError(f"{source}: {item_ids.shape[0]} item ids but {vectors.shape[0]} embedding rows")
  vectors = vectors.astype(np.float32, copy=False)
  bad = ~np.isfinite(vectors).all(axis=1)
  if bad.any():
    rows = np.flatnonzero(bad)
    raise InputError(f"{source}: {len(rows)} embedding(s) hold NaN or inf, first at row {rows[0]} "
                     f"(item {item_ids[rows[0]]!r})")
  seen: dict[str, int] = {}
  for row, item_id in enumerate(item_ids):
    if item_id in seen:
      raise InputError(f"{source}: item id {item_id!r} at rows {seen[item_id]} and {row}")
    seen[item_id] = row
  return Embeddings(item_ids=item_ids, vectors=vectors, source=source, metadata=dict(metadata or {}))


def align(embeddings: Embeddings, item_ids: Sequence[str], *, require_nonzero: bool = True) -> np.ndarray:
  """Embedding rows in the order of `item_ids`; every item must have one (and a non-zero one when the
  similarity needs a direction, as cosine does)."""
  index = {item_id: row for row, item_id in enumerate(embeddings.item_ids)}
  missing = [item_id for item_id in item_ids if item_id not in index]
  if missing:
    raise InputError(f"{embeddings.source}: no embedding for {len(missing)} item(s) of the log, "
                     f"e.g. {', '.join(repr(m) for m in missing[:5])}")
  rows = np.array([index[item_id] for item_id in item_ids], dtype=np.int64)
  vectors = embeddings.vectors[rows]
  if require_nonzero:
    zero = np.flatnonzero(~np.any(vectors != 0, axis=1))
    if len(zero):
      raise InputError(f"{embeddings.source}: {len(zero)} zero-norm embedding(s), cosine similarity is "
                       f"undefined for them; first: item {item_ids[zero[0]]!r} (row {rows[zero[0]]})")
  return vectors


def write_embeddings(path: str | os.PathLike, item_ids: Sequence[str], vectors: np.ndarray,
                     **metadata: Any) -> None:
  """Writes the project's .npz format atomically; metadata values become 0-d or 1-d arrays."""
  vectors = np.asarray(vectors, dtype=np.float32)
  validate_embeddings(np.asarray(item_ids, dtype=str), vectors, source=os.fspath(path))
  extra = {k: np.asarray(v) for k, v in metadata.items()}
  io_utils.write_npz(path, item_ids=np.asarray(item_ids, dtype=str), embeddings=vectors, **extra)
