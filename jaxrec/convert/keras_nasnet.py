"""The name table of keras.applications.NASNetLarge for jaxrec/convert/keras.py.

Keras names every NASNet layer that has weights after its cell (block id `stem_1`, `stem_2`, `0`..`5`,
`reduce_6`, `7`..`12`, `reduce_12`, `13`..`18`):

  stem_conv1, stem_bn1                                   -> stem_conv1, stem_bn1
  {normal,reduction}_conv_1_<id>, ..._bn_1_<id>          -> cell_<id>/conv_1, cell_<id>/bn_1
  adjust_conv_1_<id>, adjust_conv_2_<id>,
  adjust_conv_projection_<id>, adjust_bn_<id>            -> cell_<id>/adjust_conv_1, ...
  separable_conv_<j>_{normal,reduction}_<branch>_<id>    -> cell_<id>/<branch>/conv_<j>   (SeparableConv2D)
  separable_conv_<j>_bn_{normal,reduction}_<branch>_<id> -> cell_<id>/<branch>/bn_<j>
  predictions                                            -> predictions

The rows follow Keras's `model.layers` order (Keras 3.15; checked by tests/test_nasnet_port.py), which is
how a .weights.h5 file without layer-name attributes numbers its `layers/separable_conv2d_<k>` groups. That
order is Keras's topological sort of the graph, not the order the layers are created in.
"""

from __future__ import annotations

from jaxrec.models.nasnet import cell_plan

Row = tuple[str, tuple[str, ...], str, bool]  # as jaxrec.convert.keras.Row

_NORMAL_BRANCHES = ("left1", "right1", "left2", "right2", "left5")


def _separable_rows(block_id: str, kind: str) -> list[Row]:
  cell = f"cell_{block_id}"

  def rows(branches, stages):
    out = []
    for stage in stages:
      for branch in branches:
        j, bn = stage[0], stage[1] == "bn"
        keras = f"separable_conv_{j}{'_bn' if bn else ''}_{kind}_{branch}_{block_id}"
        out.append((keras, (cell, branch, f"{'bn' if bn else 'conv'}_{j}"), "bn" if bn else "sepconv", False))
    return out

  conv1, bn1, conv2, bn2 = (1, "conv"), (1, "bn"), (2, "conv"), (2, "bn")
  if kind == "normal":
    return rows(_NORMAL_BRANCHES, (conv1, bn1, conv2, bn2))
  return (rows(("left1", "right1"), (conv1, bn1, conv2, bn2)) + rows(("right2",), (conv1, bn1))
          + rows(("right3", "left4"), (conv1, bn1)) + rows(("right2",), (conv2, bn2))
          + rows(("right3", "left4"), (conv2, bn2)))


def nasnet_table(**config) -> list[Row]:
  """`config`: the arguments of jaxrec.models.nasnet.cell_plan (none: NASNetLarge)."""
  rows: list[Row] = [("stem_conv1", ("stem_conv1",), "conv", False), ("stem_bn1", ("stem_bn1",), "bn", False)]
  for cell in cell_plan(**config):
    kind = "reduction" if cell.reduction else "normal"

    def row(keras: str, flax: str, layer_kind: str) -> Row:
      return (f"{keras}_{cell.block_id}", (f"cell_{cell.block_id}", flax), layer_kind, False)

    conv, bn = row(f"{kind}_conv_1", "conv_1", "conv"), row(f"{kind}_bn_1", "bn_1", "bn")
    adjust_bn = row("adjust_bn", "adjust_bn", "bn")
    if cell.adjust == "halve":
      halving = [row("adjust_conv_1", "adjust_conv_1", "conv"), row("adjust_conv_2", "adjust_conv_2", "conv")]
      head = halving + ([conv, bn, adjust_bn] if cell.reduction else [conv, adjust_bn, bn])
    elif cell.adjust == "project":
      projection = row("adjust_conv_projection", "adjust_conv_projection", "conv")
      head = [conv, projection, bn, adjust_bn] if cell.reduction else [projection, conv, adjust_bn, bn]
    else:
      head = [conv, bn]
    rows += head + _separable_rows(cell.block_id, kind)
  return rows + [("predictions", ("predictions",), "dense", True)]


def nasnet_large_table() -> list[Row]:
  return nasnet_table()
