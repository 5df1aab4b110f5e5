"""Shared by the Keras port tests: random weights, both weight-file layouts, the error measure.

Keras is imported inside the functions: each test module sets KERAS_BACKEND before its own import."""

import os

import numpy as np


def randomise(model, rng: np.random.Generator) -> None:
  """Keeps Keras's random kernels; replaces the zero biases and offsets, the unit BN scales and the identity BN
  statistics, so that every converted array changes the output."""
  for variable in model.weights:
    name = variable.path.rsplit("/", 1)[-1]
    if "kernel" in name:  # kernel, depthwise_kernel, pointwise_kernel
      continue
    if name in ("gamma", "moving_variance"):
      value = rng.uniform(0.5, 2.0, variable.shape)
    else:  # bias, beta, moving_mean
      value = rng.normal(0.0, 1.0, variable.shape)
    variable.assign(value.astype(np.float32))


def save_both_layouts(model, folder, name: str) -> dict[str, str]:
  """The model's weights as a legacy HDF5 file and a Keras 3 .weights.h5 file."""
  import h5py
  from keras.src.legacy.saving import legacy_h5_format
  legacy, keras3 = os.path.join(folder, f"{name}.h5"), os.path.join(folder, f"{name}.weights.h5")
  with h5py.File(legacy, "w") as f:
    legacy_h5_format.save_weights_to_hdf5_group(f, model)
  model.save_weights(keras3)
  return {"legacy": legacy, "keras3": keras3}


def relative_error(actual, expected) -> float:
  """max |actual - expected| / max |expected|, in float64."""
  actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
  assert actual.shape == expected.shape
  return float(np.max(np.abs(actual - expected)) / np.max(np.abs(expected)))


def assert_same_tree(a, b) -> None:
  """Two pytrees with the same paths and bit-identical leaves."""
  import jax
  flat_a, flat_b = jax.tree_util.tree_leaves_with_path(a), jax.tree_util.tree_leaves_with_path(b)
  assert [p for p, _ in flat_a] == [p for p, _ in flat_b]
  for (path, x), (_, y) in zip(flat_a, flat_b):
    np.testing.assert_array_equal(x, y, err_msg=str(path))


def keras2_style_copy(original: str, path: str) -> None:
  """A copy of a legacy HDF5 file as Keras 2 wrote them (the published *_tf_kernels.h5 files): names stored
  as byte strings, weight names ending in ':0'."""
  import shutil

  import h5py
  from keras.src.legacy.saving import legacy_h5_format
  shutil.copy(original, path)
  with h5py.File(path, "r+") as f:
    layers = legacy_h5_format.load_attributes_from_hdf5_group(f, "layer_names")
    f.attrs["layer_names"] = np.array([n.encode() for n in layers], dtype="S")
    for layer in layers:
      names = legacy_h5_format.load_attributes_from_hdf5_group(f[layer], "weight_names")
      for name in names:
        f[layer].move(name, name + ":0")
      f[layer].attrs["weight_names"] = np.array([f"{n}:0".encode() for n in names], dtype="S")


def unnamed_keras3_copy(original: str, path: str) -> None:
  """A copy of a .weights.h5 file as Keras 3 versions before the `name` attribute wrote them: a layer known only
  by its class and ordinal."""
  import shutil

  import h5py
  shutil.copy(original, path)
  with h5py.File(path, "r+") as f:
    for group in f["layers"].values():
      if "vars" in group and "name" in group["vars"].attrs:
        del group["vars"].attrs["name"]


def cases_built_on_first_use(tmp_path_factory, make_case):
  """The body of a module fixture: yields get(arch, top), which builds `make_case(arch, top, folder)` once, in a
  folder of its own; the folders (hundreds of MB of weight files) are removed when the module is done."""
  import shutil
  cache, folders = {}, []

  def get(arch: str, top: bool) -> dict:
    if (arch, top) not in cache:
      folders.append(tmp_path_factory.mktemp(f"{arch}_{'top' if top else 'notop'}"))
      cache[arch, top] = make_case(arch, top, folders[-1])
    return cache[arch, top]

  yield get
  for folder in folders:
    shutil.rmtree(folder, ignore_errors=True)
