"""Jitted, data-parallel train and eval steps over the ('data',) mesh.

The state is replicated and each batch is split over 'data'. jit sees global arrays, so batch norm's
statistics and the loss means are over the GLOBAL batch: the same numbers as on one device.

Batch: {'image': the model's input [B, ...], 'mask': bool [B] (False: padding), 'labels': {task: [B]}}.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import flax
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxrec.extract import DATA
from jaxrec.train.losses import summed_metrics, task_losses, total_loss
from jaxrec.train.model import FineTuneModel, Task, check_tune


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: Any  # {'backbone': ..., 'heads': ...}
  batch_stats: Any  # {'backbone': ...}
  opt_state: Any


def create_state(params: Any, batch_stats: Any, optimizer: optax.GradientTransformation) -> TrainState:
  return TrainState(step=jnp.zeros((), jnp.int32), params=params, batch_stats=batch_stats,
                    opt_state=optimizer.init(params))


def _metrics(losses: dict[str, jax.Array], loss: jax.Array) -> dict[str, jax.Array]:
  return {"loss": loss, **{f"loss/{name}": value for name, value in losses.items()}}


def _shardings(mesh: Mesh) -> tuple[NamedSharding, NamedSharding]:
  return NamedSharding(mesh, PartitionSpec()), NamedSharding(mesh, PartitionSpec(DATA))


def make_train_step(model: FineTuneModel, tasks: Sequence[Task], tune: str, optimizer: optax.GradientTransformation,
                    mesh: Mesh) -> Callable[[TrainState, dict], tuple[TrainState, dict]]:
  """(state, batch) -> (new state, {'loss', 'loss/<task>'}), jitted over `mesh`."""
  check_tune(tune)
  tasks = tuple(tasks)

  def objective(outputs: dict, batch: dict) -> tuple[jax.Array, dict]:
    losses = task_losses(outputs, batch["labels"], tasks, batch["mask"])
    return total_loss(losses, tasks), losses

  def shallow(state: TrainState, batch: dict) -> tuple[TrainState, dict]:
    # The backbone runs once, in inference mode, outside the differentiated function: there is no backbone
    # backward pass at all, not one that XLA would have to prune.
    variables = {"params": state.params, "batch_stats": state.batch_stats}
    feature = jax.lax.stop_gradient(
        model.apply(variables, batch["image"], train=False, tune="shallow", method=FineTuneModel.features))

    def loss_fn(head_params: Any) -> tuple[jax.Array, dict]:
      return objective(model.apply({"params": {"heads": head_params}}, feature, method=FineTuneModel.head), batch)

    (loss, losses), head_grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params["heads"])
    # The frozen group's transform (set_to_zero) ignores its gradients; zeros keep the tree whole.
    grads = {**jax.tree.map(jnp.zeros_like, state.params), "heads": head_grads}
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    # Only the heads are written: the backbone leaves are passed through, bit for bit.
    params = {**state.params, "heads": optax.apply_updates(state.params["heads"], updates["heads"])}
    return state.replace(step=state.step + 1, params=params, opt_state=opt_state), _metrics(losses, loss)

  def deep(state: TrainState, batch: dict) -> tuple[TrainState, dict]:
    def loss_fn(params: Any) -> tuple[jax.Array, tuple[dict, Any]]:
      outputs, updated = model.apply({"params": params, "batch_stats": state.batch_stats}, batch["image"],
                                     train=True, tune="deep", mutable=["batch_stats"])
      loss, losses = objective(outputs, batch)
      return loss, (losses, updated["batch_stats"])

    (loss, (losses, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    return (state.replace(step=state.step + 1, params=params, batch_stats=batch_stats, opt_state=opt_state),
            _metrics(losses, loss))

  replicated, sharded = _shardings(mesh)
  return jax.jit(shallow if tune == "shallow" else deep, in_shardings=(replicated, sharded),
                 out_shardings=(replicated, replicated), compiler_options=_compiler_options(tune, mesh))


# XLA:CPU (jax 0.10.2) hands every convolution to YNNPACK, whose weight-gradient convolutions (the window is
# the whole feature map) run 5-40x slower than XLA's own: ResNet50's deep step went from 0.20-0.23 to 0.52
# images/s (batch 8, 2-core CPU; benchmarks/README.md). YNNPACK stays on for dots, elementwise ops and
# reductions: turning it off entirely made the gradient less accurate against float64.
_CPU_DEEP_OPTIONS = {"xla_cpu_experimental_ynn_fusion_type":
                     "LIBRARY_FUSION_TYPE_DOT,LIBRARY_FUSION_TYPE_ELTWISE,LIBRARY_FUSION_TYPE_REDUCE"}


def _compiler_options(tune: str, mesh: Mesh) -> dict | None:
  return _CPU_DEEP_OPTIONS if tune == "deep" and mesh.devices.flat[0].platform == "cpu" else None


def make_eval_step(model: FineTuneModel, tasks: Sequence[Task],
                   mesh: Mesh) -> Callable[[TrainState, dict], tuple[dict, dict]]:
  """(state, batch) -> (sums, outputs): inference mode (running BN statistics), nothing updated. `sums` are
  `summed_metrics` (summable over batches, padding excluded); outputs stay split over 'data' like the batch."""
  tasks = tuple(tasks)

  def evaluate(state: TrainState, batch: dict) -> tuple[dict, dict]:
    outputs = model.apply({"params": state.params, "batch_stats": state.batch_stats}, batch["image"], train=False,
                          tune="deep")
    return summed_metrics(outputs, batch["labels"], tasks, batch["mask"]), outputs

  replicated, sharded = _shardings(mesh)
  return jax.jit(evaluate, in_shardings=(replicated, sharded), out_shardings=(replicated, sharded))
