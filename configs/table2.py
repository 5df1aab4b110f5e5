"""The rows of the paper's Table 2 (del Rio et al. 2018) on the default shop: `--config=configs/table2.py:<row>`.

  python -m launch.train --config=configs/table2.py:resnet_deep_ugallery --workdir=OUT
  python -m launch.sweep --config=configs/table2.py --workdir=OUT          # every row, one table

The paper fine-tunes ResNet50 on UGallery (its shop: tasks artist, medium) and on OmniArt (a large external
art dataset: artist, type, period). The default shop stands in for both, with real images and labels:
* 'shop' (UGallery's role): the shop's own Fashion-MNIST photos; 'artist' -> the real clothing `category`,
  'medium' -> `intensity`, the photo's mean pixel value (a regression target DERIVED FROM THE IMAGE: the
  default data has one real label per photo).
* 'external' (OmniArt's role): other Fashion-MNIST photos (the test split, none of them in the shop);
  'artist' -> `category`, 'type' -> `group` (4 coarse groups derived from the category), 'period' ->
  `intensity` (regression, like OmniArt's year).
With real data point the datasets elsewhere, e.g. `--config.datasets.external.name=omniart` and the
tasks' targets at `artist`, `type`, `year` (configs/README in README.md, 'Fine-tuning').

The backbone is EfficientNet-Lite0 with its real ImageNet weights, the one that ships here; the paper's
ResNet50 takes `--config.arch=resnet50 --config.layout=keras --config.weights=FILE.h5` (or a folder written
by launch.convert). Images are fine-tuned and embedded at `image_size` px (64 by default: CPU-sized).
"""

import ml_collections

from configs import evaluate as evaluate_config
from jaxrec.data import default_shop

# Task weights of the 'with task weights' rows: the artist-like task leads, as the paper found it the most
# useful; the derived tasks help at a lower weight. (The paper does not print its weights.)
TASK_WEIGHTS = {"category": 1.0, "group": 0.3, "intensity": 0.3}


def stage(dataset: str, tasks: dict, tune: str, learning_rate: float, max_epochs: int = 20, patience: int = 5,
          keep_best: bool = True) -> ml_collections.ConfigDict:
  """One training stage: `tasks` maps task name -> loss weight (w_i of loss = sum_i w_i L_i)."""
  return ml_collections.ConfigDict({
      "dataset": dataset, "tasks": ml_collections.ConfigDict(tasks), "tune": tune,
      "learning_rate": learning_rate, "max_epochs": max_epochs, "patience": patience, "keep_best": keep_best})


def base_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.name = ""
  config.arch = "efficientnet_lite0"
  config.layout = ""  # '' = the arch's first layout
  config.weights = ""  # '' = weights that ship with a package (Lite0); a weights file; or a launch.convert folder
  config.base_feature = ""  # the backbone feature under the shared layer; '' = the backbone's default (pool)
  config.image_size = 64  # px the photos are fine-tuned and embedded at (0 = the backbone's native size)
  config.batch_size = 32  # global, split over all devices of all processes
  config.seed = 0  # heads' initialisation and the epochs' shuffles
  config.hidden = (1024,)  # the shared representation layer(s)
  config.export_feature = "representation"  # what launch.extract reads from the exported model by default
  config.worker_count = 0  # > 0: decode images in that many processes
  config.log_every_s = 10.0  # progress lines
  config.checkpoint = ml_collections.ConfigDict({"every_steps": 0, "keep": 2})  # 0: at each epoch's end only

  config.datasets = ml_collections.ConfigDict()
  config.datasets.shop = ml_collections.ConfigDict({
      "name": "fashion_mnist", "data_dir": "~/tensorflow_datasets", "manual_dir": "",
      "limit": default_shop.num_items(), "train_split": "train", "validation_split": "",
      "validation_fraction": 0.2, "allow_missing_labels": False})
  config.datasets.external = ml_collections.ConfigDict({
      "name": "fashion_mnist", "data_dir": "~/tensorflow_datasets", "manual_dir": "",
      "limit": default_shop.num_items(), "train_split": "test", "validation_split": "",
      "validation_fraction": 0.2, "allow_missing_labels": False})

  # task name -> kind and target (a stored label or a derived target: jaxrec/train/targets.py)
  config.tasks = ml_collections.ConfigDict()
  config.tasks.category = ml_collections.ConfigDict({"kind": "classification", "target": "label"})
  config.tasks.group = ml_collections.ConfigDict({"kind": "classification", "target": "fashion_group"})
  config.tasks.intensity = ml_collections.ConfigDict({"kind": "regression", "target": "mean_intensity"})

  config.stage_order = ()  # stage names, run in this order; () = no training (fixed ImageNet features)
  config.stages = ml_collections.ConfigDict()

  # What the sweep evaluates the export on: the default shop's simulated log, the paper's protocol.
  config.shop = ml_collections.ConfigDict({"num_users": default_shop.CONFIG.num_users,
                                           "initial_stock": default_shop.CONFIG.initial_stock})
  config.evaluate = evaluate_config.get_config()
  return config


