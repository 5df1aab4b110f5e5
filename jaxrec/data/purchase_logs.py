"""Purchase logs: items with upload times, purchases of items by users at times.

Two on-disk formats are read into one in-memory `PurchaseLog`:

* `jaxrec` (the project's own): `items.csv` with `item_id, upload_time` and optional `image`,
  `one_of_a_kind` and any metadata columns; `purchases.csv` with `user_id, time, item_id`.
* `ugallery` (the public release of the paper's lab): `ugallery_inventory.csv` with
  `artwork_id_hash, artist_id_hash, upload_timestamp`; `ugallery_purchases.csv` with
  `user_id_hash, purchase_timestamp` and `artwork_id_hash` (one id per row) or a list of ids per row
  (`['a', 'b']`, also under the column name `purchased_artwork_ids_hash`).

Times are numbers (any unit, e.g. Unix seconds) or ISO-8601 strings (converted to Unix seconds, UTC when
no zone is given). A basket is one user's purchases at one time. Bad rows raise `InputError` naming the
file, the line (1 = header) and the value; duplicate purchase rows are skipped with a logged count unless
`strict=True`.
"""

from __future__ import annotations

import collections
import csv
import dataclasses
import datetime
import io
import os
from typing import Iterable, Mapping, Sequence

import numpy as np
from absl import logging

from jaxrec import io_utils
from jaxrec.errors import InputError

FORMATS = ("jaxrec", "ugallery")


@dataclasses.dataclass(frozen=True)
class Items:
  """The inventory. Arrays are aligned; `lines` are the 1-based line numbers in `source`."""

  ids: np.ndarray  # str, unique
  upload_time: np.ndarray  # float64
  one_of_a_kind: np.ndarray | None  # bool per item when a column says so; None: bought exactly once
  images: np.ndarray | None  # str image paths, relative to the log folder ('' = none); None: no column
  metadata: Mapping[str, np.ndarray]
  source: str
  lines: np.ndarray

  def __len__(self) -> int:
    return len(self.ids)


@dataclasses.dataclass(frozen=True)
class Purchases:
  """One row per (user, time, item)."""

  users: np.ndarray  # str
  times: np.ndarray  # float64
  items: np.ndarray  # str
  source: str
  lines: np.ndarray

  def __len__(self) -> int:
    return len(self.items)


@dataclasses.dataclass(frozen=True)
class PurchaseLog:
  items: Items
  purchases: Purchases
  # What validation dropped, by reason (e.g. {'duplicate_purchase_rows': 3}).
  skipped: Mapping[str, int] = dataclasses.field(default_factory=dict)

  def item_index(self) -> dict[str, int]:
    return {item_id: i for i, item_id in enumerate(self.items.ids)}


def parse_time(value: str, *, source: str, line: int, column: str) -> float:
  """A number, or an ISO-8601 date/time converted to Unix seconds (UTC when no zone is given)."""
  text = value.strip()
  try:
    return float(text)
  except ValueError:
    pass
  try:
    stamp = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
  except ValueError:
    raise InputError(
        f"{source}, line {line}: column {column!r} holds {value!r}, which is neither a number nor an "
        "ISO-8601 date/time") from None
  if stamp.tzinfo is None:
    stamp = stamp.replace(tzinfo=datetime.timezone.utc)
  return stamp.timestamp()


def _read_csv(path: str, required: Sequence[str], any_of: Sequence[Sequence[str]] = ()):
  """Rows of a CSV file as (line number, dict); checks that the required columns exist."""
  if not os.path.isfile(path):
    raise InputError(f"{path}: file not found")
  with open(path, newline="", encoding="utf-8-sig") as f:
    reader = csv.DictReader(f)
    header = reader.fieldnames or []
    missing = [c for c in required if c not in header]
    for alternatives in any_of:
      if not any(c in header for c in alternatives):
        missing.append(" or ".join(alternatives))
    if missing:
      raise InputError(f"{path}: missing column(s) {', '.join(missing)} (found: {', '.join(header) or 'none'})")
    rows = []
    for row in reader:
      if None in row:  # more fields than the header names
        raise InputError(f"{path}, line {reader.line_num}: more fields than the header's {len(header)}")
      rows.append((reader.line_num, row))
  return header, rows


