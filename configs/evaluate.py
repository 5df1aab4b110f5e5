"""Evaluate item embeddings on a purchase log with the replay protocol (one Table 1 row).

  python -m launch.evaluate --config=configs/evaluate.py --config.dataset.format=ugallery \
      --config.dataset.dir=DIR --config.embeddings=FILE --workdir=OUT

Defaults evaluate the sample shop that ships with the package.
"""

import ml_collections

from jaxrec.data import SAMPLE_SHOP_DIR


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.dataset = ml_collections.ConfigDict()
  config.dataset.format = "jaxrec"  # jaxrec | ugallery
  config.dataset.dir = str(SAMPLE_SHOP_DIR)
  config.dataset.strict = False  # True: duplicate purchase rows are an error instead of a counted skip
  # '' = the dataset's own file (jaxrec: DIR/embeddings.npz; ugallery: DIR/ugallery_resnet50_embeddings.npy);
  # 'random' = the Random baseline; else a .npz or .npy path.
  config.embeddings = ""
  config.name = ""  # the row's name in tables; '' = derived from the embeddings
  config.k = 20
  config.extra_ks = ()  # more cut-offs to report, e.g. (5, 10)
  config.similarity = "cosine"  # cosine | euclidean
  config.profile = "max"  # max | mean | topk_mean
  config.profile_topk = 3  # k of topk_mean
  config.convention = "paper"  # paper | standard (trec_eval)
  config.universe = "purchased"  # purchased | all
  config.drop_profile_items = False
  config.ground_truth = "basket"  # basket | future
  config.seed = 0  # the Random baseline's shuffle
  config.block_size = 256  # transactions scored together (at most)
  config.block_rows = 256  # profile items per block (at most, unless one profile is larger)
  config.chunk_size = 2048  # candidates scored together (at most)
  return config
