"""The name tables of keras.applications.InceptionV3 and InceptionResNetV2 for jaxrec/convert/keras.py.

Keras names almost none of these layers, so a file calls them `conv2d_<n>` and `batch_normalization_<n>` with
an <n> that depends on the session that wrote it (the published Keras 2 files start at 1; a model built second
in a Keras 3 session starts at 94). keras.py resolves such names by position (`_resolve_auto_names`): the k-th
Conv2D of the file is the k-th conv row here. So the rows follow Keras's `model.layers` order
(`keras_layer_order`), and an automatically named layer's row is called what Keras 3 calls its group in a
.weights.h5 file: `conv2d`, `conv2d_1`, ..., counting every Conv2D, named ones included.

InceptionResNetV2's named layers keep their names: `<block>_conv` (the residual 1x1 conv, with bias, no BN),
`conv_7b`, `conv_7b_bn`; both nets name their classifier `predictions`.
"""

from __future__ import annotations

from jaxrec.models import inception_resnet_v2, inception_v3
from jaxrec.models.inception_v3 import keras_layer_order

Row = tuple[str, tuple[str, ...], str, bool]  # as jaxrec.convert.keras.Row


class _Rows:
  """Appends rows, numbering the automatic names per Keras class."""

  def __init__(self):
    self.rows: list[Row] = []
    self.counts = {"conv2d": 0, "batch_normalization": 0}

  def _name(self, keras_class: str, name: str | None) -> str:
    k = self.counts[keras_class]
    self.counts[keras_class] += 1
    return name or (keras_class if k == 0 else f"{keras_class}_{k}")

  def unit(self, flax: str, name: str | None = None) -> None:
    """A conv2d_bn unit: Flax `<flax>/conv` and `<flax>/bn` (Keras: `name`, `name_bn` if named)."""
    self.rows.append((self._name("conv2d", name), (flax, "conv"), "conv", False))
    self.rows.append((self._name("batch_normalization", name and f"{name}_bn"), (flax, "bn"), "bn", False))

  def conv(self, flax: str, name: str) -> None:
    """A named Conv2D with bias and no BN (Flax module of the same name)."""
    self.rows.append((self._name("conv2d", name), (flax,), "conv", False))


def inception_v3_table() -> list[Row]:
  rows = _Rows()
  for block in inception_v3.INCEPTION_V3_BLOCKS:
    for unit in keras_layer_order(block):
      rows.unit(unit)
  return rows.rows + [("predictions", ("predictions",), "dense", True)]


def inception_resnet_v2_table() -> list[Row]:
  rows = _Rows()
  for name, block, scale in inception_resnet_v2.layout():
    for unit in keras_layer_order(block):
      rows.unit(unit)
    if scale is not None:
      rows.conv(f"{name}_conv", f"{name}_conv")
  rows.unit("conv_7b", "conv_7b")
  return rows.rows + [("predictions", ("predictions",), "dense", True)]
