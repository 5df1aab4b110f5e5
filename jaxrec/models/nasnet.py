"""NASNet-A (Zoph et al. 2018) in the layout of keras.applications.NASNetLarge.

NASNet Large is NASNet-A (6 @ 4032): a 3x3 stem conv with 96 filters, two stem reduction cells, then three
stacks of 6 normal cells (168, 336 and 672 filters per branch) separated by two reduction cells; a cell's
output concatenates its branches (6 in a normal cell, 4 in a reduction cell), so the last map has 4032
channels. Each cell reads the two previous outputs: `ip` (the last) and `p` (the one before), and `p` is
first adjusted to `ip`'s size and width (the "adjust" block).

Numerics follow Keras exactly:
* Every padding is explicit and computed from the actual input size, as Keras does when the model is built
  for that size: stride-1 'same' convs and pools pad k // 2 on each side; strided separable convs and the
  reduction cells' pools are zero-padded by `imagenet_utils.correct_pad` (TF 'SAME': one row/column less at
  the top/left of an even-sized input) and then run 'valid'. The reduction pools see those zeros (the max
  pool too: Keras pads with zeros, not -inf, and the map is a BN output that may be negative).
* 3x3 stride-1 average pools with 'same' padding divide by the number of real cells in the window (4, 6
  or 9), like TF and Keras's JAX backend.
* The adjust block of a reduction (p twice as large as ip): ReLU, then two 1x1-subsampled paths, the second
  one shifted by one pixel (Keras's ZeroPadding2D(((0, 1), (0, 1))) + Cropping2D(((1, 0), (1, 0))) before
  AveragePooling2D(1, strides=2)), each a 1x1 conv to filters // 2, concatenated, BN.
* BN epsilon 1e-3 and momentum 0.9997 (Keras's momentum is Flax's: the weight of the old average).
* Separable convs: a depthwise conv (kernel [k, k, C, 1], Keras's `depthwise_kernel`) then a 1x1 conv
  (`pointwise_kernel` [1, 1, C, F]), no bias. The depthwise conv is computed as k*k shifted multiply-adds,
  which XLA fuses (see layers.DepthwiseConv: grouped convs are slow on XLA CPU); its gradient is that of
  the grouped conv (`depthwise_conv`).

Module names: `stem_conv1`, `stem_bn1`, one module per cell named `cell_<Keras block id>` (`cell_stem_1`,
`cell_stem_2`, `cell_0`..`cell_5`, `cell_reduce_6`, `cell_7`.., `cell_reduce_12`, `cell_13`..`cell_18`)
holding `adjust_conv_1`, `adjust_conv_2` or `adjust_conv_projection`, `adjust_bn`, `conv_1`, `bn_1` and one
separable block per branch (`left1`, `right1`, ...; Keras's block ids without the cell id) with `conv_1`,
`bn_1`, `conv_2`, `bn_2`; and `predictions`. jaxrec/convert/keras_nasnet.py maps Keras's layer names onto
these paths.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxrec.models.layers import pad2d

_EPS = 1e-3
_MOMENTUM = 0.9997


def _bn(train: bool, name: str) -> nn.BatchNorm:
  return nn.BatchNorm(use_running_average=not train, momentum=_MOMENTUM, epsilon=_EPS, name=name)


def _conv1x1(x: jax.Array, features: int, name: str) -> jax.Array:
  return nn.Conv(features, (1, 1), padding="VALID", use_bias=False, kernel_init=nn.initializers.he_normal(),
                 name=name)(x)


def correct_pad(size: int, kernel: int) -> tuple[int, int]:
  """keras.applications' `imagenet_utils.correct_pad` along one axis: (before, after) zero padding for a
  stride-2 'valid' op, i.e. TF 'SAME' (an even size gets one row less before)."""
  return kernel // 2 - (1 - size % 2), kernel // 2


def _pad_for_stride2(x: jax.Array, kernel: int) -> jax.Array:
  return pad2d(x, *correct_pad(x.shape[1], kernel), *correct_pad(x.shape[2], kernel))


def _pad_same(x: jax.Array, kernel: int) -> jax.Array:
  """Stride-1 'same' padding of an odd kernel: k // 2 on every side."""
  return pad2d(x, kernel // 2, kernel // 2, kernel // 2, kernel // 2)


def _window_sum(x: jax.Array, window: int, stride: int) -> jax.Array:
  return jax.lax.reduce_window(x, np.zeros((), x.dtype), jax.lax.add, (1, window, window, 1),
                               (1, stride, stride, 1), "VALID")


def avg_pool_same(x: jax.Array) -> jax.Array:
  """AveragePooling2D((3, 3), strides=1, padding='same'): the window sum over zero padding divided by the
  number of cells of the window inside the map (TF and Keras count no padding)."""
  _, h, w, _ = x.shape
  rows = np.minimum(np.arange(h) + 1, h - 1) - np.maximum(np.arange(h) - 1, 0) + 1
  cols = np.minimum(np.arange(w) + 1, w - 1) - np.maximum(np.arange(w) - 1, 0) + 1
  counts = (rows[:, None] * cols[None, :]).astype(np.float32)[None, :, :, None]
  return _window_sum(_pad_same(x, 3), 3, 1) / jnp.asarray(counts, x.dtype)


def avg_pool_valid(x: jax.Array, window: int, stride: int) -> jax.Array:
  return _window_sum(x, window, stride) / (window * window)


def max_pool_valid(x: jax.Array, window: int, stride: int) -> jax.Array:
  return nn.max_pool(x, (window, window), strides=(stride, stride), padding="VALID")


def depthwise_conv_grouped(x: jax.Array, kernel: jax.Array, stride: int) -> jax.Array:
  """'valid' depthwise conv as Keras's JAX backend runs it: a `feature_group_count` convolution."""
  k, c = kernel.shape[0], kernel.shape[2]
  return jax.lax.conv_general_dilated(x, jax.lax.reshape(kernel, (k, k, 1, c)), (stride, stride), "VALID",
                                      dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=c)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def depthwise_conv(x: jax.Array, kernel: jax.Array, stride: int) -> jax.Array:
  """'valid' depthwise conv, kernel [k, k, C, 1] (Keras's depthwise_kernel), as k*k shifted multiply-adds
  that XLA fuses into one loop: on CPU 2x faster than the `feature_group_count` convolution Keras runs
  (measured on NASNet Large), and the same numbers up to float32 summation order. Its gradient is the
  grouped convolution's: autodiff through the taps doubled the compile time of a training step."""
  k, c = kernel.shape[0], kernel.shape[2]
  n, h, w, _ = x.shape
  out_h, out_w = (h - k) // stride + 1, (w - k) // stride + 1
  # lax ops rather than jnp indexing and broadcasting: NASNet Large has ~4000 taps, and tracing them is a
  # good part of its compile time.
  weights = jax.lax.reshape(kernel, (k * k, c))
  y = None
  for i in range(k * k):
    dy, dx = divmod(i, k)
    tap = jax.lax.slice(x, (0, dy, dx, 0), (n, dy + (out_h - 1) * stride + 1, dx + (out_w - 1) * stride + 1, c),
                        (1, stride, stride, 1))
    weight = jax.lax.broadcast_in_dim(jax.lax.reshape(jax.lax.slice_in_dim(weights, i, i + 1), (c,)),
                                      tap.shape, (3,))
    y = jax.lax.mul(tap, weight) if y is None else jax.lax.add(y, jax.lax.mul(tap, weight))
  return y


def _depthwise_fwd(x, kernel, stride):
  return depthwise_conv(x, kernel, stride), (x, kernel)


def _depthwise_bwd(stride, residuals, cotangent):
  x, kernel = residuals
  return jax.vjp(lambda x, kernel: depthwise_conv_grouped(x, kernel, stride), x, kernel)[1](cotangent)


depthwise_conv.defvjp(_depthwise_fwd, _depthwise_bwd)


class SeparableConv(nn.Module):
  """Keras SeparableConv2D (depth multiplier 1, no bias) on an already padded input ('valid')."""

  features: int
  kernel_size: int
  stride: int = 1

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    k, c = self.kernel_size, x.shape[-1]
    depthwise = self.param("depthwise_kernel", nn.initializers.glorot_uniform(), (k, k, c, 1), x.dtype)
    pointwise = self.param("pointwise_kernel", nn.initializers.glorot_uniform(), (1, 1, c, self.features),
                           x.dtype)
    y = depthwise_conv(x, depthwise, self.stride)
    return jax.lax.conv_general_dilated(y, pointwise, (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"))


class SeparableBlock(nn.Module):
  """Keras's `_separable_conv_block`: twice ReLU -> separable conv -> BN; only the first conv strides."""

  filters: int
  kernel_size: int
  stride: int = 1

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    k = self.kernel_size
    x = nn.relu(x)
    x = _pad_for_stride2(x, k) if self.stride == 2 else _pad_same(x, k)
    x = _bn(train, "bn_1")(SeparableConv(self.filters, k, self.stride, name="conv_1")(x))
    x = _pad_same(nn.relu(x), k)
    return _bn(train, "bn_2")(SeparableConv(self.filters, k, name="conv_2")(x))


class _Cell(nn.Module):
  filters: int

  def adjust(self, p: jax.Array | None, ip: jax.Array, train: bool) -> jax.Array:
    """Keras's `_adjust_block`: `p` resized (a factor 2) and projected to `ip`'s grid and `filters`."""
    if p is None:
      return ip
    if p.shape[2] != ip.shape[2]:  # Keras compares the widths
      p = nn.relu(p)
      p1 = _conv1x1(p[:, ::2, ::2], self.filters // 2, "adjust_conv_1")  # AveragePooling2D(1, strides=2)
      shifted = pad2d(p, 0, 1, 0, 1)[:, 1:, 1:]  # ZeroPadding2D(((0, 1), (0, 1))) + Cropping2D(((1, 0), (1, 0)))
      p2 = _conv1x1(shifted[:, ::2, ::2], self.filters // 2, "adjust_conv_2")
      return _bn(train, "adjust_bn")(jnp.concatenate([p1, p2], axis=-1))
    if p.shape[-1] != self.filters:
      return _bn(train, "adjust_bn")(_conv1x1(nn.relu(p), self.filters, "adjust_conv_projection"))
    return p

  def squeeze(self, ip: jax.Array, train: bool) -> jax.Array:
    return _bn(train, "bn_1")(_conv1x1(nn.relu(ip), self.filters, "conv_1"))

  def separable(self, x: jax.Array, kernel: int, name: str, train: bool, stride: int = 1) -> jax.Array:
    return SeparableBlock(self.filters, kernel, stride, name=name)(x, train)


class NormalCell(_Cell):
  """Keras's `_normal_a_cell`; output channels 6 * filters."""

  @nn.compact
  def __call__(self, ip: jax.Array, p: jax.Array | None, train: bool) -> jax.Array:
    p = self.adjust(p, ip, train)
    h = self.squeeze(ip, train)
    x1 = self.separable(h, 5, "left1", train) + self.separable(p, 3, "right1", train)
    x2 = self.separable(p, 5, "left2", train) + self.separable(p, 3, "right2", train)
    x3 = avg_pool_same(h) + p
    pooled = avg_pool_same(p)
    x4 = pooled + pooled  # Keras pools p twice (left4, right4) and adds the two equal maps
    x5 = self.separable(h, 3, "left5", train) + h
    return jnp.concatenate([p, x1, x2, x3, x4, x5], axis=-1)


class ReductionCell(_Cell):
  """Keras's `_reduction_a_cell`: halves the grid; output channels 4 * filters."""

  @nn.compact
  def __call__(self, ip: jax.Array, p: jax.Array | None, train: bool) -> jax.Array:
    p = self.adjust(p, ip, train)
    h = self.squeeze(ip, train)
    h3 = _pad_for_stride2(h, 3)  # zeros, also for the max pools
    x1 = self.separable(h, 5, "left1", train, 2) + self.separable(p, 7, "right1", train, 2)
    x2 = max_pool_valid(h3, 3, 2) + self.separable(p, 7, "right2", train, 2)
    x3 = avg_pool_valid(h3, 3, 2) + self.separable(p, 5, "right3", train, 2)
    x4 = x2 + avg_pool_same(x1)
    x5 = self.separable(x1, 3, "left4", train) + max_pool_valid(h3, 3, 2)
    return jnp.concatenate([x2, x3, x4, x5], axis=-1)


class CellPlan(NamedTuple):
  block_id: str  # Keras's: stem_1, stem_2, 0.., reduce_<num_blocks>, ..
  reduction: bool
  filters: int  # per branch
  adjust: str | None  # what the adjust block does to p: None, 'halve' (p has twice ip's size) or 'project'


def cell_plan(penultimate_filters: int = 4032, num_blocks: int = 6, stem_block_filters: int = 96,
              skip_reduction: bool = True, filter_multiplier: int = 2) -> list[CellPlan]:
  """Keras's cells in network order (defaults: NASNetLarge). `adjust` is what Keras decides from the shapes
  (the model itself decides from the actual shapes too; the converter's table uses this)."""
  m = filter_multiplier
  if penultimate_filters % (24 * m * m):
    raise ValueError(f"penultimate_filters must be a multiple of {24 * m * m}, got {penultimate_filters}")
  filters = penultimate_filters // 24
  cells = [("stem_1", True, filters // m ** 2), ("stem_2", True, filters // m)]
  for stack in range(3):
    if stack:
      cells.append((f"reduce_{stack * num_blocks}", True, filters * m ** stack))
    cells += [(str(stack * num_blocks + i + (stack > 0)), False, filters * m ** stack) for i in range(num_blocks)]
  plan = []
  x, p = (0, stem_block_filters), None  # (number of reductions before, channels) of the two cell inputs
  for block_id, reduction, f in cells:
    adjust = None if p is None else "halve" if p[0] != x[0] else "project" if p[1] != f else None
    plan.append(CellPlan(block_id, reduction, f, adjust))
    out = (x[0] + reduction, (4 if reduction else 6) * f)
    keep_p = reduction and not block_id.startswith("stem_") and skip_reduction
    x, p = out, (p if keep_p else x)
  return plan


class NASNet(nn.Module):
  """keras.applications.nasnet.NASNet; the defaults are NASNetLarge (input NHWC, x / 127.5 - 1, 331 px by
  default but any size >= 32 that Keras accepts).

  Returns {'stem' (NHWC, after stem_bn1), 'final' (NHWC, the ReLU after the last cell: Keras's
  include_top=False output), 'pool' (global average of 'final') and 'logits' unless num_classes=0}.
  """

  penultimate_filters: int = 4032
  num_blocks: int = 6
  stem_block_filters: int = 96
  skip_reduction: bool = True
  filter_multiplier: int = 2
  num_classes: int = 1000

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> dict[str, jax.Array]:
    plan = cell_plan(self.penultimate_filters, self.num_blocks, self.stem_block_filters, self.skip_reduction,
                     self.filter_multiplier)
    features = {}
    x = nn.Conv(self.stem_block_filters, (3, 3), (2, 2), padding="VALID", use_bias=False,
                kernel_init=nn.initializers.he_normal(), name="stem_conv1")(x)
    x = _bn(train, "stem_bn1")(x)
    features["stem"] = x
    p = None
    for cell in plan:
      module = (ReductionCell if cell.reduction else NormalCell)(cell.filters, name=f"cell_{cell.block_id}")
      x, p_next = module(x, p, train), x
      # After the two later reductions Keras keeps the p of the reduction cell when skip_reduction is set.
      keep_p = cell.reduction and not cell.block_id.startswith("stem_") and self.skip_reduction
      p = p if keep_p else p_next
    x = nn.relu(x)
    features["final"] = x
    features["pool"] = jnp.mean(x, axis=(1, 2))
    if self.num_classes:
      features["logits"] = nn.Dense(self.num_classes, name="predictions")(features["pool"])
    return features
