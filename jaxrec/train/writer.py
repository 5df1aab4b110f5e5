"""Training metrics to TensorBoard (tensorboardX: event files without TensorFlow) and to metrics.jsonl.

clu's metric writers need TensorFlow for TensorBoard output, which this project does not install; tensorboardX
writes the same event files (`tensorboard --logdir WORKDIR/tensorboard`). The JSONL file is for scripts and
tests. Only process 0 writes.
"""

from __future__ import annotations

import json
import os
from typing import Mapping

import jax


class MetricWriter:

  def __init__(self, workdir: str):
    self.active = jax.process_index() == 0
    if not self.active:
      return
    from tensorboardX import SummaryWriter
    self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"))
    self._jsonl = open(os.path.join(workdir, "metrics.jsonl"), "a")

  def write(self, step: int, scalars: Mapping[str, float]) -> None:
    if not self.active:
      return
    for name, value in scalars.items():
      if isinstance(value, (int, float)):
        self._tb.add_scalar(name, value, step)
    self._jsonl.write(json.dumps({"step": int(step), **scalars}) + "\n")
    self._jsonl.flush()

  def close(self) -> None:
    if self.active:
      self._tb.close()
      self._jsonl.close()
