"""Extraction: the input pipeline's cost on the default data.

  python -m benchmarks.extraction_benchmark --images=1024 --batch_size=32

Same process, same jitted extractor (`jaxrec.extract.extract`), same Lite0 weights and batch size:
(a) batches streamed from the TFDS array_record Fashion-MNIST dataset through the grain pipeline (read,
decode, resize to 224 px, batch), (b) the same batches materialised in memory first (the pure forward).
The pipeline's cost is 1 - (a)/(b) in images/s (goal: under 10%).
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time

from absl import app, flags

from jaxrec import extract
from jaxrec.convert.dispatch import convert_weights
from jaxrec.data import image_datasets
from jaxrec.data.pipeline import image_batches

_IMAGES = flags.DEFINE_integer("images", 1024, "Fashion-MNIST images to extract.")
_BATCH = flags.DEFINE_integer("batch_size", 32, "Batch size.")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Alternated measurements of each (medians reported).")
_WORKERS = flags.DEFINE_integer("worker_count", 0, "grain worker processes (0: in the main process).")


def _rate(fn) -> float:
  t = time.perf_counter()
  n = len(fn()[0])
  return n / (time.perf_counter() - t)


def main(argv):
  del argv
  backbone, variables = convert_weights("efficientnet_lite0", None, None)
  source_dir = image_datasets.ensure_fashion_mnist()
  with tempfile.TemporaryDirectory() as data_dir:
    image_datasets.build_dataset("fashion_mnist", data_dir=data_dir, manual_dir=source_dir, limit=_IMAGES.value)
    source = image_datasets.data_source("fashion_mnist", data_dir=data_dir, split="train", limit=_IMAGES.value)
    size = backbone.preprocessing.size

    def stream():
      return image_batches(source, size=size, batch_size=_BATCH.value, worker_count=_WORKERS.value)

    in_memory = list(stream())
    extract.extract(backbone, variables, in_memory[:1])  # compile once; later calls hit jax's cache
    pures, pipeds = [], []
    for _ in range(_REPEATS.value):  # alternated, so drifting machine load hits both alike
      pures.append(_rate(lambda: extract.extract(backbone, variables, in_memory)))
      pipeds.append(_rate(lambda: extract.extract(backbone, variables, stream())))
    pure, piped = statistics.median(pures), statistics.median(pipeds)
  print(f"efficientnet_lite0, {len(source)} Fashion-MNIST images at {size} px, batch {_BATCH.value}, "
        f"{_WORKERS.value} grain workers, {os.cpu_count()} CPUs")
  print(f"pure forward (batches in memory): {pure:.1f} images/s ({', '.join(f'{r:.1f}' for r in pures)})")
  print(f"with the input pipeline:          {piped:.1f} images/s ({', '.join(f'{r:.1f}' for r in pipeds)})"
        f"  -> pipeline cost {1 - piped / pure:.1%}")


if __name__ == "__main__":
  app.run(main)
