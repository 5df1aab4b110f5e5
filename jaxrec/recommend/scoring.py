"""Scores every candidate of every evaluated transaction and keeps each transaction's top K.

score(i) = aggregate over the user's profile items j of sim(v_i, v_j), with
  sim:       'cosine' (the papers) or 'euclidean' (negative Euclidean distance, Hnot 2018);
  aggregate: 'max' (the paper), 'mean', or 'topk_mean' (mean of the `profile_topk` largest, all of them
             when the profile is smaller; CuratorNet's avgsimtopk).
The Random baseline replaces the score by a seeded hash of (transaction, item): a uniform shuffle of each
candidate set that is the same whichever chunk an item lands in.

Ties: equal scores rank the item earlier in the universe order (upload time, then item id) first. This
follows from `lax.top_k` (lower index first on ties) applied to the running top-K followed by a chunk
whose items all come later in that order.

Work is planned on the host in blocks of consecutive transactions. A block needs only the profile items
of its transactions (M rows) and the items in stock at some moment of the block (its candidates), which
are scored chunk by chunk: one [M, D] x [D, chunk] matmul is shared by all the block's transactions, and
memory is bounded by block_size x profile width x chunk_size whatever the size of the shop.
"""

from __future__ import annotations

import dataclasses
import functools
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from jaxrec.errors import InputError
from jaxrec.recommend.protocol import Replay

SIMILARITIES = ("cosine", "euclidean")
PROFILE_AGGREGATES = ("max", "mean", "topk_mean")
RANDOM = "random"
_GRANULE = 128


@dataclasses.dataclass(frozen=True)
class Ranking:
  """Top-K candidates per transaction, best first."""

  items: np.ndarray  # int32 [T, K]: universe indices, -1 where the candidate set is smaller than K
  scores: np.ndarray  # float32 [T, K]
  num_candidates: np.ndarray  # int32 [T]: candidates the device scored (equals the replay's count)


def _mix32(x: jax.Array) -> jax.Array:
  """A 32-bit integer finaliser (lowbias32): every input bit flips each output bit with p ~ 1/2."""
  x = x ^ (x >> 16)
  x = x * jnp.uint32(0x7FEB352D)
  x = x ^ (x >> 15)
  x = x * jnp.uint32(0x846CA68B)
  return x ^ (x >> 16)


def hash_uniform(seed: int | jax.Array, tx_ids: jax.Array, item_ids: jax.Array) -> jax.Array:
  """Uniform [0, 1) floats, one per (transaction, item), a pure function of (seed, tx id, item id)."""
  s = _mix32(jnp.uint32(seed) ^ jnp.uint32(0x9E3779B9))
  t = _mix32(tx_ids.astype(jnp.uint32) + s)
  x = _mix32(t[:, None] ^ _mix32(item_ids.astype(jnp.uint32) + jnp.uint32(0x85EBCA6B))[None, :])
  return (x >> 8).astype(jnp.float32) * jnp.float32(2.0 ** -24)


def pairwise_similarity(q: jax.Array, v: jax.Array, similarity: str) -> jax.Array:
  """[M, D] x [C, D] -> [M, C]. Cosine expects rows already normalised."""
  dots = jnp.dot(q, v.T, precision=jax.lax.Precision.HIGHEST)
  if similarity == "cosine":
    return dots
  sq = jnp.sum(q * q, axis=1)[:, None] + jnp.sum(v * v, axis=1)[None, :] - 2.0 * dots
  return -jnp.sqrt(jnp.maximum(sq, 0.0))


def aggregate_profile(sims: jax.Array, mask: jax.Array, how: str, topk: int) -> jax.Array:
  """[T, P, C] similarities to each profile item, [T, P] validity -> [T, C] scores."""
  m = mask[:, :, None]
  if how == "max":
    return jnp.max(jnp.where(m, sims, -jnp.inf), axis=1)
  count = jnp.maximum(mask.sum(axis=1), 1)[:, None].astype(sims.dtype)
  if how == "mean":
    return jnp.sum(jnp.where(m, sims, 0.0), axis=1) / count
  # topk_mean: sort the profile axis descending; masked entries (-inf) sort last.
  width = min(topk, sims.shape[1])
  best = -jnp.sort(-jnp.where(m, sims, -jnp.inf), axis=1)[:, :width]
  n = jnp.minimum(count, width)
  keep = (jnp.arange(width)[None, :, None] < n[:, :, None])
  return jnp.sum(jnp.where(keep, best, 0.0), axis=1) / n


