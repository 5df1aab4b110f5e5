"""keras.applications weight files (ResNet50, VGG19, NASNetLarge, InceptionV3, InceptionResNetV2) -> the Flax
variables of the `keras` layouts.

Two file layouts hold the same arrays:

* legacy HDF5 (`resnet50_weights_tf_dim_ordering_tf_kernels[_notop].h5`, Keras 2 `save_weights('x.h5')`): a
  root attribute `layer_names`; one group per layer whose attribute `weight_names` lists dataset paths inside
  it, such as `conv1_conv/kernel` (Keras 2: `conv1_conv/kernel:0`).
* Keras 3 (`save_weights('x.weights.h5')`): `layers/<snake_case class>[_<k>]/vars/{0, 1, ...}`, the datasets
  in the layer's variable order; recent Keras 3 versions store the layer name in the `name` attribute of
  `vars`. Without it the layer is known only by its class and ordinal, resolved per arch in convert_keras.

Layers that Keras named automatically (`conv2d_<n>`, session-dependent) are resolved by position in either
layout (`_resolve_auto_names`).

Keras kernels are already HWIO / [in, out], so no array is transposed; only names change.
"""

from __future__ import annotations

import os
import re
from typing import Any, Mapping

import h5py
import ml_dtypes
import numpy as np

from jaxrec.convert.common import ConversionError, Path, fill_variables
from jaxrec.convert.keras_inception import inception_resnet_v2_table, inception_v3_table
from jaxrec.convert.keras_nasnet import nasnet_large_table
from jaxrec.errors import InputError
from jaxrec.models.vgg import VGG19_BLOCKS

Weights = dict[str, dict[str, np.ndarray]]  # layer name -> {weight name ('kernel', 'gamma', ...) -> array}

# Variable order of a layer in .weights.h5 files: trainable then non-trainable, in creation order.
_KERAS3_VARS = {
    "conv2d": ("kernel", "bias"),
    "separable_conv2d": ("depthwise_kernel", "pointwise_kernel", "bias"),
    "dense": ("kernel", "bias"),
    "batch_normalization": ("gamma", "beta", "moving_mean", "moving_variance"),
}
# kind -> (Keras class as snake_case, {Keras weight -> (Flax collection, Flax leaf)})
_KINDS = {
    "conv": ("conv2d", {"kernel": ("params", "kernel"), "bias": ("params", "bias")}),
    "dense": ("dense", {"kernel": ("params", "kernel"), "bias": ("params", "bias")}),
    "sepconv": ("separable_conv2d", {"depthwise_kernel": ("params", "depthwise_kernel"),
                                     "pointwise_kernel": ("params", "pointwise_kernel")}),
    "bn": ("batch_normalization", {"gamma": ("params", "scale"), "beta": ("params", "bias"),
                                   "moving_mean": ("batch_stats", "mean"),
                                   "moving_variance": ("batch_stats", "var")}),
}
_RESNET50_STAGES = (3, 4, 6, 3)  # bottlenecks per stage


def read_keras_weights(path: str | os.PathLike) -> Weights:
  """Reads either layout. Raises InputError naming the file if it is not HDF5, truncated, or neither layout."""
  path = os.fspath(path)
  try:
    with h5py.File(path, "r") as f:
      # A legacy full-model file (model.save('x.h5')) keeps the weights under model_weights.
      root = f["model_weights"] if "model_weights" in f and _attr_list(f["model_weights"], "layer_names") else f
      if _attr_list(root, "layer_names"):
        return _read_legacy(root, path)
      if isinstance(f.get("layers"), h5py.Group):
        return _read_keras3(f["layers"], path)
  except OSError as e:  # h5py's error for a missing, non-HDF5 or truncated file
    raise InputError(f"{path}: not a readable HDF5 file ({e})") from e
  raise InputError(f"{path}: neither a legacy Keras HDF5 weights file (no 'layer_names' attribute) nor a Keras 3 "
                   ".weights.h5 file (no 'layers' group)")


def _attr_list(group: h5py.Group, name: str) -> list[str]:
  """A string-list attribute, which Keras splits into name0, name1, ... when it exceeds HDF5's header limit."""
  if name in group.attrs:
    chunks = [group.attrs[name]]
  else:
    chunks = []
    while f"{name}{len(chunks)}" in group.attrs:
      chunks.append(group.attrs[f"{name}{len(chunks)}"])
  return [s.decode("utf8") if isinstance(s, bytes) else str(s) for chunk in chunks for s in chunk]


def _array(dataset: h5py.Dataset) -> np.ndarray:
  value = np.asarray(dataset[()])
  if dataset.attrs.get("dtype") in ("bfloat16", b"bfloat16"):  # Keras 3 stores bfloat16 as opaque 2-byte values
    value = value.view(ml_dtypes.bfloat16)
  return value


