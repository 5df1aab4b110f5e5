"""Embedding extraction: the sharded jitted forward equals a plain per-image apply, on 1 and 8 devices."""

import os
import subprocess
import sys

import jax
import numpy as np
import pytest

import conftest

from jaxrec import extract as ex
from jaxrec.data.embeddings import read_embeddings
from jaxrec.errors import InputError
from jaxrec.models import store
from jaxrec.models.registry import get_backbone

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIZE = 64  # Lite0 at 64 px: same code path as 224, ~12x cheaper
NUM_IMAGES = 37  # not a multiple of any batch size used: the last batch is padded
ATOL = 1e-5


def random_variables(backbone, seed: int = 0):
  """Lite0-shaped variables at this file's image size."""
  return conftest.random_variables(backbone, SIZE, seed)


def images(n: int = NUM_IMAGES, size: int = SIZE, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
  rng = np.random.default_rng(seed)
  return np.array([f"item{i:03d}" for i in range(n)]), rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def synthetic_batches(item_ids, pixels, batch_size: int, holes: bool = False):
  """The pipeline's format; the last batch padded. holes: also pad a few rows mid-batch."""
  rows = []
  for i, item_id in enumerate(item_ids):
    if holes and i % 5 == 2:
      rows.append(None)  # a padding row before every 5th image: extraction must skip it
    rows.append((item_id, pixels[i]))
  while len(rows) % batch_size:
    rows.append(None)
  blank = np.zeros_like(pixels[0])
  for start in range(0, len(rows), batch_size):
    chunk = rows[start:start + batch_size]
    yield {"image": np.stack([blank if r is None else r[1] for r in chunk]),
           "item_id": np.array(["" if r is None else r[0] for r in chunk]),
           "mask": np.array([r is not None for r in chunk])}


@pytest.fixture(scope="module")
def backbone():
  return get_backbone("efficientnet_lite0")


@pytest.fixture(scope="module")
def variables(backbone):
  return random_variables(backbone)


@pytest.fixture(scope="module")
def plain_apply(backbone):
  """The module's own apply, one image at a time, on one device; jitted only because eager Lite0 takes ~1 s."""
  fn = jax.jit(lambda v, x: backbone.module.apply(v, x, train=False))
  return lambda v, pixels: [{k: np.asarray(a) for k, a in fn(v, backbone.preprocessing(pixels[i:i + 1])).items()}
                            for i in range(len(pixels))]


@pytest.fixture(scope="module")
def reference(variables, plain_apply):
  item_ids, pixels = images()
  return item_ids, np.concatenate([f["pool"] for f in plain_apply(variables, pixels)])


def test_extract_equals_plain_apply_and_keeps_only_real_rows(backbone, variables, reference):
  item_ids, pixels = images()
  ids, vectors = ex.extract(backbone, variables, synthetic_batches(item_ids, pixels, 8, holes=True),
                            total=len(item_ids))
  np.testing.assert_array_equal(ids, reference[0])
  assert vectors.dtype == np.float32 and vectors.shape == (NUM_IMAGES, 1280)
  np.testing.assert_allclose(vectors, reference[1], atol=ATOL, rtol=0)
  assert np.abs(reference[1]).max() > 0.1  # not trivially near zero


def test_spatial_feature_is_average_pooled(backbone, variables, plain_apply):
  # 'stem' is a spatial map the registry does not list; a backbone listing it (as VGG lists pool5) pools it.
  import dataclasses
  spatial = dataclasses.replace(backbone, features={**backbone.features, "stem": None})
  item_ids, pixels = images(8)
  ids, vectors = ex.extract(spatial, variables, synthetic_batches(item_ids, pixels, 8), feature="stem")
  stem = np.concatenate([f["stem"] for f in plain_apply(variables, pixels)])
  np.testing.assert_allclose(vectors, stem.mean(axis=(1, 2)), atol=ATOL, rtol=0)


def test_eight_devices_match_one(backbone, variables, reference, tmp_path):
  out = tmp_path / "eight.npz"
  code = f"""
import sys, jax, numpy as np
sys.path.insert(0, {os.path.join(ROOT, 'tests')!r})
from test_extract import images, random_variables, synthetic_batches
from jaxrec.extract import extract, make_mesh
from jaxrec.models.registry import get_backbone
assert jax.device_count() == 8 and make_mesh().shape == {{'data': 8}}
bb = get_backbone('efficientnet_lite0')
item_ids, pixels = images()
ids, vectors = extract(bb, random_variables(bb), synthetic_batches(item_ids, pixels, 16))
np.savez({str(out)!r}, ids=ids.astype(str), vectors=vectors)
"""
  env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": "--xla_force_host_platform_device_count=8",
         "PYTHONPATH": ROOT}
  proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  item_ids, pixels = images()
  ids, vectors = ex.extract(backbone, variables, synthetic_batches(item_ids, pixels, 16))
  with np.load(out) as eight:
    np.testing.assert_array_equal(eight["ids"], ids)
    np.testing.assert_allclose(eight["vectors"], vectors, atol=ATOL, rtol=0)
  np.testing.assert_allclose(vectors, reference[1], atol=ATOL, rtol=0)


def test_bad_batch_size_and_unknown_feature(backbone, variables, monkeypatch):
  item_ids, pixels = images(6)
  with pytest.raises(InputError, match="logits, pool|pool, logits"):
    ex.extract(backbone, variables, synthetic_batches(item_ids, pixels, 2), feature="fc7")
  # One CPU device here; pretend there are 4 as on a 4-chip host.
  monkeypatch.setattr(jax, "local_device_count", lambda: 4)
  with pytest.raises(InputError, match="batch size 6 is not divisible by the 4 device"):
    ex.extract(backbone, variables, synthetic_batches(item_ids, pixels, 6))


