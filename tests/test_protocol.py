"""The replay protocol on hand-made logs whose answers are worked out by hand."""

import numpy as np
import pytest

from conftest import write_log
from jaxrec.data.purchase_logs import read_jaxrec_log
from jaxrec.errors import InputError
from jaxrec.recommend import protocol


def _log(tmp_path, items, purchases, **kw):
  return read_jaxrec_log(write_log(tmp_path / "log", items, purchases, **kw))


def _ids(replay, row):
  return [replay.universe_ids[i] for i in row if i >= 0]


def test_replay_by_hand(tmp_path):
  # a, b uploaded at 0; c at 5; d at 10 (same time as u1's second basket: uploads come first).
  log = _log(tmp_path, [("a", 0), ("b", 0), ("c", 5), ("d", 10), ("e", 0)],
             [("u1", 1, "a"), ("u2", 2, "b"), ("u1", 10, "d"), ("u1", 10, "c"), ("u2", 12, "e")])
  r = protocol.replay(log)
  # Universe: purchased items, by (upload time, id): a, b, e, c, d.
  assert list(r.universe_ids) == ["a", "b", "e", "c", "d"]
  # Evaluated: u1@10 (profile a) and u2@12 (profile b); first baskets are not evaluated.
  assert r.num_transactions == 2
  assert _ids(r, r.profile[0]) == ["a"] and sorted(_ids(r, r.truth[0])) == ["c", "d"]
  # Stock at u1@10: e, c, d (a and b sold, d uploaded at 10 before the basket).
  assert r.num_candidates.tolist() == [3, 1]
  assert _ids(r, r.profile[1]) == ["b"] and _ids(r, r.truth[1]) == ["e"]
  assert list(r.users[r.tx_user]) == ["u1", "u2"]


def test_items_bought_twice_stay_in_stock_and_drop_profile_items(tmp_path):
  # x is bought by u1 twice and by u2 once, so it is not one-of-a-kind and never leaves the stock.
  items = [("x", 0), ("y", 0), ("z", 0)]
  purchases = [("u1", 1, "x"), ("u1", 2, "y"), ("u1", 3, "x"), ("u2", 4, "z"), ("u2", 5, "x")]
  r = protocol.replay(_log(tmp_path, items, purchases))
  assert r.num_candidates.tolist() == [3, 2, 1]  # u1@2: x, y, z; u1@3: x, z; u2@5: x
  d = protocol.replay(_log(tmp_path, items, purchases), drop_profile_items=True)
  # u1@3 buys x, which is in the profile: dropped from candidates and truth, so it is skipped.
  assert d.num_transactions == 2
  assert d.num_candidates.tolist() == [2, 1]  # u1@2: y, z (x held); u2@5: x
  assert d.skipped["transactions_without_relevant_candidates"] == 1


def test_universe_all_and_future_ground_truth(tmp_path):
  items = [("a", 0), ("b", 0), ("c", 0), ("never", 0)]
  purchases = [("u", 1, "a"), ("u", 2, "b"), ("u", 3, "c")]
  log = _log(tmp_path, items, purchases)
  assert protocol.replay(log).num_candidates.tolist() == [2, 1]
  assert protocol.replay(log, universe="all").num_candidates.tolist() == [3, 2]
  future = protocol.replay(log, ground_truth="future")
  assert sorted(_ids(future, future.truth[0])) == ["b", "c"] and _ids(future, future.truth[1]) == ["c"]


def test_one_of_a_kind_column(tmp_path):
  items = [("a", 0, "true"), ("b", 0, "false")]
  header = ("item_id", "upload_time", "one_of_a_kind")
  ok = _log(tmp_path, items, [("u", 1, "a"), ("u", 2, "b"), ("v", 3, "b"), ("v", 4, "b")], item_header=header)
  assert protocol.replay(ok).num_candidates.tolist() == [1, 1]  # b stays: the column says so
  bad = _log(tmp_path, items, [("u", 1, "a"), ("v", 2, "a")], item_header=header)
  with pytest.raises(InputError, match=r"purchases.csv, line 3: one-of-a-kind item 'a' is bought again.*line 2"):
    protocol.replay(bad)


def test_purchase_before_upload_is_an_error(tmp_path):
  log = _log(tmp_path, [("a", 10)], [("u", 5, "a")])
  with pytest.raises(InputError, match=r"line 2: item 'a' is bought at time 5.0, before its upload"):
    protocol.replay(log)


def test_no_evaluable_transaction_is_an_error(tmp_path):
  log = _log(tmp_path, [("a", 0)], [("u", 5, "a")])
  with pytest.raises(InputError, match="no user has two baskets"):
    protocol.replay(log)


def test_candidate_positions_match_counts(tmp_path):
  """The O(items) position rule reproduces each transaction's candidate count."""
  from jaxrec.data.sample_shop import build
  build(tmp_path / "shop")
  r = protocol.replay(read_jaxrec_log(tmp_path / "shop"))
  counts = [int(((r.upload_pos < p) & (p <= r.removal_pos)).sum()) for p in r.tx_pos]
  np.testing.assert_array_equal(counts, r.num_candidates)
