"""Shared by the benchmarks: this machine's measured float32 matmul peak."""

import time

import jax
import jax.numpy as jnp
import numpy as np


def matmul_peak_gflops(n: int = 2048, repeats: int = 10) -> float:
  """Measured float32 matmul throughput of this machine, through XLA."""
  a = jnp.asarray(np.random.default_rng(0).standard_normal((n, n), np.float32))
  f = jax.jit(lambda x, y: jnp.dot(x, y, precision=jax.lax.Precision.HIGHEST))
  f(a, a).block_until_ready()
  best = float("inf")
  for _ in range(repeats):
    t = time.perf_counter()
    f(a, a).block_until_ready()
    best = min(best, time.perf_counter() - t)
  return 2 * n ** 3 / best / 1e9


def random_variables(backbone, size: int, seed: int = 0):
  """Random values shaped by the backbone's abstract variables: no (slow) init, deterministic per seed.

  The recipe of tests/conftest.py (BN variances in [0.5, 1.5], everything else N(0, 0.2)), except that
  kernels get He-scaled std sqrt(2 / fan_in): with 0.2 everywhere a 50-layer net in inference mode
  overflows to inf/NaN, and non-finite or denormal values could make the timings unrepresentative."""
  rng = np.random.default_rng(seed)
  leaves, tree = jax.tree.flatten_with_path(backbone.abstract_variables(size))

  def fill(path, leaf):
    if "var" in jax.tree_util.keystr(path):
      return rng.uniform(0.5, 1.5, leaf.shape).astype(leaf.dtype)
    std = np.sqrt(2.0 / np.prod(leaf.shape[:-1])) if "kernel" in jax.tree_util.keystr(path) else 0.2
    return (rng.standard_normal(leaf.shape) * std).astype(leaf.dtype)

  return jax.tree.unflatten(tree, [fill(p, leaf) for p, leaf in leaves])
