"""The fine-tuning run end to end on real Fashion-MNIST photos with a tiny backbone: stages, early stopping,
export -> launch.extract -> launch.evaluate, resume after kill -9, two processes, and every bad input."""

import json
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest
from PIL import Image

from conftest import random_variables, write_csv

from configs import hnot, table2
from jaxrec.data import image_datasets
from jaxrec.errors import InputError
from jaxrec.models import registry, store
from jaxrec.train import loop
from jaxrec.train.checkpoints import Checkpoints
from jaxrec.train.model import FineTuneModel, Task
from jaxrec.train.targets import TaskSpec, build_splits

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LIMIT = 200  # photos per split: 160 train / 40 validation after the hash split
PHOTOS = "/usr/share/datasets/fashion-mnist"


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  path = str(tmp_path_factory.mktemp("tfds"))
  image_datasets.build_dataset("fashion_mnist", data_dir=path, manual_dir=image_datasets.ensure_fashion_mnist(PHOTOS),
                               limit=LIMIT)
  return path


def tiny(config, data_dir, max_epochs=1):
  """A config shrunk to seconds: lite0_tiny with random weights, 32 px, 200 photos, 1 epoch per stage."""
  config.arch, config.weights, config.image_size, config.batch_size = "lite0_tiny", "random", 32, 16
  config.log_every_s = 0.0
  for ds in config.datasets.values():
    ds.limit, ds.data_dir = LIMIT, data_dir
  for stage in config.stages.values():
    stage.max_epochs = max_epochs
  config.shop.num_users, config.shop.initial_stock = 20, 60
  return config


def flags_of(config_row: str, data_dir: str, workdir: str, *extra: str) -> list[str]:
  """The same tiny config as command-line overrides of configs/table2.py:<row>."""
  config = table2.get_config(config_row)
  args = [sys.executable, "-m", "launch.train", f"--config=configs/table2.py:{config_row}", f"--workdir={workdir}",
          "--config.arch=lite0_tiny", "--config.weights=random", "--config.image_size=32", "--config.batch_size=16",
          "--config.log_every_s=0", "--config.shop.num_users=20", "--config.shop.initial_stock=60"]
  for name in config.datasets:
    args += [f"--config.datasets.{name}.limit={LIMIT}", f"--config.datasets.{name}.data_dir={data_dir}"]
  return args + list(extra)


def env(**extra):
  out = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=os.pathsep.join([ROOT, os.path.join(ROOT, "tests")]))
  out.update(extra)
  return out


def leaves(tree):
  return [np.asarray(x) for x in jax.tree.leaves(tree)]


# ----------------------------------------------------------------------------------------------- configs


def test_table2_has_the_papers_13_rows_and_every_config_is_valid():
  assert len(table2.ROWS) == 13
  names = {table2.get_config(row).name for row in table2.ROWS}
  assert len(names) == 13 and "ResNet" in names and "Omniart-deep-fine-tune-ugallery" in names
  for row in table2.ROWS:
    loop.validate(table2.get_config(row))
  assert table2.get_config("resnet").stage_order == ()  # fixed features
  both = table2.get_config("omniart_deep_ugallery")
  assert both.stage_order == ("external", "shop")
  assert (both.stages.external.tune, both.stages.shop.tune) == ("shallow", "deep")
  assert dict(table2.get_config("omniart_shallow_with_task_weights").stages.external.tasks) == table2.TASK_WEIGHTS
  config = hnot.get_config()
  loop.validate(config)
  assert config.hidden == (256, 64) and config.stage_order == ("frozen", "unfrozen")
  assert config.stages.frozen.learning_rate > config.stages.unfrozen.learning_rate


def test_config_errors_name_every_bad_key():
  config = table2.get_config("omniart_deep_ugallery")
  config.stages.shop.learning_rte = 1e-3
  config.stages.external.tasks.artist = 1.0
  config.stages.shop.dataset = "ugallery"
  config.datasets.shop.lmit = 3
  with pytest.raises(InputError) as e:
    loop.validate(config)
  message = str(e.value)
  for expected in ("config.stages.shop: unknown key(s) learning_rte", "task 'artist' is not defined",
                   "config.stages.shop.dataset: 'ugallery'", "config.datasets.shop: unknown key(s) lmit"):
    assert expected in message


