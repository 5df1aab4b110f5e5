"""The fine-tuning run: stages of training with validation, early stopping and checkpoints, then the export.

  config (configs/table2.py) -> backbone variables -> for each stage: labelled splits, optimizer, epochs of
  jitted steps, validation, best kept -> export (backbone + shared layer) for launch.extract

A run is resumable: kill it at any point and start the same command again; it continues from the latest
checkpoint and ends with the same numbers as a run that was never interrupted (the epochs' shuffles are
seeded by (seed, epoch) and a resumed epoch skips the batches it already trained on).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging
from jax.sharding import NamedSharding, PartitionSpec

from jaxrec import io_utils
from jaxrec.errors import InputError
from jaxrec.extract import make_mesh, resolve_feature
from jaxrec.models import registry, store
from jaxrec.train import data as train_data
from jaxrec.train.checkpoints import Checkpoints, check_run, score
from jaxrec.train.losses import epoch_means
from jaxrec.train.model import KINDS, FineTuneModel, Task, check_tune, init_heads, pool
from jaxrec.train.optim import make_optimizer
from jaxrec.train.step import create_state, make_eval_step, make_train_step
from jaxrec.train.targets import TaskSpec, build_splits
from jaxrec.train.writer import MetricWriter

EXPORT = "export"
SUMMARY = "summary.json"
_STAGE_KEYS = {"dataset", "tasks", "tune", "learning_rate", "max_epochs", "patience", "keep_best"}
_DATASET_KEYS = {"name", "data_dir", "manual_dir", "limit", "train_split", "validation_split",
                 "validation_fraction", "allow_missing_labels"}
_TASK_KEYS = {"kind", "target"}


class TrainingDiverged(InputError):
  """The loss became NaN or infinite; the checkpoints written before are kept."""


# ------------------------------------------------------------------------------------------------ config


def validate(config: ml_collections.ConfigDict) -> None:
  """Every problem of a training config at once, naming the key, before anything is built."""
  errors = []

  def unknown(where: str, got, allowed) -> None:
    extra = sorted(set(got) - set(allowed))
    missing = sorted(set(allowed) - set(got))
    if extra:
      errors.append(f"{where}: unknown key(s) {', '.join(extra)} (known: {', '.join(sorted(allowed))})")
    if missing:
      errors.append(f"{where}: missing key(s) {', '.join(missing)}")

  for name, dataset in config.datasets.items():
    unknown(f"config.datasets.{name}", dataset.keys(), _DATASET_KEYS)
  for name, task in config.tasks.items():
    unknown(f"config.tasks.{name}", task.keys(), _TASK_KEYS)
    if task.get("kind") not in KINDS:
      errors.append(f"config.tasks.{name}.kind: {task.get('kind')!r}; expected one of {', '.join(KINDS)}")
  for name in config.stage_order:
    if name not in config.stages:
      errors.append(f"config.stage_order names stage {name!r}, which config.stages does not define "
                    f"(defined: {', '.join(config.stages.keys()) or 'none'})")
  for name, stage in config.stages.items():
    where = f"config.stages.{name}"
    unknown(where, stage.keys(), _STAGE_KEYS)
    if stage.get("dataset") not in config.datasets:
      errors.append(f"{where}.dataset: {stage.get('dataset')!r} is not in config.datasets "
                    f"({', '.join(config.datasets.keys())})")
    tasks = stage.get("tasks") or {}
    if not tasks:
      errors.append(f"{where}.tasks: at least one task is needed")
    for task, weight in dict(tasks).items():
      if task not in config.tasks:
        errors.append(f"{where}.tasks: task {task!r} is not defined in config.tasks "
                      f"({', '.join(config.tasks.keys())})")
      if not isinstance(weight, (int, float)) or weight < 0:
        errors.append(f"{where}.tasks.{task}: weight must be a number >= 0, got {weight!r}")
    if stage.get("tune") not in ("shallow", "deep"):
      errors.append(f"{where}.tune: {stage.get('tune')!r}; expected shallow or deep")
    if not (isinstance(stage.get("learning_rate"), (int, float)) and stage.get("learning_rate") > 0):
      errors.append(f"{where}.learning_rate: must be > 0, got {stage.get('learning_rate')!r}")
    if not (isinstance(stage.get("max_epochs"), int) and stage.get("max_epochs") >= 1):
      errors.append(f"{where}.max_epochs: must be an integer >= 1, got {stage.get('max_epochs')!r}")
    if not (isinstance(stage.get("patience"), int) and stage.get("patience") >= 0):
      errors.append(f"{where}.patience: must be an integer >= 0 (0: no early stopping), got {stage.get('patience')!r}")
  if config.batch_size < 1:
    errors.append(f"config.batch_size: must be positive, got {config.batch_size}")
  elif config.batch_size % jax.device_count():
    errors.append(f"config.batch_size: {config.batch_size} is not a multiple of the {jax.device_count()} devices")
  if not config.hidden or any(h < 1 for h in config.hidden):
    errors.append(f"config.hidden: the shared layer sizes must be positive, got {config.hidden!r}")
  if errors:
    raise InputError("invalid training config:\n  " + "\n  ".join(errors))


def _backbone(config, cache: str) -> tuple[registry.Backbone, Any, str]:
  """(backbone without classifier, variables, where they came from): a launch.convert folder, a weights file
  (converted and cached under WORKDIR/cache), or the weights that ship with a package."""
  from jaxrec.convert.dispatch import convert_cached, default_weights

  source = config.weights or default_weights(config.arch)
  if source == "random":  # smoke runs and tests: no ImageNet knowledge at all
    backbone = registry.get_backbone(config.arch, config.layout or None, include_top=False)
    size = config.image_size or backbone.preprocessing.size
    variables = jax.jit(backbone.module.init, static_argnames="train")(
        jax.random.PRNGKey(config.seed), jnp.zeros((1, size, size, 3), jnp.float32), train=False)
    return backbone, jax.tree.map(np.asarray, variables), "random"
  if not source:
    raise InputError(f"{config.arch} needs ImageNet weights that cannot be downloaded here: pass "
                     "--config.weights=FILE (a Keras .h5 or torchvision .pth) or a folder written by launch.convert")
  if os.path.isdir(source):
    backbone, variables, _ = store.load_backbone(source)
    if backbone.arch != config.arch:
      raise InputError(f"{source} holds a {backbone.arch} backbone, but config.arch is {config.arch!r}")
    if config.layout and backbone.layout != config.layout:
      raise InputError(f"{source} holds the {backbone.layout} layout of {backbone.arch}, not {config.layout!r}")
  elif not os.path.isfile(source):
    raise InputError(f"{source}: weights file not found")
  else:
    backbone, variables, _ = convert_cached(config.arch, config.layout or None, source, cache)
  if "logits" in backbone.features:  # the classifier's dropout would need an rng in train mode: drop it
    notop = registry.get_backbone(backbone.arch, backbone.layout, include_top=False)
    keep = notop.abstract_variables()
    variables = jax.tree.map(lambda _, v: v, keep,
                             {c: {k: variables[c][k] for k in keep[c]} for c in keep})
    backbone = notop
  return backbone, variables, os.path.abspath(source)


# ------------------------------------------------------------------------------------------------ helpers


def _host(x: jax.Array) -> np.ndarray:
  """A replicated array's value on this host (also in multi-process runs)."""
  return np.asarray(x.addressable_data(0))


