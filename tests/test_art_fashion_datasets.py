"""OmniArt and DeepFashion builders on tiny generated folders: filtering, splits, bad lines. No TensorFlow."""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest
from PIL import Image

from jaxrec.data import image_datasets
from jaxrec.errors import InputError


def _jpeg(path, seed: int) -> None:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  rgb = np.full((16, 16, 3), (seed * 37) % 256, np.uint8)
  Image.fromarray(rgb).save(path, format="JPEG", quality=95)


# ------------------------------------------------------------------------------------------------- omniart


def _omniart(folder, rows, header="id,image,artist,type,creation_year,school") -> None:
  """rows: (id, image, artist, type, year); each named image exists unless it starts with 'gone'."""
  folder.mkdir(exist_ok=True)
  lines = [header]
  for n, (item_id, image, artist, kind, year) in enumerate(rows):
    if image and not image.startswith("gone"):
      _jpeg(str(folder / image), n)
    lines.append(f"{item_id},{image},{artist},{kind},{year},x")
  (folder / "omniart_metadata.csv").write_text("\n".join(lines) + "\n")


def _art_rows() -> list[tuple[str, str, str, str, str]]:
  """30 good rows (3 artists x 2 types) + 3 missing a field + rare artist + rare type + a missing image."""
  rows = [(f"a{i:02d}", f"img/a{i:02d}.jpg", f"artist{i % 3}", ("painting", "print")[i % 2], str(1800 + i))
          for i in range(30)]
  rows += [("m1", "img/m1.jpg", "", "painting", "1900"), ("m2", "img/m2.jpg", "artist0", "", "1900"),
           ("m3", "img/m3.jpg", "artist0", "print", "")]
  rows += [("r1", "img/r1.jpg", "loner", "painting", "1700")]  # the only image of its artist
  rows += [("r2", "img/r2.jpg", "artist1", "sculpture", "1700")]  # the only sculpture
  rows += [("g1", "gone/g1.jpg", "artist2", "print", "1950.0")]  # passes the filters, image missing
  return rows


def test_omniart_filters_and_splits(tmp_path):
  art, data_dir = tmp_path / "art", str(tmp_path / "tfds")
  _omniart(art, _art_rows())
  path = image_datasets.build_dataset("omniart", data_dir=data_dir, manual_dir=str(art), min_count=2)
  assert path.endswith(os.path.join("omniart", "min_2", "1.0.0"))
  stats = image_datasets.build_stats("omniart", data_dir=data_dir, min_count=2)
  assert stats["rows"] == 36 and stats["min_count"] == 2
  assert stats["skipped"] == {"missing_fields": 3, "rare_artist": 1, "rare_type": 1, "missing_image": 1}
  assert sum(stats["kept"].values()) == 30
  assert image_datasets.label_names("omniart", data_dir=data_dir, min_count=2, feature="artist") == [
      "artist0", "artist1", "artist2"]
  assert image_datasets.label_names("omniart", data_dir=data_dir, min_count=2, feature="type") == [
      "painting", "print"]

  # 31 items pass the filters (g1's image is missing later): 22/6/3 by the id hash, g1 among them.
  expected = image_datasets.split_by_hash([f"a{i:02d}" for i in range(30)] + ["g1"])
  got: dict[str, set[str]] = {}
  for split in ("train", "validation", "test"):
    source = image_datasets.data_source("omniart", data_dir=data_dir, split=split, min_count=2)
    examples = [source[i] for i in range(len(source))]
    got[split] = {e["item_id"] for e in examples}
    assert got[split] == {i for i, s in expected.items() if s == split and i != "g1"}
    for e in examples:
      n = int(e["item_id"][1:])
      assert e["image"].shape == (16, 16, 3) and e["year"] == 1800 + n
      assert e["artist"] == n % 3 and e["type"] == n % 2
  assert [sum(s == split for s in expected.values()) for split in got] == [22, 6, 3]
  assert sum(len(v) for v in got.values()) == 30 and set.union(*got.values()) == {f"a{i:02d}" for i in range(30)}
  assert "tensorflow" not in sys.modules


def test_omniart_split_is_deterministic_and_proportional():
  ids = [f"item{i}" for i in range(30)]
  split = image_datasets.split_by_hash(ids)
  assert split == image_datasets.split_by_hash(list(reversed(ids)))  # row order does not matter
  counts = {s: sum(v == s for v in split.values()) for s in ("train", "validation", "test")}
  assert counts == {"train": 21, "validation": 6, "test": 3}
  assert image_datasets.split_by_hash(ids, seed="other") != split  # the seed does shuffle


