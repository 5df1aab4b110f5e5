"""Processes and devices: the multi-host set-up that must run before JAX touches a device.

One process per host (TPU pod slices, GPU nodes) or several on one machine (CPU tests). After
`initialize`, `jax.devices()` lists every device of every process, so the ('data',) mesh of
`extract.make_mesh` spans them all and each process feeds its slice of each global batch.
"""

from __future__ import annotations

import jax
from absl import logging


def initialize(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None, cpu_collectives: str = "") -> None:
  """jax.distributed.initialize; with no arguments it auto-detects TPU pods, SLURM and Open MPI.

  CPU processes need a collectives implementation to talk to each other ('gloo').
  """
  if cpu_collectives:
    jax.config.update("jax_cpu_collectives_implementation", cpu_collectives)
  jax.distributed.initialize(coordinator_address=coordinator_address, num_processes=num_processes,
                             process_id=process_id)
  logging.info("process %d of %d: %d local / %d global devices", jax.process_index(), jax.process_count(),
               jax.local_device_count(), jax.device_count())
