"""Q2. Do different layers converge at different speeds? (S-questions)

Two variants, in `results/layer_convergence.parquet` (per epoch), `-layers`
(per weight matrix and epoch) and `-weights` (50 sampled weights per matrix):

- `faithful`: the original code's setup: hidden (50, 50, 50), sigmoid, MSE on
  one-hot outputs, Adam 0.003, biases drawn like the weights, its random-
  covariance data; 3000 steps (four times the source's 750) recorded every 2
  (an "epoch" here), the 50 weights the last entries of each matrix, the
  source's measure the L2 norm of their change.
- `stated`: the text's task with softmax cross-entropy, hidden (50, 50, 50),
  ReLU, tanh and sigmoid, Adam and SGD each at its rate tuned per activation
  (the optimizer is a factor only where both are), 400 epochs (four times
  the source's 100, the analysis's "budget 25%"), 50 randomly sampled
  weights per matrix and the mean absolute change of them.

Layer 0 is the input layer's matrix (input -> hidden 1), layer 3 the output's.
"""

from __future__ import annotations

import functools
import itertools
from pathlib import Path

import numpy as np
import pandas as pd

from study import checks, stats
from study import figures as fig
from study.data import TwoGaussians
from study.claims import Claim, specification_frame
from study.question import Section
from study.results import Results
from study.runner import Program
from study.config import Setup, Tracking, log_epochs, stride

NAME = "layer_convergence"
TEXT = Path(__file__).with_name("text") / f"{NAME}.md"  # the report's prose
QUESTION = "Do different layers converge at different speeds?"

HIDDEN = (50, 50, 50)
ACTIVATIONS = ("relu", "tanh", "sigmoid")
FAITHFUL_RATE = 0.003  # Adam, the original code's
# Each optimizer's rate is tuned per activation on the tuning seeds' validation-best accuracy, around the source's
# 0.003 and 0.1 (a grid ending at 0.001 and 0.03 chose its bottom in five of six cells).
RATES = {"adam": (0.0003, 0.001, 0.003, 0.01), "sgd": (0.01, 0.03, 0.1, 0.3, 1.0)}
QUICK_RATES = {"adam": (0.003,), "sgd": (0.1, 1.0)}
SEEDS, TUNING_SEEDS, QUICK_SEEDS = 32, 8, 2  # evaluation seeds from the power analysis (README)
FAITHFUL_STEPS, STEPS_PER_RECORD = 3000, 2  # four times the source's 750 steps
EPOCHS, QUICK_EPOCHS = 400, 10  # four times the source's 100, so the weights can settle and its budget is a choice
RECORD_EVERY = {"faithful": 15, "stated": 8}  # epochs between kept weight samples (about 100 and 50 records)
PROBES = 50  # at most this many CKA probes per stated run, log-spaced: the convergence epochs are mostly 1 to 9
EVAL_POINTS = 5  # at most this many large-sample scores per run, the last epoch among them
VAL_POINTS = 40  # validation scorings per stated run (early stopping, tuning): every 10 epochs
CELL = ["variant", "optimizer", "activation"]
OPTIMIZER_NAMES = {"adam": "Adam", "sgd": "plain SGD"}
MOVED, NEAR, SIMILAR = 0.9, 0.1, 0.9  # thresholds of the convergence epochs below
# The per-layer measures read below; the source's tracked change is an L2 norm in its code (faithful), a mean |.|
# in the stated variant (see `tracked_change`)
READ = ("rel_change", "dist_init", "dist_final", "cka_final", "reset_acc")


