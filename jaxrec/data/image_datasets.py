"""Item images as TFDS datasets stored in array_record, for random access through `tfds.data_source` + grain.

Four builders, each yielding `{'item_id': str, 'image': RGB image, ...classes}`:

* `ShopFolder`: a shop's own folder with `items.csv` (columns `item_id`, `image` = path relative to the
  folder, optional `label` or `category`; `upload_time` and other columns are ignored). Rows whose image is
  empty, missing, unreadable or too small are skipped and counted (metadata `skipped`), or are fatal with
  `strict=True`. Duplicate item ids are always fatal.
* `FashionMnist`: the IDX files of the Debian package `dataset-fashion-mnist`, optionally only the first N
  images of each split.
* `OmniArt`: `omniart_metadata.csv` + images; artist, artwork type, creation year as in del Rio et al. 2018
  (complete rows, artists and types with >= `min_count` images, 70/20/10 split by a seeded id hash).
* `DeepFashion`: the Category and Attribute Prediction Benchmark's list files + images; the categories
  that have images (46 of 50), official train/val/test partition.

Every stored image is re-encoded from `images.decode_image`, so reading never meets a CMYK, 16-bit or
broken file. Nothing here imports TensorFlow: images go to TFDS as encoded bytes and come back through PIL.
"""

from __future__ import annotations

import collections
import gzip
import hashlib
import io
import os
import shutil
import struct
import subprocess
import zlib
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import tensorflow_datasets as tfds
from absl import logging
from PIL import Image

from jaxrec.data import images
from jaxrec.data.purchase_logs import _read_csv, _required
from jaxrec.errors import InputError

FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist/"
FASHION_MNIST_PACKAGE = "dataset-fashion-mnist"
FASHION_MNIST_CLASSES = ("t-shirt/top", "trouser", "pullover", "dress", "coat", "sandal", "shirt",
                         "sneaker", "bag", "ankle boot")
DATASETS = ("shop_folder", "fashion_mnist", "omniart", "deepfashion")
MIN_IMAGE_SIZE = 8

_JPEG_QUALITY = 95  # shop photos: near-lossless, a fraction of PNG's size


def _encode(image: np.ndarray, fmt: str) -> bytes:
  buffer = io.BytesIO()
  if fmt == "jpeg":
    Image.fromarray(image).save(buffer, format="JPEG", quality=_JPEG_QUALITY)
  else:
    Image.fromarray(image).save(buffer, format="PNG")
  return buffer.getvalue()


# ----------------------------------------------------------------------------------------------- shop folder


def _sha256(path: str) -> str:
  with open(path, "rb") as f:
    return hashlib.sha256(f.read()).hexdigest()


def _label_order(names: set[str]) -> list[str]:
  """Numeric labels in numeric order ('2' before '10'), the rest alphabetically after them."""
  return sorted(names, key=lambda s: (0, int(s), "") if s.isdigit() else (1, 0, s))


def _load_image(folder: str, image_path: str, where: str,
                min_size: int) -> tuple[np.ndarray | None, str | None, str | None]:
  """(rgb, None, None), or (None, skip reason, message): callers count the reason or, when strict, raise."""
  full = os.path.join(folder, image_path)
  try:
    with open(full, "rb") as f:
      data = f.read()
    rgb = images.decode_image(data, source=f"{where}: image {image_path!r}", min_size=0)
  except FileNotFoundError:
    return None, "missing_image", f"{where}: image {image_path!r} not found ({full})"
  except OSError as e:  # a folder, no permission, ...
    return None, "unreadable_image", f"{where}: image {image_path!r} cannot be read ({e})"
  except InputError as e:
    return None, "unreadable_image", str(e)
  if min(rgb.shape[:2]) < min_size:
    return None, "small_image", (f"{where}: image {image_path!r} is {rgb.shape[1]}x{rgb.shape[0]} pixels; "
                                 f"each side must be at least {min_size}")
  return rgb, None, None


class _ShopRows:
  """items.csv read and checked for what needs no image: columns, empty ids, duplicate ids."""

  def __init__(self, folder: str):
    self.folder = folder
    self.path = os.path.join(folder, "items.csv")
    header, rows = _read_csv(self.path, ["item_id", "image"])
    self.label_column = next((c for c in ("label", "category") if c in header), None)
    self.rows: list[tuple[int, str, str, str]] = []  # (line, item_id, image path, label or '')
    first_line: dict[str, int] = {}
    for line, row in rows:
      item_id = _required(row, "item_id", self.path, line)
      if item_id in first_line:
        raise InputError(f"{self.path}, line {line}: item_id {item_id!r} is a duplicate of line "
                         f"{first_line[item_id]}")
      first_line[item_id] = line
      label = (row.get(self.label_column) or "").strip() if self.label_column else ""
      self.rows.append((line, item_id, (row.get("image") or "").strip(), label))
    self.label_names = _label_order({r[3] for r in self.rows if r[3]}) if self.label_column else None
    self.fingerprint = _sha256(self.path)


