"""Q3. How does regularization affect the weights? (S-questions, S-tricks)

Two variants, in `results/regularization.parquet` (per epoch),
`-layers.parquet` (per weight matrix and epoch) and `-weights.parquet` (50
sampled weights per matrix):

- `faithful`: the original code's setup: hidden (50, 50), sigmoid, MSE on
  one-hot outputs, Adam 0.003, biases drawn like the weights, its random-
  covariance data; penalty lambda * mean(|W|) or lambda * mean(W^2) summed
  over the weight matrices, lambda in {0, 0.1, 1}; 100 epochs.
- `stated`: the text's task with softmax cross-entropy, hidden (50, 50),
  ReLU, Adam 0.003, 200 epochs; L1 and L2 penalties (lambda * sum over
  weights) and proximal L1 (soft thresholding by lr * lambda after each
  step) on a log grid, dropout (input 0.2, hidden 0.2 or 0.5) and a max-norm
  bound on each unit's incoming weights (5 and 1).

Conditions: `regularizer` (none, l1, l1_prox, l2, dropout, maxnorm) and
`strength` (the penalty, the hidden dropout rate or the norm bound). The
`none` runs are trained in the l1 program with strength 0, which adds
exactly nothing; each kind compiles once, its strengths are traced.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pandas as pd

from study import figures as fig
from study import report, stats
from study.data import TwoGaussians
from study.results import Results
from study.runner import Program
from study.config import Setup, Tracking, stride

NAME = "regularization"
TEXT = Path(__file__).with_name("text") / f"{NAME}.md"  # the report's prose
QUESTION = "How does regularization affect the weights?"

HIDDEN = (50, 50)
LEARNING_RATE = 0.003
PENALTIES = tuple(float(s) for s in np.logspace(-5, 0, 6))
STRENGTHS = {"l1": PENALTIES, "l1_prox": PENALTIES, "l2": PENALTIES, "dropout": (0.2, 0.5), "maxnorm": (5.0, 1.0)}
FAITHFUL_STRENGTHS = (0.1, 1.0)
SEEDS, QUICK_SEEDS = 16, 2
EPOCHS = {"faithful": 100, "stated": 200}
QUICK_EPOCHS = 10
VAL_EVERY = 2  # epochs between validation scores: early stopping picks among them
RECORDS = 20  # about this many records per run of the sampled weights and the per-layer measures
SMALL = 1e-3  # a weight under this magnitude counts as (nearly) zero
CHANCE = 0.5  # two balanced classes
COLLAPSED = 0.05  # a condition whose mean large-sample accuracy is within this of chance has collapsed
CONDITION = ["variant", "regularizer", "strength"]


def plan(seeds: int | None = None, epochs: int | None = None, quick: bool = False) -> list[Program]:
    """One program per regularizer kind and variant."""
    seeds = seeds or (QUICK_SEEDS if quick else SEEDS)

    def runs(variant, regularizer, strengths, activation):
        labels = [("none" if s == 0 else regularizer, s) for s in strengths]
        return pd.DataFrame([{"variant": variant, "regularizer": r, "strength": s, "activation": activation,
                              "init": "glorot_uniform", "seed": seed, "data_seed": seed, "lr": LEARNING_RATE}
                             for (r, s), seed in itertools.product(labels, range(seeds))])

    def setup(variant, **kwargs):
        n = epochs or (QUICK_EPOCHS if quick else EPOCHS[variant])
        every = stride(n, n // RECORDS)
        return Setup(hidden=HIDDEN, epochs=n, evals=n // stride(n, VAL_EVERY), final_eval=True,
                     scored=("eval_acc", "train_acc", "val_acc"), tracking=Tracking(every=every, measures_every=every),
                     **kwargs)

    faithful = dict(task=TwoGaussians(harmonic_gaps=True, random_covariance=True), activations=("sigmoid",),
                    loss="mse", init_biases=True, penalty_mean=True)
    programs = [Program(f"faithful {kind}", setup("faithful", regularizer=kind, **faithful),
                        runs("faithful", kind, ((0.0,) if kind == "l1" else ()) + FAITHFUL_STRENGTHS, "sigmoid"))
                for kind in ("l1", "l2")]
    for kind, strengths in STRENGTHS.items():
        programs.append(Program(f"stated {kind}", setup("stated", regularizer=kind, activations=("relu",)),
                                runs("stated", kind, ((0.0,) if kind == "l1" else ()) + strengths, "relu")))
    return programs


# --- analysis: everything below reads the results only -----------------------

WEIGHT_STATS = ["mean_abs_w", "small_frac", "rel_small_frac", "zero_frac"]
READABLE = {"mean_abs_w": "mean |w|", "small_frac": f"fraction |w| < {SMALL:g}",
            "rel_small_frac": "fraction |w| < 5% of mean |w|", "zero_frac": "fraction w = 0",
            "train_acc": "training accuracy", "eval_acc": "large-sample accuracy",
            "gap": "generalization gap"}


def per_run(results: Results) -> pd.DataFrame:
    """One row per run at its last epoch: accuracies (and `stopped_acc`, the
    large-sample accuracy at the epoch with the best validation accuracy:
    early stopping), the generalization gap (train minus large-sample
    accuracy), the weight statistics over all weight matrices (each weighted
    by its size) and of the first layer (`_l0`), and the largest norm of a
    unit's incoming weights in any layer."""
    frame, layers = results.frame, results.tables["layers"]
    keys = [*CONDITION, "seed"]
    last = stats.at_last_epoch(frame, keys).set_index(keys)
    final = stats.at_last_epoch(layers, [*keys, "layer"])
    sizes = np.array([np.prod(row["kernel"]) for row in results.metadata["programs"][0]["model"]])
    share = final["layer"].map(dict(enumerate(sizes / sizes.sum())))
    last = last.join(final[keys].join(final[WEIGHT_STATS].mul(share, axis=0)).groupby(keys).sum())
    last = last.join(final[final["layer"] == 0].set_index(keys)[WEIGHT_STATS].add_suffix("_l0"))
    last = last.join(final.groupby(keys)["max_unit_norm"].max())
    last["gap"] = last["train_acc"] - last["eval_acc"]
    return last.rename(columns={"best_eval_acc": "stopped_acc"}).reset_index()


