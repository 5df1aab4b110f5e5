"""The jnp evaluator against the plain per-transaction reference loop, on random logs."""

import numpy as np
import pytest

from conftest import write_log
from jaxrec import evaluation, metrics
from jaxrec.data.embeddings import validate_embeddings
from jaxrec.data.purchase_logs import read_jaxrec_log
from jaxrec.recommend import reference, scoring

K = 5


def random_log(folder, rng, num_items=120, num_users=25, multi_fraction=0.3):
  """A valid log: items uploaded over time, a fraction not one-of-a-kind (bought several times)."""
  upload = rng.integers(0, 50, num_items)
  multi = rng.random(num_items) < multi_fraction
  items = [(f"i{n:03d}", int(upload[n]), "false" if multi[n] else "true") for n in range(num_items)]
  sold, purchases = set(), []
  for u in range(num_users):
    for t in sorted(rng.choice(np.arange(10, 100), size=rng.integers(1, 5), replace=False)):
      stock = [n for n in range(num_items) if upload[n] <= t and n not in sold]
      for n in rng.choice(stock, size=min(len(stock), rng.integers(1, 4)), replace=False):
        purchases.append((f"u{u}", int(t), f"i{n:03d}"))
        if not multi[n]:
          sold.add(n)
  # Purchases are written in time order, as a shop would export them.
  purchases.sort(key=lambda p: p[1])
  header = ("item_id", "upload_time", "one_of_a_kind")
  return read_jaxrec_log(write_log(folder, items, purchases, item_header=header))


def _compare(log, vectors_by_id, score_tolerance=0.0, **options):
  """Our top-K lists must be the reference's; with a tolerance, a different item at a rank is accepted
  only if the reference scores it within the tolerance of its own item there (a float near-tie)."""
  ids = np.array(sorted(vectors_by_id))
  emb = validate_embeddings(ids, np.stack([vectors_by_id[i] for i in ids]), source="test")
  ours = evaluation.evaluate(log, emb, k=K, block_size=7, block_rows=5, chunk_size=16, **options)
  ref = reference.evaluate(log, vectors_by_id, k=K, keep_scores=True, **options)
  r = ours.replay
  assert r.num_transactions == len(ref)
  assert r.num_candidates.tolist() == [row["num_candidates"] for row in ref]
  assert r.num_relevant.tolist() == [row["num_relevant"] for row in ref]
  near_ties = 0
  for t, row in enumerate(ref):
    top = [r.universe_ids[i] for i in ours.ranking.items[t] if i >= 0]
    assert len(top) == len(row["top"])
    if top != row["top"]:
      near_ties += 1
      gaps = [abs(row["scores"][a] - row["scores"][b]) for a, b in zip(top, row["top"])]
      assert max(gaps) <= score_tolerance, (t, options, top, row["top"], gaps)
  if near_ties:
    # Items held in the profile and still in stock score cos = 1 in exact arithmetic; float rounding
    # orders such ties differently in numpy and XLA, and the metrics differ by the swap.
    return ours
  convention = options.get("convention", "paper")
  per_tx = metrics.per_transaction(metrics.hits_from_ranking(ours.ranking.items, r.truth), r.num_relevant,
                                   k=K, convention=convention)
  for name in metrics.METRICS:
    np.testing.assert_allclose(np.asarray(per_tx[name]), [row[name] for row in ref], atol=1e-6, err_msg=name)
    np.testing.assert_allclose(ours.metrics[f"{name}@{K}"], np.mean([row[name] for row in ref]), atol=1e-6)
  return ours


@pytest.fixture(scope="module")
def log_and_vectors(tmp_path_factory):
  rng = np.random.default_rng(0)
  log = random_log(tmp_path_factory.mktemp("log"), rng)
  # Integer-valued vectors give exact dot products, so both sides see the same ties and the same order.
  vectors = {i: rng.integers(-4, 5, size=6).astype(np.float32) for i in log.items.ids}
  for i in log.items.ids:
    if not vectors[i].any():
      vectors[i][0] = 1.0
  return log, vectors


