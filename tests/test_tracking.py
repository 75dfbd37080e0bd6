"""Weight tracking, regularizers and CKA (Q2, Q3)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from conftest import sample
from study import config, loop, measures, network
from study.data import TwoGaussians
from study.grid import train_grid

TASK = TwoGaussians(n_train=128, n_test=50, n_eval=300)
TRACKING = config.Tracking(weights=5, every=2, probe=40)
VALUES = {"seed": 3, "data_seed": 4, "init": 0, "activation": 0, "lr": 0.05, "strength": 0.0}
# Tests share these programs (one compile each): proximal L1, the L1 penalty, dropout.
SHARED = dict(task=TASK, hidden=(6, 5), optimizer="sgd", epochs=6, evals=1, tracking=TRACKING)


def grid(setup, runs):
    """Train `runs` (a list of value dicts) of `setup` in one program."""
    values = {k: [run[k] for run in runs] for k in runs[0]}
    return train_grid(setup, values)[0]


def plain_loop_kernels(setup, values):
    """The same training written as a plain Python loop over jitted steps,
    reading the weight matrices after every epoch."""
    data = sample(setup.task, jax.random.fold_in(jax.random.key(values["data_seed"]), config.DATA_STREAM))
    seed_key = jax.random.key(values["seed"])
    graphdef, params = nnx.split(network.build_model(setup, values, jax.random.fold_in(seed_key, config.INIT_STREAM)))
    tx = network.optimizer(setup, values["lr"], values["strength"], params)

    def loss(params, x, y, key):
        logits = nnx.merge(graphdef, params)(x)
        return network.loss_fn(setup, logits, y) + network.penalty(setup, params, values["strength"])

    step, state = jax.jit(network.make_step(loss, tx)), tx.init(params)
    history = [network.kernels(params)]
    for epoch in range(setup.epochs):
        order = jax.random.permutation(jax.random.fold_in(jax.random.fold_in(seed_key, config.SHUFFLE_STREAM), epoch),
                                       setup.task.n_train)
        for idx in order[: setup.batches_per_epoch * setup.batch_size].reshape(setup.batches_per_epoch, -1):
            params, state, _ = step(params, state, data["x_train"][idx], data["y_train"][idx], None)
        history.append(network.kernels(params))
    return [np.stack([np.asarray(h[layer]) for h in history]) for layer in range(len(history[0]))]


@pytest.mark.parametrize("regularizer", ["l1", "l1_prox"])
def test_recorded_measures_equal_a_plain_loop(regularizer):
    setup = config.Setup(regularizer=regularizer, **SHARED)
    values = {**VALUES, "strength": 0.01}
    out = grid(setup, [values])
    paths = plain_loop_kernels(setup, values)  # per layer: (epochs + 1, fan_in, fan_out)
    layers, sampled = out["layers"], out["weights"][0]  # sampled: (records, layers, weights)
    for layer, (path, idx) in enumerate(zip(paths, measures.tracked_indices(setup))):
        flat = path.reshape(len(path), -1)
        np.testing.assert_allclose(sampled[:, layer], flat[::TRACKING.every, idx], rtol=1e-5, atol=1e-7)
        expected = {
            "w_norm": np.linalg.norm(flat[1:], axis=1),
            "mean_abs_w": np.abs(flat[1:]).mean(1),
            "step_change": np.linalg.norm(np.diff(flat, axis=0), axis=1),
            "dist_init": np.linalg.norm(flat[1:] - flat[0], axis=1),
            "dist_final": np.linalg.norm(flat[1:] - flat[-1], axis=1),
            "tracked_abs_change": np.abs(np.diff(flat[:, idx], axis=0)).mean(1),
            "zero_frac": (flat[1:] == 0).mean(1),
            "rel_small_frac": (np.abs(flat[1:]) < 0.05 * np.abs(flat[1:]).mean(1, keepdims=True)).mean(1),
            "max_unit_norm": np.linalg.norm(path[1:], axis=1).max(-1),
        }
        for name, want in expected.items():
            np.testing.assert_allclose(layers[name][0, :, layer], want, rtol=1e-4, atol=1e-6, err_msg=name)
    assert layers["cka_final"].shape == (1, 6, 3)
    assert np.isnan(layers["cka_final"][0, ::TRACKING.every]).all()  # probed at epochs 2, 4, 6 only
    np.testing.assert_allclose(layers["cka_final"][0, -1], 1.0, rtol=1e-5)  # the end against itself
    assert layers["reset_acc"].shape == (1, 3)


def test_cka_is_probed_at_every_record_or_at_the_given_epochs():
    assert config.Tracking(every=2).probe_epochs(6).tolist() == [1, 3, 5]  # indices into the per-epoch history
    assert config.Tracking(every=2, probe_at=(1, 2, 6)).probe_epochs(6).tolist() == [0, 1, 5]
    log = config.log_epochs(100, 50)
    assert log[:10] == tuple(range(1, 11)) and log[-1] == 100 and len(log) <= 50
    assert np.all(np.diff(log) > 0)
    with pytest.raises(ValueError, match="probe_at must be epochs 1..6"):
        config.Setup(task=TASK, epochs=6, evals=1, tracking=config.Tracking(probe_at=(2, 7)))


def test_tracked_indices_are_fixed_or_the_last_entries():
    setup = config.Setup(task=TASK, hidden=(6, 5), tracking=TRACKING)
    first, again = measures.tracked_indices(setup), measures.tracked_indices(setup)
    assert all(np.array_equal(a, b) and len(np.unique(a)) == 5 for a, b in zip(first, again))
    from_end = config.Setup(task=TASK, hidden=(6, 5), tracking=config.Tracking(weights=5, from_end=True))
    last = measures.tracked_indices(from_end)
    np.testing.assert_array_equal(last[0], np.arange(12 * 6 - 5, 12 * 6))


def test_proximal_l1_makes_exact_zeros_where_the_penalty_does_not():
    runs = [{**VALUES, "strength": 0.1}]
    zeros = {kind: grid(config.Setup(regularizer=kind, **SHARED), runs)["layers"]["zero_frac"][0, -1]
             for kind in ("l1", "l1_prox")}  # per layer, last epoch
    assert np.all(zeros["l1"] == 0)
    assert np.all(zeros["l1_prox"][:2] > 0.05)


def test_max_norm_bounds_every_unit_after_every_step():
    setup = config.Setup(task=TASK, hidden=(6,), regularizer="maxnorm")
    values = {**VALUES, "lr": 0.5, "strength": 0.3}
    graphdef, params = nnx.split(network.build_model(setup, values, jax.random.key(0)))
    tx = network.optimizer(setup, values["lr"], values["strength"], params)
    data = sample(TASK, jax.random.key(1))

    def loss(params, x, y):
        return network.loss_fn(setup, nnx.merge(graphdef, params)(x), y)

    step, state = jax.jit(network.make_step(loss, tx)), tx.init(params)
    for _ in range(20):
        params, state, _ = step(params, state, data["x_train"], data["y_train"])
        norms = [np.linalg.norm(np.asarray(w), axis=0) for w in network.kernels(params)]
        assert max(n.max() for n in norms) <= 0.3 * (1 + 1e-6)
    assert min(n.max() for n in norms) > 0.29  # the bound binds, so the test can fail
    assert not np.allclose(params["layers"][0]["bias"][...], 0)  # biases are not projected


def test_dropout_is_identity_at_rate_zero_and_off_at_evaluation():
    setup = config.Setup(task=TASK, hidden=(50,))
    model = network.build_model(setup, VALUES, jax.random.key(0))
    x = sample(TASK, jax.random.key(1))["x_eval"]
    key = jax.random.key(2)
    np.testing.assert_array_equal(model(x), model(x, network.dropout(key, 0.0, 0.0)))
    dropped = model.outputs(x, network.dropout(key, 0.0, 0.5))[0]  # hidden output before the dropped layer
    np.testing.assert_array_equal(dropped, model.outputs(x)[0])
    assert not np.allclose(model(x, network.dropout(key, 0.2, 0.5)), model(x))
    # The dropout program at rate 0 trains and scores exactly as the L1
    # program at strength 0, which adds exactly nothing.
    none = grid(config.Setup(regularizer="l1", **SHARED), [VALUES])
    at_zero = grid(config.Setup(regularizer="dropout", input_dropout=0.0, **SHARED), [VALUES])
    for name in ("train_loss", "test_acc", "eval_acc"):
        np.testing.assert_array_equal(none["epochs"][name], at_zero["epochs"][name], err_msg=name)
    np.testing.assert_array_equal(none["weights"], at_zero["weights"])


def test_linear_cka_by_hand_and_its_invariances():
    x = jnp.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]])
    y = jnp.array([[1.0], [1.0], [-1.0], [-1.0]])
    # Centered already: X^T Y = [2, 2]; ||X^T X|| = ||2 I|| = 2 sqrt 2; ||Y^T Y|| = 4.
    np.testing.assert_allclose(measures.linear_cka(x, y), 8 / (2 * np.sqrt(2) * 4), rtol=1e-6)
    rng = np.random.default_rng(0)
    a = jnp.asarray(rng.normal(size=(64, 10)), jnp.float32)
    b = jnp.asarray(rng.normal(size=(64, 7)), jnp.float32)
    q, _ = np.linalg.qr(rng.normal(size=(10, 10)))
    base = measures.linear_cka(a, b)
    np.testing.assert_allclose(measures.linear_cka(a @ jnp.asarray(q, jnp.float32), b), base, rtol=1e-4)
    np.testing.assert_allclose(measures.linear_cka(3.7 * a, b), base, rtol=1e-5)
    np.testing.assert_allclose(measures.linear_cka(a, a), 1.0, rtol=1e-5)
    assert 0 < base < 0.5


def test_penalty_forms():
    setup = config.Setup(task=TASK, hidden=(6,), regularizer="l1")
    params = nnx.split(network.build_model(setup, VALUES, jax.random.key(0)))[1]
    w = network.kernels(params)
    np.testing.assert_allclose(network.penalty(setup, params, 2.0), 2 * sum(np.abs(k).sum() for k in w), rtol=1e-5)
    mean_l2 = config.Setup(task=TASK, hidden=(6,), regularizer="l2", penalty_mean=True)
    np.testing.assert_allclose(network.penalty(mean_l2, params, 2.0), 2 * sum((np.asarray(k) ** 2).mean() for k in w),
                               rtol=1e-5)
    assert network.penalty(config.Setup(task=TASK, hidden=(6,), regularizer="dropout"), params, 2.0) == 0
    with pytest.raises(ValueError, match="unknown regularizer 'l3'"):
        config.Setup(regularizer="l3")


def test_reset_accuracy_is_the_accuracy_with_that_layer_back_at_its_start():
    """By hand, from the kept final weights and the run's initial ones: the
    large-sample accuracy with one weight matrix and bias put back."""
    setup = config.Setup(keep_params=True, **SHARED)
    out = grid(setup, [VALUES])
    run = loop.start_run(setup.start, {**dict.fromkeys(config.OPTIONAL, 0), **VALUES})
    initial = network.flat_params(run.initial)
    final = [np.asarray(p[0]) for p in out["params"]]
    x, y = np.asarray(run.data["x_eval"]), np.asarray(run.data["y_eval"])

    def accuracy(weights):
        h = x
        for i in range(0, len(weights), 2):
            h = h @ weights[i] + weights[i + 1]
            h = np.maximum(h, 0) if i < len(weights) - 2 else h
        return np.mean(np.argmax(h, -1) == y)

    for layer in range(3):
        mixed = [np.asarray(initial[j]) if j // 2 == layer else final[j] for j in range(len(final))]
        assert out["layers"]["reset_acc"][0, layer] == pytest.approx(accuracy(mixed), abs=1 / len(y) + 1e-6)
    assert out["layers"]["reset_acc"][0, 0] < accuracy(final)  # resetting the first layer costs accuracy


def test_dropout_with_max_norm_bounds_every_unit_and_drops_out():
    """The dropout paper's max-norm (dropout_maxnorm): the bound holds and
    binds while dropout is on; with both dropout rates at 0 and a bound never
    reached it trains exactly as no regularizer, so it adds nothing else."""
    bounded = grid(config.Setup(regularizer="dropout_maxnorm", **SHARED), [{**VALUES, "strength": 0.3}])
    norms = bounded["layers"]["max_unit_norm"][0]  # (epochs, layers)
    assert norms.max() <= 0.3 * (1 + 1e-6) and norms[-1].min() > 0.29
    alone = grid(config.Setup(regularizer="maxnorm", **SHARED), [{**VALUES, "strength": 0.3}])
    assert not np.allclose(bounded["weights"], alone["weights"])  # the same bound, with dropout
    loose = config.Setup(regularizer="dropout_maxnorm", input_dropout=0.0, hidden_dropout=0.0, **SHARED)
    none = grid(config.Setup(regularizer="l1", **SHARED), [VALUES])
    np.testing.assert_array_equal(grid(loose, [{**VALUES, "strength": 1e6}])["weights"], none["weights"])
