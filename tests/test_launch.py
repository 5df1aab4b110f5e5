"""The absl entry points, run as a user runs them."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from jaxrec.data import SAMPLE_SHOP_DIR
from jaxrec.data.embeddings import read_embeddings

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(*args):
  return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=300,
                        env={**os.environ, "JAX_PLATFORMS": "cpu"})


def test_evaluate_writes_metrics_json(tmp_path):
  out = tmp_path / "out"
  proc = _run("launch.evaluate", "--config=configs/evaluate.py", "--config.dataset.format=jaxrec",
              f"--config.dataset.dir={SAMPLE_SHOP_DIR}", f"--config.embeddings={SAMPLE_SHOP_DIR}/embeddings.npz",
              "--config.k=10", "--config.profile=max", "--config.convention=paper", f"--workdir={out}")
  assert proc.returncode == 0, proc.stderr
  assert "R@10" in proc.stdout and "nDCG@10" in proc.stdout
  m = json.loads((out / "metrics.json").read_text())
  for name in ("recall", "precision", "f1", "map", "mrr", "ndcg"):
    assert 0 <= m[f"{name}@10"] <= 1 and 0 <= m[f"{name}@10_by_user"] <= 1
  assert m["num_transactions"] > 0 and m["num_users"] > 0 and m["mean_candidates"] > 10
  # The printed row shows the same numbers as metrics.json.
  assert f"{m['recall@10']:.4f}".lstrip("0") in proc.stdout

  # Same workdir, another config: refused, and the saved results are untouched.
  before = (out / "metrics.json").read_bytes()
  proc = _run("launch.evaluate", "--config.embeddings=random", "--config.k=10", f"--workdir={out}")
  assert proc.returncode != 0 and "differently configured run" in proc.stderr
  assert (out / "metrics.json").read_bytes() == before


def test_evaluate_random_and_bad_config_key(tmp_path):
  proc = _run("launch.evaluate", "--config.embeddings=random", f"--workdir={tmp_path}")
  assert proc.returncode == 0, proc.stderr
  m = json.loads((tmp_path / "metrics.json").read_text())
  assert "closed_form_recall@20" in m and m["recall@20"] < 0.5
  proc = _run("launch.evaluate", "--config.no_such_key=1", f"--workdir={tmp_path}/x")
  assert proc.returncode != 0 and "no_such_key" in proc.stderr


SMALL_SHOP = ("--config.shop.num_users=30", "--config.shop.initial_stock=60", "--config.dataset.num_items=200")


def test_main_runs_the_default_experiment_on_a_small_shop(tmp_path):
  """launch.main end to end: Fashion-MNIST photos, Lite0's real weights, extraction, evaluation, picture."""
  proc = _run("launch.main", f"--workdir={tmp_path}", *SMALL_SHOP)
  assert proc.returncode == 0, proc.stderr[-3000:]
  table = (tmp_path / "table.csv").read_text().splitlines()
  assert table[0].startswith("embedding,recall@20") and len(table) == 3
  m = json.loads((tmp_path / "metrics.json").read_text())
  assert m["EfficientNet-Lite0"]["ndcg@20"] > m["Random"]["ndcg@20"]
  from PIL import Image
  assert Image.open(tmp_path / "recommendations.png").size[0] > 300
  emb = read_embeddings(next((tmp_path / "cache").glob("embeddings-*.npz")))
  assert emb.vectors.shape == (200, 1280) and emb.metadata["arch"] == "efficientnet_lite0"


@pytest.mark.parametrize("row,message", [
    ("resnet50", "supply resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5 with --config.weights="),
    ("inception_v3", "needs ImageNet weights that cannot be downloaded here: supply "
                     "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5 with --config.weights="),
    ("inception_resnet_v2", "needs ImageNet weights that cannot be downloaded here: supply "
                            "inception_resnet_v2_weights_tf_dim_ordering_tf_kernels_notop.h5 with --config.weights="),
    ("nasnet_large", "needs ImageNet weights that cannot be downloaded here: supply "
                     "NASNet-large-no-top.h5 with --config.weights="),
])
def test_table1_rows_that_cannot_run_say_what_to_supply(tmp_path, row, message):
  proc = _run("launch.main", f"--config=configs/table1.py:{row}", f"--workdir={tmp_path}")
  assert proc.returncode == 2 and message in proc.stderr
  assert not (tmp_path / "cache").exists()  # failed before building anything


def test_shipped_sample_shop_is_what_the_builder_makes(tmp_path):
  from jaxrec.data.sample_shop import build
  build(tmp_path)
  for name in ("items.csv", "purchases.csv"):
    assert (tmp_path / name).read_text() == (SAMPLE_SHOP_DIR / name).read_text(), name
  built, shipped = read_embeddings(tmp_path / "embeddings.npz"), read_embeddings(SAMPLE_SHOP_DIR / "embeddings.npz")
  np.testing.assert_array_equal(built.item_ids, shipped.item_ids)
  np.testing.assert_array_equal(built.vectors, shipped.vectors)