@pytest.mark.parametrize("options", [
    dict(similarity="euclidean", profile="max"),
    dict(similarity="euclidean", profile="mean"),
    dict(similarity="euclidean", profile="topk_mean", profile_topk=2),
    dict(similarity="euclidean", profile="max", convention="standard"),
    dict(similarity="euclidean", profile="max", universe="all"),
    dict(similarity="euclidean", profile="max", drop_profile_items=True),
    dict(similarity="euclidean", profile="max", ground_truth="future"),
])
def test_matches_reference_exactly(log_and_vectors, options):
  log, vectors = log_and_vectors
  _compare(log, vectors, **options)


def test_cosine_matches_reference(log_and_vectors):
  # Cosine rounds differently in numpy and XLA, so use continuous vectors: ties have probability ~0.
  log, _ = log_and_vectors
  rng = np.random.default_rng(1)
  vectors = {i: rng.standard_normal(8).astype(np.float32) for i in log.items.ids}
  for profile in scoring.PROFILE_AGGREGATES:
    _compare(log, vectors, score_tolerance=1e-6, similarity="cosine", profile=profile)


def test_ties_rank_the_earlier_item_first(tmp_path):
  # Three items with the same vector as each other; the profile item is far from them. The universe
  # order is (upload time, id): t2 < t0 < t1 by upload time.
  log = read_jaxrec_log(write_log(tmp_path / "log", [("p", 0), ("t0", 2), ("t1", 3), ("t2", 1), ("q", 0)],
                                  [("u", 5, "p"), ("u", 6, "t0"), ("v", 6, "t1"), ("w", 6, "t2"),
                                   ("w", 7, "q")]))
  same = np.array([1.0, 1.0], np.float32)
  emb = validate_embeddings(["p", "t0", "t1", "t2", "q"], [[1.0, 0.0], same, same, same, [0.0, 1.0]],
                            source="test")
  result = evaluation.evaluate(log, emb, k=3, chunk_size=1, block_size=1)
  top = [result.replay.universe_ids[i] for i in result.ranking.items[0]]
  assert top == ["t2", "t0", "t1"]


def test_hash_scores_are_uniform_and_independent():
  import jax.numpy as jnp
  u = np.asarray(scoring.hash_uniform(7, jnp.arange(400), jnp.arange(500)))
  assert u.min() >= 0.0 and u.max() < 1.0
  counts, _ = np.histogram(u, bins=20, range=(0, 1))
  expected = u.size / 20
  chi2 = ((counts - expected) ** 2 / expected).sum()
  assert chi2 < 60  # 19 degrees of freedom: p < 1e-5 beyond this
  assert abs(np.corrcoef(u[:-1].ravel(), u[1:].ravel())[0, 1]) < 0.01  # neighbouring transactions
  assert abs(np.corrcoef(u[:, :-1].ravel(), u[:, 1:].ravel())[0, 1]) < 0.01  # neighbouring items
  other = np.asarray(scoring.hash_uniform(8, jnp.arange(400), jnp.arange(500)))
  assert abs(np.corrcoef(u.ravel(), other.ravel())[0, 1]) < 0.01  # seeds


def test_random_ranking_is_a_shuffle_of_the_candidates(log_and_vectors):
  log, _ = log_and_vectors
  result = evaluation.evaluate(log, None, k=K, block_size=5, chunk_size=8, seed=3)
  r = result.replay
  for t in range(r.num_transactions):
    top = result.ranking.items[t]
    valid = top[top >= 0]
    assert len(valid) == min(K, r.num_candidates[t]) and len(set(valid)) == len(valid)
    p = r.tx_pos[t]
    assert ((r.upload_pos[valid] < p) & (p <= r.removal_pos[valid])).all()
  again = evaluation.evaluate(log, None, k=K, seed=3)  # other block and chunk sizes, same shuffle
  np.testing.assert_array_equal(again.ranking.items, result.ranking.items)
