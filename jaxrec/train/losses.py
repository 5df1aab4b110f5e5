"""Per-task losses (softmax cross-entropy for classes, mean absolute error for regression) and their
weighted sum; rows with a missing label count for no task they lack."""

from __future__ import annotations

from typing import Mapping, Sequence

import jax
import jax.numpy as jnp
import optax

from jaxrec.train.model import Task


def valid_labels(task: Task, labels: jax.Array, mask: jax.Array) -> jax.Array:
  """bool [B]: real rows (mask) whose label is present (class >= 0, regression target not NaN)."""
  present = labels >= 0 if task.kind == "classification" else ~jnp.isnan(labels)
  return jnp.logical_and(mask.astype(bool), present)


def _masked_mean(values: jax.Array, valid: jax.Array) -> jax.Array:
  # An empty task contributes 0 (not NaN) so one batch without its labels does not poison the step.
  return jnp.sum(jnp.where(valid, values, 0.0)) / jnp.maximum(jnp.sum(valid), 1)


def per_row_losses(outputs: Mapping[str, jax.Array], labels: Mapping[str, jax.Array], tasks: Sequence[Task],
                   mask: jax.Array) -> dict[str, tuple[jax.Array, jax.Array]]:
  """task name -> (loss of each row [B], valid [B]); rows that are not valid hold 0."""
  out = {}
  for task in tasks:
    y = jnp.asarray(labels[task.name])
    valid = valid_labels(task, y, mask)
    if task.kind == "classification":
      # Missing labels (-1) are replaced before the loss: any index would do, the row is masked out.
      per_row = optax.softmax_cross_entropy_with_integer_labels(outputs[task.name].astype(jnp.float32),
                                                                jnp.where(valid, y, 0).astype(jnp.int32))
    else:
      # NaN targets replaced first: jnp.where alone would still send NaN into the gradient.
      per_row = jnp.abs(outputs[task.name].astype(jnp.float32) - jnp.where(valid, y, 0.0).astype(jnp.float32))
    out[task.name] = (jnp.where(valid, per_row, 0.0), valid)
  return out


def task_losses(outputs: Mapping[str, jax.Array], labels: Mapping[str, jax.Array], tasks: Sequence[Task],
                mask: jax.Array) -> dict[str, jax.Array]:
  """task name -> its loss, a masked mean over the rows that have the label."""
  return {name: _masked_mean(per_row, valid)
          for name, (per_row, valid) in per_row_losses(outputs, labels, tasks, mask).items()}


def summed_metrics(outputs: Mapping[str, jax.Array], labels: Mapping[str, jax.Array], tasks: Sequence[Task],
                   mask: jax.Array) -> dict[str, jax.Array]:
  """Sums and counts that add up over batches (and padded rows), so an epoch's means are exact:
  'loss_sum/<task>', 'count/<task>' and, for classification, 'correct/<task>'."""
  out = {}
  for task in tasks:
    per_row, valid = per_row_losses(outputs, labels, (task,), mask)[task.name]
    out[f"loss_sum/{task.name}"] = jnp.sum(per_row)
    out[f"count/{task.name}"] = jnp.sum(valid).astype(jnp.float32)
    if task.kind == "classification":
      hit = jnp.argmax(outputs[task.name], axis=-1) == jnp.asarray(labels[task.name])
      out[f"correct/{task.name}"] = jnp.sum(jnp.logical_and(hit, valid)).astype(jnp.float32)
  return out


def epoch_means(sums: Mapping[str, float], tasks: Sequence[Task]) -> dict[str, float]:
  """Accumulated `summed_metrics` -> {'loss': sum_i w_i L_i, 'loss/<task>', 'accuracy/<task>'}."""
  out, total = {}, 0.0
  for task in tasks:
    count = float(sums[f"count/{task.name}"])
    loss = float(sums[f"loss_sum/{task.name}"]) / max(count, 1.0)
    out[f"loss/{task.name}"] = loss
    total += task.weight * loss
    if task.kind == "classification":
      out[f"accuracy/{task.name}"] = float(sums[f"correct/{task.name}"]) / max(count, 1.0)
  out["loss"] = total
  return out


def total_loss(losses: Mapping[str, jax.Array], tasks: Sequence[Task]) -> jax.Array:
  """sum_i w_i L_i."""
  return sum((task.weight * losses[task.name] for task in tasks), jnp.zeros((), jnp.float32))
