"""Q4's claims: the design checks of its comparison, then the sources' claims."""

from __future__ import annotations

import numpy as np
import pandas as pd

from study import checks, stats
from study.claims import Claim
from study.results import Results
from experiments.transfer.analysis import (
    LAST_SHARE, TOLERANCE, by_seed, cell_name, convergence, first_epoch_runs, grid_edges, per_run, scenario_cells,
    versus,
)
from experiments.transfer.design import (
    DECAY, FIRST_EPOCH, FROZEN, HEAD_RATES, LAYERS, NO_FREEZE, SMALL_BLOCK_RATES, STAGED_RATES, TARGET_TASK, WIDE,
)


def step_ratio(runs: pd.DataFrame, slow: str, fast: str) -> dict[str, stats.Interval]:
    """One timing per program, so the 'interval' is the measured ratio itself."""
    times = runs.groupby("arm")["step_time_s"].first()
    return {f"{slow} / {fast}": checks.measured(times[slow] / times[fast])}


def rate_ratio(runs: pd.DataFrame, arm: str, other: str, cells) -> dict[str, stats.Interval]:
    """Per cell: log10 of `arm`'s learning rate chosen on validation over
    `other`'s (one choice per cell, so measured once)."""
    rates = runs.groupby(["n_target", "similarity", "arm"])["lr"].first()
    return {cell_name(n, s): checks.measured(np.log10(rates[n, s, arm] / rates[n, s, other])) for n, s in cells}


def mean_rate_ratio(runs: pd.DataFrame, arms: list[str], other: str) -> dict[str, stats.Interval]:
    """Per arm: the mean over every cell of log10 of its chosen (body) rate over `other`'s (measured once)."""
    rates = runs.groupby(["arm", "n_target", "similarity"])["lr"].first().unstack("arm")
    return {arm: checks.measured(np.log10(rates[arm] / rates[other]).mean()) for arm in arms}


def edge_shares(edges: pd.DataFrame, axis: str) -> dict[str, stats.Interval]:
    """Per arm with a grid on `axis`: the share of its cells whose chosen rate
    lies on an end of the axis and beats its inner neighbour by more than `TOLERANCE`."""
    part = edges[edges["axis"] == axis]
    return {arm: checks.measured(rows["rising"].mean()) for arm, rows in part.groupby("arm")}


def design_checks(results: Results, runs: pd.DataFrame) -> list[Claim]:
    """What makes the comparison fair, each checked on the results (a table
    of checks, one entry each: long because they are many). Grids are read
    on the tuning seeds, which alone train them; the rest on the evaluation seeds."""
    frame, probe = results.frame, stats.evaluation(results.tables["probe"])
    source = stats.evaluation(results.tables["source"])
    runs = stats.evaluation(runs)
    sizes, sims = sorted(runs["n_target"].unique()), sorted(runs["similarity"].unique())
    final = stats.at_last_epoch(source, ["model", "seed"]).pivot(index="seed", columns="model", values="eval_acc")
    cell = ["n_target", "similarity", "seed"]
    extraction = runs[runs["arm"] == "feature_extraction"].merge(probe[[*cell, "probe_acc"]], on=cell)
    extraction["share"] = extraction["eval_acc"] / extraction["probe_acc"]
    edges, converged = grid_edges(frame), convergence(frame)
    spans = ", ".join(f"{a} to {b}" for a, b in sorted(set(zip(converged["from_epoch"], converged["to_epoch"]))))
    points = stats.Unit(TOLERANCE / 4, scale=100, digits=2, suffix=" pt")  # a tie within 0.05 pt of 0.2
    share = stats.Unit(0.05, scale=100, digits=0, suffix="%", bounds=(0.0, 1.0))
    check = dict(design_check=True, source="this study", source_number="none")
    def ends(axis: str) -> str:
        return (f"by more than {100 * TOLERANCE:g} pt of mean validation accuracy over the tuning seeds (the best "
                f"rate may lie beyond the grid; {checks.beyond_noise(edges[edges['axis'] == axis])}), per arm over "
                "its cells, measured once; claimed below 10%.")

    return [
        Claim(text="The source task needs the hidden layers.",
              statistic="the source MLP's final large-sample accuracy minus a linear classifier's on the raw "
                        "inputs, paired by seed; claimed above 10 points.",
              cells={"source task": final["mlp"] - final["linear"]}, threshold=0.10, claimed="above",
              unit=stats.POINTS, **check),
        Claim(text="The feature-extraction head is trained to convergence: it reaches 98% of a converged "
                   "linear probe on the same features.",
              statistic="feature_extraction's final large-sample accuracy over that of an L-BFGS logistic "
                        "regression on the same frozen features and training prefix, per seed averaged "
                        "over the similarities, per size; claimed above 0.98.",
              cells={f"n = {n}/class": extraction[extraction["n_target"] == n].groupby("seed")["share"].mean()
                     for n in sizes}, threshold=0.98, claimed="above",
              unit=stats.Unit(0.01), **check),
        Claim(text="Every selected body (or only) learning rate lies inside its grid, or where the curve is flat.",
              statistic="the share of cells whose selected rate of the layers below the head (or of every "
                        "layer, or of a head alone; not staged_small's, S-finetune's rate) lies on an end of "
                        "the arm's grid and beats its inner "
                        f"neighbour {ends('lr')}",
              cells=edge_shares(edges, "lr"), threshold=0.10, claimed="below", unit=share, **check),
        Claim(text="Every selected arm has converged before its rate decays.",
              statistic=f"per arm, the largest rise over its cells of the mean validation accuracy over "
                        f"the evaluation seeds across the last {LAST_SHARE:.0%} of its training at a constant "
                        f"rate (epochs {spans}; the rate then decays to 0 over the last {DECAY:.0%}), each arm "
                        f"at its selected rates; measured once; claimed below {100 * TOLERANCE:g} pt.",
              cells={arm: checks.measured(part["change"].max()) for arm, part in converged.groupby("arm")},
              threshold=TOLERANCE, claimed="below", unit=points, **check),
        Claim(text="Every new head beside trained layers has its rate tuned, inside its grid.",
              statistic=f"the share of cells whose selected head rate (grid {', '.join(f'{r:g}' for r in HEAD_RATES)}"
                        ", or staged's own head grid) lies on an end of the grid and beats its inner "
                        f"neighbour {ends('head_lr')}",
              cells=edge_shares(edges, "head_lr"), threshold=0.10, claimed="below", unit=share, **check),
        Claim(text="Frozen source features are worth less as similarity falls.",
              statistic="feature_extraction's final accuracy at similarity 1 minus at similarity 0, paired "
                        "by seed, per size; claimed above 0.",
              cells={f"n = {n}/class": by_seed(runs, n, sims[-1])["feature_extraction"]
                     - by_seed(runs, n, sims[0])["feature_extraction"] for n in sizes},
              threshold=0.0, claimed="above", unit=stats.POINTS, **check)]