class _LocalBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """What every builder here shares: built from local files (nothing to download), stored as array_record."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "First release."}
  # No checksums file to find; TFDS's lookup of the code folder needs the optional importlib_resources.
  code_path = None

  def __init__(self, **kwargs: Any):
    super().__init__(file_format="array_record", **kwargs)


class ShopFolder(_LocalBuilder, skip_registration=True):
  """A shop's items.csv and images; one shop per data_dir. `manual_dir` is needed to build, not to read."""

  name = "shop_folder"

  def __init__(self, *, manual_dir: str | None = None, strict: bool = False,
               min_size: int = MIN_IMAGE_SIZE, **kwargs: Any):
    # Read before the base class asks for `_info`: the label names come from the CSV.
    self._rows = _ShopRows(os.fspath(manual_dir)) if manual_dir is not None else None
    self._strict = strict
    self._min_size = min_size
    super().__init__(**kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    if self._rows is None:
      raise InputError("shop_folder: building needs manual_dir, the folder that holds items.csv")
    features = {"item_id": tfds.features.Text(),
                "image": tfds.features.Image(shape=(None, None, 3), encoding_format="jpeg")}
    if self._rows.label_names is not None:
      features["label"] = tfds.features.ClassLabel(names=self._rows.label_names)
    return tfds.core.DatasetInfo(
        builder=self,
        description="Item images of a shop folder (items.csv + image files). label -1: row had no label.",
        features=tfds.features.FeaturesDict(features),
        metadata=tfds.core.MetadataDict(),
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # nothing to download: the folder is local
    return {"train": self._generate_examples()}

  def _generate_examples(self) -> Iterator[tuple[str, dict[str, Any]]]:
    rows = self._rows
    skipped: collections.Counter[str] = collections.Counter()
    kept = 0
    for line, item_id, image_path, label in rows.rows:
      where = f"{rows.path}, line {line}"
      if not image_path:
        reason, message = "no_image", f"{where}: item {item_id!r} has no image"
      else:
        rgb, reason, message = _load_image(rows.folder, image_path, where, self._min_size)
      if reason is not None:
        if self._strict:
          raise InputError(message)
        logging.debug("skipping: %s", message)
        skipped[reason] += 1
        continue
      example = {"item_id": item_id, "image": _encode(rgb, "jpeg")}
      if rows.label_names is not None:
        example["label"] = label if label else -1
      kept += 1
      yield item_id, example
    total = sum(skipped.values())
    if total:
      logging.warning("%s: skipped %d of %d rows (%s)", rows.path, total, len(rows.rows),
                      ", ".join(f"{k}: {v}" for k, v in sorted(skipped.items())))
    # The metadata is written after generation, so the counts land in the dataset's metadata.json.
    self.info.metadata.update({"items_csv": rows.path, "items_csv_sha256": rows.fingerprint,
                               "rows": len(rows.rows), "kept": kept, "skipped": dict(sorted(skipped.items())),
                               "strict": self._strict})


# --------------------------------------------------------------------------------------------- fashion mnist

_IDX_DTYPES = {0x08: np.dtype(np.uint8), 0x09: np.dtype(np.int8), 0x0B: np.dtype(">i2"),
               0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


def read_idx(path: str, *, limit: int | None = None) -> np.ndarray:
  """Reads an IDX file (gzipped or plain, told apart by content); `limit` keeps the first N along axis 0.

  Layout: two zero bytes, a dtype code, the number of dims, each dim as a big-endian uint32, then the data.
  """
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise InputError(f"{path}: file not found")
  with open(path, "rb") as raw:
    gzipped = raw.read(2) == b"\x1f\x8b"
  try:
    with (gzip.open if gzipped else open)(path, "rb") as f:
      head = f.read(4)
      if len(head) < 4 or head[:2] != b"\0\0" or head[2] not in _IDX_DTYPES or head[3] == 0:
        raise InputError(f"{path}: not an IDX file (magic number {head.hex() or 'missing'}; expected "
                         "00 00, a dtype code in 08 09 0b 0c 0d 0e, and the number of dims)")
      dtype, ndim = _IDX_DTYPES[head[2]], head[3]
      dim_bytes = f.read(4 * ndim)
      if len(dim_bytes) < 4 * ndim:
        raise InputError(f"{path}: truncated IDX header ({ndim} dims announced)")
      dims = list(struct.unpack(f">{ndim}I", dim_bytes))
      total = dims[0]
      if limit is not None:
        dims[0] = min(dims[0], max(0, limit))
      count = int(np.prod(dims))
      data = f.read(count * dtype.itemsize)
      if len(data) < count * dtype.itemsize:
        raise InputError(f"{path}: truncated IDX data: {len(data)} bytes where dims {dims} need "
                         f"{count * dtype.itemsize}")
      if dims[0] == total and f.read(1):
        raise InputError(f"{path}: more data than the IDX header's dims {dims} describe")
  except (EOFError, gzip.BadGzipFile, zlib.error) as e:  # a cut or corrupted .gz
    raise InputError(f"{path}: damaged gzip data ({type(e).__name__}: {e})") from None
  return np.frombuffer(data, dtype=dtype).reshape(dims).astype(dtype.newbyteorder("="))


_SPLIT_PREFIX = {"train": "train", "test": "t10k"}


def fashion_mnist_file(folder: str, split: str, kind: str) -> str | None:
  """The IDX file of `split` ('train'/'test') and `kind` ('images'/'labels') in `folder`, or None.

  Accepts the Debian/Zalando names (`train-images-idx3-ubyte.gz`), LeCun's dotted names
  (`train-images.idx3-ubyte`), gzipped or not.
  """
  prefix, idx = _SPLIT_PREFIX[split], {"images": "idx3", "labels": "idx1"}[kind]
  for stem in (f"{prefix}-{kind}-{idx}-ubyte", f"{prefix}-{kind}.{idx}-ubyte"):
    for name in (stem + ".gz", stem):
      if os.path.isfile(os.path.join(folder, name)):
        return os.path.join(folder, name)
  return None


def _fashion_mnist_missing(folder: str) -> list[str]:
  return [f"{_SPLIT_PREFIX[s]}-{k}" for s in _SPLIT_PREFIX for k in ("images", "labels")
          if fashion_mnist_file(folder, s, k) is None]


def ensure_fashion_mnist(folder: str = FASHION_MNIST_DIR) -> str:
  """Returns `folder` once it holds the four IDX files; installs the Debian package when root can.

  apt-get only helps for the package's own folder; any other folder must be filled by the user.
  """
  folder = os.fspath(folder)
  missing = _fashion_mnist_missing(folder)
  if not missing:
    return folder
  is_default = os.path.abspath(folder) == os.path.abspath(FASHION_MNIST_DIR)
  can_install = (is_default and hasattr(os, "geteuid") and os.geteuid() == 0
                 and shutil.which("apt-get") is not None)
  if not can_install:
    hint = (f"install the Debian package {FASHION_MNIST_PACKAGE} (apt-get install {FASHION_MNIST_PACKAGE}, "
            f"as root), which puts them in {FASHION_MNIST_DIR}")
    raise InputError(f"{folder}: Fashion-MNIST files missing ({', '.join(missing)}); {hint}")
  env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
  install = ["apt-get", "install", "-y", FASHION_MNIST_PACKAGE]
  print(f"Fashion-MNIST not found in {folder}; running: {' '.join(install)}", flush=True)
  if subprocess.run(install, env=env, check=False).returncode != 0:
    print("install failed; running: apt-get update, then the install again", flush=True)
    subprocess.run(["apt-get", "update"], env=env, check=False)
    if subprocess.run(install, env=env, check=False).returncode != 0:
      raise InputError(f"{folder}: Fashion-MNIST files missing and `{' '.join(install)}` failed; "
                       "install the package by hand")
  missing = _fashion_mnist_missing(folder)
  if missing:
    raise InputError(f"{folder}: {FASHION_MNIST_PACKAGE} is installed but {', '.join(missing)} is missing")
  print(f"Fashion-MNIST installed in {folder}", flush=True)
  return folder


class FashionMnistConfig(tfds.core.BuilderConfig):
  """`limit`: keep only the first N images of each split (None: all)."""

  def __init__(self, *, limit: int | None = None, **kwargs: Any):
    super().__init__(**kwargs)
    self.limit = limit


def fashion_mnist_config(limit: int | None) -> FashionMnistConfig:
  if limit is None:
    return FashionMnist.BUILDER_CONFIGS[0]
  if limit < 1:
    raise InputError(f"fashion_mnist: limit must be a positive number of images, got {limit}")
  for config in FashionMnist.BUILDER_CONFIGS:
    if config.limit == limit:
      return config
  return FashionMnistConfig(name=f"first_{limit}", limit=limit,
                            description=f"The first {limit} images of each split.")


class FashionMnist(_LocalBuilder, skip_registration=True):
  """Fashion-MNIST from local IDX files (`manual_dir`, default the Debian package's folder)."""

  name = "fashion_mnist"
  BUILDER_CONFIGS = [
      FashionMnistConfig(name="full", description="All 60000 train and 10000 test images."),
      # The default shop: a few thousand items is enough to try the recommender end to end.
      FashionMnistConfig(name="first_3000", limit=3000, description="The first 3000 images of each split."),
  ]
  DEFAULT_CONFIG_NAME = "full"

  def __init__(self, *, manual_dir: str | None = None, **kwargs: Any):
    self._source_dir = os.fspath(manual_dir) if manual_dir is not None else FASHION_MNIST_DIR
    super().__init__(**kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description="Fashion-MNIST (Zalando): 28x28 grayscale clothing images, stored as RGB PNG.",
        features=tfds.features.FeaturesDict({
            "item_id": tfds.features.Text(),
            "image": tfds.features.Image(shape=(None, None, 3), encoding_format="png"),
            "label": tfds.features.ClassLabel(names=list(FASHION_MNIST_CLASSES)),
        }),
        homepage="https://github.com/zalandoresearch/fashion-mnist",
        metadata=tfds.core.MetadataDict(source_dir=self._source_dir),
    )

  def _split_generators(self, dl_manager):
    del dl_manager
    folder = ensure_fashion_mnist(self._source_dir)
    return {split: self._generate_examples(folder, split) for split in _SPLIT_PREFIX}

  def _generate_examples(self, folder: str, split: str) -> Iterator[tuple[str, dict[str, Any]]]:
    limit = self.builder_config.limit
    images_path = fashion_mnist_file(folder, split, "images")
    labels_path = fashion_mnist_file(folder, split, "labels")
    pixels = read_idx(images_path, limit=limit)
    labels = read_idx(labels_path, limit=limit)
    if pixels.ndim != 3 or pixels.dtype != np.uint8:
      raise InputError(f"{images_path}: expected uint8 images [N, H, W], got {pixels.dtype} {list(pixels.shape)}")
    if labels.shape != pixels.shape[:1]:
      raise InputError(f"{labels_path}: {labels.shape[0] if labels.ndim else 0} labels for "
                       f"{pixels.shape[0]} images in {images_path}")
    bad = np.flatnonzero((labels < 0) | (labels >= len(FASHION_MNIST_CLASSES)))
    if bad.size:
      raise InputError(f"{labels_path}: label {int(labels[bad[0]])} at index {int(bad[0])} is not a class "
                       f"0..{len(FASHION_MNIST_CLASSES) - 1}")
    for index in range(pixels.shape[0]):
      item_id = f"fmnist-{split}-{index:05d}"
      rgb = np.repeat(pixels[index][..., None], 3, axis=-1)
      yield item_id, {"item_id": item_id, "image": _encode(rgb, "png"), "label": int(labels[index])}


# ------------------------------------------------------------------------------------------------- omniart

OMNIART_CSV = "omniart_metadata.csv"
OMNIART_MIN_COUNT = 100
# (split, fraction) in order; the last split takes what rounding leaves.
OMNIART_SPLITS = (("train", 0.7), ("validation", 0.2), ("test", 0.1))
OMNIART_SPLIT_SEED = "omniart-split-v1"


def _split_rank(item_id: str, seed: str) -> str:
  """A seeded, platform-independent shuffle key: sorting by it is a fixed random order of the item ids."""
  return hashlib.sha256(f"{seed}:{item_id}".encode("utf-8")).hexdigest()


def split_by_hash(item_ids: Sequence[str], fractions: Sequence[tuple[str, float]] = OMNIART_SPLITS,
                  seed: str = OMNIART_SPLIT_SEED) -> dict[str, str]:
  """item id -> split: ids sorted by sha256(seed:id), then cut into round(fraction * n) blocks.

  The order depends only on the ids, not on the CSV's row order, so a re-ordered CSV gives the same splits.
  """
  order = sorted(item_ids, key=lambda i: (_split_rank(i, seed), i))
  out: dict[str, str] = {}
  start = 0
  for k, (split, fraction) in enumerate(fractions):
    end = len(order) if k == len(fractions) - 1 else min(len(order), start + round(fraction * len(order)))
    for item_id in order[start:end]:
      out[item_id] = split
    start = end
  return out


def _parse_year(value: str, path: str, line: int) -> int:
  """'1889', '1889.0' -> 1889; anything else is bad input (an empty value was dropped before)."""
  try:
    year = float(value)
  except ValueError:
    year = float("nan")
  if not np.isfinite(year) or year != int(year):
    raise InputError(f"{path}, line {line}: creation_year {value!r} is not a whole year")
  return int(year)


class _OmniArtRows:
  """The metadata CSV, filtered as in del Rio et al. 2018: complete rows, artists and types with enough images.

  Rare artists and types are dropped again until none is left (dropping an artist can make a type rare), so
  every class of the metadata has at least `min_count` rows; images that fail later may still thin it.
  """

  def __init__(self, folder: str, min_count: int):
    self.folder = folder
    self.path = os.path.join(folder, OMNIART_CSV)
    header, rows = _read_csv(self.path, ["image", "artist", "type", "creation_year"])
    id_column = "id" if "id" in header else "image"
    self.skipped: collections.Counter[str] = collections.Counter()
    self.total = len(rows)
    complete: list[tuple[int, str, str, str, str, int]] = []  # (line, item_id, image, artist, type, year)
    first_line: dict[str, int] = {}
    for line, row in rows:
      value = {c: (row.get(c) or "").strip() for c in ("image", "artist", "type", "creation_year", id_column)}
      if not value["image"]:
        self.skipped["no_image"] += 1
        continue
      item_id = _required(row, id_column, self.path, line)
      if item_id in first_line:
        raise InputError(f"{self.path}, line {line}: {id_column} {item_id!r} is a duplicate of line "
                         f"{first_line[item_id]}")
      first_line[item_id] = line
      if not (value["artist"] and value["type"] and value["creation_year"]):
        self.skipped["missing_fields"] += 1
        continue
      year = _parse_year(value["creation_year"], self.path, line)
      complete.append((line, item_id, value["image"], value["artist"], value["type"], year))
    while True:
      artists = collections.Counter(r[3] for r in complete)
      types = collections.Counter(r[4] for r in complete)
      kept = []
      for r in complete:
        if artists[r[3]] < min_count:
          self.skipped["rare_artist"] += 1
        elif types[r[4]] < min_count:
          self.skipped["rare_type"] += 1
        else:
          kept.append(r)
      if len(kept) == len(complete):
        break
      complete = kept
    self.rows = complete
    self.artists = sorted({r[3] for r in complete})
    self.types = sorted({r[4] for r in complete})
    self.split_of = split_by_hash([r[1] for r in complete])
    self.fingerprint = _sha256(self.path)


class OmniArtConfig(tfds.core.BuilderConfig):
  """`min_count`: artists and artwork types with fewer images are dropped."""

  def __init__(self, *, min_count: int = OMNIART_MIN_COUNT, **kwargs: Any):
    super().__init__(**kwargs)
    self.min_count = min_count


def omniart_config(min_count: int | None) -> OmniArtConfig:
  if min_count is None or min_count == OMNIART_MIN_COUNT:
    return OmniArt.BUILDER_CONFIGS[0]
  if min_count < 1:
    raise InputError(f"omniart: min_count must be a positive number of images, got {min_count}")
  return OmniArtConfig(name=f"min_{min_count}", min_count=min_count,
                       description=f"Artists and types with at least {min_count} images.")


class OmniArt(_LocalBuilder, skip_registration=True):
  """OmniArt (Strezoski & Worring) from `manual_dir`: omniart_metadata.csv and the images it names.

  Features: item_id, image, artist and type (classes), year (creation year, int32, a regression target).
  Splits 70/20/10 by `split_by_hash` (seeded sha256 of the item id), fixed before images are read.
  """

  name = "omniart"
  BUILDER_CONFIGS = [OmniArtConfig(name="min_100", description="Artists and types with at least 100 images "
                                                               "(del Rio et al. 2018).")]
  DEFAULT_CONFIG_NAME = "min_100"

  def __init__(self, *, manual_dir: str | None = None, strict: bool = False, min_size: int = MIN_IMAGE_SIZE,
               **kwargs: Any):
    self._manual_dir = os.fspath(manual_dir) if manual_dir is not None else None
    self._strict = strict
    self._min_size = min_size
    self._rows_cache: _OmniArtRows | None = None
    super().__init__(**kwargs)

  @property
  def _rows(self) -> _OmniArtRows:
    if self._manual_dir is None:
      raise InputError(f"omniart: building needs manual_dir, the folder that holds {OMNIART_CSV}")
    if self._rows_cache is None:
      self._rows_cache = _OmniArtRows(self._manual_dir, self.builder_config.min_count)
    return self._rows_cache

  def _info(self) -> tfds.core.DatasetInfo:
    rows = self._rows
    return tfds.core.DatasetInfo(
        builder=self,
        description="OmniArt artworks: artist, artwork type, creation year.",
        features=tfds.features.FeaturesDict({
            "item_id": tfds.features.Text(),
            "image": tfds.features.Image(shape=(None, None, 3), encoding_format="jpeg"),
            "artist": tfds.features.ClassLabel(names=rows.artists),
            "type": tfds.features.ClassLabel(names=rows.types),
            "year": tfds.features.Scalar(dtype=np.int32),
        }),
        homepage="https://www.vistory-omniart.com/",
        metadata=tfds.core.MetadataDict(),
    )

  def _split_generators(self, dl_manager):
    del dl_manager
    present = set(self._rows.split_of.values())
    # An empty split cannot be written; a tiny CSV may leave validation or test empty.
    self._skipped: collections.Counter[str] = collections.Counter()
    self._kept: collections.Counter[str] = collections.Counter()
    return {split: self._generate_examples(split) for split, _ in OMNIART_SPLITS if split in present}

  def _generate_examples(self, split: str) -> Iterator[tuple[str, dict[str, Any]]]:
    rows = self._rows
    for line, item_id, image_path, artist, kind, year in rows.rows:
      if rows.split_of[item_id] != split:
        continue
      where = f"{rows.path}, line {line}"
      rgb, reason, message = _load_image(rows.folder, image_path, where, self._min_size)
      if reason is not None:
        if self._strict:
          raise InputError(message)
        logging.debug("skipping: %s", message)
        self._skipped[reason] += 1
        continue
      self._kept[split] += 1
      yield item_id, {"item_id": item_id, "image": _encode(rgb, "jpeg"), "artist": artist, "type": kind,
                      "year": year}
    self._record()

  def _record(self) -> None:
    """Metadata after each split: the last one written holds the full counts."""
    rows = self._rows
    skipped = rows.skipped + self._skipped
    self.info.metadata.update({
        "metadata_csv": rows.path, "metadata_csv_sha256": rows.fingerprint, "rows": rows.total,
        "min_count": self.builder_config.min_count, "kept": dict(sorted(self._kept.items())),
        "skipped": dict(sorted(skipped.items())), "strict": self._strict, "split_seed": OMNIART_SPLIT_SEED})


# --------------------------------------------------------------------------------------------- deepfashion

DEEPFASHION_SPLITS = {"train": "train", "val": "validation", "test": "test"}


def _read_list_file(path: str, header: Sequence[str]) -> list[tuple[int, list[str]]]:
  """A DeepFashion list file: line 1 the entry count, line 2 the header, then whitespace-separated fields."""
  if not os.path.isfile(path):
    raise InputError(f"{path}: file not found")
  with open(path, encoding="utf-8-sig") as f:
    lines = f.read().splitlines()
  if not lines or not lines[0].strip().isdigit():
    raise InputError(f"{path}, line 1: {lines[0] if lines else ''!r} is not the entry count")
  if len(lines) < 2 or lines[1].split() != list(header):
    raise InputError(f"{path}, line 2: header {lines[1] if len(lines) > 1 else ''!r}; expected "
                     f"{' '.join(header)!r}")
  entries = []
  for number, text in enumerate(lines[2:], start=3):
    if not text.strip():
      continue
    fields = text.split()
    if len(fields) != len(header):
      raise InputError(f"{path}, line {number}: {text!r} has {len(fields)} fields; expected {len(header)} "
                       f"({' '.join(header)})")
    entries.append((number, fields))
  if len(entries) != int(lines[0]):
    raise InputError(f"{path}, line 1: count {lines[0].strip()!r} but {len(entries)} entries follow")
  return entries


def _parse_int(value: str, path: str, line: int, column: str, low: int, high: int) -> int:
  try:
    number = int(value)
  except ValueError:
    number = None
  if number is None or not low <= number <= high:
    raise InputError(f"{path}, line {line}: {column} {value!r} is not an integer in {low}..{high}")
  return number


def deepfashion_anno_dir(folder: str) -> str:
  """`Anno_coarse/` (current release) or `Anno/` (older one), whichever holds list_category_cloth.txt."""
  for name in ("Anno_coarse", "Anno"):
    if os.path.isfile(os.path.join(folder, name, "list_category_cloth.txt")):
      return os.path.join(folder, name)
  raise InputError(f"{folder}: neither Anno_coarse/ nor Anno/ holds list_category_cloth.txt")


class _DeepFashionRows:
  """The category and partition lists; keeps the categories that have images (46 of 50 in the release)."""

  def __init__(self, folder: str):
    self.folder = folder
    anno = deepfashion_anno_dir(folder)
    self.cloth_path = os.path.join(anno, "list_category_cloth.txt")
    self.img_path = os.path.join(anno, "list_category_img.txt")
    self.partition_path = os.path.join(folder, "Eval", "list_eval_partition.txt")
    cloth = _read_list_file(self.cloth_path, ("category_name", "category_type"))
    all_names = [fields[0] for _, fields in cloth]
    all_types = [_parse_int(fields[1], self.cloth_path, line, "category_type", 1, 3) for line, fields in cloth]
    partition: dict[str, str] = {}
    for line, (image, status) in _read_list_file(self.partition_path, ("image_name", "evaluation_status")):
      if status not in DEEPFASHION_SPLITS:
        raise InputError(f"{self.partition_path}, line {line}: evaluation_status {status!r}; expected "
                         f"{', '.join(DEEPFASHION_SPLITS)}")
      partition[image] = DEEPFASHION_SPLITS[status]
    self.skipped: collections.Counter[str] = collections.Counter()
    self.rows: list[tuple[int, str, int, str]] = []  # (line, image name, original label 1.., split)
    first_line: dict[str, int] = {}
    entries = _read_list_file(self.img_path, ("image_name", "category_label"))
    self.total = len(entries)
    for line, (image, label) in entries:
      original = _parse_int(label, self.img_path, line, "category_label", 1, len(all_names))
      if image in first_line:
        raise InputError(f"{self.img_path}, line {line}: image {image!r} is a duplicate of line "
                         f"{first_line[image]}")
      first_line[image] = line
      if image not in partition:
        self.skipped["no_partition"] += 1
        continue
      self.rows.append((line, image, original, partition[image]))
    self.labels = sorted({r[2] for r in self.rows})  # original labels present, in their order
    self.class_of = {original: i for i, original in enumerate(self.labels)}
    self.names = [all_names[o - 1] for o in self.labels]
    self.category_types = [all_types[o - 1] for o in self.labels]
    self.dropped = [all_names[o - 1] for o in range(1, len(all_names) + 1) if o not in self.class_of]
    digest = hashlib.sha256()
    for path in (self.cloth_path, self.img_path, self.partition_path):
      digest.update(_sha256(path).encode())
    self.fingerprint = digest.hexdigest()


class DeepFashion(_LocalBuilder, skip_registration=True):
  """DeepFashion Category and Attribute Prediction from `manual_dir` (Anno_coarse/ or Anno/, Eval/, img/).

  label: the categories that have images, in their original order (46 in the release); `category_type`
  1 upper, 2 lower, 3 full body. Splits from Eval/list_eval_partition.txt (val -> validation).
  """

  name = "deepfashion"

  def __init__(self, *, manual_dir: str | None = None, strict: bool = False, min_size: int = MIN_IMAGE_SIZE,
               **kwargs: Any):
    self._rows = _DeepFashionRows(os.fspath(manual_dir)) if manual_dir is not None else None
    self._strict = strict
    self._min_size = min_size
    super().__init__(**kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    if self._rows is None:
      raise InputError("deepfashion: building needs manual_dir, the DeepFashion category benchmark folder")
    return tfds.core.DatasetInfo(
        builder=self,
        description="DeepFashion Category and Attribute Prediction Benchmark: clothing categories.",
        features=tfds.features.FeaturesDict({
            "item_id": tfds.features.Text(),
            "image": tfds.features.Image(shape=(None, None, 3), encoding_format="jpeg"),
            "label": tfds.features.ClassLabel(names=self._rows.names),
            "category_type": tfds.features.Scalar(dtype=np.int32),
        }),
        homepage="https://mmlab.ie.cuhk.edu.hk/projects/DeepFashion.html",
        metadata=tfds.core.MetadataDict(),
    )

  def _split_generators(self, dl_manager):
    del dl_manager
    present = {r[3] for r in self._rows.rows}
    self._skipped: collections.Counter[str] = collections.Counter()
    self._kept: collections.Counter[str] = collections.Counter()
    return {s: self._generate_examples(s) for s in DEEPFASHION_SPLITS.values() if s in present}

  def _generate_examples(self, split: str) -> Iterator[tuple[str, dict[str, Any]]]:
    rows = self._rows
    for line, image, original, image_split in rows.rows:
      if image_split != split:
        continue
      rgb, reason, message = _load_image(rows.folder, image, f"{rows.img_path}, line {line}", self._min_size)
      if reason is not None:
        if self._strict:
          raise InputError(message)
        logging.debug("skipping: %s", message)
        self._skipped[reason] += 1
        continue
      self._kept[split] += 1
      label = rows.class_of[original]
      yield image, {"item_id": image, "image": _encode(rgb, "jpeg"), "label": label,
                    "category_type": rows.category_types[label]}
    skipped = rows.skipped + self._skipped
    self.info.metadata.update({
        "category_img": rows.img_path, "sha256": rows.fingerprint, "rows": rows.total,
        "kept": dict(sorted(self._kept.items())), "skipped": dict(sorted(skipped.items())),
        "original_labels": rows.labels, "dropped_categories": rows.dropped, "strict": self._strict})


# ------------------------------------------------------------------------------------------ build and read


def _dataset_path(name: str, data_dir: str, limit: int | None, min_count: int | None = None) -> str:
  if min_count is not None and name != "omniart":
    raise InputError(f"{name}: min_count applies to omniart only")
  if limit is not None and name in ("omniart", "deepfashion"):
    raise InputError(f"{name}: limit applies to fashion_mnist only")
  if name == "omniart":
    return os.path.join(data_dir, OmniArt.name, omniart_config(min_count).name, str(OmniArt.VERSION))
  if name == "deepfashion":
    return os.path.join(data_dir, DeepFashion.name, str(DeepFashion.VERSION))
  if name == "shop_folder":
    if limit is not None:
      raise InputError("shop_folder: limit applies to fashion_mnist only")
    return os.path.join(data_dir, ShopFolder.name, str(ShopFolder.VERSION))
  if name == "fashion_mnist":
    return os.path.join(data_dir, FashionMnist.name, fashion_mnist_config(limit).name, str(FashionMnist.VERSION))
  raise InputError(f"dataset name {name!r} is unknown; expected one of {', '.join(DATASETS)}")


def _is_built(path: str) -> bool:
  return os.path.isfile(os.path.join(path, "dataset_info.json"))


def _metadata(path: str) -> Mapping[str, Any]:
  return tfds.builder_from_directory(path).info.metadata or {}


def _build_from_lists(name: str, path: str, data_dir: str, manual_dir: str | None, strict: bool,
                      min_count: int | None) -> None:
  """omniart / deepfashion: rebuilt when their list files changed, or when `strict` meets skipped rows."""
  if manual_dir is None:
    raise InputError(f"{name}: manual_dir (the folder with the dataset's lists and images) is required")

  def make() -> tfds.core.GeneratorBasedBuilder:
    if name == "omniart":
      return OmniArt(manual_dir=manual_dir, strict=strict, config=omniart_config(min_count), data_dir=data_dir)
    return DeepFashion(manual_dir=manual_dir, strict=strict, data_dir=data_dir)

  builder = make()
  if _is_built(path):
    meta = _metadata(path)
    key = "metadata_csv_sha256" if name == "omniart" else "sha256"
    stale = meta.get(key) != builder._rows.fingerprint  # pylint: disable=protected-access
    if not stale and not (strict and sum(meta.get("skipped", {}).values())):
      return
    if not stale:  # strict: fail on the first bad row before deleting the usable build
      for generator in builder._split_generators(None).values():  # pylint: disable=protected-access
        for _ in generator:
          pass
    logging.info("%s: rebuilding (%s)", path, "lists changed" if stale else "strict build asked")
    shutil.rmtree(path)
    builder = make()
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))


def build_dataset(name: str, *, data_dir: str, manual_dir: str | None = None, strict: bool = False,
                  limit: int | None = None, min_count: int | None = None) -> str:
  """Builds dataset `name` (one of `DATASETS`) under `data_dir` unless built; returns its path.

  A shop folder is rebuilt when its items.csv changed since the last build (changed image files alone are
  not noticed), or when `strict` is asked of a build that skipped rows; omniart and deepfashion likewise for
  their list files. `min_count` (omniart only, default 100) picks the config, so each has its own folder.
  """
  data_dir = os.fspath(data_dir)
  path = _dataset_path(name, data_dir, limit, min_count)
  if name in ("omniart", "deepfashion"):
    _build_from_lists(name, path, data_dir, manual_dir, strict, min_count)
    return path
  if name == "shop_folder":
    if manual_dir is None:
      raise InputError("shop_folder: manual_dir (the folder with items.csv) is required")
    builder = ShopFolder(manual_dir=manual_dir, strict=strict, data_dir=data_dir)
    if _is_built(path):
      meta = _metadata(path)
      stale = meta.get("items_csv_sha256") != builder._rows.fingerprint  # pylint: disable=protected-access
      if not stale and not (strict and sum(meta.get("skipped", {}).values())):
        return path
      if not stale:  # a strict build of rows that were skipped: fail before deleting the usable build
        for _ in builder._generate_examples():  # pylint: disable=protected-access
          pass
      logging.info("%s: rebuilding (%s)", path, "items.csv changed" if stale else "strict build asked")
      shutil.rmtree(path)
      builder = ShopFolder(manual_dir=manual_dir, strict=strict, data_dir=data_dir)
  else:
    if _is_built(path):
      return path
    builder = FashionMnist(manual_dir=manual_dir, config=fashion_mnist_config(limit), data_dir=data_dir)
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
  return path


class _Examples(Sequence):
  """Random access to a built split: item_id as str, image uint8 [H, W, 3], label as int (if any)."""

  def __init__(self, source: Any, path: str, split: str):
    self._source = source
    self.path = path
    self.split = split

  def __len__(self) -> int:
    return len(self._source)

  def __getitem__(self, index: int) -> dict[str, Any]:  # type: ignore[override]
    if not -len(self) <= index < len(self):
      raise IndexError(f"index {index} out of range for {len(self)} examples")
    return _normalise(self._source[index])

  def __getitems__(self, indices: Sequence[int]) -> list[dict[str, Any]]:
    return [_normalise(e) for e in self._source.__getitems__(list(indices))]

  def __repr__(self) -> str:
    return f"_Examples({self.path!r}, split={self.split!r}, n={len(self)})"


def _normalise(example: Mapping[str, Any]) -> dict[str, Any]:
  out = dict(example)
  item_id = out["item_id"]
  out["item_id"] = item_id.decode("utf-8") if isinstance(item_id, bytes) else str(item_id)
  for key in ("label", "artist", "type", "year", "category_type"):
    if key in out:
      out[key] = int(out[key])
  return out


def data_source(name: str, *, data_dir: str, split: str = "train", limit: int | None = None,
                min_count: int | None = None) -> _Examples:
  """Random access (len, [i]) to a split built by `build_dataset`; order is TFDS's hashed-key order."""
  path = _dataset_path(name, os.fspath(data_dir), limit, min_count)
  if not _is_built(path):
    raise InputError(f"{path}: dataset {name!r} is not built; call build_dataset first")
  builder = tfds.builder_from_directory(path)
  if split not in builder.info.splits:
    raise InputError(f"{path}: no split {split!r} (splits: {', '.join(builder.info.splits)})")
  return _Examples(builder.as_data_source(split=split), path, split)


def label_columns(name: str, *, data_dir: str, split: str = "train", limit: int | None = None,
                  min_count: int | None = None) -> dict[str, np.ndarray]:
  """Every feature of a built split except the image, as arrays in `data_source` order ('item_id': str),
  read without decoding a single image."""
  path = _dataset_path(name, os.fspath(data_dir), limit, min_count)
  if not _is_built(path):
    raise InputError(f"{path}: dataset {name!r} is not built; call build_dataset first")
  builder = tfds.builder_from_directory(path)
  if split not in builder.info.splits:
    raise InputError(f"{path}: no split {split!r} (splits: {', '.join(builder.info.splits)})")
  source = builder.as_data_source(split=split, decoders={"image": tfds.decode.SkipDecoding()})
  rows = [_normalise(e) for e in source.__getitems__(list(range(len(source))))] if len(source) else []
  keys = [k for k in builder.info.features if k != "image"]
  return {k: np.array([r[k] for r in rows], dtype=object if k == "item_id" else None) for k in keys}


def label_names(name: str, *, data_dir: str, limit: int | None = None, min_count: int | None = None,
                feature: str = "label") -> list[str] | None:
  """The class names of a built dataset's `feature` (omniart: 'artist' or 'type'), or None when absent."""
  path = _dataset_path(name, os.fspath(data_dir), limit, min_count)
  features = tfds.builder_from_directory(path).info.features
  return list(features[feature].names) if feature in features else None


def build_stats(name: str, *, data_dir: str, limit: int | None = None,
                min_count: int | None = None) -> dict[str, Any]:
  """What a build recorded: rows, kept (omniart, deepfashion: per split) and skipped rows by reason."""
  return dict(_metadata(_dataset_path(name, os.fspath(data_dir), limit, min_count)))
