"""Ranking metrics: the worked case, trec_eval (pytrec_eval) equality, aggregates."""

import numpy as np
import pytest
import pytrec_eval

from jaxrec import metrics


def _hits(relevant_ranks, depth):
  h = np.zeros((1, depth), bool)
  for r in relevant_ranks:
    if r <= depth:
      h[0, r - 1] = True
  return h


@pytest.mark.parametrize("convention,expected_map,expected_ndcg", [
    ("paper", 0.27778, 0.63093),
    ("standard", 0.25, 0.38685),
])
def test_worked_case(convention, expected_map, expected_ndcg):
  # k = 3; two relevant items at ranks 2 and 5.
  values = metrics.per_transaction(_hits([2, 5], 10), np.array([2]), k=3, convention=convention)
  got = {name: float(v[0]) for name, v in values.items()}
  np.testing.assert_allclose(got["precision"], 1 / 3, atol=1e-6)
  np.testing.assert_allclose(got["recall"], 0.5, atol=1e-6)
  np.testing.assert_allclose(got["f1"], 0.4, atol=1e-6)
  np.testing.assert_allclose(got["mrr"], 0.5, atol=1e-6)
  np.testing.assert_allclose(got["map"], expected_map, atol=1e-5)
  np.testing.assert_allclose(got["ndcg"], expected_ndcg, atol=1e-5)


def test_no_hits_gives_zeros():
  values = metrics.per_transaction(_hits([30], 40), np.array([1]), k=20, convention="paper")
  for name, v in values.items():
    assert float(v[0]) == 0.0, name


def _random_case(rng, num_queries, num_docs):
  """Scores without ties, relevance sets of 1-5 items; returns hits ranked by score and trec inputs."""
  hits, num_rel, qrels, run = [], [], {}, {}
  for q in range(num_queries):
    scores = rng.permutation(num_docs).astype(float) + rng.uniform(0, 0.5, num_docs)
    relevant = set(rng.choice(num_docs, size=rng.integers(1, 6), replace=False).tolist())
    order = np.argsort(-scores)
    hits.append([int(d) in relevant for d in order])
    num_rel.append(len(relevant))
    qrels[f"q{q}"] = {f"d{d}": 1 for d in relevant}
    run[f"q{q}"] = {f"d{d}": float(scores[d]) for d in range(num_docs)}
  return np.array(hits), np.array(num_rel), qrels, run, order


@pytest.mark.parametrize("k", [1, 5, 20])
def test_standard_convention_equals_trec_eval(k):
  rng = np.random.default_rng(k)
  num_docs = 60
  hits, num_rel, qrels, run, _ = _random_case(rng, 200, num_docs)
  measures = {f"P_{k}", f"recall_{k}", f"map_cut_{k}", f"ndcg_cut_{k}", "recip_rank"}
  # recip_rank is not cut by trec_eval: give it only the top-k list, which cuts it at k.
  top_run = {q: dict(sorted(docs.items(), key=lambda kv: -kv[1])[:k]) for q, docs in run.items()}
  full = pytrec_eval.RelevanceEvaluator(qrels, measures).evaluate(run)
  cut = pytrec_eval.RelevanceEvaluator(qrels, {"recip_rank"}).evaluate(top_run)
  ours = metrics.per_transaction(hits, num_rel, k=k, convention="standard")
  queries = [f"q{q}" for q in range(len(hits))]
  pairs = {"precision": f"P_{k}", "recall": f"recall_{k}", "map": f"map_cut_{k}", "ndcg": f"ndcg_cut_{k}"}
  for name, trec in pairs.items():
    np.testing.assert_allclose(np.asarray(ours[name]), [full[q][trec] for q in queries], atol=1e-6, err_msg=name)
  np.testing.assert_allclose(np.asarray(ours["mrr"]), [cut[q]["recip_rank"] for q in queries], atol=1e-6)


def test_paper_and_reference_definitions_agree_on_random_cases():
  from jaxrec.recommend.reference import _metrics
  rng = np.random.default_rng(0)
  hits, num_rel, *_ = _random_case(rng, 100, 40)
  for convention in metrics.CONVENTIONS:
    ours = metrics.per_transaction(hits, num_rel, k=10, convention=convention)
    for t in range(len(hits)):
      expected = _metrics(hits[t].tolist(), int(num_rel[t]), 10, convention)
      for name in metrics.METRICS:
        np.testing.assert_allclose(float(ours[name][t]), expected[name], atol=1e-6, err_msg=(convention, name))


def test_aggregates_by_transaction_and_by_user_and_mask():
  values = np.array([1.0, 0.0, 0.5, 0.25, 123.0])
  users = np.array([0, 0, 1, 2, 2])
  valid = np.array([True, True, True, True, False])  # the last row is padding
  by_tx, by_user = metrics.aggregate(values, valid, users, num_users=4)  # user 3 has no transaction
  np.testing.assert_allclose(float(by_tx), (1 + 0 + 0.5 + 0.25) / 4)
  np.testing.assert_allclose(float(by_user), (0.5 + 0.5 + 0.25) / 3)


def test_hits_from_ranking_ignores_padding():
  top = np.array([[4, 7, -1], [2, 9, 3]])
  truth = np.array([[7, -1], [3, 2]])
  np.testing.assert_array_equal(np.asarray(metrics.hits_from_ranking(top, truth)),
                                [[False, True, False], [True, False, True]])