def _global(batch: Mapping[str, Any], sharding: NamedSharding) -> dict:
  """This process's rows -> one global array per leaf, split over 'data'."""
  return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), dict(batch))


class _Progress:
  def __init__(self, every_s: float, total: int, label: str, batch_size: int):
    self.every_s, self.total, self.label, self.batch_size = every_s, total, label, batch_size
    self.start = self.last = time.monotonic()
    self.done = 0

  def step(self, position: int, loss: float) -> None:
    self.done += 1
    now = time.monotonic()
    if now - self.last < self.every_s and position < self.total:
      return
    self.last = now
    rate = self.done * self.batch_size / max(now - self.start, 1e-9)
    eta = (self.total - position) * self.batch_size / max(rate, 1e-9)
    if jax.process_index() == 0:
      print(f"{self.label} step {position}/{self.total} loss {loss:.4f} {rate:.1f} images/s ETA {eta:.0f} s",
            flush=True)


@dataclasses.dataclass
class _Stage:
  index: int
  name: str
  config: ml_collections.ConfigDict
  tasks: tuple[Task, ...]
  train: train_data.LabelledSplit
  validation: train_data.LabelledSplit


def _task_specs(config, stage) -> list[TaskSpec]:
  return [TaskSpec(name, config.tasks[name].kind, config.tasks[name].target, float(weight))
          for name, weight in stage.tasks.items()]


