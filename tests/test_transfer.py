"""Q4's engine parts: the mixture tasks and their similarity knob, frozen
layers (bit-identical, no optimizer state, no backward pass), the staged
recipe's phases and pretrained bodies entering the compiled grid."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest
import scipy.optimize
from flax import nnx

from conftest import sample
from experiments.transfer import analysis
from study import config, loop, network
from study.data import Mixture, mixture_centres
from study.grid import train_grid

SOURCE = Mixture(classes=4, clusters=3, n_train=20, n_test=10, n_eval=50)
TARGET = Mixture(classes=3, clusters=4, target=True, n_train=20, n_test=10, n_eval=50)
HIDDEN = (6, 5)
VALUES = {"init": 0, "activation": 0, "lr": 0.1, "strength": 0.0}


def test_mixture_labels_cycle_so_every_prefix_is_balanced():
    data = sample(TARGET, jax.random.key(0), 0.5)
    y = np.asarray(data["y_train"])
    assert data["x_train"].shape == (20 * 3, 12) and data["x_eval"].shape == (50 * 3, 12)
    for n in (1, 4, 20):
        assert np.bincount(y[: n * 3], minlength=3).tolist() == [n] * 3
    assert 0.0 < float(data["bayes_acc"]) <= 1.0


def test_similarity_one_regroups_the_source_clusters():
    key = jax.random.key(3)
    source = np.asarray(mixture_centres(SOURCE, key, 1.0)).reshape(-1, 12)
    target = np.asarray(mixture_centres(TARGET, key, 1.0)).reshape(-1, 12)
    np.testing.assert_allclose(np.sort(target, axis=0), np.sort(source, axis=0), atol=1e-5)
    grouped = {tuple(np.round(c, 4)) for c in np.asarray(mixture_centres(SOURCE, key, 1.0))[0]}
    assert not any(grouped == {tuple(np.round(c, 4)) for c in group}
                   for group in np.asarray(mixture_centres(TARGET, key, 1.0)))  # classes are new unions


def best_cosine(a, b) -> float:
    """Mean over geometries and over a's centres of the largest |cosine| to any of b's."""
    cos = jnp.einsum("gsd,gtd->gst", a, b) / (
        jnp.linalg.norm(a, axis=-1)[..., None] * jnp.linalg.norm(b, axis=-1)[:, None])
    return float(jnp.mean(jnp.max(jnp.abs(cos), axis=-1)))


def test_similarity_zero_is_unrelated_to_the_source_geometry():
    """Over 400 geometries: at s = 0 a target's centres are no closer to its
    own source's than to another geometry's source; closeness grows with s
    up to the same points at s = 1."""
    keys = jax.random.split(jax.random.key(0), 400)

    def centres(task, s):
        return jax.vmap(lambda k: mixture_centres(task, k, s))(keys).reshape(400, -1, 12)

    source = centres(SOURCE, 0.0)
    same = {s: best_cosine(source, centres(TARGET, s)) for s in (0.0, 0.5, 1.0)}
    unrelated = best_cosine(source, jnp.roll(centres(TARGET, 0.0), 1, axis=0))
    assert abs(same[0.0] - unrelated) < 0.02
    assert same[0.0] < same[0.5] < same[1.0]
    np.testing.assert_allclose(same[1.0], 1.0, atol=1e-5)


def small_setup(**kwargs):
    return config.Setup(task=TARGET, hidden=HIDDEN, n_out=3, epochs=2, evals=2, batch_size=8, steps_per_epoch=3,
                       **kwargs)


def model_params(setup):
    return nnx.split(network.build_model(setup, VALUES, jax.random.key(0)))


def test_frozen_layers_have_no_optimizer_state_and_no_backward_pass():
    setup = small_setup()
    graphdef, params = model_params(setup)
    x = jax.random.normal(jax.random.key(1), (8, 12))
    y = jnp.arange(8) % 3

    def loss(p, x, y):
        return network.loss_fn(setup, nnx.merge(graphdef, p)(x), y)

    flops = []
    for k in (1, 2, 3):
        step, tx = network.frozen_step(setup, VALUES["lr"], VALUES["strength"], params, loss, k)
        state = tx.init(params)
        moments = [leaf.shape for leaf in jax.tree.leaves(state) if jnp.ndim(leaf) > 0]
        trained = [leaf.shape for leaf in network.flat_params(params)[2 * (3 - k):]]
        assert sorted(moments) == sorted(trained * 2)  # Adam's mu and nu, for the trained leaves only
        new, _, _ = step(params, state, x, y)
        for j, (before, after) in enumerate(zip(network.flat_params(params), network.flat_params(new))):
            assert np.array_equal(before, after) == (j < 2 * (3 - k)), (k, j)
        flops.append(jax.jit(step).lower(params, state, x, y).compile().cost_analysis()["flops"])
    assert flops[0] < flops[1] < flops[2]  # every frozen layer takes work out of the step
    step, tx = network.frozen_step(setup, 0.0, VALUES["strength"], params, loss, 2, head_lr=0.1)
    new = network.flat_params(step(params, tx.init(params), x, y)[0])
    changed = [not np.array_equal(a, b) for a, b in zip(network.flat_params(params), new)]
    assert changed == [False, False, False, False, True, True]  # only the head has a rate above 0


@pytest.fixture(scope="module")
def staged():
    """Two runs of the staged recipe from random 'pretrained' bodies: the
    head alone for an epoch, then the top 2 layers at the run's rate."""
    setup = small_setup(pretrained=True, trainable=2, own_head_lr=True, head_first=1, keep_params=True)
    rng = np.random.default_rng(0)
    shapes = [(12, 6), (6,), (6, 5), (5,)]
    pretrained = tuple(rng.normal(size=(2, *s)).astype(np.float32) for s in shapes)
    values = {"seed": [0, 1], "data_seed": [0, 1], "init": [0, 0], "activation": [0, 0], "lr": [0.0, 0.1],
              "head_lr": [0.1, 0.1], "n_target": [2, 20], "similarity": [1.0, 0.0]}
    return pretrained, train_grid(setup, values, pretrained=pretrained)[0]