def claims(results: Results) -> list[Claim]:
    """The design checks, then the sources' claims."""
    runs = per_run(results.frame)
    return design_checks(results, runs) + source_claims(runs, first_epoch_runs(results.tables[FIRST_EPOCH]))


def source_claims(runs: pd.DataFrame, first: pd.DataFrame) -> list[Claim]:
    """The sources' claims, each arm at its rates chosen on validation.
    S-tfjs's first-epoch claims read `first`, its two modes trained one
    epoch at the rates best after that epoch (speed of learning); every
    other claim reads the end point (`runs`). A table of claims, one entry
    each: long because the claims are many."""
    scenarios = scenario_cells(runs)
    sizes, sims = sorted(runs["n_target"].unique()), sorted(runs["similarity"].unique())
    corners = [(n, s) for n in (sizes[0], sizes[-1]) for s in (sims[0], sims[-1])]
    largest = [(sizes[-1], s) for s in sims]
    tuned = [f"finetune_top k={k}" for k in range(2, LAYERS)] + [NO_FREEZE, "wide_head"]
    staged = {f"{label}, {cell}": values for label, arm in [("S-finetune's rate", "staged_small"), ("tuned", "staged")]
              for cell, values in versus(runs, arm, "feature_extraction", corners).items()}
    advice = [(("small", "similar"), "feature_extraction", "a linear classifier on the last hidden layer's features"),
              (("large", "similar"), "finetune_all", "fine-tune the whole network"),
              (("small", "dissimilar"), "feature_extraction_early", "a linear classifier on an earlier layer"),
              (("large", "dissimilar"), "scratch", "train from scratch")]
    end = "End point:"
    out = []
    for (size, sim), arm, words in advice:
        out.append(Claim(source="S-questions", text=f"{size.capitalize()} and {sim} target: {words}.",
                         source_number="none given",
                         statistic=f"{end} final large-sample accuracy of {arm} minus the best other strategy in the "
                         "cell (chosen by its mean on the tuning seeds, among the alternatives to it: never an arm "
                         "whose runs are its own, nor wide_head for finetune_all, nor a rate variant), paired by "
                         "seed on the evaluation seeds; claimed above 0.",
                         cells=versus(runs, arm, None, scenarios[(size, sim)]), threshold=0.0, claimed="above",
                         unit=stats.POINTS))
    out += [
        Claim(source="S-questions",
              text="Large and dissimilar: fine-tuning often still helps over training from scratch.",
              source_number="none given",
              statistic=f"{end} final accuracy of finetune_all minus scratch; claimed above 0.",
              cells=versus(runs, NO_FREEZE, "scratch", scenarios[("large", "dissimilar")]), threshold=0.0,
              claimed="above",
              unit=stats.POINTS),
        Claim(source="this study", text="Pretrained features beat random ones of the same shape.", source_number="none",
              statistic=f"{end} final accuracy of feature_extraction minus random_features (a new head on a frozen "
              "random body); claimed above 0.",
              cells=versus(runs, "feature_extraction", "random_features", corners), threshold=0.0, claimed="above",
              unit=stats.POINTS),
        Claim(source="S-questions, S-tricks", text="Fine-tune pretrained weights with a small learning rate.",
              source_number="none given",
              statistic="per fine-tuning arm, the mean over every cell of log10 of the rate of its pretrained "
              "layers chosen on validation over scratch's (a small rate: smaller than from scratch; measured "
              "once); claimed below 0, a tie within a quarter of a decade.",
              cells=mean_rate_ratio(runs, tuned, "scratch"), threshold=0.0, claimed="below",
              unit=stats.Unit(0.25, digits=2, suffix=" decades")),
        Claim(source="S-tricks", text="Leave the first layers alone (freeze them).", source_number="none given",
              statistic=f"{end} final accuracy with the first layer frozen (finetune_top k={LAYERS - 1}) minus with "
              "none frozen (finetune_all); claimed above 0.",
              cells=versus(runs, f"finetune_top k={LAYERS - 1}", NO_FREEZE, corners), threshold=0.0, claimed="above",
              unit=stats.POINTS),
        Claim(source="S-tfjs", text="Freezing the feature layers lowers the loss after the first epoch.",
              source_number="0.27 vs 0.37",
              statistic=f"Speed of learning: mean minibatch loss of the first epoch (40 steps), frozen ({FROZEN}) "
              f"minus not frozen ({NO_FREEZE}), at the largest size, each mode trained one epoch at a constant "
              "rate, its rates the best on validation after that epoch (chosen on the tuning seeds); claimed "
              "below 0.",
              cells=versus(first, FROZEN, NO_FREEZE, largest, value="first_train_loss"), threshold=0.0,
              claimed="below",
              unit=stats.Unit(0.02)),
        Claim(source="S-tfjs", text="Freezing raises the accuracy after the first epoch.", source_number="0.91 vs 0.87",
              statistic="Speed of learning: test-split accuracy after the first epoch, frozen minus not frozen, "
              "each at its rates best after one epoch (as above); claimed above 0.",
              cells=versus(first, FROZEN, NO_FREEZE, largest, value="first_test_acc"), threshold=0.0, claimed="above",
              unit=stats.POINTS),
        Claim(source="S-tfjs", text="Freezing gives a higher final accuracy.", source_number="about 0.968 vs 0.945",
              statistic=f"{end} final large-sample accuracy, frozen minus not frozen; claimed above 0.",
              cells=versus(runs, FROZEN, NO_FREEZE, largest), threshold=0.0, claimed="above", unit=stats.POINTS),
        Claim(source="S-tfjs", text="Training without freezing takes about twice as long.",
              source_number="about 60 s vs 30 s",
              statistic="training time per step of the whole program (evaluation included), not frozen over "
              "frozen; one timing per program, so the interval is the ratio itself; claimed above 1.5.",
              cells=step_ratio(runs, NO_FREEZE, FROZEN), threshold=1.5, claimed="above", unit=stats.Unit(0.25,
              digits=2, suffix="x")),
        Claim(source="S-finetune", text="Training the head first, then the top block with a very small rate, beats "
              "feature extraction.", source_number="93% validation accuracy",
              statistic=f"{end} final accuracy of the staged recipe minus feature_extraction, the recipe as "
              f"stated (staged_small: its block at S-finetune's very small rate, chosen from "
              f"{', '.join(f'{r:g}' for r in SMALL_BLOCK_RATES)}) and tuned (staged: from "
              f"{', '.join(f'{r:g}' for r in STAGED_RATES)}), each head rate chosen on validation; claimed above 0.",
              cells=staged, threshold=0.0, claimed="above",
              unit=stats.POINTS),
        Claim(source="S-tricks", text="An output layer wider than the class count helps.", source_number="none given",
              statistic=f"{end} final accuracy of wide_head ({WIDE} outputs for {TARGET_TASK.classes} classes) minus "
              "finetune_all; claimed above 0.",
              cells=versus(runs, "wide_head", NO_FREEZE, corners), threshold=0.0, claimed="above", unit=stats.POINTS),
        Claim(source="S-questions, S-tricks", text="Fine-tuning wants a smaller learning rate than training from "
              "scratch.", source_number="none given",
              statistic="log10 of finetune_all's pretrained-layer rate chosen on validation over scratch's, per "
              "cell (one choice each, measured once); claimed below 0 (a smaller rate), a tie within a quarter "
              "of a decade.", cells=rate_ratio(runs, NO_FREEZE, "scratch", corners), threshold=0.0,
              claimed="below", unit=stats.Unit(0.25, digits=2, suffix=" decades")),
        Claim(source="S-questions", text="Small and dissimilar target: an earlier layer's features beat the last "
              "layer's.", source_number="none given",
              statistic=f"{end} final accuracy of feature_extraction_early (a head on the second hidden layer) "
              "minus feature_extraction (on the last), paired by seed: the comparison the advice implies; "
              "claimed above 0.", cells=versus(runs, "feature_extraction_early", "feature_extraction",
                                                scenarios[("small", "dissimilar")]),
              threshold=0.0, claimed="above", unit=stats.POINTS),
    ]
    return out
