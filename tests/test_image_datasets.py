"""Item-image datasets: decoding odd files, TFDS array_record builds, grain batches. No TensorFlow."""

from __future__ import annotations

import gzip
import io
import os
import struct
import sys

import numpy as np
import pytest
from PIL import Image

from jaxrec.data import image_datasets, images, pipeline
from jaxrec.errors import InputError


def _png(image: Image.Image, fmt: str = "PNG", **kwargs) -> bytes:
  buffer = io.BytesIO()
  image.save(buffer, format=fmt, **kwargs)
  return buffer.getvalue()


def _gradient(h: int = 24, w: int = 32) -> np.ndarray:
  y, x = np.mgrid[0:h, 0:w]
  return np.stack([x * 7 % 256, y * 9 % 256, (x + y) * 3 % 256], -1).astype(np.uint8)


# ------------------------------------------------------------------------------------------------ decoding


def test_decode_modes_become_rgb():
  rgba = np.zeros((10, 12, 4), np.uint8)
  rgba[..., 0] = 255
  rgba[:, :6, 3] = 255  # left half opaque red, right half transparent
  out = images.decode_image(_png(Image.fromarray(rgba, "RGBA")), source="rgba.png")
  assert out.dtype == np.uint8 and out.shape == (10, 12, 3)
  assert (out[:, :6] == [255, 0, 0]).all() and (out[:, 6:] == 255).all()  # transparent -> white

  gray = images.decode_image(_png(Image.fromarray(np.full((9, 9), 77, np.uint8))), source="l.png")
  assert (gray == 77).all() and gray.shape == (9, 9, 3)

  sixteen = Image.fromarray(np.full((9, 9), 65535, np.uint16))  # I;16
  assert images.decode_image(_png(sixteen), source="16.png").min() == 255
  int32 = Image.fromarray(np.full((9, 9), 257 * 100, np.int32))  # I
  assert (images.decode_image(_png(int32, "TIFF"), source="i.tif") == 100).all()

  cmyk = Image.new("CMYK", (10, 10), (0, 255, 255, 0))  # red
  out = images.decode_image(_png(cmyk, "JPEG"), source="cmyk.jpg")
  assert out[..., 0].mean() > 200 and out[..., 1].mean() < 60
  ycbcr = Image.fromarray(np.full((10, 10, 3), 128, np.uint8), "RGB").convert("YCbCr")
  assert images.decode_image(_png(ycbcr, "JPEG"), source="ycc.jpg").shape == (10, 10, 3)

  palette = Image.fromarray(_gradient()).convert("P")
  assert images.decode_image(_png(palette, "GIF"), source="p.gif").shape == (24, 32, 3)
  la = Image.fromarray(np.stack([np.full((9, 9), 10, np.uint8), np.zeros((9, 9), np.uint8)], -1), "LA")
  assert (images.decode_image(_png(la), source="la.png") == 255).all()


