"""Purchase log + item embeddings -> metrics: replay, rank, score. The library entry point of evaluation."""

from __future__ import annotations

import dataclasses
import os
from typing import Sequence

import numpy as np

from jaxrec import metrics
from jaxrec.errors import InputError
from jaxrec.data.embeddings import Embeddings, align, read_embeddings
from jaxrec.data.purchase_logs import PurchaseLog, read_log
from jaxrec.recommend import protocol, scoring


@dataclasses.dataclass(frozen=True)
class Evaluation:
  metrics: dict  # flat, JSON-ready
  replay: protocol.Replay
  ranking: scoring.Ranking


def random_closed_form(replay: protocol.Replay, k: int) -> dict[str, float]:
  """Expected R@k and P@k of a uniform shuffle: each relevant item is in the top k with probability
  min(k, |C|) / |C|."""
  c = replay.num_candidates.astype(np.float64)
  inside = np.minimum(k, c) / c
  return {f"closed_form_recall@{k}": float(np.mean(inside)),
          f"closed_form_precision@{k}": float(np.mean(replay.num_relevant * inside / k))}


def evaluate(log: PurchaseLog, embeddings: Embeddings | None, *, k: int = 20, extra_ks: Sequence[int] = (),
             similarity: str = "cosine", profile: str = "max", profile_topk: int = 3,
             convention: str = "paper", universe: str = "purchased", drop_profile_items: bool = False,
             ground_truth: str = "basket", seed: int = 0, block_size: int = 256, block_rows: int = 256,
             chunk_size: int = 2048) -> Evaluation:
  """`embeddings=None` evaluates the Random baseline (seeded shuffle, plus its closed form)."""
  if convention not in metrics.CONVENTIONS:
    raise InputError(f"unknown convention {convention!r}; expected one of {', '.join(metrics.CONVENTIONS)}")
  replay = protocol.replay(log, universe=universe, drop_profile_items=drop_profile_items,
                           ground_truth=ground_truth)
  vectors = None
  if embeddings is not None:
    vectors = align(embeddings, replay.universe_ids, require_nonzero=(similarity == "cosine"))
  ks = sorted({k, *extra_ks})
  ranking = scoring.rank_candidates(replay, vectors, k=max(ks), similarity=similarity, profile=profile,
                                    profile_topk=profile_topk, seed=seed, block_size=block_size,
                                    block_rows=block_rows, chunk_size=chunk_size)
  hits = metrics.hits_from_ranking(ranking.items, replay.truth)
  result = metrics.summarize(hits, replay.num_relevant, replay.tx_user, num_users=len(replay.users), ks=ks,
                             convention=convention)
  result.update(
      num_transactions=replay.num_transactions,
      num_users=int(len(np.unique(replay.tx_user))),
      mean_candidates=float(np.mean(replay.num_candidates)),
      mean_relevant=float(np.mean(replay.num_relevant)),
      num_items=int(len(replay.universe_ids)),
      skipped=dict(replay.skipped),
  )
  if embeddings is None:
    for kk in ks:
      result.update(random_closed_form(replay, kk))
  return Evaluation(metrics=result, replay=replay, ranking=ranking)


DEFAULT_EMBEDDINGS = {"jaxrec": "embeddings.npz", "ugallery": "ugallery_resnet50_embeddings.npy"}


def embeddings_path(config) -> str | None:
  """The embeddings file a config names; None for the Random baseline."""
  if config.embeddings == "random":
    return None
  if config.embeddings:
    return config.embeddings
  if config.dataset.format not in DEFAULT_EMBEDDINGS:
    raise InputError(f"unknown purchase-log format {config.dataset.format!r}; "
                     f"expected one of {', '.join(DEFAULT_EMBEDDINGS)}")
  return os.path.join(config.dataset.dir, DEFAULT_EMBEDDINGS[config.dataset.format])


def row_name(config) -> str:
  if config.name:
    return config.name
  path = embeddings_path(config)
  return "Random" if path is None else os.path.splitext(os.path.basename(path))[0]


def evaluate_config(config, log: PurchaseLog | None = None) -> Evaluation:
  """Runs one evaluation as configured by configs/evaluate.py (pass `log` to reuse a parsed log)."""
  if log is None:
    log = read_log(config.dataset.format, config.dataset.dir, strict=config.dataset.strict)
  path = embeddings_path(config)
  embeddings = None if path is None else read_embeddings(path)
  return evaluate(log, embeddings, k=config.k, extra_ks=tuple(config.extra_ks), similarity=config.similarity,
                  profile=config.profile, profile_topk=config.profile_topk, convention=config.convention,
                  universe=config.universe, drop_profile_items=config.drop_profile_items,
                  ground_truth=config.ground_truth, seed=config.seed, block_size=config.block_size,
                  block_rows=config.block_rows, chunk_size=config.chunk_size)