def test_an_unknown_config_flag_is_a_one_line_error(tmp_path):
  out = subprocess.run([sys.executable, "-m", "launch.train", "--config=configs/table2.py:resnet",
                        f"--workdir={tmp_path}", "--config.stages.shop.learning_rte=1"],
                       cwd=ROOT, env=env(), capture_output=True, text=True, timeout=300)
  assert out.returncode == 2, out.stderr[-2000:]
  assert "bad config: the config has no key" in out.stderr and "--config.stages.shop.learning_rte" in out.stderr
  assert "Traceback" not in out.stderr
  assert not os.listdir(tmp_path)


def test_early_stopping_counts_epochs_without_improvement():
  state = {"epoch": 0, "step_in_epoch": 5, "global_step": 0, "best_val_loss": None, "best_step": None,
           "bad_epochs": 0, "stopped": False}
  seen = []
  for step, val in zip((10, 20, 30, 40, 50), (3.0, 2.0, 2.5, 2.1, 2.4)):
    state["global_step"] = step
    seen.append(loop.end_of_epoch(state, val, patience=3))
    assert state["step_in_epoch"] == 0
  assert seen == [True, True, False, False, False]
  assert (state["best_val_loss"], state["best_step"], state["stopped"], state["epoch"]) == (2.0, 20, True, 5)
  never = dict(state, stopped=False, bad_epochs=0)
  for _ in range(10):
    loop.end_of_epoch(never, 9.0, patience=0)
  assert not never["stopped"]


# ----------------------------------------------------------------------------------------------- targets


def _shop_folder(folder, labels):
  os.makedirs(folder)
  rows = []
  for i, label in enumerate(labels):
    Image.fromarray(np.full((12, 12, 3), 20 * i, np.uint8)).save(os.path.join(folder, f"{i}.png"))
    rows.append((f"item{i}", f"{i}.png", label))
  write_csv(os.path.join(folder, "items.csv"), ("item_id", "image", "label"), rows)
  return folder


def _dataset(name, data_dir, manual_dir="", allow=False):
  config = table2.base_config().datasets.shop
  limit = LIMIT if name == "fashion_mnist" else 0
  config.name, config.data_dir, config.manual_dir, config.limit = name, data_dir, manual_dir, limit
  config.allow_missing_labels = allow
  config.validation_fraction = 0.5
  return config


def test_missing_labels_are_an_error_naming_the_items_unless_allowed(tmp_path):
  folder = _shop_folder(str(tmp_path / "shop"), ["a", "", "b", "a", "", "b", "a", "b"])
  spec = [TaskSpec("category", "classification", "label")]
  with pytest.raises(InputError, match=r"task 'category': \d of \d items have no 'label' \(e.g. item[14]"):
    build_splits(_dataset("shop_folder", str(tmp_path / "tfds"), folder), spec, data_dir=str(tmp_path / "tfds"),
                 where="stage 'shop'")
  train, val, tasks, _ = build_splits(_dataset("shop_folder", str(tmp_path / "tfds"), folder, allow=True), spec,
                                      data_dir=str(tmp_path / "tfds"), where="stage 'shop'")
  assert tasks == (Task("category", "classification", num_classes=2),)
  labels = dict(zip(list(train.item_ids) + list(val.item_ids),
                    list(train.targets["category"]) + list(val.targets["category"])))
  assert labels["item1"] == labels["item4"] == -1 and labels["item0"] == 0 and labels["item2"] == 1


def test_a_task_the_data_has_no_labels_for_fails_clearly(data_dir):
  with pytest.raises(InputError, match=r"task 'artist' reads 'artist', which this dataset has no labels for "
                                       r"\(it has: label"):
    build_splits(_dataset("fashion_mnist", data_dir), [TaskSpec("artist", "classification", "artist")],
                 data_dir=data_dir, where="stage 'shop'")


def test_derived_targets_come_from_the_images_and_labels(data_dir):
  specs = [TaskSpec("group", "classification", "fashion_group"), TaskSpec("intensity", "regression",
                                                                          "mean_intensity")]
  config = _dataset("fashion_mnist", data_dir)
  train, val, tasks, standard = build_splits(config, specs, data_dir=data_dir, where="t")
  assert tasks[0].num_classes == 4 and len(train) + len(val) == LIMIT
  example = train.source[int(train.positions[0])]
  expected = (np.asarray(example["image"], np.float32).mean() / 255 - standard["intensity"].mean) / \
      standard["intensity"].std
  assert train.targets["intensity"][0] == pytest.approx(expected, rel=1e-5)
  assert abs(float(np.mean(train.targets["intensity"]))) < 1e-5  # standardised on the training split
  assert train.targets["group"][0] == [0, 1, 0, 1, 0, 2, 0, 2, 3, 2][example["label"]]


