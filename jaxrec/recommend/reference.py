"""A deliberately plain evaluator: one Python loop over events, one numpy ranking per transaction.

It re-implements the replay and the metrics from their definitions, sharing no code with protocol.py,
scoring.py or metrics.py, so it serves as the oracle of the tests and the baseline of the benchmark.
Slow by design; use `jaxrec.evaluation` for real work.
"""

from __future__ import annotations

import math

import numpy as np

from jaxrec.data.purchase_logs import PurchaseLog, one_of_a_kind_mask


def _profile_scores(cand: np.ndarray, prof: np.ndarray, similarity: str, profile: str, topk: int) -> np.ndarray:
  if similarity == "cosine":
    cand = cand / np.linalg.norm(cand, axis=1, keepdims=True)
    prof = prof / np.linalg.norm(prof, axis=1, keepdims=True)
    sims = cand @ prof.T
  else:
    sims = -np.sqrt(np.maximum(((cand[:, None, :] - prof[None, :, :]) ** 2).sum(-1), 0.0))
  if profile == "max":
    return sims.max(axis=1)
  if profile == "mean":
    return sims.mean(axis=1)
  return np.sort(sims, axis=1)[:, ::-1][:, :topk].mean(axis=1)


def _metrics(ranked_hits: list[bool], num_relevant: int, k: int, convention: str) -> dict[str, float]:
  top = ranked_hits[:k] + [False] * max(0, k - len(ranked_hits))
  hits = sum(top)
  p, r = hits / k, hits / num_relevant
  first = next((i for i, h in enumerate(top) if h), None)
  dcg = sum(1 / math.log2(i + 2) for i, h in enumerate(top) if h)
  n_ideal = hits if convention == "paper" else min(num_relevant, k)
  idcg = sum(1 / math.log2(i + 2) for i in range(n_ideal))
  if convention == "paper":
    ap = sum(sum(top[:i + 1]) / (i + 1) for i in range(k)) / k
  else:
    ap = sum(sum(top[:i + 1]) / (i + 1) for i in range(k) if top[i]) / num_relevant
  return dict(recall=r, precision=p, f1=2 * p * r / (p + r) if p + r > 0 else 0.0, map=ap,
              mrr=0.0 if first is None else 1 / (first + 1), ndcg=dcg / idcg if idcg > 0 else 0.0)


def evaluate(log: PurchaseLog, vectors: dict[str, np.ndarray], *, k: int = 20, similarity: str = "cosine",
             profile: str = "max", profile_topk: int = 3, convention: str = "paper",
             universe: str = "purchased", drop_profile_items: bool = False, ground_truth: str = "basket",
             keep_scores: bool = False):
  """Per-transaction metrics, top-k ids and candidate counts, in replay order (and, with `keep_scores`,
  every candidate's score)."""
  items, purchases = log.items, log.purchases
  unique = dict(zip(items.ids, one_of_a_kind_mask(log)))
  upload = dict(zip(items.ids, items.upload_time))
  bought = set(purchases.items)
  members = [i for i in items.ids if universe == "all" or i in bought]
  members.sort(key=lambda i: (upload[i], i))
  rank_of = {item: n for n, item in enumerate(members)}

  baskets: dict = {}
  for user, time, item in zip(purchases.users, purchases.times, purchases.items):
    baskets.setdefault((user, float(time)), [])
    if item not in baskets[(user, float(time))]:
      baskets[(user, float(time))].append(item)
  events = [(upload[i], 0, n, ("upload", i)) for n, i in enumerate(members)]
  events += [(key[1], 1, n, ("basket", key)) for n, key in enumerate(baskets)]
  events.sort(key=lambda e: e[:3])
  later_baskets: dict = {}
  for _, _, _, (kind, key) in events:
    if kind == "basket":
      later_baskets.setdefault(key[0], []).append(key)

  stock: set = set()
  profiles: dict = {}
  done: dict = {}
  out = []
  for _, _, _, (kind, key) in events:
    if kind == "upload":
      stock.add(key)
      continue
    user = key[0]
    basket = baskets[key]
    prof = profiles.get(user, [])
    if prof:
      held = set(prof) if drop_profile_items else set()
      cands = sorted((i for i in stock if i not in held), key=rank_of.get)
      if ground_truth == "basket":
        truth = {i for i in basket if i not in held}
      else:
        future = [i for b in later_baskets[user][done.get(user, 0):] for i in baskets[b]]
        truth = {i for i in future if i in stock and i not in held}
      if truth:
        scores = np.zeros(len(cands))
        if vectors is None:
          order = list(range(len(cands)))
        else:
          scores = _profile_scores(np.stack([vectors[i] for i in cands]), np.stack([vectors[j] for j in prof]),
                                   similarity, profile, profile_topk)
          order = np.argsort(-scores, kind="stable")  # ties: earlier in the universe order first
        ranked = [cands[o] for o in order]
        row = _metrics([i in truth for i in ranked], len(truth), k, convention)
        row.update(user=user, top=ranked[:k], num_candidates=len(cands), num_relevant=len(truth))
        if keep_scores:
          row["scores"] = dict(zip(cands, scores.tolist()))
        out.append(row)
    done[user] = done.get(user, 0) + 1
    profiles[user] = prof + [i for i in basket if i not in prof]
    for i in basket:
      if unique[i]:
        stock.discard(i)
  return out
