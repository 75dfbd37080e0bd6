"""The two-Gaussian task of S-questions, as pure functions of a PRNG key.

Everything here is traceable, so a dataset is drawn inside the compiled
training program from a traced key: a grid of runs never ships data from the
host.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import jax.scipy.stats as jstats


@dataclasses.dataclass(frozen=True)
class TwoGaussians:
    """Two classes in `dim` dimensions with a shared covariance.

    The defaults are the text of S-questions: identity covariance, means that
    differ by `gap` in every dimension, 500 points split 400/100. The original
    code instead used gaps `gap / (i + 1)` in dimension i (`harmonic_gaps`) and
    a random covariance `scale * C^T C`, C uniform on [0, 1), drawn anew per
    dataset (`random_covariance`). `n_eval` points from the same distribution
    resolve accuracy differences far below the 100-point split's 2 points.
    """

    dim: int = 12
    gap: float = 1.0
    harmonic_gaps: bool = False
    random_covariance: bool = False
    covariance_scale: float = 1.0
    n_train: int = 400
    n_test: int = 100
    n_eval: int = 10_000

    def gaps(self) -> jax.Array:
        """Mean difference per dimension, shape (dim,)."""
        divisor = jnp.arange(1, self.dim + 1) if self.harmonic_gaps else jnp.ones(self.dim)
        return self.gap / divisor


def _covariance_factor(task: TwoGaussians, key: jax.Array) -> jax.Array:
    """A matrix F with covariance F^T F (rows of noise are multiplied by F)."""
    if task.random_covariance:
        factor = jax.random.uniform(key, (task.dim, task.dim))
    else:
        factor = jnp.eye(task.dim)
    return jnp.sqrt(task.covariance_scale) * factor


def _draw(task, factor, key, n):
    """n points with exactly balanced labels in random order: x (n, dim), y (n,)."""
    label_key, noise_key = jax.random.split(key)
    y = jax.random.permutation(label_key, jnp.arange(n) % 2)
    means = jnp.outer(y - 0.5, task.gaps())
    return means + jax.random.normal(noise_key, (n, task.dim)) @ factor, y


def sample(task: TwoGaussians, key: jax.Array) -> dict[str, jax.Array]:
    """The original split (`train`, `test`: one 500-point draw cut 400/100, as
    the sources did) plus a fresh `eval` sample, and this dataset's `bayes_acc`.

    Returns x_* of shape (n_*, dim) float32 and y_* of shape (n_*,) int32.
    """
    cov_key, split_key, eval_key = jax.random.split(key, 3)
    factor = _covariance_factor(task, cov_key)
    x, y = _draw(task, factor, split_key, task.n_train + task.n_test)
    x_eval, y_eval = _draw(task, factor, eval_key, task.n_eval)
    return {
        "x_train": x[: task.n_train], "y_train": y[: task.n_train],
        "x_test": x[task.n_train:], "y_test": y[task.n_train:],
        "x_eval": x_eval, "y_eval": y_eval,
        "bayes_acc": bayes_accuracy(task.gaps(), factor),
    }


def bayes_accuracy(gaps: jax.Array, factor: jax.Array) -> jax.Array:
    """Phi(Delta / 2), Delta the Mahalanobis distance between the class means
    under the covariance F^T F (Phi(sqrt(12) / 2) = 0.9584 at the defaults).

    Solving F^T u = gaps gives Delta = |u| without forming the covariance,
    whose condition number is the square of F's.
    """
    u = jnp.linalg.solve(factor.T, gaps)
    return jstats.norm.cdf(jnp.linalg.norm(u) / 2)