def _carry_params(model: FineTuneModel, previous: Mapping[str, Any] | None, backbone_params: Any, rng: jax.Array,
                  feature_dim: int) -> dict:
  """Params of a stage: the backbone and shared layers carried over from the previous stage; task heads
  kept when the task is the same shape, else freshly initialised."""
  fresh = init_heads(model, rng, feature_dim)
  if previous is None:
    return {"backbone": backbone_params, "heads": fresh}
  heads = {}
  for name, value in fresh.items():
    old = previous["heads"].get(name)
    same = old is not None and jax.tree.structure(old) == jax.tree.structure(value) and all(
        a.shape == b.shape for a, b in zip(jax.tree.leaves(old), jax.tree.leaves(value)))
    heads[name] = old if same else value
  return {"backbone": previous["backbone"], "heads": heads}


def _validate(state, eval_step, split, tasks, size, batch_size, sharding, worker_count) -> dict[str, float]:
  sums: dict[str, float] = {}
  shard = (jax.process_index(), jax.process_count())
  for batch in train_data.eval_batches(split, size=size, batch_size=batch_size, shard=shard,
                                       worker_count=worker_count):
    out, _ = eval_step(state, _global(batch, sharding))
    for key, value in out.items():
      sums[key] = sums.get(key, 0.0) + float(_host(value))
  return epoch_means(sums, tasks)


def _host_floats(metrics: Mapping[str, jax.Array]) -> dict[str, float]:
  return {k: float(_host(v)) for k, v in metrics.items()}


# ------------------------------------------------------------------------------------------------ the run


