"""Fine-tuning core: parameter labels, shallow vs deep steps, losses, data parallelism, no backbone gradient."""

import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from conftest import random_variables

from jaxrec.extract import make_mesh
from jaxrec.models.registry import get_backbone
from jaxrec.train.losses import task_losses, total_loss
from jaxrec.train.model import FineTuneModel, Task, init_heads
from jaxrec.train.optim import FROZEN, TRAINABLE, make_optimizer, param_labels
from jaxrec.train.step import create_state, make_eval_step, make_train_step

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TASKS = (Task("category", "classification", num_classes=5, weight=1.0), Task("price", "regression", weight=0.5))
BATCH = 16


def small_lite0():
  """Lite0's first three stages, one block each: the deep step's gradient compiles in seconds, not ~30 s."""
  return get_backbone("lite0_tiny", include_top=False)


def setup(backbone, size: int):
  """(model, params, batch_stats, batch) with a missing label of each kind in the batch."""
  model = FineTuneModel(backbone.module, TASKS, feature=backbone.default_feature)
  variables = random_variables(backbone, size)
  dim = backbone.features[backbone.default_feature]
  params = {"backbone": variables["params"], "heads": init_heads(model, jax.random.PRNGKey(0), dim)}
  rng = np.random.default_rng(1)
  category = rng.integers(0, 5, BATCH)
  category[3] = -1
  price = rng.standard_normal(BATCH).astype(np.float32)
  price[5] = np.nan
  batch = {"image": rng.standard_normal((BATCH, size, size, 3)).astype(np.float32), "mask": np.ones(BATCH, bool),
           "labels": {"category": category, "price": price}}
  return model, params, {"backbone": variables["batch_stats"]}, batch


def flops(compiled) -> float:
  cost = compiled.cost_analysis()
  return float((cost[0] if isinstance(cost, list) else cost)["flops"])


def bytes_of(tree):
  return [np.asarray(x).tobytes() for x in jax.tree.leaves(tree)]


@pytest.fixture(scope="module")
def full():
  return setup(get_backbone("efficientnet_lite0", include_top=False), 64)


@pytest.fixture(scope="module")
def small():
  return setup(small_lite0(), 32)


@pytest.fixture(scope="module")
def shallow(full):
  """(state, batch, compiled shallow step, compiled plain forward) on full Lite0 at 64 px."""
  model, params, batch_stats, batch = full
  optimizer = make_optimizer(params, "shallow", 1e-3)
  state = create_state(params, batch_stats, optimizer)
  step = make_train_step(model, TASKS, "shallow", optimizer, make_mesh()).lower(state, batch).compile()
  forward = make_eval_step(model, TASKS, make_mesh()).lower(state, batch).compile()
  return state, batch, step, forward


@pytest.fixture(scope="module")
def deep(small):
  model, params, batch_stats, batch = small
  optimizer = make_optimizer(params, "deep", 1e-3)
  state = create_state(params, batch_stats, optimizer)
  step = make_train_step(model, TASKS, "deep", optimizer, make_mesh()).lower(state, batch).compile()
  forward = make_eval_step(model, TASKS, make_mesh()).lower(state, batch).compile()
  return state, batch, step, forward


# (i) labels and optimizer state


def test_every_param_labelled_and_shallow_freezes_exactly_the_backbone(small):
  _, params, _, _ = small
  for tune in ("shallow", "deep"):
    labels = param_labels(params, tune)
    assert jax.tree.structure(labels) == jax.tree.structure(params)
  shallow = param_labels(params, "shallow")
  assert set(jax.tree.leaves(shallow["backbone"])) == {FROZEN}
  assert set(jax.tree.leaves(shallow["heads"])) == {TRAINABLE}
  assert set(jax.tree.leaves(param_labels(params, "deep"))) == {TRAINABLE}


def test_adam_state_covers_only_trainable_params(small):
  _, params, _, _ = small
  state = make_optimizer(params, "shallow", 1e-3).init(params)
  adam = [s for s in jax.tree.leaves(state, is_leaf=lambda s: isinstance(s, optax.ScaleByAdamState))
          if isinstance(s, optax.ScaleByAdamState)]
  assert len(adam) == 1
  for moment in (adam[0].mu, adam[0].nu):
    paths = [jax.tree_util.keystr(p) for p, _ in jax.tree.leaves_with_path(moment)]
    assert paths and not any("backbone" in p for p in paths)
    assert len(paths) == len(jax.tree.leaves(params["heads"]))
  # Deep tuning: Adam moments for every parameter.
  deep = make_optimizer(params, "deep", 1e-3).init(params)
  adam = [s for s in jax.tree.leaves(deep, is_leaf=lambda s: isinstance(s, optax.ScaleByAdamState))
          if isinstance(s, optax.ScaleByAdamState)]
  assert len(jax.tree.leaves(adam[0].mu)) == len(jax.tree.leaves(params))


# (ii) what a step changes


def test_shallow_step_leaves_the_backbone_bit_identical(shallow):
  state, batch, step, _ = shallow
  new, metrics = step(state, batch)
  assert np.isfinite(float(metrics["loss"]))
  assert bytes_of(new.params["backbone"]) == bytes_of(state.params["backbone"])
  assert bytes_of(new.batch_stats) == bytes_of(state.batch_stats)
  changed = jax.tree.map(lambda a, b: not np.array_equal(a, b), new.params["heads"], state.params["heads"])
  assert all(jax.tree.leaves(changed))
  assert int(new.step) == 1


