"""Fine-tuning train step: Flax (jaxrec.train.make_train_step) vs PyTorch eager, same batch, same process.

  python -m benchmarks.train_benchmark --arch=resnet50 --batch_size=8 --steps=5 --tunes=deep,shallow

Model on both sides: backbone without its classifier + Dense(1024) + ReLU + Dense(num_classes), softmax
cross-entropy, Adam (lr 1e-4).
* deep: every weight trains, batch norm in train mode (batch statistics, running averages updated).
* shallow: the backbone runs in inference mode without gradients (Flax: stop_gradient, torch: no_grad +
  eval()); only the head trains.
Also timed: the Flax inference forward (backbone + heads, jitted), since a shallow step should cost little
more than it. Steps are interleaved (Flax, torch, Flax forward, Flax, ...) so that the load of a shared
machine hits both sides alike; medians are printed. FLOPs come from XLA's cost analysis of the compiled
step, as a fraction of the float32 matmul peak measured in the same run. Weights are random (speed does
not depend on them).
"""

from __future__ import annotations

import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
import torch
import torchvision
from absl import app, flags

from benchmarks.common import matmul_peak_gflops, random_variables
from jaxrec.extract import make_mesh
from jaxrec.models.registry import get_backbone
from jaxrec.train.model import FineTuneModel, Task, init_heads
from jaxrec.train.optim import make_optimizer
from jaxrec.train.step import create_state, make_train_step

_ARCH = flags.DEFINE_enum("arch", "resnet50", ["resnet50", "efficientnet_lite0"], "Backbone.")
_BATCH = flags.DEFINE_integer("batch_size", 8, "Images per step.")
_SIZE = flags.DEFINE_integer("size", 224, "Input side in pixels.")
_STEPS = flags.DEFINE_integer("steps", 5, "Timed steps per side (medians reported), after one warm-up step.")
_TUNES = flags.DEFINE_list("tunes", ["deep", "shallow"], "Tunings to time: deep, shallow.")
_CLASSES = flags.DEFINE_integer("num_classes", 10, "Classes of the single classification task.")
_LR = flags.DEFINE_float("learning_rate", 1e-4, "Adam learning rate (both sides).")
_YNN = flags.DEFINE_string(
    "ynn_fusion_type", None,
    "Unset: the library's own setting (jaxrec.train.step: on CPU the deep step keeps convolutions out of "
    "YNNPACK). If set, compile the Flax deep step with XLA:CPU's xla_cpu_experimental_ynn_fusion_type set to "
    "this instead (comma-separated LIBRARY_FUSION_TYPE_* names; '' turns YNNPACK off). 'noconv' is shorthand "
    "for DOT,ELTWISE,REDUCE (the library's setting).")

NOCONV = "LIBRARY_FUSION_TYPE_DOT,LIBRARY_FUSION_TYPE_ELTWISE,LIBRARY_FUSION_TYPE_REDUCE"

TASK = "label"


# ---------------------------------------------------------------------------------------------- PyTorch


def _torch_model(arch: str, num_classes: int) -> tuple[torch.nn.Module, torch.nn.Module, torch.nn.Module]:
  """(whole model, backbone (classifier replaced by Identity), head)."""
  head = torch.nn.Sequential(torch.nn.Linear(2048 if arch == "resnet50" else 1280, 1024), torch.nn.ReLU(),
                             torch.nn.Linear(1024, num_classes))
  if arch == "resnet50":
    backbone = torchvision.models.resnet50()
    backbone.fc = torch.nn.Identity()
  else:
    import efficientnet_lite_pytorch
    backbone = efficientnet_lite_pytorch.EfficientNet.from_name("efficientnet-lite0")
    backbone._fc = torch.nn.Identity()
    backbone._dropout = torch.nn.Identity()  # the Flax backbone is built without its classifier (and dropout)
  return torch.nn.Sequential(backbone, head), backbone, head


def _torch_step(arch: str, tune: str, x: torch.Tensor, y: torch.Tensor):
  torch.manual_seed(0)
  model, backbone, head = _torch_model(arch, _CLASSES.value)
  loss_fn = torch.nn.CrossEntropyLoss()
  if tune == "deep":
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=_LR.value)

    def step() -> float:
      optimizer.zero_grad(set_to_none=True)
      loss = loss_fn(model(x), y)
      loss.backward()
      optimizer.step()
      return loss.item()
  else:
    backbone.eval()
    head.train()
    optimizer = torch.optim.Adam(head.parameters(), lr=_LR.value)

    def step() -> float:
      with torch.no_grad():
        feature = backbone(x)
      optimizer.zero_grad(set_to_none=True)
      loss = loss_fn(head(feature), y)
      loss.backward()
      optimizer.step()
      return loss.item()
  return step


# ------------------------------------------------------------------------------------------------- Flax


def _flops(compiled) -> float:
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return float(cost.get("flops", 0.0))