# ----------------------------------------------------------------------------------------------- a run


@pytest.fixture(scope="module")
def hnot_run(data_dir, tmp_path_factory):
  """The Hnot pipeline (frozen, then unfrozen) at test size."""
  workdir = str(tmp_path_factory.mktemp("hnot"))
  config = tiny(hnot.get_config(), data_dir)
  summary = loop.train(config, workdir)
  return config, workdir, summary


def test_two_stages_shallow_then_deep(hnot_run):
  config, workdir, summary = hnot_run
  assert [h["stage"] for h in summary["history"]] == ["frozen", "unfrozen"]
  assert all(np.isfinite(h["val_loss"]) and 0 <= h["val_accuracy/category"] <= 1 for h in summary["history"])
  backbone = registry.get_backbone("lite0_tiny", include_top=False)
  initial = jax.jit(backbone.module.init, static_argnames="train")(
      jax.random.PRNGKey(config.seed), np.zeros((1, 32, 32, 3), np.float32), train=False)
  checkpoints = Checkpoints(os.path.join(workdir, "checkpoints"), keep=2)
  steps = checkpoints.all_steps()
  first_stage_end = summary["history"][0]["step"]
  assert first_stage_end in steps and summary["steps"] in steps
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    logged = [json.loads(line) for line in f]
  assert [r["step"] for r in logged] == [h["step"] for h in summary["history"]]
  assert os.listdir(os.path.join(workdir, "tensorboard"))
  # The frozen stage left the backbone bit for bit as it started; the unfrozen one changed it.
  exported, variables, meta = store.load_backbone(os.path.join(workdir, loop.EXPORT))
  assert meta["representation"] == {"hidden": [256, 64], "base_feature": "pool"}
  assert exported.default_feature == "hidden_0" and exported.features["hidden_0"] == 256
  assert exported.preprocessing.size == 32
  before = leaves(initial["params"])
  after = leaves(variables["params"]["backbone"])
  assert len(before) == len(after) and any(not np.array_equal(a, b) for a, b in zip(before, after))
  loop_state = checkpoints.restore_loop(first_stage_end)
  assert loop_state["stage"] == 0 and loop_state["epoch"] == 1