def train(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Runs (or resumes) every stage of `config`, then exports WORKDIR/export. Returns the summary."""
  validate(config)
  workdir = os.path.abspath(workdir)
  os.makedirs(workdir, exist_ok=True)
  summary_path = os.path.join(workdir, SUMMARY)
  resumed = check_run(workdir, config.to_dict())
  if resumed and os.path.isfile(summary_path) and os.path.isdir(os.path.join(workdir, EXPORT)):
    print(f"{workdir}: this run has finished already; its export is {workdir}/{EXPORT}", flush=True)
    with open(summary_path) as f:
      return json.load(f)

  backbone, variables, source = _backbone(config, os.path.join(workdir, "cache"))
  base_feature = resolve_feature(backbone, config.base_feature or None)
  if backbone.features[base_feature] is None:
    logging.info("%s is a spatial map: it is average-pooled under the shared layer", base_feature)
  size = config.image_size or backbone.preprocessing.size
  feature_dim = int(jax.eval_shape(
      lambda v, x: pool(backbone.module.apply(v, x, train=False)[base_feature]),
      variables, jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32)).shape[-1])

  mesh = make_mesh()
  replicated, sharded = NamedSharding(mesh, PartitionSpec()), NamedSharding(mesh, PartitionSpec("data"))
  checkpoints = Checkpoints(os.path.join(workdir, "checkpoints"), config.checkpoint.keep)
  writer = MetricWriter(workdir)

  loop = {"stage": 0, "epoch": 0, "step_in_epoch": 0, "global_step": 0, "best_val_loss": None, "best_step": None,
          "bad_epochs": 0, "stopped": False, "history": []}
  latest = checkpoints.latest_step()
  if latest is not None:
    loop = checkpoints.restore_loop(latest)
    print(f"resuming from {checkpoints.directory}/{latest}: stage {loop['stage']} epoch {loop['epoch']} "
          f"step {loop['step_in_epoch']}", flush=True)

  params_carry = None  # the previous stage's params (backbone + heads)
  batch_stats = {"backbone": variables["batch_stats"]} if "batch_stats" in variables else {}
  backbone_params = variables["params"]
  rng = jax.random.PRNGKey(config.seed)
  try:
    for index, name in enumerate(config.stage_order):
      if index < loop["stage"]:
        continue  # finished before the restart: the latest save's state already holds what it trained
      stage_config = config.stages[name]
      dataset = config.datasets[stage_config.dataset]
      data_dir = os.path.expanduser(dataset.data_dir)
      train_split, val_split, tasks, _ = build_splits(dataset, _task_specs(config, stage_config),
                                                             data_dir=data_dir, where=f"stage {name!r}")
      stage = _Stage(index, name, stage_config, tasks, train_split, val_split)
      tune = check_tune(stage_config.tune)
      model = FineTuneModel(backbone.module, tasks, feature=base_feature, hidden=tuple(config.hidden),
                            preprocessing=backbone.preprocessing)
      params = _carry_params(model, params_carry, backbone_params, jax.random.fold_in(rng, index), feature_dim)
      optimizer = make_optimizer(params, tune, stage_config.learning_rate)
      state = jax.device_put(create_state(params, batch_stats, optimizer), replicated)
      if latest is not None:  # resuming inside this stage
        state = checkpoints.restore_state(latest, state, replicated)
        latest = None
      state = _run_stage(config, stage, model, tune, optimizer, state, loop, checkpoints, writer, mesh, size,
                         sharded, replicated)
      params_carry, batch_stats = state.params, state.batch_stats
      loop.update({"stage": index + 1, "epoch": 0, "step_in_epoch": 0, "best_val_loss": None, "best_step": None,
                   "bad_epochs": 0, "stopped": False})
  finally:
    checkpoints.wait()
    writer.close()

  final_params = params_carry if params_carry is not None else {"backbone": backbone_params}
  export_dir = _export(config, workdir, backbone, base_feature, final_params, batch_stats, size, source)
  summary = {"name": config.get("name", ""), "export": export_dir, "image_size": size,
             "history": loop["history"], "steps": loop["global_step"]}
  if jax.process_index() == 0:
    io_utils.write_json(summary_path, summary)
  checkpoints.close()
  return summary


def end_of_epoch(loop: dict, val_loss: float, patience: int) -> bool:
  """Advances `loop` past an epoch with validation loss `val_loss`: tracks the best epoch and stops the stage
  once `patience` epochs in a row did not improve on it (patience 0: never). Returns whether it improved."""
  loop["epoch"] += 1
  loop["step_in_epoch"] = 0
  improved = loop["best_val_loss"] is None or val_loss < loop["best_val_loss"]
  if improved:
    loop["best_val_loss"], loop["best_step"], loop["bad_epochs"] = val_loss, loop["global_step"], 0
  else:
    loop["bad_epochs"] += 1
  if patience and loop["bad_epochs"] >= patience:
    loop["stopped"] = True
  return improved


def _run_stage(config, stage: _Stage, model: FineTuneModel, tune: str, optimizer, state, loop: dict,
               checkpoints: Checkpoints, writer: MetricWriter, mesh, size: int, sharded, replicated):
  """Epochs of one stage from where `loop` says, with validation, early stopping and saves; returns the
  state to carry on with (the best one when the stage keeps its best)."""
  sc = stage.config
  train_step = make_train_step(model, stage.tasks, tune, optimizer, mesh)
  eval_step = make_eval_step(model, stage.tasks, mesh)
  shard = (jax.process_index(), jax.process_count())
  steps = train_data.steps_per_epoch(stage.train, config.batch_size)
  task_names = ", ".join(f"{t.name} x{t.weight:g}" for t in stage.tasks)
  if jax.process_index() == 0:
    print(f"stage {stage.name} ({tune}, {task_names}, lr {sc.learning_rate:g}): {len(stage.train)} training and "
          f"{len(stage.validation)} validation images at {size} px, {steps} steps per epoch, at most "
          f"{sc.max_epochs} epochs, patience {sc.patience or 'off'}", flush=True)
  while not loop["stopped"] and loop["epoch"] < sc.max_epochs:
    epoch = loop["epoch"]
    label = f"stage {stage.name} epoch {epoch + 1}/{sc.max_epochs}"
    progress = _Progress(config.log_every_s, steps, label, config.batch_size)
    train_sum, train_count = 0.0, 0
    for batch in train_data.train_batches(stage.train, size=size, batch_size=config.batch_size,
                                          seed=config.seed * 1000 + stage.index, epoch=epoch,
                                          start_step=loop["step_in_epoch"], shard=shard,
                                          worker_count=config.worker_count):
      state, metrics = train_step(state, _global(batch, sharded))
      values = _host_floats(metrics)
      if not math.isfinite(values["loss"]):
        last = checkpoints.latest_step()
        raise TrainingDiverged(
            f"{label} step {loop['step_in_epoch'] + 1}: the loss is {values['loss']} "
            f"({', '.join(f'{k}={v:.4g}' for k, v in values.items() if k != 'loss')}); training stopped. "
            + (f"The last good checkpoint, step {last} in {checkpoints.directory}, is kept. " if last is not None
               else "No checkpoint had been written yet. ")
            + f"Lower config.stages.{stage.name}.learning_rate ({sc.learning_rate:g}) or check the targets.")
      loop["global_step"] += 1
      loop["step_in_epoch"] += 1
      train_sum += values["loss"]
      train_count += 1
      progress.step(loop["step_in_epoch"], values["loss"])
      every = config.checkpoint.every_steps
      if every and loop["global_step"] % every == 0 and loop["step_in_epoch"] < steps:
        checkpoints.save(loop["global_step"], state, loop, None)
    val = _validate(state, eval_step, stage.validation, stage.tasks, size, config.batch_size, sharded,
                    config.worker_count)
    if not math.isfinite(val["loss"]):
      raise TrainingDiverged(f"{label}: the validation loss is {val['loss']}; training stopped (last good "
                             f"checkpoint: step {checkpoints.latest_step()} in {checkpoints.directory})")
    improved = end_of_epoch(loop, val["loss"], sc.patience)
    record = {"stage": stage.name, "epoch": loop["epoch"], "step": loop["global_step"],
              # A resumed epoch's train loss covers the steps after the restart only.
              "train_loss": train_sum / max(train_count, 1), **{f"val_{k}": v for k, v in val.items()}}
    loop["history"].append(record)
    checkpoints.save(loop["global_step"], state, loop, {"score": score(stage.index, val["loss"])})
    writer.write(loop["global_step"], {f"{stage.name}/{k}": v for k, v in record.items()
                                       if isinstance(v, float)})
    if jax.process_index() == 0:
      accuracy = " ".join(f"{k[4:]} {v:.3f}" for k, v in record.items() if k.startswith("val_accuracy"))
      print(f"{label}: train loss {record['train_loss']:.4f}, validation loss {val['loss']:.4f}"
            f"{' ' + accuracy if accuracy else ''}{' (best)' if improved else ''}"
            f"{'; early stop' if loop['stopped'] else ''}", flush=True)
  if sc.keep_best and loop["best_step"] is not None and loop["best_step"] != loop["global_step"]:
    state = checkpoints.restore_state(loop["best_step"], state, replicated)
    if jax.process_index() == 0:
      print(f"stage {stage.name}: keeping the best epoch (step {loop['best_step']}, validation loss "
            f"{loop['best_val_loss']:.4f})", flush=True)
  return state


def _export(config, workdir: str, backbone: registry.Backbone, base_feature: str, params: Mapping[str, Any],
            batch_stats: Mapping[str, Any], size: int, source: str) -> str:
  """WORKDIR/export: the embedding model (backbone + shared layers) as a backbone folder for launch.extract,
  whose default feature is `config.export_feature`. A run without stages exports the backbone itself."""
  folder = os.path.join(workdir, EXPORT)
  host = lambda tree: jax.tree.map(lambda x: _host(x) if isinstance(x, jax.Array) else np.asarray(x), tree)
  extra = {"image_size": size, "trained_from": source, "run": workdir}
  if "heads" in params:
    hidden = tuple(int(h) for h in config.hidden)
    exported = registry.with_representation(backbone, base_feature, hidden, config.export_feature)
    exported = dataclasses.replace(exported, preprocessing=dataclasses.replace(backbone.preprocessing, size=size))
    variables = {"params": {"backbone": host(params["backbone"]),
                            "heads": {k: host(v) for k, v in params["heads"].items() if k.startswith("hidden_")}}}
    if batch_stats:
      variables["batch_stats"] = {"backbone": host(batch_stats["backbone"])}
    extra["representation"] = {"hidden": list(hidden), "base_feature": base_feature}
  else:  # fixed features
    exported = dataclasses.replace(backbone, default_feature=base_feature,
                                   preprocessing=dataclasses.replace(backbone.preprocessing, size=size))
    variables = {"params": host(params["backbone"])}
    if batch_stats:
      variables["batch_stats"] = host(batch_stats["backbone"])
  if jax.process_index() == 0:
    store.save_backbone(folder, exported, variables, source=None, overwrite=True, **extra)
    print(f"exported {exported.arch} + {'shared layers ' + str(tuple(config.hidden)) if 'heads' in params else 'no training'}"
          f" (default feature {exported.default_feature}, {size} px) -> {folder}", flush=True)
  return folder


def write_default_shop(config, workdir: str) -> str | None:
  """WORKDIR/shop: the default shop's purchase log over the photos of config.datasets.shop (Fashion-MNIST
  only), so launch.evaluate can replay it on the exported model's embeddings. None for other data."""
  ds = config.datasets.get("shop")
  if ds is None or ds.name != "fashion_mnist" or "shop" not in config or jax.process_index() != 0:
    return None
  from jaxrec import experiment
  source = experiment.fashion_mnist_photos(os.path.expanduser(ds.data_dir), ds.manual_dir, ds.limit or None,
                                           ds.train_split)
  return experiment.simulate_shop(source, os.path.join(workdir, "shop"), config.shop.num_users,
                                  config.shop.initial_stock)
