"""Readers of both log formats and embeddings files, and a clear error (or counted skip) for bad input."""

import os

import numpy as np
import pytest

from conftest import write_csv, write_log
from jaxrec import evaluation
from jaxrec.data.embeddings import align, read_embeddings, validate_embeddings, write_embeddings
from jaxrec.data.purchase_logs import read_jaxrec_log, read_log, read_ugallery_log
from jaxrec.errors import InputError

ITEMS = [("a", 0), ("b", 0), ("c", 5)]
PURCHASES = [("u", 1, "a"), ("u", 6, "c"), ("v", 2, "b")]


def test_jaxrec_format_with_metadata_images_and_iso_times(tmp_path):
  folder = write_log(tmp_path, [("a", "2020-01-01T00:00:00", "a.jpg", "red"), ("b", "2020-01-02", "", "blue")],
                     [("u", "2020-01-03T12:00:00Z", "a")], item_header=("item_id", "upload_time", "image", "color"))
  log = read_jaxrec_log(folder)
  assert list(log.items.ids) == ["a", "b"]
  assert log.items.upload_time[0] == 1577836800.0 and log.items.upload_time[1] == 1577836800.0 + 86400
  assert list(log.items.images) == ["a.jpg", ""] and list(log.items.metadata["color"]) == ["red", "blue"]
  assert log.purchases.times[0] == 1577836800.0 + 2.5 * 86400


def _ugallery(tmp_path, purchase_rows, item_col="artwork_id_hash"):
  write_csv(tmp_path / "ugallery_inventory.csv", ("artwork_id_hash", "artist_id_hash", "upload_timestamp"),
            [("a", "x", 0), ("b", "x", 0), ("c", "y", 5)])
  write_csv(tmp_path / "ugallery_purchases.csv", ("user_id_hash", "purchase_timestamp", item_col), purchase_rows)
  return tmp_path


def test_ugallery_format_one_id_or_a_list_per_row(tmp_path):
  single = read_ugallery_log(_ugallery(tmp_path / "one", [("u", 1, "a"), ("u", 6, "c"), ("u", 6, "b")]))
  listed = read_ugallery_log(_ugallery(tmp_path / "list", [("u", 1, "['a']"), ("u", 6, "['c', 'b']")],
                                       item_col="purchased_artwork_ids_hash"))
  for log in (single, listed):
    assert list(log.purchases.items) == ["a", "c", "b"]
    assert list(log.items.metadata["artist_id_hash"]) == ["x", "x", "y"]
  assert listed.purchases.lines.tolist() == [2, 3, 3]


def test_ugallery_npy_embeddings(tmp_path):
  rows = np.empty((2, 2), dtype=object)
  rows[0] = ["a", np.ones(3)]
  rows[1] = ["b", np.arange(3.0)]
  np.save(tmp_path / "e.npy", rows, allow_pickle=True)
  emb = read_embeddings(tmp_path / "e.npy")
  assert list(emb.item_ids) == ["a", "b"] and emb.vectors.dtype == np.float32
  np.testing.assert_array_equal(emb.vectors[1], [0, 1, 2])


def test_npz_round_trip_keeps_metadata(tmp_path):
  write_embeddings(tmp_path / "e.npz", ["a", "b"], np.eye(2), arch="resnet50", feature="pool")
  emb = read_embeddings(tmp_path / "e.npz")
  assert emb.metadata == {"arch": "resnet50", "feature": "pool"}
  assert not [f for f in os.listdir(tmp_path) if f != "e.npz"]  # no temporary file left behind


@pytest.mark.parametrize("remove,match", [
    ("items.csv", r"items.csv: file not found"),
    ("purchases.csv", r"purchases.csv: file not found"),
])
def test_missing_file(tmp_path, remove, match):
  folder = write_log(tmp_path, ITEMS, PURCHASES)
  os.remove(os.path.join(folder, remove))
  with pytest.raises(InputError, match=match):
    read_jaxrec_log(folder)


def test_missing_column(tmp_path):
  write_csv(tmp_path / "items.csv", ("item_id", "uploaded"), ITEMS)
  write_csv(tmp_path / "purchases.csv", ("user_id", "time", "item_id"), PURCHASES)
  with pytest.raises(InputError, match=r"items.csv: missing column\(s\) upload_time \(found: item_id, uploaded\)"):
    read_jaxrec_log(tmp_path)


def test_unknown_item_in_purchases(tmp_path):
  folder = write_log(tmp_path, ITEMS, PURCHASES + [("v", 3, "zzz")])
  with pytest.raises(InputError, match=r"purchases.csv, line 5: item id 'zzz' is not in .*items.csv"):
    read_jaxrec_log(folder)