@functools.partial(jax.jit, static_argnums=(0, 1))
def _empty_top_k(block_size: int, k: int):
  # One jitted call: eager jnp.full would dispatch op by op, queueing behind the device's work.
  return (jnp.full((block_size, k), -jnp.inf, jnp.float32), jnp.full((block_size, k), -1, jnp.int32),
          jnp.zeros(block_size, jnp.int32))


@functools.partial(jax.jit, static_argnames=("method", "profile", "profile_topk", "drop_profile_items"),
                   donate_argnums=(0, 1, 2))
def _merge_chunk(top_scores, top_items, n_cand, vectors, upload_pos, removal_pos, rows, local_profile,
                 profile_items, tx_pos, tx_ids, chunk_items, seed, *, method, profile, profile_topk,
                 drop_profile_items):
  """Scores one chunk of candidates for one block of transactions and merges it into the running top-K."""
  item_valid = chunk_items >= 0
  items = jnp.maximum(chunk_items, 0)
  if method == RANDOM:
    scores = hash_uniform(seed, tx_ids, items)
  else:
    gram = pairwise_similarity(vectors[rows], vectors[items], method)  # [M, C]
    sims = gram[jnp.maximum(local_profile, 0)]  # [T, P, C]
    scores = aggregate_profile(sims, local_profile >= 0, profile, profile_topk)
  pos = tx_pos[:, None]
  candidate = (item_valid[None, :] & (tx_pos >= 0)[:, None]
               & (upload_pos[items][None, :] < pos) & (pos <= removal_pos[items][None, :]))
  if drop_profile_items:
    held = (profile_items[:, :, None] == items[None, None, :]) & (profile_items >= 0)[:, :, None]
    candidate &= ~held.any(axis=1)
  scores = jnp.where(candidate, scores, -jnp.inf)
  n_cand = n_cand + candidate.sum(axis=1, dtype=jnp.int32)
  k = top_scores.shape[1]
  merged_scores = jnp.concatenate([top_scores, scores], axis=1)
  merged_items = jnp.concatenate([top_items, jnp.broadcast_to(items, scores.shape)], axis=1)
  top_scores, where = jax.lax.top_k(merged_scores, k)
  top_items = jnp.take_along_axis(merged_items, where, axis=1)
  top_items = jnp.where(top_scores == -jnp.inf, -1, top_items)
  return top_scores, top_items, n_cand


@functools.partial(jax.jit, static_argnames=("similarity",))
def prepare_vectors(vectors: jax.Array, similarity: str) -> jax.Array:
  """Cosine works on unit rows (normalised once, here); Euclidean on the raw vectors."""
  vectors = vectors.astype(jnp.float32)
  if similarity == "cosine":
    return vectors / jnp.linalg.norm(vectors, axis=1, keepdims=True)
  return vectors


@dataclasses.dataclass(frozen=True)
class Block:
  """Transactions [start, stop) and what they need: profile rows and candidate chunks (universe indices)."""

  start: int
  stop: int
  rows: np.ndarray  # int32 [width]: the block's profile items, sorted, padded with 0 (never referenced)
  num_rows: int  # rows before padding
  chunks: list  # int32 arrays of candidates, -1 padded: chunk_size each, the last a multiple of the granule


def _block_bounds(profile: np.ndarray, block_size: int, block_rows: int) -> list[tuple[int, int]]:
  """Consecutive transactions, at most `block_size` of them and (unless one alone has more) at most
  `block_rows` distinct profile items, so that every block's matmul has about the same number of rows."""
  bounds, start, rows = [], 0, set()
  for t, p in enumerate(profile):
    items = set(p[p >= 0].tolist())
    if t > start and (t - start == block_size or len(rows | items) > block_rows):
      bounds.append((start, t))
      start, rows = t, set()
    rows |= items
  bounds.append((start, len(profile)))
  return bounds


