"""Q4. Fine-tuning versus feature extraction (S-questions, S-tfjs, S-finetune, S-tricks)

A source MLP (4 hidden layers of 64 ReLU units) is pretrained once per seed
on a `Mixture` source task (its defaults: 8 classes, each the union of 3
Gaussian clusters in a 6-dimensional subspace of R^12), beside a linear
classifier on the raw inputs; its weights are kept in
`results/transfer-params.npz`. Every strategy then trains on the same target
data and seeds, over a grid of target sizes (examples per class) x
similarity to the source (see `study.data.Mixture`): 400 minibatches of 64
in 10 "epochs" of 40 (800 for the arms that train a head alone, and
staged), whatever the size (sizes are a traced prefix of one training
sample), every rate decaying to 0 along a cosine.

Every arm is tuned: its learning rates (Adam) come from a grid, and per
(size, similarity, strategy) the rates with the best mean final accuracy
on the target's validation sample are marked `selected` (never chosen on
the eval sample the verdicts read). A new head beside fine-tuned layers has
its own rate (`head_lr`): finetune_all and staged cross a grid of head
rates with their body rates; the other fine-tuning arms train the head at
`HEAD_LR`, where finetune_all's head grid is flat (a design check).

Strategies, with the number of top layers they train (`trainable_layers`,
5 = all):

- `scratch`: random initialization, every layer at one rate;
- `reinit`: finetune_all's recipe (a body rate and the head at `HEAD_LR`)
  from re-initialized weights, what the pretrained weights add to it;
- `feature_extraction`: a new head on the frozen last hidden layer;
- `feature_extraction_early`: a new head on the frozen second hidden layer;
- `random_features`: a new head on a frozen random body of the same shape
  (what pretraining adds to feature extraction);
- `finetune_top`: the top k = 2, 3, 4 layers (new head included);
- `finetune_all`: every layer from the pretrained weights;
- `staged`: the head alone for 8 epochs, then the top hidden layer and the
  head together at the body rate (S-finetune's recipe, LP-FT);
- `wide_head`: finetune_all with 9 outputs for the 6 classes.

Frozen layers are out of the optimizer (`optax.partition`), so they leave
the backward pass, and without dropout they are applied to the data once
per phase (`study.loop.frozen_view`): feature extraction trains a linear
model on fixed features, held against a converged L-BFGS linear probe on
the same features (`probe_acc`).
"""

from __future__ import annotations

import itertools
from pathlib import Path

import pandas as pd

from study import figures as fig
from study import stats
from study.data import Mixture
from study.claims import Claim, specification_frame
from study.question import Section
from study.results import Results
from study.runner import Program
from study.config import Setup

NAME = "transfer"
TEXT = Path(__file__).with_name("text") / f"{NAME}.md"  # the report's prose
QUESTION = "When should one freeze, fine-tune or train from scratch?"

HIDDEN = (64, 64, 64, 64)
EARLY = 2  # hidden layers under feature_extraction_early's head
WIDE = 9  # outputs of wide_head for the target's 6 classes
SOURCE_TASK = Mixture()
TARGET_TASK = Mixture(target=True, classes=6, clusters=4, n_train=1024, n_eval=500)
SIZES = (4, 16, 64, 256, 1024)  # examples per class
SIMILARITIES = (0.0, 0.25, 0.5, 0.75, 1.0)
SEEDS, QUICK_SEEDS = 16, 2
SOURCE_EPOCHS, EPOCHS, STEPS, BATCH, EVALS = 40, 10, 40, 64, 5
QUICK_SOURCE_EPOCHS, QUICK_EPOCHS = 2, 5
LR = 1e-3  # the source's rate
# Adam's rate grids, log-spaced around the rates each kind of arm needs (a
# pilot on 4 seeds placed them). Where a curve is flat, two points do.
SCRATCH_RATES = (1e-3, 3e-3, 1e-2)  # every layer from random weights (scratch)
REINIT_RATES = (1e-3, 3e-3, 1e-2, 3e-2)  # reinit's layers below the head
TOP_RATES = (3e-3, 1e-2, 3e-2)  # the fine-tuned layers of finetune_top and wide_head (k = 2 also 0.1)
BODY_RATES = (1e-4, 1e-3, 1e-2, 3e-2)  # finetune_all's pretrained layers (S-tricks' small rate first)
HEAD_RATES = (1e-3, 1e-2)  # finetune_all's new head: flat between them in the pilot
STAGED_RATES = (1e-2, 3e-2, 1e-1)  # staged's unfrozen block (S-finetune's very small 1e-4 and 1e-3 never won)
STAGED_HEAD_RATES = (3e-3, 1e-2, 3e-2)  # staged's head, trained alone first
# The arms whose steps are cheapest (a head alone, and staged, mostly a head
# and one layer) train this many times the epochs: at the shared budget their
# validation accuracy still rose at the largest sizes.
SLOW_ARMS_FACTOR = 2
PROBE_RATES = (3e-3, 1e-2, 3e-2, 1e-1, 3e-1)  # a new head alone on standardized frozen features
HEAD_LR = 1e-2  # the head's rate in the fine-tuning arms without a head grid
CONDITION = ["n_target", "similarity", "strategy", "trainable_layers", "lr", "head_lr"]
LAYERS = len(HIDDEN) + 1


