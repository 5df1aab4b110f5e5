"""Small building blocks shared by the ports, written to match PyTorch and Keras numerics exactly."""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp


def pad2d(x: jax.Array, top: int, bottom: int, left: int, right: int, value: float = 0.0) -> jax.Array:
  """Explicit NHWC spatial padding (never 'SAME': PyTorch pads symmetrically, TF pads more at the end)."""
  return jnp.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)), constant_values=value)


def max_pool(x: jax.Array, window: int, stride: int, padding: int = 0) -> jax.Array:
  """torch.nn.MaxPool2d(window, stride, padding): pads with -inf."""
  if padding:
    x = pad2d(x, padding, padding, padding, padding, value=-jnp.inf)
  return nn.max_pool(x, (window, window), strides=(stride, stride), padding="VALID")


def adaptive_avg_pool(x: jax.Array, output_size: int) -> jax.Array:
  """torch.nn.AdaptiveAvgPool2d(output_size): bin i covers [floor(i*H/n), ceil((i+1)*H/n))."""
  n, h, w, c = x.shape
  if h == output_size and w == output_size:
    return x

  def bins(size: int) -> Sequence[tuple[int, int]]:
    return [((i * size) // output_size, -(-((i + 1) * size) // output_size)) for i in range(output_size)]

  rows = [jnp.mean(x[:, a:b], axis=1) for a, b in bins(h)]  # each [N, W, C]
  out = [[jnp.mean(r[:, a:b], axis=1) for a, b in bins(w)] for r in rows]
  return jnp.stack([jnp.stack(r, axis=1) for r in out], axis=1)


def batch_norm(train: bool, epsilon: float, name: str) -> nn.BatchNorm:
  # Flax's momentum is the weight of the old average: torch's momentum 0.1 is Flax's 0.9.
  return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=epsilon, name=name)


class DepthwiseConv(nn.Module):
  """A bias-free depthwise conv (VALID; pad before) with nn.Conv's kernel layout [k, k, 1, C].

  Computed as k*k shifted multiply-adds that XLA fuses into one loop: on CPU this is 15-27x faster
  than a `feature_group_count` convolution (measured on EfficientNet-Lite0's shapes), same numbers up to
  float32 summation order.
  """

  kernel_size: int
  stride: int = 1

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    k, s = self.kernel_size, self.stride
    n, h, w, c = x.shape
    kernel = self.param("kernel", nn.initializers.lecun_normal(), (k, k, 1, c), x.dtype)
    out_h, out_w = (h - k) // s + 1, (w - k) // s + 1
    out = jnp.zeros((n, out_h, out_w, c), x.dtype)
    for dy in range(k):
      for dx in range(k):
        tap = jax.lax.slice(x, (0, dy, dx, 0), (n, dy + (out_h - 1) * s + 1, dx + (out_w - 1) * s + 1, c),
                            (1, s, s, 1))
        out = out + tap * kernel[dy, dx, 0]
    return out
