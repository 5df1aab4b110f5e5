"""The default shop of the offline run: real Fashion-MNIST product photos as one-of-a-kind items, with a
simulated purchase log.

The images and their 10 category labels are real (Zalando's Fashion-MNIST, from the Debian package
`dataset-fashion-mnist`); the purchases are simulated by `jaxrec.data.simulate` with UGallery-like
statistics: ~1,000 items in stock at any moment, users with 2-4 baskets of 1-2 items, and tastes that mix a
favourite category with a visual style. The style of an item is read from its pixels (a 7x7 thumbnail
projected on its 16 principal components), so it is visual but independent of any CNN.
"""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np

from jaxrec.data import simulate
from jaxrec.data.purchase_logs import write_jaxrec_log

CLASS_NAMES = ("t-shirt/top", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag",
               "ankle boot")
# ~3,000 items: 1,000 in stock at the start, ~2,000 bought by 444 users (3 baskets of 1.5 items on average).
CONFIG = simulate.ShopConfig(num_users=444, initial_stock=1000, category_weight=1.0, temperature=0.3)
SEED = 0


def num_items(config: simulate.ShopConfig = CONFIG) -> int:
  return simulate.num_items_needed(config)


def style_vectors(images: np.ndarray, dim: int = 16) -> np.ndarray:
  """[N, H, W] grayscale (or [N, H, W, 3]) uint8 -> [N, dim]: 7x7 mean-pooled thumbnails, centred,
  projected on their first `dim` principal components."""
  x = np.asarray(images, np.float32)
  if x.ndim == 4:
    x = x.mean(axis=-1)
  n, h, w = x.shape
  ph, pw = h // 7, w // 7
  thumbs = x[:, :ph * 7, :pw * 7].reshape(n, 7, ph, 7, pw).mean(axis=(2, 4)).reshape(n, 49)
  thumbs -= thumbs.mean(axis=0)
  _, _, vt = np.linalg.svd(thumbs, full_matrices=False)
  return thumbs @ vt[:dim].T


def build_default_shop(folder: str | os.PathLike, item_ids: Sequence[str], images: np.ndarray,
                       labels: np.ndarray, *, config: simulate.ShopConfig = CONFIG, seed: int = SEED) -> None:
  """Writes items.csv (item_id, upload_time, category, label) and purchases.csv for the given photos."""
  labels = np.asarray(labels)
  needed = simulate.num_items_needed(config)
  if len(item_ids) < needed:
    raise ValueError(f"the default shop needs {needed} items, got {len(item_ids)}")
  item_ids, images, labels = list(item_ids)[:needed], images[:needed], labels[:needed]
  log = simulate.simulate_log(labels, style_vectors(images), config, seed=seed, item_ids=item_ids)
  write_jaxrec_log(folder, item_ids=log.item_ids, upload_times=log.upload_times, users=log.users,
                   times=log.times, purchased=log.items,
                   item_columns={"category": [CLASS_NAMES[l] for l in labels], "label": labels.tolist()})