class FlaxSide:
  """The jaxrec model, its variables, and compiled train steps / forward."""

  def __init__(self, arch: str, images: np.ndarray, labels: np.ndarray):
    backbone = get_backbone(arch, "torchvision" if arch == "resnet50" else None, include_top=False)
    self.tasks = (Task(TASK, "classification", num_classes=_CLASSES.value),)
    self.model = FineTuneModel(backbone.module, self.tasks)
    variables = random_variables(backbone, _SIZE.value)
    heads = init_heads(self.model, jax.random.PRNGKey(0), backbone.features["pool"])
    self.params = {"backbone": variables["params"], "heads": heads}
    self.batch_stats = {"backbone": variables["batch_stats"]}
    self.mesh = make_mesh()
    self.batch = {"image": jnp.asarray(images), "mask": jnp.ones(len(images), bool),
                  "labels": {TASK: jnp.asarray(labels)}}

  def train_step(self, tune: str):
    """(step(), flops per step, compile seconds); step() runs one step on the carried state."""
    optimizer = make_optimizer(self.params, tune, _LR.value)
    state = create_state(self.params, self.batch_stats, optimizer)
    options = None
    if tune == "deep" and _YNN.value is not None:
      options = {"xla_cpu_experimental_ynn_fusion_type": NOCONV if _YNN.value == "noconv" else _YNN.value}
    t = time.perf_counter()
    lowered = make_train_step(self.model, self.tasks, tune, optimizer, self.mesh).lower(state, self.batch)
    compiled = lowered.compile(compiler_options=options)
    seconds = time.perf_counter() - t
    holder = {"state": state}

    def step() -> float:
      holder["state"], metrics = compiled(holder["state"], self.batch)
      return float(jax.block_until_ready(metrics)["loss"])  # float() waits for the state too (same program)

    return step, _flops(compiled), seconds

  def forward(self):
    variables = {"params": self.params, "batch_stats": self.batch_stats}
    fn = jax.jit(lambda v, x: self.model.apply(v, x, train=False, tune="deep")[TASK])
    compiled = fn.lower(variables, self.batch["image"]).compile()
    return (lambda: jax.block_until_ready(compiled(variables, self.batch["image"]))), _flops(compiled)


# ------------------------------------------------------------------------------------------------ timing


def _interleaved(fns: dict, steps: int) -> dict[str, list[float]]:
  """Warm-up call of each, then `steps` rounds calling each once, in turn; seconds per call."""
  for fn in fns.values():
    fn()
  times = {name: [] for name in fns}
  for _ in range(steps):
    for name, fn in fns.items():
      t = time.perf_counter()
      fn()
      times[name].append(time.perf_counter() - t)
  return times


def _describe(times: list[float], batch: int) -> str:
  return (f"{batch / statistics.median(times):6.2f} img/s (median {statistics.median(times):.3f} s, "
          f"{min(times):.3f}-{max(times):.3f})")


def main(argv):
  del argv
  arch, batch, size = _ARCH.value, _BATCH.value, _SIZE.value
  peak = matmul_peak_gflops()
  print(f"jax {jax.__version__} on {jax.devices()[0].platform} ({jax.device_count()} device), torch "
        f"{torch.__version__} ({torch.get_num_threads()} threads); float32 matmul peak {peak:.1f} GFLOP/s")
  print(f"{arch}, batch {batch}, {size} px, 1 classification task of {_CLASSES.value} classes, Adam lr {_LR.value}; "
        f"deep step ynn_fusion_type: {'the library setting (no convolutions in YNNPACK)' if _YNN.value is None else repr(_YNN.value)}")

  rng = np.random.default_rng(0)
  images = rng.standard_normal((batch, size, size, 3)).astype(np.float32)  # already preprocessed
  labels = rng.integers(0, _CLASSES.value, batch).astype(np.int32)
  x_torch = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))
  y_torch = torch.from_numpy(labels.astype(np.int64))

  flax_side = FlaxSide(arch, images, labels)
  forward, forward_flops = flax_side.forward()
  results = {}
  for tune in _TUNES.value:
    step, flops, compile_s = flax_side.train_step(tune)
    torch_step = _torch_step(arch, tune, x_torch, y_torch)
    print(f"[{tune}] Flax step compiled in {compile_s:.1f} s; first losses: Flax {step():.3f}, "
          f"torch {torch_step():.3f}", flush=True)
    times = _interleaved({"flax": step, "torch": torch_step, "forward": forward}, _STEPS.value)
    t_flax, t_torch, t_fwd = (statistics.median(times[k]) for k in ("flax", "torch", "forward"))
    results[tune] = (t_flax, t_torch, t_fwd)
    gflops = flops / t_flax / 1e9
    print(f"[{tune}] Flax step    {_describe(times['flax'], batch)}: {flops / batch / 1e9:5.2f} GFLOP/img, "
          f"{gflops:5.1f} GFLOP/s = {gflops / peak:4.0%} of peak")
    print(f"[{tune}] torch step   {_describe(times['torch'], batch)}")
    fwd_gflops = forward_flops / t_fwd / 1e9
    print(f"[{tune}] Flax forward {_describe(times['forward'], batch)}: {forward_flops / batch / 1e9:5.2f} GFLOP/img, "
          f"{fwd_gflops:5.1f} GFLOP/s = {fwd_gflops / peak:4.0%} of peak")
    print(f"[{tune}] Flax / torch speed: {t_torch / t_flax:4.2f}x; Flax step / Flax forward time: "
          f"{t_flax / t_fwd:4.2f}x", flush=True)

  print("summary:")
  if "deep" in results:
    t_flax, t_torch, _ = results["deep"]
    print(f"  deep: Flax {batch / t_flax:.2f} img/s vs torch {batch / t_torch:.2f} img/s = {t_torch / t_flax:.2f}x "
          f"(goal >= 1.0x: {'met' if t_flax <= t_torch else 'not met'})")
  if "shallow" in results:
    t_flax, t_torch, t_fwd = results["shallow"]
    print(f"  shallow: Flax {batch / t_flax:.2f} img/s vs torch {batch / t_torch:.2f} img/s = {t_torch / t_flax:.2f}x; "
          f"step / forward {t_flax / t_fwd:.2f}x (goal <= 1.1x: {'met' if t_flax <= 1.1 * t_fwd else 'not met'})")


if __name__ == "__main__":
  app.run(main)
