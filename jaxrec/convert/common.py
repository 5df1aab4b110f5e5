"""Filling a Flax variables pytree from converted arrays, with one loud error listing every key problem."""

from __future__ import annotations

from typing import Any, Iterable, Mapping

import flax
import numpy as np

from jaxrec.errors import InputError

Path = tuple[str, ...]  # ('params', 'layer1_0', 'conv1', 'kernel')


class ConversionError(InputError):
  """A weights file does not fit the architecture: the message lists missing, unexpected and wrong-shape
  keys."""


def fill_variables(abstract: Any, converted: Mapping[Path, np.ndarray], *, source: str,
                   unused_source_keys: Iterable[str] = ()) -> dict:
  """Checks `converted` against the expected shapes in `abstract` (a pytree of ShapeDtypeStructs from
  `Backbone.abstract_variables`) and returns the variables as numpy arrays.

  Raises one ConversionError naming every Flax variable without a value, every converted value without a
  variable, every wrong shape, and every key of the source file that no table used.
  """
  expected = flax.traverse_util.flatten_dict(flax.core.unfreeze(abstract))
  missing = sorted("/".join(p) for p in expected if p not in converted)
  unexpected = sorted("/".join(p) for p in converted if p not in expected)
  wrong = sorted(f"{'/'.join(p)}: file {tuple(converted[p].shape)} vs model {tuple(expected[p].shape)}"
                 for p in expected if p in converted and tuple(converted[p].shape) != tuple(expected[p].shape))
  unused = sorted(unused_source_keys)
  if missing or unexpected or wrong or unused:
    parts = [f"{source}: the weights do not fit the model"]
    for title, items in (("missing in the file", missing), ("no such model variable", unexpected),
                         ("wrong shape", wrong), ("unused keys of the file", unused)):
      if items:  # every key, not a sample: the full diff is what finds a layout mix-up
        parts.append(f"{title} ({len(items)}): " + ", ".join(items))
    raise ConversionError("\n  ".join(parts))
  return flax.traverse_util.unflatten_dict(
      {p: np.asarray(converted[p], dtype=expected[p].dtype) for p in expected})


def torch_conv(w: np.ndarray) -> np.ndarray:
  """torch OIHW -> Flax HWIO."""
  return np.transpose(w, (2, 3, 1, 0))


def torch_linear(w: np.ndarray) -> np.ndarray:
  """torch [out, in] -> Flax [in, out]."""
  return np.transpose(w)
