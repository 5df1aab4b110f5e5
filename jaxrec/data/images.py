"""Image decoding that turns whatever a shop uploads into uint8 RGB, and says which file was bad.

Every mode Pillow opens ends as `[H, W, 3]` uint8: grayscale and bilevel are repeated over the channels,
palette images are expanded, alpha (RGBA, LA, PA, palette transparency) is composited on white (product
photos are shown on white pages, and black would invent a dark border), 16- and 32-bit integer images are
scaled from the 16-bit range to 8 bit, float images are clipped to [0, 255], CMYK and YCbCr are converted.
The EXIF orientation is applied, so phone photos stand upright. Only the first frame of an animation is read.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image, ImageOps

from jaxrec.errors import InputError

_ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")


def decode_image(data: bytes, *, source: str, min_size: int = 8) -> np.ndarray:
  """Decodes encoded image bytes to uint8 RGB [H, W, 3]; `source` names the file in errors."""
  if not data:
    raise InputError(f"{source}: empty file (0 bytes), not an image")
  try:
    with warnings.catch_warnings():
      # A huge image is a bad upload, not a reason to print a warning and use gigabytes.
      warnings.simplefilter("error", Image.DecompressionBombWarning)
      with Image.open(io.BytesIO(data)) as opened:
        opened.load()  # decode now: truncated data fails here, not later
        image = _upright(opened)
        rgb = _to_rgb(image, source)
  except InputError:
    raise
  except Image.DecompressionBombWarning as e:
    raise InputError(f"{source}: image too large to decode safely ({e})") from None
  except (OSError, SyntaxError, ValueError, TypeError, EOFError, Image.DecompressionBombError) as e:
    # PIL reports unknown formats, truncation and corrupt data with these.
    raise InputError(f"{source}: not a readable image ({type(e).__name__}: {e})") from None
  height, width = rgb.shape[:2]
  if min(height, width) < min_size:
    raise InputError(f"{source}: image is {width}x{height} pixels; each side must be at least {min_size}")
  return rgb


def _upright(image: Image.Image) -> Image.Image:
  """Applies the EXIF orientation; a broken EXIF block is ignored rather than losing the image."""
  try:
    return ImageOps.exif_transpose(image) or image
  except Exception:  # pylint: disable=broad-except
    return image


def _to_rgb(image: Image.Image, source: str) -> np.ndarray:
  mode = image.mode
  if mode == "RGB":
    return np.asarray(image, dtype=np.uint8)
  if mode == "P" and "transparency" in image.info:
    image, mode = image.convert("RGBA"), "RGBA"
  if mode in _ALPHA_MODES:
    rgba = image.convert("RGBA")
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return np.asarray(Image.alpha_composite(white, rgba).convert("RGB"), dtype=np.uint8)
  if mode.startswith("I"):  # I;16, I;16B, I;16L, I;16N (16-bit) and I (32-bit, 16-bit data in practice)
    values = np.asarray(image).astype(np.float64)
    gray = np.clip(np.round(values / 257.0), 0, 255).astype(np.uint8)  # 65535 / 255 = 257
    return np.repeat(gray[..., None], 3, axis=-1)
  if mode == "F":
    gray = np.clip(np.round(np.asarray(image, dtype=np.float64)), 0, 255).astype(np.uint8)
    return np.repeat(gray[..., None], 3, axis=-1)
  try:
    return np.asarray(image.convert("RGB"), dtype=np.uint8)  # L, 1, P, CMYK, YCbCr, HSV, ...
  except ValueError:
    raise InputError(f"{source}: image mode {mode!r} cannot be converted to RGB") from None


def resize(image: np.ndarray, size: int) -> np.ndarray:
  """Bilinear resize of the whole image to [size, size, 3] uint8.

  The aspect ratio is not kept: the image is squashed (or stretched) to a square, nothing is cropped away,
  so a product at the edge of a wide photo is still in the picture.
  """
  image = np.asarray(image)
  if image.ndim != 3 or image.shape[-1] != 3 or image.dtype != np.uint8:
    raise ValueError(f"expected a uint8 [H, W, 3] image, got {image.dtype} {list(image.shape)}")
  if size < 1:
    raise ValueError(f"size must be positive, got {size}")
  if image.shape[:2] == (size, size):
    return image
  resized = Image.fromarray(image).resize((size, size), Image.Resampling.BILINEAR)
  return np.asarray(resized, dtype=np.uint8)