def test_duplicate_item_ids(tmp_path):
  folder = write_log(tmp_path, ITEMS + [("b", 9)], PURCHASES)
  with pytest.raises(InputError, match=r"items.csv, line 5: item id 'b' repeats line 3"):
    read_jaxrec_log(folder)


def test_bad_time_and_empty_value(tmp_path):
  with pytest.raises(InputError, match=r"items.csv, line 3: column 'upload_time' holds 'soon'"):
    read_jaxrec_log(write_log(tmp_path / "a", [("a", 0), ("b", "soon")], PURCHASES))
  with pytest.raises(InputError, match=r"purchases.csv, line 2: empty value in column 'user_id'"):
    read_jaxrec_log(write_log(tmp_path / "b", ITEMS, [("", 1, "a")]))


def test_duplicate_purchase_rows_are_skipped_and_counted_or_fatal(tmp_path):
  folder = write_log(tmp_path, ITEMS, PURCHASES + [("u", 6, "c")])
  log = read_jaxrec_log(folder)
  assert len(log.purchases) == 3 and log.skipped == {"duplicate_purchase_rows": 1}
  result = evaluation.evaluate(log, None, k=2)
  assert result.metrics["skipped"] == {"duplicate_purchase_rows": 1}
  with pytest.raises(InputError, match=r"line 5: duplicate purchase of item 'c' by user 'u' .*first on line 3"):
    read_jaxrec_log(folder, strict=True)


def test_unknown_format():
  with pytest.raises(InputError, match="unknown purchase-log format 'csv'"):
    read_log("csv", "/nonexistent")


def _embeddings(tmp_path, ids, vectors):
  np.savez(tmp_path / "e.npz", item_ids=np.array(ids), embeddings=np.array(vectors, np.float32))
  return tmp_path / "e.npz"


def test_item_without_embedding(tmp_path):
  log = read_jaxrec_log(write_log(tmp_path, ITEMS, PURCHASES))
  emb = read_embeddings(_embeddings(tmp_path, ["a", "b"], np.eye(2)))
  with pytest.raises(InputError, match=r"e.npz: no embedding for 1 item\(s\) of the log, e.g. 'c'"):
    evaluation.evaluate(log, emb)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nan_or_inf_embedding(tmp_path, bad):
  with pytest.raises(InputError, match=r"e.npz: 1 embedding\(s\) hold NaN or inf, first at row 1 \(item 'b'\)"):
    read_embeddings(_embeddings(tmp_path, ["a", "b"], [[1, 0], [bad, 1]]))


def test_zero_norm_embedding_is_an_error_for_cosine_only(tmp_path):
  log = read_jaxrec_log(write_log(tmp_path, ITEMS, PURCHASES))
  emb = read_embeddings(_embeddings(tmp_path, ["a", "b", "c"], [[1, 0], [0, 1], [0, 0]]))
  with pytest.raises(InputError, match=r"zero-norm embedding\(s\).*item 'c' \(row 2\)"):
    evaluation.evaluate(log, emb)
  evaluation.evaluate(log, emb, similarity="euclidean")  # a distance is defined


def test_malformed_embeddings_files(tmp_path):
  with pytest.raises(InputError, match="embeddings file not found"):
    read_embeddings(tmp_path / "none.npz")
  (tmp_path / "trunc.npz").write_bytes(b"PK\x03\x04garbage")
  with pytest.raises(InputError, match=r"trunc.npz: not a readable .npz"):
    read_embeddings(tmp_path / "trunc.npz")
  np.savez(tmp_path / "keys.npz", ids=np.array(["a"]), embeddings=np.ones((1, 2)))
  with pytest.raises(InputError, match=r"keys.npz: missing array\(s\) item_ids \(found: ids, embeddings\)"):
    read_embeddings(tmp_path / "keys.npz")
  with pytest.raises(InputError, match=r"2 item ids but 3 embedding rows"):
    validate_embeddings(["a", "b"], np.ones((3, 2)), source="x")
  with pytest.raises(InputError, match=r"item id 'a' at rows 0 and 1"):
    validate_embeddings(["a", "a"], np.ones((2, 2)), source="x")


def test_align_orders_rows_by_the_given_ids():
  emb = validate_embeddings(["a", "b", "c"], np.arange(6.0).reshape(3, 2) + 1, source="x")
  np.testing.assert_array_equal(align(emb, ["c", "a"]), [[5, 6], [1, 2]])
