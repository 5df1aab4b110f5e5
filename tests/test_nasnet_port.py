"""The NASNet Large port and its converter against keras.applications.NASNetLarge itself: random weights (BN
statistics, scales and offsets included), saved in both file layouts, converted, and run through the Flax port
on the same preprocessed input; with the classifier at 331 px, and without it at 224 px (other parities of the
map sizes, so other paddings in the reduction cells).

NASNet Large is big (89M parameters, ~48 GFLOP per 331 px image, ~1000 Keras layers): one Keras model per
case for the whole module, batch 1, and one compilation per input size shared by both file layouts.
"""

import json
import os
import shutil
import subprocess
import sys

os.environ["KERAS_BACKEND"] = "jax"  # before keras is imported; TensorFlow is not a dependency

import jax  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from keras.src.initializers import random_initializers  # noqa: E402

from jaxrec.convert.common import ConversionError  # noqa: E402
from jaxrec.convert.keras import convert_keras, load_keras, read_keras_weights  # noqa: E402
from jaxrec.convert.keras_nasnet import nasnet_large_table  # noqa: E402
from jaxrec.models import registry  # noqa: E402
from jaxrec.models.registry import get_backbone  # noqa: E402
from keras_files import assert_same_tree  # noqa: E402
from keras_files import keras2_style_copy  # noqa: E402
from keras_files import unnamed_keras3_copy  # noqa: E402
from keras_files import randomise as _randomise  # noqa: E402
from keras_files import relative_error as _relative_error  # noqa: E402
from keras_files import save_both_layouts as _save  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept:DeprecationWarning")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# max |flax - keras| / max |keras| in float32 (measured: 2e-7 to 5e-7; the depthwise convs add in another order).
TOLERANCE = 1e-5
LAYOUTS = ("legacy", "keras3")
SIZES = {True: 331, False: 224}  # include_top -> input size


class _NumpyRandom:
  """Stands in for the backend's random module inside Keras's VarianceScaling initializers while the models
  are built: the JAX backend compiles a threefry program per kernel shape, over a minute for NASNet's 65
  shapes here. The initializers' scales are still Keras's; everything else goes to the real module."""

  def __init__(self, module, rng: np.random.Generator):
    self._module, self._rng = module, rng

  def __getattr__(self, name):
    return getattr(self._module, name)

  def truncated_normal(self, shape, mean=0.0, stddev=1.0, dtype=None, seed=None):
    return np.clip(self._rng.normal(mean, stddev, shape), mean - 2 * stddev, mean + 2 * stddev).astype(np.float32)

  def normal(self, shape, mean=0.0, stddev=1.0, dtype=None, seed=None):
    return self._rng.normal(mean, stddev, shape).astype(np.float32)

  def uniform(self, shape, minval=0.0, maxval=1.0, dtype=None, seed=None):
    return self._rng.uniform(minval, maxval, shape).astype(np.float32)


@pytest.fixture(scope="module")
def nasnet(tmp_path_factory):
  """Keras NASNetLarge with random weights, with its classifier at 331 px and without at 224 px (the same
  weights): their files in both layouts, an input each, Keras's features on it, and Keras's layer order."""
  assert keras.backend.backend() == "jax"
  folder = tmp_path_factory.mktemp("nasnet")
  rng = np.random.default_rng(0)
  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(random_initializers, "random", _NumpyRandom(random_initializers.random, rng))
    top = keras.applications.NASNetLarge(weights=None, classifier_activation=None)
    notop = keras.applications.NASNetLarge(weights=None, include_top=False, input_shape=(224, 224, 3))
  _randomise(top, rng)
  for layer in notop.layers:
    if layer.weights:
      layer.set_weights(top.get_layer(layer.name).get_weights())
  preprocessing = get_backbone("nasnet_large", "keras").preprocessing
  cases = {}
  for include_top, model in ((True, top), (False, notop)):
    size = SIZES[include_top]
    x = np.asarray(preprocessing(rng.uniform(0, 255, (1, size, size, 3))))
    outputs = {"final": model.layers[-1].output if not include_top else model.layers[-3].output}
    if include_top:
      outputs.update(pool=model.layers[-2].output, logits=model.layers[-1].output)
    expected = keras.Model(model.input, outputs).predict(x, batch_size=1, verbose=0)
    if not include_top:
      expected["pool"] = expected["final"].mean(axis=(1, 2))
    name = "NASNet-large" if include_top else "NASNet-large-no-top"
    cases[include_top] = {"files": _save(model, folder, name), "x": x, "expected": expected}
  cases["keras_order"] = [layer.name for layer in top.layers if layer.weights]
  del top, notop
  yield cases
  shutil.rmtree(folder, ignore_errors=True)  # ~700 MB of weight files