def test_deep_step_changes_backbone_and_batch_stats(deep):
  state, batch, step, _ = deep
  new, metrics = step(state, batch)
  assert np.isfinite(float(metrics["loss"]))
  for old, now in ((state.params["backbone"], new.params["backbone"]), (state.batch_stats, new.batch_stats),
                   (state.params["heads"], new.params["heads"])):
    changed = jax.tree.leaves(jax.tree.map(lambda a, b: not np.array_equal(a, b), old, now))
    assert sum(changed) >= 0.9 * len(changed)


# (iii) losses


def log_softmax(x):
  x = x - x.max(-1, keepdims=True)
  return x - np.log(np.exp(x).sum(-1, keepdims=True))


def test_losses_match_numpy_with_masked_missing_labels():
  rng = np.random.default_rng(0)
  logits = rng.standard_normal((6, 5)).astype(np.float32)
  category = np.array([0, 4, -1, 2, 1, 3])
  pred = rng.standard_normal(6).astype(np.float32)
  price = np.array([1.0, np.nan, 0.5, -2.0, 3.0, 0.0], np.float32)
  mask = np.array([True, True, True, True, True, False])  # the last row is padding
  losses = task_losses({"category": jnp.asarray(logits), "price": jnp.asarray(pred)},
                       {"category": category, "price": price}, TASKS, mask)
  rows = [0, 1, 3, 4]
  ce = -np.mean(log_softmax(logits.astype(np.float64))[rows, category[rows]])
  rows = [0, 2, 3, 4]
  mae = np.mean(np.abs(pred[rows] - price[rows]))
  np.testing.assert_allclose(float(losses["category"]), ce, rtol=1e-6)
  np.testing.assert_allclose(float(losses["price"]), mae, rtol=1e-6)
  np.testing.assert_allclose(float(total_loss(losses, TASKS)), 1.0 * ce + 0.5 * mae, rtol=1e-6)


def test_missing_labels_get_no_gradient_and_an_empty_task_is_zero():
  pred = jnp.asarray([1.0, 2.0, 3.0])

  def loss(p):
    return task_losses({"price": p}, {"price": np.array([0.0, np.nan, 1.0], np.float32)}, TASKS[1:],
                       np.ones(3, bool))["price"]

  grad = np.asarray(jax.grad(loss)(pred))
  np.testing.assert_allclose(grad, [0.5, 0.0, 0.5])
  empty = task_losses({"category": jnp.zeros((2, 5))}, {"category": np.array([-1, -1])}, TASKS[:1], np.ones(2, bool))
  assert float(empty["category"]) == 0.0


# (iv) data parallel


PARALLEL = textwrap.dedent("""
  import jax, numpy as np, optax
  from jax.sharding import AxisType, Mesh
  from tests.test_train_core import TASKS, setup, small_lite0
  from jaxrec.extract import make_mesh
  from jaxrec.train.step import create_state, make_train_step

  assert jax.device_count() == 8
  model, params, batch_stats, batch = setup(small_lite0(), 32)
  # Plain SGD: Adam's first step is ~lr * sign(g), which would turn float round-off in near-zero gradients
  # into lr-sized differences; the point here is the sharded step's arithmetic.
  optimizer = optax.sgd(0.1)

  def run(mesh):
    step = make_train_step(model, TASKS, "deep", optimizer, mesh)
    state = create_state(params, batch_stats, optimizer)
    losses = []
    for _ in range(2):
      state, metrics = step(state, batch)
      losses.append(float(metrics["loss"]))
    return losses, jax.device_get((state.params, state.batch_stats))

  one = run(Mesh(np.array(jax.devices()[:1]), ("data",), axis_types=(AxisType.Auto,)))
  eight = run(make_mesh())
  np.testing.assert_allclose(eight[0], one[0], rtol=1e-5)
  assert one[0][1] != one[0][0]
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), eight[1], one[1])
  moved = jax.tree.leaves(jax.tree.map(lambda a, b: not np.array_equal(a, b), one[1][0], params))
  assert sum(moved) >= 0.9 * len(moved), (sum(moved), len(moved))
  print("OK", one[0], eight[0])
""")


def test_two_deep_steps_on_8_devices_equal_one_device():
  env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8", "JAX_PLATFORMS": "cpu",
         "PYTHONPATH": os.pathsep.join([ROOT, os.path.join(ROOT, "tests"), os.environ.get("PYTHONPATH", "")])}
  result = subprocess.run([sys.executable, "-c", PARALLEL], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
  assert result.returncode == 0, result.stdout + result.stderr
  assert "OK" in result.stdout


# (v) no backbone gradient in the shallow step


def test_shallow_step_costs_about_one_forward(shallow):
  _, _, step, forward = shallow
  ratio = flops(step) / flops(forward)
  print(f"shallow/forward FLOPs: {ratio:.3f}")
  assert ratio <= 1.2


def test_deep_step_costs_about_three_forwards(deep):
  _, _, step, forward = deep
  ratio = flops(step) / flops(forward)
  print(f"deep/forward FLOPs: {ratio:.3f}")
  assert 2.5 <= ratio <= 5.0
