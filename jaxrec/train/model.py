"""The fine-tuned network: a backbone, a shared representation layer, one head per task."""

from __future__ import annotations

import dataclasses
from typing import Callable, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxrec.errors import InputError

KINDS = ("classification", "regression")
TUNES = ("shallow", "deep")
REPRESENTATION = "representation"


@dataclasses.dataclass(frozen=True)
class Task:
  """One prediction target; frozen so a tuple of tasks can be a (hashable) Flax module field."""

  name: str
  kind: str  # 'classification' or 'regression'
  num_classes: Optional[int] = None  # classification only
  weight: float = 1.0  # w_i in loss = sum_i w_i L_i

  def __post_init__(self):
    if self.kind not in KINDS:
      raise InputError(f"task {self.name!r}: kind {self.kind!r}; expected one of {', '.join(KINDS)}")
    if self.kind == "classification" and (self.num_classes is None or self.num_classes < 2):
      raise InputError(f"task {self.name!r}: a classification task needs num_classes >= 2, got {self.num_classes}")
    if self.kind == "regression" and self.num_classes is not None:
      raise InputError(f"task {self.name!r}: a regression task takes no num_classes, got {self.num_classes}")
    if not self.weight >= 0:
      raise InputError(f"task {self.name!r}: weight must be >= 0, got {self.weight}")
    if self.name == REPRESENTATION or self.name.startswith("hidden_"):
      raise InputError(f"task name {self.name!r} is reserved for the shared layers' outputs")


def check_tune(tune: str) -> str:
  if tune not in TUNES:
    raise InputError(f"tune {tune!r}; expected one of {', '.join(TUNES)}")
  return tune


class RepresentationHeads(nn.Module):
  """Shared Dense+ReLU layer(s) on the backbone's feature, then one linear head per task.

  del Rio et al.: hidden=(1024,); the Hnot variant: hidden=(256, 64).
  """

  tasks: tuple[Task, ...]
  hidden: tuple[int, ...] = (1024,)

  @nn.compact
  def __call__(self, x: jax.Array) -> dict[str, jax.Array]:
    out = {}
    for index, units in enumerate(self.hidden):
      x = out[f"hidden_{index}"] = nn.relu(nn.Dense(units, name=f"hidden_{index}")(x))
    out[REPRESENTATION] = x
    for task in self.tasks:
      if task.kind == "classification":
        out[task.name] = nn.Dense(task.num_classes, name=task.name)(x)  # logits [B, C]
      else:
        out[task.name] = nn.Dense(1, name=task.name)(x)[:, 0]  # prediction [B]
    return out


def pool(feature: jax.Array) -> jax.Array:
  """Spatial maps [B, H, W, C] are average-pooled; vectors pass through."""
  if feature.ndim == 4:
    feature = jnp.mean(feature, axis=(1, 2))
  return feature.reshape(feature.shape[0], -1)


class FineTuneModel(nn.Module):
  """backbone (submodule 'backbone') + RepresentationHeads (submodule 'heads').

  Input: the backbone's input (already preprocessed, unless `preprocessing` is given, e.g.
  `Backbone.preprocessing`, so batches can travel as uint8). The backbone must be built with
  include_top=False: its classifier's dropout would need an rng in train mode.
  """

  backbone: nn.Module
  tasks: tuple[Task, ...]
  feature: str = "pool"
  hidden: tuple[int, ...] = (1024,)
  preprocessing: Optional[Callable[[jax.Array], jax.Array]] = None

  def setup(self):
    self.heads = RepresentationHeads(self.tasks, self.hidden)

  def features(self, x: jax.Array, train: bool, tune: str) -> jax.Array:
    """The pooled backbone feature [B, D]. Shallow: BN in inference mode and no gradient flows back."""
    check_tune(tune)
    if self.preprocessing is not None:
      x = self.preprocessing(x)
    if tune == "shallow":
      return jax.lax.stop_gradient(pool(self.backbone(x, train=False)[self.feature]))
    return pool(self.backbone(x, train=train)[self.feature])

  def head(self, feature: jax.Array) -> dict[str, jax.Array]:
    """Heads only: lets the shallow step differentiate the head parameters alone."""
    return self.heads(feature)

  def __call__(self, x: jax.Array, train: bool, tune: str) -> dict[str, jax.Array]:
    return self.heads(self.features(x, train, tune))


class EmbeddingModel(nn.Module):
  """What a fine-tuned model exports for extraction: the backbone and the shared layer(s), no task heads.

  Same parameter tree as FineTuneModel minus the heads' task layers, so export is a subtree copy. Returns the
  backbone's features plus 'hidden_<i>' and 'representation' (the last shared layer).
  """

  backbone: nn.Module
  base_feature: str
  hidden: tuple[int, ...]

  def setup(self):
    self.heads = RepresentationHeads((), self.hidden)

  def __call__(self, x: jax.Array, train: bool = False) -> dict[str, jax.Array]:
    out = dict(self.backbone(x, train=train))
    out.update(self.heads(pool(out[self.base_feature])))
    return out


def init_heads(model: FineTuneModel, rng: jax.Array, feature_dim: int) -> dict:
  """Head parameters alone: initialising the whole model would also (slowly) initialise the backbone,
  whose weights come from a checkpoint anyway."""
  variables = RepresentationHeads(model.tasks, model.hidden).init(rng, jnp.zeros((1, feature_dim), jnp.float32))
  return variables["params"]
