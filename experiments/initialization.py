"""Q1. How does initialization affect training? (S-questions)

Three variants, all in `results/initialization.parquet` (column `variant`):

- `faithful`: the original code's setup: harmonic class gaps and a random
  shared covariance drawn per dataset, sigmoid, a 2-unit output trained with
  MSE on one-hot targets, Adam 0.003, minibatches of 64, hidden (100, 100),
  biases drawn like the weights, its five initializers; 84 epochs of 6
  minibatches = 504 steps (the original's 500).
- `stated`: the text's task (identity covariance, gap 1 in every dimension,
  Bayes limit 0.9584) with softmax cross-entropy, every scheme of
  `study.inits.SCHEMES` and ReLU, tanh and sigmoid, under two optimizers
  (column `optimizer`): Adam 0.003 on minibatches of 64 for 100 epochs (the
  original code's optimizer), and plain full-batch SGD, the textbook step of
  S-step, for 150 steps at each rate of `SGD_RATES` on the tuning seeds; per
  activation and scheme, the rate with the best mean validation-best
  accuracy there (each run stopped early, as the claims read it) is marked
  `selected` and is the only one trained on the evaluation seeds.
- `mixture`: a task whose Bayes classifier needs several hidden units
  (`MIXTURE`: two classes of four Gaussian clusters each), where a network
  whose layers stay one effective unit (constant starts) is a linear
  classifier and must fall short; the stated setup under Adam (not SGD: a
  `Mixture` trains on minibatches, and a second tuned grid would double the
  cost), so every symmetry claim is also tested where symmetry costs.

Every run scores its validation sample densely (`EVAL_POINTS`) to resolve
its validation-best epoch, where the claims read the large sample
(`best_eval_acc`); the end of training (`eval_acc`) is the other choice.

Run: `study run initialization` (8 tuning + 32 evaluation seeds, 7,688 runs in 4 compiled programs).
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
from pathlib import Path

import pandas as pd

from study import checks, inits, stats
from study import figures as fig
from study.data import Mixture, TwoGaussians
from study.claims import Claim, specification_frame
from study.question import Section
from study.results import Results
from study.runner import Program
from study.config import Setup, stride

NAME = "initialization"
TEXT = Path(__file__).with_name("text") / f"{NAME}.md"  # the report's prose
QUESTION = "How does initialization affect training?"

FAITHFUL_SCHEMES = ("glorot_uniform", "zeros", "constant_1", "normal_0.01", "normal_1")
STATED_SCHEMES = tuple(inits.SCHEMES)
ACTIVATIONS = ("relu", "tanh", "sigmoid")
LEARNING_RATE = 0.003
# full-batch SGD, tuned per activation and scheme on validation: half-decades as wide as a pilot
# needed: ReLU constant starts peak at 0.001, N(0, 10^2) at 30 (sigmoid) and at 100, the old top, for both
# saturating activations (up 0.75 and 1.5 pt on 30: the grid-end check), so the grid reaches 1000
SGD_RATES = (0.0003, 0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0, 300.0, 1000.0)
QUICK_SGD_RATES = (0.1, 1.0)
SEEDS, TUNING_SEEDS, QUICK_SEEDS = 32, 8, 2  # evaluation seeds from the power analysis (README)
EPOCHS = {"faithful": 84, "stated": 100, "sgd": 150}
# sizes per class: 400 training points, a 100-point test split, 10,000 fresh points, as the stated task
MIXTURE = Mixture(classes=2, clusters=4, subspace=4, n_train=200, n_test=50, n_eval=5000, n_val=500)
BATCH = 64
SCORED = ("eval_acc", "val_acc", "distinct_units", "initial_grad_norm")
QUICK_EPOCHS = 6
QUICK_SAMPLES = dict(n_eval=500, n_val=100)  # --quick scores smaller samples (per class for the mixture)
EVAL_POINTS = 100  # at most this many validation scorings per run (Adam: every epoch; SGD: every 2 steps)
TRAINED = 0.9  # "trains": 90% of the way from chance (0.5) to the Bayes limit
REACHED = 0.9  # accuracy for "epochs to reach"
RESOLVED = 0.10  # stopping is resolved when fewer trained runs peak at their first scored epoch
ACCURACY_RANGE = (0.45, 1.0)  # chance to perfect: the axis of every accuracy plot
BEST, END = "validation-best epoch", "end of training"  # where a run's large-sample accuracy is read


def plan(seeds: int, epochs: int | None = None, quick: bool = False) -> list[Program]:
    """Four programs: the faithful variant, the stated one under Adam and
    under SGD, and the mixture under Adam, with every activation (a traced
    value, like the scheme and the rate)."""

    def setup(length, task=TwoGaussians(), scored=SCORED, **kwargs):
        n = epochs or (QUICK_EPOCHS if quick else EPOCHS[length])
        task = dataclasses.replace(task, **QUICK_SAMPLES) if quick else task
        return Setup(task=task, hidden=(100, 100), epochs=n, evals=stride(n, EVAL_POINTS), final_eval=True, scored=scored,
                     **kwargs)

    def runs(variant, optimizer, activations, schemes, rates=(LEARNING_RATE,)):
        grid = itertools.product(activations, schemes, rates, range(seeds))
        return pd.DataFrame([{"variant": variant, "optimizer": optimizer, "activation": a, "init": s, "seed": seed,
                              "data_seed": seed, "lr": lr} for a, s, lr, seed in grid])

    faithful = setup("faithful", task=TwoGaussians(harmonic_gaps=True, random_covariance=True),
                     activations=("sigmoid",), loss="mse", schemes=FAITHFUL_SCHEMES, init_biases=True)
    adam = setup("stated", activations=ACTIVATIONS, schemes=STATED_SCHEMES)
    sgd = setup("sgd", activations=ACTIVATIONS, schemes=STATED_SCHEMES, optimizer="sgd", batch_size=None)
    mixture = setup("stated", task=MIXTURE, activations=ACTIVATIONS, schemes=STATED_SCHEMES, batch_size=BATCH,
                    steps_per_epoch=MIXTURE.n_train * MIXTURE.classes // BATCH,
                    scored=tuple(s for s in SCORED if s != "initial_grad_norm"))  # a Mixture cannot score it
    return [Program("faithful", faithful, runs("faithful", "adam", ("sigmoid",), FAITHFUL_SCHEMES)),
            Program("stated adam", adam, runs("stated", "adam", ACTIVATIONS, STATED_SCHEMES)),
            Program("stated sgd", sgd, runs("stated", "sgd", ACTIVATIONS, STATED_SCHEMES,
                                            QUICK_SGD_RATES if quick else SGD_RATES), tuned=("lr",)),
            Program("mixture adam", mixture, runs("mixture", "adam", ACTIVATIONS, STATED_SCHEMES).assign(
                n_target=MIXTURE.n_train))]


# --- analysis: everything below reads the results frame only ---------------

CELL = ["variant", "optimizer", "activation"]


def per_run(frame: pd.DataFrame, reading: str = BEST) -> pd.DataFrame:
    """One row per run at its selected rate (chosen on the tuning seeds'
    validation, see `plan`) and last epoch, with `eval_acc` read at the
    `reading`: the validation-best epoch (early stopping decided on the
    run's own validation sample, where claims resolve) or the end of
    training; and the derived measures: `norm_acc` (that accuracy scaled so
    chance = 0 and Bayes = 1), `epochs_to_90` (first epoch with test
    accuracy >= 0.9; epochs + 1 if never, a censored value) and
    `ever_diverged`. The mechanism measures (distinct units, training loss)
    stay those of the end."""
    frame = frame[frame["selected"]]
    keys = [*CELL, "init", "seed"]
    groups = frame.groupby(keys, sort=False)
    last = frame.loc[groups["epoch"].idxmax()].set_index(keys)
    last["eval_acc"] = last["best_eval_acc"] if reading == BEST else last["eval_acc"]
    reached = frame[frame["test_acc"] >= REACHED].groupby(keys)["epoch"].min()
    last["epochs_to_90"] = reached.reindex(last.index).fillna(last["epoch"] + 1)
    last["ever_diverged"] = groups["diverged"].any()
    last["norm_acc"] = (last["eval_acc"] - 0.5) / (last["bayes_acc"] - 0.5)
    return last.reset_index()


def paired(runs: pd.DataFrame, value: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """`value` with one column per scheme, one row per (variant, optimizer,
    activation, seed): on the evaluation seeds (which intervals read) and
    on the tuning seeds (which choose a rival)."""
    return tuple(part.pivot_table(index=[*CELL, "seed"], columns="init", values=value)
                 for part in (stats.evaluation(runs), stats.tuning(runs)))


def cells(tables: tuple[pd.DataFrame, pd.DataFrame], statistic) -> dict[str, pd.Series]:
    """Apply `statistic(test, choose) -> (label_suffix, per-seed values)` to
    each (variant, optimizer, activation) cell of a pair of `paired` tables."""
    test, choose = tables
    return {f"{variant} / {optimizer} / {activation}{suffix}": values
            for (variant, optimizer, activation), part in test.groupby(level=[0, 1, 2], sort=False)
            for suffix, values in statistic(part, choose.loc[(variant, optimizer, activation)])}


def claim_cells(runs: pd.DataFrame) -> list[dict[str, pd.Series]]:
    """The cells of each claim of `claims`, in order, under both optimizers."""
    acc, norm, speed = paired(runs, "eval_acc"), paired(runs, "norm_acc"), paired(runs, "epochs_to_90")

    def xavier_minus_best_other(test, choose):
        best, difference = stats.versus_best(choose, test, "glorot_uniform")
        yield f" (vs {best})", difference

    def xavier_minus_best_non_constant(test, choose):
        constants = list(inits.CONSTANT_SCHEMES)
        yield from xavier_minus_best_other(test.drop(columns=constants, errors="ignore"),
                                           choose.drop(columns=constants, errors="ignore"))

    def low_variance_minus_xavier(test, choose):
        yield "", test["normal_0.01"] - test["glorot_uniform"]

    def largest_variance_minus_xavier(test, choose):
        widest = [s for s in ("normal_10", "normal_1") if test[s].notna().any()][0]
        yield f" ({widest})", test[widest] - test["glorot_uniform"]

    def scheme(names):
        def statistic(test, choose):
            for name in names:
                if name in test and test[name].notna().any():
                    yield f" ({name})", test[name]
        return statistic

    return [cells(acc, xavier_minus_best_other), cells(acc, xavier_minus_best_non_constant),
            cells(acc, low_variance_minus_xavier), cells(speed, largest_variance_minus_xavier),
            cells(norm, scheme(["zeros"])), cells(norm, scheme(["constant_0.5", "constant_1"]))]


def grid_edges(frame: pd.DataFrame) -> pd.DataFrame:
    """Per SGD cell and scheme: `checks.grid_edges` of its rate, read at the
    validation-best epoch, as the rate was chosen."""
    return checks.grid_edges(frame[frame["optimizer"] == "sgd"], [*CELL, "init"], at="best")


def first_peaks(frame: pd.DataFrame, runs: pd.DataFrame) -> pd.Series:
    """Per (variant, optimizer): the share of the runs that train (scaled
    accuracy above `TRAINED`) whose validation-best epoch is the first
    scored one, where stopping would not be resolved."""
    first = frame.dropna(subset=["val_acc"]).groupby(["variant", "optimizer"])["epoch"].min()
    trained = runs[runs["norm_acc"] > TRAINED].set_index(["variant", "optimizer"])
    return (trained["best_epoch"] == first.reindex(trained.index).to_numpy()).groupby(level=[0, 1]).mean()


def design_checks(frame: pd.DataFrame, runs: pd.DataFrame) -> list[Claim]:
    """That the SGD rates were tuned (no choice on a rising grid end) and
    that the validation-best epoch is resolved by the scoring."""
    edges, peaks = grid_edges(frame), first_peaks(frame, runs)
    share = stats.Unit(0.05, scale=100, digits=0, suffix="%", bounds=(0.0, 1.0))
    check = dict(design_check=True, source="this study", source_number="none")
    return [
        Claim(text="Every selected SGD rate lies inside its grid, or where the curve is flat.",
              statistic=f"the share of (cell, scheme) choices with a rate on an end of the grid that beats its "
                        f"inner neighbour by more than {checks.FLAT * 100:g} point of mean validation accuracy over "
                        f"the tuning seeds; measured once over {len(edges)} choices, {edges['on_end'].sum()} "
                        f"of them on an end ({checks.beyond_noise(edges)}); claimed below 10%.",
              cells={"all SGD cells": checks.measured(edges["rising"].mean())}, threshold=0.10, claimed="below",
              unit=share, **check),
        Claim(text="The validation-best epoch is resolved: runs that train do not peak at their first scoring.",
              statistic="the share of runs above the 'trains' mark whose validation-best epoch is the first "
                        f"scored epoch; measured once per variant and optimizer; claimed below {RESOLVED:.0%}.",
              cells={f"{variant} / {optimizer}": checks.measured(value) for (variant, optimizer), value in peaks.items()},
              threshold=RESOLVED, claimed="below", unit=share, **check)]


def claims(results: Results) -> list[Claim]:
    """Each claim read at the validation-best epoch, and at the end of
    training as another choice; then the design checks."""
    frame = results.frame
    runs = per_run(frame)
    main = claim_cells(runs)
    end = claim_cells(per_run(frame, END))
    other = [dict(choices={END: cells}) for cells in end]
    reading = "large-sample accuracy at the validation-best epoch"
    trained = f"{reading} scaled to chance = 0, Bayes limit = 1; trains when above {TRAINED}."
    return [
        Claim(source="S-questions, hypothesis", text="Xavier initialization (the TensorFlow default) trains best.",
              source_number="none given",
              statistic=f"{reading} of Xavier-uniform minus that of the best other scheme (chosen by its mean "
              "on the tuning seeds), paired by seed on the evaluation seeds; claimed above 0.",
              cells=main[0], threshold=0.0, claimed="above", unit=stats.POINTS, **other[0]),
        Claim(source="S-questions, hypothesis", text="Xavier trains best among the schemes that break symmetry.",
              source_number="none given",
              statistic="as above, against the best scheme that is not a constant (constant starts keep one distinct "
              "unit per layer: the mechanism table); claimed above 0.",
              cells=main[1], threshold=0.0, claimed="above", unit=stats.POINTS, **other[1]),
        Claim(source="S-questions, conclusion", text="Low-variance Gaussian initialization trains well, like Xavier.",
              source_number="none given",
              statistic=f"{reading} of N(0, 0.01^2) minus Xavier-uniform, paired by seed; claimed above -1 point.",
              cells=main[2], threshold=-0.01, claimed="above", unit=stats.POINTS, **other[2]),
        Claim(source="S-questions, conclusion", text="With a large variance, training slows down.",
              source_number="none given",
              statistic=f"epochs (SGD: full-batch steps) to reach test accuracy {REACHED} with the widest Gaussian "
              "minus with Xavier-uniform (runs that never reach it count as epochs + 1); the same under either "
              "reading; claimed above 0.",
              cells=main[3], threshold=0.0, claimed="above", unit=stats.Unit(5.0, digits=1,
              suffix=" epochs"), **other[3]),
        Claim(source="S-questions, conclusion", text="A constant 0 initialization eventually trains.",
              source_number="none given",
              statistic=trained, cells=main[4], threshold=TRAINED, claimed="above", unit=stats.Unit(0.05), **other[4]),
        Claim(source="S-questions, conclusion + hypothesis",
              text="Other constant initializations do not train (constants train worst).", source_number="none given",
              statistic=trained + " Claimed below.",
              cells=main[5], threshold=TRAINED, claimed="below", unit=stats.Unit(0.05), **other[5]),
        *design_checks(frame, runs),
    ]


def mechanism_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Per scheme and cell: the selected rate, each weight matrix's gradient
    norm at the start, distinct hidden units at the end, divergence and
    final accuracy."""
    keys = [*CELL, "init"]
    table = runs.groupby(keys, sort=False).agg(
        lr=("lr", "first"), grad_l0=("grad_norm_l0", "mean"), grad_l1=("grad_norm_l1", "mean"),
        grad_l2=("grad_norm_l2", "mean"), distinct_h1=("distinct_h1", "mean"),
        distinct_h2=("distinct_h2", "mean"), diverged=("ever_diverged", "mean"),
        final_train_loss=("train_loss", "mean"), eval_acc=("eval_acc", "mean")).reset_index()
    grads = ["grad_l0", "grad_l1", "grad_l2"]
    table[grads] = table[grads].map(lambda g: f"{g:.2g}", na_action="ignore")  # blank: a mixture scores none
    return table.round({"distinct_h1": 1, "distinct_h2": 1, "diverged": 2, "final_train_loss": 3,
                        "eval_acc": 3})


def draw_curves(data: pd.DataFrame, bayes: float | None):
    f = fig.facets(data, "activation", fig.bands, x="epoch", hue="init", dashed=inits.CONSTANT_SCHEMES,
                   bayes=bayes, ylabel="test accuracy (100-point split)")
    f.axes[0].set_ylim(*ACCURACY_RANGE)
    return f


def draw_loss(data: pd.DataFrame):
    f = fig.facets(data, "activation", fig.bands, x="epoch", hue="init", dashed=inits.CONSTANT_SCHEMES,
                   ylabel="training loss", sharey=False)
    for ax in f.axes:
        ax.set_yscale("log")
    return f


def draw_final(data: pd.DataFrame, bayes: float | None, panel: str = "optimizer",
               xlabel: str = "large-sample accuracy at the validation-best epoch", xlim=ACCURACY_RANGE):
    f = fig.facets(data, panel, fig.intervals, y="init", hue="activation",
                   bayes=bayes, ylabel="initialization", width=5, height=5)
    for ax in f.axes:
        ax.set_xlabel(xlabel)
        ax.set_xlim(*xlim)
    return f


def draw_original(data: pd.DataFrame, bayes: float):
    f = fig.facets(data.assign(variant="faithful"), "variant", fig.bands, x="epoch", hue="init",
                   dashed=inits.CONSTANT_SCHEMES, bayes=bayes, ylabel="test accuracy (100-point split)",
                   width=6)
    f.axes[0].set_ylim(*ACCURACY_RANGE)
    return f


def draw_units(data: pd.DataFrame):
    f = fig.facets(data, "layer", fig.intervals, y="init", hue="cell", ylabel="initialization",
                   width=5, height=5)
    for ax in f.axes:
        ax.set_xscale("log")
        ax.set_xlabel("distinct units at the end (of 100)")
    return f


def distinct_units(runs: pd.DataFrame) -> pd.DataFrame:
    """Mean distinct units per hidden layer, scheme and cell, in the schemes' order."""
    units = pd.concat([
        stats.summarize(runs.assign(cell=runs[CELL].agg(" / ".join, axis=1), layer=layer),
                        ["layer", "init", "cell"], column)
        for layer, column in [("hidden 1", "distinct_h1"), ("hidden 2", "distinct_h2")]])
    return units.sort_values("init", key=lambda s: s.map(STATED_SCHEMES.index), kind="stable")


def figures(results: Results, claims: list[Claim]) -> list[fig.Figure]:
    frame = stats.evaluation(results.frame)  # every interval drawn reads the evaluation seeds
    stated = frame[(frame["variant"] == "stated") & (frame["optimizer"] == "adam")]
    runs = per_run(frame)
    bayes = float(stated["bayes_acc"].iloc[0]) if len(stated) else None
    original_bayes = float(runs.loc[runs["variant"] == "faithful", "bayes_acc"].mean())
    summary = functools.partial(stats.summarize, by=["activation", "init", "epoch"])
    return [
        fig.Figure("curves", "Test accuracy per epoch, stated variant under Adam; mean and 95% band over seeds; "
                   "dashed: constant initializations; dotted: Bayes limit.", summary(stated, value="test_acc"),
                   functools.partial(draw_curves, bayes=bayes)),
        fig.Figure("loss", "Training loss per epoch (log scale: the mean loss of the epoch's minibatch steps, each "
                   "from the step's own forward pass), stated variant under Adam; mean and 95% band over "
                   "seeds of runs with a finite loss.", summary(stated, value="train_loss"), draw_loss),
        fig.Figure("final", "Accuracy on 10,000 fresh points at the validation-best epoch per scheme and "
                   "activation, stated variant, under Adam (100 epochs) and full-batch SGD (150 steps, each "
                   "scheme at its selected rate), with 95% intervals over the evaluation seeds; dotted: "
                   "Bayes limit.",
                   stats.summarize(runs[runs["variant"] == "stated"], ["optimizer", "activation", "init"], "eval_acc"),
                   functools.partial(draw_final, bayes=bayes)),
        fig.Figure("symmetry", "Scaled accuracy (chance = 0, Bayes limit = 1) at the validation-best epoch per "
                   "scheme and activation under Adam, on the stated task (a linear Bayes classifier) and on the "
                   "mixture (one that needs several hidden units), with 95% intervals over the evaluation "
                   "seeds: a start that never breaks symmetry is a linear classifier, enough only on the first.",
                   stats.summarize(runs[(runs["optimizer"] == "adam") & (runs["variant"] != "faithful")],
                                   ["variant", "activation", "init"], "norm_acc"),
                   functools.partial(draw_final, bayes=1.0, panel="variant", xlim=(-0.05, 1.05),
                                     xlabel="scaled accuracy at the validation-best epoch")),
        fig.Figure("faithful", "The original code's setup: test accuracy per epoch; dotted: the mean Bayes "
                   "limit of its random-covariance datasets.",
                   stats.summarize(frame[frame["variant"] == "faithful"], ["init", "epoch"], "test_acc"),
                   functools.partial(draw_original, bayes=original_bayes)),
        fig.Figure("units", "Distinct hidden units at the end of training per layer (log scale): 1 means "
                   "the layer's symmetry was never broken.", distinct_units(runs), draw_units),
        fig.Figure("spec-curve", "The specification curve: each claim's verdict (a row) as stated, with its "
                   "threshold moved either way by its tolerance, and read at the end of training instead of "
                   "the validation-best epoch (the source fixed neither).", specification_frame(claims),
                   fig.verdict_grid),
    ]


def section(results: Results, claims: list[Claim]) -> Section:
    runs = stats.evaluation(per_run(results.frame))
    bayes = runs.groupby("variant")["bayes_acc"].agg(["mean", "min", "max"])
    runs_of_sgd = results.frame[results.frame["optimizer"] == "sgd"]
    fields = dict(stated_bayes=bayes.loc["stated", "mean"], mixture_bayes=bayes.loc["mixture", "mean"],
                  schemes=len(STATED_SCHEMES),
                  seeds=runs["seed"].nunique(), tuning_seeds=stats.tuning(results.frame)["seed"].nunique(),
                  sgd_rates=", ".join(f"{lr:g}" for lr in sorted(runs_of_sgd["lr"].unique())),
                  faithful_bayes_min=bayes.loc["faithful", "min"], faithful_bayes_max=bayes.loc["faithful", "max"],
                  runs=results.frame[[*CELL, "init", "lr", "seed"]].drop_duplicates().shape[0],
                  wall_s=results.metadata["wall_time_s"])
    return Section(fields, [
        ("Per scheme and cell: the selected rate, the norm of each weight matrix's gradient at the "
         "initial weights (whole training set; l0 is the input layer; mean over the evaluation seeds), "
         "mean distinct units per hidden layer at the end, share of runs that diverged (non-finite loss), "
         "mean final training loss, mean large-sample accuracy at the validation-best epoch.",
         mechanism_table(runs))])