def test_extract_to_file_writes_metadata_atomically(backbone, variables, reference, tmp_path):
  item_ids, pixels = images()
  path = tmp_path / "out" / "embeddings.npz"
  ex.extract_to_file(path, backbone, variables, synthetic_batches(item_ids, pixels, 8), feature=None,
                     metadata={"checkpoint": "/ckpt/lite0"})
  emb = read_embeddings(path)
  np.testing.assert_array_equal(emb.item_ids, reference[0])
  np.testing.assert_allclose(emb.vectors, reference[1], atol=ATOL, rtol=0)
  assert {k: emb.metadata[k] for k in ("arch", "layout", "feature", "checkpoint", "preprocessing", "image_size")} == {
      "arch": "efficientnet_lite0", "layout": "lite", "feature": "pool", "checkpoint": "/ckpt/lite0",
      "preprocessing": "lite", "image_size": SIZE}
  assert os.listdir(path.parent) == ["embeddings.npz"]

  # A run that fails mid-way leaves the previous file untouched and no temporary file.
  before = path.read_bytes()

  def failing():
    yield from synthetic_batches(item_ids[:8], pixels[:8], 8)
    raise OSError("disk gone")

  with pytest.raises(OSError):
    ex.extract_to_file(path, backbone, variables, failing(), feature=None, metadata={})
  assert path.read_bytes() == before and os.listdir(path.parent) == ["embeddings.npz"]


def _launch(*args, fake: bool):
  """Runs launch.extract as a user would; fake: batches from synthetic_batches instead of the data pipeline."""
  prefix = ("import sys; sys.path.insert(0, 'tests'); import test_extract as t; import launch.extract as m; "
            "m._batches = lambda config, size: (t.synthetic_batches(*t.images(size=size), config.batch_size), "
            "t.NUM_IMAGES); " if fake else "import launch.extract as m; ")
  code = prefix + "m.run_main(m.main)"
  return subprocess.run([sys.executable, "-c", code, *args], cwd=ROOT, capture_output=True, text=True, timeout=300,
                        env={**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": ROOT})


def test_launch_extract_end_to_end(backbone, variables, reference, tmp_path):
  ckpt = tmp_path / "lite0"
  store.save_backbone(ckpt, backbone, variables)
  out = tmp_path / "run"
  common = ("--config=configs/extract.py", f"--config.checkpoint={ckpt}", "--config.dataset.name=fake",
            f"--config.image_size={SIZE}", "--config.batch_size=8", f"--workdir={out}")
  proc = _launch(*common, fake=True)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert f"{NUM_IMAGES} items x 1280" in proc.stdout
  emb = read_embeddings(out / "embeddings.npz")
  np.testing.assert_array_equal(emb.item_ids, reference[0])
  np.testing.assert_allclose(emb.vectors, reference[1], atol=ATOL, rtol=0)
  assert emb.metadata["checkpoint"] == str(ckpt) and emb.metadata["feature"] == "pool"
  assert "images/s" in proc.stderr

  # Another feature into the same workdir: refused with a one-line error, the file untouched.
  before = (out / "embeddings.npz").read_bytes()
  proc = _launch(*common, "--config.feature=logits", fake=True)
  assert proc.returncode == 2 and "pass --overwrite" in proc.stderr and "Traceback" not in proc.stderr
  assert (out / "embeddings.npz").read_bytes() == before
  proc = _launch(*common, "--config.feature=logits", "--overwrite", fake=True)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert read_embeddings(out / "embeddings.npz").dim == 1000

  # Bad input: a one-line error, exit status 2.
  proc = _launch(*common[:-1], "--config.arch=vgg19", f"--workdir={tmp_path}/x", fake=True)
  assert proc.returncode == 2 and "holds 'efficientnet_lite0'" in proc.stderr
  proc = _launch(*common[:-1], f"--config.checkpoint={tmp_path}/none", f"--workdir={tmp_path}/x", fake=True)
  assert proc.returncode == 2 and "not a backbone folder" in proc.stderr


def test_launch_extract_on_a_built_shop_folder(backbone, variables, plain_apply, tmp_path):
  """The real data path: items.csv + PNGs -> TFDS build -> grain batches -> extraction."""
  from PIL import Image
  item_ids, pixels = images(11)
  shop = tmp_path / "shop"
  shop.mkdir()
  for item_id, image in zip(item_ids, pixels):
    Image.fromarray(image).save(shop / f"{item_id}.png")  # lossless, and already 64 px: resize is the identity
  (shop / "items.csv").write_text("item_id,image\n" + "".join(f"{i},{i}.png\n" for i in item_ids))
  ckpt = tmp_path / "lite0"
  store.save_backbone(ckpt, backbone, variables)
  out = tmp_path / "run"
  proc = _launch("--config=configs/extract.py", f"--config.checkpoint={ckpt}", "--config.dataset.name=shop_folder",
                 f"--config.dataset.data_dir={tmp_path}/tfds", f"--config.dataset.manual_dir={shop}",
                 f"--config.image_size={SIZE}", "--config.batch_size=4", f"--workdir={out}", fake=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  emb = read_embeddings(out / "embeddings.npz")
  assert sorted(emb.item_ids) == list(item_ids)  # TFDS's order, every item once
  expected = dict(zip(item_ids, (f["pool"][0] for f in plain_apply(variables, pixels))))
  np.testing.assert_allclose(emb.vectors, np.stack([expected[i] for i in emb.item_ids]), atol=ATOL, rtol=0)
  assert emb.metadata["image_size"] == SIZE and emb.metadata["dataset"] == "shop_folder"