def plan_blocks(replay: Replay, block_size: int, chunk_size: int, block_rows: int = 256):
  """Yields the `Block`s of `rank_candidates`, lazily (a block's candidates can be most of the shop).

  Blocks share one profile width (the largest), so one compilation serves them all. A block's candidates
  are the items in stock at some moment of it (a superset of each transaction's). Chunks hold chunk_size
  of them, except a block's last, which is padded only to a multiple of the granule: little padding, and
  at most chunk_size / granule shapes to compile.
  """
  granule = min(_GRANULE, chunk_size)
  chunk_size = -(-chunk_size // granule) * granule
  bounds = _block_bounds(replay.profile, block_size, block_rows)
  rows_of = [np.unique(p[p >= 0]).astype(np.int32) for p in (replay.profile[a:b] for a, b in bounds)]
  width = max(len(r) for r in rows_of)
  for (start, stop), rows in zip(bounds, rows_of):
    lo, hi = replay.tx_pos[start], replay.tx_pos[stop - 1]
    cands = np.flatnonzero((replay.upload_pos < hi) & (replay.removal_pos >= lo)).astype(np.int32)
    cands = np.pad(cands, (0, -len(cands) % granule), constant_values=-1)
    yield Block(start=start, stop=stop, rows=np.pad(rows, (0, width - len(rows))), num_rows=len(rows),
                chunks=[cands[c:c + chunk_size] for c in range(0, len(cands), chunk_size)])


def rank_candidates(replay: Replay, vectors: np.ndarray | None, *, k: int, similarity: str = "cosine",
                    profile: str = "max", profile_topk: int = 3, seed: int = 0, block_size: int = 256,
                    block_rows: int = 256, chunk_size: int = 2048) -> Ranking:
  """Top-k candidates of every transaction. `vectors=None` ranks at random (the Random baseline);
  otherwise `vectors` are the universe's embeddings in universe order, [N, D]."""
  if similarity not in SIMILARITIES:
    raise InputError(f"unknown similarity {similarity!r}; expected one of {', '.join(SIMILARITIES)}")
  if profile not in PROFILE_AGGREGATES:
    raise InputError(f"unknown profile aggregate {profile!r}; expected one of {', '.join(PROFILE_AGGREGATES)}")
  if min(k, block_size, block_rows, chunk_size, profile_topk) < 1:
    raise InputError(f"k, block_size, block_rows, chunk_size and profile_topk must be >= 1 "
                     f"(got {k}, {block_size}, {block_rows}, {chunk_size}, {profile_topk})")
  method = RANDOM if vectors is None else similarity
  num_items = len(replay.universe_ids)
  if vectors is not None and vectors.shape[0] != num_items:
    raise InputError(f"{vectors.shape[0]} embedding rows for {num_items} universe items")
  vectors = (prepare_vectors(jnp.asarray(vectors), similarity) if vectors is not None
             else jnp.zeros((1, 1), jnp.float32))
  upload_pos, removal_pos = jnp.asarray(replay.upload_pos), jnp.asarray(replay.removal_pos)

  T = replay.num_transactions
  out_items = np.full((T, k), -1, np.int32)
  out_scores = np.full((T, k), -np.inf, np.float32)
  out_cand = np.zeros(T, np.int32)
  results = []
  last_log = started = time.perf_counter()
  for block in plan_blocks(replay, block_size, chunk_size, block_rows):
    start, stop = block.start, block.stop
    pad = block_size - (stop - start)
    profile_items = np.pad(replay.profile[start:stop], ((0, pad), (0, 0)), constant_values=-1)
    local = np.where(profile_items >= 0,
                     np.searchsorted(block.rows[:block.num_rows], np.maximum(profile_items, 0)), -1)
    tx_pos = np.pad(replay.tx_pos[start:stop], (0, pad), constant_values=-1)
    state = _empty_top_k(block_size, k)
    # Host arrays go to the jitted call as numpy: jnp.asarray would dispatch an op that waits in the
    # device's queue, while jit's own transfer does not.
    block_args = (block.rows, local.astype(np.int32), profile_items, tx_pos,
                  np.arange(start, start + block_size, dtype=np.int32))
    for chunk in block.chunks:
      state = _merge_chunk(*state, vectors, upload_pos, removal_pos, *block_args, chunk, seed,
                           method=method, profile=profile, profile_topk=profile_topk,
                           drop_profile_items=replay.drop_profile_items)
    results.append((start, stop, state))  # fetched at the end: the host plans ahead while the device works
    now = time.perf_counter()
    if now - last_log > 10:
      jax.block_until_ready(state)
      last_log = now
      logging.info("scored %d/%d transactions (%.0f tx/s)", stop, T, stop / (now - started))
  for start, stop, state in results:
    top_scores, top_items, n_cand = jax.device_get(state)
    n = stop - start
    out_scores[start:stop], out_items[start:stop], out_cand[start:stop] = top_scores[:n], top_items[:n], n_cand[:n]
  if not np.array_equal(out_cand, replay.num_candidates):
    bad = int(np.flatnonzero(out_cand != replay.num_candidates)[0])
    raise RuntimeError(f"internal error: transaction {bad} has {out_cand[bad]} candidates on the device but "
                       f"{replay.num_candidates[bad]} in the replay")
  return Ranking(items=out_items, scores=out_scores, num_candidates=out_cand)
