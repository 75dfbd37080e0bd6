"""Q4's figures."""

from __future__ import annotations

import pandas as pd

from study import figures as fig
from study import stats
from study.claims import Claim
from study.results import Results
from experiments.transfer.analysis import (
    TOLERANCE, cell_name, convergence, per_run, phase_diagram, step_flops, transfer_model, with_arms,
)
from experiments.transfer.design import CONDITION, FROZEN, FROZEN_K, LAYERS, NO_FREEZE, REINITIALIZED


UNRESOLVED = {"tie": "tie", "inconclusive": "unresolved", "contradicted": "unresolved"}  # verdict -> cell colour


PHASE_NOTES = {"reproduced": "", "tie": " (tie)", "inconclusive": " (ns)", "contradicted": " (ns)"}


def depth_arms() -> dict[str, int]:
    """The freeze-depth sweep: arm -> trained top layers."""
    return {"feature_extraction": 1, **{f"finetune_top k={k}": k for k in range(2, LAYERS)}, NO_FREEZE: LAYERS}


def picked_sizes(runs: pd.DataFrame) -> list[int]:
    sizes = sorted(runs["n_target"].unique())
    return list(dict.fromkeys([sizes[0], sizes[len(sizes) // 2], sizes[-1]]))


def rate_curves(frame: pd.DataFrame, runs: pd.DataFrame) -> pd.DataFrame:
    """For three cells (small and similar, the middle, large and dissimilar):
    each arm's mean final validation accuracy over the tuning seeds (which
    alone train the grid) per rate of its grid (a 2-D grid at its best head
    rate per body rate), the selected rate marked."""
    sizes, sims = picked_sizes(runs), sorted(runs["similarity"].unique())
    cells = list(dict.fromkeys([(sizes[0], sims[-1]), (sizes[len(sizes) // 2], sims[len(sims) // 2]),
                                (sizes[-1], sims[0])]))
    last = with_arms(stats.at_last_epoch(stats.tuning(frame), [*CONDITION, "seed"]))
    last = last[[(n, s) in cells for n, s in zip(last["n_target"], last["similarity"])]]
    means = last.groupby(["n_target", "similarity", "arm", "lr", "head_lr"], as_index=False).agg(
        val_acc=("val_acc", "mean"), selected=("selected", "first"))
    best = means.sort_values("val_acc", ascending=False).drop_duplicates(["n_target", "similarity", "arm", "lr"])
    best = best.assign(selected=best["selected"] & best.groupby(["n_target", "similarity", "arm"])["selected"]
                       .transform("any"), cell=[cell_name(n, s) for n, s in zip(best["n_target"], best["similarity"])])
    return best.sort_values(["n_target", "arm", "lr"])[["cell", "arm", "lr", "head_lr", "val_acc", "selected"]]


def draw_rate_curves(data: pd.DataFrame):
    def panel(part, ax):
        colors = fig.palette(list(dict.fromkeys(data["arm"])))
        for arm, line in part.groupby("arm", sort=False):
            ax.plot(line["lr"], line["val_acc"], color=colors[arm], marker=".", label=arm)
            chosen = line[line["selected"]]
            ax.scatter(chosen["lr"], chosen["val_acc"], s=90, facecolors="none", edgecolors=colors[arm], zorder=3)
        ax.set_xscale("log")
        ax.set_xlabel("learning rate (body, or the head alone)")

    return fig.facets(data, "cell", panel, ylabel="mean final validation accuracy", width=4.6)


def draw_phase(data: pd.DataFrame):
    """A cell takes its best arm's colour only where the margin's interval
    says it is better; ties and unresolved cells (the interval reaches past
    the tie band on both sides, or below it) are shown as such."""
    winner = data["best"].where(data["verdict"] == "reproduced", data["verdict"].map(UNRESOLVED))
    grid = data.assign(winner=winner).pivot(index="similarity", columns="n_target", values="winner")
    notes = data.assign(note=[f"{b}\n{100 * m:+.1f} pt{PHASE_NOTES[v]}\nvs {r}" for b, m, v, r in
                              zip(data["best"], data["margin"], data["verdict"], data["runner_up"])])
    notes = notes.pivot(index="similarity", columns="n_target", values="note")
    arms = sorted(set(winner) - set(UNRESOLVED.values()))
    return fig.category_grid(grid.sort_index(ascending=False), notes.sort_index(ascending=False),
                             xlabel="target examples per class", ylabel="similarity to the source",
                             colors={**fig.palette(arms), "tie": fig.VERDICT_COLORS["tie"],
                                     "unresolved": fig.VERDICT_COLORS["inconclusive"]})


def stfjs_curves(frame: pd.DataFrame, runs: pd.DataFrame) -> pd.DataFrame:
    """S-tfjs's three modes at the largest size and the two extreme similarities: loss and accuracy per epoch."""
    sims = sorted(runs["similarity"].unique())
    modes = {FROZEN: f"frozen ({LAYERS - FROZEN_K} of {LAYERS} layers)", NO_FREEZE: "no freeze",
             REINITIALIZED: "re-initialized"}
    chosen = with_arms(stats.evaluation(frame[frame["selected"]]))
    curves = chosen[(chosen["n_target"] == runs["n_target"].max()) & chosen["similarity"].isin([sims[0], sims[-1]])]
    curves = curves.assign(mode=curves["arm"].map(modes)).dropna(subset=["mode"])
    long = curves.melt(id_vars=["mode", "similarity", "seed", "epoch"], value_vars=["train_loss", "test_acc"],
                       var_name="measure")
    long["panel"] = long["measure"].map({"train_loss": "training loss", "test_acc": "test accuracy"}) + \
        ", similarity " + long["similarity"].map("{:g}".format)
    return stats.summarize(long, ["panel", "mode", "epoch"], "value")


def step_costs(results: Results, runs: pd.DataFrame) -> pd.DataFrame:
    """Per number of trained top layers: the measured step time and the step's FLOPs, relative to training all."""
    model = transfer_model(results)
    times = runs[runs["arm"].isin(depth_arms())].groupby("trainable_layers")["step_time_s"].first()
    return pd.DataFrame([{"trainable_layers": k, "quantity": quantity, "relative to training all": value}
                         for k in times.index
                         for quantity, value in [("measured step time", times[k] / times[LAYERS]),
                                                 ("step FLOPs (layer model)",
                                                  step_flops(model, k) / step_flops(model, LAYERS))]])


def figures(results: Results, claims: list[Claim]) -> list[fig.Figure]:
    frame = results.frame
    runs = per_run(frame)
    depth = runs[runs["arm"].isin(depth_arms()) & runs["n_target"].isin(picked_sizes(runs))]
    depth = stats.summarize(depth.assign(similarity=depth["similarity"].map("{:g}".format)),
                            ["n_target", "similarity", "trainable_layers"], "eval_acc")
    bounds = (-100 * TOLERANCE, 100 * TOLERANCE)
    return [
        fig.Figure("phase", "The best strategy (colour) in each cell of target size x similarity, by mean "
                   "final validation accuracy over the tuning seeds, every strategy at its learning rates "
                   "chosen on validation (arms that are the same runs counted once); text: the best, its "
                   "margin over the runner-up (chosen on the tuning seeds too) with its 95% interval, paired "
                   "by seed on the evaluation seeds, and the runner-up; the best arm's colour only where that "
                   "interval lies above the half-point tie band; blue, 'tie', where it lies within the band; "
                   "grey, 'unresolved' ('(ns)'), where it reaches out of the band and includes 0 or lies below.",
                   phase_diagram(runs), draw_phase),
        fig.Figure("learning-rate", "Every arm's learning-rate curve in three cells: mean final validation "
                   "accuracy over seeds per rate of its grid (for finetune_all and staged at the best head "
                   "rate per body rate), on the tuning seeds; circles mark the rates selected.",
                   rate_curves(frame, runs), draw_rate_curves),
        fig.Figure("convergence", "The convergence check: per arm (at its selected rates) and cell, the "
                   "change of the mean validation accuracy over the evaluation seeds from 60% to 80% of its "
                   "training, the last stretch at a constant rate before it decays; dashed: the 0.2-point bound.",
                   convergence(frame).assign(change=lambda d: 100 * d["change"]),
                   lambda d: fig.strips(d, x="change", y="arm", hue="n_target", bounds=bounds,
                                        xlabel="change of mean validation accuracy from 60% to 80% of "
                                               "training (points)")),
        fig.Figure("freeze-depth", "Final large-sample accuracy against the number of top layers trained "
                   "(1: feature extraction, 5: fine-tune all), each at its rates chosen on validation, for "
                   "three target sizes; mean and 95% band over seeds.", depth,
                   lambda d: fig.facets(d, "n_target", fig.bands, x="trainable_layers", hue="similarity",
                                        ylabel="final accuracy")),
        fig.Figure("stfjs", "S-tfjs's comparison at the largest target size: frozen feature layers, "
                   "nothing frozen and re-initialized weights, each at its rates chosen on validation: mean "
                   "minibatch loss of each epoch and test-split accuracy after it, at similarity 1 and 0; "
                   "mean and 95% band over seeds.", stfjs_curves(frame, runs),
                   lambda d: fig.facets(d, "panel", fig.bands, x="epoch", hue="mode", ylabel="value",
                                        sharey=False, width=3.6)),
        fig.Figure("step-time", "Training time per step (the whole program's, evaluation included) "
                   "against the number of trained top layers, relative to training all 5, beside the "
                   "step's FLOPs from the layer shapes (forward, the trained layers' weight gradients, "
                   "and the input gradients above the lowest trained layer).", step_costs(results, runs),
                   lambda d: fig.lines(d, x="trainable_layers", y="relative to training all", hue="quantity",
                                       ylim=(0, 1.1))),
    ]