@pytest.fixture(scope="module")
def flax_nasnet():
  """include_top -> (backbone, abstract variables, jitted apply), built on first use. The abstract variables
  are traced once (~10 s): they do not depend on the input size, and without the classifier they are those
  with it minus `predictions` (launch.convert's test traces the backbone without it)."""
  cache = {}

  def get(include_top: bool):
    if include_top not in cache:
      backbone = get_backbone("nasnet_large", "keras", include_top=include_top)
      if include_top:
        abstract = backbone.abstract_variables()
      else:
        with_top = get(True)[1]
        abstract = {**with_top, "params": {k: v for k, v in with_top["params"].items() if k != "predictions"}}
      cache[include_top] = (backbone, abstract, jax.jit(backbone.module.apply))
    return cache[include_top]

  return get


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("include_top", [True, False], ids=["top-331px", "notop-224px"])
def test_flax_port_matches_keras(nasnet, flax_nasnet, include_top, layout):
  case = nasnet[include_top]
  backbone, abstract, apply = flax_nasnet(include_top)
  variables = load_keras("nasnet_large", case["files"][layout], abstract)
  with jax.default_matmul_precision("highest"):
    out = jax.device_get(apply(variables, case["x"]))
  assert ("logits" in out) == include_top
  errors = {name: _relative_error(out[name], want) for name, want in case["expected"].items()}
  print(f"\nnasnet_large top={include_top} {SIZES[include_top]}px {layout}: "
        + ", ".join(f"{k} {v:.2e}" for k, v in errors.items()))
  assert max(errors.values()) <= TOLERANCE, errors


def test_backbone_entry():
  backbone = get_backbone("nasnet_large")
  assert backbone.layout == "keras" and backbone.default_feature == "pool"
  assert backbone.features == {"pool": 4032, "logits": 1000}
  assert backbone.preprocessing.size == 331 and backbone.preprocessing.name == "inception"
  np.testing.assert_allclose(backbone.preprocessing(np.array([[[[0.0, 127.5, 255.0]]]])), [[[[-1.0, 0.0, 1.0]]]])
  assert get_backbone("nasnet_large", include_top=False).features == {"pool": 4032}


def test_table_follows_keras_layer_order(nasnet):
  """The order numbers the layer groups of a Keras 3 file without name attributes."""
  assert [name for name, _, _, _ in nasnet_large_table()] == nasnet["keras_order"]


@pytest.mark.parametrize("layout", LAYOUTS)
def test_notop_file_for_a_backbone_with_top_lists_the_classifier(nasnet, flax_nasnet, layout):
  _, abstract, _ = flax_nasnet(True)
  with pytest.raises(ConversionError, match="include_top=False") as error:
    load_keras("nasnet_large", nasnet[False]["files"][layout], abstract)
  message = str(error.value)
  assert "missing in the file (2): params/predictions/bias, params/predictions/kernel" in message
  assert "unused keys" not in message and "wrong shape" not in message


def test_file_with_top_serves_a_backbone_without_it(nasnet, flax_nasnet):
  _, abstract, _ = flax_nasnet(False)
  variables = load_keras("nasnet_large", nasnet[True]["files"]["keras3"], abstract)
  assert "predictions" not in variables["params"] and "cell_18" in variables["params"]


def test_keras2_style_legacy_names_read_the_same(nasnet, tmp_path):
  """The published NASNet-large*.h5 files were written by Keras 2: byte strings, names ending in ':0'."""
  original = nasnet[False]["files"]["legacy"]
  path = str(tmp_path / "NASNet-large-no-top.h5")
  keras2_style_copy(original, path)
  got = read_keras_weights(path)
  assert set(got["separable_conv_1_normal_left1_0"]) == {"depthwise_kernel", "pointwise_kernel"}
  assert_same_tree(read_keras_weights(original), got)


def test_keras3_file_without_layer_names_resolves_by_keras_order(nasnet, flax_nasnet, tmp_path):
  """Keras 3 versions before the `name` attribute identify a layer only by class and ordinal."""
  files = nasnet[False]["files"]
  path = str(tmp_path / "unnamed.weights.h5")
  unnamed_keras3_copy(files["keras3"], path)
  unnamed = read_keras_weights(path)
  assert "layers/separable_conv2d_219" in unnamed and "stem_conv1" not in unnamed
  assert set(unnamed["layers/conv2d_47"]) == {"kernel"}  # a bias-free conv's single variable is its kernel
  _, abstract, _ = flax_nasnet(False)
  named = load_keras("nasnet_large", files["legacy"], abstract)
  assert_same_tree(named, convert_keras("nasnet_large", unnamed, abstract, source=path))