def collapsed(runs: pd.DataFrame) -> pd.Series:
    """Per condition: whether its mean large-sample accuracy is within `COLLAPSED` of chance."""
    return (runs.groupby(CONDITION)["eval_acc"].mean() < CHANCE + COLLAPSED).rename("collapsed")


def strongest(runs: pd.DataFrame, regularizers) -> list[tuple]:
    """Per variant and regularizer, its strongest strength that has not collapsed to chance."""
    alive = collapsed(runs).loc[lambda c: ~c].reset_index()[CONDITION]
    alive = alive[alive["regularizer"].isin(regularizers)]
    top = alive.loc[alive.groupby(["variant", "regularizer"])["strength"].idxmax()]
    return [tuple(row) for row in top.itertuples(index=False)]


def condition_label(regularizer: str, strength: float) -> str:
    return "none" if regularizer == "none" else f"{regularizer} {strength:g}"


def conditions(runs: pd.DataFrame, regularizers) -> list[tuple]:
    """(variant, regularizer, strength) present in the results, in grid order."""
    present = runs[CONDITION].drop_duplicates()
    return [tuple(row) for row in present[present["regularizer"].isin(regularizers)].itertuples(index=False)]


def versus_none(runs: pd.DataFrame, value: str, picks) -> dict[str, pd.Series]:
    """Per condition: `value` minus the same seed's unregularized run, by seed."""
    table = runs.pivot_table(index=["variant", "seed"], columns=["regularizer", "strength"], values=value)
    return {f"{variant} / {condition_label(regularizer, strength)}":
            table.loc[variant][(regularizer, strength)] - table.loc[variant][("none", 0.0)]
            for variant, regularizer, strength in picks}