def test_pretrained_bodies_enter_the_grid_and_frozen_layers_stay_bit_identical(staged):
    pretrained, out = staged
    for run in (0, 1):
        np.testing.assert_array_equal(out["params"][0][run], pretrained[0][run])  # never trained
        np.testing.assert_array_equal(out["params"][1][run], pretrained[1][run])
    np.testing.assert_array_equal(out["params"][2][0], pretrained[2][0])  # rate 0 after the head-only phase
    assert not np.allclose(out["params"][2][1], pretrained[2][1])  # trained in the second phase
    assert np.isfinite(out["epochs"]["train_loss"]).all() and np.isfinite(out["epochs"]["eval_acc"][:, -1]).all()


def test_setup_rejects_impossible_transfer_settings():
    with pytest.raises(ValueError, match="trainable must be 1..3"):
        small_setup(trainable=4)
    with pytest.raises(ValueError, match="head_first"):
        small_setup(head_first=2, own_head_lr=True)
    with pytest.raises(ValueError, match="own_head_lr"):
        small_setup(head_first=1)
    with pytest.raises(ValueError, match="steps_per_epoch"):
        config.Setup(task=TARGET, hidden=HIDDEN)
    with pytest.raises(ValueError, match="pass pretrained weights"):
        train_grid(small_setup(pretrained=True), {"seed": [0], "data_seed": [0], "init": [0],
                                                        "activation": [0], "lr": [0.1]})


def test_frozen_features_computed_once_train_the_same_head(staged):
    """A head on a frozen body trains on the body's outputs, computed once
    per phase; with the shortcut off (dropout at rate 0 needs the full
    forward pass at every step) the run ends with the same head."""
    pretrained, _ = staged
    shortcut = small_setup(pretrained=True, trainable=1, keep_params=True)
    full = dataclasses.replace(shortcut, regularizer="dropout", input_dropout=0.0)
    values = {"seed": [0, 1], "data_seed": [0, 1], "init": [0, 0], "activation": [0, 0], "lr": [0.1, 0.1],
              "strength": [0.0, 0.0], "n_target": [2, 20], "similarity": [1.0, 0.0]}
    fast, slow = (train_grid(s, values, pretrained=pretrained)[0] for s in (shortcut, full))
    run = loop.start_run(shortcut.start, {k: v[0] for k, v in values.items()}, pretrained)
    assert [loop.frozen_view(shortcut, run, run.initial, k).start for k in (1, 2, None)] == [2, 1, 0]
    assert loop.frozen_view(full, run, run.initial, 1).start == 0
    for a, b in zip(fast["params"], slow["params"]):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(fast["epochs"]["train_loss"], slow["epochs"]["train_loss"], rtol=1e-5)
    assert (fast["epochs"]["train_loss"][:, -1] < fast["epochs"]["train_loss"][:, 0]).all()  # the head learns


