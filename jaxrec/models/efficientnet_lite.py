"""EfficientNet-Lite0 (Tan & Le 2019, the 'lite' variant for mobile accelerators).

Lite differs from EfficientNet-B0 in: ReLU6 instead of swish, no squeeze-excite, and a stem and head that
are not scaled with the width. Numerics follow the TF original (and the lukemelas-style PyTorch port whose
weights we load): BN epsilon 1e-3, and TF 'SAME' padding, which for a stride-2 conv on an even input puts
the extra row/column at the bottom/right. The padding is computed from the actual input size, like TF and
the PyTorch port's dynamic-padding convs, so any input size matches the reference built for that size.

Drop-connect (stochastic depth) of the original is omitted: it is the identity at inference, and
fine-tuning here does not need it. Dropout before `fc` is kept (active only with train=True, which then
needs a 'dropout' rng).

Parameter names follow the PyTorch port (`conv_stem`, `bn0`, `blocks_N/{expand_conv, bn0, depthwise_conv,
bn1, project_conv, bn2}`, `conv_head`, `bn_head`, `fc`) so the converter's table reads one to one.
"""

from __future__ import annotations

from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxrec.models.layers import DepthwiseConv, batch_norm, pad2d

_EPS = 1e-3  # TF's BN epsilon; torch's default 1e-5 would be wrong here.


class Stage(NamedTuple):
  repeats: int
  kernel: int
  stride: int  # of the first block; the rest have stride 1
  expand: int
  filters_in: int
  filters_out: int


# efficientnet_lite_builder.py's block strings 'r1_k3_s11_e1_i32_o16', ... (lite0: width = depth = 1.0).
LITE0_STAGES = (
    Stage(1, 3, 1, 1, 32, 16),
    Stage(2, 3, 2, 6, 16, 24),
    Stage(2, 5, 2, 6, 24, 40),
    Stage(3, 3, 2, 6, 40, 80),
    Stage(3, 5, 1, 6, 80, 112),
    Stage(4, 5, 2, 6, 112, 192),
    Stage(1, 3, 1, 6, 192, 320),
)


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
  """TF 'SAME': output ceil(size / stride); the odd padding pixel goes after (bottom/right)."""
  out = -(-size // stride)
  total = max((out - 1) * stride + kernel - size, 0)
  return total // 2, total - total // 2


def conv_same(x: jax.Array, features: int, kernel: int, stride: int, name: str, groups: int = 1) -> jax.Array:
  """Bias-free conv with TF 'SAME' padding computed from this input's height and width."""
  top, bottom = same_padding(x.shape[1], kernel, stride)
  left, right = same_padding(x.shape[2], kernel, stride)
  if top or bottom or left or right:
    x = pad2d(x, top, bottom, left, right)
  if groups > 1:
    if groups != features or groups != x.shape[-1]:
      raise ValueError(f"only depthwise grouping is supported, got {groups} groups for {x.shape[-1]} -> {features}")
    return DepthwiseConv(kernel, stride, name=name)(x)
  return nn.Conv(features, (kernel, kernel), (stride, stride), padding="VALID", use_bias=False, name=name)(x)


class MBConv(nn.Module):
  """Inverted bottleneck: 1x1 expand (unless expand == 1), depthwise kxk, 1x1 linear projection."""

  kernel: int
  stride: int
  expand: int
  filters_out: int

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    filters_in = x.shape[-1]
    hidden = filters_in * self.expand
    y = x
    if self.expand != 1:
      y = nn.relu6(batch_norm(train, _EPS, "bn0")(conv_same(y, hidden, 1, 1, "expand_conv")))
    y = conv_same(y, hidden, self.kernel, self.stride, "depthwise_conv", groups=hidden)
    y = nn.relu6(batch_norm(train, _EPS, "bn1")(y))
    y = batch_norm(train, _EPS, "bn2")(conv_same(y, self.filters_out, 1, 1, "project_conv"))
    if self.stride == 1 and filters_in == self.filters_out:
      y = y + x
    return y


class EfficientNetLite0(nn.Module):
  """Input: NHWC, (pixel - 127) / 128. Returns {'stem' (NHWC map after the stem), 'pool' (1280, global
  average after the head conv + BN + ReLU6), and 'logits' unless num_classes=0}."""

  num_classes: int = 1000
  dropout_rate: float = 0.2
  stages: tuple[Stage, ...] = LITE0_STAGES

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> dict[str, jax.Array]:
    features = {}
    x = nn.relu6(batch_norm(train, _EPS, "bn0")(conv_same(x, 32, 3, 2, "conv_stem")))
    features["stem"] = x
    index = 0
    for stage in self.stages:
      for r in range(stage.repeats):
        x = MBConv(stage.kernel, stage.stride if r == 0 else 1, stage.expand, stage.filters_out,
                   name=f"blocks_{index}")(x, train)
        index += 1
    x = nn.relu6(batch_norm(train, _EPS, "bn_head")(conv_same(x, 1280, 1, 1, "conv_head")))
    features["pool"] = jnp.mean(x, axis=(1, 2))
    if self.num_classes:
      y = nn.Dropout(self.dropout_rate, deterministic=not train)(features["pool"])
      features["logits"] = nn.Dense(self.num_classes, name="fc")(y)
    return features