def plan(seeds: int, epochs: int | None = None, quick: bool = False) -> list[Program]:
    """Three programs: faithful, and stated with Adam and with SGD (the
    optimizer is static; activations and rates are traced). The stated
    programs tune their rate per activation (`tuned`), scoring validation."""
    stated_epochs = epochs or (QUICK_EPOCHS if quick else EPOCHS)
    faithful_epochs = epochs or (QUICK_EPOCHS if quick else FAITHFUL_STEPS // STEPS_PER_RECORD)

    def runs(variant, optimizer, activations, rates):
        grid = itertools.product(activations, rates, range(seeds))
        return pd.DataFrame([{"variant": variant, "optimizer": optimizer, "activation": a, "init": "glorot_uniform",
                              "seed": s, "data_seed": s, "lr": lr} for a, lr, s in grid])

    faithful = Setup(task=TwoGaussians(harmonic_gaps=True, random_covariance=True), hidden=HIDDEN,
                     activations=("sigmoid",), loss="mse", init_biases=True, epochs=faithful_epochs,
                     evals=stride(faithful_epochs, EVAL_POINTS), steps_per_epoch=STEPS_PER_RECORD,
                     tracking=Tracking(from_end=True, every=stride(faithful_epochs, RECORD_EVERY["faithful"]),
                                       measures=("tracked_l2_change", *READ)))
    programs = [Program("faithful", faithful, runs("faithful", "adam", ("sigmoid",), (FAITHFUL_RATE,)))]
    tracking = Tracking(every=stride(stated_epochs, RECORD_EVERY["stated"]), probe_at=log_epochs(stated_epochs, PROBES),
                        measures=("tracked_abs_change", *READ))
    for optimizer, rates in (QUICK_RATES if quick else RATES).items():
        setup = Setup(hidden=HIDDEN, activations=ACTIVATIONS, optimizer=optimizer, epochs=stated_epochs,
                      evals=stride(stated_epochs, VAL_POINTS), final_eval=True, scored=("eval_acc", "val_acc"),
                      tracking=tracking)
        programs.append(Program(f"stated {optimizer}", setup, runs("stated", optimizer, ACTIVATIONS, rates),
                                tuned=("lr",)))
    return programs


# --- analysis: everything below reads the results only -----------------------

MEASURES = {  # name -> how its convergence epoch is read
    "tracked weights (source)": f"the epoch by which {MOVED:.0%} of the summed change of the 50 tracked "
                                "weights has happened (mean |change| in the stated variant, the L2 norm of "
                                "the change in the faithful one, as the original code)",
    "relative change": f"the epoch by which {MOVED:.0%} of the summed ||W_t - W_t-1|| / ||W_t|| has happened",
    "distance to final": f"the first epoch from which ||W_t - W_final|| stays under {NEAR:.0%} of "
                         "||W_0 - W_final||",
    "CKA to final": f"the first probed epoch from which the linear CKA of the layer's output on {Tracking.probe} probe "
                    f"points to its final output stays above {SIMILAR} (probed at up to {PROBES} log-spaced "
                    "epochs in the stated variant, every epoch early on; at each weight record in the faithful one)",
    "CKA gap area": "the mean of 1 - CKA to the final output over the training time (the area between the CKA "
                    "curve and 1, over the epochs spanned; no threshold): smaller converges sooner",
}
# The analysis choices the source never fixed, per measure: the share of the budget read (the
# cumulative measures only: the others are defined against the final weights), each threshold moved.
BUDGETS = {"budget 25% (the source's)": dict(budget=0.25), "budget 50%": dict(budget=0.5)}
CHOICES = {"tracked weights (source)": {**BUDGETS, "moved 80%": dict(moved=0.8)},
           "relative change": {**BUDGETS, "moved 80%": dict(moved=0.8)},
           "distance to final": {"near 20%": dict(near=0.2), "near 5%": dict(near=0.05)},
           "CKA to final": {"similar 0.8": dict(similar=0.8), "similar 0.95": dict(similar=0.95)},
           "CKA gap area": {}}


KEYS = [*CELL, "seed", "layer"]  # one weight matrix of one run


class Groups:
    """The rows of a frame sorted by (KEYS, epoch), as contiguous groups:
    per-group operations as array operations (a loop over the thousands of
    weight matrices was most of the analysis's time)."""

    def __init__(self, frame: pd.DataFrame):
        self.frame = frame
        self.id = frame.groupby(KEYS, sort=False).ngroup().to_numpy()
        self.size = np.bincount(self.id)
        self.start = np.cumsum(self.size) - self.size
        self.position = np.arange(len(frame)) - self.start[self.id]
        self.epochs = frame["epoch"].to_numpy()

    def keys(self) -> pd.DataFrame:
        return self.frame[KEYS].iloc[self.start].reset_index(drop=True)

    def first_true(self, condition: np.ndarray) -> np.ndarray:
        """The first epoch at which `condition` holds (the group's first epoch if never)."""
        first = np.full(len(self.size), np.iinfo(np.int64).max)
        np.minimum.at(first, self.id[condition], self.position[condition])
        return self.epochs[self.start + np.where(first == np.iinfo(np.int64).max, 0, first)].astype(float)

    def first_from(self, condition: np.ndarray) -> np.ndarray:
        """The first epoch from which `condition` holds to the end (the last
        epoch if it fails there)."""
        last_fail = np.full(len(self.size), -1)
        np.maximum.at(last_fail, self.id[~condition], self.position[~condition])
        return self.epochs[self.start + np.minimum(last_fail + 1, self.size - 1)].astype(float)

    def cumulative_share(self, values: np.ndarray) -> np.ndarray:
        """Each row's share of its group's total of `values`, summed up to it."""
        series = pd.Series(values)
        grouped = series.groupby(self.id)
        return (grouped.cumsum() / grouped.transform("sum")).to_numpy()

    def gap_area(self, cka: np.ndarray) -> np.ndarray:
        """The mean of 1 - CKA over the epochs spanned (trapezoid rule); the
        one value's gap for a group of one."""
        gap, later = 1 - cka, self.position > 0
        pieces = np.where(later, (gap + np.roll(gap, 1)) / 2 * (self.epochs - np.roll(self.epochs, 1)), 0.0)
        span = self.epochs[self.start + self.size - 1] - self.epochs[self.start]
        area = np.bincount(self.id, weights=pieces)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.size > 1, area / span, gap[self.start])


