"""Name -> backbone: the Flax module, its preprocessing, its named features.

Each backbone carries its preprocessing, so extraction and training cannot pair weights with the wrong
input scaling or channel order.
"""

from __future__ import annotations

import dataclasses
from typing import Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxrec.errors import InputError


@dataclasses.dataclass(frozen=True)
class Preprocessing:
  """Input of a backbone: `size` x `size` images, (pixel - mean) / std on the 0-255 scale, per channel in
  the model's channel order."""

  size: int
  channel_order: str  # 'RGB' or 'BGR'
  mean: tuple[float, float, float]
  std: tuple[float, float, float]
  name: str

  def __call__(self, rgb: jax.Array | np.ndarray) -> jax.Array:
    """RGB pixels in [0, 255], NHWC (any size) -> the model's input, float32."""
    x = jnp.asarray(rgb, jnp.float32)
    if self.channel_order == "BGR":
      x = x[..., ::-1]
    return (x - jnp.asarray(self.mean, jnp.float32)) / jnp.asarray(self.std, jnp.float32)


# torchvision: RGB / 255, ImageNet mean and std.
TORCH = Preprocessing(224, "RGB", (0.485 * 255, 0.456 * 255, 0.406 * 255), (0.229 * 255, 0.224 * 255, 0.225 * 255),
                      "torch")
# Keras 'caffe' mode (ResNet50, VGG19): RGB -> BGR, subtract the BGR means, no scaling.
CAFFE = Preprocessing(224, "BGR", (103.939, 116.779, 123.68), (1.0, 1.0, 1.0), "caffe")
# EfficientNet-Lite: (x - 127) / 128.
LITE = Preprocessing(224, "RGB", (127.0, 127.0, 127.0), (128.0, 128.0, 128.0), "lite")
# Keras 'tf' mode (InceptionV3, InceptionResNetV2, NASNet): x / 127.5 - 1, i.e. (x - 127.5) / 127.5.
INCEPTION = Preprocessing(299, "RGB", (127.5, 127.5, 127.5), (127.5, 127.5, 127.5), "inception")


@dataclasses.dataclass(frozen=True)
class Backbone:
  arch: str
  layout: str
  module: nn.Module
  preprocessing: Preprocessing
  features: Mapping[str, int | None]  # name -> vector size (None: a spatial map)
  default_feature: str

  def abstract_variables(self, size: int | None = None, batch: int = 1):
    """Shapes and dtypes of the variables, without running init (ResNet50's init takes ~15 s on CPU)."""
    size = size or self.preprocessing.size
    x = jax.ShapeDtypeStruct((batch, size, size, 3), jnp.float32)
    return jax.eval_shape(lambda x: self.module.init(jax.random.PRNGKey(0), x), x)


def _resnet50(layout: str, include_top: bool) -> Backbone:
  from jaxrec.models.resnet import ResNet
  return Backbone("resnet50", layout, ResNet(layout=layout, num_classes=1000 if include_top else 0),
                  TORCH if layout == "torchvision" else CAFFE,
                  {"pool": 2048, **({"logits": 1000} if include_top else {})}, "pool")


def _vgg19(layout: str, include_top: bool) -> Backbone:
  from jaxrec.models.vgg import VGG
  features = {"pool5": None, **({"fc6": 4096, "fc7": 4096, "logits": 1000} if include_top else {})}
  return Backbone("vgg19", layout, VGG(layout=layout, include_top=include_top),
                  TORCH if layout == "torchvision" else CAFFE, features, "fc7" if include_top else "pool5")


def _efficientnet_lite0(layout: str, include_top: bool) -> Backbone:
  from jaxrec.models.efficientnet_lite import EfficientNetLite0
  return Backbone("efficientnet_lite0", layout, EfficientNetLite0(num_classes=1000 if include_top else 0), LITE,
                  {"pool": 1280, **({"logits": 1000} if include_top else {})}, "pool")


def _inception_v3(layout: str, include_top: bool) -> Backbone:
  from jaxrec.models.inception_v3 import InceptionV3
  return Backbone("inception_v3", layout, InceptionV3(num_classes=1000 if include_top else 0), INCEPTION,
                  {"mixed7": None, "mixed10": None, "pool": 2048, **({"logits": 1000} if include_top else {})},
                  "pool")


def _inception_resnet_v2(layout: str, include_top: bool) -> Backbone:
  from jaxrec.models.inception_resnet_v2 import InceptionResNetV2
  return Backbone("inception_resnet_v2", layout, InceptionResNetV2(num_classes=1000 if include_top else 0),
                  INCEPTION, {"mixed_6a": None, "mixed_7a": None, "conv_7b": None, "pool": 1536,
                              **({"logits": 1000} if include_top else {})}, "pool")


def _nasnet_large(layout: str, include_top: bool) -> Backbone:
  from jaxrec.models.nasnet import NASNet
  return Backbone("nasnet_large", layout, NASNet(num_classes=1000 if include_top else 0),
                  dataclasses.replace(INCEPTION, size=331),
                  {"pool": 4032, **({"logits": 1000} if include_top else {})}, "pool")


def _lite0_tiny(layout: str, include_top: bool) -> Backbone:
  """Lite0's first three stages, one block each, for tests and smoke runs (random weights, nothing to load)."""
  from jaxrec.models.efficientnet_lite import LITE0_STAGES, EfficientNetLite0
  stages = tuple(s._replace(repeats=1) for s in LITE0_STAGES[:3])
  return Backbone("lite0_tiny", layout, EfficientNetLite0(num_classes=1000 if include_top else 0, stages=stages),
                  LITE, {"pool": 1280, **({"logits": 1000} if include_top else {})}, "pool")


def with_representation(backbone: Backbone, base_feature: str, hidden: tuple[int, ...],
                        default_feature: str = "representation") -> Backbone:
  """A fine-tuned model's export: the backbone plus its shared layer(s) ('hidden_<i>', 'representation')."""
  from jaxrec.train.model import REPRESENTATION, EmbeddingModel
  hidden = tuple(int(h) for h in hidden)
  features = {**backbone.features, **{f"hidden_{i}": h for i, h in enumerate(hidden)}, REPRESENTATION: hidden[-1]}
  if default_feature not in features:
    raise InputError(f"{backbone.arch} + shared layers {hidden}: no feature {default_feature!r}; expected one of "
                     f"{', '.join(features)}")
  return dataclasses.replace(backbone, module=EmbeddingModel(backbone.module, base_feature, hidden),
                             features=features, default_feature=default_feature)


# arch -> (layouts, builder)
ARCHS = {
    "resnet50": (("torchvision", "keras"), _resnet50),
    "vgg19": (("torchvision", "keras"), _vgg19),
    "efficientnet_lite0": (("lite",), _efficientnet_lite0),
    "inception_v3": (("keras",), _inception_v3),
    "inception_resnet_v2": (("keras",), _inception_resnet_v2),
    "nasnet_large": (("keras",), _nasnet_large),
    "lite0_tiny": (("lite",), _lite0_tiny),
}


def get_backbone(arch: str, layout: str | None = None, include_top: bool = True) -> Backbone:
  if arch not in ARCHS:
    raise InputError(f"unknown arch {arch!r}; expected one of {', '.join(ARCHS)}")
  layouts, build = ARCHS[arch]
  layout = layout or layouts[0]
  if layout not in layouts:
    raise InputError(f"{arch} has no layout {layout!r}; expected one of {', '.join(layouts)}")
  return build(layout, include_top)