def _required(row: Mapping[str, str | None], column: str, path: str, line: int) -> str:
  value = row.get(column)
  if value is None or not value.strip():
    raise InputError(f"{path}, line {line}: empty value in column {column!r}")
  return value.strip()


_TRUE = {"1", "true", "yes", "y", "t"}
_FALSE = {"0", "false", "no", "n", "f"}


def _parse_bool(value: str, path: str, line: int, column: str) -> bool:
  text = value.strip().lower()
  if text in _TRUE:
    return True
  if text in _FALSE:
    return False
  raise InputError(f"{path}, line {line}: column {column!r} holds {value!r}; expected true/false or 1/0")


def _items_from_rows(path, header, rows, id_col, time_col, image_col=None, unique_col=None) -> Items:
  ids, times, lines = [], [], []
  for line, row in rows:
    ids.append(_required(row, id_col, path, line))
    times.append(parse_time(_required(row, time_col, path, line), source=path, line=line, column=time_col))
    lines.append(line)
  one_of_a_kind = None
  if unique_col and unique_col in header:
    one_of_a_kind = np.array([_parse_bool(_required(r, unique_col, path, l), path, l, unique_col)
                              for l, r in rows], dtype=bool)
  images = None
  if image_col and image_col in header:
    images = np.array([(r.get(image_col) or "").strip() for _, r in rows], dtype=object)
  special = {id_col, time_col, image_col, unique_col}
  metadata = {c: np.array([(r.get(c) or "") for _, r in rows], dtype=object)
              for c in header if c not in special}
  return Items(ids=np.array(ids, dtype=object), upload_time=np.array(times, dtype=np.float64),
               one_of_a_kind=one_of_a_kind, images=images, metadata=metadata, source=path,
               lines=np.array(lines, dtype=np.int64))


def _parse_id_list(value: str) -> list[str]:
  """`a` -> [a]; `['a', 'b']` or `[a,b]` -> [a, b]."""
  text = value.strip()
  if not text.startswith("["):
    return [text]
  inner = text.strip("[]")
  return [part.strip().strip("'\"").strip() for part in inner.split(",") if part.strip().strip("'\"").strip()]


def _purchases_from_rows(path, rows, user_col, time_col, item_cols: Iterable[str]) -> Purchases:
  users, times, items, lines = [], [], [], []
  item_cols = list(item_cols)
  for line, row in rows:
    user = _required(row, user_col, path, line)
    time = parse_time(_required(row, time_col, path, line), source=path, line=line, column=time_col)
    item_col = next(c for c in item_cols if c in row)
    ids = _parse_id_list(_required(row, item_col, path, line))
    if not ids:
      raise InputError(f"{path}, line {line}: column {item_col!r} holds an empty list of items")
    for item in ids:
      users.append(user)
      times.append(time)
      items.append(item)
      lines.append(line)
  return Purchases(users=np.array(users, dtype=object), times=np.array(times, dtype=np.float64),
                   items=np.array(items, dtype=object), source=path, lines=np.array(lines, dtype=np.int64))


def read_jaxrec_log(folder: str | os.PathLike, *, strict: bool = False) -> PurchaseLog:
  folder = os.fspath(folder)
  items_path = os.path.join(folder, "items.csv")
  header, rows = _read_csv(items_path, ["item_id", "upload_time"])
  items = _items_from_rows(items_path, header, rows, "item_id", "upload_time",
                           image_col="image", unique_col="one_of_a_kind")
  purchases_path = os.path.join(folder, "purchases.csv")
  _, rows = _read_csv(purchases_path, ["user_id", "time", "item_id"])
  purchases = _purchases_from_rows(purchases_path, rows, "user_id", "time", ["item_id"])
  return validate_log(items, purchases, strict=strict)


def read_ugallery_log(folder: str | os.PathLike, *, strict: bool = False) -> PurchaseLog:
  folder = os.fspath(folder)
  items_path = os.path.join(folder, "ugallery_inventory.csv")
  header, rows = _read_csv(items_path, ["artwork_id_hash", "upload_timestamp"])
  items = _items_from_rows(items_path, header, rows, "artwork_id_hash", "upload_timestamp")
  purchases_path = os.path.join(folder, "ugallery_purchases.csv")
  item_cols = ("artwork_id_hash", "purchased_artwork_ids_hash")
  _, rows = _read_csv(purchases_path, ["user_id_hash", "purchase_timestamp"], any_of=[item_cols])
  purchases = _purchases_from_rows(purchases_path, rows, "user_id_hash", "purchase_timestamp", item_cols)
  return validate_log(items, purchases, strict=strict)


