"""The Keras converters against keras.applications itself: random weights (BN statistics and biases included),
saved in both file layouts, converted, and run through the Flax ports on the same preprocessed input."""

import os
import re

os.environ["KERAS_BACKEND"] = "jax"  # before keras is imported; TensorFlow is not a dependency

import h5py
import jax
import keras
import numpy as np
import pytest

from jaxrec.convert.common import ConversionError  # noqa: E402
from jaxrec.convert.keras import convert_keras, load_keras, read_keras_weights  # noqa: E402
from jaxrec.errors import InputError  # noqa: E402
from jaxrec.models.registry import get_backbone  # noqa: E402
from keras_files import cases_built_on_first_use  # noqa: E402
from keras_files import assert_same_tree  # noqa: E402
from keras_files import keras2_style_copy  # noqa: E402
from keras_files import unnamed_keras3_copy  # noqa: E402
from keras_files import randomise as _randomise  # noqa: E402
from keras_files import relative_error as _relative_error  # noqa: E402
from keras_files import save_both_layouts as _save  # noqa: E402

# Keras's Variable.__array__ predates numpy 2's `copy` keyword; numpy warns on every conversion Keras makes.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept:DeprecationWarning")

# max |flax - keras| / max |keras| in float32. Measured: ResNet50 2e-7 to 1.5e-6 (BN's arithmetic is ordered
# differently), VGG19 exactly 0 (both sides lower to the same XLA convolutions and matmuls). Scaling one
# BN mean by 0.9 moves the error to 3e-4, so 1e-5 is both safe and sharp.
TOLERANCE = 1e-5
LAYOUTS = ("legacy", "keras3")
# (arch, include_top) -> (input size, batch, {Flax feature: Keras layer}); the notop models run at a size
# other than 224 to exercise the size-agnostic paths.
CASES = {
    ("resnet50", True): (224, 2, {"pool": "avg_pool", "logits": "predictions"}),
    ("resnet50", False): (160, 1, {"layer4": "conv5_block3_out"}),
    ("vgg19", True): (224, 2, {"pool5": "block5_pool", "fc6": "fc1", "fc7": "fc2", "logits": "predictions"}),
    ("vgg19", False): (160, 1, {"pool5": "block5_pool"}),
}
_KERAS_APPS = {"resnet50": "ResNet50", "vgg19": "VGG19"}


def _make_case(arch: str, top: bool, folder) -> dict:
  """Files of a random Keras model in both layouts, the input, and Keras's features on it."""
  size, batch, layers = CASES[arch, top]
  rng = np.random.default_rng(list(CASES).index((arch, top)))
  app = getattr(keras.applications, _KERAS_APPS[arch])
  model = app(weights=None, include_top=top, **({"classifier_activation": None} if top else {}))
  _randomise(model, rng)
  files = _save(model, folder, f"{arch}{'' if top else '_notop'}")
  backbone = get_backbone(arch, "keras", include_top=top)
  x = np.asarray(backbone.preprocessing(rng.uniform(0, 255, (batch, size, size, 3))))
  features = keras.Model(model.input, {name: model.get_layer(layer).output for name, layer in layers.items()})
  expected = features.predict(x, batch_size=batch, verbose=0)  # one compiled graph: faster than eager ops
  roundtrip = None
  if not top:  # the legacy writer is Keras's own: Keras must read back what it wrote (cheap on notop models)
    saved = [v.numpy() for v in model.weights]
    for v in model.weights:
      v.assign(np.zeros(v.shape, np.float32))
    model.load_weights(files["legacy"])
    roundtrip = max(float(np.max(np.abs(v.numpy() - s))) for v, s in zip(model.weights, saved))
  apply = jax.jit(backbone.module.apply)  # one wrapper per case, so both layouts share its compilation
  return {"size": size, "files": files, "backbone": backbone, "apply": apply, "x": x, "expected": expected,
          "roundtrip": roundtrip}


@pytest.fixture(scope="module")
def keras_case(tmp_path_factory):
  """(arch, include_top) -> its case, built on first use; only files and small arrays stay in memory."""
  assert keras.backend.backend() == "jax"
  yield from cases_built_on_first_use(tmp_path_factory, _make_case)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("arch,top", list(CASES), ids=[f"{a}-{'top' if t else 'notop'}" for a, t in CASES])
