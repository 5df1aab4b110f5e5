"""Metrics -> tables in the paper's format (R@k P@k F1@k MAP@k MRR@k nDCG@k), as text, markdown and CSV."""

from __future__ import annotations

from typing import Mapping, Sequence

from jaxrec.metrics import METRICS

HEADERS = {"recall": "R", "precision": "P", "f1": "F1", "map": "MAP", "mrr": "MRR", "ndcg": "nDCG"}


def _fmt(value: float) -> str:
  text = f"{value:.4f}"
  return text[1:] if text.startswith("0.") else text  # the paper writes .0172


def columns(k: int) -> list[str]:
  return [f"{HEADERS[m]}@{k}" for m in METRICS]


def row_values(metrics: Mapping[str, float], k: int, *, by_user: bool = False) -> list[str]:
  suffix = "_by_user" if by_user else ""
  return [_fmt(metrics[f"{m}@{k}{suffix}"]) for m in METRICS]


def text_table(rows: Sequence[tuple[str, Mapping[str, float]]], k: int, *, by_user: bool = False) -> str:
  width = max([len("embedding")] + [len(name) for name, _ in rows])
  lines = [f"{'embedding':<{width}}  " + "  ".join(f"{c:>8}" for c in columns(k))]
  for name, metrics in rows:
    lines.append(f"{name:<{width}}  " + "  ".join(f"{v:>8}" for v in row_values(metrics, k, by_user=by_user)))
  return "\n".join(lines)


def markdown_table(rows: Sequence[tuple[str, Mapping[str, float]]], k: int, *, by_user: bool = False) -> str:
  lines = ["| embedding | " + " | ".join(columns(k)) + " |", "|---" * (len(METRICS) + 1) + "|"]
  for name, metrics in rows:
    lines.append(f"| {name} | " + " | ".join(row_values(metrics, k, by_user=by_user)) + " |")
  return "\n".join(lines) + "\n"


def csv_table(rows: Sequence[tuple[str, Mapping[str, float]]], k: int) -> str:
  keys = [f"{m}@{k}" for m in METRICS]
  lines = ["embedding," + ",".join(keys + [f"{key}_by_user" for key in keys])]
  for name, metrics in rows:
    values = [f"{metrics[key]:.6f}" for key in keys] + [f"{metrics[key + '_by_user']:.6f}" for key in keys]
    lines.append(f"{name}," + ",".join(values))
  return "\n".join(lines) + "\n"
