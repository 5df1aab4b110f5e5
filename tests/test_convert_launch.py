"""launch.convert and the backbone folder: metadata, round trip, refusals, no half-written output."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
import torch
import torchvision

from jaxrec.convert.torchvision import load_torchvision
from jaxrec.errors import InputError
from jaxrec.models import store
from jaxrec.models.registry import get_backbone

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def resnet_file(tmp_path_factory):
  torch.manual_seed(1)
  path = tmp_path_factory.mktemp("weights") / "resnet50.pth"
  torch.save(torchvision.models.resnet50().state_dict(), path)
  return str(path)


def _convert(*args):
  return subprocess.run([sys.executable, "-m", "launch.convert", *args], cwd=ROOT, capture_output=True,
                        text=True, timeout=300, env={**os.environ, "JAX_PLATFORMS": "cpu"})


def test_convert_writes_a_loadable_backbone(tmp_path, resnet_file):
  out = tmp_path / "bb"
  proc = _convert("--arch=resnet50", "--layout=torchvision", f"--weights={resnet_file}", f"--output={out}")
  assert proc.returncode == 0, proc.stderr
  meta = json.loads((out / "backbone.json").read_text())
  assert meta["arch"] == "resnet50" and meta["layout"] == "torchvision" and meta["include_top"]
  assert meta["source_sha256"] == store.sha256(resnet_file) and meta["preprocessing"]["name"] == "torch"
  backbone, variables, _ = store.load_backbone(out)
  expected = load_torchvision("resnet50", resnet_file, backbone.abstract_variables())
  for a, b in zip(jax.tree.leaves(expected), jax.tree.leaves(variables)):
    np.testing.assert_array_equal(a, b)

  # An existing output is refused, untouched.
  before = (out / "backbone.json").read_bytes()
  proc = _convert("--arch=resnet50", "--layout=torchvision", f"--weights={resnet_file}", f"--output={out}")
  assert proc.returncode == 2 and "already exists" in proc.stderr
  assert (out / "backbone.json").read_bytes() == before


def test_wrong_architecture_fails_with_the_key_diff_and_writes_nothing(tmp_path, resnet_file):
  out = tmp_path / "bb"
  proc = _convert("--arch=vgg19", "--layout=torchvision", f"--weights={resnet_file}", f"--output={out}")
  assert proc.returncode == 2
  assert "missing in the file" in proc.stderr and "params/block1_conv1/kernel" in proc.stderr
  assert "unused keys of the file" in proc.stderr and "layer1.0.conv1.weight" in proc.stderr
  assert not out.exists() and os.listdir(tmp_path) == []


def test_a_failure_while_saving_leaves_no_folder(tmp_path, resnet_file, monkeypatch):
  backbone = get_backbone("resnet50")
  variables = load_torchvision("resnet50", resnet_file, backbone.abstract_variables())

  def broken_dump(*args, **kwargs):
    raise OSError("disk full")

  monkeypatch.setattr(store.json, "dump", broken_dump)
  with pytest.raises(OSError, match="disk full"):
    store.save_backbone(tmp_path / "bb", backbone, variables, source=resnet_file)
  assert os.listdir(tmp_path) == []  # neither the folder nor its temporary twin


def test_loading_a_folder_that_is_not_a_backbone(tmp_path):
  with pytest.raises(InputError, match="not a backbone folder"):
    store.load_backbone(tmp_path)
