"""Pictures: recommendations per user (the profile's images on the left, the top recommendations on the
right, ground-truth hits outlined, as in Hnot 2018, Fig. 2) and bar charts of a results table's metrics."""

from __future__ import annotations

from typing import Callable, Mapping, Sequence

import numpy as np
from PIL import Image, ImageDraw


def recommendation_grid(rows: Sequence[tuple[Sequence[str], Sequence[str], set]],
                        image_of: Callable[[str], np.ndarray], *, tile: int = 64, gap: int = 12,
                        hit_color=(220, 30, 30)) -> Image.Image:
  """rows: (profile item ids, recommended item ids in rank order, ground-truth ids) per user.
  image_of: item id -> uint8 RGB image of any size."""
  width = max(len(p) for p, _, _ in rows) + max(len(r) for _, r, _ in rows)
  canvas = Image.new("RGB", (width * tile + gap + 2 * gap, len(rows) * (tile + gap) + gap), "white")
  draw = ImageDraw.Draw(canvas)
  max_profile = max(len(p) for p, _, _ in rows)
  for r, (profile, recommended, truth) in enumerate(rows):
    y = gap + r * (tile + gap)
    for c, item in enumerate(profile):
      canvas.paste(_tile(image_of(item), tile), (gap + c * tile, y))
    x0 = gap + max_profile * tile + gap
    draw.line([(x0 - gap // 2, y), (x0 - gap // 2, y + tile)], fill=(128, 128, 128), width=2)
    for c, item in enumerate(recommended):
      x = x0 + c * tile
      canvas.paste(_tile(image_of(item), tile), (x, y))
      if item in truth:
        draw.rectangle([x, y, x + tile - 1, y + tile - 1], outline=hit_color, width=4)
  return canvas


def _tile(image: np.ndarray, tile: int) -> Image.Image:
  image = np.asarray(image, np.uint8)
  if image.ndim == 2:
    image = np.stack([image] * 3, axis=-1)
  framed = Image.new("RGB", (tile, tile), "white")  # a 2-pixel white margin keeps outlines readable
  framed.paste(Image.fromarray(image).resize((tile - 4, tile - 4), Image.BILINEAR), (2, 2))
  return framed


def metric_bars(rows: Sequence[tuple[str, Mapping[str, float]]], k: int, path: str) -> None:
  """One panel per metric (R, P, F1, MAP, MRR, nDCG @k), one horizontal bar per row, written as PNG."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  from jaxrec import io_utils
  from jaxrec.metrics import METRICS
  from jaxrec.report import HEADERS

  names = [name for name, _ in rows][::-1]  # first row on top
  fig, axes = plt.subplots(1, len(METRICS), figsize=(3.2 * len(METRICS), 0.35 * len(rows) + 1.5), sharey=True)
  for ax, metric in zip(axes, METRICS):
    values = [m[f"{metric}@{k}"] for _, m in rows][::-1]
    ax.barh(range(len(rows)), values, color=["#999999" if n == "Random" else "#3b6ea8" for n in names])
    ax.set_title(f"{HEADERS[metric]}@{k}")
    ax.set_yticks(range(len(rows)), names, fontsize=8)
    ax.tick_params(axis="x", labelsize=7)
    ax.xaxis.set_major_locator(plt.MaxNLocator(3))  # small values: few ticks, or their labels overlap
  fig.tight_layout()
  with io_utils.atomic_path(path) as tmp:
    fig.savefig(tmp, format="png", dpi=100)
  plt.close(fig)
