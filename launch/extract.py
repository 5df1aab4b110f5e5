"""Extracts item embeddings from a dataset's images with a converted backbone; writes WORKDIR/embeddings.npz.

  python -m launch.extract --config=configs/extract.py --config.checkpoint=DIR \
      --config.dataset.name=NAME --workdir=OUT
"""

import os
from typing import Any, Iterable

from absl import app, flags, logging
from ml_collections import config_flags

from jaxrec import extract, io_utils
from jaxrec.data.embeddings import read_embeddings
from jaxrec.errors import InputError, run_main
from jaxrec.models import store

_CONFIG = config_flags.DEFINE_config_file(
    "config", os.path.join(os.path.dirname(__file__), "..", "configs", "extract.py"), "Extraction config.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Folder for embeddings.npz and config.json.", required=True)
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Replace embeddings of another checkpoint or feature.")

OUTPUT = "embeddings.npz"


def _batches(config, size: int) -> tuple[Iterable[dict[str, Any]], int]:
  """(batches of {'image', 'item_id', 'mask'} at `size` px, number of images); builds the dataset if needed.

  Imported here so that this module (and its tests) load without TFDS and grain.
  """
  from jaxrec.data.image_datasets import build_dataset, data_source
  from jaxrec.data.pipeline import image_batches
  ds = config.dataset
  data_dir = os.path.expanduser(ds.data_dir)
  limit = ds.limit or None
  build_dataset(ds.name, data_dir=data_dir, manual_dir=ds.manual_dir or None, limit=limit)
  source = data_source(ds.name, data_dir=data_dir, split=ds.split, limit=limit)
  return image_batches(source, size=size, batch_size=config.batch_size, worker_count=config.worker_count), len(source)


def _check_workdir(path: str, checkpoint: str, feature: str) -> None:
  """Refuses to replace embeddings of another checkpoint or feature (a re-run of the same one is fine)."""
  if not os.path.exists(path) or _OVERWRITE.value:
    return
  try:
    previous = read_embeddings(path).metadata
  except InputError:
    previous = {}
  found = (str(previous.get("checkpoint", "")), str(previous.get("feature", "")))
  if found != (checkpoint, feature):
    raise InputError(f"{path} holds embeddings of checkpoint {found[0] or '?'} feature {found[1] or '?'}, not "
                     f"{checkpoint} feature {feature}; choose another --workdir or pass --overwrite")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  config = _CONFIG.value
  if not config.checkpoint:
    raise InputError("config.checkpoint: the backbone folder is required (write one with launch.convert)")
  if not config.dataset.name:
    raise InputError("config.dataset.name: the image dataset is required")
  if config.batch_size <= 0:
    raise InputError(f"config.batch_size: must be positive, got {config.batch_size}")
  checkpoint = os.path.abspath(config.checkpoint)
  backbone, variables, backbone_meta = store.load_backbone(checkpoint)
  if config.arch and config.arch != backbone.arch:
    raise InputError(f"config.arch is {config.arch!r} but {checkpoint} holds {backbone.arch!r}")
  feature = extract.resolve_feature(backbone, config.feature)
  path = os.path.join(_WORKDIR.value, OUTPUT)
  _check_workdir(path, checkpoint, feature)

  size = config.image_size or backbone.preprocessing.size
  batches, total = _batches(config, size)
  metadata = {"checkpoint": checkpoint, "checkpoint_source_sha256": backbone_meta.get("source_sha256") or "",
              "dataset": config.dataset.name, "split": config.dataset.split}
  item_ids, vectors = extract.extract_to_file(path, backbone, variables, batches, feature=feature,
                                              metadata=metadata, total=total)
  io_utils.write_json(os.path.join(_WORKDIR.value, "config.json"), config.to_dict())
  logging.info("wrote %s", path)
  print(f"{len(item_ids)} items x {vectors.shape[1]} ({backbone.arch} {feature}, {size} px) -> {path}")


if __name__ == "__main__":
  run_main(main)