def test_omniart_default_min_count_strict_and_bad_year(tmp_path):
  art = tmp_path / "art"
  rows = _art_rows()
  _omniart(art, rows, header="image,artist,type,creation_year,school")  # no id column: ids are image paths
  rows = [r[1:] for r in rows]
  lines = ["image,artist,type,creation_year"] + [",".join(r) for r in rows]
  (art / "omniart_metadata.csv").write_text("\n".join(lines) + "\n")
  data_dir = str(tmp_path / "tfds")
  with pytest.raises(InputError, match=r"omniart_metadata\.csv, line 37: image 'gone/g1\.jpg' not found"):
    image_datasets.build_dataset("omniart", data_dir=data_dir, manual_dir=str(art), min_count=2, strict=True)
  image_datasets.build_dataset("omniart", data_dir=data_dir, manual_dir=str(art), min_count=2)
  source = image_datasets.data_source("omniart", data_dir=data_dir, min_count=2)
  assert source[0]["item_id"].startswith("img/a")

  # min_count 100 (the paper's): every artist is rare here, so nothing is left to write.
  rows_100 = image_datasets._OmniArtRows(str(art), 100)  # pylint: disable=protected-access
  assert rows_100.rows == [] and rows_100.skipped["rare_artist"] == 33

  lines[5] = "img/a04.jpg,artist1,painting,circa 1800"
  (art / "omniart_metadata.csv").write_text("\n".join(lines) + "\n")
  with pytest.raises(InputError, match=r"omniart_metadata\.csv, line 6: creation_year 'circa 1800'"):
    image_datasets.build_dataset("omniart", data_dir=str(tmp_path / "t2"), manual_dir=str(art), min_count=2)
  lines[5] = "img/a04.jpg,artist1,painting,1800,extra"
  (art / "omniart_metadata.csv").write_text("\n".join(lines) + "\n")
  with pytest.raises(InputError, match=r"omniart_metadata\.csv, line 6: more fields"):
    image_datasets.build_dataset("omniart", data_dir=str(tmp_path / "t3"), manual_dir=str(art), min_count=2)
  (art / "omniart_metadata.csv").write_text("image,artist,year\nx.jpg,a,1\n")
  with pytest.raises(InputError, match=r"missing column\(s\) type, creation_year"):
    image_datasets.build_dataset("omniart", data_dir=str(tmp_path / "t4"), manual_dir=str(art), min_count=2)
  with pytest.raises(InputError, match="min_count applies to omniart only"):
    image_datasets.build_dataset("deepfashion", data_dir=str(tmp_path / "t5"), manual_dir=str(art), min_count=2)
  assert "tensorflow" not in sys.modules


# --------------------------------------------------------------------------------------------- deepfashion

_CATEGORIES = [("Anorak", 1), ("Blazer", 1), ("Blouse", 1), ("Bomber", 1), ("Capris", 2), ("Dress", 3)]


def _deepfashion(folder, anno: str = "Anno_coarse") -> list[tuple[str, int, str]]:
  """6 categories, images of 2, 3 and 6 only; 7 images over train/val/test. Returns (image, label, status)."""
  items = [("img/Sheer_Blouse/img_00000001.jpg", 3, "train"), ("img/Sheer_Blouse/img_00000002.jpg", 3, "val"),
           ("img/Cropped_Blazer/img_00000001.jpg", 2, "train"), ("img/Cropped_Blazer/img_00000002.jpg", 2, "test"),
           ("img/Maxi_Dress/img_00000001.jpg", 6, "train"), ("img/Maxi_Dress/img_00000002.jpg", 6, "test"),
           ("img/Maxi_Dress/img_00000003.jpg", 6, "train")]
  for n, (image, _, _) in enumerate(items):
    _jpeg(str(folder / image), n)
  (folder / anno).mkdir(parents=True)
  (folder / "Eval").mkdir()
  (folder / anno / "list_category_cloth.txt").write_text(
      f"{len(_CATEGORIES)}\ncategory_name  category_type\n"
      + "".join(f"{name:<28}{kind}\n" for name, kind in _CATEGORIES))
  (folder / anno / "list_category_img.txt").write_text(
      f"{len(items)}\nimage_name  category_label\n" + "".join(f"{i:<60}{label}\n" for i, label, _ in items))
  (folder / "Eval" / "list_eval_partition.txt").write_text(
      f"{len(items)}\nimage_name  evaluation_status\n" + "".join(f"{i:<60}{s}\n" for i, _, s in items))
  return items


