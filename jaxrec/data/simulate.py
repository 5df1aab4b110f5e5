"""A seeded purchase-log simulator with UGallery-like statistics.

Real logs of this kind (UGallery: one-of-a-kind artworks, ~1,000 items in stock at any moment, users with a
few small baskets) are not public with images, so the default data of this project pairs real or synthetic
item features with a simulated log. The simulation, step by step:

1. Items are uploaded over `[0, duration]`: `initial_stock` of them at time 0, the rest at uniform times,
   so that uploads roughly replace what is sold and the stock stays near `initial_stock`.
2. Each user gets a taste: a favourite category and a style direction (the style of a random item, plus
   noise), a number of baskets drawn from `baskets_per_user`, at uniform random times.
3. Baskets are replayed in time order. A basket of size s (drawn from `basket_sizes`) takes s items from
   the current stock without replacement, with probability proportional to
   exp((category_weight * [category matches] + cos(user style, item style)) / temperature).
   Bought items leave the stock (every item is one-of-a-kind).

Everything is a pure function of the inputs and the seed (numpy's PCG64).
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from jaxrec.errors import InputError


@dataclasses.dataclass(frozen=True)
class ShopConfig:
  num_users: int = 300
  initial_stock: int = 300
  # Items uploaded after time 0, as a multiple of the expected number of purchases (1.0 keeps the stock
  # level; more leaves unsold items).
  restock_ratio: float = 1.0
  baskets_per_user: Sequence[int] = (2, 3, 4)
  basket_sizes: Sequence[int] = (1, 2)
  duration: int = 365 * 24 * 3600  # seconds
  category_weight: float = 1.0
  temperature: float = 0.3


@dataclasses.dataclass(frozen=True)
class SimulatedLog:
  item_ids: np.ndarray  # str [N]
  upload_times: np.ndarray  # int64 [N]
  users: np.ndarray  # str [P], one row per purchased item
  times: np.ndarray  # int64 [P]
  items: np.ndarray  # str [P]


def num_items_needed(config: ShopConfig) -> int:
  expected_purchases = config.num_users * np.mean(config.baskets_per_user) * np.mean(config.basket_sizes)
  return int(config.initial_stock + round(config.restock_ratio * expected_purchases))


def _unit(x: np.ndarray) -> np.ndarray:
  return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def simulate_log(categories: np.ndarray, styles: np.ndarray, config: ShopConfig, seed: int,
                 item_ids: Sequence[str] | None = None) -> SimulatedLog:
  """Simulates uploads and purchases of the given items (category [N] ints, style [N, L] vectors)."""
  categories = np.asarray(categories)
  styles = _unit(np.asarray(styles, dtype=np.float64))
  n = len(categories)
  if styles.shape[0] != n:
    raise InputError(f"{n} categories but {styles.shape[0]} style rows")
  if n < config.initial_stock:
    raise InputError(f"{n} items cannot fill an initial stock of {config.initial_stock}")
  rng = np.random.default_rng(seed)
  ids = np.array(item_ids if item_ids is not None else [f"item{i:06d}" for i in range(n)], dtype=object)

  # 1. Uploads: a random order of items; the first `initial_stock` at time 0.
  order = rng.permutation(n)
  upload = np.zeros(n, np.int64)
  later = np.sort(rng.integers(1, config.duration, size=n - config.initial_stock))
  upload[order[config.initial_stock:]] = later

  # 2. Users and their baskets.
  num_categories = int(categories.max()) + 1
  user_cat = rng.integers(0, num_categories, size=config.num_users)
  user_style = _unit(styles[rng.integers(0, n, size=config.num_users)]
                     + 0.5 * rng.standard_normal((config.num_users, styles.shape[1])) / np.sqrt(styles.shape[1]))
  basket_user, basket_time = [], []
  for u in range(config.num_users):
    count = int(rng.choice(config.baskets_per_user))
    for t in np.sort(1 + rng.choice(config.duration - 1, size=count, replace=False)):
      basket_user.append(u)
      basket_time.append(int(t))
  basket_user = np.array(basket_user)
  basket_time = np.array(basket_time, np.int64)
  basket_size = rng.choice(config.basket_sizes, size=len(basket_user))

  # 3. Replay: uploads before baskets on equal times.
  events = sorted([(int(upload[i]), 0, i) for i in range(n)] + [(int(t), 1, b) for b, t in enumerate(basket_time)])
  in_stock = np.zeros(n, bool)
  users, times, items = [], [], []
  for time, kind, idx in events:
    if kind == 0:
      in_stock[idx] = True
      continue
    stock = np.flatnonzero(in_stock)
    if len(stock) == 0:
      continue
    u = basket_user[idx]
    utility = config.category_weight * (categories[stock] == user_cat[u]) + styles[stock] @ user_style[u]
    logits = utility / config.temperature
    p = np.exp(logits - logits.max())
    chosen = rng.choice(stock, size=min(int(basket_size[idx]), len(stock)), replace=False, p=p / p.sum())
    for i in chosen:
      in_stock[i] = False
      users.append(f"user{u:05d}")
      times.append(time)
      items.append(ids[i])
  return SimulatedLog(item_ids=ids, upload_times=upload, users=np.array(users, dtype=object),
                      times=np.array(times, np.int64), items=np.array(items, dtype=object))


def synthetic_items(num_items: int, *, num_categories: int = 10, style_dim: int = 16, embedding_dim: int = 64,
                    seed: int = 0):
  """Items with random categories and styles, and embeddings that see both through noise: a stand-in
  for CNN features where no images are at hand. Returns (categories, styles, embeddings float32)."""
  rng = np.random.default_rng(seed)
  categories = rng.integers(0, num_categories, size=num_items)
  styles = rng.standard_normal((num_items, style_dim))
  features = np.concatenate([2.0 * np.eye(num_categories)[categories], _unit(styles) * np.sqrt(style_dim) / 2], 1)
  projection = rng.standard_normal((features.shape[1], embedding_dim)) / np.sqrt(features.shape[1])
  embeddings = features @ projection + 0.5 * rng.standard_normal((num_items, embedding_dim)) / np.sqrt(embedding_dim)
  return categories, styles, embeddings.astype(np.float32)
