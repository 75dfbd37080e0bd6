"""The tasks' samples: split sizes, balance, moments, Bayes accuracy, purity, the validation draw."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.stats import norm

from conftest import sample
from study.data import Mixture, TwoGaussians, bayes_accuracy

BIG = 200_000  # eval points for the moment and Monte Carlo checks
FAITHFUL = TwoGaussians(harmonic_gaps=True, random_covariance=True, n_eval=BIG)


def draw(task, seed=0):
    return {k: np.asarray(v) for k, v in sample(task, jax.random.key(seed)).items()}


@pytest.fixture(scope="module")
def plain():
    return draw(TwoGaussians(n_eval=BIG))


@pytest.fixture(scope="module")
def faithful():
    # Seed 1 has Bayes accuracy 0.87; some keys give a nearly separable 0.9999.
    return draw(FAITHFUL, seed=1)


@pytest.fixture(scope="module")
def default():
    return draw(TwoGaussians())


def class_moments(x, y):
    """Per-class means and covariances, and the pooled within-class covariance."""
    x0, x1 = x[y == 0], x[y == 1]
    c0, c1 = np.cov(x0, rowvar=False), np.cov(x1, rowvar=False)
    pooled = ((len(x0) - 1) * c0 + (len(x1) - 1) * c1) / (len(x) - 2)
    return x0.mean(0), x1.mean(0), c0, c1, pooled, len(x0), len(x1)


def linear_rule_accuracy(x, y, w):
    # Class means are -gaps/2 and +gaps/2, so the optimal threshold is 0.
    correct = (x @ w > 0) == (y == 1)
    p = correct.mean()
    return p, np.sqrt(p * (1 - p) / len(y))


def test_default_split_sizes_and_dtypes(default):
    d = default
    for split, n in [("train", 400), ("test", 100), ("eval", 10_000)]:
        assert d[f"x_{split}"].shape == (n, 12)
        assert d[f"y_{split}"].shape == (n,)
        assert d[f"x_{split}"].dtype == np.float32
        assert d[f"y_{split}"].dtype == np.int32
        assert set(np.unique(d[f"y_{split}"])) == {0, 1}


def test_custom_split_sizes():
    d = draw(TwoGaussians(dim=3, n_train=30, n_test=11, n_eval=7))
    assert d["x_train"].shape == (30, 3) and d["x_test"].shape == (11, 3) and d["x_eval"].shape == (7, 3)
    assert d["y_train"].shape == (30,) and d["y_test"].shape == (11,) and d["y_eval"].shape == (7,)


def test_classes_exactly_balanced(default):
    d = default
    split = np.concatenate([d["y_train"], d["y_test"]])
    assert np.bincount(split).tolist() == [250, 250]
    assert np.bincount(d["y_eval"]).tolist() == [5000, 5000]
    # Balanced overall but shuffled: the train part is not simply the first 400 of an alternating list.
    assert not np.array_equal(d["y_train"], np.arange(400) % 2)


def test_plain_mean_gap_and_identity_covariance(plain):
    m0, m1, c0, c1, _, n0, n1 = class_moments(plain["x_eval"], plain["y_eval"])
    se = np.sqrt(1 / n0 + 1 / n1)  # unit variance per dimension
    np.testing.assert_array_less(np.abs(m1 - m0 - 1.0), 5 * se)
    # Covariance entries have standard error about 1/sqrt(n_class) = 0.003.
    np.testing.assert_allclose(c0, np.eye(12), atol=0.02)
    np.testing.assert_allclose(c1, np.eye(12), atol=0.02)


def test_bayes_accuracy_at_defaults(default):
    acc = float(default["bayes_acc"])
    assert abs(acc - 0.9584) < 1e-4
    np.testing.assert_allclose(acc, norm.cdf(np.sqrt(12) / 2), rtol=1e-6)


def test_bayes_accuracy_by_hand():
    # F = 2 I: covariance 4 I, Mahalanobis distance |gaps| / 2 = 1 for four unit gaps.
    acc = bayes_accuracy(jnp.ones(4), 2 * jnp.eye(4))
    np.testing.assert_allclose(acc, norm.cdf(0.5), rtol=1e-6)
    # covariance_scale multiplies the covariance: distance sqrt(12) / 2 for scale 4.
    acc = draw(TwoGaussians(covariance_scale=4.0))["bayes_acc"]
    np.testing.assert_allclose(acc, norm.cdf(np.sqrt(12) / 4), rtol=1e-6)


def test_bayes_accuracy_matches_monte_carlo_plain(plain):
    p, se = linear_rule_accuracy(plain["x_eval"], plain["y_eval"], np.ones(12))
    assert abs(p - plain["bayes_acc"]) < 3 * se


def test_bayes_accuracy_matches_monte_carlo_faithful(faithful):
    # Independent of the generator's factor: Sigma is the pooled within-class
    # covariance of the sample, the rule is sign(x . Sigma^-1 gaps).
    x, y = faithful["x_eval"].astype(np.float64), faithful["y_eval"]
    *_, pooled, _, _ = class_moments(x, y)
    w = np.linalg.solve(pooled, 1 / np.arange(1, 13))
    p, se = linear_rule_accuracy(x, y, w)
    assert abs(p - faithful["bayes_acc"]) < 3 * se
    assert faithful["bayes_acc"] < 0.9  # the seed gives an informative check, not a separable draw


def test_faithful_gaps_are_harmonic(faithful):
    np.testing.assert_allclose(TwoGaussians(harmonic_gaps=True).gaps(), [1 / (i + 1) for i in range(12)], rtol=1e-6)
    np.testing.assert_allclose(TwoGaussians(gap=2.0, harmonic_gaps=True, dim=3).gaps(), [2, 1, 2 / 3], rtol=1e-6)
    m0, m1, c0, c1, _, n0, n1 = class_moments(faithful["x_eval"].astype(np.float64), faithful["y_eval"])
    se = np.sqrt(np.diag(c0) / n0 + np.diag(c1) / n1)
    np.testing.assert_array_less(np.abs(m1 - m0 - 1 / np.arange(1, 13)), 5 * se)


def test_faithful_covariance_shared_and_redrawn(faithful):
    _, _, c0, c1, pooled, _, _ = class_moments(faithful["x_eval"].astype(np.float64), faithful["y_eval"])
    rel = lambda a, b: np.linalg.norm(a - b) / np.linalg.norm(b)
    assert rel(c0, c1) < 0.02
    assert rel(pooled, np.eye(12)) > 1
    # C^T C with C uniform on [0, 1): E[entry] = 12/3 on the diagonal, 12/4 off it.
    assert 2 < np.diag(pooled).mean() < 6 and 1.5 < pooled[~np.eye(12, dtype=bool)].mean() < 4.5
    other = draw(FAITHFUL, seed=2)
    *_, pooled_other, _, _ = class_moments(other["x_eval"].astype(np.float64), other["y_eval"])
    assert rel(pooled_other, pooled) > 0.1
    assert other["bayes_acc"] != faithful["bayes_acc"]


def test_same_key_same_data_different_key_different_data():
    task = TwoGaussians(harmonic_gaps=True, random_covariance=True)
    a, b, c = draw(task, 7), draw(task, 7), draw(task, 8)
    for name in a:
        np.testing.assert_array_equal(a[name], b[name])
    for name in ("x_train", "x_test", "x_eval"):
        assert not np.allclose(a[name], c[name])
    assert not np.array_equal(a["y_train"], c["y_train"])


@pytest.mark.parametrize("task", [TwoGaussians(n_val=7), Mixture(target=True, n_train=20, n_eval=30, n_val=5)])
def test_the_validation_sample_is_its_own_draw_and_leaves_the_others_unchanged(task):
    """Choices are made on the validation sample and verdicts read the eval
    sample: they share no point, and drawing a larger validation sample
    changes no other sample."""
    key = jax.random.key(3)
    small, large = sample(task, key, 0.5), sample(dataclasses.replace(task, n_val=3 * task.n_val), key, 0.5)
    for name in ("x_train", "x_test", "x_eval", "y_eval"):
        np.testing.assert_array_equal(small[name], large[name])
    assert len(small["x_val"]) == task.n_val * (task.classes if isinstance(task, Mixture) else 1)
    val = np.asarray(small["x_val"])
    for name in ("x_train", "x_test", "x_eval"):
        others = np.asarray(small[name])
        assert not (np.abs(val[:, None] - others[None]).max(-1) < 1e-6).any(), name