def convergence(layers: pd.DataFrame, budget: float = 1.0, moved: float = MOVED, near: float = NEAR,
                similar: float = SIMILAR) -> pd.DataFrame:
    """One row per (run, layer): the convergence epoch under each measure
    (the CKA gap area instead of an epoch), with the given thresholds, read
    over the first `budget` share of each variant's epochs."""
    last = layers.groupby("variant")["epoch"].transform("max")
    layers = layers[layers["epoch"] <= budget * last].sort_values([*KEYS, "epoch"], kind="stable")
    runs = Groups(layers)
    out = runs.keys()
    for name, series in [("tracked weights (source)", tracked_change(layers)), ("relative change", layers["rel_change"])]:
        out[name] = runs.first_true(runs.cumulative_share(series.to_numpy()) >= moved)
    dist_init_last = layers.groupby(KEYS, sort=False)["dist_init"].transform("last").to_numpy()
    out["distance to final"] = runs.first_from(layers["dist_final"].to_numpy() <= near * dist_init_last)
    probed = layers.dropna(subset=["cka_final"])
    cka = Groups(probed)
    found = cka.keys().assign(**{"CKA to final": cka.first_from(probed["cka_final"].to_numpy() >= similar),
                                 "CKA gap area": cka.gap_area(probed["cka_final"].to_numpy())})
    return out.merge(found, on=KEYS, how="left")  # NaN where nothing was probed within the budget


def order_statistic(conv: pd.DataFrame) -> pd.DataFrame:
    """Per run and measure: Spearman's rho between layer index and its
    convergence epoch (negative: later layers converge first): the Pearson
    correlation of their ranks, for every run at once; 0 where the epochs
    are all equal, NaN where one is missing."""
    long = conv.melt(id_vars=KEYS, var_name="measure", value_name="epoch")
    run = [long[k] for k in [*CELL, "seed", "measure"]]
    ranks = long[["layer", "epoch"]].groupby(run).rank()
    centred = ranks - ranks.groupby(run).transform("mean")
    products = centred.assign(both=centred["layer"] * centred["epoch"], layer=centred["layer"] ** 2,
                              epoch=centred["epoch"] ** 2).groupby(run).sum()
    rho = products["both"] / np.sqrt(products["layer"] * products["epoch"])
    missing = long["epoch"].isna().groupby(run).any()
    constant = long["epoch"].groupby(run).nunique() <= 1
    return rho.where(~missing, np.nan).where(~constant, 0.0).rename("rho").reset_index()


def cell_label(key) -> str:
    return " / ".join(key)


