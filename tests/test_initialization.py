"""Q1's design checks and its choose-on-tuning, test-on-evaluation split, on small frames known by hand."""

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from experiments import initialization
from study.data import sample
from study.measures import linear_probe

CELL = {"variant": "stated", "optimizer": "sgd", "activation": "relu"}


def rate_curve(init, val_by_rate, chosen, epochs=(1, 2)):
    """Tuning rows of one scheme: a final validation accuracy per rate (the
    first epoch a point lower), `chosen` marked selected."""
    return pd.DataFrame([{**CELL, "init": init, "lr": lr, "seed": 0, "role": "tune", "epoch": epoch,
                          "val_acc": val - 0.01 * (epoch < epochs[-1]), "selected": lr == chosen}
                         for lr, val in val_by_rate.items() for epoch in epochs])


def test_a_choice_on_a_grid_end_rises_only_when_it_beats_its_inner_neighbour_by_more_than_flat():
    frame = pd.concat([rate_curve("inside", {0.01: 0.7, 0.1: 0.9, 1.0: 0.8}, 0.1),
                       rate_curve("rising", {0.01: 0.7, 0.1: 0.8, 1.0: 0.9}, 1.0),
                       rate_curve("flat", {0.01: 0.901, 0.1: 0.9, 1.0: 0.8}, 0.01)])
    edges = initialization.grid_edges(frame).set_index("init")
    assert edges["on_end"].to_dict() == {"flat": True, "inside": False, "rising": True}
    assert edges["rising"].to_dict() == {"flat": False, "inside": False, "rising": True}


def test_the_grid_end_design_check_measures_the_share_of_rising_choices():
    """One rising end among three choices: 33%, contradicting 'below 10%'."""
    frame = pd.concat([rate_curve("inside", {0.01: 0.7, 0.1: 0.9, 1.0: 0.8}, 0.1),
                       rate_curve("rising", {0.01: 0.7, 0.1: 0.8, 1.0: 0.9}, 1.0),
                       rate_curve("flat", {0.01: 0.901, 0.1: 0.9, 1.0: 0.8}, 0.01)])
    runs = pd.DataFrame({**CELL, "norm_acc": [0.95], "best_epoch": [2]})
    edges, _ = initialization.design_checks(frame, runs)
    assert edges.cells["all SGD cells"].mean == 1 / 3 and edges.result.verdict == "contradicted"


def test_first_peaks_counts_only_runs_that_train():
    """Validation is scored at epochs 2 and 4; of the three runs that train,
    one peaks at the first scoring; the untrained run (flat, so it peaks
    there too) is left out."""
    frame = pd.DataFrame({**CELL, "epoch": [1, 2, 3, 4], "val_acc": [np.nan, 0.8, np.nan, 0.9]})
    runs = pd.DataFrame({**CELL, "norm_acc": [0.95, 0.95, 0.99, 0.1], "best_epoch": [2, 4, 4, 2]})
    np.testing.assert_allclose(initialization.first_peaks(frame, runs).to_numpy(), [1 / 3])


def test_the_best_other_scheme_is_chosen_on_the_tuning_seeds_and_compared_on_the_evaluation_seeds():
    """On the tuning seed He beats orthogonal; on the evaluation seeds
    orthogonal would win, but the rival stays He; without constants, the
    rival of claim 2 is the same."""
    acc = {"glorot_uniform": [0.9, 0.9, 0.9], "he_normal": [0.95, 0.8, 0.85], "orthogonal": [0.5, 0.92, 0.94],
           "constant_1": [0.99, 0.5, 0.5], "normal_0.01": [0.9, 0.9, 0.9], "normal_10": [0.5, 0.5, 0.5],
           "normal_1": [0.5, 0.5, 0.5],
           "zeros": [0.5, 0.5, 0.5]}
    runs = pd.DataFrame([{**CELL, "init": init, "seed": seed, "role": "tune" if seed == 0 else "evaluate",
                          "eval_acc": values[seed], "norm_acc": values[seed], "epochs_to_90": 1}
                         for init, values in acc.items() for seed in range(3)])
    xavier, symmetric_broken = initialization.claim_cells(runs)[:2]
    ((label, difference),) = xavier.items()
    assert label == "stated / sgd / relu (vs constant_1)"
    np.testing.assert_allclose(difference, [0.4, 0.4])  # on the evaluation seeds only
    ((label, difference),) = symmetric_broken.items()
    assert label == "stated / sgd / relu (vs he_normal)"
    np.testing.assert_allclose(difference, [0.1, 0.05])


def test_the_mixture_needs_several_hidden_units():
    """Its Bayes classifier beats a converged linear classifier on the raw
    inputs (what a network whose layers stay one unit can represent) by
    more than 5 points on average over four datasets, and approaches 1."""
    @jax.jit  # one compiled program for the four datasets (op by op took six times as long)
    def accuracies(key):
        data = sample(initialization.MIXTURE, key)
        linear = linear_probe(data["x_train"], data["y_train"], jnp.ones(len(data["y_train"]), bool),
                              data["x_eval"], data["y_eval"], n_out=2)
        return data["bayes_acc"], linear

    bayes, linear = np.array([accuracies(jax.random.PRNGKey(seed)) for seed in range(4)]).T
    gaps = bayes - linear
    assert np.mean(gaps) > 0.05 and min(gaps) > 0 and np.mean(bayes) > 0.9
