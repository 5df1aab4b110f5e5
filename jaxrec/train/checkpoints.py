"""Training checkpoints: orbax's CheckpointManager keeping the last N saves and the best one, resumable.

Each save holds two items: `state` (the TrainState: params, batch stats, optimizer state, step) and `loop`
(JSON: stage, epoch, step within the epoch, best validation loss so far, history). Orbax writes every save
under a temporary name and renames it when complete, so a process killed mid-save leaves the previous
saves intact and a restart resumes from the latest complete one.

`run.json` beside the saves records the config that made them: a workdir that holds another run's
checkpoints is refused instead of being resumed into or overwritten.
"""

from __future__ import annotations

import json
import os
from typing import Any, Mapping

import jax
import orbax.checkpoint as ocp
from jax.sharding import NamedSharding

from jaxrec import io_utils
from jaxrec.errors import InputError

RUN_FILE = "run.json"
# Keys that do not change what a run computes, so a resume may differ in them.
_FREE_KEYS = ("worker_count", "log_every_s")


def score(stage: int, val_loss: float) -> float:
  """Higher is better and a later stage always ranks above an earlier one: BestN then keeps the best save of
  the current stage (validation losses of different stages' tasks are not comparable)."""
  return stage * 1e9 - min(float(val_loss), 1e8)


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
  if isinstance(tree, Mapping):
    out = {}
    for key, value in tree.items():
      out.update(_flatten(value, f"{prefix}{key}."))
    return out
  return {prefix[:-1]: tree}


def check_run(workdir: str, config: Mapping[str, Any]) -> bool:
  """True when `workdir` holds this run (resume), False when it is new (and records it). Raises InputError
  naming the differing keys when it holds another run."""
  path = os.path.join(workdir, RUN_FILE)
  recorded = {k: v for k, v in _flatten(config).items() if k.rsplit(".", 1)[-1] not in _FREE_KEYS}
  if os.path.exists(path):
    try:
      with open(path) as f:
        previous = json.load(f)
    except (OSError, ValueError) as e:
      raise InputError(f"{path}: unreadable ({e}); this workdir's checkpoints are left as they are") from e
    previous = {k: v for k, v in previous.items() if k.rsplit(".", 1)[-1] not in _FREE_KEYS}
    # JSON turns tuples into lists: compare through the same round trip.
    recorded_json = json.loads(json.dumps(recorded))
    if previous != recorded_json:
      keys = sorted(set(previous) | set(recorded_json))
      diff = [f"{k}: {previous.get(k, '<absent>')!r} there, {recorded_json.get(k, '<absent>')!r} now"
              for k in keys if previous.get(k) != recorded_json.get(k)]
      raise InputError(f"{workdir} holds the checkpoints of another run (config differs at "
                       f"{'; '.join(diff[:6])}{' ...' if len(diff) > 6 else ''}); choose another --workdir "
                       "(nothing there was changed)")
    return True
  if os.path.isdir(os.path.join(workdir, "checkpoints")) and os.listdir(os.path.join(workdir, "checkpoints")):
    raise InputError(f"{workdir}/checkpoints holds checkpoints without a {RUN_FILE}; choose another --workdir")
  if jax.process_index() == 0:
    io_utils.write_json(path, recorded)
  return False


class Checkpoints:
  """orbax CheckpointManager over WORKDIR/checkpoints: the last `keep` saves and the best by `score`."""

  def __init__(self, directory: str, keep: int):
    if keep < 1:
      raise InputError(f"checkpoint.keep must be >= 1, got {keep}")
    policy = ocp.checkpoint_managers.AnyPreservationPolicy([
        ocp.checkpoint_managers.LatestN(n=keep),
        # Saves without metrics (mid-epoch) are LatestN's business only.
        ocp.checkpoint_managers.BestN(get_metric_fn=lambda m: m["score"], n=1,
                                      keep_checkpoints_without_metrics=False),
    ])
    self.directory = os.path.abspath(directory)
    self.manager = ocp.CheckpointManager(
        self.directory, item_names=("state", "loop"),
        options=ocp.CheckpointManagerOptions(preservation_policy=policy, create=True))

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def all_steps(self) -> list[int]:
    return list(self.manager.all_steps())

  def save(self, step: int, state: Any, loop: Mapping[str, Any], metrics: Mapping[str, float] | None) -> None:
    self.manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                    loop=ocp.args.JsonSave(dict(loop))),
                      metrics=dict(metrics) if metrics is not None else None, force=True)

  def restore_loop(self, step: int) -> dict[str, Any]:
    self.manager.wait_until_finished()
    return dict(self.manager.restore(step, args=ocp.args.Composite(loop=ocp.args.JsonRestore()))["loop"])

  def restore_state(self, step: int, like: Any, sharding: NamedSharding) -> Any:
    """The state of save `step`, shaped like `like` and placed with `sharding` (replicated)."""
    self.manager.wait_until_finished()
    target = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), like)
    try:
      restored = self.manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target)))
    except Exception as e:  # orbax raises several types for a tree or shape mismatch
      raise InputError(f"{self.directory}/{step}: the checkpoint does not fit this model ({type(e).__name__}: "
                       f"{str(e)[:400]})") from e
    return restored["state"]

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.close()
