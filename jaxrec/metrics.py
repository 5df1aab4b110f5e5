"""Ranking metrics @k as pure jnp functions, batched over transactions (padded + masked).

Input per transaction: `hits[t, r]` = the item at rank r+1 is relevant (ranks 1..K, K >= k), and
`num_relevant[t]` = the size of the ground truth (all of it is in the candidate set). Two conventions:

`paper` (del Rio et al. 2018; reproduces their Random row):
  MAP@k  = (1/k) * sum_{i<=k} P@i
  nDCG@k = DCG@k / IDCG(h), h = number of hits in the top k (0 when h = 0)
`standard` (trec_eval's map_cut_k and ndcg_cut_k):
  AP@k   = sum over hits at rank r <= k of P@r, divided by |relevant|
  nDCG@k = DCG@k / IDCG(min(|relevant|, k))
Both: P@k = hits/k, R@k = hits/|relevant|, F1 = 2PR/(P+R) per transaction (0 when P+R = 0),
MRR@k = 1/rank of the first hit within k (0 if none), DCG@k = sum over hits of 1/log2(rank+1).

Aggregates: the mean over transactions, and the mean over users of each user's mean (`_by_user`).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

CONVENTIONS = ("paper", "standard")
METRICS = ("recall", "precision", "f1", "map", "mrr", "ndcg")


@functools.partial(jax.jit, static_argnames=("k", "convention"))
def per_transaction(hits: jax.Array, num_relevant: jax.Array, *, k: int, convention: str = "paper"):
  """{metric: [T] float32} at cut-off k."""
  if convention not in CONVENTIONS:
    raise ValueError(f"unknown convention {convention!r}; expected one of {', '.join(CONVENTIONS)}")
  if hits.shape[1] < k:
    raise ValueError(f"need the top {k} ranks, got {hits.shape[1]}")
  h = hits[:, :k].astype(jnp.float32)
  n_rel = num_relevant.astype(jnp.float32)
  ranks = jnp.arange(1, k + 1, dtype=jnp.float32)
  cum_hits = jnp.cumsum(h, axis=1)  # hits within the top i, i = 1..k
  n_hits = cum_hits[:, -1]
  precision = n_hits / k
  recall = n_hits / jnp.maximum(n_rel, 1.0)
  f1 = jnp.where(precision + recall > 0, 2 * precision * recall / jnp.maximum(precision + recall, 1e-30), 0.0)
  mrr = jnp.where(n_hits > 0, 1.0 / (jnp.argmax(h, axis=1) + 1.0), 0.0)
  discount = 1.0 / jnp.log2(ranks + 1.0)
  dcg = jnp.sum(h * discount, axis=1)
  ideal = jnp.concatenate([jnp.zeros(1), jnp.cumsum(discount)])  # IDCG of n items, n = 0..k
  if convention == "paper":
    ap = jnp.mean(cum_hits / ranks, axis=1)
    idcg = ideal[n_hits.astype(jnp.int32)]
  else:
    ap = jnp.sum(h * cum_hits / ranks, axis=1) / jnp.maximum(n_rel, 1.0)
    idcg = ideal[jnp.minimum(num_relevant, k)]
  ndcg = jnp.where(idcg > 0, dcg / jnp.where(idcg > 0, idcg, 1.0), 0.0)
  return dict(recall=recall, precision=precision, f1=f1, map=ap, mrr=mrr, ndcg=ndcg)


@functools.partial(jax.jit, static_argnames=("num_users",))
def aggregate(values: jax.Array, valid: jax.Array, user: jax.Array, *, num_users: int):
  """(mean over valid transactions, mean over users of each user's mean)."""
  w = valid.astype(jnp.float32)
  by_tx = jnp.sum(values * w) / jnp.maximum(jnp.sum(w), 1.0)
  user_sum = jax.ops.segment_sum(values * w, user, num_segments=num_users)
  user_n = jax.ops.segment_sum(w, user, num_segments=num_users)
  has = user_n > 0
  by_user = jnp.sum(jnp.where(has, user_sum / jnp.maximum(user_n, 1.0), 0.0)) / jnp.maximum(has.sum(), 1)
  return by_tx, by_user


def hits_from_ranking(top_items: np.ndarray, truth: np.ndarray) -> jax.Array:
  """[T, K] ranked universe indices (-1 = none), [T, G] ground truth (-1 pad) -> [T, K] bool."""
  top = jnp.asarray(top_items)[:, :, None]
  gt = jnp.asarray(truth)[:, None, :]
  return jnp.any((top == gt) & (gt >= 0) & (top >= 0), axis=2)


def summarize(hits, num_relevant, user, *, num_users: int, ks, convention: str) -> dict[str, float]:
  """Flat dict `{metric}@{k}` and `{metric}@{k}_by_user` for every k in ks."""
  valid = jnp.ones(hits.shape[0], bool)
  out = {}
  for k in ks:
    values = per_transaction(hits, num_relevant, k=k, convention=convention)
    for name in METRICS:
      by_tx, by_user = aggregate(values[name], valid, jnp.asarray(user), num_users=num_users)
      out[f"{name}@{k}"] = float(by_tx)
      out[f"{name}@{k}_by_user"] = float(by_user)
  return out
