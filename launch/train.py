"""Fine-tunes a backbone (one row of Table 2, or the Hnot pipeline) and exports the embedding model.

  python -m launch.train --config=configs/table2.py:resnet_deep_ugallery --workdir=OUT
  python -m launch.extract --config.checkpoint=OUT/export --config.dataset.name=fashion_mnist \\
      --config.dataset.limit=2998 --workdir=OUT/embeddings
  python -m launch.evaluate --config.dataset.dir=OUT/shop --config.embeddings=OUT/embeddings/embeddings.npz \\
      --workdir=OUT/evaluation

Writes OUT/checkpoints (orbax: the last N saves and the best), OUT/tensorboard, OUT/metrics.jsonl,
OUT/export (backbone + shared layer, read by launch.extract), OUT/summary.json, and for the default data
OUT/shop (the default shop's purchase log, for launch.evaluate). Run the same command again after a crash
or a kill to resume. Multi-host (TPU pods, GPU clusters): pass --multihost on every host (README,
'Fine-tuning on several hosts').
"""

import os

from absl import app, flags
from ml_collections import config_flags

from jaxrec.errors import run_main

_CONFIG = config_flags.DEFINE_config_file(
    "config", os.path.join(os.path.dirname(__file__), "..", "configs", "table2.py"), "Training config.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Folder of this run (checkpoints, export, logs).", required=True)
_MULTIHOST = flags.DEFINE_bool("multihost", False, "Call jax.distributed.initialize() before anything else.")
_COORDINATOR = flags.DEFINE_string("coordinator_address", None, "host:port of process 0 (multihost; default: "
                                   "auto-detected on TPU pods, SLURM and Open MPI clusters).")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Number of processes (multihost).")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index (multihost).")
_CPU_COLLECTIVES = flags.DEFINE_string("cpu_collectives", "", "'gloo' for multi-process runs on CPUs.")
_WRITE_SHOP = flags.DEFINE_bool("write_shop", True, "With the default data, also write OUT/shop (the purchase log).")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  from jaxrec import parallel
  if _MULTIHOST.value:
    parallel.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value, _CPU_COLLECTIVES.value)
  from jaxrec.train import loop
  config = _CONFIG.value
  summary = loop.train(config, _WORKDIR.value)
  if _WRITE_SHOP.value:
    loop.write_default_shop(config, _WORKDIR.value)
  import jax
  if summary.get("history") and jax.process_index() == 0:
    last = summary["history"][-1]
    print(f"done: {summary['steps']} steps, last validation loss {last['val_loss']:.4f}; export "
          f"{summary['export']}")


if __name__ == "__main__":
  run_main(main)
