"""Purchase logs, embeddings files and the purchase-log simulator."""

import pathlib

# A small simulated shop that ships with the package: the evaluator's embedded default data.
SAMPLE_SHOP_DIR = pathlib.Path(__file__).parent / "sample_shop"
