"""Each question's analysis functions on small frames whose answers are known by hand."""

import itertools

import numpy as np
import pandas as pd
import pytest

from experiments import initialization, layer_convergence, regularization
from study import stats
from study.results import Results


def test_convergence_epochs_by_hand():
    """Per group at once: the epoch from which a condition holds to the end
    (the last epoch if it fails there), and the first epoch where it holds
    (the first epoch if never); three groups of five epochs."""
    frame = pd.DataFrame({**{k: "x" for k in layer_convergence.CELL}, "seed": 0, "layer": np.repeat([0, 1, 2], 5),
                          "epoch": np.tile([1, 2, 3, 4, 5], 3)})
    groups = layer_convergence.Groups(frame)
    condition = np.array([True, False, True, True, True] + [True] * 5 + [True, True, True, True, False])
    assert groups.first_from(condition).tolist() == [3, 1, 5]
    assert groups.first_true(~condition).tolist() == [2, 1, 5]


def layer_rows(layer, moved, dist, cka):
    """One stated run's layer over 4 epochs: tracked change per epoch, distance
    to the final weights (initial distance 10), CKA to its final output."""
    return pd.DataFrame({"variant": "stated", "optimizer": "sgd", "activation": "relu", "seed": 0, "layer": layer,
                         "epoch": [1, 2, 3, 4], "tracked_abs_change": moved, "tracked_l2_change": np.nan,
                         "rel_change": moved, "dist_final": dist, "dist_init": [1.0, 2.0, 5.0, 10.0],
                         "cka_final": cka})


def test_convergence_and_its_rank_correlation_by_hand():
    """Layer 0 moves early and settles last; layer 1 moves late and settles first."""
    layers = pd.concat([layer_rows(0, [8.0, 1.0, 0.5, 0.5], [5.0, 3.0, 2.0, 0.0], [0.5, 0.8, 0.95, 1.0]),
                        layer_rows(1, [0.5, 0.5, 1.0, 8.0], [5.0, 0.5, 0.2, 0.0], [0.95, 0.99, 1.0, 1.0])])
    conv = layer_convergence.convergence(layers).set_index("layer")
    # 90% of the summed change: layer 0 by epoch 2 (9 of 10), layer 1 at epoch 4
    assert conv["tracked weights (source)"].tolist() == [2.0, 4.0]
    assert conv["distance to final"].tolist() == [4.0, 2.0]  # within 10% of the initial distance (1.0)
    assert conv["CKA to final"].tolist() == [3.0, 1.0]
    # the area between CKA and 1 over epochs 1-4, by the trapezoid rule, over the 3 epochs spanned
    np.testing.assert_allclose(conv["CKA gap area"], [(0.35 + 0.125 + 0.025) / 3, (0.03 + 0.005) / 3])
    rho = layer_convergence.order_statistic(conv.reset_index()).set_index("measure")["rho"]
    assert rho["tracked weights (source)"] == pytest.approx(1.0) and rho["CKA to final"] == pytest.approx(-1.0)
    half = layer_convergence.convergence(layers, budget=0.5).set_index("layer")  # epochs 1-2 only
    assert half["tracked weights (source)"].tolist() == [2.0, 2.0]
    assert layer_convergence.convergence(layers, moved=0.8)["tracked weights (source)"].tolist() == [1.0, 4.0]