def rho_cells(conv: pd.DataFrame, measure: str, optimizer: str, name_first: bool = True,
              keep: pd.Index | None = None) -> dict[str, pd.Series]:
    """Per cell of `optimizer` (of those in `keep`, if given and any is): each
    run's rho of `measure` (labelled with the layer of earliest mean
    convergence). Every cell where none is kept: a claim keeps its cells."""
    conv = conv[conv["optimizer"] == optimizer]
    kept = pd.MultiIndex.from_frame(conv[CELL]).isin(keep) if keep is not None else np.ones(len(conv), bool)
    conv = conv[kept] if kept.any() else conv
    order = order_statistic(conv[[*KEYS, measure]])
    first = conv.groupby([*CELL, "layer"])[measure].mean().groupby(CELL).idxmin()  # (*cell, layer)
    return {cell_label(key) + (f" (first: layer {first[key][-1]})" if name_first else ""): g.set_index("seed")["rho"]
            for key, g in order.groupby(CELL, sort=False)}


LATE, SETTLED = 0.75, 0.10  # the budget's last quarter; at most this share of convergence epochs in it
SETTLED_BY = {m: m for m in MEASURES} | {"CKA gap area": "CKA to final"}  # the check each measure's reading needs
EVERY_CELL = "every cell, settled or not"


def claims(results: Results) -> list[Claim]:
    """Per measure and optimizer (it sets the order), read only in the cells
    where that measure's layers settled (epochs crowding the budget's end
    read the budget, not the layers; every cell is another choice), also
    under `CHOICES`; then the design checks that each measure settled and
    each rate was tuned. Every interval reads the evaluation seeds only."""
    layers = stats.evaluation(results.tables["layers"])
    conv = convergence(layers)
    late = late_shares(conv, layers)
    alternatives = {label: convergence(layers, **choice) for options in CHOICES.values()
                    for label, choice in options.items()}  # each once
    unit = stats.Unit(0.2, digits=2, bounds=(-1.0, 1.0))  # Spearman's rho
    where = f"read in the cells where under {SETTLED:.0%} of the (run, layer) convergence epochs of {{}} fall in " \
            "the budget's last quarter (every cell if none; design checks below; every cell as another choice)"
    optimizers, out = conv["optimizer"].unique(), []
    for (measure, how), optimizer in itertools.product(MEASURES.items(), optimizers):
        keep = late.index[late[SETTLED_BY[measure]] < SETTLED]
        cells = functools.partial(rho_cells, measure=measure, optimizer=optimizer, keep=keep)
        out.append(Claim(
            source="S-questions, conclusion", text=f"Later layers converge faster. Measure: {measure}; "
            f"{OPTIMIZER_NAMES[optimizer]}.", source_number="none given (a plot)",
            statistic=f"Spearman's rho between layer index (0 = input layer) and its convergence epoch, {how}; "
            f"per run, then the mean over seeds, {where.format(SETTLED_BY[measure])}; the source claims below 0. "
            "The layer with the earliest mean convergence is named in each cell.", cells=cells(conv), threshold=0.0,
            claimed="below", unit=unit, choices={label: cells(alternatives[label]) for label in CHOICES[measure]}
            | {EVERY_CELL: cells(conv, keep=None)}))
    for optimizer in optimizers:
        cells = functools.partial(rho_cells, conv, "CKA gap area", optimizer, name_first=False)
        keep = late.index[late[SETTLED_BY["CKA gap area"]] < SETTLED]
        out.append(Claim(
            source="Raghu et al. 2017 (SVCCA); Chen et al. 2023", text="Representations converge bottom-up: "
            f"earlier layers first. {OPTIMIZER_NAMES[optimizer]}.", source_number="none comparable",
            statistic=f"Spearman's rho of the CKA gap area against layer index, {where.format('CKA to final')}; "
            "claimed above 0.", cells=cells(keep=keep), threshold=0.0, claimed="above", unit=unit,
            choices={EVERY_CELL: cells()}))
    return out + settled_checks(late, tail_shares(layers)) + [checks.tuned_check(results.frame, CELL, cell_label)]


def late_shares(conv: pd.DataFrame, layers: pd.DataFrame) -> pd.DataFrame:
    """Per cell (rows) and measure with a convergence epoch (columns): the
    share of (run, layer) convergence epochs in the last quarter of the budget."""
    budget = conv["variant"].map(layers.groupby("variant")["epoch"].max())
    late = conv[[m for m in MEASURES if m != "CKA gap area"]].gt(LATE * budget, axis=0)
    return late.groupby([conv[c] for c in CELL], sort=False).mean()


