"""The training engine: the S-step, batched and sharded grids, determinism,
and metrics that score the data they name."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from conftest import sample
from study import config, measures, network
from study.data import TwoGaussians
from study.grid import train_grid

# One small setup shared by the tests, so its programs compile once per shape.
SETUP = config.Setup(task=TwoGaussians(n_eval=500, n_val=250), hidden=(8,), loss="mse", optimizer="sgd",
                    schemes=("glorot_uniform", "zeros", "normal_10"), activations=("relu", "sigmoid"),
                    epochs=6, evals=3, batch_size=64,
                    scored=("eval_acc", "val_acc", "train_acc", "distinct_units", "initial_grad_norm"))
# seed, data_seed, init, activation, lr: a plain run, a constant-0 sigmoid run,
# a run diverging under a huge learning rate, another seed.
GRID = {"seed": [0, 0, 1, 2], "data_seed": [0, 0, 1, 2], "init": [0, 1, 2, 0],
        "activation": [0, 1, 0, 1], "lr": [0.1, 0.1, 1e8, 0.1], "strength": [0, 0, 0, 0]}


@pytest.fixture(scope="module")
def grid():
    return train_grid(SETUP, GRID)[0]["epochs"]


def test_hand_written_sgd_step_matches_optax_sgd():
    """S-step: w - lr * g, written by hand, gives the weights optax.sgd gives
    (to float32 rounding: XLA may fuse the two forms differently)."""
    params = {"w": jnp.array([[0.5, -1.0], [2.0, 0.25]]), "b": jnp.array([0.1, -0.2])}
    x, y = jnp.array([[1.0, 2.0], [-1.0, 0.5], [0.3, 0.3]]), jnp.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])

    def loss(p, x, y):
        return jnp.mean((jnp.tanh(x @ p["w"] + p["b"]) - y) ** 2)

    lr, tx = 0.3, optax.sgd(0.3)
    step = jax.jit(network.make_step(loss, tx))
    by_optax, state, by_hand = params, tx.init(params), params
    for _ in range(3):
        by_optax, state, _ = step(by_optax, state, x, y)
        grads = jax.grad(loss)(by_hand, x, y)
        by_hand = jax.tree.map(lambda w, g: w - lr * g, by_hand, grads)
    for name in params:
        np.testing.assert_allclose(by_optax[name], by_hand[name], rtol=1e-6, atol=1e-7)
        assert not np.array_equal(by_optax[name], params[name])


def test_metrics_shapes_and_eval_stride(grid):
    assert grid["train_loss"].shape == (4, 6) and grid["bayes_acc"].shape == (4,)
    scored = ~np.isnan(grid["eval_acc"][0])
    np.testing.assert_array_equal(scored, [False, True, False, True, False, True])
    assert np.all(np.isfinite(grid["test_acc"][[0, 1, 3]]))
    np.testing.assert_allclose(grid["bayes_acc"], 0.9584, atol=1e-4)


def test_divergence_is_recorded_not_raised(grid):
    assert grid["diverged"][2, -1] and not np.isfinite(grid["train_loss"][2, -1])
    assert not grid["diverged"][[0, 1, 3]].any()
    assert grid["train_acc"][0, -1] > 0.85  # the plain run learns


def test_constant_init_keeps_one_distinct_unit(grid):
    scored = ~np.isnan(grid["distinct_h1"][0])
    np.testing.assert_array_equal(grid["distinct_h1"][1, scored], 1)
    np.testing.assert_array_equal(grid["distinct_h1"][0, scored], 8)


def test_distinct_units_counts_by_hand():
    kernel = jnp.array([[1.0, 1.0, 2.0, 1.0], [0.0, 0.0, 0.0, 1e-9]])
    bias = jnp.array([0.5, 0.5, 0.5, 0.5])
    # units 0, 1 and 3 are equal within 1e-3 of the largest entry; unit 2 differs
    assert measures.distinct_units(kernel, bias) == 2
    assert measures.distinct_units(kernel, jnp.array([0.5, 0.6, 0.5, 0.7])) == 4


def test_run_in_grid_equals_run_alone(grid):
    alone = train_grid(SETUP, {k: v[3:] for k, v in GRID.items()}, devices=jax.devices()[:1])[0]["epochs"]
    for name, values in grid.items():
        np.testing.assert_array_equal(values[3], alone[name][0], err_msg=name)


def test_two_devices_equal_one(grid):
    assert len(jax.devices()) == 2
    single = train_grid(SETUP, GRID, devices=jax.devices()[:1])[0]["epochs"]
    for name, values in grid.items():
        np.testing.assert_array_equal(values, single[name], err_msg=name)


def test_rerun_is_bit_identical(grid):
    again = train_grid(SETUP, GRID)[0]["epochs"]
    for name, values in grid.items():
        np.testing.assert_array_equal(values, again[name], err_msg=name)


def test_setup_rejects_bad_values():
    with pytest.raises(ValueError, match="multiple of evals"):
        config.Setup(epochs=7, evals=5)
    with pytest.raises(ValueError, match="choose from relu, tanh, sigmoid"):
        config.Setup(activations=("gelu",))
    with pytest.raises(ValueError, match="unknown initialization 'xavier'"):
        config.Setup(schemes=("xavier",))


def test_vmapped_runs_equal_runs_one_at_a_time(grid):
    """`batch_runs` trains runs together (vmap) after starting each alone:
    the same numbers to float32 rounding, the diverged run included."""
    batched = train_grid(SETUP, GRID, batch_runs=2)[0]["epochs"]
    for name, values in grid.items():
        np.testing.assert_allclose(batched[name], values, rtol=1e-4, atol=1e-5, err_msg=name)



def test_accuracies_score_the_samples_they_name():
    """From the kept final weights, by hand: `test_acc` is the accuracy on
    the 100-point split, `eval_acc` on the large sample, `val_acc` on the
    validation sample and `train_acc` on the training points (each to one
    point of its sample: float rounding may flip a near-tie)."""
    out = train_grid(dataclasses.replace(SETUP, keep_params=True), GRID)[0]
    run = 0  # ReLU, trained
    data = sample(SETUP.task, jax.random.fold_in(jax.random.key(GRID["data_seed"][run]), config.DATA_STREAM))
    w0, b0, w1, b1 = (np.asarray(p[run]) for p in out["params"])

    def accuracy(split):
        hidden = np.maximum(np.asarray(data[f"x_{split}"]) @ w0 + b0, 0)
        return np.mean(np.argmax(hidden @ w1 + b1, -1) == np.asarray(data[f"y_{split}"]))

    by_hand = {split: accuracy(split) for split in ("train", "test", "eval", "val")}
    assert min(abs(by_hand[a] - by_hand[b]) for a, b in [("test", "eval"), ("eval", "val"), ("test", "val")]) > 0.01
    for split, n in [("train", 400), ("test", 100), ("eval", 500), ("val", 250)]:
        assert out["epochs"][f"{split}_acc"][run, -1] == pytest.approx(by_hand[split], abs=1 / n + 1e-6), split


def test_initial_gradient_norms_show_where_a_constant_start_blocks_the_signal(grid):
    """Zero weights with sigmoid units: the output layer gets a gradient (the
    hidden units output 0.5), the hidden layer none (the zero output weights
    pass no error back); a Xavier start gives both."""
    assert grid["grad_norm_l0"][1] == 0 and grid["grad_norm_l1"][1] > 0
    assert grid["grad_norm_l0"][0] > 0 and grid["grad_norm_l1"][0] > 0


def test_best_epoch_is_the_first_best_validated_scored_epoch(grid):
    """Early stopping decided on validation: `best_epoch` is the first scored
    epoch with the highest `val_acc` (a tie keeps the earlier one, as the
    diverged run's constant accuracy shows), and `best_eval_acc` is the
    large-sample accuracy scored at that epoch."""
    for run in range(4):
        val = grid["val_acc"][run]
        scored = np.flatnonzero(~np.isnan(val))
        epoch = scored[np.argmax(val[scored])] + 1
        assert grid["best_epoch"][run] == epoch
        assert grid["best_eval_acc"][run] == grid["eval_acc"][run, epoch - 1]
    assert grid["best_epoch"][2] == 2 and len(set(grid["val_acc"][2, 1::2])) == 1


@pytest.mark.parametrize("decay, constant", [(1.0, 0), (0.5, 4)])
def test_a_decaying_rate_is_constant_then_follows_a_cosine_to_zero(decay, constant):
    """With `decay`, the rate is held for the phase's first steps, then step
    t of the n decaying ones moves by lr * (1 + cos(pi t / n)) / 2 times the
    gradient (plain SGD here)."""
    setup = dataclasses.replace(SETUP, decay=decay)
    params = {"w": jnp.zeros(1)}
    tx = network.optimizer(setup, 0.5, 0.0, params, steps=8)
    state, moves = tx.init(params), []
    for _ in range(8):
        updates, state = tx.update({"w": jnp.ones(1)}, state, params)
        moves.append(-float(updates["w"][0]))
    n = 8 - constant
    expected = [0.5] * constant + [0.5 * (1 + np.cos(np.pi * t / n)) / 2 for t in range(n)]
    np.testing.assert_allclose(moves, expected, rtol=1e-5)


def test_a_final_only_large_sample_score_equals_the_strided_ones_last(grid):
    """`final_eval` scores the large sample and the distinct units once,
    after the last epoch: the same numbers the strided scoring gives there,
    NaN before."""
    final = train_grid(dataclasses.replace(SETUP, final_eval=True), GRID)[0]["epochs"]
    for name in ("eval_acc", "distinct_h1"):
        assert np.isnan(final[name][:, :-1]).all()
        np.testing.assert_array_equal(final[name][:, -1], grid[name][:, -1])
    np.testing.assert_array_equal(final["best_eval_acc"], grid["best_eval_acc"])
