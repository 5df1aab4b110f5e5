"""Pictures of recommendations: per user, the profile's images on the left and the top recommendations on
the right, ground-truth hits outlined (as in Hnot 2018, Fig. 2)."""

from __future__ import annotations

from typing import Callable, Sequence

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