@pytest.mark.parametrize("regularizer", config.REGULARIZERS)
def test_frozen_layers_stay_bit_identical_under_every_regularizer(regularizer):
    """What keeps a layer frozen is its label: no optimizer state and a zero
    update, and neither a penalty's gradient nor a proximal or max-norm
    projection (bound 0.1 here, far below the weights' norms) reaches it."""
    setup = small_setup(regularizer=regularizer)
    graphdef, params = model_params(setup)
    values = {**VALUES, "strength": 0.1}

    def loss(p, x, y):
        return network.loss_fn(setup, nnx.merge(graphdef, p)(x), y) + network.penalty(setup, p, values["strength"])

    step, tx = network.frozen_step(setup, values["lr"], values["strength"], params, loss, 1)
    x, y = jax.random.normal(jax.random.key(1), (8, 12)), jnp.arange(8) % 3
    new = network.flat_params(step(params, tx.init(params), x, y)[0])
    unchanged = [np.array_equal(a, b) for a, b in zip(network.flat_params(params), new)]
    assert unchanged == [True, True, True, True, False, False]


def test_minibatches_come_from_the_runs_training_prefix_only():
    """A run with n examples per class draws its minibatches from the first
    n * classes training points, afresh every epoch."""
    setup = small_setup()
    values = {**VALUES, "seed": 0, "data_seed": 0, "n_target": 2, "similarity": 1.0}
    run = loop.start_run(setup.start, values)
    first, second = (np.asarray(loop.batch_indices(setup, run, epoch)) for epoch in (0, 1))
    assert first.shape == (3, 8) and set(first.ravel()) | set(second.ravel()) <= set(range(2 * 3))
    assert not np.array_equal(first, second)


def test_the_linear_probe_is_the_converged_penalized_logistic_regression(staged):
    """`probe_acc` from the compiled program is the large-sample accuracy of
    the same L2-penalized logistic regression on the standardized frozen
    features, minimized by scipy's L-BFGS-B in float64 (to one point: a
    near-tie may flip)."""
    pretrained, _ = staged
    setup = small_setup(pretrained=True, trainable=1, scored=("probe_acc",))
    values = {"seed": [1], "data_seed": [1], "init": [0], "activation": [0], "lr": [0.0], "n_target": [12],
              "similarity": [0.5]}
    compiled = train_grid(setup, values, pretrained=pretrained)[0]["epochs"]["probe_acc"][0]
    run = loop.start_run(setup.start, {k: v[0] for k, v in values.items()}, pretrained)
    view = loop.frozen_view(setup, run, run.initial, 1)
    x = np.asarray(view.data["x_train"], np.float64)[:12 * 3]
    y = np.asarray(run.data["y_train"])[:12 * 3]
    mean, std = x.mean(0), x.std(0) + 1e-6
    z, onehot, d = (x - mean) / std, np.eye(3)[y], x.shape[1]

    def loss(w):
        kernel, bias = w[:-3].reshape(d, 3), w[-3:]
        logits = z @ kernel + bias
        logits -= logits.max(1, keepdims=True)
        p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
        value = -np.sum(np.log(p[np.arange(len(y)), y])) + 0.5 * np.sum(kernel**2)
        return value, np.concatenate([(z.T @ (p - onehot) + kernel).ravel(), (p - onehot).sum(0)])

    w = scipy.optimize.minimize(loss, np.zeros(3 * d + 3), jac=True, method="L-BFGS-B", tol=1e-10).x
    x_eval = (np.asarray(view.data["x_eval"], np.float64) - mean) / std
    accuracy = np.mean(np.argmax(x_eval @ w[:-3].reshape(d, 3) + w[-3:], -1) == np.asarray(run.data["y_eval"]))
    assert 0.4 < accuracy < 1.0  # a task the probe neither fails nor solves outright
    assert compiled == pytest.approx(accuracy, abs=1 / 150 + 1e-6)