def best_versus_none(runs: pd.DataFrame, regularizers, value: str = "eval_acc") -> dict[str, pd.Series]:
    """Per variant and regularizer, the strength with the best mean `value`
    on the even seeds, against no regularization on the odd seeds."""
    selects = stats.selection_half(runs["seed"])
    means = runs[selects & runs["regularizer"].isin(regularizers)].groupby(CONDITION, sort=False)[value].mean()
    best = list(means.groupby(level=[0, 1], sort=False).idxmax())
    return {label: gains[~stats.selection_half(gains.index)]
            for label, gains in versus_none(runs, value, best).items()}


def claims(runs: pd.DataFrame) -> list[report.Claim]:
    """Accuracy claims are read at the end of training and, for the "helps"
    claims, also with every arm early-stopped on validation (`stopped_acc`),
    since the unregularized network overfits after an early peak; the
    "strongest" L1 is the strongest that has not collapsed to chance."""
    penalties = conditions(runs, ["l1", "l2"])
    strong = strongest(runs, ["l1", "l1_prox"])
    l2 = conditions(runs, ["l2"])
    dropout, maxnorm = conditions(runs, ["dropout"]), conditions(runs, ["maxnorm"])
    bound = runs[runs["regularizer"] == "maxnorm"]
    binds = (bound["max_unit_norm"] >= 0.999 * bound["strength"]).groupby(bound["strength"]).mean()
    binding = ", ".join(f"bound {b:g}: {share:.0%}" for b, share in binds.items())
    stopped = "both early-stopped at their best validation epoch"
    return [
        report.Claim("S-questions, conclusion", "Regularization clearly shrinks the weights.", "none given (a plot)",
                     "mean |w| over all weight matrices at the end, regularized minus unregularized, paired by "
                     "seed; claimed below 0.",
                     versus_none(runs, "mean_abs_w", penalties), 0.0, "below", stats.Unit(lambda ci: ci.format(digits=4), 0.002)),
        report.Claim("S-questions, conclusion", "Strong L1 gives sparse weights.", "none given",
                     f"fraction of weights under {SMALL:g} in magnitude (percentage points), strongest L1 (penalty "
                     "and proximal) that has not collapsed to chance minus unregularized; claimed above 0. Exact "
                     "zeros are in the table below.",
                     versus_none(runs, "small_frac", strong), 0.0, "above", stats.POINTS),
        report.Claim("S-questions, conclusion", "Strong L1 gives sparse weights (measured without a fixed scale).",
                     "none given", "fraction of weights under 5% of their matrix's mean |w| (scale-free: shrinking "
                     "every weight alike leaves it unchanged), strongest L1 that has not collapsed minus "
                     "unregularized; claimed above 0.",
                     versus_none(runs, "rel_small_frac", strong), 0.0, "above", stats.POINTS),
        report.Claim("S-questions, conclusion", "Strong L1 costs accuracy.", "none given",
                     "final large-sample accuracy, strongest L1 that has not collapsed minus unregularized; "
                     "claimed below 0.",
                     versus_none(runs, "eval_acc", strong), 0.0, "below", stats.POINTS),
        report.Claim("S-questions, conclusion", "L2 gives smaller weights but no sparsity.", "none given",
                     f"fraction of weights under {SMALL:g}, L2 minus unregularized; claimed below 5 points.",
                     versus_none(runs, "small_frac", l2), 0.05, "below", stats.POINTS),
        report.Claim("S-questions, conclusion", "L2 does no visible harm to accuracy.", "none given",
                     "final large-sample accuracy, L2 minus unregularized; claimed above -1 point.",
                     versus_none(runs, "eval_acc", l2), -0.01, "above", stats.POINTS),
        report.Claim("S-questions, hypothesis", "Mild regularization may raise accuracy.", "none given",
                     "final large-sample accuracy at the best strength of each kind (chosen by its mean on the "
                     "even seeds) minus unregularized, on the odd seeds; claimed above 0.",
                     best_versus_none(runs, ["l1", "l1_prox", "l2"]), 0.0, "above", stats.POINTS),
        report.Claim("S-questions, hypothesis", "Mild regularization may raise accuracy (against early stopping).",
                     "none given", f"large-sample accuracy, {stopped}, at the best strength of each kind (chosen "
                     "by its mean on the even seeds) minus unregularized, on the odd seeds; claimed above 0.",
                     best_versus_none(runs, ["l1", "l1_prox", "l2"], "stopped_acc"), 0.0, "above", stats.POINTS),
        report.Claim("S-tricks", "Dropout of 20-50% on hidden units (20% on the input) improves the model.",
                     "none given", "final large-sample accuracy, dropout minus unregularized; claimed above 0.",
                     versus_none(runs, "eval_acc", dropout), 0.0, "above", stats.POINTS),
        report.Claim("S-tricks", "Dropout improves the model (against early stopping).", "none given",
                     f"large-sample accuracy, {stopped}, dropout minus unregularized; claimed above 0.",
                     versus_none(runs, "stopped_acc", dropout), 0.0, "above", stats.POINTS),
        report.Claim("Srivastava et al. 2014", "Dropout reduces overfitting.", "none comparable",
                     "generalization gap (train minus large-sample accuracy), dropout minus unregularized; "
                     "claimed below 0.",
                     versus_none(runs, "gap", conditions(runs, ["dropout"])), 0.0, "below", stats.POINTS),
        report.Claim("S-tricks", "A max-norm constraint (e.g. 5) on each unit's incoming weights helps.",
                     "none given", "final large-sample accuracy, max-norm minus unregularized; claimed above 0. "
                     f"Runs with a unit at the bound at the end ({binding}): where it never binds, the claim "
                     "tests nothing.",
                     versus_none(runs, "eval_acc", maxnorm), 0.0, "above", stats.POINTS),
        report.Claim("S-tricks", "A max-norm constraint helps (against early stopping).", "none given",
                     f"large-sample accuracy, {stopped}, max-norm minus unregularized; claimed above 0.",
                     versus_none(runs, "stopped_acc", maxnorm), 0.0, "above", stats.POINTS),
    ]