@pytest.mark.parametrize("anno", ["Anno_coarse", "Anno"])
def test_deepfashion_categories_and_partition(tmp_path, anno):
  fashion, data_dir = tmp_path / "df", str(tmp_path / "tfds")
  items = _deepfashion(fashion, anno)
  image_datasets.build_dataset("deepfashion", data_dir=data_dir, manual_dir=str(fashion))
  assert image_datasets.label_names("deepfashion", data_dir=data_dir) == ["Blazer", "Blouse", "Dress"]
  stats = image_datasets.build_stats("deepfashion", data_dir=data_dir)
  assert stats["original_labels"] == [2, 3, 6] and stats["skipped"] == {}
  assert stats["dropped_categories"] == ["Anorak", "Bomber", "Capris"]
  assert stats["kept"] == {"train": 4, "validation": 1, "test": 2}
  contiguous = {2: 0, 3: 1, 6: 2}
  want = {"train": "train", "val": "validation", "test": "test"}
  for split in ("train", "validation", "test"):
    source = image_datasets.data_source("deepfashion", data_dir=data_dir, split=split)
    got = {source[i]["item_id"]: source[i] for i in range(len(source))}
    assert set(got) == {i for i, _, s in items if want[s] == split}
    for image, label, _ in items:
      if image in got:
        assert got[image]["label"] == contiguous[label]
        assert got[image]["category_type"] == _CATEGORIES[label - 1][1]
        assert got[image]["image"].shape == (16, 16, 3)
  assert "tensorflow" not in sys.modules


def test_deepfashion_bad_lines_and_missing_images(tmp_path):
  fashion = tmp_path / "df"
  _deepfashion(fashion)
  img_list = fashion / "Anno_coarse" / "list_category_img.txt"
  good = img_list.read_text().splitlines()

  def build(tag: str, **kwargs) -> str:
    return image_datasets.build_dataset("deepfashion", data_dir=str(tmp_path / tag), manual_dir=str(fashion),
                                        **kwargs)

  for line, match in [("img/x.jpg 3 extra", r"line 5: 'img/x\.jpg 3 extra' has 3 fields"),
                      ("img/x.jpg three", r"line 5: category_label 'three' is not an integer in 1\.\.6"),
                      ("img/x.jpg 7", r"line 5: category_label '7' is not an integer")]:
    img_list.write_text("\n".join(good[:4] + [line] + good[5:]) + "\n")
    with pytest.raises(InputError, match=r"list_category_img\.txt, " + match):
      build("bad")
  img_list.write_text("\n".join(["8"] + good[1:]) + "\n")
  with pytest.raises(InputError, match=r"list_category_img\.txt, line 1: count '8' but 7 entries"):
    build("bad")
  img_list.write_text("\n".join([good[0], "image_name label"] + good[2:]) + "\n")
  with pytest.raises(InputError, match=r"list_category_img\.txt, line 2: header"):
    build("bad")
  img_list.write_text("\n".join(good) + "\n")
  partition = fashion / "Eval" / "list_eval_partition.txt"
  parts = partition.read_text().splitlines()
  partition.write_text("\n".join(parts[:3] + ["img/Sheer_Blouse/img_00000002.jpg gallery"] + parts[4:]) + "\n")
  with pytest.raises(InputError, match=r"list_eval_partition\.txt, line 4: evaluation_status 'gallery'"):
    build("bad")
  partition.write_text("\n".join(parts) + "\n")

  # A missing image: skipped and counted, or fatal with strict (which keeps the usable build).
  os.remove(fashion / "img" / "Maxi_Dress" / "img_00000003.jpg")
  path = build("ok")
  assert image_datasets.build_stats("deepfashion", data_dir=str(tmp_path / "ok"))["skipped"] == {
      "missing_image": 1}
  with pytest.raises(InputError, match=r"list_category_img\.txt, line 9: image 'img/Maxi_Dress/img_00000003"):
    build("ok", strict=True)
  assert os.path.isdir(path)
  assert len(image_datasets.data_source("deepfashion", data_dir=str(tmp_path / "ok"))) == 3
  assert not os.path.exists(tmp_path / "bad" / "deepfashion")
  assert "tensorflow" not in sys.modules