def arms(epochs: int) -> list[dict]:
    """Every strategy's static setup fields, its epochs and its (lr, head_lr) grid."""
    pretrained = dict(pretrained=True, own_head_lr=True, epochs=epochs)
    alone = [(lr, lr) for lr in PROBE_RATES]  # the head is the only trained layer: lr is its rate
    longer = SLOW_ARMS_FACTOR * epochs
    head_alone = dict(trainable=1, standardize_features=True, epochs=longer)
    out = [dict(strategy="scratch", rates=[(lr, lr) for lr in SCRATCH_RATES], epochs=epochs),
           dict(strategy="reinit", rates=[(lr, HEAD_LR) for lr in REINIT_RATES], own_head_lr=True, epochs=epochs),
           dict(strategy="feature_extraction", rates=alone, pretrained=True, **head_alone),
           dict(strategy="feature_extraction_early", rates=alone, pretrained=True, hidden=HIDDEN[:EARLY],
                **head_alone),
           dict(strategy="random_features", rates=alone, **head_alone)]
    top = [(lr, HEAD_LR) for lr in TOP_RATES]
    out += [dict(strategy="finetune_top", rates=[(lr, HEAD_LR) for lr in TOP_RATES + (1e-1,)], trainable=2,
                 **pretrained)]
    out += [dict(strategy="finetune_top", rates=top, trainable=k, **pretrained) for k in range(3, LAYERS)]
    head_first = longer // EVALS * (EVALS // 2)  # about half, at a scored epoch
    out += [dict(strategy="finetune_all", rates=list(itertools.product(BODY_RATES, HEAD_RATES)), **pretrained),
            dict(strategy="staged", rates=list(itertools.product(STAGED_RATES, STAGED_HEAD_RATES)), trainable=2,
                 head_first=head_first, **{**pretrained, "epochs": longer}),
            dict(strategy="wide_head", rates=top, n_out=WIDE, **pretrained)]
    return out


def plan(seeds: int, epochs: int | None = None, quick: bool = False) -> list[Program]:
    """Two source programs (the MLP, whose weights are kept, and a linear
    classifier), the converged linear probe on the MLP's frozen last hidden
    layer (`probe` table), then one program per strategy shape; sizes,
    similarities, learning rates and seeds are traced."""
    epochs = epochs or (QUICK_EPOCHS if quick else EPOCHS)
    if epochs % EVALS:
        raise ValueError(f"{NAME} scores every {EVALS}th of its epochs: the epochs must be a multiple of {EVALS}, "
                         f"got {epochs}")
    source_epochs = QUICK_SOURCE_EPOCHS if quick else SOURCE_EPOCHS
    sizes, similarities = (SIZES[::4], SIMILARITIES[::4]) if quick else (SIZES, SIMILARITIES)
    common = dict(init="glorot_uniform", activation="relu")
    source_steps = SOURCE_TASK.n_train * SOURCE_TASK.classes // BATCH
    source_runs = pd.DataFrame([{"model": "mlp", "seed": s, "data_seed": s, "lr": LR,
                                 "n_target": SOURCE_TASK.n_train, **common} for s in range(seeds)])
    programs = [Program(f"source {model}", Setup(task=SOURCE_TASK, hidden=hidden, n_out=SOURCE_TASK.classes,
                                                 epochs=source_epochs, evals=source_epochs, batch_size=BATCH,
                                                 steps_per_epoch=source_steps, keep_params=bool(hidden)),
                        source_runs.assign(model=model), table="source")
                for model, hidden in [("mlp", HIDDEN), ("linear", ())]]
    cells = pd.DataFrame([{"n_target": n, "similarity": s, "seed": seed, "data_seed": seed, "lr": 0.0, **common}
                          for n, s, seed in itertools.product(sizes, similarities, range(seeds))])
    probe = Setup(task=TARGET_TASK, hidden=HIDDEN, n_out=TARGET_TASK.classes, pretrained=True, trainable=1,
                  epochs=1, evals=1, batch_size=BATCH, steps_per_epoch=1, scored=("probe_acc",))
    programs.append(Program("linear probe", probe, cells, table="probe", start_from="source mlp"))
    for arm in arms(epochs):
        strategy, rates = arm.pop("strategy"), arm.pop("rates")
        setup = Setup(**{"task": TARGET_TASK, "hidden": HIDDEN, "n_out": TARGET_TASK.classes,
                         "scored": ("eval_acc", "val_acc"), **arm},
                      evals=EVALS, batch_size=BATCH, steps_per_epoch=STEPS, decay=True, final_eval=True)
        k = setup.trainable or LAYERS
        runs = pd.DataFrame([{"n_target": n, "similarity": s, "strategy": strategy, "trainable_layers": k,
                              "lr": lr, "head_lr": head_lr, "seed": seed, "data_seed": seed, **common}
                             for n, s, (lr, head_lr), seed in itertools.product(sizes, similarities, rates,
                                                                                range(seeds))])
        label = strategy + (f" k={k}" if strategy == "finetune_top" else "")
        programs.append(Program(label, setup, runs, start_from="source mlp" if setup.pretrained else None,
                                tuned=("lr", "head_lr")))
    return programs


