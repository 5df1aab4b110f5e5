"""keras.applications.InceptionV3 in Flax, plus the pieces InceptionResNetV2 shares with it.

Keras's numerics, reproduced exactly:

* every conv is `conv2d_bn`: Conv2D without bias, BatchNormalization(scale=False) (no gamma, eps 1e-3), ReLU;
* 'same' padding is TensorFlow's: the total pad is computed from the actual input size, and where it is odd
  the extra row/column goes at the bottom/right (`tf_same_pads`); all stride-2 layers of both nets are 'valid';
* the 3x3/1 average pools of the branches are 'same' and average over the window's valid pixels only
  (count_include_pad=False), like Keras on every backend.

The network is data (`Block`s of branches of `Conv`s and pools), interpreted by `run_block`; the same data gives
the converter Keras's layer order (`keras_layer_order`), so the model and the weight table cannot drift apart.

Flax names: a unit is `<block>_b<branch>_<j>` with children `conv` and `bn` (j numbers the branch's convs in
creation order, forked ones included), e.g. `mixed9_b2_1/conv/kernel`; the stem's units are `stem_<j>`; the
classifier is `predictions`.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence, Union

import flax.linen as nn
import jax
import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class Conv:
  """One Keras `conv2d_bn` unit: Conv2D (no bias) + BatchNormalization(scale=False) + ReLU."""

  filters: int
  kernel: tuple[int, int] = (1, 1)
  stride: int = 1
  padding: str = "same"  # or 'valid'


@dataclasses.dataclass(frozen=True)
class Fork:
  """Parallel units on the same input, concatenated (InceptionV3's mixed9/mixed10 1x3 | 3x1 pairs)."""

  convs: tuple[Conv, ...]


MAX = "max"  # MaxPooling2D(3, strides=2, padding='valid')
AVG = "avg"  # AveragePooling2D(3, strides=1, padding='same')
Op = Union[Conv, Fork, str]


@dataclasses.dataclass(frozen=True)
class Block:
  """Branches run on the block's input and are concatenated in order; a single branch is a chain."""

  name: str
  branches: tuple[tuple[Op, ...], ...]


def tf_same_pads(size: int, kernel: int, stride: int) -> tuple[int, int]:
  """TensorFlow's 'same' padding of one spatial dimension: (before, after), the odd pixel after."""
  out = -(-size // stride)
  total = max((out - 1) * stride + kernel - size, 0)
  return total // 2, total - total // 2


class ConvBN(nn.Module):
  conv: Conv
  momentum: float = 0.99  # Keras's BatchNormalization default (Flax counts the old average's weight, like Keras)

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    c = self.conv
    if c.padding == "same":
      pads = (tf_same_pads(x.shape[1], c.kernel[0], c.stride), tf_same_pads(x.shape[2], c.kernel[1], c.stride))
    else:
      pads = ((0, 0), (0, 0))
    x = nn.Conv(c.filters, c.kernel, (c.stride, c.stride), padding=pads, use_bias=False, name="conv")(x)
    x = nn.BatchNorm(use_running_average=not train, momentum=self.momentum, epsilon=1e-3, use_scale=False,
                     name="bn")(x)
    return nn.relu(x)


def unit_names(block: Block) -> list[list[list[str]]]:
  """Flax names of the units: [branch][op] -> names (one per Conv, one per forked Conv, none for a pool)."""
  out = []
  for b, branch in enumerate(block.branches):
    prefix = block.name if len(block.branches) == 1 else f"{block.name}_b{b}"
    names, j = [], 0
    for op in branch:
      convs = op.convs if isinstance(op, Fork) else (op,) if isinstance(op, Conv) else ()
      names.append([f"{prefix}_{j + i}" for i in range(len(convs))])
      j += len(convs)
    out.append(names)
  return out


def run_block(block: Block, x: jax.Array, train: bool) -> jax.Array:
  """Runs a block inside the calling module's compact method (its units become that module's children)."""
  outputs = []
  for branch, names in zip(block.branches, unit_names(block)):
    y = x
    for op, op_names in zip(branch, names):
      if op == MAX:
        y = nn.max_pool(y, (3, 3), strides=(2, 2), padding="VALID")
      elif op == AVG:
        y = nn.avg_pool(y, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1)), count_include_pad=False)
      elif isinstance(op, Fork):
        y = jnp.concatenate([ConvBN(c, name=n)(y, train) for c, n in zip(op.convs, op_names)], axis=-1)
      else:
        y = ConvBN(op, name=op_names[0])(y, train)
    outputs.append(y)
  return outputs[0] if len(outputs) == 1 else jnp.concatenate(outputs, axis=-1)


