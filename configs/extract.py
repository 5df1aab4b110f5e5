"""Extract item embeddings from product images with a converted backbone.

  python -m launch.extract --config=configs/extract.py --config.checkpoint=DIR \
      --config.dataset.name=NAME --workdir=OUT

writes OUT/embeddings.npz (item ids, float32 vectors, and the arch, layout, feature, checkpoint,
preprocessing and image size they came from).
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.checkpoint = ""  # a backbone folder written by launch.convert (required)
  config.arch = ""  # '' = the checkpoint's backbone.json; else a check that the checkpoint is this arch
  config.feature = ""  # '' = the backbone's default feature (e.g. pool, fc7); spatial maps are average-pooled
  config.image_size = 0  # 0 = the backbone's input size (224)
  config.batch_size = 32  # global; a multiple of the device count (the last batch is padded)
  config.worker_count = 0  # > 0: decode images in that many processes
  config.dataset = ml_collections.ConfigDict()
  config.dataset.name = ""  # shop_folder | fashion_mnist | omniart | deepfashion (jaxrec.data.image_datasets)
  config.dataset.data_dir = "~/tensorflow_datasets"  # where the built dataset lives
  config.dataset.manual_dir = ""  # shop_folder: the folder with items.csv; fashion_mnist: '' = the Debian package's
  config.dataset.split = "train"
  config.dataset.limit = 0  # fashion_mnist: > 0 = only the first `limit` images of each split (smoke runs)
  return config