# --- analysis: everything below reads the results only -----------------------

FROZEN_K = 2  # S-tfjs froze 3 of its 5 layers, training the top 2
FROZEN, NO_FREEZE, REINITIALIZED = f"finetune_top k={FROZEN_K}", "finetune_all", "scratch"  # S-tfjs's modes
LAST_SHARE = 0.2  # the convergence test reads the change of validation accuracy over this last share
CONVERGED = 0.005  # ... which must stay under half a point
GRID_AXES = ("lr", "head_lr")


def arm_label(strategy: str, k: int) -> str:
    """A strategy, with k for finetune_top."""
    return f"finetune_top k={k}" if strategy == "finetune_top" else strategy


def with_arms(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.assign(arm=[arm_label(s, k) for s, k in zip(frame["strategy"], frame["trainable_layers"])])


def per_run(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per selected run (each arm at its rates chosen on validation):
    its arm, final large-sample, validation and test accuracy, the linear
    probe's, and the first epoch's training loss and test accuracy."""
    keys = [*CONDITION, "seed"]
    chosen = frame[frame["selected"]]
    last = stats.at_last_epoch(chosen, keys).set_index(keys)
    first = chosen[chosen["epoch"] == 1].set_index(keys)[["train_loss", "test_acc"]].add_prefix("first_")
    columns = ["eval_acc", "val_acc", "test_acc", "bayes_acc", "step_time_s"]
    return with_arms(last[columns].join(first).reset_index())


def by_seed(runs: pd.DataFrame, n: int, s: float, value: str = "eval_acc") -> pd.DataFrame:
    """One cell's `value`, seeds x arms (paired: a seed's arms share data and head initialization)."""
    cell = runs[(runs["n_target"] == n) & (runs["similarity"] == s)]
    return cell.pivot(index="seed", columns="arm", values=value)


def cell_name(n: int, s: float) -> str:
    return f"n = {n}/class, similarity {s:g}"


def grid_edges(frame: pd.DataFrame) -> pd.DataFrame:
    """Per arm and cell: the selected rates, whether one lies on an end of
    its axis of the arm's grid (`on_end`), and whether it beats its inner
    neighbour there by more than half a point of mean validation accuracy
    (`rising`: the best rate may lie beyond the grid)."""
    last = with_arms(stats.at_last_epoch(frame, [*CONDITION, "seed"]))
    means = last.groupby(["arm", "n_target", "similarity", *GRID_AXES])["val_acc"].mean()
    rows = []
    for arm, part in last.groupby("arm"):
        coupled = bool((part["lr"] == part["head_lr"]).all())  # one rate for every layer trained
        axes = [a for a in GRID_AXES if part[a].nunique() > 1 and not (coupled and a == "head_lr")]
        for (n, s), cell in part[part["selected"]].groupby(["n_target", "similarity"]):
            chosen = {a: cell[a].iloc[0] for a in GRID_AXES}
            on_end, rising = False, False
            for axis in axes:
                grid = sorted(part[axis].unique())
                if chosen[axis] in (grid[0], grid[-1]):
                    inner = grid[1] if chosen[axis] == grid[0] else grid[-2]
                    moved = {**chosen, **({a: inner for a in GRID_AXES} if coupled else {axis: inner})}
                    key = (arm, n, s, *moved.values())
                    on_end = True
                    rising |= means[(arm, n, s, *chosen.values())] - means[key] > CONVERGED
            rows.append({"arm": arm, "n_target": n, "similarity": s, **chosen, "on_end": on_end, "rising": rising})
    return pd.DataFrame(rows)


def convergence(frame: pd.DataFrame) -> pd.DataFrame:
    """Per selected arm and cell: the mean validation accuracy over seeds at
    the scored epoch that starts the last `LAST_SHARE` of the arm's training
    (`from_epoch`) and at its end (`to_epoch`), and the change between them."""
    chosen = with_arms(frame[frame["selected"]].dropna(subset=["val_acc"]))
    rows = []
    for arm, part in chosen.groupby("arm"):
        last = part["epoch"].max()
        start = part.loc[part["epoch"] <= round((1 - LAST_SHARE) * last), "epoch"].max()
        means = part[part["epoch"].isin([start, last])].pivot_table(
            index=["arm", "n_target", "similarity"], columns="epoch", values="val_acc", aggfunc="mean")
        rows.append(means.rename(columns={start: "start", last: "end"}).reset_index()
                    .assign(from_epoch=start, to_epoch=last))
    return pd.concat(rows, ignore_index=True).assign(change=lambda d: d["end"] - d["start"])


def head_rate_cost(frame: pd.DataFrame, arm: str = "finetune_all") -> pd.Series:
    """Per cell: how much mean validation accuracy `arm` loses at its
    selected body rate with the head at `HEAD_LR` instead of the best head
    rate of the grid (what the arms without a head grid may lose)."""
    runs = stats.at_last_epoch(frame[frame["strategy"] == arm], [*CONDITION, "seed"])
    body = runs[runs["selected"]].groupby(["n_target", "similarity"])["lr"].first()
    means = runs.groupby(["n_target", "similarity", "lr", "head_lr"])["val_acc"].mean()
    return pd.Series({cell: means.loc[cell + (lr,)].max() - means.loc[cell + (lr, HEAD_LR)]
                      for cell, lr in body.items()})


def body_rate_runs(frame: pd.DataFrame, arm: str = "finetune_all") -> pd.DataFrame:
    """`arm`'s runs at every body rate, each with its head rate chosen on
    validation (per cell and body rate), labelled `arm lr=<rate>`."""
    part = frame[frame["strategy"] == arm]
    cell = ["n_target", "similarity", "strategy", "trainable_layers", "lr"]
    part = part[stats.chosen_on_validation(part, cell, ["head_lr"])]
    runs = stats.at_last_epoch(part, [*CONDITION, "seed"])
    return runs.assign(arm=[f"{arm} lr={lr:g}" for lr in runs["lr"]])


PHASE_NOTES = {"reproduced": "", "tie": " (tie)", "inconclusive": " (ns)", "contradicted": " (ns)"}


def phase_diagram(runs: pd.DataFrame) -> pd.DataFrame:
    """Per (size, similarity): the arm with the best mean final accuracy and
    the runner-up, chosen on the even seeds, and the paired margin between
    them with its interval on the odd seeds, judged as a claim that the best
    arm is better (`stats.POINTS`: a tie within half a point)."""
    rule = stats.Rule(0.0, "above", stats.POINTS.tolerance)
    rows = []
    for (n, s), _ in runs.groupby(["n_target", "similarity"]):
        table = by_seed(runs, n, s)
        selects = stats.selection_half(table.index)
        best, second = table[selects].mean().sort_values(ascending=False).index[:2]
        ci = stats.mean_ci((table[best] - table[second])[~selects])
        rows.append({"n_target": n, "similarity": s, "best": best, "runner_up": second, "accuracy": table[best].mean(),
                     "margin": ci.mean, "lo": ci.lo, "hi": ci.hi, "n": ci.n, "verdict": rule.cell(ci)})
    return pd.DataFrame(rows)


def versus(runs: pd.DataFrame, arm: str, other: str | None, cells, value: str = "eval_acc") -> dict[str, pd.Series]:
    """Per cell: `arm` minus `other`, paired by seed; with `other` None, minus
    the best other arm by its mean on the even seeds, on the odd seeds."""
    out = {}
    for n, s in cells:
        table = by_seed(runs, n, s, value)
        if other:
            out[cell_name(n, s)] = table[arm] - table[other]
            continue
        rival, difference = stats.versus_best(table, arm)
        out[f"{cell_name(n, s)} (vs {rival})"] = difference
    return out


def scenario_cells(runs: pd.DataFrame) -> dict[tuple[str, str], list[tuple]]:
    """The four scenarios of S-questions as corners of the grid: the two
    smallest or largest sizes x the two most or least similar targets."""
    sizes, sims = sorted(runs["n_target"].unique()), sorted(runs["similarity"].unique())
    corner = {"small": sizes[:2], "large": sizes[-2:], "similar": sims[-2:], "dissimilar": sims[:2]}
    return {(size, sim): list(itertools.product(corner[size], corner[sim]))
            for size in ("small", "large") for sim in ("similar", "dissimilar")}


def step_ratio(runs: pd.DataFrame, slow: str, fast: str) -> dict[str, stats.Interval]:
    """One timing per program, so the 'interval' is the measured ratio itself."""
    times = runs.groupby("arm")["step_time_s"].first()
    return {f"{slow} / {fast}": measured(times[slow] / times[fast])}


def measured(value: float) -> stats.Interval:
    """A number measured once from the whole grid: its 'interval' is itself."""
    return stats.Interval(float(value), float(value), float(value), 1)


def design_checks(results: Results, runs: pd.DataFrame) -> list[Claim]:
    """What makes the comparison fair, each checked on the results."""
    frame, source, probe = results.frame, results.tables["source"], results.tables["probe"]
    sizes, sims = sorted(runs["n_target"].unique()), sorted(runs["similarity"].unique())
    final = stats.at_last_epoch(source, ["model", "seed"]).pivot(index="seed", columns="model", values="eval_acc")
    cell = ["n_target", "similarity", "seed"]
    extraction = runs[runs["arm"] == "feature_extraction"].merge(probe[[*cell, "probe_acc"]], on=cell)
    extraction["share"] = extraction["eval_acc"] / extraction["probe_acc"]
    edges, converged = grid_edges(frame), convergence(frame)
    spans = " or ".join(sorted({f"{a} to {b}" for a, b in zip(converged["from_epoch"], converged["to_epoch"])}))
    points = stats.Unit(0.002, scale=100, digits=2, suffix=" pt")
    check = dict(design_check=True, source="this study", source_number="none")
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
        Claim(text="Every selected learning rate lies inside its grid, or where the curve is flat.",
              statistic="the share of (arm, cell) choices with a rate on an end of its grid that beats its "
                        "inner neighbour by more than half a point of mean validation accuracy (the best "
                        f"rate may lie beyond the grid); measured once over {len(edges)} choices, "
                        f"{edges['on_end'].sum()} of them on an end; claimed below 10%.",
              cells={"all arms and cells": measured(edges["rising"].mean())}, threshold=0.10,
              claimed="below", unit=stats.Unit(0.05, scale=100, digits=0, suffix="%", bounds=(0.0, 1.0)), **check),
        Claim(text="Every selected arm has converged.",
              statistic=f"per arm, the largest change over its cells of the mean validation accuracy over "
                        f"the last {LAST_SHARE:.0%} of its training (epochs {spans}), each arm at its "
                        "selected rates; measured once; claimed below half a point.",
              cells={arm: measured(part["change"].abs().max()) for arm, part in converged.groupby("arm")},
              threshold=CONVERGED, claimed="below", unit=points, **check),
        Claim(text=f"A new head's rate barely matters beside fine-tuned layers, so the arms without a head "
                   f"grid train it at {HEAD_LR:g}.",
              statistic=f"finetune_all's mean validation accuracy at its selected body rate with the best head "
                        f"rate of its grid minus with the head at {HEAD_LR:g}; the largest over the cells, "
                        "measured once; claimed below half a point.",
              cells={"largest over cells": measured(head_rate_cost(frame).max())}, threshold=CONVERGED,
              claimed="below", unit=points, **check),
        Claim(text="Frozen source features are worth less as similarity falls.",
              statistic="feature_extraction's final accuracy at similarity 1 minus at similarity 0, paired "
                        "by seed, per size; claimed above 0.",
              cells={f"n = {n}/class": by_seed(runs, n, sims[-1])["feature_extraction"]
                     - by_seed(runs, n, sims[0])["feature_extraction"] for n in sizes},
              threshold=0.0, claimed="above", unit=stats.POINTS, **check)]


def claims(results: Results) -> list[Claim]:
    """The design checks, then the sources' claims."""
    runs = per_run(results.frame)
    return design_checks(results, runs) + source_claims(results.frame, runs)


def source_claims(frame: pd.DataFrame, runs: pd.DataFrame) -> list[Claim]:
    """The sources' claims, each arm at its rates chosen on validation. S-tfjs's
    first-epoch claims are about the speed of learning; every other one is
    about the end point, after a budget every selected arm converges in."""
    scenarios = scenario_cells(runs)
    sizes, sims = sorted(runs["n_target"].unique()), sorted(runs["similarity"].unique())
    corners = [(n, s) for n in (sizes[0], sizes[-1]) for s in (sims[0], sims[-1])]
    largest = [(sizes[-1], s) for s in sims]
    small, large = f"finetune_all lr={BODY_RATES[0]:g}", f"finetune_all lr={BODY_RATES[-1]:g}"
    rates = pd.concat([runs, body_rate_runs(frame)], ignore_index=True)
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
                         "cell (chosen by its mean on the even seeds), paired by seed on the odd seeds; "
                         "claimed above 0.", cells=versus(runs, arm, None, scenarios[(size, sim)]), threshold=0.0,
                         claimed="above",
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
              statistic=f"{end} final accuracy of finetune_all with the pretrained layers at {BODY_RATES[0]:g} minus "
              f"at {BODY_RATES[-1]:g}, each with its head rate chosen on validation; claimed above 0.",
              cells=versus(rates, small, large, corners), threshold=0.0, claimed="above", unit=stats.POINTS),
        Claim(source="S-tricks", text="Leave the first layers alone (freeze them).", source_number="none given",
              statistic=f"{end} final accuracy with the first layer frozen (finetune_top k={LAYERS - 1}) minus with "
              "none frozen (finetune_all); claimed above 0.",
              cells=versus(runs, f"finetune_top k={LAYERS - 1}", NO_FREEZE, corners), threshold=0.0, claimed="above",
              unit=stats.POINTS),
        Claim(source="S-tfjs", text="Freezing the feature layers lowers the loss after the first epoch.",
              source_number="0.27 vs 0.37",
              statistic=f"Speed of learning: mean minibatch loss of the first epoch (40 steps), frozen ({FROZEN}) "
              f"minus not frozen ({NO_FREEZE}), at the largest size; claimed below 0.",
              cells=versus(runs, FROZEN, NO_FREEZE, largest, value="first_train_loss"), threshold=0.0, claimed="below",
              unit=stats.Unit(0.02)),
        Claim(source="S-tfjs", text="Freezing raises the accuracy after the first epoch.", source_number="0.91 vs 0.87",
              statistic="Speed of learning: test-split accuracy after the first epoch, frozen minus not frozen; "
              "claimed above 0.",
              cells=versus(runs, FROZEN, NO_FREEZE, largest, value="first_test_acc"), threshold=0.0, claimed="above",
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
              statistic=f"{end} final accuracy of staged (its block's rate chosen on validation from "
              f"{', '.join(f'{r:g}' for r in STAGED_RATES)}: S-finetune's very small rates never won on "
              "validation in the pilot runs) minus feature_extraction; claimed above 0.",
              cells=versus(runs, "staged", "feature_extraction", corners), threshold=0.0, claimed="above",
              unit=stats.POINTS),
        Claim(source="S-tricks", text="An output layer wider than the class count helps.", source_number="none given",
              statistic=f"{end} final accuracy of wide_head ({WIDE} outputs for {TARGET_TASK.classes} classes) minus "
              "finetune_all; claimed above 0.",
              cells=versus(runs, "wide_head", NO_FREEZE, corners), threshold=0.0, claimed="above", unit=stats.POINTS),
    ]
    return out