def test_decode_errors_name_the_source():
  with pytest.raises(InputError, match=r"shop/x\.png: empty file"):
    images.decode_image(b"", source="shop/x.png")
  with pytest.raises(InputError, match=r"junk\.jpg: not a readable image"):
    images.decode_image(b"not an image at all", source="junk.jpg")
  jpeg = _png(Image.fromarray(_gradient(64, 64)), "JPEG")
  with pytest.raises(InputError, match=r"cut\.jpg: not a readable image"):
    images.decode_image(jpeg[: len(jpeg) // 2], source="cut.jpg")
  with pytest.raises(InputError, match=r"tiny\.png: image is 3x5 pixels"):
    images.decode_image(_png(Image.new("RGB", (3, 5))), source="tiny.png")


def test_resize_squashes_to_square():
  out = images.resize(_gradient(20, 50), 16)
  assert out.shape == (16, 16, 3) and out.dtype == np.uint8
  with pytest.raises(ValueError):
    images.resize(np.zeros((4, 4), np.uint8), 8)


# --------------------------------------------------------------------------------------------- shop folder


def _shop(folder) -> None:
  """12 rows: 7 good images of varied kinds, then 5 bad rows (lines 9-13)."""
  rgb = _gradient()
  files = {
      "rgb.jpg": _png(Image.fromarray(rgb), "JPEG", quality=95),
      "gray.png": _png(Image.fromarray(rgb[..., 0])),
      "rgba.png": _png(Image.fromarray(np.dstack([rgb, np.full(rgb.shape[:2], 128, np.uint8)]), "RGBA")),
      "deep.png": _png(Image.fromarray((rgb[..., 1].astype(np.uint16) * 257))),
      "cmyk.jpg": _png(Image.fromarray(rgb).convert("CMYK"), "JPEG"),
      "pal.gif": _png(Image.fromarray(rgb).convert("P"), "GIF"),
      "sub/pal.png": _png(Image.fromarray(rgb).convert("P")),
      "corrupt.jpg": _png(Image.fromarray(rgb), "JPEG")[:200],
      "empty.png": b"",
      "tiny.png": _png(Image.new("RGB", (3, 3))),
  }
  os.makedirs(folder / "sub")
  for name, data in files.items():
    (folder / name).write_bytes(data)
  rows = [("a", "rgb.jpg", "shoes"), ("b", "gray.png", "bags"), ("c", "rgba.png", ""), ("d", "deep.png", "shoes"),
          ("e", "cmyk.jpg", "bags"), ("f", "pal.gif", "hats"), ("g", "sub/pal.png", "hats"),
          ("h", "corrupt.jpg", "hats"), ("i", "empty.png", "hats"), ("j", "tiny.png", "hats"), ("k", "", "hats"),
          ("l", "nowhere.jpg", "hats")]
  lines = ["item_id,upload_time,image,category,price"]
  lines += [f"{i},{n},{p},{c},9.5" for n, (i, p, c) in enumerate(rows)]
  (folder / "items.csv").write_text("\n".join(lines) + "\n")


def test_shop_folder_build_skips_and_counts(tmp_path):
  shop, data_dir = tmp_path / "shop", str(tmp_path / "tfds")
  _shop(shop)
  path = image_datasets.build_dataset("shop_folder", data_dir=data_dir, manual_dir=str(shop))
  assert os.path.isfile(os.path.join(path, "dataset_info.json"))
  assert any(f.endswith(".array_record-00000-of-00001") for f in os.listdir(path))
  stats = image_datasets.build_stats("shop_folder", data_dir=data_dir)
  assert stats["rows"] == 12 and stats["kept"] == 7
  assert stats["skipped"] == {"missing_image": 1, "no_image": 1, "small_image": 1, "unreadable_image": 2}
  assert image_datasets.label_names("shop_folder", data_dir=data_dir) == ["bags", "hats", "shoes"]

  source = image_datasets.data_source("shop_folder", data_dir=data_dir)
  examples = {e["item_id"]: e for e in (source[i] for i in range(len(source)))}
  assert sorted(examples) == list("abcdefg")
  for e in examples.values():
    assert e["image"].dtype == np.uint8 and e["image"].shape == (24, 32, 3)
  assert examples["a"]["label"] == 2 and examples["b"]["label"] == 0 and examples["c"]["label"] == -1
  gray = examples["b"]["image"].astype(int)
  assert np.abs(gray[..., 0] - gray[..., 2]).max() <= 3  # stored as RGB, still gray
  assert np.abs(examples["d"]["image"][..., 0].astype(int) - _gradient()[..., 1]).max() <= 3  # 16 -> 8 bit

  # Built once: a second call reuses it; strict refuses the skipped rows and keeps the old build.
  assert image_datasets.build_dataset("shop_folder", data_dir=data_dir, manual_dir=str(shop)) == path
  with pytest.raises(InputError, match=r"items\.csv, line 9: image 'corrupt\.jpg'"):
    image_datasets.build_dataset("shop_folder", data_dir=data_dir, manual_dir=str(shop), strict=True)
  assert len(image_datasets.data_source("shop_folder", data_dir=data_dir)) == 7
  assert "tensorflow" not in sys.modules


def test_shop_folder_strict_and_duplicates(tmp_path):
  shop = tmp_path / "shop"
  shop.mkdir()
  Image.fromarray(_gradient()).save(shop / "a.png")
  (shop / "items.csv").write_text("item_id,upload_time,image\na,1,a.png\nb,2,missing.png\n")
  with pytest.raises(InputError, match=r"items\.csv, line 3: image 'missing\.png' not found"):
    image_datasets.build_dataset("shop_folder", data_dir=str(tmp_path / "d1"), manual_dir=str(shop), strict=True)
  assert not os.path.exists(tmp_path / "d1" / "shop_folder" / "1.0.0")

  (shop / "items.csv").write_text("item_id,upload_time,image\na,1,a.png\nb,2,a.png\na,3,a.png\n")
  with pytest.raises(InputError, match=r"line 4: item_id 'a' is a duplicate of line 2"):
    image_datasets.build_dataset("shop_folder", data_dir=str(tmp_path / "d2"), manual_dir=str(shop))

  # No label column: no label feature. A changed items.csv is rebuilt.
  (shop / "items.csv").write_text("item_id,upload_time,image\na,1,a.png\n")
  data_dir = str(tmp_path / "d3")
  image_datasets.build_dataset("shop_folder", data_dir=data_dir, manual_dir=str(shop))
  assert set(image_datasets.data_source("shop_folder", data_dir=data_dir)[0]) == {"item_id", "image"}
  (shop / "items.csv").write_text("item_id,upload_time,image\na,1,a.png\nb,2,a.png\n")
  image_datasets.build_dataset("shop_folder", data_dir=data_dir, manual_dir=str(shop))
  assert len(image_datasets.data_source("shop_folder", data_dir=data_dir)) == 2
  assert "tensorflow" not in sys.modules


# ------------------------------------------------------------------------------------------- fashion mnist


def _idx(array: np.ndarray, code: int = 0x08) -> bytes:
  return struct.pack(">BBBB", 0, 0, code, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape) + \
      array.astype(">u1" if code == 0x08 else ">i4").tobytes()


@pytest.fixture()
def fmnist_dir(tmp_path):
  """20 train images gzipped with Debian's names, 7 test images plain with LeCun's dotted names."""
  folder = tmp_path / "fmnist"
  folder.mkdir()
  rng = np.random.default_rng(0)
  train, test = rng.integers(0, 256, (20, 28, 28), np.uint8), rng.integers(0, 256, (7, 28, 28), np.uint8)
  (folder / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(_idx(train)))
  (folder / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(_idx(np.arange(20) % 10)))
  (folder / "t10k-images.idx3-ubyte").write_bytes(_idx(test))
  (folder / "t10k-labels.idx1-ubyte").write_bytes(_idx(np.arange(7)[::-1]))
  return folder, train, test


def test_read_idx_and_errors(tmp_path, fmnist_dir):
  folder, train, _ = fmnist_dir
  assert (image_datasets.read_idx(str(folder / "train-images-idx3-ubyte.gz")) == train).all()
  assert image_datasets.read_idx(str(folder / "train-images-idx3-ubyte.gz"), limit=3).shape == (3, 28, 28)
  ints = tmp_path / "ints"
  ints.write_bytes(_idx(np.array([[1, -2], [3, 70000]]), code=0x0C))
  assert image_datasets.read_idx(str(ints)).tolist() == [[1, -2], [3, 70000]]

  bad = tmp_path / "bad"
  bad.write_bytes(b"\x01\x02\x08\x01" + b"\0" * 8)
  with pytest.raises(InputError, match=r"bad: not an IDX file \(magic number 01020801"):
    image_datasets.read_idx(str(bad))
  short = tmp_path / "short"
  short.write_bytes(_idx(train)[:-5])
  with pytest.raises(InputError, match=r"short: truncated IDX data"):
    image_datasets.read_idx(str(short))
  cut_gz = tmp_path / "cut.gz"
  cut_gz.write_bytes(gzip.compress(_idx(train))[:-30])
  with pytest.raises(InputError, match=r"cut\.gz: "):
    image_datasets.read_idx(str(cut_gz))
  with pytest.raises(InputError, match=r"dataset-fashion-mnist"):
    image_datasets.ensure_fashion_mnist(str(tmp_path))  # not the package's folder: never runs apt-get


def test_fashion_mnist_build_and_batches(tmp_path, fmnist_dir):
  folder, train, test = fmnist_dir
  data_dir = str(tmp_path / "tfds")
  image_datasets.build_dataset("fashion_mnist", data_dir=data_dir, manual_dir=str(folder))
  source = image_datasets.data_source("fashion_mnist", data_dir=data_dir, split="train")
  assert len(source) == 20
  for i in range(len(source)):
    e = source[i]
    index = int(e["item_id"].rsplit("-", 1)[1])
    assert e["item_id"] == f"fmnist-train-{index:05d}"
    assert e["label"] == index % 10
    assert e["image"].shape == (28, 28, 3) and (e["image"] == train[index][..., None]).all()  # PNG: exact
  test_source = image_datasets.data_source("fashion_mnist", data_dir=data_dir, split="test")
  assert sorted(test_source[i]["label"] for i in range(7)) == list(range(7))
  assert image_datasets.label_names("fashion_mnist", data_dir=data_dir)[9] == "ankle boot"

  limited_dir = str(tmp_path / "tfds")  # same data_dir, another config
  image_datasets.build_dataset("fashion_mnist", data_dir=limited_dir, manual_dir=str(folder), limit=5)
  limited = image_datasets.data_source("fashion_mnist", data_dir=limited_dir, limit=5)
  assert sorted(limited[i]["item_id"] for i in range(len(limited))) == [f"fmnist-train-0000{i}" for i in range(5)]
  with pytest.raises(InputError, match="not built"):
    image_datasets.data_source("fashion_mnist", data_dir=data_dir, limit=6)

  # Batches: index order, fixed shape, padded last batch.
  batches = list(pipeline.image_batches(source, size=16, batch_size=8))
  assert len(batches) == 3
  for b in batches:
    assert b["image"].shape == (8, 16, 16, 3) and b["image"].dtype == np.uint8
    assert b["item_id"].shape == b["label"].shape == b["mask"].shape == (8,)
  assert [int(b["mask"].sum()) for b in batches] == [8, 8, 4]
  ids = np.concatenate([b["item_id"] for b in batches])
  assert ids[:20].tolist() == [source[i]["item_id"] for i in range(20)] and (ids[20:] == "").all()
  assert (batches[-1]["label"][4:] == -1).all() and (batches[-1]["image"][4:] == 0).all()
  again = list(pipeline.image_batches(source, size=16, batch_size=8))
  assert all((a["image"] == b["image"]).all() for a, b in zip(batches, again))

  # Shards: contiguous blocks, the same number of batches on every shard.
  shards = [list(pipeline.image_batches(source, size=8, batch_size=4, shard=(s, 3))) for s in range(3)]
  assert [len(s) for s in shards] == [2, 2, 2]
  assert [sum(int(b["mask"].sum()) for b in s) for s in shards] == [7, 7, 6]
  got = [i for s in shards for b in s for i, m in zip(b["item_id"], b["mask"]) if m]
  assert got == ids[:20].tolist()

  # Worker processes give the same batches.
  workers = list(pipeline.image_batches(source, size=16, batch_size=8, worker_count=2))
  assert [b["item_id"].tolist() for b in workers] == [b["item_id"].tolist() for b in batches]
  assert all((a["image"] == b["image"]).all() for a, b in zip(batches, workers))
  assert "tensorflow" not in sys.modules


def test_image_batches_plain_source_with_encoded_images():
  rgb = _gradient()
  source = [{"item_id": f"x{i}", "image": _png(Image.fromarray(rgb))} for i in range(3)]
  (batch,) = pipeline.image_batches(source, size=12, batch_size=5)
  assert batch["mask"].tolist() == [True, True, True, False, False] and "label" not in batch
  assert batch["item_id"].tolist() == ["x0", "x1", "x2", "", ""]
  assert (batch["image"][0] == images.resize(rgb, 12)).all()
  assert list(pipeline.image_batches([], size=12, batch_size=5)) == []
  with pytest.raises(InputError, match="shard"):
    pipeline.image_batches(source, size=12, batch_size=5, shard=(2, 2))
  assert "tensorflow" not in sys.modules