def keras_layer_order(block: Block) -> list[str]:
  """The block's units in Keras's `model.layers` order, which is the order of the weights in both file layouts.

  Keras (ops/function.py `map_graph`) sorts layers by decreasing depth (the longest path to the model's output),
  ties by first visit of a depth-first walk from the output through each layer's inputs in order. Every path out
  of a block passes its concatenation, so within a block a unit's depth is its distance to that concatenation
  (3 layers per unit: conv, BN, ReLU; 1 for a Fork's concatenation), and a tie goes to the earlier branch.
  """
  ranked = []  # (-distance, branch, creation index, name)
  for b, (branch, names) in enumerate(zip(block.branches, unit_names(block))):
    after = 0  # layers between the end of the current op and the block's concatenation
    for op, op_names in reversed(list(zip(branch, names))):
      if isinstance(op, Fork):
        for i, name in enumerate(op_names):
          ranked.append((-(after + 1 + 3), b, i, name))
        after += 1 + 3
      elif isinstance(op, Conv):
        ranked.append((-(after + 3), b, 0, op_names[0]))
        after += 3
      else:
        after += 1
  return [name for *_, name in sorted(ranked)]


def _inception_a(name: str, pool_filters: int) -> Block:
  return Block(name, (
      (Conv(64),),
      (Conv(48), Conv(64, (5, 5))),
      (Conv(64), Conv(96, (3, 3)), Conv(96, (3, 3))),
      (AVG, Conv(pool_filters)),
  ))


def _inception_c(name: str, width: int) -> Block:
  return Block(name, (
      (Conv(192),),
      (Conv(width), Conv(width, (1, 7)), Conv(192, (7, 1))),
      (Conv(width), Conv(width, (7, 1)), Conv(width, (1, 7)), Conv(width, (7, 1)), Conv(192, (1, 7))),
      (AVG, Conv(192)),
  ))


def _inception_e(name: str) -> Block:
  pair = Fork((Conv(384, (1, 3)), Conv(384, (3, 1))))
  return Block(name, (
      (Conv(320),),
      (Conv(384), pair),
      (Conv(448), Conv(384, (3, 3)), pair),
      (AVG, Conv(192)),
  ))


STEM = Block("stem", ((Conv(32, (3, 3), 2, "valid"), Conv(32, (3, 3), padding="valid"), Conv(64, (3, 3)), MAX,
                       Conv(80, padding="valid"), Conv(192, (3, 3), padding="valid"), MAX),))

INCEPTION_V3_BLOCKS: tuple[Block, ...] = (
    STEM,
    _inception_a("mixed0", 32), _inception_a("mixed1", 64), _inception_a("mixed2", 64),
    Block("mixed3", ((Conv(384, (3, 3), 2, "valid"),),
                     (Conv(64), Conv(96, (3, 3)), Conv(96, (3, 3), 2, "valid")),
                     (MAX,))),
    _inception_c("mixed4", 128), _inception_c("mixed5", 160), _inception_c("mixed6", 160),
    _inception_c("mixed7", 192),
    Block("mixed8", ((Conv(192), Conv(320, (3, 3), 2, "valid")),
                     (Conv(192), Conv(192, (1, 7)), Conv(192, (7, 1)), Conv(192, (3, 3), 2, "valid")),
                     (MAX,))),
    _inception_e("mixed9"), _inception_e("mixed10"),
)


class InceptionV3(nn.Module):
  """Returns {'mixed7' (17x17 at 299 px), 'mixed10' (8x8x2048 at 299 px), 'pool' (2048), and 'logits' unless
  num_classes=0}. Any input of at least 75 px works, like Keras's include_top=False model."""

  num_classes: int = 1000
  blocks: Sequence[Block] = INCEPTION_V3_BLOCKS

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> dict[str, jax.Array]:
    features = {}
    for block in self.blocks:
      x = run_block(block, x, train)
      if block.name in ("mixed7", "mixed10"):
        features[block.name] = x
    features["pool"] = jnp.mean(x, axis=(1, 2))
    if self.num_classes:
      features["logits"] = nn.Dense(self.num_classes, name="predictions")(features["pool"])
    return features