def step_flops(model: list[dict], trainable: int) -> float:
    """Multiply-adds of one step per example, from the layer table: the
    trained layers' forward pass (the frozen ones run once per phase, not per
    step), their weight gradients, and the input gradients of the trained
    layers above the lowest one."""
    sizes = [row["kernel"][0] * row["kernel"][1] for row in model]
    trained = sizes[len(sizes) - trainable:]
    return 2 * sum(trained) + sum(trained[1:])


def transfer_model(results: Results) -> list[dict]:
    """The layer table of the pretrained network fine-tuned (from the results' metadata)."""
    return next(p["model"] for p in results.metadata["programs"] if p["label"] == "finetune_all")


def depth_arms() -> dict[str, int]:
    """The freeze-depth sweep: arm -> trained top layers."""
    return {"feature_extraction": 1, **{f"finetune_top k={k}": k for k in range(2, LAYERS)}, NO_FREEZE: LAYERS}


def picked_sizes(runs: pd.DataFrame) -> list[int]:
    sizes = sorted(runs["n_target"].unique())
    return list(dict.fromkeys([sizes[0], sizes[len(sizes) // 2], sizes[-1]]))


def rate_curves(frame: pd.DataFrame, runs: pd.DataFrame) -> pd.DataFrame:
    """For three cells (small and similar, the middle, large and dissimilar):
    each arm's mean final validation accuracy per rate of its grid (a 2-D
    grid at its best head rate per body rate), the selected rate marked."""
    sizes, sims = picked_sizes(runs), sorted(runs["similarity"].unique())
    cells = list(dict.fromkeys([(sizes[0], sims[-1]), (sizes[len(sizes) // 2], sims[len(sims) // 2]),
                                (sizes[-1], sims[0])]))
    last = with_arms(stats.at_last_epoch(frame, [*CONDITION, "seed"]))
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


def figures(results: Results, claims: list[Claim]) -> list[fig.Figure]:
    frame = results.frame
    runs = per_run(frame)
    sizes, sims = picked_sizes(runs), sorted(runs["similarity"].unique())
    out = []
    phase = phase_diagram(runs)

    def draw_phase(data):
        winner = data["best"].where(data["verdict"] != "tie", "tie")
        grid = data.assign(winner=winner).pivot(index="similarity", columns="n_target", values="winner")
        notes = data.assign(note=[f"{b}\n{100 * m:+.1f} pt{PHASE_NOTES[v]}\nvs {r}" for b, m, v, r in
                                  zip(data["best"], data["margin"], data["verdict"], data["runner_up"])])
        notes = notes.pivot(index="similarity", columns="n_target", values="note")
        return fig.category_grid(grid.sort_index(ascending=False), notes.sort_index(ascending=False),
                                 xlabel="target examples per class", ylabel="similarity to the source")

    out.append(fig.Figure("phase", "The best strategy (colour) in each cell of target size x similarity, by mean "
                          "final large-sample accuracy over seeds, every strategy at its learning rates chosen on "
                          "validation; text: the best, its margin over the runner-up, paired by seed, and the "
                          "runner-up; coloured 'tie' where the 95% interval of the margin lies within half a "
                          "point, '(ns)' where it includes 0 and reaches further.", phase, draw_phase))
    out.append(fig.Figure("learning-rate", "Every arm's learning-rate curve in three cells: mean final validation "
                          "accuracy over seeds per rate of its grid (for finetune_all and staged at the best head "
                          "rate per body rate); circles mark the rates selected.", rate_curves(frame, runs),
                          draw_rate_curves))
    converged = convergence(frame).assign(change=lambda d: 100 * d["change"])

    bounds = (-100 * CONVERGED, 100 * CONVERGED)
    out.append(fig.Figure("convergence", "The convergence check: per arm (at its selected rates) and cell, the "
                          "change of the mean validation accuracy over seeds across the last 20% of training; dashed: "
                          "the half-point bound.", converged,
                          lambda d: fig.strips(d, x="change", y="arm", hue="n_target", bounds=bounds,
                                               xlabel="change of mean validation accuracy over the last 20% of "
                                                      "training (points)")))
    depth = runs[runs["arm"].isin(depth_arms()) & runs["n_target"].isin(sizes)]
    depth = stats.summarize(depth.assign(similarity=depth["similarity"].map("{:g}".format)),
                            ["n_target", "similarity", "trainable_layers"], "eval_acc")
    out.append(fig.Figure("freeze-depth", "Final large-sample accuracy against the number of top layers trained "
                          "(1: feature extraction, 5: fine-tune all), each at its rates chosen on validation, for "
                          "three target sizes; mean and 95% band over seeds.", depth,
                          lambda d: fig.facets(d, "n_target", fig.bands, x="trainable_layers", hue="similarity",
                                               ylabel="final accuracy")))
    modes = {FROZEN: f"frozen ({LAYERS - FROZEN_K} of {LAYERS} layers)", NO_FREEZE: "no freeze",
             REINITIALIZED: "re-initialized"}
    chosen = with_arms(frame[frame["selected"]])
    curves = chosen[(chosen["n_target"] == runs["n_target"].max()) & chosen["similarity"].isin([sims[0], sims[-1]])]
    curves = curves.assign(mode=curves["arm"].map(modes)).dropna(subset=["mode"])
    long = curves.melt(id_vars=["mode", "similarity", "seed", "epoch"], value_vars=["train_loss", "test_acc"],
                       var_name="measure")
    long["panel"] = long["measure"].map({"train_loss": "training loss", "test_acc": "test accuracy"}) + \
        ", similarity " + long["similarity"].map("{:g}".format)
    stfjs = stats.summarize(long, ["panel", "mode", "epoch"], "value")
    out.append(fig.Figure("stfjs", "S-tfjs's comparison at the largest target size: frozen feature layers, "
                          "nothing frozen and re-initialized weights, each at its rates chosen on validation: mean "
                          "minibatch loss of each epoch and test-split accuracy after it, at similarity 1 and 0; "
                          "mean and 95% band over seeds.", stfjs,
                          lambda d: fig.facets(d, "panel", fig.bands, x="epoch", hue="mode", ylabel="value",
                                               sharey=False, width=3.6)))
    model = transfer_model(results)
    times = runs[runs["arm"].isin(depth_arms())].groupby("trainable_layers")["step_time_s"].first()
    timing = pd.DataFrame([{"trainable_layers": k, "quantity": quantity, "relative to training all": value}
                           for k in times.index
                           for quantity, value in [("measured step time", times[k] / times[LAYERS]),
                                                   ("step FLOPs (layer model)",
                                                    step_flops(model, k) / step_flops(model, LAYERS))]])
    out.append(fig.Figure("step-time", "Training time per step (the whole program's, evaluation included) "
                          "against the number of trained top layers, relative to training all 5, beside the "
                          "step's FLOPs from the layer shapes (forward, the trained layers' weight gradients, "
                          "and the input gradients above the lowest trained layer).", timing,
                          lambda d: fig.lines(d, x="trainable_layers", y="relative to training all", hue="quantity",
                                              ylim=(0, 1.1))))
    return out


def scenario_notes(phase: pd.DataFrame, runs: pd.DataFrame) -> str:
    """Where the four-scenario advice holds on the phase diagram, in words."""
    lines = []
    for (size, sim), cells in scenario_cells(runs).items():
        part = phase.set_index(["n_target", "similarity"]).loc[cells]
        counts = part["best"].value_counts()
        won = ", ".join(f"{arm} ({count} of {len(part)})" for arm, count in counts.items())
        sizes = ", ".join(str(n) for n in sorted({int(c[0]) for c in cells}))
        sims = ", ".join(f"{s:g}" for s in sorted({float(c[1]) for c in cells}))
        lines.append(f"- *{size} and {sim}* (sizes {sizes} per class, similarities {sims}): best {won}.")
    return "**The four scenarios on the phase diagram.**\n\n" + "\n".join(lines) + "\n"


def section(results: Results, claims: list[Claim]) -> Section:
    runs = per_run(results.frame)
    source = stats.at_last_epoch(results.tables["source"], ["model", "seed"])
    accuracy = {m: stats.points(stats.mean_ci(g["eval_acc"])).replace(" pt", "%") for m, g in source.groupby("model")}
    bayes = stats.points(stats.mean_ci(source.loc[source["model"] == "mlp", "bayes_acc"])).replace(" pt", "%")
    phase = phase_diagram(runs)
    target = next(p["setup"] for p in results.metadata["programs"] if p["label"] == "scratch")
    steps = target["epochs"] * target["steps_per_epoch"]
    table = phase.assign(margin=[stats.points(stats.Interval(m, lo, hi, n)) for m, lo, hi, n in
                                 phase[["margin", "lo", "hi", "n"]].to_numpy()],
                         accuracy=phase["accuracy"].map("{:.4f}".format))
    table = table[["n_target", "similarity", "best", "accuracy", "runner_up", "margin", "verdict"]]
    edges = grid_edges(results.frame)
    chosen = edges.groupby("arm").agg(cells=("on_end", "size"), on_an_end=("on_end", "sum"),
                                      rising_at_an_end=("rising", "sum"),
                                      rates=("lr", lambda v: ", ".join(f"{r:g}" for r in sorted(set(v)))),
                                      head_rates=("head_lr", lambda v: ", ".join(f"{r:g}" for r in sorted(set(v)))))
    model = transfer_model(results)
    times = runs.groupby("arm")["step_time_s"].first()
    programs = [p for p in results.metadata["programs"] if p["label"] not in ("source mlp", "source linear")]
    fields = dict(hidden=HIDDEN, source_classes=SOURCE_TASK.classes, source_clusters=SOURCE_TASK.clusters,
                  mlp_accuracy=accuracy["mlp"], linear_accuracy=accuracy["linear"], bayes=bayes,
                  target_classes=TARGET_TASK.classes, steps=steps, batch=target["batch_size"],
                  seeds=runs["seed"].nunique(), runs=sum(p["runs"] for p in programs),
                  wall_s=results.metadata["wall_time_s"],
                  compile_share=sum(p["compile_s"] for p in results.metadata["programs"])
                  / results.metadata["wall_time_s"],
                  scenarios=scenario_notes(phase, runs), frozen_k=FROZEN_K, layers=LAYERS,
                  flop_share=step_flops(model, FROZEN_K) / step_flops(model, LAYERS),
                  time_share=times[FROZEN] / times[NO_FREEZE], head_lr=HEAD_LR)
    return Section(fields, [
        ("The phase diagram: per target size (examples per class) and similarity, the best strategy by "
         "mean final large-sample accuracy on the even seeds, the runner-up, and their paired margin on the "
         "odd seeds [95% bootstrap CI].", table),
        ("The rates selected on validation per arm: over how many cells, how many of them on an end of the "
         "arm's grid and how many of those beat their inner neighbour by more than half a point, and the "
         "distinct body (or only) and head rates chosen.", chosen.reset_index())])
