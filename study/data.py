"""The tasks: S-questions' two Gaussians and Q4's cluster mixtures, as pure
functions of a PRNG key.

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
    resolve accuracy differences far below the 100-point split's 2 points;
    `n_val` more are the validation sample that choices (a learning rate, a
    stopping epoch) are made on, so the eval sample stays unseen.
    """

    dim: int = 12
    gap: float = 1.0
    harmonic_gaps: bool = False
    random_covariance: bool = False
    covariance_scale: float = 1.0
    n_train: int = 400
    n_test: int = 100
    n_eval: int = 10_000
    n_val: int = 1000

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


VAL_STREAM = 7  # the validation sample's key, folded in so the other samples stay as they were


def sample(task: TwoGaussians | Mixture, key: jax.Array, similarity=1.0) -> dict[str, jax.Array]:
    """The original split (`train`, `test`: one 500-point draw cut 400/100, as
    the sources did) plus fresh `eval` and `val` samples, and this dataset's
    `bayes_acc`. A `Mixture` draws its four samples independently;
    `similarity` is the target's (traced) knob.

    Returns x_* of shape (n_*, dim) float32 and y_* of shape (n_*,) int32.
    """
    if isinstance(task, Mixture):
        return _sample_mixture(task, key, similarity)
    cov_key, split_key, eval_key = jax.random.split(key, 3)
    factor = _covariance_factor(task, cov_key)
    x, y = _draw(task, factor, split_key, task.n_train + task.n_test)
    x_eval, y_eval = _draw(task, factor, eval_key, task.n_eval)
    x_val, y_val = _draw(task, factor, jax.random.fold_in(key, VAL_STREAM), task.n_val)
    return {
        "x_train": x[: task.n_train], "y_train": y[: task.n_train],
        "x_test": x[task.n_train:], "y_test": y[task.n_train:],
        "x_eval": x_eval, "y_eval": y_eval, "x_val": x_val, "y_val": y_val,
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


@dataclasses.dataclass(frozen=True)
class Mixture:
    """Classes that are unions of Gaussian clusters (Q4's source and target tasks).

    A pool of `classes * clusters` cluster centres lies in a random
    `subspace`-dimensional subspace of R^dim (the input geometry), drawn
    with std `spread` within it; points add isotropic noise of std `noise`
    in all `dim` dimensions, so a linear model on the raw inputs cannot
    separate classes made of several clusters. The source task groups the
    pool's clusters into its classes in order. A target task
    (`target=True`, its own class count, the same pool size) groups them
    anew at random, after moving the pool to s P + sqrt(1 - s^2) P' in the
    subspace orth(s B + sqrt(1 - s^2) B'), with P', B' independent of the
    source's P, B and s the traced similarity: at s = 1 new classes made of
    the source's clusters (as digits 5-9 are made of the strokes of 0-4), at
    s = 0 an unrelated geometry. Both moves keep the centres' distribution,
    so a target is equally hard at every s. Sizes are per class; labels
    cycle through the classes, so the first n * classes training points hold
    n per class (a run trains on such a prefix).
    """

    dim: int = 12
    subspace: int = 6
    classes: int = 8
    clusters: int = 3  # per class
    spread: float = 2.5
    noise: float = 1.0
    target: bool = False
    n_train: int = 1000  # per class
    n_test: int = 100
    n_eval: int = 1000
    n_val: int = 200


def _basis(key: jax.Array, dim: int, rank: int) -> jax.Array:
    return jnp.linalg.qr(jax.random.normal(key, (dim, rank)))[0]


def mixture_centres(task: Mixture, key: jax.Array, similarity) -> jax.Array:
    """Cluster centres by class, (classes, clusters, dim); see `Mixture`."""
    basis_key, fresh_basis_key, pool_key, fresh_pool_key, grouping_key = jax.random.split(key, 5)
    size = task.classes * task.clusters
    basis = _basis(basis_key, task.dim, task.subspace)
    pool = task.spread * jax.random.normal(pool_key, (size, task.subspace))
    members = jnp.arange(size)
    if task.target:
        s = jnp.asarray(similarity, jnp.float32)
        c = jnp.sqrt(1 - s**2)
        basis = jnp.linalg.qr(s * basis + c * _basis(fresh_basis_key, task.dim, task.subspace))[0]
        pool = s * pool + c * task.spread * jax.random.normal(fresh_pool_key, (size, task.subspace))
        members = jax.random.permutation(grouping_key, size)
    return (pool @ basis.T)[members.reshape(task.clusters, task.classes).T]


def _sample_mixture(task: Mixture, key: jax.Array, similarity) -> dict[str, jax.Array]:
    """Source and targets of one `key` share the source geometry; see `Mixture`."""
    geometry_key, split_key = jax.random.split(key)
    centres = mixture_centres(task, geometry_key, similarity)

    def draw(key, per_class):
        cluster_key, noise_key = jax.random.split(key)
        y = jnp.arange(per_class * task.classes) % task.classes
        cluster = jax.random.randint(cluster_key, y.shape, 0, task.clusters)
        return centres[y, cluster] + task.noise * jax.random.normal(noise_key, (len(y), task.dim)), y

    keys = [*jax.random.split(split_key, 3), jax.random.fold_in(split_key, VAL_STREAM)]
    (x, y), (x_test, y_test), (x_eval, y_eval), (x_val, y_val) = (
        draw(k, n) for k, n in zip(keys, (task.n_train, task.n_test, task.n_eval, task.n_val)))
    return {"x_train": x, "y_train": y, "x_test": x_test, "y_test": y_test, "x_eval": x_eval, "y_eval": y_eval,
            "x_val": x_val, "y_val": y_val, "bayes_acc": jnp.mean(bayes_classes(task, centres, x_eval) == y_eval)}


def bayes_classes(task: Mixture, centres: jax.Array, x: jax.Array) -> jax.Array:
    """The Bayes classifier of the mixture (equal cluster weights): the class
    whose clusters' summed densities at x are largest. Its accuracy on the
    eval sample estimates the Bayes accuracy."""
    sq = jnp.sum((x[:, None, None] - centres[None]) ** 2, axis=-1)  # (n, classes, clusters)
    return jnp.argmax(jax.scipy.special.logsumexp(-sq / (2 * task.noise**2), axis=-1), axis=-1)