def tail_shares(layers: pd.DataFrame) -> pd.DataFrame:
    """Per cell (rows) and cumulative measure (columns): the median over
    (run, layer) of the share of its summed change made in the budget's last
    quarter. Above 1 - MOVED, the convergence epoch falls in that quarter:
    the layer is still moving there."""
    tail = layers["epoch"] > LATE * layers.groupby("variant")["epoch"].transform("max")
    runs, shares = [layers[c] for c in KEYS], {}
    changes = {"tracked weights (source)": tracked_change(layers), "relative change": layers["rel_change"]}
    for name, change in changes.items():
        share = change.where(tail, 0.0).groupby(runs).sum() / change.groupby(runs).sum()
        shares[name] = share.groupby(level=CELL, sort=False).median()
    return pd.DataFrame(shares)


def settled_checks(late: pd.DataFrame, tails: pd.DataFrame) -> list[Claim]:
    """Per measure with a convergence epoch, per cell: `late_shares`. A
    measure whose epochs crowd the budget's end reads the budget, not the
    layers; for a cumulative measure, `tail_shares` measures why."""
    def why(measure: str) -> str:
        if measure not in tails:
            return ""
        low, high = (f"{tails[measure].agg(end):.0%}" for end in ("min", "max"))
        span = low if low == high else f"{low} to {high}"
        return (f" The budget's last quarter holds a median {span} of a layer's summed change over the cells: "
                f"above {1 - MOVED:.0%}, the {MOVED:.0%} mark falls in it, and a layer still moving at a steady rate "
                "makes a larger share of its change there the longer the budget.")

    return [Claim(source="this study", text=f"Layers settle within the budget. Measure: {measure}.",
                  source_number="none", statistic="the share of (run, layer) convergence epochs in the last quarter "
                  f"of the budget, per cell; measured once; claimed below {SETTLED:.0%}.{why(measure)}",
                  cells=checks.once(shares, cell_label), threshold=SETTLED, claimed="below", design_check=True,
                  unit=checks.SHARE)
            for measure, shares in late.items()]


def per_layer(frame: pd.DataFrame, layers: pd.DataFrame) -> pd.DataFrame:
    """One row per (run, layer) at the end: accuracy drop when the layer is reset to its initial weights."""
    final = stats.at_last_epoch(frame, [*CELL, "seed"])[[*CELL, "seed", "eval_acc"]]
    last = stats.at_last_epoch(layers, KEYS)[[*KEYS, "reset_acc"]].merge(final, on=[*CELL, "seed"])
    return last.assign(reset_drop=last["eval_acc"] - last["reset_acc"])


def reset_table(frame: pd.DataFrame, layers: pd.DataFrame) -> pd.DataFrame:
    drops = per_layer(frame, layers)
    table = stats.summarize(drops, [*CELL, "layer"], "reset_drop")
    table["accuracy drop, points [95% CI]"] = [stats.Interval(m, lo, hi, n).format(scale=100, digits=1)
                                               for m, lo, hi, n in table[["mean", "lo", "hi", "n"]].to_numpy()]
    return table.pivot(index=CELL, columns="layer", values="accuracy drop, points [95% CI]") \
        .rename(columns=lambda layer: f"layer {layer}").reset_index()


def tracked_change(layers: pd.DataFrame) -> pd.Series:
    """The source's measure: the L2 norm of the tracked weights' change in the
    faithful variant (the original code), their mean |change| in the stated one."""
    return layers["tracked_l2_change"].where(layers["variant"] == "faithful", layers["tracked_abs_change"])


def normalized_measures(layers: pd.DataFrame) -> pd.DataFrame:
    """The four measures per (run, layer, epoch) on comparable scales."""
    g = layers.assign(tracked=tracked_change(layers)).groupby([*CELL, "seed", "layer"])
    out = layers[[*CELL, "seed", "layer", "epoch"]].copy()
    out["tracked weights (source)"] = tracked_change(layers) / g["tracked"].transform("max")
    out["relative change"] = layers["rel_change"]
    out["distance to final"] = layers["dist_final"] / g["dist_init"].transform("last")
    out["CKA to final"] = layers["cka_final"]
    return out.melt(id_vars=[*CELL, "seed", "layer", "epoch"], var_name="measure").dropna(subset=["value"])


