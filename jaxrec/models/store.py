"""A converted or exported backbone on disk: an orbax checkpoint of its variables beside `backbone.json`
(arch, layout, include_top, preprocessing, the source file and its sha256).

The folder is written under a temporary name and renamed at the end, so a failed or killed conversion
never leaves a half-written backbone where a good one is expected.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from jaxrec.errors import InputError
from jaxrec.models.registry import Backbone, get_backbone, with_representation

METADATA = "backbone.json"
VARIABLES = "variables"


def sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    while block := f.read(chunk):
      digest.update(block)
  return digest.hexdigest()


def save_backbone(directory: str | os.PathLike, backbone: Backbone, variables: Any, *,
                  source: str | None = None, overwrite: bool = False, **extra: Any) -> None:
  directory = os.path.abspath(os.fspath(directory))
  if os.path.exists(directory) and not overwrite:
    raise InputError(f"{directory} already exists; choose another output or allow overwriting")
  parent = os.path.dirname(directory)
  os.makedirs(parent, exist_ok=True)
  tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(directory)}.", dir=parent)
  try:
    # Written by this process alone (multi-host runs export from process 0): no barrier with the others.
    checkpointer = ocp.StandardCheckpointer(multiprocessing_options=ocp.options.MultiprocessingOptions(
        primary_host=jax.process_index(), active_processes={jax.process_index()}))
    checkpointer.save(os.path.join(tmp, VARIABLES), jax.tree.map(np.asarray, variables))
    checkpointer.wait_until_finished()
    metadata = {
        "arch": backbone.arch, "layout": backbone.layout, "include_top": "logits" in backbone.features,
        "preprocessing": dataclasses.asdict(backbone.preprocessing), "default_feature": backbone.default_feature,
        "source": source, "source_sha256": sha256(source) if source and os.path.isfile(source) else None, **extra,
    }
    with open(os.path.join(tmp, METADATA), "w") as f:
      json.dump(metadata, f, indent=2, sort_keys=True)
    os.chmod(tmp, 0o755)  # mkdtemp makes it private
    if os.path.exists(directory):
      shutil.rmtree(directory)
    os.replace(tmp, directory)
  finally:
    if os.path.exists(tmp):
      shutil.rmtree(tmp)


def load_backbone(directory: str | os.PathLike) -> tuple[Backbone, Any, dict]:
  """(backbone, variables as numpy pytrees, metadata) of a folder written by `save_backbone`."""
  directory = os.path.abspath(os.fspath(directory))
  meta_path = os.path.join(directory, METADATA)
  if not os.path.isfile(meta_path):
    raise InputError(f"{directory}: not a backbone folder (no {METADATA})")
  with open(meta_path) as f:
    metadata = json.load(f)
  backbone = get_backbone(metadata["arch"], metadata["layout"], include_top=metadata["include_top"])
  shared = metadata.get("representation")  # a fine-tuned model's export (launch.train)
  if shared:
    backbone = with_representation(backbone, shared["base_feature"], tuple(shared["hidden"]),
                                   metadata.get("default_feature", "representation"))
  elif metadata.get("default_feature") in backbone.features:
    backbone = dataclasses.replace(backbone, default_feature=metadata["default_feature"])
  if metadata.get("image_size"):  # the size it was fine-tuned at: extraction uses it by default
    backbone = dataclasses.replace(
        backbone, preprocessing=dataclasses.replace(backbone.preprocessing, size=int(metadata["image_size"])))
  target = backbone.abstract_variables()
  try:
    variables = ocp.StandardCheckpointer().restore(os.path.join(directory, VARIABLES), target)
  except Exception as e:  # orbax raises several types for a tree or shape mismatch
    raise InputError(f"{directory}: the checkpoint does not fit {metadata['arch']}/{metadata['layout']} "
                     f"({type(e).__name__}: {e})") from e
  return backbone, variables, metadata