def test_files_of_other_archs_fail_with_the_key_diff(nasnet, flax_nasnet):
  _, abstract, _ = flax_nasnet(False)
  resnet_layers = {"conv1_conv": {"kernel": np.zeros((7, 7, 3, 64), np.float32)}}
  with pytest.raises(ConversionError) as error:
    convert_keras("nasnet_large", resnet_layers, abstract, source="resnet50.h5")
  message = str(error.value)
  assert "params/stem_conv1/kernel" in message and "params/cell_18/left5/conv_2/depthwise_kernel" in message
  assert "unused keys of the file (1): conv1_conv/kernel" in message

  vgg = get_backbone("vgg19", "keras", include_top=False).abstract_variables(64)
  with pytest.raises(ConversionError) as error:
    load_keras("vgg19", nasnet[False]["files"]["legacy"], vgg)
  message = str(error.value)
  assert "params/block1_conv1/kernel" in message and "separable_conv_1_normal_left1_0/depthwise_kernel" in message


def test_convert_weights_follows_the_file_for_the_classifier(nasnet, flax_nasnet, monkeypatch):
  from jaxrec.convert.dispatch import convert_weights
  shapes = {top: flax_nasnet(top)[1] for top in (True, False)}  # traced once, not per call
  monkeypatch.setattr(registry.Backbone, "abstract_variables",
                      lambda self, size=None, batch=1: shapes["logits" in self.features])
  notop = nasnet[False]["files"]["legacy"]
  backbone, variables = convert_weights("nasnet_large", None, notop)  # include_top=None: follow the file
  assert backbone.features == {"pool": 4032} and "predictions" not in variables["params"]
  with pytest.raises(ConversionError, match="params/predictions/kernel"):
    convert_weights("nasnet_large", "keras", notop, include_top=True)
  backbone, variables = convert_weights("nasnet_large", "keras", nasnet[True]["files"]["keras3"])
  assert "logits" in backbone.features and "predictions" in variables["params"]


def test_convert_cli_writes_a_backbone_folder(nasnet, tmp_path):
  out = tmp_path / "nasnet"
  proc = subprocess.run(
      [sys.executable, "-m", "launch.convert", "--arch=nasnet_large", "--layout=keras",
       f"--weights={nasnet[True]['files']['keras3']}", "--include_top=false", f"--output={out}"],
      cwd=ROOT, capture_output=True, text=True, timeout=600, env={**os.environ, "JAX_PLATFORMS": "cpu"})
  assert proc.returncode == 0, proc.stderr[-3000:]
  meta = json.loads((out / "backbone.json").read_text())
  assert meta["arch"] == "nasnet_large" and meta["layout"] == "keras" and not meta["include_top"]
  assert meta["preprocessing"]["size"] == 331 and meta["preprocessing"]["name"] == "inception"


def test_depthwise_taps_and_their_gradient_match_the_grouped_conv():
  """The taps are only the forward; their custom gradient is the grouped convolution's (fine-tuning)."""
  from jaxrec.models.nasnet import depthwise_conv, depthwise_conv_grouped
  rng = np.random.default_rng(0)

  def value_and_grads(f, x, w, stride):
    return f(x, w, stride), jax.grad(lambda x, w: jax.numpy.sum(jax.numpy.sin(f(x, w, stride))), (0, 1))(x, w)

  for kernel, stride in [(3, 1), (5, 2), (7, 2)]:
    x = rng.normal(size=(2, 12, 11, 4)).astype(np.float32)
    w = rng.normal(size=(kernel, kernel, 4, 1)).astype(np.float32)
    with jax.default_matmul_precision("highest"):
      ours, reference = (jax.jit(value_and_grads, static_argnums=(0, 3))(f, x, w, stride)
                         for f in (depthwise_conv, depthwise_conv_grouped))
    for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(reference)):
      np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_table1_row_runs_end_to_end_when_the_weights_file_is_supplied(nasnet, tmp_path):
  """configs/table1.py:nasnet_large on a small default shop with a (random) Keras notop file, embedded at 64 px."""
  from configs import table1
  from jaxrec import experiment
  from jaxrec.data.embeddings import read_embeddings
  config = table1.get_config("nasnet_large")
  config.weights = nasnet[False]["files"]["legacy"]
  config.image_size, config.batch_size = 64, 16
  config.dataset.num_items, config.shop.num_users, config.shop.initial_stock = 200, 30, 60
  rows = experiment.run(config, str(tmp_path))
  assert set(rows) == {"NASNet Large", "Random"} and rows["NASNet Large"]["num_transactions"] > 0
  emb = read_embeddings(next((tmp_path / "cache").glob("embeddings-*.npz")))
  assert emb.vectors.shape == (200, 4032) and emb.metadata["arch"] == "nasnet_large"
  assert (tmp_path / "table.md").read_text().count("| NASNet Large |") == 2
