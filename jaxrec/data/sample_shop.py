"""The small shop that ships with the package (`jaxrec/data/sample_shop/`): a simulated log over
synthetic items with 64-d embeddings that see the items' categories and styles through noise.

It is the evaluator's embedded default data. Everything in it is simulated; rebuild it with
`python -m jaxrec.data.sample_shop --out=DIR` (a test checks that the shipped copy is what this builds).
"""

from __future__ import annotations

import os

from absl import app, flags

from jaxrec.data import SAMPLE_SHOP_DIR, simulate
from jaxrec.data.embeddings import write_embeddings
from jaxrec.data.purchase_logs import write_jaxrec_log

CONFIG = simulate.ShopConfig(num_users=300, initial_stock=300)
SEED = 0


def build(folder: str | os.PathLike) -> None:
  num_items = simulate.num_items_needed(CONFIG)
  categories, styles, embeddings = simulate.synthetic_items(num_items, seed=SEED)
  log = simulate.simulate_log(categories, styles, CONFIG, seed=SEED)
  write_jaxrec_log(folder, item_ids=log.item_ids, upload_times=log.upload_times, users=log.users,
                   times=log.times, purchased=log.items, item_columns={"category": categories})
  write_embeddings(os.path.join(folder, "embeddings.npz"), log.item_ids, embeddings,
                   arch="synthetic", feature="category+style+noise")


def main(argv):
  del argv
  build(flags.FLAGS.out)


if __name__ == "__main__":
  flags.DEFINE_string("out", str(SAMPLE_SHOP_DIR), "Folder to write items.csv, purchases.csv, embeddings.npz.")
  app.run(main)