def test_settled_check_is_the_share_of_convergence_epochs_in_the_budgets_last_quarter():
    """Budget 4 epochs: an epoch above 3 is in its last quarter; one of the
    cell's two (run, layer) epochs is, so the layers did not settle."""
    layers = pd.concat([layer_rows(0, [8.0, 1.0, 0.5, 0.5], [5.0, 3.0, 2.0, 0.0], [0.5, 0.8, 0.95, 1.0]),
                        layer_rows(1, [0.5, 0.5, 1.0, 8.0], [5.0, 0.5, 0.2, 0.0], [0.95, 0.99, 1.0, 1.0])])
    conv = layer_convergence.convergence(layers)
    tails = layer_convergence.tail_shares(layers)
    # the last quarter (epoch 4) holds 0.5 of layer 0's summed 10 and 8 of layer 1's: median (5% + 80%) / 2
    assert tails.loc[("stated", "sgd", "relu")].tolist() == pytest.approx([0.425, 0.425])
    checks = layer_convergence.settled_checks(layer_convergence.late_shares(conv, layers), tails)
    assert "holds a median 43% of a layer's summed change" in checks[0].statistic
    assert "summed change" not in checks[2].statistic  # distance to final is no sum
    shares = {c.text.split("Measure: ")[1]: c.cells["stated / sgd / relu"].mean for c in checks}
    # epochs: tracked [2, 4], relative [2, 4], distance [4, 2], CKA [3, 1]
    assert shares == {"tracked weights (source).": 0.5, "relative change.": 0.5, "distance to final.": 0.5,
                      "CKA to final.": 0.0}
    assert [c.result.verdict for c in checks] == ["contradicted"] * 3 + ["reproduced"]
    # a claim reads the settled cells; where none settled, every cell (and says so), so it keeps cells
    settled = layer_convergence.late_shares(conv, layers)["CKA to final"].loc[lambda late: late < 0.1].index
    unsettled = settled[:0]
    for keep in (settled, unsettled):
        assert list(layer_convergence.rho_cells(conv, "CKA to final", "sgd", keep=keep)) == \
            ["stated / sgd / relu (first: layer 1)"]


def q2_results(flipped: bool) -> Results:
    """Two tuning and two evaluation seeds of one tuned SGD cell (rates 0.1
    and 1, 1 chosen): on the evaluation seeds layer 0 moves early and settles
    last; `flipped` swaps the layers on the tuning seeds, every measure's order
    with them, which no cell may read."""
    early, late = ([8.0, 1.0, 0.5, 0.5], [5.0, 3.0, 2.0, 0.0], [0.5, 0.8, 0.95, 1.0]), \
        ([0.5, 0.5, 1.0, 8.0], [5.0, 0.5, 0.2, 0.0], [0.95, 0.99, 1.0, 1.0])
    rows = []
    for seed, role, rates in [(0, "tune", (0.1, 1.0)), (1, "tune", (0.1, 1.0)), (2, "evaluate", (1.0,)),
                              (3, "evaluate", (1.0,))]:
        order = [late, early] if flipped and role == "tune" else [early, late]
        for lr, (layer, values) in itertools.product(rates, enumerate(order)):
            rows.append(layer_rows(layer, *values).assign(seed=seed, role=role, lr=lr))
    layers = pd.concat(rows, ignore_index=True)
    frame = layers[[*layer_convergence.CELL, "seed", "role", "lr"]].drop_duplicates().assign(
        epoch=1, selected=lambda f: f["lr"] == 1.0, val_acc=lambda f: np.where(f["lr"] == 1.0, 0.9, 0.8))
    return Results(frame, {}, {"layers": layers})


def test_q2_cells_read_the_evaluation_seeds_only():
    """Flipping the tuning seeds' layer order changes no claim's cells."""
    calm, wild = (layer_convergence.claims(q2_results(flipped)) for flipped in (False, True))
    assert [c.result.cells for c in calm] == [c.result.cells for c in wild]
    assert [c.alternatives for c in calm] == [c.alternatives for c in wild]
    def every_cell(claims):  # the cells, unsettled ones too (the synthetic runs never settle)
        return [{k: rho.tolist() for k, rho in c.choices.get(layer_convergence.EVERY_CELL, {}).items()}
                for c in claims]

    assert every_cell(calm) == every_cell(wild) and all(every_cell(calm)[:6])  # 5 measures, bottom-up
    assert [len(rho) for rho in every_cell(calm)[0].values()] == [2]  # one rho per evaluation seed
    tuned = calm[-1]
    assert tuned.cells == {"stated / sgd / relu": stats.Interval(1.0, 1.0, 1.0, 1)}  # 1 is the grid's rising end


