"""Evaluator benchmark: the jnp evaluator vs the plain per-transaction loop, and a large log's memory.

  python -m benchmarks.evaluator_benchmark                  # UGallery-sized log (both cases by default)
  python -m benchmarks.evaluator_benchmark --case=large     # 1M items x 10k transactions, in its own process

ugallery: ~6,000 items, ~4,100 evaluated transactions, 2,048-d embeddings. Prints the end-to-end time after
compilation (replay + scoring + metrics), the time of `jaxrec.recommend.reference` (one numpy ranking per
transaction, plain-Python metrics) on the same log in the same process and their ratio, and the matmul
GFLOP/s of the scoring against this machine's float32 matmul peak measured in the same run.
large: 1,000,000 items (all in the universe, so every transaction has ~all of them as candidates),
10,000 evaluated transactions, 64-d embeddings: time and peak RSS.
"""

from __future__ import annotations

import resource
import statistics
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from jaxrec import evaluation, metrics
from jaxrec.data import purchase_logs, simulate
from jaxrec.data.embeddings import align, validate_embeddings
from benchmarks.common import matmul_peak_gflops
from jaxrec.recommend import protocol, reference, scoring

_CASE = flags.DEFINE_enum("case", "all", ["all", "ugallery", "large"], "Which benchmark to run.")
_BLOCK = flags.DEFINE_integer("block_size", 256, "Transactions scored together (at most).")
_ROWS = flags.DEFINE_integer("block_rows", 256, "Profile items per block (at most).")
_CHUNK = flags.DEFINE_integer("chunk_size", 2048, "Candidates scored together (at most).")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Timed repeats after the warm-up (medians are reported).")


def scoring_flops(replay: protocol.Replay, dim: int, block_size: int, chunk_size: int, block_rows: int) -> float:
  """Matmul FLOPs of `scoring.rank_candidates` as planned (padded shapes included)."""
  return sum(2 * len(block.rows) * sum(len(c) for c in block.chunks) * dim
             for block in scoring.plan_blocks(replay, block_size, chunk_size, block_rows))


def ugallery_sized_log(dim: int, seed: int = 0):
  # Baskets of one item, 2-4 per user: ~2,020 users give ~6,060 purchased items and ~4,040 evaluated
  # transactions, with ~1,160 candidates on average.
  config = simulate.ShopConfig(num_users=2020, initial_stock=1570, basket_sizes=(1,))
  categories, styles, vectors = simulate.synthetic_items(simulate.num_items_needed(config), embedding_dim=dim,
                                                         seed=seed)
  sim = simulate.simulate_log(categories, styles, config, seed=seed)
  items = purchase_logs.Items(ids=sim.item_ids, upload_time=sim.upload_times.astype(np.float64),
                              one_of_a_kind=None, images=None, metadata={}, source="simulated items",
                              lines=np.arange(2, len(sim.item_ids) + 2))
  purchases = purchase_logs.Purchases(users=sim.users, times=sim.times.astype(np.float64), items=sim.items,
                                      source="simulated purchases", lines=np.arange(2, len(sim.items) + 2))
  log = purchase_logs.validate_log(items, purchases)
  return log, validate_embeddings(sim.item_ids, vectors, source="simulated embeddings")


def _median_time(fn, repeats):
  times = []
  for _ in range(repeats):
    t = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t)
  return statistics.median(times), times