SHOP_BOTH = {"category": 1.0, "intensity": 1.0}  # UGallery: artist + medium
SHOP_ARTIST = {"category": 1.0}
SHOP_MEDIUM = {"intensity": 1.0}
EXTERNAL_ALL = {"category": 1.0, "group": 1.0, "intensity": 1.0}  # OmniArt: artist + type + period

# row -> (the paper's name, {stage name: stage}); lr 1e-4 on the shop (small), 1e-3 on the external set.
ROWS = {
    "resnet_deep_ugallery": ("ResNet-deep-fine-tune-ugallery", {"shop": stage("shop", SHOP_BOTH, "deep", 1e-4)}),
    "resnet_deep_ugallery_only_artist": ("ResNet-deep-fine-tune-ugallery-only-artist",
                                         {"shop": stage("shop", SHOP_ARTIST, "deep", 1e-4)}),
    "omniart_deep_ugallery": ("Omniart-deep-fine-tune-ugallery",
                              {"external": stage("external", TASK_WEIGHTS, "shallow", 1e-3),
                               "shop": stage("shop", SHOP_BOTH, "deep", 1e-4)}),
    "resnet": ("ResNet", {}),  # fixed ImageNet features: no training
    "omniart_shallow_with_task_weights": ("Omniart-shallow-with-task-weights",
                                          {"external": stage("external", TASK_WEIGHTS, "shallow", 1e-3)}),
    "resnet_shallow_ugallery_only_artist": ("ResNet-shallow-fine-tune-ugallery-only-artist",
                                            {"shop": stage("shop", SHOP_ARTIST, "shallow", 1e-4)}),
    "resnet_shallow_ugallery": ("ResNet-shallow-fine-tune-ugallery",
                                {"shop": stage("shop", SHOP_BOTH, "shallow", 1e-4)}),
    "resnet_shallow_ugallery_only_medium": ("ResNet-shallow-fine-tune-ugallery-only-medium",
                                            {"shop": stage("shop", SHOP_MEDIUM, "shallow", 1e-4)}),
    "omniart_shallow_only_type": ("Omniart-shallow-only-type",
                                  {"external": stage("external", {"group": 1.0}, "shallow", 1e-3)}),
    "omniart_shallow_no_task_weights": ("Omniart-shallow-no-task-weights",
                                        {"external": stage("external", EXTERNAL_ALL, "shallow", 1e-3)}),
    "omniart_shallow_only_artist": ("Omniart-shallow-only-artist",
                                    {"external": stage("external", {"category": 1.0}, "shallow", 1e-3)}),
    "resnet_deep_ugallery_only_medium": ("ResNet-deep-fine-tune-ugallery-only-medium",
                                         {"shop": stage("shop", SHOP_MEDIUM, "deep", 1e-4)}),
    "omniart_shallow_only_period": ("Omniart-shallow-only-period",
                                    {"external": stage("external", {"intensity": 1.0}, "shallow", 1e-3)}),
}


def get_config(row: str = "resnet_deep_ugallery") -> ml_collections.ConfigDict:
  if row not in ROWS:
    raise ValueError(f"unknown Table 2 row {row!r}; expected one of {', '.join(ROWS)}")
  config = base_config()
  config.name, stages = ROWS[row]
  config.row = row
  config.stage_order = tuple(stages)
  for name, value in stages.items():
    config.stages[name] = value
  return config
