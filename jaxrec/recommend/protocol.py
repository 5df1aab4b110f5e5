"""The purchase-replay protocol (del Rio et al. 2018; behaviour of the authors' CuratorNet code).

Upload events and baskets (one user's purchases at one time) are merged and replayed in time order;
on equal times uploads come first, then baskets in the order of their first row in the purchases file.

* An upload puts its item in stock.
* A basket of user u is evaluated only if u has an earlier basket. Candidates = the stock at that moment
  (restricted to the item universe), the basket's own items included. Ground truth = the basket's items
  (they are in stock by construction). The profile = items of u's earlier baskets.
* Afterwards the basket joins u's profile and its one-of-a-kind items leave the stock.

Item universe: items that appear in purchases (default), or every inventory item (`universe='all'`).

Variants (both off by default):
* `drop_profile_items`: items already in the user's profile are not candidates (only matters for items
  that are not one-of-a-kind), and not ground truth either.
* `ground_truth='future'`: ground truth = the items of this and all later baskets of u that are in the
  candidates (what CuratorNet's `get_all_future_session_ids` does).

The replay runs on the host and yields padded integer arrays; the candidate set of a transaction is never
materialised: item i is a candidate at the basket at event position p iff `upload_pos[i] < p <=
removal_pos[i]` (and, with `drop_profile_items`, i is not in the profile). Device code recomputes it
from these O(items) arrays, so memory stays bounded for large shops.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import gc

import numpy as np
from absl import logging

from jaxrec.data.purchase_logs import PurchaseLog, one_of_a_kind_mask
from jaxrec.errors import InputError

NEVER = np.iinfo(np.int32).max  # removal position of items that never leave the stock
UNIVERSES = ("purchased", "all")
GROUND_TRUTHS = ("basket", "future")


@dataclasses.dataclass(frozen=True)
class Replay:
  """Evaluated transactions of one replay. Universe indices order items by (upload time, item id)."""

  universe_ids: np.ndarray  # str [N]
  upload_pos: np.ndarray  # int32 [N]: event position of the item's upload
  removal_pos: np.ndarray  # int32 [N]: position of the basket that sold it (NEVER if it stays)
  tx_pos: np.ndarray  # int32 [T]: event position of the evaluated basket
  tx_time: np.ndarray  # float64 [T]
  tx_user: np.ndarray  # int32 [T]: index into `users`
  tx_line: np.ndarray  # int64 [T]: purchases-file line of the basket's first row
  users: np.ndarray  # str [U]
  profile: np.ndarray  # int32 [T, P]: universe indices, -1 padded
  truth: np.ndarray  # int32 [T, G]: universe indices, -1 padded
  num_relevant: np.ndarray  # int32 [T]
  num_candidates: np.ndarray  # int32 [T]
  drop_profile_items: bool
  skipped: dict

  @property
  def num_transactions(self) -> int:
    return len(self.tx_pos)


def _pad(rows: list[list[int]]) -> np.ndarray:
  width = max(1, max((len(r) for r in rows), default=1))
  out = np.full((len(rows), width), -1, dtype=np.int32)
  for i, r in enumerate(rows):
    out[i, :len(r)] = r
  return out


@contextlib.contextmanager
def _gc_paused():
  """The replay allocates ~10^5 short-lived, acyclic containers; a cyclic-GC pass walks the whole heap
  (jax's included) and costs more than the loop itself."""
  enabled = gc.isenabled()
  gc.disable()
  try:
    yield
  finally:
    if enabled:
      gc.enable()


def replay(log: PurchaseLog, *, universe: str = "purchased", drop_profile_items: bool = False,
           ground_truth: str = "basket") -> Replay:
  with _gc_paused():
    return _replay(log, universe=universe, drop_profile_items=drop_profile_items, ground_truth=ground_truth)


def _replay(log: PurchaseLog, *, universe: str, drop_profile_items: bool, ground_truth: str) -> Replay:
  if universe not in UNIVERSES:
    raise InputError(f"unknown item universe {universe!r}; expected one of {', '.join(UNIVERSES)}")
  if ground_truth not in GROUND_TRUTHS:
    raise InputError(f"unknown ground truth {ground_truth!r}; expected one of {', '.join(GROUND_TRUTHS)}")
  items, purchases = log.items, log.purchases
  item_index = log.item_index()
  unique = one_of_a_kind_mask(log)

  # Universe, ordered by (upload time, id): this order is also the tie-break order of the ranking.
  if universe == "purchased":
    members = np.array(sorted({item_index[i] for i in purchases.items}), dtype=np.int64)
  else:
    members = np.arange(len(items))
  order = sorted(members.tolist(), key=lambda r: (items.upload_time[r], items.ids[r]))
  universe_rows = np.array(order, dtype=np.int64)
  universe_ids = items.ids[universe_rows]
  to_universe = {int(r): u for u, r in enumerate(universe_rows)}

  # Baskets: group purchase rows by (user, time), in the order of their first row.
  baskets: dict[tuple[str, float], list[int]] = {}
  for row, (user, time) in enumerate(zip(purchases.users, purchases.times)):
    baskets.setdefault((user, float(time)), []).append(row)
  basket_keys = list(baskets)

  # Events: (time, kind, order); uploads (kind 0) before baskets (kind 1) on equal times.
  upload_times = items.upload_time[universe_rows]
  basket_times = np.array([k[1] for k in basket_keys], dtype=np.float64)
  times = np.concatenate([upload_times, basket_times])
  kinds = np.concatenate([np.zeros(len(universe_rows), np.int8), np.ones(len(basket_keys), np.int8)])
  seq = np.concatenate([np.arange(len(universe_rows)), np.arange(len(basket_keys))])
  events = np.lexsort((seq, kinds, times))
  if len(events) >= NEVER:
    raise InputError(f"log too large: {len(events)} events")

  # Per user, their baskets in replay order (for the 'future' ground truth).
  user_baskets: dict[str, list[int]] = collections.defaultdict(list)
  for e in events:
    if kinds[e] == 1:
      user_baskets[basket_keys[seq[e]][0]].append(int(seq[e]))
  users = np.array(sorted(user_baskets), dtype=object)
  user_number = {u: i for i, u in enumerate(users)}

  upload_pos = np.zeros(len(universe_rows), dtype=np.int32)
  removal_pos = np.full(len(universe_rows), NEVER, dtype=np.int32)
  in_stock = np.zeros(len(universe_rows), dtype=bool)
  sold_at_line: dict[int, int] = {}
  stock_size = 0
  profiles: dict[str, list[int]] = collections.defaultdict(list)
  profile_sets: dict[str, set[int]] = collections.defaultdict(set)
  baskets_seen: dict[str, int] = collections.defaultdict(int)
  out = collections.defaultdict(list)
  no_truth = 0

  for pos, e in enumerate(events):
    if kinds[e] == 0:
      u = int(seq[e])
      upload_pos[u] = pos
      in_stock[u] = True
      stock_size += 1
      continue
    b = int(seq[e])
    user, time = basket_keys[b]
    rows = baskets[basket_keys[b]]
    row_of: dict[int, int] = {}  # universe index -> its first row in this basket
    for r in rows:
      row_of.setdefault(to_universe[item_index[purchases.items[r]]], r)
    basket = list(row_of)
    for u, r in row_of.items():
      if not in_stock[u]:
        line = purchases.lines[r]
        item_id = universe_ids[u]
        if u in sold_at_line:
          raise InputError(
              f"{purchases.source}, line {line}: one-of-a-kind item {item_id!r} is bought again by user "
              f"{user!r}; it left the stock when bought on line {sold_at_line[u]}")
        raise InputError(
            f"{purchases.source}, line {line}: item {item_id!r} is bought at time {time!r}, before its "
            f"upload at time {upload_times[u]!r} ({items.source}, line {items.lines[universe_rows[u]]})")
    if baskets_seen[user] > 0:
      held = profile_sets[user] if drop_profile_items else set()
      if ground_truth == "basket":
        truth = [u for u in basket if u not in held]
      else:
        later = user_baskets[user][baskets_seen[user]:]
        future = dict.fromkeys(
            to_universe[item_index[purchases.items[r]]] for k in later for r in baskets[basket_keys[k]])
        truth = [u for u in future if in_stock[u] and u not in held]
      if truth:
        held_in_stock = sum(1 for u in held if in_stock[u])
        out["tx_pos"].append(pos)
        out["tx_time"].append(time)
        out["tx_user"].append(user_number[user])
        out["tx_line"].append(purchases.lines[rows[0]])
        out["profile"].append(list(profiles[user]))
        out["truth"].append(truth)
        out["num_candidates"].append(stock_size - held_in_stock)
      else:
        no_truth += 1
    baskets_seen[user] += 1
    for u in basket:
      if u not in profile_sets[user]:
        profile_sets[user].add(u)
        profiles[user].append(u)
      if unique[universe_rows[u]]:
        in_stock[u] = False
        stock_size -= 1
        removal_pos[u] = pos
        sold_at_line[u] = int(purchases.lines[row_of[u]])

  skipped = dict(log.skipped)
  if no_truth:
    skipped["transactions_without_relevant_candidates"] = no_truth
    logging.warning("skipped %d transaction(s) whose ground truth is empty once profile items are dropped",
                    no_truth)
  if not out["tx_pos"]:
    raise InputError(f"{purchases.source}: no user has two baskets, so no transaction can be evaluated")
  truth = _pad(out["truth"])
  return Replay(
      universe_ids=universe_ids, upload_pos=upload_pos, removal_pos=removal_pos,
      tx_pos=np.array(out["tx_pos"], np.int32), tx_time=np.array(out["tx_time"], np.float64),
      tx_user=np.array(out["tx_user"], np.int32), tx_line=np.array(out["tx_line"], np.int64),
      users=users, profile=_pad(out["profile"]), truth=truth,
      num_relevant=(truth >= 0).sum(axis=1).astype(np.int32),
      num_candidates=np.array(out["num_candidates"], np.int32),
      drop_profile_items=drop_profile_items, skipped=skipped)