def read_log(fmt: str, folder: str | os.PathLike, *, strict: bool = False) -> PurchaseLog:
  if fmt == "jaxrec":
    return read_jaxrec_log(folder, strict=strict)
  if fmt == "ugallery":
    return read_ugallery_log(folder, strict=strict)
  raise InputError(f"unknown purchase-log format {fmt!r}; expected one of {', '.join(FORMATS)}")


def validate_log(items: Items, purchases: Purchases, *, strict: bool = False) -> PurchaseLog:
  """Checks ids across the two files; drops duplicate purchase rows (an error when `strict`)."""
  first_line: dict[str, int] = {}
  for item_id, line in zip(items.ids, items.lines):
    if item_id in first_line:
      raise InputError(f"{items.source}, line {line}: item id {item_id!r} repeats line {first_line[item_id]}")
    first_line[item_id] = int(line)
  if len(items) == 0:
    raise InputError(f"{items.source}: no items")
  if len(purchases) == 0:
    raise InputError(f"{purchases.source}: no purchases")

  keep = np.ones(len(purchases), dtype=bool)
  seen: dict[tuple[str, float, str], int] = {}
  for row, (user, time, item, line) in enumerate(
      zip(purchases.users, purchases.times, purchases.items, purchases.lines)):
    if item not in first_line:
      raise InputError(f"{purchases.source}, line {line}: item id {item!r} is not in {items.source}")
    key = (user, float(time), item)
    if key in seen:
      if strict:
        raise InputError(f"{purchases.source}, line {line}: duplicate purchase of item {item!r} by user "
                         f"{user!r} at time {time!r} (first on line {seen[key]})")
      keep[row] = False
    else:
      seen[key] = int(line)
  skipped = {}
  if not keep.all():
    skipped["duplicate_purchase_rows"] = int((~keep).sum())
    logging.warning("%s: skipped %d duplicate purchase row(s) (set strict=True to make this an error)",
                    purchases.source, skipped["duplicate_purchase_rows"])
    purchases = dataclasses.replace(
        purchases, users=purchases.users[keep], times=purchases.times[keep], items=purchases.items[keep],
        lines=purchases.lines[keep])
  return PurchaseLog(items=items, purchases=purchases, skipped=skipped)


def purchase_counts(log: PurchaseLog) -> collections.Counter:
  return collections.Counter(log.purchases.items.tolist())


def one_of_a_kind_mask(log: PurchaseLog) -> np.ndarray:
  """Per item: True if it leaves the stock when bought. From the `one_of_a_kind` column when present,
  else an item is one-of-a-kind when it is bought exactly once (as in the authors' CuratorNet code)."""
  if log.items.one_of_a_kind is not None:
    return log.items.one_of_a_kind
  counts = purchase_counts(log)
  return np.array([counts.get(item_id, 0) == 1 for item_id in log.items.ids], dtype=bool)


def write_jaxrec_log(folder: str | os.PathLike, *, item_ids: Sequence[str], upload_times: Sequence[float],
                     users: Sequence[str], times: Sequence[float], purchased: Sequence[str],
                     item_columns: Mapping[str, Sequence] | None = None) -> None:
  """Writes `items.csv` and `purchases.csv` in the project's format (each file atomically)."""
  folder = os.fspath(folder)
  item_columns = dict(item_columns or {})
  columns = ["item_id", "upload_time", *item_columns]

  def render(header, rows) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buf.getvalue()

  item_rows = [[item_id, _fmt_time(t), *(item_columns[c][i] for c in item_columns)]
               for i, (item_id, t) in enumerate(zip(item_ids, upload_times))]
  io_utils.write_text(os.path.join(folder, "items.csv"), render(columns, item_rows))
  purchase_rows = [[u, _fmt_time(t), i] for u, t, i in zip(users, times, purchased)]
  io_utils.write_text(os.path.join(folder, "purchases.csv"), render(["user_id", "time", "item_id"], purchase_rows))


def _fmt_time(t: float) -> str:
  return str(int(t)) if float(t).is_integer() else repr(float(t))
