"""The Random row of the paper's Table 1 on a simulated UGallery-like log."""

import numpy as np
import pytest

from jaxrec import evaluation
from jaxrec.data import purchase_logs, simulate


@pytest.fixture(scope="module")
def ugallery_like_log(tmp_path_factory):
  # ~1,160 items in stock at any moment, baskets of 1-2 items (1.5 on average), 2-4 baskets per user.
  config = simulate.ShopConfig(num_users=1400, initial_stock=1160)
  categories, styles, _ = simulate.synthetic_items(simulate.num_items_needed(config), seed=0)
  sim = simulate.simulate_log(categories, styles, config, seed=0)
  folder = tmp_path_factory.mktemp("ugallery_like")
  purchase_logs.write_jaxrec_log(folder, item_ids=sim.item_ids, upload_times=sim.upload_times, users=sim.users,
                                 times=sim.times, purchased=sim.items)
  return purchase_logs.read_jaxrec_log(folder)


def test_random_row_matches_the_paper(ugallery_like_log):
  runs = [evaluation.evaluate(ugallery_like_log, None, universe="all", seed=s).metrics for s in range(4)]
  m = runs[0]
  assert abs(m["mean_candidates"] - 1160) < 0.05 * 1160
  assert abs(m["mean_relevant"] - 1.5) < 0.05
  # The closed form, and the paper's Random row (R@20 .0172, P@20 .0013).
  np.testing.assert_allclose(m["closed_form_recall@20"], 0.0172, atol=0.0008)
  np.testing.assert_allclose(m["closed_form_precision@20"], 0.0013, atol=0.0001)
  recall = np.mean([r["recall@20"] for r in runs])
  precision = np.mean([r["precision@20"] for r in runs])
  # Four shuffles of ~2,800 transactions: the standard error of the mean recall is ~0.0006.
  assert abs(recall - m["closed_form_recall@20"]) < 0.002
  assert abs(precision - m["closed_form_precision@20"]) < 0.00015
  assert abs(recall - 0.0172) < 0.0025 and abs(precision - 0.0013) < 0.0002
  # Different seeds give different shuffles.
  assert len({r["recall@20"] for r in runs}) > 1