def draw_trajectories(data: pd.DataFrame):
    return fig.trajectories(data, "layer", ylabel="weight value", title="layer {}", width=3.8)


def draw_measures(data: pd.DataFrame):
    f = fig.facets(data, "measure", fig.bands, x="epoch", hue="layer", ylabel="value", sharey=False)
    for ax in [ax for ax in f.axes if ax.get_title().endswith("change")]:
        ax.set_yscale("log")
    return f


def draw_summary(data: pd.DataFrame):
    f = fig.facets(data, "measure", fig.intervals, y="cell", hue="layer", ylabel="cell", width=4.5, height=4.5)
    for ax in f.axes:
        ax.set_title(ax.get_title().removeprefix("measure = "), fontsize=9)
        ax.set_xlabel("convergence epoch")
    return f


def figures(results: Results, claims: list[Claim]) -> list[fig.Figure]:
    chosen = results.frame.loc[results.frame["selected"], [*CELL, "lr"]].drop_duplicates()  # one run per seed
    layers, weights = stats.evaluation(results.tables["layers"]), results.tables["weights"].merge(chosen)
    conv, norm, out = convergence(layers), normalized_measures(layers), []
    for key in [("faithful", "adam", "sigmoid"), ("stated", "adam", "relu")]:
        label, words = "-".join(key), ", ".join(key)
        pick = (weights[CELL] == list(key)).all(axis=1) & (weights["seed"] == weights["seed"].min())
        out.append(fig.Figure(f"trajectories-{label}", f"The 50 tracked weights of each layer during training, "
                              f"one run ({words}, first seed): the source's plot.",
                              weights.loc[pick, ["layer", "weight_index", "epoch", "value"]], draw_trajectories))
        cell = norm[(norm[CELL] == list(key)).all(axis=1)].sort_values("layer", kind="stable")
        summary = stats.summarize(cell.assign(layer="layer " + cell["layer"].astype(str)),
                                  ["measure", "layer", "epoch"], "value")
        out.append(fig.Figure(f"measures-{label}", f"The four convergence measures per layer over epochs "
                              f"({words}); tracked change scaled to its maximum, distance to final scaled to its "
                              "start; mean and 95% band over seeds.", summary, draw_measures))
    long = conv.melt(id_vars=KEYS, var_name="measure", value_name="epoch").sort_values("layer", kind="stable")
    long["cell"] = long[CELL].agg(" / ".join, axis=1)
    summary = stats.summarize(long.assign(layer="layer " + long["layer"].astype(str)),
                              ["measure", "cell", "layer"], "epoch")

    out.append(fig.Figure("summary", "Convergence epoch per layer under each measure, mean and 95% interval over "
                          "seeds; the claims' verdicts per measure are in the table above.", summary, draw_summary))
    out.append(fig.Figure("spec-curve", "The specification curve: each claim's verdict (a row) as stated, with "
                          "its threshold moved either way by its tolerance, and under each analysis choice the "
                          "source never fixed (the share of the budget read, each measure's threshold, every cell "
                          "instead of the settled ones); blank where a claim has no such choice.",
                          specification_frame(claims), fig.verdict_grid))
    return out


def section(results: Results, claims: list[Claim]) -> Section:
    frame, layers = stats.evaluation(results.frame), stats.evaluation(results.tables["layers"])
    order = order_statistic(convergence(layers))
    means = order.groupby(["measure", "optimizer"], sort=False)["rho"].mean().unstack()
    optimizer_order = "; ".join(f"{measure}: " + ", ".join(f"{OPTIMIZER_NAMES[o]} {rho:+.2f}" for o, rho in row.items())
                                for measure, row in means.iterrows())
    fields = dict(seeds=frame["seed"].nunique(), wall_s=results.metadata["wall_time_s"],
                  optimizer_order=optimizer_order, runs=results.frame.groupby([*CELL, "lr", "seed"]).ngroups)
    return Section(fields, [
        ("Accuracy drop on the large sample (points, mean and 95% CI over seeds) when one layer is "
         "reset to its initial weights after training; layer 0 is the input layer.", reset_table(frame, layers))])
