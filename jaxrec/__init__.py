"""jaxrec: transfer learning for content-based image recommendation, in JAX/Flax.

Data flow (one subpackage per stage):
  jaxrec.data        purchase logs, embeddings files, the log simulator
  jaxrec.recommend   the purchase-replay protocol and candidate scoring
  jaxrec.metrics     pure-jnp ranking metrics (paper and trec_eval conventions)
  jaxrec.evaluation  log + embeddings -> metrics
  jaxrec.report      metrics -> tables
"""

__version__ = "0.1.0"