def _read_legacy(root: h5py.Group, path: str) -> Weights:
  weights: Weights = {}
  for layer in _attr_list(root, "layer_names"):
    group = root.get(layer)
    if not isinstance(group, h5py.Group):
      raise InputError(f"{path}: layer {layer!r} is listed in 'layer_names' but has no group")
    arrays = {}
    for name in _attr_list(group, "weight_names"):
      key = re.sub(r":\d+$", "", name.rsplit("/", 1)[-1])  # 'conv1_conv/kernel:0' -> 'kernel'
      if not isinstance(group.get(name), h5py.Dataset):
        raise InputError(f"{path}: weight {name!r} of layer {layer!r} is listed but not stored")
      if key in arrays:
        raise InputError(f"{path}: layer {layer!r} has two weights named {key!r}")
      arrays[key] = _array(group[name])
    if arrays:
      weights[layer] = arrays
  return weights


def _read_keras3(layers: h5py.Group, path: str) -> Weights:
  weights: Weights = {}

  def visit(name: str, obj: Any) -> None:
    if not (isinstance(obj, h5py.Group) and name.rsplit("/", 1)[-1] == "vars"):
      return
    datasets = sorted((k for k in obj if isinstance(obj[k], h5py.Dataset)), key=lambda k: (len(k), k))
    if not datasets:
      return
    owner = "layers/" + name[:-len("/vars")]  # 'layers/conv2d_7'
    layer = obj.attrs.get("name", owner)
    layer = layer.decode("utf8") if isinstance(layer, bytes) else str(layer)
    # Map indices to names only when the count fits the class; otherwise keep the indices, so a surprise
    # shows up as missing and unused keys instead of a silent mix-up.
    names = _KERAS3_VARS.get(_keras3_class(owner), ())
    if names[-1:] == ("bias",) and len(datasets) == len(names) - 1:
      names = names[:-1]  # built with use_bias=False (NASNet's convs)
    if _keras3_class(owner) == "batch_normalization" and len(datasets) == 3:
      names = names[1:]  # scale=False, no gamma (Inception's conv2d_bn)
    keys = names if len(names) == len(datasets) else datasets
    found.append((owner, layer, {key: _array(obj[d]) for key, d in zip(keys, datasets)}))

  found: list[tuple[str, str, dict[str, np.ndarray]]] = []
  layers.visititems(visit)
  # HDF5 lists conv2d_10 before conv2d_2: restore the ordinals, which _resolve_auto_names relies on.
  found.sort(key=lambda item: [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", item[0])])
  for _, layer, arrays in found:
    if layer in weights:
      raise InputError(f"{path}: two layers named {layer!r}")
    weights[layer] = arrays
  return weights


def _keras3_class(group_path: str) -> str:
  """'layers/batch_normalization_13' -> 'batch_normalization'."""
  return re.sub(r"_\d+$", "", group_path.rsplit("/", 1)[-1])


# A table row: (Keras layer name, Flax module path, kind, part of the classifier head). The rows follow
# Keras's `model.layers` order, which numbers the layer groups of .weights.h5 files per class.
Row = tuple[str, Path, str, bool]


def _resnet50_table() -> list[Row]:
  rows: list[Row] = [("conv1_conv", ("conv1",), "conv", False), ("conv1_bn", ("bn1",), "bn", False)]
  for stage, blocks in enumerate(_RESNET50_STAGES):
    for block in range(blocks):
      keras, flax = f"conv{stage + 2}_block{block + 1}", f"layer{stage + 1}_{block}"
      # Keras orders the shortcut (branch 0) of a downsampling block between branches 2 and 3.
      for k in (1, 2, 0, 3) if block == 0 else (1, 2, 3):
        conv, bn = ("downsample_conv", "downsample_bn") if k == 0 else (f"conv{k}", f"bn{k}")
        rows += [(f"{keras}_{k}_conv", (flax, conv), "conv", False), (f"{keras}_{k}_bn", (flax, bn), "bn", False)]
  return rows + [("predictions", ("fc",), "dense", True)]


def _vgg19_table() -> list[Row]:
  rows: list[Row] = []
  for b, (_, convs) in enumerate(VGG19_BLOCKS):
    for c in range(convs):
      name = f"block{b + 1}_conv{c + 1}"  # the Flax module has the Keras name
      rows.append((name, (name,), "conv", False))
  return rows + [("fc1", ("fc6",), "dense", True), ("fc2", ("fc7",), "dense", True),
                 ("predictions", ("fc8",), "dense", True)]


TABLES = {"resnet50": _resnet50_table, "vgg19": _vgg19_table, "nasnet_large": nasnet_large_table,
          "inception_v3": inception_v3_table, "inception_resnet_v2": inception_resnet_v2_table}


def _resolve_unnamed(weights: Weights, table: list[Row]) -> Weights:
  """Names the top-level layers of a .weights.h5 file without name attributes: `layers/conv2d_7` is the
  8th Conv2D of Keras's layer order. Keys that do not resolve stay as they are and show up as unused."""
  by_class: dict[str, list[str]] = {}
  for name, _, kind, _ in table:
    by_class.setdefault(_KINDS[kind][0], []).append(name)
  resolved: Weights = {}
  for key, arrays in weights.items():
    match = re.fullmatch(r"layers/([a-z0-9_]+?)(?:_(\d+))?", key)
    if match:
      names, k = by_class.get(match[1], []), int(match[2] or 0)
      if k < len(names) and names[k] not in weights:
        key = names[k]
    resolved[key] = arrays
  return resolved


# Names Keras makes up for layers built without one: `conv2d_95` in a Keras 3 session that made 95 Conv2D layers
# before, `conv2d_1` for the first one in Keras 2 (the published Inception files), `batch_normalization_v1_3`.
_AUTO_NAME = re.compile(r"(conv2d|dense|batch_normalization)(?:_v\d+)?(?:_\d+)?")


def _layer_class(name: str, arrays: Mapping[str, np.ndarray]) -> str | None:
  auto = _AUTO_NAME.fullmatch(name)
  if auto:
    return auto[1]
  if "moving_mean" in arrays:
    return "batch_normalization"
  return {4: "conv2d", 2: "dense"}.get(getattr(arrays.get("kernel"), "ndim", None))


def _resolve_auto_names(weights: Weights, table: list[Row]) -> Weights:
  """Names the automatically named layers (InceptionV3's `conv2d_<n>`, `batch_normalization_<n>`) by position.

  Their number <n> depends on what the Keras session built before, so it differs between files of one model; their
  position does not: both layouts keep Keras's `model.layers` order (legacy: `layer_names`, which Keras itself reads
  positionally; Keras 3: the ordinal of `layers/conv2d_<k>`), the order of the table's rows. So the k-th Conv2D of
  the file, named or not, is the table's k-th conv row. Only automatic names are replaced: a named layer that is out
  of place (or from another model) still shows up as missing and unused keys."""
  by_class: dict[str, list[str]] = {}
  for name, _, kind, _ in table:
    by_class.setdefault(_KINDS[kind][0], []).append(name)
  kept = {key for key in weights if not _AUTO_NAME.fullmatch(key)}
  counts: dict[str, int] = {}
  resolved: Weights = {}
  for key, arrays in weights.items():
    layer_class = _layer_class(key, arrays)
    k = counts[layer_class] = counts.get(layer_class, -1) + 1
    names = by_class.get(layer_class, [])
    if _AUTO_NAME.fullmatch(key) and k < len(names) and names[k] not in kept and names[k] not in resolved:
      key = names[k]
    elif key in resolved:  # an automatic name beyond the table that happens to equal a resolved one
      key = f"{key} (the file's {layer_class} #{k})"
    resolved[key] = arrays
  return resolved


def convert_keras(arch: str, weights: Mapping[str, Mapping[str, np.ndarray]], abstract_variables: Any, *,
                  source: str) -> dict:
  """`read_keras_weights` output -> Flax variables for `get_backbone(arch, 'keras', include_top)`.

  A file with the classifier also serves a backbone built with include_top=False (the classifier is dropped);
  a _notop file asked for a backbone with the classifier raises ConversionError listing the missing variables.
  """
  if arch not in TABLES:
    raise InputError(f"no Keras converter for arch {arch!r}; expected one of {', '.join(TABLES)}")
  table = TABLES[arch]()
  weights = _resolve_auto_names(_resolve_unnamed(dict(weights), table), table)
  head = [name for name, _, _, top in table if top]
  model_has_head = any(flax[0] in abstract_variables["params"] for _, flax, _, top in table if top)
  converted: dict[Path, np.ndarray] = {}
  used = set()
  for name, flax, kind, top in table:
    if name not in weights:
      continue
    if top and not model_has_head:
      used.update((name, w) for w in weights[name])
      continue
    for weight, (collection, leaf) in _KINDS[kind][1].items():
      if weight in weights[name]:
        converted[(collection, *flax, leaf)] = weights[name][weight]
        used.add((name, weight))
  unused = [f"{layer}/{w}" for layer, arrays in weights.items() for w in arrays if (layer, w) not in used]
  try:
    return fill_variables(abstract_variables, converted, source=source, unused_source_keys=unused)
  except ConversionError as e:
    if model_has_head and not any(name in weights for name in head):
      raise ConversionError(f"{e}\n  the file has no classifier layers ({', '.join(head)}), like the Keras _notop "
                            "files: build the backbone with include_top=False") from None
    raise


def load_keras(arch: str, path: str | os.PathLike, abstract_variables: Any) -> dict:
  """Reads a Keras weights file (either layout) and converts it for `get_backbone(arch, 'keras', ...)`."""
  return convert_keras(arch, read_keras_weights(path), abstract_variables, source=os.fspath(path))
