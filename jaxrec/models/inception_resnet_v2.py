"""keras.applications.InceptionResNetV2 in Flax (the units, pads and pools of inception_v3.py).

A residual block (`block35_<i>`, `block17_<i>`, `block8_<i>`) is x + scale * up(concat(branches)), then ReLU
(except block8_10), where `up` is a 1x1 Conv2D *with* bias and no BatchNormalization (Keras names it
`<block>_conv`; so does this module). The last unit is `conv_7b` (1536 channels), the classifier `predictions`.
Other Flax names follow inception_v3.py: `mixed_5b_b1_0`, `block17_3_b1_2`, ...
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxrec.models.inception_v3 import AVG, MAX, STEM, Block, Conv, ConvBN, run_block

# (block type, repeats, residual scale, branches); the very last block (block8_10) has scale 1 and no ReLU.
RESIDUAL_STAGES = (
    ("block35", 10, 0.17, ((Conv(32),), (Conv(32), Conv(32, (3, 3))), (Conv(32), Conv(48, (3, 3)), Conv(64, (3, 3))))),
    ("block17", 20, 0.1, ((Conv(192),), (Conv(128), Conv(160, (1, 7)), Conv(192, (7, 1))))),
    ("block8", 10, 0.2, ((Conv(192),), (Conv(192), Conv(224, (1, 3)), Conv(256, (3, 1))))),
)
MIXED_5B = Block("mixed_5b", ((Conv(96),), (Conv(48), Conv(64, (5, 5))),
                              (Conv(64), Conv(96, (3, 3)), Conv(96, (3, 3))), (AVG, Conv(64))))
MIXED_6A = Block("mixed_6a", ((Conv(384, (3, 3), 2, "valid"),),
                              (Conv(256), Conv(256, (3, 3)), Conv(384, (3, 3), 2, "valid")), (MAX,)))
MIXED_7A = Block("mixed_7a", ((Conv(256), Conv(384, (3, 3), 2, "valid")), (Conv(256), Conv(288, (3, 3), 2, "valid")),
                              (Conv(256), Conv(288, (3, 3)), Conv(320, (3, 3), 2, "valid")), (MAX,)))
CONV_7B = Conv(1536)  # the unit `conv_7b` (Keras: conv_7b, conv_7b_bn)


def layout() -> list[tuple[str, Block, float | None]]:
  """The blocks in order, `conv_7b` aside: (name, block, residual scale or None). For a residual block
  (`<type>_<i>`) the Block holds the branches, and the unit `<name>_conv` follows them."""
  out = [("stem", STEM, None), ("mixed_5b", MIXED_5B, None)]
  for (kind, repeats, scale, branches), reduction in zip(RESIDUAL_STAGES, (MIXED_6A, MIXED_7A, None)):
    out += [(f"{kind}_{i}", Block(f"{kind}_{i}", branches), scale) for i in range(1, repeats + 1)]
    if reduction is not None:
      out.append((reduction.name, reduction, None))
  return out


class InceptionResNetV2(nn.Module):
  """Returns {'mixed_6a', 'mixed_7a' (maps after the two reductions), 'conv_7b' (8x8x1536 at 299 px),
  'pool' (1536), and 'logits' unless num_classes=0}. Any input of at least 75 px works, like Keras's
  include_top=False model."""

  num_classes: int = 1000

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> dict[str, jax.Array]:
    features = {}
    last = f"{RESIDUAL_STAGES[-1][0]}_{RESIDUAL_STAGES[-1][1]}"
    for name, block, scale in layout():
      if scale is None:
        x = run_block(block, x, train)
      else:
        up = nn.Conv(x.shape[-1], (1, 1), padding="VALID", name=f"{name}_conv")(run_block(block, x, train))
        if name != last:
          x = nn.relu(x + up * scale)
        else:  # Keras's block8_10: scale 1, activation=None
          x = x + up
      if name in ("mixed_6a", "mixed_7a"):
        features[name] = x
    features["conv_7b"] = x = ConvBN(CONV_7B, name="conv_7b")(x, train)
    features["pool"] = jnp.mean(x, axis=(1, 2))
    if self.num_classes:
      features["logits"] = nn.Dense(self.num_classes, name="predictions")(features["pool"])
    return features

