"""Q4's analysis: per-run frames, the phase diagram, the rivals of an arm,
the grid-edge and convergence checks, step costs (reads results only)."""

from __future__ import annotations

import itertools

import pandas as pd

from study import stats
from study.results import Results
from experiments.transfer.design import CONDITION, HEAD_LR


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


def phase_diagram(runs: pd.DataFrame) -> pd.DataFrame:
    """Per (size, similarity): the arm with the best mean final accuracy and
    the runner-up (a distinct arm, see `rivals`), chosen on the even seeds,
    and the paired margin between them with its interval on the odd seeds,
    judged as a claim that the best arm is better (`stats.POINTS`: a tie
    within half a point)."""
    rule = stats.Rule(0.0, "above", stats.POINTS.tolerance)
    rows = []
    for (n, s), _ in runs.groupby(["n_target", "similarity"]):
        table = by_seed(runs, n, s)
        selects = stats.selection_half(table.index)
        best = table[selects].mean().idxmax()
        second = rivals(table, best)[selects].drop(columns=best).mean().idxmax()
        ci = stats.mean_ci((table[best] - table[second])[~selects])
        rows.append({"n_target": n, "similarity": s, "best": best, "runner_up": second, "accuracy": table[best].mean(),
                     "margin": ci.mean, "lo": ci.lo, "hi": ci.hi, "n": ci.n, "verdict": rule.cell(ci)})
    return pd.DataFrame(rows)


COPIES = {"finetune_all": ("wide_head",)}  # an arm -> the same strategy under another name (three more outputs)


def rivals(table: pd.DataFrame, arm: str) -> pd.DataFrame:
    """`table` (seeds x arms) without `arm` under another name: the arms whose
    runs are its own (the same values on every seed, e.g. reinit where it
    picked scratch's rate) and its relabelled copies (`COPIES`). What a
    "best other" ranges over: the alternatives to `arm`, never itself."""
    same = [c for c in table if c != arm and (table[c].equals(table[arm]) or c in COPIES.get(arm, ()))]
    return table.drop(columns=same)


def versus(runs: pd.DataFrame, arm: str, other: str | None, cells, value: str = "eval_acc") -> dict[str, pd.Series]:
    """Per cell: `arm` minus `other`, paired by seed; with `other` None, minus
    the best of its `rivals` by its mean on the even seeds, on the odd seeds."""
    out = {}
    for n, s in cells:
        table = by_seed(runs, n, s, value)
        if other:
            out[cell_name(n, s)] = table[arm] - table[other]
            continue
        rival, difference = stats.versus_best(rivals(table, arm), arm)
        out[f"{cell_name(n, s)} (vs {rival})"] = difference
    return out


def scenario_cells(runs: pd.DataFrame) -> dict[tuple[str, str], list[tuple]]:
    """The four scenarios of S-questions as corners of the grid: the two
    smallest or largest sizes x the two most or least similar targets."""
    sizes, sims = sorted(runs["n_target"].unique()), sorted(runs["similarity"].unique())
    corner = {"small": sizes[:2], "large": sizes[-2:], "similar": sims[-2:], "dissimilar": sims[:2]}
    return {(size, sim): list(itertools.product(corner[size], corner[sim]))
            for size in ("small", "large") for sim in ("similar", "dissimilar")}


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
