"""InceptionV3 and InceptionResNetV2 against keras.applications: random weights (BN statistics and betas included),
saved in both file layouts, converted, and run through the Flax ports on the same preprocessed input.

Most of these layers are named automatically by Keras (`conv2d_<n>`, numbered per session): the models here are
built in one session, so each file numbers them differently, and one test rewrites a file to the numbering of
the published Keras 2 files. The converter must resolve them by position, never by number.
"""

import os
import re
import shutil
import subprocess
import sys

os.environ["KERAS_BACKEND"] = "jax"  # before keras is imported; TensorFlow is not a dependency

import h5py  # noqa: E402
import jax  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from keras.src.backend.common.stateless_scope import StatelessScope  # noqa: E402
from keras.src.backend.common.variables import initialize_all_variables  # noqa: E402
from keras.src.legacy.saving import legacy_h5_format  # noqa: E402

from jaxrec.convert.common import ConversionError  # noqa: E402
from jaxrec.convert.dispatch import convert_weights  # noqa: E402
from jaxrec.convert.keras import TABLES, convert_keras, load_keras, read_keras_weights  # noqa: E402
from jaxrec.errors import InputError  # noqa: E402
from jaxrec.models import store  # noqa: E402
from jaxrec.models.registry import get_backbone  # noqa: E402
from keras_files import cases_built_on_first_use  # noqa: E402
from keras_files import assert_same_tree  # noqa: E402
from keras_files import unnamed_keras3_copy  # noqa: E402
from keras_files import save_both_layouts as _save, relative_error as _relative_error  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept:DeprecationWarning")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# max |flax - keras| / max |keras| in float32; measured 1.8e-7 to 1.4e-6 (printed with -s).
TOLERANCE = 1e-5
LAYOUTS = ("legacy", "keras3")
# (arch, include_top) -> (input size, batch, {Flax feature: Keras layer}). The notop models run at 139 px, where
# the odd sizes exercise TF's asymmetric 'same' padding; 'pool' of a notop model is checked against the mean of
# the last map.
CASES = {
    ("inception_v3", True): (299, 1, {"pool": "avg_pool", "logits": "predictions"}),
    ("inception_v3", False): (139, 2, {"mixed7": "mixed7", "mixed10": "mixed10"}),
    ("inception_resnet_v2", True): (299, 1, {"pool": "avg_pool", "logits": "predictions"}),
    ("inception_resnet_v2", False): (139, 1, {"mixed_6a": "mixed_6a", "conv_7b": "conv_7b_ac"}),
}
_LAST_MAP = {"inception_v3": "mixed10", "inception_resnet_v2": "conv_7b"}
_KERAS_APPS = {"inception_v3": "InceptionV3", "inception_resnet_v2": "InceptionResNetV2"}
_KERAS_CLASSES = {"Conv2D": "conv", "BatchNormalization": "bn", "Dense": "dense"}


def _random_value(variable, rng: np.random.Generator) -> np.ndarray:
  """He-scaled kernels; BN statistics, betas and biases far from Keras's identity defaults, so that every
  converted array changes the output."""
  name = variable.path.rsplit("/", 1)[-1]
  if name == "kernel":
    value = rng.normal(0.0, np.sqrt(2.0 / np.prod(variable.shape[:-1])), variable.shape)
  elif name in ("gamma", "moving_variance"):
    value = rng.uniform(0.5, 2.0, variable.shape)
  else:  # bias, beta, moving_mean
    value = rng.normal(0.0, 1.0, variable.shape)
  return value.astype(np.float32)


def _keras_model(arch: str, top: bool, size: int, rng: np.random.Generator):
  """keras.applications' model with random weights. Built in a stateless scope so that Keras's initializers
  never run: on the CPU they compile one XLA program per kernel shape (~60 s per model); our values replace
  them anyway."""
  app = getattr(keras.applications, _KERAS_APPS[arch])
  with StatelessScope(initialize_variables=False):
    model = app(weights=None, include_top=top,
                **({"classifier_activation": None} if top else {"input_shape": (size, size, 3)}))
  for variable in model.weights:
    value = _random_value(variable, rng)
    variable._initializer = lambda shape, dtype, value=value: value
  initialize_all_variables()
  return model