def condition_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Per condition: means over seeds of the weight statistics and accuracies."""
    table = runs.groupby(CONDITION, sort=False)[
        ["mean_abs_w", "mean_abs_w_l0", "small_frac", "rel_small_frac", "zero_frac", "max_unit_norm", "train_acc",
         "test_acc", "eval_acc", "stopped_acc", "best_epoch", "gap"]].mean()
    return table.join(collapsed(runs)).reset_index().round(4)


def figures(results: Results) -> list[fig.Figure]:
    runs = per_run(results)
    weights = results.tables["weights"]
    bayes = {v: float(runs.loc[runs["variant"] == v, "bayes_acc"].mean()) for v in runs["variant"].unique()}
    out = []
    for variant, strength in [("faithful", 0.1), ("stated", 1e-2)]:
        pick = (weights["variant"] == variant) & (weights["layer"] == 0) & (weights["seed"] == weights["seed"].min()) \
            & (weights["regularizer"].isin(["none", "l1", "l2"])) \
            & (weights["strength"].isin([0.0, strength]))
        traj = weights.loc[pick].assign(condition=lambda d: [condition_label(r, s) for r, s in
                                                             zip(d["regularizer"], d["strength"])])
        traj = traj[["condition", "weight_index", "epoch", "value"]]
        if traj.empty:
            continue
        out.append(fig.Figure(f"trajectories-{variant}", f"The 50 tracked first-layer weights during training, "
                              f"unregularized, L1 and L2 at {strength:g} ({variant} variant, first seed): the "
                              "source's plot.", traj, draw_trajectories))
    swept = runs[(runs["variant"] == "stated") & runs["regularizer"].isin(["l1", "l1_prox", "l2"])]
    none = runs[(runs["variant"] == "stated") & (runs["regularizer"] == "none")]
    long = swept.melt(id_vars=[*CONDITION, "seed"], value_vars=WEIGHT_STATS, var_name="quantity")
    magnitude = stats.summarize(long.replace({"quantity": READABLE}), ["quantity", "regularizer", "strength"], "value")
    reference = none[WEIGHT_STATS].mean().rename(READABLE)

    def draw_magnitude(data):
        f = fig.facets(data, "quantity", fig.bands, x="strength", hue="regularizer", ylabel="value", sharey=False)
        for ax in f.axes:
            quantity = ax.get_title().removeprefix("quantity = ")
            ax.axhline(reference[quantity], color="grey", linestyle="--", label="none")
            ax.set_xscale("log")
            ax.set_yscale("log" if quantity == READABLE["mean_abs_w"] else "linear")
        return f

    out.append(fig.Figure("magnitude", "Mean |w| over all weight matrices, fraction of weights under 1e-3 and "
                          "fraction exactly 0, against the strength (stated variant); dashed: unregularized; "
                          "mean and 95% band over seeds.", magnitude, draw_magnitude))
    long = swept.melt(id_vars=[*CONDITION, "seed"], value_vars=["train_acc", "eval_acc"], var_name="accuracy")
    accuracy = stats.summarize(long.replace({"accuracy": READABLE}), ["accuracy", "regularizer", "strength"], "value")

    def draw_accuracy(data):
        f = fig.facets(data, "accuracy", fig.bands, x="strength", hue="regularizer", ylabel="accuracy",
                       bayes=bayes.get("stated"))
        for ax in f.axes:
            ax.set_xscale("log")
            ax.set_ylim(0.45, 1.0)
        return f

    out.append(fig.Figure("accuracy", "Final training accuracy and large-sample accuracy against the strength "
                          "(stated variant); dotted: Bayes limit; mean and 95% band over seeds.",
                          accuracy, draw_accuracy))
    others = runs[(runs["variant"] == "stated") & runs["regularizer"].isin(["none", "dropout", "maxnorm"])]
    others = others.assign(condition=[condition_label(r, s) for r, s in zip(others["regularizer"], others["strength"])])
    long = others.melt(id_vars=["condition", "seed"], value_vars=["eval_acc", "gap"], var_name="measure")
    compared = stats.summarize(long.replace({"measure": READABLE}), ["measure", "condition"], "value") \
        .assign(variant="stated")

    def draw_compared(data):
        f = fig.facets(data, "measure", fig.intervals, y="condition", hue="variant", ylabel="condition",
                       sharey=True, width=4.5)
        for ax in f.axes:
            ax.set_xlabel(ax.get_title().removeprefix("measure = "))
        return f

    out.append(fig.Figure("dropout-maxnorm", "Large-sample accuracy and generalization gap (train minus "
                          "large-sample accuracy) of dropout (input 0.2, hidden rate given) and max-norm (bound "
                          "given) against none (stated variant); mean and 95% interval over seeds.",
                          compared, draw_compared))
    out.append(fig.Figure("spec-curve", "The specification curve: each claim's verdict (a row) as stated and "
                          "with its threshold moved either way by its tolerance (the early-stopped readings are "
                          "claims of their own).", report.specification_frame(claims(runs)), fig.verdict_grid))
    return out


def draw_trajectories(data: pd.DataFrame):
    return fig.trajectories(data, "condition", ylabel="first-layer weight", sharey=True)


def section(results: Results) -> report.Section:
    runs = per_run(results)
    none = runs[(runs["variant"] == "stated") & (runs["regularizer"] == "none")]
    text = report.prose(TEXT, seeds=runs["seed"].nunique(), runs=len(runs), wall_s=results.metadata["wall_time_s"],
                        val_every=int(results.frame.loc[results.frame["val_acc"].notna(), "epoch"].min()),
                        none_best_epoch=f"{none['best_epoch'].median():g}", stated_epochs=int(none["epoch"].max()))
    return report.Section(
        title=QUESTION, intro=text["intro"], claims=claims(runs),
        tables=[("Per condition, means over seeds at the last epoch: mean |w| over all matrices and of the first "
                 "layer, fraction of weights under 1e-3, under 5% of their matrix's mean |w| and exactly 0, the "
                 "largest norm of a unit's incoming weights, accuracies (training, 100-point test, large sample, "
                 "and large sample early-stopped at the best validation epoch, `best_epoch`), the generalization "
                 "gap, and whether the condition collapsed to chance.", condition_table(runs))],
        notes=text["notes"])
