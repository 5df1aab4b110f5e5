"""The second seed paper's pipeline (Hnot 2018, "Recommendations Based on Visual Content") on the default shop.

  python -m launch.train --config=configs/hnot.py --workdir=OUT

ResNet50 without its classifier -> Dense 256 (ReLU) -> Dense 64 (ReLU) -> softmax over the categories,
trained in two stages of one run: the new layers only with the backbone frozen (10 epochs, Adam), then every
weight at a small learning rate (10 epochs). Features for nearest neighbours come from the 256-unit layer
(the paper: "the layer before the two last layers, which perform classification") and are compared by
Euclidean distance.

The paper trains 46 DeepFashion categories; the default shop has Fashion-MNIST's 10 (real labels). For
DeepFashion: `--config=configs/hnot.py:deepfashion --config.datasets.shop.manual_dir=DIR`. The paper's
"very small learning rate, like (0.001)" for the second stage is Adam's default rate; 1e-4 is used here
because Adam at 1e-3 on all weights wipes out much of what ImageNet taught the backbone on small data.
Backbone as in configs/table2.py: Lite0 with its real ImageNet weights unless --config.arch/weights say
otherwise.
"""

from configs import table2


def get_config(data: str = "default"):
  config = table2.base_config()
  config.name = "Hnot-ResNet50-256-64"
  config.row = "hnot"
  config.hidden = (256, 64)
  config.export_feature = "hidden_0"  # the 256-unit layer
  config.stage_order = ("frozen", "unfrozen")
  config.stages.frozen = table2.stage("shop", {"category": 1.0}, "shallow", 1e-3, max_epochs=10, patience=0,
                                      keep_best=False)
  config.stages.unfrozen = table2.stage("shop", {"category": 1.0}, "deep", 1e-4, max_epochs=10, patience=0,
                                        keep_best=False)
  config.evaluate.similarity = "euclidean"
  if data == "deepfashion":
    config.datasets.shop.name = "deepfashion"
    config.datasets.shop.limit = 0
    config.datasets.shop.validation_split = "validation"
  elif data != "default":
    raise ValueError(f"unknown hnot data {data!r}; expected default or deepfashion")
  return config