def test_export_computes_the_trained_models_shared_layer(hnot_run):
  config, workdir, _ = hnot_run
  exported, variables, _ = store.load_backbone(os.path.join(workdir, loop.EXPORT))
  images = np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3)).astype(np.uint8)
  out = jax.jit(lambda v, x: exported.module.apply(v, exported.preprocessing(x), train=False))(variables, images)
  # The same layers applied as the FineTuneModel that was trained, with its heads.
  trained = FineTuneModel(exported.module.backbone, (Task("category", "classification", num_classes=10),),
                          hidden=(256, 64), preprocessing=exported.preprocessing)
  heads = dict(variables["params"]["heads"])
  heads["category"] = {"kernel": np.zeros((64, 10), np.float32), "bias": np.zeros(10, np.float32)}
  reference = jax.jit(lambda v, x: trained.apply(v, x, train=False, tune="deep"))(
      {"params": {"backbone": variables["params"]["backbone"], "heads": heads},
       "batch_stats": variables["batch_stats"]}, images)
  np.testing.assert_allclose(out["hidden_0"], reference["hidden_0"], rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(out["representation"], reference["representation"], rtol=1e-5, atol=1e-6)
  assert out["hidden_0"].shape == (4, 256) and out["representation"].shape == (4, 64)


def test_train_then_extract_then_evaluate_commands(hnot_run, data_dir):
  config, workdir, _ = hnot_run
  shop = loop.write_default_shop(config, workdir)
  embeddings = os.path.join(workdir, "embeddings")
  subprocess.run([sys.executable, "-m", "launch.extract", f"--config.checkpoint={workdir}/export",
                  "--config.dataset.name=fashion_mnist", f"--config.dataset.limit={LIMIT}",
                  f"--config.dataset.data_dir={data_dir}", f"--workdir={embeddings}"],
                 cwd=ROOT, env=env(), check=True, capture_output=True, timeout=600)
  with np.load(os.path.join(embeddings, "embeddings.npz"), allow_pickle=False) as npz:
    vectors = npz[[k for k in npz.files if npz[k].ndim == 2][0]]
  assert vectors.shape == (LIMIT, 256)
  subprocess.run([sys.executable, "-m", "launch.evaluate", f"--config.dataset.dir={shop}",
                  f"--config.embeddings={embeddings}/embeddings.npz", "--config.similarity=euclidean",
                  f"--workdir={workdir}/evaluation"],
                 cwd=ROOT, env=env(), check=True, capture_output=True, text=True, timeout=600)
  with open(os.path.join(workdir, "evaluation", "metrics.json")) as f:
    metrics = json.load(f)
  assert 0 <= metrics["recall@20"] <= 1 and metrics["num_transactions"] > 0


def test_a_finished_run_is_not_trained_again(hnot_run):
  config, workdir, summary = hnot_run
  before = sorted(os.listdir(os.path.join(workdir, "checkpoints")))
  assert loop.train(config, workdir)["history"] == summary["history"]
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == before


def test_a_workdir_of_another_run_is_refused_and_left_alone(hnot_run):
  config, workdir, _ = hnot_run
  other = tiny(hnot.get_config(), config.datasets.shop.data_dir)
  other.stages.unfrozen.learning_rate = 1e-2
  with open(os.path.join(workdir, "run.json"), "rb") as f:
    recorded = f.read()
  steps = sorted(os.listdir(os.path.join(workdir, "checkpoints")))
  with pytest.raises(InputError, match=r"holds the checkpoints of another run \(config differs at "
                                       r"stages.unfrozen.learning_rate: 0.0001 there, 0.01 now"):
    loop.train(other, workdir)
  with open(os.path.join(workdir, "run.json"), "rb") as f:
    assert f.read() == recorded
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == steps


def test_weights_of_another_architecture_are_refused(data_dir, tmp_path):
  lite0 = registry.get_backbone("efficientnet_lite0", include_top=False)
  folder = str(tmp_path / "lite0")
  store.save_backbone(folder, lite0, random_variables(lite0, 32))
  config = tiny(table2.get_config("resnet_shallow_ugallery"), data_dir)
  config.weights = folder
  with pytest.raises(InputError, match="holds a efficientnet_lite0 backbone, but config.arch is 'lite0_tiny'"):
    loop.train(config, str(tmp_path / "run"))


def test_a_nan_loss_stops_with_a_clear_error_and_keeps_the_last_good_checkpoint(data_dir, tmp_path):
  config = tiny(table2.get_config("resnet_shallow_ugallery_only_artist"), data_dir)
  config.stage_order = ("shop", "boom")
  config.stages.boom = table2.stage("shop", {"category": 1.0}, "shallow", 1e30, max_epochs=1)
  workdir = str(tmp_path / "run")
  with pytest.raises(loop.TrainingDiverged, match=r"stage boom epoch 1/1 step \d+: the loss is (nan|inf) .* The last good "
                                                  r"checkpoint, step 10 in .* is kept"):
    loop.train(config, workdir)
  checkpoints = Checkpoints(os.path.join(workdir, "checkpoints"), keep=2)
  assert checkpoints.all_steps() == [10]
  assert checkpoints.restore_loop(10)["history"][0]["stage"] == "shop"
  assert not os.path.exists(os.path.join(workdir, loop.EXPORT))


# ----------------------------------------------------------------------------------------------- processes


def _history(workdir):
  with open(os.path.join(workdir, loop.SUMMARY)) as f:
    return json.load(f)["history"]


def _export_leaves(workdir):
  return leaves(store.load_backbone(os.path.join(workdir, loop.EXPORT))[1])


def test_resume_after_kill_9_ends_like_an_uninterrupted_run(data_dir, tmp_path):
  row = "resnet_deep_ugallery_only_artist"
  extra = ["--config.stages.shop.max_epochs=6", "--config.checkpoint.every_steps=3", "--nowrite_shop"]
  reference = str(tmp_path / "reference")
  subprocess.run(flags_of(row, data_dir, reference, *extra), cwd=ROOT, env=env(), check=True, capture_output=True,
                 timeout=900)
  killed = str(tmp_path / "killed")
  process = subprocess.Popen(flags_of(row, data_dir, killed, *extra), cwd=ROOT, env=env(),
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  deadline = time.monotonic() + 600
  checkpoints = os.path.join(killed, "checkpoints")
  # Kill it once it has saved past its first epoch (10 steps per epoch, a save every 3), well before the end.
  while time.monotonic() < deadline:
    steps = [int(s) for s in os.listdir(checkpoints) if s.isdigit()] if os.path.isdir(checkpoints) else []
    if steps and max(steps) >= 12:
      break
    assert process.poll() is None, "the run ended before it could be killed"
    time.sleep(0.02)
  os.kill(process.pid, signal.SIGKILL)
  process.wait()
  assert not os.path.exists(os.path.join(killed, loop.SUMMARY)), "killed too late: the run had finished"
  out = subprocess.run(flags_of(row, data_dir, killed, *extra), cwd=ROOT, env=env(), check=True,
                       capture_output=True, text=True, timeout=900)
  assert "resuming from" in out.stdout
  resumed, uninterrupted = _history(killed), _history(reference)
  assert [h["step"] for h in resumed] == [h["step"] for h in uninterrupted] == [10, 20, 30, 40, 50, 60]
  for a, b in zip(resumed, uninterrupted):
    assert a["val_loss"] == pytest.approx(b["val_loss"], rel=1e-6)
  for a, b in zip(_export_leaves(killed), _export_leaves(reference)):
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_two_processes_train_like_one(data_dir, tmp_path):
  """jax.distributed over 2 CPU processes (gloo collectives): each loads half of every global batch."""
  row = "resnet_shallow_ugallery"
  extra = ["--config.stages.shop.max_epochs=2", "--nowrite_shop"]
  single = str(tmp_path / "single")
  subprocess.run(flags_of(row, data_dir, single, *extra), cwd=ROOT, env=env(), check=True, capture_output=True,
                 timeout=900)
  import socket
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
  double = str(tmp_path / "double")
  multihost = ["--multihost", f"--coordinator_address=127.0.0.1:{port}", "--num_processes=2",
               "--cpu_collectives=gloo"]
  processes = [subprocess.Popen(flags_of(row, data_dir, double, *extra, *multihost, f"--process_id={i}"), cwd=ROOT,
                                env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
               for i in range(2)]
  outputs = [p.communicate(timeout=900)[0] for p in processes]
  assert [p.returncode for p in processes] == [0, 0], outputs[0][-3000:] + outputs[1][-3000:]
  assert "process 0 of 2" in outputs[0] or "connected to 1 peer" in outputs[0]
  for a, b in zip(_history(double), _history(single)):
    assert a["step"] == b["step"]
    assert a["val_loss"] == pytest.approx(b["val_loss"], rel=1e-5)
  for a, b in zip(_export_leaves(double), _export_leaves(single)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


# ----------------------------------------------------------------------------------------------- sweep


def test_sweep_prints_one_command_per_row(tmp_path):
  out = subprocess.run([sys.executable, "-m", "launch.sweep", "--config=configs/table2.py", f"--workdir={tmp_path}",
                        "--print_commands", "--set=max_epochs=3"],
                       cwd=ROOT, env=env(), check=True, capture_output=True, text=True, timeout=300)
  lines = out.stdout.strip().splitlines()
  assert len(lines) == 14
  assert lines[0].startswith("python -m launch.train --config=configs/table2.py:resnet_deep_ugallery "
                             f"--workdir={tmp_path}/resnet_deep_ugallery --config.stages.shop.max_epochs=3")
  assert "--config.stages.external.max_epochs=3 --config.stages.shop.max_epochs=3" in lines[2]
  assert lines[-1].endswith("--set=max_epochs=3 --collect_only")
  assert not os.listdir(tmp_path)


def test_sweep_collects_rows_into_one_table_and_plot(data_dir, tmp_path):
  from jaxrec.train import sweep
  overrides = ["arch=lite0_tiny", "weights=random", "image_size=32", "batch_size=16", "max_epochs=1",
               f"datasets.shop.limit={LIMIT}", f"datasets.shop.data_dir={data_dir}",
               f"datasets.external.limit={LIMIT}", f"datasets.external.data_dir={data_dir}",
               "shop.num_users=20", "shop.initial_stock=60"]
  with pytest.raises(InputError, match="the config has no key 'image_sise'"):
    sweep.run(os.path.join(ROOT, "configs", "table2.py"), str(tmp_path), ["resnet"], ["image_sise=3"])
  results = sweep.run(os.path.join(ROOT, "configs", "table2.py"), str(tmp_path),
                      ["resnet", "omniart_shallow_only_type"], overrides)
  assert sorted(name for name, _ in results[:2]) == ["Omniart-shallow-only-type", "ResNet"]
  assert results[-1][0] == "Random"
  table = (tmp_path / "table.md").read_text()
  assert "| Omniart-shallow-only-type |" in table and "| Random |" in table
  assert (tmp_path / "table.png").stat().st_size > 1000
  assert os.path.isfile(tmp_path / "omniart_shallow_only_type" / "export" / "backbone.json")