def q1_frame():
    """Two seeds of one cell (seed 0 tunes, seed 1 evaluates): Xavier reaches
    0.9 on the test split at epoch 2, N(0, 10^2) never and peaks on
    validation at epoch 1; SGD at two rates, the larger one better on
    validation. `best_epoch` and `best_eval_acc` as the training loop
    records them: the first epoch of best validation accuracy."""
    rows = []
    for seed in (0, 1):
        for init, lr, test in [("glorot_uniform", 0.1, [0.8, 0.92]), ("normal_10", 0.1, [0.6, 0.5]),
                               ("glorot_uniform", 1.0, [0.85, 0.95])]:
            best = max((1, 2), key=lambda epoch: test[epoch - 1])
            for epoch, acc in zip((1, 2), test):
                rows.append({"variant": "stated", "optimizer": "sgd", "activation": "relu", "init": init, "lr": lr,
                             "seed": seed, "role": ("tune", "evaluate")[seed], "epoch": epoch, "test_acc": acc,
                             "eval_acc": acc - 0.01, "val_acc": acc, "diverged": False, "bayes_acc": 0.96,
                             "best_epoch": best, "best_eval_acc": test[best - 1] - 0.01})
    frame = pd.DataFrame(rows)
    return frame.assign(selected=stats.chosen_on_validation(frame, [*initialization.CELL, "init"], ["lr"]))


def test_rate_selection_and_per_run_measures_by_hand():
    runs = initialization.per_run(q1_frame()).set_index(["init", "seed"])
    assert runs.loc["glorot_uniform", "lr"].tolist() == [1.0, 1.0]  # the rate selected on validation
    assert runs.loc["glorot_uniform", "epochs_to_90"].tolist() == [2, 2]
    assert runs.loc["normal_10", "epochs_to_90"].tolist() == [3, 3]  # never reached: epochs + 1
    np.testing.assert_allclose(runs.loc["glorot_uniform", "norm_acc"], (0.94 - 0.5) / (0.96 - 0.5))


def test_accuracy_is_read_at_the_validation_best_epoch_or_at_the_end():
    """N(0, 10^2) peaks on validation at epoch 1 and falls by epoch 2: the
    primary reading keeps its epoch-1 accuracy, the end reading epoch 2's."""
    best = initialization.per_run(q1_frame()).set_index(["init", "seed"])
    end = initialization.per_run(q1_frame(), initialization.END).set_index(["init", "seed"])
    np.testing.assert_allclose(best.loc["normal_10", "eval_acc"], 0.59)
    np.testing.assert_allclose(end.loc["normal_10", "eval_acc"], 0.49)
    np.testing.assert_allclose(best.loc["normal_10", "norm_acc"], (0.59 - 0.5) / (0.96 - 0.5))
    np.testing.assert_allclose(best.loc["glorot_uniform", "eval_acc"], end.loc["glorot_uniform", "eval_acc"])


def test_the_strongest_l1_compared_is_the_strongest_that_has_not_collapsed():
    runs = pd.DataFrame({"variant": "stated", "regularizer": ["none", "l1", "l1", "l1_prox"],
                         "strength": [0.0, 0.1, 1.0, 1.0], "seed": 0, "eval_acc": [0.9, 0.8, 0.52, 0.7]})
    assert regularization.collapsed(runs).to_dict() == {("stated", "l1", 0.1): False, ("stated", "l1", 1.0): True,
                                                        ("stated", "l1_prox", 1.0): False,
                                                        ("stated", "none", 0.0): False}
    assert regularization.strongest(runs, ["l1", "l1_prox"]) == [("stated", "l1", 0.1), ("stated", "l1_prox", 1.0)]


def test_regularized_minus_unregularized_is_paired_by_seed():
    runs = pd.DataFrame({"variant": "stated", "regularizer": ["none", "l2", "none", "l2"],
                         "strength": [0.0, 0.1, 0.0, 0.1], "seed": [0, 0, 1, 1], "eval_acc": [0.9, 0.95, 0.8, 0.7]})
    (label, diff), = regularization.versus_none(runs, "eval_acc", [("stated", "l2", 0.1)]).items()
    assert label == "stated / l2 0.1"
    np.testing.assert_allclose(diff.to_numpy(), [0.05, -0.1])