def test_flax_port_matches_keras(keras_case, arch, top, layout):
  case = keras_case(arch, top)
  backbone = case["backbone"]
  variables = load_keras(arch, case["files"][layout], backbone.abstract_variables(case["size"]))
  with jax.default_matmul_precision("highest"):
    out = jax.device_get(case["apply"](variables, case["x"]))
  errors = {name: _relative_error(out[name], want) for name, want in case["expected"].items()}
  print(f"\n{arch} top={top} {case['size']}px {layout}: " + ", ".join(f"{k} {v:.2e}" for k, v in errors.items()))
  assert max(errors.values()) <= TOLERANCE, errors


@pytest.mark.parametrize("arch", ["resnet50", "vgg19"])
def test_legacy_file_round_trips_through_keras(keras_case, arch):
  assert keras_case(arch, False)["roundtrip"] == 0.0


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("arch,classifier", [("resnet50", ("fc",)), ("vgg19", ("fc6", "fc7", "fc8"))],
                         ids=["resnet50", "vgg19"])
def test_notop_file_for_a_backbone_with_top_lists_the_classifier(keras_case, arch, classifier, layout):
  abstract = get_backbone(arch, "keras", include_top=True).abstract_variables()
  with pytest.raises(ConversionError, match="include_top=False") as error:
    load_keras(arch, keras_case(arch, False)["files"][layout], abstract)
  assert all(f"params/{fc}/{leaf}" in str(error.value) for fc in classifier for leaf in ("kernel", "bias"))


def test_file_with_top_serves_a_backbone_without_it(keras_case):
  notop = get_backbone("resnet50", "keras", include_top=False).abstract_variables()
  variables = load_keras("resnet50", keras_case("resnet50", True)["files"]["keras3"], notop)
  assert "fc" not in variables["params"] and "layer4_2" in variables["params"]


def test_keras2_style_legacy_names_read_the_same(keras_case, tmp_path):
  """Keras 2 files (the published *_tf_kernels.h5) store byte strings and names ending in ':0'."""
  original = keras_case("resnet50", False)["files"]["legacy"]
  path = str(tmp_path / "keras2.h5")
  keras2_style_copy(original, path)
  got = read_keras_weights(path)
  assert set(got["conv1_bn"]) == {"gamma", "beta", "moving_mean", "moving_variance"}
  assert_same_tree(read_keras_weights(original), got)


def test_keras3_file_without_layer_names_resolves_by_keras_order(keras_case, tmp_path):
  """Keras 3 versions before the `name` attribute identify a layer only by class and ordinal."""
  files = keras_case("resnet50", False)["files"]
  path = str(tmp_path / "unnamed.weights.h5")
  unnamed_keras3_copy(files["keras3"], path)
  unnamed = read_keras_weights(path)
  assert "layers/conv2d_7" in unnamed and "conv1_conv" not in unnamed
  abstract = get_backbone("resnet50", "keras", include_top=False).abstract_variables()
  named = load_keras("resnet50", files["keras3"], abstract)
  assert_same_tree(named, convert_keras("resnet50", unnamed, abstract, source=path))
  assert_same_tree(named, load_keras("resnet50", files["legacy"], abstract))


def test_resnet_file_for_vgg19_fails(keras_case):
  abstract = get_backbone("vgg19", "keras", include_top=False).abstract_variables(160)
  with pytest.raises(ConversionError, match="block1_conv1") as error:
    load_keras("vgg19", keras_case("resnet50", False)["files"]["legacy"], abstract)
  assert "conv1_conv/kernel" in str(error.value)  # the ResNet layers are reported unused


def test_unreadable_files_raise_input_error_naming_the_file(keras_case, tmp_path):
  truncated, text, empty = tmp_path / "truncated.h5", tmp_path / "text.h5", tmp_path / "empty.h5"
  with open(keras_case("resnet50", False)["files"]["legacy"], "rb") as f:
    truncated.write_bytes(f.read(1 << 20))
  text.write_text("not hdf5\n")
  h5py.File(empty, "w").close()
  for path in (truncated, text, empty, tmp_path / "missing.h5"):
    with pytest.raises(InputError, match=re.escape(str(path))):
      read_keras_weights(path)


def test_convert_weights_follows_the_file_for_the_classifier(keras_case):
  from jaxrec.convert.dispatch import convert_weights
  notop = keras_case("resnet50", False)["files"]["legacy"]
  backbone, variables = convert_weights("resnet50", "keras", notop)  # include_top=None: follow the file
  assert "logits" not in backbone.features and "fc" not in variables["params"]
  with pytest.raises(ConversionError, match="params/fc/kernel"):
    convert_weights("resnet50", "keras", notop, include_top=True)
  top = keras_case("resnet50", True)["files"]["keras3"]
  backbone, variables = convert_weights("resnet50", "keras", top)
  assert "logits" in backbone.features and "fc" in variables["params"]
