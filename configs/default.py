"""The offline default run (`python -m launch.main`): real Fashion-MNIST photos as one-of-a-kind items,
a simulated purchase log, EfficientNet-Lite0 with its real ImageNet weights, the paper's protocol.

Variants: `configs/table1.py:<row>` (the paper's Table 1 rows).
"""

import ml_collections

from configs import evaluate as evaluate_config
from jaxrec.data import default_shop


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.name = "EfficientNet-Lite0"  # the row's name in the table
  config.arch = "efficientnet_lite0"
  config.layout = ""  # '' = the arch's first layout
  config.weights = ""  # '' = the weights that ship with an installed package (Lite0 only)
  config.feature = ""  # '' = the backbone's default feature
  config.batch_size = 32
  config.image_size = 0  # px the photos are embedded at; 0 = the backbone's input size
  config.dataset = ml_collections.ConfigDict()
  config.dataset.name = "fashion_mnist"
  config.dataset.source_dir = "/usr/share/datasets/fashion-mnist"
  config.dataset.num_items = default_shop.num_items()  # photos used: what the simulated shop needs
  # The simulated shop (jaxrec.data.simulate.ShopConfig); the defaults give ~3,000 items, ~1,000 in stock.
  config.shop = ml_collections.ConfigDict()
  config.shop.num_users = default_shop.CONFIG.num_users
  config.shop.initial_stock = default_shop.CONFIG.initial_stock
  config.evaluate = evaluate_config.get_config()  # k, profile, convention, ... (dataset keys unused here)
  config.grid_users = 8  # users shown in recommendations.png
  config.grid_k = 10  # recommendations shown per user
  return config