def _make_case(arch: str, top: bool, folder) -> dict:
  size, batch, layers = CASES[arch, top]
  rng = np.random.default_rng(list(CASES).index((arch, top)))
  model = _keras_model(arch, top, size, rng)
  files = _save(model, folder, f"{arch}{'' if top else '_notop'}")
  backbone = get_backbone(arch, "keras", include_top=top)
  x = np.asarray(backbone.preprocessing(rng.uniform(0, 255, (batch, size, size, 3))))
  features = keras.Model(model.input, {name: model.get_layer(layer).output for name, layer in layers.items()})
  expected = features.predict(x, batch_size=batch, verbose=0)  # one compiled graph: faster than eager ops
  if not top:
    expected["pool"] = np.mean(expected[_LAST_MAP[arch]], axis=(1, 2))
  keras_layers = [(_KERAS_CLASSES[layer.__class__.__name__], layer.name, [tuple(w.shape) for w in layer.weights])
                  for layer in model.layers if layer.weights]
  return {"size": size, "files": files, "backbone": backbone, "abstract": backbone.abstract_variables(size),
          "apply": jax.jit(backbone.module.apply), "x": x, "expected": expected, "keras_layers": keras_layers}


@pytest.fixture(scope="module")
def case(tmp_path_factory):
  """(arch, include_top) -> its case, built on first use."""
  assert keras.backend.backend() == "jax"
  yield from cases_built_on_first_use(tmp_path_factory, _make_case)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("arch,top", list(CASES), ids=[f"{a}-{'top' if t else 'notop'}" for a, t in CASES])
def test_flax_port_matches_keras(case, arch, top, layout):
  c = case(arch, top)
  variables = load_keras(arch, c["files"][layout], c["abstract"])
  with jax.default_matmul_precision("highest"):
    out = jax.device_get(c["apply"](variables, c["x"]))
  errors = {name: _relative_error(out[name], want) for name, want in c["expected"].items()}
  print(f"\n{arch} top={top} {c['size']}px {layout}: " + ", ".join(f"{k} {v:.2e}" for k, v in errors.items()))
  assert max(errors.values()) <= TOLERANCE, errors


@pytest.mark.parametrize("arch", list(_KERAS_APPS))
def test_table_rows_are_keras_layer_order(case, arch):
  """Per Keras class, the k-th row is the k-th layer of model.layers: same shapes, and same name where Keras
  names the layer (InceptionResNetV2's block35_1_conv, conv_7b, ...; the others are numbered per session)."""
  c = case(arch, True)
  params = c["abstract"]["params"]
  for kind in ("conv", "bn", "dense"):
    rows = [row for row in TABLES[arch]() if row[2] == kind]
    layers = [layer for layer in c["keras_layers"] if layer[0] == kind]
    assert len(rows) == len(layers), kind
    for (name, flax, _, _), (_, keras_name, shapes) in zip(rows, layers):
      if not re.fullmatch(r"(conv2d|batch_normalization|dense)(_\d+)?", keras_name):
        assert name == keras_name
      module = params
      for part in flax:
        module = module[part]
      assert tuple(module.get("kernel", module.get("bias")).shape) == shapes[0], (name, flax)


def _keras2_style_copy(original: str, path: str) -> None:
  """The published files' naming: Keras 2 numbered automatic names from 1 in creation order, stored byte strings
  and weight names ending in ':0'."""
  shutil.copy(original, path)
  with h5py.File(path, "r+") as f:
    layers = legacy_h5_format.load_attributes_from_hdf5_group(f, "layer_names")
    auto = [re.fullmatch(r"(conv2d|batch_normalization)(?:_(\d+))?", name) for name in layers]
    first = {m[1]: min(int(a[2] or 0) for a in auto if a and a[1] == m[1]) for m in auto if m}
    renamed = [f"{m[1]}_{int(m[2] or 0) - first[m[1]] + 1}" if m else name for m, name in zip(auto, layers)]
    for name in layers:  # two steps: the new names overlap the old ones
      f.move(name, f"tmp_{name}")
    for name, new in zip(layers, renamed):
      f.move(f"tmp_{name}", new)
      weights = legacy_h5_format.load_attributes_from_hdf5_group(f[new], "weight_names")
      for weight in weights:
        f[new].move(weight, weight + ":0")
      f[new].attrs["weight_names"] = np.array([f"{w}:0".encode() for w in weights], dtype="S")
    f.attrs["layer_names"] = np.array([n.encode() for n in renamed], dtype="S")
  assert renamed != layers


def test_published_keras2_numbering_converts_the_same(case, tmp_path):
  c = case("inception_v3", False)  # built after inception_v3-top: Keras 3 numbered its layers from conv2d_94
  path = str(tmp_path / "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5")
  _keras2_style_copy(c["files"]["legacy"], path)
  assert "conv2d_1" in read_keras_weights(path) and "conv2d_94" in read_keras_weights(c["files"]["legacy"])
  assert_same_tree(load_keras("inception_v3", c["files"]["legacy"], c["abstract"]),
               load_keras("inception_v3", path, c["abstract"]))


