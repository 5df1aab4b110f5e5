"""VGG19 in torchvision's and Keras's layouts.

The convolutions are identical (3x3, padding 1, ReLU, 2x2 max pools). The difference is the flatten
before fc6: torchvision flattens pool5 in CHW order after AdaptiveAvgPool2d(7) (the identity at 224 px),
Keras in HWC order. This module always flattens HWC; the torchvision converter permutes fc6's kernel
once, so no activation is transposed at run time.
"""

from __future__ import annotations

import flax.linen as nn
import jax

from jaxrec.models.layers import adaptive_avg_pool, max_pool

LAYOUTS = ("torchvision", "keras")
# (filters, convs) per block.
VGG19_BLOCKS = ((64, 2), (128, 2), (256, 4), (512, 4), (512, 4))


class VGG(nn.Module):
  """Returns {'pool5' (NHWC map), 'fc6', 'fc7' (4096, after ReLU), 'logits'}; with include_top=False,
  only 'pool5'."""

  layout: str = "torchvision"
  blocks: tuple = VGG19_BLOCKS
  include_top: bool = True
  num_classes: int = 1000

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> dict[str, jax.Array]:
    if self.layout not in LAYOUTS:
      raise ValueError(f"unknown VGG layout {self.layout!r}; expected one of {LAYOUTS}")
    for b, (filters, convs) in enumerate(self.blocks):
      for c in range(convs):
        x = nn.relu(nn.Conv(filters, (3, 3), padding=((1, 1), (1, 1)), name=f"block{b + 1}_conv{c + 1}")(x))
      x = max_pool(x, 2, 2)
    features = {"pool5": x}
    if not self.include_top:
      return features
    if self.layout == "torchvision":
      x = adaptive_avg_pool(x, 7)
    x = x.reshape(x.shape[0], -1)
    # Dropout layers of the classifier are the identity in eval mode; fine-tuning uses its own heads.
    features["fc6"] = x = nn.relu(nn.Dense(4096, name="fc6")(x))
    features["fc7"] = x = nn.relu(nn.Dense(4096, name="fc7")(x))
    features["logits"] = nn.Dense(self.num_classes, name="fc8")(x)
    return features
