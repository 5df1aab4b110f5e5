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
