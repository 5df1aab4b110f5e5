"""Which parameters train: shallow tuning freezes everything under 'backbone', deep tuning nothing."""

from __future__ import annotations

from typing import Any

import jax
import optax

from jaxrec.train.model import check_tune

FROZEN, TRAINABLE = "frozen", "trainable"


def _label(path: tuple, tune: str) -> str:
  top = path[0].key if path and hasattr(path[0], "key") else None
  return FROZEN if tune == "shallow" and top == "backbone" else TRAINABLE


def param_labels(params: Any, tune: str) -> Any:
  """The params tree with each leaf replaced by 'frozen' or 'trainable', decided by its path."""
  check_tune(tune)
  labels = jax.tree_util.tree_map_with_path(lambda path, _: _label(path, tune), params)
  # Every leaf labelled exactly once: a leaf left out of both groups would silently never train.
  leaves = jax.tree.leaves(params)
  got = jax.tree.leaves(labels)
  assert len(got) == len(leaves) and all(label in (FROZEN, TRAINABLE) for label in got), (len(got), len(leaves))
  return labels


def make_optimizer(params: Any, tune: str, learning_rate: float | optax.Schedule) -> optax.GradientTransformation:
  """Adam on the trainable params; frozen ones get zero updates and no Adam state (no mu/nu memory)."""
  # optax.multi_transform is the old name of optax.partition.
  return optax.partition({TRAINABLE: optax.adam(learning_rate), FROZEN: optax.set_to_zero()},
                         param_labels(params, tune))