def run_ugallery(repeats: int) -> None:
  dim = 2048
  log, emb = ugallery_sized_log(dim)
  options = dict(k=20, block_size=_BLOCK.value, block_rows=_ROWS.value, chunk_size=_CHUNK.value)
  evaluation.evaluate(log, emb, **options)  # compile
  total, runs = _median_time(lambda: evaluation.evaluate(log, emb, **options), repeats)
  result = evaluation.evaluate(log, emb, **options)
  m = result.metrics
  print(f"log: {m['num_items']} items, {m['num_transactions']} evaluated transactions of {m['num_users']} "
        f"users, {m['mean_candidates']:.0f} candidates on average, {dim}-d embeddings")

  # Stages, after compilation.
  t = time.perf_counter()
  replay = protocol.replay(log)
  t_replay = time.perf_counter() - t
  vectors = align(emb, replay.universe_ids)
  t = time.perf_counter()
  ranking = scoring.rank_candidates(replay, vectors, **options)
  t_score = time.perf_counter() - t
  t = time.perf_counter()
  hits = metrics.hits_from_ranking(ranking.items, replay.truth)
  metrics.summarize(hits, replay.num_relevant, replay.tx_user, num_users=len(replay.users), ks=[20],
                    convention="paper")
  t_metrics = time.perf_counter() - t
  flops = scoring_flops(replay, dim, _BLOCK.value, _CHUNK.value, _ROWS.value)
  peak = matmul_peak_gflops()

  print(f"jnp evaluator, end to end after compilation: {total:.3f} s (median of {repeats}: "
        f"{', '.join(f'{x:.3f}' for x in runs)})")
  print(f"  replay {t_replay:.3f} s, scoring {t_score:.3f} s, metrics {t_metrics:.3f} s")
  print(f"  scoring matmuls: {flops / 1e9:.1f} GFLOP, {flops / t_score / 1e9:.1f} GFLOP/s = "
        f"{flops / t_score / 1e9 / peak:.0%} of the measured float32 matmul peak ({peak:.1f} GFLOP/s)")

  vectors_by_id = dict(zip(emb.item_ids, emb.vectors))
  t = time.perf_counter()
  ref = reference.evaluate(log, vectors_by_id, k=20)
  t_ref = time.perf_counter() - t
  ref_recall = float(np.mean([r["recall"] for r in ref]))
  print(f"reference per-transaction numpy loop: {t_ref:.2f} s  -> ratio {t_ref / total:.1f}x")
  print(f"  R@20 jnp {m['recall@20']:.6f} vs reference {ref_recall:.6f}")


def large_log(num_items: int, num_users: int, dim: int, seed: int = 0):
  """Uniform choices, built with numpy: items uploaded over time, never sold out (universe = all)."""
  rng = np.random.default_rng(seed)
  upload = np.sort(rng.integers(0, 1_000_000, num_items)).astype(np.float64)
  ids = np.array([f"i{n:07d}" for n in range(num_items)], dtype=object)
  per_user = 2  # two baskets of one item: one evaluated transaction per user
  times = rng.integers(1_000_000, 2_000_000, (num_users, per_user)).astype(np.float64)
  times.sort(axis=1)
  bought = rng.choice(num_items, size=num_users * per_user, replace=False)
  users = np.repeat(np.array([f"u{u:06d}" for u in range(num_users)], dtype=object), per_user)
  items = purchase_logs.Items(ids=ids, upload_time=upload, one_of_a_kind=None, images=None, metadata={},
                              source="large items", lines=np.arange(2, num_items + 2))
  purchases = purchase_logs.Purchases(users=users, times=times.ravel(), items=ids[bought],
                                      source="large purchases", lines=np.arange(2, len(bought) + 2))
  vectors = rng.standard_normal((num_items, dim), dtype=np.float32)
  return (purchase_logs.validate_log(items, purchases),
          validate_embeddings(ids, vectors, source="large embeddings"))


def run_large() -> None:
  num_items, num_tx, dim = 1_000_000, 10_000, 64
  t = time.perf_counter()
  log, emb = large_log(num_items, num_tx, dim)
  t_build = time.perf_counter() - t
  rss_inputs = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
  t = time.perf_counter()
  result = evaluation.evaluate(log, emb, k=20, universe="all", block_size=256, chunk_size=16384)
  t_eval = time.perf_counter() - t
  rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
  m = result.metrics
  inputs_mb = emb.vectors.nbytes / 2 ** 20
  print(f"large log: {m['num_items']} items, {m['num_transactions']} transactions, "
        f"{m['mean_candidates']:.0f} candidates on average, {dim}-d embeddings ({inputs_mb:.0f} MiB)")
  print(f"  built in {t_build:.1f} s; evaluated in {t_eval:.1f} s (compilation included)")
  print(f"  peak RSS {rss:.0f} MiB (after building the inputs: {rss_inputs:.0f} MiB); a dense "
        f"[transactions x items] score matrix alone would need {num_tx * num_items * 4 / 2 ** 30:.0f} GiB")
  print(f"  R@20 {m['recall@20']:.6f} (random vectors: about k/|C| = {20 / m['mean_candidates']:.6f} expected)")


def main(argv):
  del argv
  print(f"devices: {jax.devices()}")
  if _CASE.value in ("all", "ugallery"):
    run_ugallery(_REPEATS.value)
  if _CASE.value == "large":
    run_large()
  elif _CASE.value == "all":  # its own process, so that its peak RSS is its own
    subprocess.run([sys.executable, "-m", "benchmarks.evaluator_benchmark", "--case=large"], check=True)


if __name__ == "__main__":
  app.run(main)