def test_a_head_on_standardized_features_is_scored_on_the_features_it_was_trained_on(staged):
    """The large sample scored once after training (and at the best-validated
    epoch) goes through the same frozen, standardized features as the
    strided scores: the same accuracy as the strided score of the last epoch."""
    pretrained, _ = staged
    strided = small_setup(pretrained=True, trainable=1, standardize_features=True, scored=("eval_acc", "val_acc"))
    final = dataclasses.replace(strided, final_eval=True)
    values = {"seed": [0, 1], "data_seed": [0, 1], "init": [0, 0], "activation": [0, 0], "lr": [0.3, 0.3],
              "n_target": [2, 20], "similarity": [1.0, 0.0]}
    a, b = (train_grid(s, values, pretrained=pretrained)[0]["epochs"] for s in (strided, final))
    np.testing.assert_allclose(b["eval_acc"][:, -1], a["eval_acc"][:, -1], atol=1e-6)
    np.testing.assert_allclose(b["best_eval_acc"], a["best_eval_acc"], atol=1e-6)
    best = a["best_epoch"].astype(int) - 1
    np.testing.assert_allclose(a["best_eval_acc"], a["eval_acc"][np.arange(2), best], atol=1e-6)


# The analysis: who is compared with whom, on which seeds.


def cell_runs(tune: dict, evaluate: dict) -> pd.DataFrame:
    """One cell's per-run rows, arm -> per-seed values: the tuning seeds'
    (0, 1, ...) and the evaluation seeds' (10, 11, ...), each value as both
    validation and large-sample accuracy."""
    rows = [{"n_target": 4, "similarity": 1.0, "arm": arm, "seed": first + i, "role": role, "val_acc": v,
             "eval_acc": v}
            for role, table, first in (("tune", tune, 0), ("evaluate", evaluate, 10))
            for arm, values in table.items() for i, v in enumerate(values)]
    return pd.DataFrame(rows)


def test_the_best_other_is_chosen_on_the_tuning_seeds_and_tested_on_the_evaluation_seeds():
    runs = cell_runs({"scratch": [0.5, 0.5], "feature_extraction": [0.9, 0.9], "finetune_all": [0.1, 0.1]},
                     {"scratch": [0.5] * 3, "feature_extraction": [0.2] * 3, "finetune_all": [0.8] * 3})
    (label, diff), = analysis.versus(runs, "scratch", None, [(4, 1.0)]).items()
    assert label.endswith("(vs feature_extraction)") and diff.index.tolist() == [10, 11, 12]
    np.testing.assert_allclose(diff, 0.3)


def test_the_rival_set_holds_alternatives_only():
    """Never the arm's own runs under another name, its relabelled copy
    (wide_head for finetune_all) or a strategy at a rate validation did not
    choose (staged_small), though each scores best."""
    acc = {"scratch": [0.5] * 2, "reinit": [0.5] * 2, "staged": [0.4] * 2, "finetune_all": [0.45] * 2,
           "staged_small": [0.7] * 2, "wide_head": [0.6] * 2}
    table = analysis.by_seed(cell_runs(acc, acc), 4, 1.0)
    assert list(analysis.rivals(table, "scratch")) == ["scratch", "finetune_all", "staged", "wide_head"]
    assert list(analysis.rivals(table, "finetune_all")) == ["scratch", "reinit", "finetune_all", "staged"]
    assert list(analysis.rivals(table, "wide_head")) == ["scratch", "reinit", "staged", "wide_head"]
    (label, _), = analysis.versus(cell_runs(acc, acc), "finetune_all", None, [(4, 1.0)]).items()
    assert label.endswith("(vs scratch)")


