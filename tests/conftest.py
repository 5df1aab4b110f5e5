import os
import sys

# Tests run on the CPU; the multi-device tests of later stages set their own XLA_FLAGS in subprocesses.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # launch/, configs/


def write_csv(path, header, rows):
  import csv
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(header)
    w.writerows(rows)
  return path


def write_log(folder, items, purchases, item_header=("item_id", "upload_time")):
  """items: rows of items.csv; purchases: (user_id, time, item_id) rows."""
  os.makedirs(folder, exist_ok=True)
  write_csv(os.path.join(folder, "items.csv"), item_header, items)
  write_csv(os.path.join(folder, "purchases.csv"), ("user_id", "time", "item_id"), purchases)
  return folder
