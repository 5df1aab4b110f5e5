"""ResNet50 in the two layouts whose ImageNet weights people have.

* `torchvision` (ResNet v1.5): the stride of a downsampling bottleneck sits in its 3x3 conv; no conv
  biases; BN eps 1e-5; stem conv padded 3 and max pool padded 1 (with -inf).
* `keras` (keras.applications.ResNet50, ResNet v1): the stride sits in the first 1x1 conv (and the
  shortcut); every conv has a bias; BN eps 1.001e-5; the stem is ZeroPadding(3) + conv + ZeroPadding(1)
  + max pool (zero padding after a ReLU equals -inf padding).

Parameter names follow torchvision (`conv1`, `bn1`, `layer1_0/conv1`, ..., `fc`); the converters map
both layouts' files onto them.
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxrec.models.layers import batch_norm, max_pool, pad2d

LAYOUTS = ("torchvision", "keras")
_EPS = {"torchvision": 1e-5, "keras": 1.001e-5}


class Bottleneck(nn.Module):
  filters: int
  stride: int
  layout: str
  downsample: bool

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    eps, bias = _EPS[self.layout], self.layout == "keras"
    s1, s2 = (self.stride, 1) if self.layout == "keras" else (1, self.stride)
    y = nn.Conv(self.filters, (1, 1), (s1, s1), padding="VALID", use_bias=bias, name="conv1")(x)
    y = nn.relu(batch_norm(train, eps, "bn1")(y))
    y = nn.Conv(self.filters, (3, 3), (s2, s2), padding=((1, 1), (1, 1)), use_bias=bias, name="conv2")(y)
    y = nn.relu(batch_norm(train, eps, "bn2")(y))
    y = nn.Conv(self.filters * 4, (1, 1), padding="VALID", use_bias=bias, name="conv3")(y)
    y = batch_norm(train, eps, "bn3")(y)
    if self.downsample:
      x = nn.Conv(self.filters * 4, (1, 1), (self.stride, self.stride), padding="VALID", use_bias=bias,
                  name="downsample_conv")(x)
      x = batch_norm(train, eps, "downsample_bn")(x)
    return nn.relu(x + y)


class ResNet(nn.Module):
  """Returns {'stem', 'layer1'..'layer4' (NHWC maps), 'pool' (2048), and 'logits' unless num_classes=0}."""

  layout: str = "torchvision"
  stage_sizes: Sequence[int] = (3, 4, 6, 3)
  num_classes: int = 1000

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> dict[str, jax.Array]:
    if self.layout not in LAYOUTS:
      raise ValueError(f"unknown ResNet layout {self.layout!r}; expected one of {LAYOUTS}")
    eps, bias = _EPS[self.layout], self.layout == "keras"
    features = {}
    x = pad2d(x, 3, 3, 3, 3)
    x = nn.Conv(64, (7, 7), (2, 2), padding="VALID", use_bias=bias, name="conv1")(x)
    x = nn.relu(batch_norm(train, eps, "bn1")(x))
    x = max_pool(x, 3, 2, padding=1)
    features["stem"] = x
    for stage, blocks in enumerate(self.stage_sizes):
      for block in range(blocks):
        stride = 2 if stage > 0 and block == 0 else 1
        x = Bottleneck(64 * 2 ** stage, stride, self.layout, downsample=block == 0,
                       name=f"layer{stage + 1}_{block}")(x, train)
      features[f"layer{stage + 1}"] = x
    features["pool"] = jnp.mean(x, axis=(1, 2))
    if self.num_classes:
      features["logits"] = nn.Dense(self.num_classes, name="fc")(features["pool"])
    return features