def test_keras3_file_without_layer_names_resolves_by_keras_order(case, tmp_path):
  files = case("inception_resnet_v2", False)["files"]
  path = str(tmp_path / "unnamed.weights.h5")
  unnamed_keras3_copy(files["keras3"], path)
  unnamed = read_keras_weights(path)
  assert "layers/conv2d_17" in unnamed and "block35_1_conv" not in unnamed
  abstract = case("inception_resnet_v2", False)["abstract"]
  assert_same_tree(load_keras("inception_resnet_v2", files["keras3"], abstract),
               convert_keras("inception_resnet_v2", unnamed, abstract, source=path))


def test_convert_weights_follows_the_file_for_the_classifier(case):
  notop = case("inception_v3", False)["files"]["keras3"]
  with pytest.raises(ConversionError, match="include_top=False") as error:
    convert_weights("inception_v3", "keras", notop, include_top=True)
  assert "params/predictions/kernel" in str(error.value) and "params/predictions/bias" in str(error.value)
  backbone, variables = convert_weights("inception_v3", None, notop)  # include_top=None: follow the file
  assert "logits" not in backbone.features and "predictions" not in variables["params"]
  backbone, variables = convert_weights("inception_v3", "keras", case("inception_v3", True)["files"]["keras3"])
  assert "logits" in backbone.features and "predictions" in variables["params"]


def test_inception_resnet_v2_files_with_and_without_the_classifier(case):
  top, notop = case("inception_resnet_v2", True), case("inception_resnet_v2", False)
  with pytest.raises(ConversionError, match="include_top=False") as error:
    load_keras("inception_resnet_v2", notop["files"]["legacy"], top["abstract"])
  assert "params/predictions/kernel" in str(error.value) and "params/predictions/bias" in str(error.value)
  variables = load_keras("inception_resnet_v2", top["files"]["legacy"], notop["abstract"])
  assert "predictions" not in variables["params"] and "conv_7b" in variables["params"]


def test_inception_v3_file_for_inception_resnet_v2_fails_with_the_key_diff(case):
  abstract = get_backbone("inception_resnet_v2", "keras", include_top=False).abstract_variables(139)
  with pytest.raises(ConversionError) as error:
    load_keras("inception_resnet_v2", case("inception_v3", False)["files"]["legacy"], abstract)
  message = str(error.value)
  assert "missing in the file" in message and "params/block35_1_conv/kernel" in message
  assert "wrong shape" in message and "params/stem_0/conv/kernel" not in message  # same stem: fits


def test_truncated_file_raises_input_error_naming_it(case, tmp_path):
  truncated = tmp_path / "truncated.h5"
  with open(case("inception_v3", False)["files"]["legacy"], "rb") as f:
    truncated.write_bytes(f.read(1 << 20))
  with pytest.raises(InputError, match=re.escape(str(truncated))):
    convert_weights("inception_v3", "keras", str(truncated))


def test_launch_convert_writes_the_backbone(case, tmp_path):
  """The CLI on a notop file with the published files' numbering (refusals: tests/test_convert_launch.py)."""
  c = case("inception_v3", False)
  weights, out = str(tmp_path / "inception_v3_notop.h5"), tmp_path / "bb"
  _keras2_style_copy(c["files"]["legacy"], weights)
  proc = subprocess.run([sys.executable, "-m", "launch.convert", "--arch=inception_v3", f"--weights={weights}",
                         f"--output={out}"], cwd=ROOT, capture_output=True, text=True, timeout=300,
                        env={**os.environ, "JAX_PLATFORMS": "cpu"})
  assert proc.returncode == 0, proc.stderr
  backbone, variables, _ = store.load_backbone(out)
  assert backbone.arch == "inception_v3" and "logits" not in backbone.features
  assert backbone.preprocessing.name == "inception" and backbone.preprocessing.size == 299
  assert_same_tree(load_keras("inception_v3", c["files"]["legacy"], backbone.abstract_variables()), variables)


@pytest.mark.parametrize("arch,name,dim", [("inception_v3", "InceptionV3", 2048),
                                           ("inception_resnet_v2", "InceptionResNetV2", 1536)])
def test_table1_row_runs_end_to_end_when_the_weights_file_is_supplied(case, tmp_path, arch, name, dim):
  """configs/table1.py:<row> on a small default shop with a (random) Keras notop file, embedded at 75 px."""
  from configs import table1
  from jaxrec import experiment
  from jaxrec.data.embeddings import read_embeddings
  config = table1.get_config(arch)
  config.weights = case(arch, False)["files"]["legacy"]
  config.image_size, config.batch_size = 75, 16
  config.dataset.num_items, config.shop.num_users, config.shop.initial_stock = 200, 30, 60
  rows = experiment.run(config, str(tmp_path))
  assert set(rows) == {name, "Random"} and rows[name]["num_transactions"] > 0
  emb = read_embeddings(next((tmp_path / "cache").glob("embeddings-*.npz")))
  assert emb.vectors.shape == (200, dim) and emb.metadata["arch"] == arch
