import os
import sys

# Tests run on the CPU; the multi-device tests of later stages set their own XLA_FLAGS in subprocesses.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # launch/, configs/


def write_csv(path, header, rows):
  import csv
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(header)
    w.writerows(rows)
  return path


def write_log(folder, items, purchases, item_header=("item_id", "upload_time")):
  """items: rows of items.csv; purchases: (user_id, time, item_id) rows."""
  os.makedirs(folder, exist_ok=True)
  write_csv(os.path.join(folder, "items.csv"), item_header, items)
  write_csv(os.path.join(folder, "purchases.csv"), ("user_id", "time", "item_id"), purchases)
  return folder


def random_variables(backbone, size: int, seed: int = 0):
  """Small random values (BN variances positive) shaped by abstract_variables: no init of the backbone,
  deterministic per seed."""
  import jax
  import numpy as np
  rng = np.random.default_rng(seed)
  leaves, tree = jax.tree.flatten_with_path(backbone.abstract_variables(size))

  def fill(path, leaf):
    if "var" in jax.tree_util.keystr(path):
      return rng.uniform(0.5, 1.5, leaf.shape).astype(leaf.dtype)
    return (rng.standard_normal(leaf.shape) * 0.2).astype(leaf.dtype)

  return jax.tree.unflatten(tree, [fill(p, leaf) for p, leaf in leaves])
