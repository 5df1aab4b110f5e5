"""Reads PyTorch checkpoint files (`torch.save` of a state dict) into numpy, without importing torch.

Both formats torch writes:
* zip (torch >= 1.6): `<name>/data.pkl` pickles the object; tensor storages live in `<name>/data/<key>`.
* legacy (older torch, or `_use_new_zipfile_serialization=False`): a sequence of pickles (magic number,
  protocol version, system info, the object, the list of storage keys), then each storage as an int64
  element count followed by its raw bytes.

The pickle is read with an unpickler that only knows the few classes a state dict needs (ordered dicts,
tensor and parameter rebuilders, storage types), so a foreign pickle fails instead of running code.
"""

from __future__ import annotations

import collections
import os
import pickle
import struct
import zipfile
from typing import Any

import ml_dtypes
import numpy as np

from jaxrec.errors import InputError

_DTYPES = {
    "FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
    "BFloat16Storage": ml_dtypes.bfloat16, "LongStorage": np.int64, "IntStorage": np.int32,
    "ShortStorage": np.int16, "CharStorage": np.int8, "ByteStorage": np.uint8, "BoolStorage": np.bool_,
}
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C


class _StorageType:
  def __init__(self, name: str):
    self.dtype = np.dtype(_DTYPES[name])


class _Storage:
  """A flat typed buffer, filled when its bytes are read."""

  def __init__(self, dtype: np.dtype, key: str, numel: int):
    self.dtype, self.key, self.numel = dtype, key, numel
    self.data: np.ndarray | None = None


class _LazyTensor:
  def __init__(self, storage: _Storage, offset: int, size, stride):
    self.storage, self.offset, self.size, self.stride = storage, offset, tuple(size), tuple(stride)

  def materialize(self) -> np.ndarray:
    data = self.storage.data
    if not self.size:
      return np.array(data[self.offset])
    strides = tuple(s * data.itemsize for s in self.stride)
    view = np.lib.stride_tricks.as_strided(data[self.offset:], shape=self.size, strides=strides)
    return np.array(view)  # a contiguous copy that owns its memory


def _rebuild_tensor(storage, storage_offset, size, stride, *unused):
  return _LazyTensor(storage, storage_offset, size, stride)


def _rebuild_parameter(data, *unused):
  return data


class _Unpickler(pickle.Unpickler):
  def __init__(self, file, path: str):
    super().__init__(file)
    self.path = path
    self.storages: dict[str, _Storage] = {}

  def find_class(self, module: str, name: str) -> Any:
    if (module, name) == ("collections", "OrderedDict"):
      return collections.OrderedDict
    if module == "torch._utils" and name in ("_rebuild_tensor_v2", "_rebuild_tensor"):
      return _rebuild_tensor
    if module == "torch._utils" and name == "_rebuild_parameter":
      return _rebuild_parameter
    if module == "torch" and name in _DTYPES:
      return _StorageType(name)
    raise InputError(f"{self.path}: unsupported object {module}.{name} in the pickle; expected a state dict "
                     "of tensors")

  def persistent_load(self, pid):
    if not (isinstance(pid, tuple) and pid and pid[0] == "storage"):
      raise InputError(f"{self.path}: unsupported persistent id {pid!r}")
    storage_type, key, _, numel = pid[1:5]
    if len(pid) > 5 and pid[5] is not None:
      raise InputError(f"{self.path}: storage views (very old torch files) are not supported")
    if not isinstance(storage_type, _StorageType):
      raise InputError(f"{self.path}: unsupported storage type {storage_type!r}")
    key = str(key)
    if key not in self.storages:
      self.storages[key] = _Storage(storage_type.dtype, key, int(numel))
    return self.storages[key]


def _materialize(obj: Any) -> Any:
  if isinstance(obj, _LazyTensor):
    return obj.materialize()
  if isinstance(obj, dict):
    return type(obj)((k, _materialize(v)) for k, v in obj.items())
  if isinstance(obj, (list, tuple)):
    return type(obj)(_materialize(v) for v in obj)
  return obj


def _load_zip(path: str) -> Any:
  with zipfile.ZipFile(path) as archive:
    names = archive.namelist()
    pkl = [n for n in names if n.endswith("data.pkl")]
    if not pkl:
      raise InputError(f"{path}: a zip file without data.pkl is not a torch save")
    prefix = pkl[0][:-len("data.pkl")]
    byteorder = archive.read(prefix + "byteorder").decode() if prefix + "byteorder" in names else "little"
    with archive.open(pkl[0]) as f:
      unpickler = _Unpickler(f, path)
      obj = unpickler.load()
    for key, storage in unpickler.storages.items():
      raw = archive.read(f"{prefix}data/{key}")
      dtype = storage.dtype.newbyteorder("<" if byteorder == "little" else ">")
      storage.data = np.frombuffer(raw, dtype=dtype, count=storage.numel)
  return obj


def _load_legacy(path: str) -> Any:
  with open(path, "rb") as f:
    if pickle.load(f) != _LEGACY_MAGIC:
      raise InputError(f"{path}: not a torch save (bad magic number)")
    pickle.load(f)  # protocol version
    sys_info = pickle.load(f)
    if not sys_info.get("little_endian", True):
      raise InputError(f"{path}: big-endian torch files are not supported")
    unpickler = _Unpickler(f, path)
    obj = unpickler.load()
    for key in pickle.load(f):
      storage = unpickler.storages[str(key)]
      (numel,) = struct.unpack("<q", f.read(8))
      raw = f.read(numel * storage.dtype.itemsize)
      if len(raw) != numel * storage.dtype.itemsize:
        raise InputError(f"{path}: truncated (storage {key} ends early)")
      storage.data = np.frombuffer(raw, dtype=storage.dtype, count=numel)
  return obj


def load_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
  """{name: numpy array} from a torch.save'd state dict (or a dict holding one under 'state_dict')."""
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise InputError(f"{path}: weights file not found")
  try:
    obj = _load_zip(path) if zipfile.is_zipfile(path) else _load_legacy(path)
  except InputError:
    raise
  except Exception as e:  # truncated or foreign files fail deep inside pickle/zipfile/struct
    raise InputError(f"{path}: not a readable torch file ({type(e).__name__}: {e})") from e
  obj = _materialize(obj)
  if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
    obj = obj["state_dict"]
  if not isinstance(obj, dict) or not all(isinstance(v, np.ndarray) for v in obj.values()):
    raise InputError(f"{path}: expected a state dict of tensors, got {type(obj).__name__}")
  return dict(obj)
