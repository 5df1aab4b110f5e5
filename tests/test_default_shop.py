"""The default shop's simulated log over given photos, and the recommendation picture."""

import numpy as np

from jaxrec.data import default_shop, simulate
from jaxrec.data.purchase_logs import read_jaxrec_log
from jaxrec.recommend import protocol
from jaxrec.visualize import recommendation_grid


def _photos(n, seed=0):
  """Stand-ins for Fashion-MNIST: per class a template, plus noise, so style follows the class loosely."""
  rng = np.random.default_rng(seed)
  labels = rng.integers(0, 10, n)
  templates = rng.integers(0, 255, (10, 28, 28))
  images = np.clip(templates[labels] + rng.normal(0, 40, (n, 28, 28)), 0, 255).astype(np.uint8)
  return [f"fmnist-train-{i:05d}" for i in range(n)], images, labels


def test_style_vectors_are_centred_projections():
  _, images, _ = _photos(200)
  style = default_shop.style_vectors(images, dim=16)
  assert style.shape == (200, 16)
  np.testing.assert_allclose(style.mean(axis=0), 0, atol=1e-3)
  variances = style.var(axis=0)
  assert np.all(np.diff(variances) <= 1e-3 * variances[0])  # principal components, largest first


def test_build_default_shop_writes_a_valid_log_with_ugallery_like_statistics(tmp_path):
  config = simulate.ShopConfig(num_users=60, initial_stock=150)
  ids, images, labels = _photos(simulate.num_items_needed(config) + 5)
  default_shop.build_default_shop(tmp_path, ids, images, labels, config=config, seed=1)
  log = read_jaxrec_log(tmp_path)
  assert set(log.items.metadata) == {"category", "label"}
  assert set(log.items.metadata["category"]) <= set(default_shop.CLASS_NAMES)
  replay = protocol.replay(log)
  assert 1.3 < replay.num_relevant.mean() < 1.7  # baskets of 1-2 items
  assert replay.num_candidates.mean() > 50
  baskets = {(u, t) for u, t in zip(log.purchases.users, log.purchases.times)}
  per_user = np.bincount(np.unique([u for u, _ in baskets], return_inverse=True)[1])
  assert per_user.min() >= 1 and per_user.max() <= 4


def test_default_config_needs_about_3000_items():
  assert 2900 <= default_shop.num_items() <= 3100


def test_recommendation_grid_outlines_hits():
  images = {f"i{k}": np.full((28, 28), 128, np.uint8) for k in range(6)}
  grid = recommendation_grid([(["i0"], ["i1", "i2", "i3"], {"i2"})], images.__getitem__, tile=40, gap=10)
  pixels = np.asarray(grid)
  assert grid.size == (4 * 40 + 3 * 10, 40 + 2 * 10)
  x_hit = 10 + 40 + 10 + 40  # profile tile, gap, first recommendation, then the hit
  assert tuple(pixels[10, x_hit + 20]) == (220, 30, 30)  # top edge of the hit's outline
  assert tuple(pixels[10, x_hit - 20]) != (220, 30, 30)  # a miss has none