def test_arms_that_are_the_same_runs_are_one_arm_on_the_phase_diagram():
    """reinit at scratch's rates is scratch: the first name in `ARMS` keeps
    the column, and the runner-up is a distinct arm; winner and runner-up
    come from the tuning seeds, the margin from the evaluation seeds."""
    runs = cell_runs({"reinit": [0.9, 0.8], "scratch": [0.9, 0.8], "feature_extraction": [0.5, 0.6]},
                     {"reinit": [0.6, 0.7, 0.8], "scratch": [0.6, 0.7, 0.8], "feature_extraction": [0.7, 0.7, 0.7]})
    table = analysis.by_seed(runs, 4, 1.0, "val_acc", "tune")
    assert list(analysis.one_arm_per_run(table)) == ["scratch", "feature_extraction"]
    (row,) = analysis.phase_diagram(runs).to_dict("records")
    assert (row["best"], row["runner_up"], row["n"]) == ("scratch", "feature_extraction", 3)
    assert row["margin"] == pytest.approx(0.0, abs=1e-12) and row["verdict"] == "inconclusive"


def rate_grid(means: dict[float, float], n: int) -> pd.DataFrame:
    """scratch's last-epoch rows in one cell: rate -> validation accuracy of
    two tuning seeds, the best rate selected."""
    best = max(means, key=means.get)
    return pd.DataFrame([{"n_target": n, "similarity": 1.0, "strategy": "scratch", "trainable_layers": 5, "lr": lr,
                          "head_lr": lr, "seed": seed, "role": "tune", "epoch": 10, "val_acc": acc,
                          "selected": lr == best} for lr, acc in means.items() for seed in (0, 1)])


def test_a_rate_on_the_grid_end_is_rising_when_it_beats_its_neighbour_by_more_than_the_tolerance():
    frame = pd.concat([rate_grid({1e-3: 0.80, 1e-2: 0.850, 1e-1: 0.853}, 4),  # 0.3 pt: the optimum may lie beyond
                       rate_grid({1e-3: 0.80, 1e-2: 0.850, 1e-1: 0.851}, 16),  # 0.1 pt: flat
                       rate_grid({1e-3: 0.80, 1e-2: 0.860, 1e-1: 0.851}, 64)])  # inside the grid
    edges = analysis.grid_edges(frame).set_index("n_target")
    assert edges["axis"].eq("lr").all() and analysis.TOLERANCE == 0.002
    assert edges["on_end"].tolist() == [True, True, False] and edges["rising"].tolist() == [True, False, False]


def test_a_rising_end_is_beyond_noise_only_when_its_gain_holds_across_the_tuning_seeds():
    steady = rate_grid({1e-3: 0.80, 1e-2: 0.850, 1e-1: 0.853}, 4)  # +0.3 pt on both seeds
    noisy = rate_grid({1e-3: 0.80, 1e-2: 0.850, 1e-1: 0.853}, 16)
    end = noisy["lr"] == 1e-1
    noisy.loc[end, "val_acc"] += np.where(noisy.loc[end, "seed"] == 0, 0.01, -0.01)  # +1.3 and -0.7 pt
    edges = analysis.grid_edges(pd.concat([steady, noisy])).set_index("n_target")
    assert edges["gain"].to_numpy() == pytest.approx([0.003, 0.003])
    assert edges["rising"].tolist() == [True, True] and edges["beyond_noise"].tolist() == [True, False]


def test_the_plateau_test_reads_the_evaluation_seeds_before_the_rate_decays_at_each_budget():
    """From 60% to 80% of each run's training (a size trained 4x as long
    has its own span); the tuning seeds' accuracies never enter."""
    rows = [{"n_target": n, "similarity": 1.0, "strategy": "scratch", "trainable_layers": 5, "lr": 1e-2,
             "head_lr": 1e-2, "seed": seed, "role": role, "selected": True, "epoch": epoch,
             "val_acc": (0.0 if role == "tune" else 0.5 + 0.01 * epoch / last + 0.001 * seed)}
            for n, last in [(4, 10), (1024, 40)] for seed, role in [(0, "tune"), (10, "evaluate"), (11, "evaluate")]
            for epoch in range(last // 5, last + 1, last // 5)]
    small, large = analysis.convergence(pd.DataFrame(rows)).sort_values("n_target").to_dict("records")
    assert (small["from_epoch"], small["to_epoch"], large["from_epoch"], large["to_epoch"]) == (6, 8, 24, 32)
    for row in (small, large):
        assert row["change"] == pytest.approx(0.002) and row["end"] == pytest.approx(0.5 + 0.008 + 0.0105)
