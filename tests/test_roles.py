"""Seeds with roles: a tuned grid trains on the tuning seeds, its choice
alone on the evaluation seeds, with one compiled program for both."""

import dataclasses

import numpy as np
import pandas as pd

from study import config, grid, runner
from tests.test_train import SETUP

TUNING = 2
RATES = (1e-6, 0.1)  # the first barely moves the weights: validation chooses the second


def program(tuned=("lr",)) -> runner.Program:
    runs = pd.DataFrame([{"arm": arm, "seed": seed, "data_seed": seed, "init": "glorot_uniform",
                          "activation": "relu", "lr": lr}
                         for arm in ("a", "b") for lr in RATES for seed in range(TUNING + 3)])
    return runner.Program("grid", SETUP, runs, tuned=tuned)


def test_a_tuned_grid_trains_its_choice_alone_on_the_evaluation_seeds():
    misses = grid._compiled.cache_info().misses
    res = runner.run("x", [program()], {"tuning_seeds": TUNING}, progress=lambda _: None)
    assert grid._compiled.cache_info().misses - misses <= 1  # both stages share one program
    runs = res.frame.drop_duplicates(["arm", "lr", "seed"])
    tune, evaluate = (runs[runs["role"] == role] for role in ("tune", "evaluate"))
    assert sorted(tune["seed"].unique()) == [0, 1] and len(tune) == 2 * len(RATES) * TUNING
    assert sorted(evaluate["seed"].unique()) == [2, 3, 4] and set(evaluate["lr"]) == {0.1}
    assert runs["selected"].tolist() == (runs["lr"] == 0.1).tolist()
    assert runner.planned_runs(program(), TUNING) == len(runs)


def test_a_run_gives_the_same_numbers_in_either_stage():
    """The evaluation seeds' runs equal the same runs trained in one untuned
    grid: keys depend on seeds only, never on the stage or the call."""
    staged = runner.run("x", [program()], {"tuning_seeds": TUNING}, progress=lambda _: None).frame
    plain = runner.run("x", [program(tuned=())], {"tuning_seeds": TUNING}, progress=lambda _: None).frame
    keys = ["arm", "lr", "seed", "epoch"]
    evaluate = staged[staged["role"] == "evaluate"].merge(plain, on=keys, suffixes=("", "_plain"))
    assert len(evaluate) == 2 * 3 * SETUP.epochs
    np.testing.assert_array_equal(evaluate["test_acc"], evaluate["test_acc_plain"])
    assert (plain["role"] == np.where(plain["seed"] < TUNING, "tune", "evaluate")).all()


def test_a_tuned_grid_keeps_its_curves_and_weight_tables_at_the_chosen_values_only():
    """The grid's other values are read for their validation accuracy only."""
    tracked = dataclasses.replace(program(), setup=dataclasses.replace(SETUP, tracking=config.Tracking(weights=3)))
    res = runner.run("x", [tracked], {"tuning_seeds": TUNING}, progress=lambda _: None)
    frame, curves = res.frame, [c for c in runner.CURVES if c in res.frame]
    other = frame[~frame["selected"]]
    assert len(other) and curves and other[curves].isna().all().all() and other["val_acc"].notna().any()
    assert frame.loc[frame["selected"], curves].notna().any().all()  # train_acc is strided
    assert all(set(table["lr"]) == {0.1} for table in res.tables.values())
    assert set(res.tables["layers"]["seed"]) == set(range(TUNING + 3)) and set(res.tables["weights"]["seed"]) == {0}


def test_sampled_weight_values_are_kept_for_the_first_seeds_only():
    """The layer measures cover every run; the sampled weights' values, which
    only figures of one run read, the seeds below `values_of_seeds`."""
    setup = dataclasses.replace(SETUP, tracking=config.Tracking(weights=3, values_of_seeds=2))
    res = runner.run("x", [runner.Program("p", setup, program(tuned=()).runs)], {"tuning_seeds": TUNING},
                     progress=lambda _: None)
    assert sorted(res.tables["layers"]["seed"].unique()) == [0, 1, 2, 3, 4]
    assert sorted(res.tables["weights"]["seed"].unique()) == [0, 1]
