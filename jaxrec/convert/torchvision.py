"""torchvision state dicts (`resnet50`, `vgg19`) -> Flax variables of jaxrec.models, by explicit tables."""

from __future__ import annotations

import re
from typing import Callable, Mapping

import numpy as np

from jaxrec.convert.common import Path, fill_variables, torch_conv, torch_linear
from jaxrec.convert.torch_files import load_state_dict
from jaxrec.errors import InputError
from jaxrec.models.vgg import VGG19_BLOCKS

Rule = tuple[Path, Callable[[np.ndarray], np.ndarray]] | None  # None: a key that carries no weight

_BN = {"weight": ("params", "scale"), "bias": ("params", "bias"), "running_mean": ("batch_stats", "mean"),
       "running_var": ("batch_stats", "var")}


def _identity(x: np.ndarray) -> np.ndarray:
  return x


def _bn_rule(module: tuple[str, ...], field: str) -> Rule:
  if field == "num_batches_tracked":
    return None
  collection, name = _BN[field]
  return (collection, *module, name), _identity


def _resnet50_rule(key: str) -> Rule | bool:
  """The Flax path and transform of one torchvision ResNet50 key; False if the key is unknown."""
  if m := re.fullmatch(r"conv1\.weight", key):
    return ("params", "conv1", "kernel"), torch_conv
  if m := re.fullmatch(r"bn1\.(\w+)", key):
    return _bn_rule(("bn1",), m[1])
  if m := re.fullmatch(r"layer(\d)\.(\d+)\.conv(\d)\.weight", key):
    return ("params", f"layer{m[1]}_{m[2]}", f"conv{m[3]}", "kernel"), torch_conv
  if m := re.fullmatch(r"layer(\d)\.(\d+)\.bn(\d)\.(\w+)", key):
    return _bn_rule((f"layer{m[1]}_{m[2]}", f"bn{m[3]}"), m[4])
  if m := re.fullmatch(r"layer(\d)\.(\d+)\.downsample\.0\.weight", key):
    return ("params", f"layer{m[1]}_{m[2]}", "downsample_conv", "kernel"), torch_conv
  if m := re.fullmatch(r"layer(\d)\.(\d+)\.downsample\.1\.(\w+)", key):
    return _bn_rule((f"layer{m[1]}_{m[2]}", "downsample_bn"), m[3])
  if m := re.fullmatch(r"fc\.(weight|bias)", key):
    return ("params", "fc", "kernel" if m[1] == "weight" else "bias"), torch_linear if m[1] == "weight" else _identity
  return False


def _vgg_fc6(w: np.ndarray) -> np.ndarray:
  """torch flattens pool5 as (C, H, W); the Flax module flattens (H, W, C): permute fc6's inputs once."""
  out, inputs = w.shape
  channels = VGG19_BLOCKS[-1][0]
  side = int(round((inputs / channels) ** 0.5))
  return w.reshape(out, channels, side, side).transpose(2, 3, 1, 0).reshape(inputs, out)


def _vgg19_conv_indices() -> dict[int, str]:
  """torchvision's `features` Sequential index of each conv: conv, ReLU pairs, one MaxPool per block."""
  names, index = {}, 0
  for b, (_, convs) in enumerate(VGG19_BLOCKS):
    for c in range(convs):
      names[index] = f"block{b + 1}_conv{c + 1}"
      index += 2
    index += 1
  return names


_VGG_CONVS = _vgg19_conv_indices()
_VGG_FCS = {0: ("fc6", _vgg_fc6), 3: ("fc7", torch_linear), 6: ("fc8", torch_linear)}


def _vgg19_rule(key: str) -> Rule | bool:
  if (m := re.fullmatch(r"features\.(\d+)\.(weight|bias)", key)) and int(m[1]) in _VGG_CONVS:
    name = _VGG_CONVS[int(m[1])]
    return (("params", name, "kernel"), torch_conv) if m[2] == "weight" else (("params", name, "bias"), _identity)
  if (m := re.fullmatch(r"classifier\.(\d+)\.(weight|bias)", key)) and int(m[1]) in _VGG_FCS:
    name, transform = _VGG_FCS[int(m[1])]
    return (("params", name, "kernel"), transform) if m[2] == "weight" else (("params", name, "bias"), _identity)
  return False


_RULES = {"resnet50": _resnet50_rule, "vgg19": _vgg19_rule}
_TOP = {"resnet50": ("fc",), "vgg19": ("fc6", "fc7", "fc8")}


def convert_state_dict(arch: str, state_dict: Mapping[str, np.ndarray], abstract_variables, *,
                       source: str) -> dict:
  """Flax variables for `arch` from a torchvision state dict. The classifier's keys are dropped when the
  model has no top; any other key without a rule is reported."""
  if arch not in _RULES:
    raise InputError(f"no torchvision table for arch {arch!r}; expected one of {', '.join(_RULES)}")
  has_top = _TOP[arch][0] in abstract_variables["params"]
  converted, unused = {}, []
  for key, value in state_dict.items():
    rule = _RULES[arch](key)
    if rule is False:
      unused.append(key)
    elif rule is not None:
      path, transform = rule
      if not has_top and path[1] in _TOP[arch]:
        continue
      converted[path] = transform(np.asarray(value))
  return fill_variables(abstract_variables, converted, source=source, unused_source_keys=unused)


def load_torchvision(arch: str, path: str, abstract_variables) -> dict:
  return convert_state_dict(arch, load_state_dict(path), abstract_variables, source=path)