def test_best_strength_is_chosen_on_the_tuning_seeds_and_measured_on_the_evaluation_seeds():
    """L2 0.1 wins on the tuning seeds (seeds 0, 1) and loses on the evaluation
    seeds: the cell is its evaluation-seed difference, whatever the tuning seeds say."""
    acc = {("none", 0.0): [0.9, 0.9, 0.9, 0.9], ("l2", 0.1): [0.99, 0.99, 0.85, 0.88],
           ("l2", 1.0): [0.6, 0.6, 0.95, 0.95]}
    runs = pd.DataFrame([{"variant": "stated", "regularizer": r, "strength": s, "seed": seed,
                          "role": "tune" if seed < 2 else "evaluate", "eval_acc": values[seed]}
                         for (r, s), values in acc.items() for seed in range(4)])
    (label, diff), = regularization.best_versus_none(stats.tuning(runs), stats.evaluation(runs), ["l2"]).items()
    assert label == "stated / l2 0.1"
    np.testing.assert_allclose(diff.to_numpy(), [-0.05, -0.02])


def test_q3_design_checks_by_hand():
    """The bound binds in all runs of max-norm 1 and half of max-norm 5; one
    run of two peaks in the last quarter; the tuned rate 0.01 is inside its grid."""
    test = pd.DataFrame({"variant": "stated", "regularizer": ["maxnorm"] * 4 + ["dropout_maxnorm"] * 2,
                         "strength": [1.0, 1.0, 5.0, 5.0, 2.0, 2.0], "seed": [2, 3] * 3, "role": "evaluate",
                         "max_unit_norm": [1.0, 0.9995, 2.0, 5.0, 2.0, 2.0], "epoch": 200,
                         "best_epoch": [10, 10, 190, 10, 20, 20]})
    tuning = test[test["regularizer"] == "dropout_maxnorm"].assign(role="tune", seed=[0, 1]).merge(
        pd.DataFrame({"lr": [0.003, 0.01, 0.03], "val_acc": [0.8, 0.9, 0.85]}), how="cross")
    frame = pd.concat([test.assign(lr=0.01), tuning]).assign(selected=lambda f: f["lr"] == 0.01)
    binds, late, tuned = regularization.design_checks(stats.tuning(test), test, frame)
    assert {k: v.mean for k, v in binds.cells.items()} == {"stated / maxnorm 1": 1.0, "stated / maxnorm 5": 0.5,
                                                          "stated / dropout_maxnorm 2": 1.0}
    assert late.cells["stated / maxnorm 5"].mean == 0.5 and late.cells["stated / maxnorm 1"].mean == 0.0
    assert tuned.cells == {"stated / dropout_maxnorm 2": stats.Interval(0.0, 0.0, 0.0, 1)}


def test_collapse_is_decided_on_the_tuning_seeds_and_drops_l1_and_l2_alike():
    """L1 1 and L2 1 sit at chance on the tuning seeds (not on the evaluation
    seeds): both are dropped from every claim, L1's strongest and L2's list alike."""
    acc = {("none", 0.0): 0.9, ("l1", 0.1): 0.9, ("l1", 1.0): 0.5, ("l2", 0.1): 0.9, ("l2", 1.0): 0.5}
    runs = pd.DataFrame([{"variant": "stated", "regularizer": r, "strength": s, "seed": seed,
                          "role": "tune" if seed < 2 else "evaluate", "eval_acc": a if seed < 2 else 0.9}
                         for (r, s), a in acc.items() for seed in range(4)])
    tune = stats.tuning(runs)
    assert regularization.strongest(tune, ["l1"]) == [("stated", "l1", 0.1)]
    assert regularization.alive(tune, ["l1", "l2"]) == [("stated", "l1", 0.1), ("stated", "l2", 0.1)]
    assert regularization.alive(stats.evaluation(runs), ["l2"]) == [("stated", "l2", 0.1), ("stated", "l2", 1.0)]
