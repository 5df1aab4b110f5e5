"""Backbone inference: Flax (jit) vs PyTorch eager, or vs Keras on the JAX backend for the Keras-only ports
(InceptionV3, InceptionResNetV2, NASNetLarge), on the same batch, in the same process.

  python -m benchmarks.backbone_benchmark --archs=resnet50,vgg19,efficientnet_lite0 --batch_sizes=16
  python -m benchmarks.backbone_benchmark --archs=inception_v3,inception_resnet_v2 --batch_sizes=4
  python -m benchmarks.backbone_benchmark --archs=nasnet_large --batch_sizes=2

For each architecture and batch size prints images/s of both, their ratio, and the achieved GFLOP/s of the
Flax forward (FLOPs from XLA's cost analysis of the compiled program) as a fraction of this machine's
float32 matmul peak, measured in the same run. Weights are random (speed does not depend on them); both
sides get the same preprocessed batch, and their logits are checked to agree. Keras runs its compiled
`predict_on_batch`; its random weights reach Flax through a saved .weights.h5 file and jaxrec's converter.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np
import torch
import torchvision
from absl import app, flags

from benchmarks.common import matmul_peak_gflops
from jaxrec.models.registry import get_backbone

_ARCHS = flags.DEFINE_list("archs", ["resnet50", "vgg19", "efficientnet_lite0"], "Architectures.")
_BATCHES = flags.DEFINE_list("batch_sizes", ["16"], "Batch sizes.")
_SIZE = flags.DEFINE_integer("size", 224, "Input side in pixels (Keras-only ports: their own, 299 or 331, unless set).")
_REPEATS = flags.DEFINE_integer("repeats", 5, "Timed batches per measurement (median reported).")
_DTYPE = flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "Flax compute dtype of inputs/params.")


def _torch_model(arch: str) -> torch.nn.Module:
  if arch == "resnet50":
    return torchvision.models.resnet50()
  if arch == "vgg19":
    return torchvision.models.vgg19()
  import efficientnet_lite_pytorch
  return efficientnet_lite_pytorch.EfficientNet.from_name("efficientnet-lite0")


def _flax_variables_from_torch(arch: str, model: torch.nn.Module, backbone):
  state = {k: v.detach().numpy() for k, v in model.state_dict().items()}
  if arch == "efficientnet_lite0":
    from jaxrec.convert.efficientnet_lite import convert_state_dict
    return convert_state_dict(state, backbone.abstract_variables(_SIZE.value), source="benchmark")
  from jaxrec.convert.torchvision import convert_state_dict
  return convert_state_dict(arch, state, backbone.abstract_variables(_SIZE.value), source="benchmark")


def _median_seconds(fn, repeats: int) -> float:
  fn()  # warm-up (compilation for jit)
  times = []
  for _ in range(repeats):
    t = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t)
  return statistics.median(times)


_KERAS_ONLY = {"inception_v3": "InceptionV3", "inception_resnet_v2": "InceptionResNetV2",
               "nasnet_large": "NASNetLarge"}


def _report(arch: str, batch: int, peak: float, t_flax: float, flops: float, other: str, t_other: float,
            agree: float) -> None:
  gflops = flops / t_flax / 1e9
  print(f"{arch:>19} batch {batch:>3}: flax {batch / t_flax:7.2f} img/s, {other} {batch / t_other:7.2f} img/s, "
        f"ratio {t_other / t_flax:4.2f}x | {flops / batch / 1e9:5.2f} GFLOP/img, {gflops:6.1f} GFLOP/s = "
        f"{gflops / peak:4.0%} of peak | logits agree to {agree:.1e}", flush=True)


def _compiled_flax(backbone, variables, x: np.ndarray):
  """(compiled logits function, its variables and input on the device, FLOPs of one call per XLA)."""
  dtype = jnp.bfloat16 if _DTYPE.value == "bfloat16" else jnp.float32
  flax_vars = jax.tree.map(lambda a: jnp.asarray(a, dtype), variables)
  forward = jax.jit(lambda v, x: backbone.module.apply(v, x)["logits"])
  x_dev = jnp.asarray(x, dtype)
  compiled = forward.lower(flax_vars, x_dev).compile()
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return compiled, flax_vars, x_dev, float(cost.get("flops", 0.0))


def bench_keras(arch: str, batch: int, peak: float) -> None:
  """Flax vs keras.applications on the JAX backend (XLA compiles both)."""
  os.environ.setdefault("KERAS_BACKEND", "jax")
  import keras

  from jaxrec.convert.keras import load_keras
  if keras.backend.backend() != "jax":
    raise RuntimeError(f"Keras runs on {keras.backend.backend()}; set KERAS_BACKEND=jax")
  backbone = get_backbone(arch, "keras")
  size = _SIZE.value if _SIZE.present else backbone.preprocessing.size
  keras.utils.set_random_seed(0)
  model = getattr(keras.applications, _KERAS_ONLY[arch])(
      weights=None, classifier_activation=None, input_shape=(size, size, 3))
  with tempfile.TemporaryDirectory() as folder:
    path = os.path.join(folder, f"{arch}.weights.h5")
    model.save_weights(path)
    variables = load_keras(arch, path, backbone.abstract_variables(size))
  rgb = np.random.default_rng(0).uniform(0, 255, (batch, size, size, 3)).astype(np.float32)
  x = np.asarray(backbone.preprocessing(rgb))
  compiled, flax_vars, x_dev, flops = _compiled_flax(backbone, variables, x)
  t_flax = _median_seconds(lambda: jax.block_until_ready(compiled(flax_vars, x_dev)), _REPEATS.value)
  t_keras = _median_seconds(lambda: model.predict_on_batch(x), _REPEATS.value)
  reference = np.asarray(model.predict_on_batch(x), np.float32)
  ours = np.asarray(compiled(flax_vars, x_dev), np.float32)
  _report(arch, batch, peak, t_flax, flops, "keras", t_keras,
          float(np.abs(ours - reference).max() / np.abs(reference).max()))


def bench(arch: str, batch: int, peak: float) -> None:
  if arch in _KERAS_ONLY:
    return bench_keras(arch, batch, peak)
  torch.manual_seed(0)
  model = _torch_model(arch).eval()
  backbone = get_backbone(arch, "torchvision" if arch != "efficientnet_lite0" else None)
  variables = _flax_variables_from_torch(arch, model, backbone)
  rgb = np.random.default_rng(0).uniform(0, 255, (batch, _SIZE.value, _SIZE.value, 3)).astype(np.float32)
  x = np.asarray(backbone.preprocessing(rgb))
  x_torch = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
  compiled, flax_vars, x_dev, flops = _compiled_flax(backbone, variables, x)
  t_flax = _median_seconds(lambda: jax.block_until_ready(compiled(flax_vars, x_dev)), _REPEATS.value)
  with torch.inference_mode():
    t_torch = _median_seconds(lambda: model(x_torch), _REPEATS.value)
    reference = model(x_torch).numpy()
  ours = np.asarray(compiled(flax_vars, x_dev), np.float32)
  _report(arch, batch, peak, t_flax, flops, "torch", t_torch,
          float(np.abs(ours - reference).max() / np.abs(reference).max()))


def main(argv):
  del argv
  peak = matmul_peak_gflops()
  print(f"jax {jax.__version__} on {jax.devices()[0].platform}, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads); float32 matmul peak {peak:.1f} GFLOP/s; input {_SIZE.value} px"
        f"{'' if _SIZE.present else ' (Keras-only ports: their own)'}, "
        f"flax dtype {_DTYPE.value}")
  for arch in _ARCHS.value:
    for batch in _BATCHES.value:
      bench(arch, int(batch), peak)


if __name__ == "__main__":
  app.run(main)
