"""The Flax ResNet50 and VGG19 equal torchvision's own models, through files converted by jaxrec."""

import jax
import numpy as np
import pytest
import torch
import torchvision

from jaxrec.convert.common import ConversionError
from jaxrec.convert.torch_files import load_state_dict
from jaxrec.convert.torchvision import load_torchvision
from jaxrec.errors import InputError
from jaxrec.models.registry import get_backbone


def _randomise_batch_norm(model):
  """Random init leaves BN at mean 0 / var 1, which would hide a BN mapping error."""
  for module in model.modules():
    if isinstance(module, torch.nn.BatchNorm2d):
      module.running_mean.normal_(0, 0.1)
      module.running_var.uniform_(0.5, 1.5)
      module.weight.data.uniform_(0.5, 1.5)
      module.bias.data.normal_(0, 0.1)


@pytest.fixture(scope="module")
def torch_models(tmp_path_factory):
  torch.manual_seed(0)
  folder = tmp_path_factory.mktemp("torchvision")
  models = {}
  for arch, build in (("resnet50", torchvision.models.resnet50), ("vgg19", torchvision.models.vgg19)):
    model = build().eval()
    _randomise_batch_norm(model)
    path = folder / f"{arch}.pth"
    torch.save(model.state_dict(), path)
    models[arch] = (model, str(path))
  return models


def _torch_features(model, arch, x):
  """The named features of the torch model, by forward hooks."""
  taps, hooks = {}, []
  if arch == "resnet50":
    modules = {f"layer{i}": getattr(model, f"layer{i}") for i in range(1, 5)}
    modules["stem"], modules["pool"] = model.maxpool, model.avgpool
  else:
    modules = {"pool5": model.features, "fc6": model.classifier[1], "fc7": model.classifier[4]}
  for name, module in modules.items():
    hooks.append(module.register_forward_hook(lambda m, i, o, name=name: taps.__setitem__(name, o)))
  with torch.no_grad():
    taps["logits"] = model(torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2))))
  for h in hooks:
    h.remove()
  out = {}
  for name, value in taps.items():
    value = value.numpy()
    if value.ndim == 4:
      value = value.transpose(0, 2, 3, 1)  # NCHW -> NHWC
      if name == "pool":
        value = value[:, 0, 0, :]
    out[name] = value
  return out


@pytest.mark.parametrize("arch", ["resnet50", "vgg19"])
@pytest.mark.parametrize("size", [224, 160])
def test_port_equals_torchvision(torch_models, arch, size):
  model, path = torch_models[arch]
  backbone = get_backbone(arch, "torchvision")
  variables = load_torchvision(arch, path, backbone.abstract_variables(size))
  rgb = np.random.default_rng(size).uniform(0, 255, (2, size, size, 3)).astype(np.float32)
  x = np.asarray(backbone.preprocessing(rgb))
  with jax.default_matmul_precision("highest"):
    ours = jax.jit(lambda v, x: backbone.module.apply(v, x))(variables, x)
  theirs = _torch_features(model, arch, x)
  for name, expected in theirs.items():
    got = np.asarray(ours[name])
    assert got.shape == expected.shape, name
    rel = np.abs(got - expected).max() / np.abs(expected).max()
    assert rel < 1e-5, f"{arch} {name} at {size} px: relative error {rel:.2e}"


def test_another_architecture_is_a_clear_error(torch_models):
  _, vgg_path = torch_models["vgg19"]
  abstract = get_backbone("resnet50", "torchvision").abstract_variables()
  with pytest.raises(ConversionError) as error:
    load_torchvision("resnet50", vgg_path, abstract)
  message = str(error.value)
  assert "missing in the file" in message and "params/layer1_0/conv1/kernel" in message
  assert "unused keys of the file" in message and "features.0.weight" in message


def test_wrong_shape_and_missing_key_are_listed_together(torch_models):
  from jaxrec.convert.torchvision import convert_state_dict
  _, path = torch_models["resnet50"]
  state = load_state_dict(path)
  del state["layer2.0.conv1.weight"]
  state["fc.weight"] = np.zeros((10, 2048), np.float32)
  with pytest.raises(ConversionError) as error:
    convert_state_dict("resnet50", state, get_backbone("resnet50").abstract_variables(), source="edited")
  message = str(error.value)
  assert "params/layer2_0/conv1/kernel" in message
  assert "params/fc/kernel: file (2048, 10) vs model (2048, 1000)" in message


def test_backbone_without_top_drops_the_classifier(torch_models):
  _, path = torch_models["resnet50"]
  backbone = get_backbone("resnet50", include_top=False)
  variables = load_torchvision("resnet50", path, backbone.abstract_variables())
  assert "fc" not in variables["params"]


def test_truncated_and_foreign_files(tmp_path, torch_models):
  _, path = torch_models["resnet50"]
  data = open(path, "rb").read()
  (tmp_path / "cut.pth").write_bytes(data[: len(data) // 2])
  with pytest.raises(InputError, match="cut.pth: not a readable torch file"):
    load_state_dict(tmp_path / "cut.pth")
  torch.save({"model": torch.nn.Linear(2, 2)}, tmp_path / "module.pth")  # a pickled module, not a state dict
  with pytest.raises(InputError, match="module.pth: unsupported object"):
    load_state_dict(tmp_path / "module.pth")


@pytest.mark.parametrize("zip_format", [True, False])
def test_torch_file_reader_equals_torch_load(tmp_path, zip_format):
  state = {"w": torch.randn(3, 4), "t": torch.randn(4, 3).t(), "i": torch.arange(5), "s": torch.tensor(2.5),
           "h": torch.randn(2, 2).half(), "view": torch.randn(6)[2:5], "b": torch.tensor([True, False])}
  path = tmp_path / "x.pth"
  torch.save(state, path, _use_new_zipfile_serialization=zip_format)
  got = load_state_dict(path)
  assert set(got) == set(state)
  for key, value in state.items():
    assert got[key].dtype == value.numpy().dtype and np.array_equal(got[key], value.numpy()), key


def test_converting_a_resnet50_file_needs_at_most_three_times_its_size(torch_models):
  import os
  import tracemalloc
  _, path = torch_models["resnet50"]
  abstract = get_backbone("resnet50").abstract_variables()
  tracemalloc.start()
  try:
    load_torchvision("resnet50", path, abstract)
    _, peak = tracemalloc.get_traced_memory()
  finally:
    tracemalloc.stop()
  size = os.path.getsize(path)
  assert size > 90 * 2 ** 20  # a real-sized file (~98 MiB)
  assert peak <= 3 * size, f"peak {peak / 2 ** 20:.0f} MiB for a {size / 2 ** 20:.0f} MiB file"
