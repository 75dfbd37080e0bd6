"""Q4's analysis: per-run frames, the phase diagram, the rivals of an arm,
the grid-edge and convergence checks, step costs (reads results only)."""

from __future__ import annotations

import itertools

import pandas as pd

from study import checks, stats
from study.results import Results
from experiments.transfer.design import ARMS, CONDITION, DECAY, VARIANTS, arm_label


LAST_SHARE = 0.2  # the convergence test reads the rise of validation accuracy over this share of the training,
# the last before the rate decays (`DECAY`)


TOLERANCE = 0.002  # design checks (convergence, grid ends, a shared head rate) hold at 0.2 pt: below the effects read


GRID_AXES = ("lr", "head_lr")


def with_arms(frame: pd.DataFrame) -> pd.DataFrame:
    """`frame` with each row's arm label (one label per distinct strategy and k, not per row)."""
    pairs = pd.MultiIndex.from_frame(frame[["strategy", "trainable_layers"]])
    distinct = pairs.unique()
    labels = pd.Series([arm_label(s, k) for s, k in distinct], index=distinct)
    return frame.assign(arm=labels.reindex(pairs).to_numpy())


def per_run(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per selected run (each arm at its rates chosen on validation),
    tuning and evaluation seeds alike (`role`): its arm and its final
    large-sample, validation and test accuracy."""
    last = stats.at_last_epoch(frame[frame["selected"]], [*CONDITION, "seed"])
    return with_arms(last[[*CONDITION, "seed", "role", "eval_acc", "val_acc", "test_acc", "bayes_acc",
                           "step_time_s"]].reset_index(drop=True))


def first_epoch_runs(table: pd.DataFrame) -> pd.DataFrame:
    """The first-epoch table's evaluation runs, per arm: its evaluation seeds
    train only the rates chosen on the tuning seeds' validation after that
    one epoch. Their mean minibatch loss and test-split accuracy of the epoch."""
    runs = stats.evaluation(table).rename(columns={"train_loss": "first_train_loss", "test_acc": "first_test_acc"})
    return with_arms(runs)


def by_seed(runs: pd.DataFrame, n: int, s: float, value: str = "eval_acc", role: str = "evaluate") -> pd.DataFrame:
    """One cell's `value` on the seeds of `role`, seeds x arms in `ARMS`
    order (paired: a seed's arms share data and head initialization)."""
    cell = runs[(runs["n_target"] == n) & (runs["similarity"] == s) & (runs["role"] == role)]
    table = cell.pivot(index="seed", columns="arm", values=value)
    return table[sorted(table.columns, key=lambda arm: ARMS.index(arm) if arm in ARMS else len(ARMS))]


def cell_name(n: int, s: float) -> str:
    return f"n = {n}/class, similarity {s:g}"


def grid_edges(frame: pd.DataFrame) -> pd.DataFrame:
    """Per arm, cell and rate axis of the arm's grid: `checks.grid_edges` at
    the final epoch, as the rates were chosen. An arm whose layers all train
    at one rate (`lr` = `head_lr`) has one axis; a rate variant's body rate is
    the claim's, not a grid meant to hold an optimum: only its head axis is checked."""
    tune = with_arms(stats.tuning(frame))
    parts = []
    for arm, part in tune.groupby("arm"):
        coupled = bool((part["lr"] == part["head_lr"]).all())
        axes = tuple(a for a in GRID_AXES if part[a].nunique() > 1 and not (coupled and a == "head_lr")
                     and not (arm in VARIANTS and a == "lr"))
        parts.append(checks.grid_edges(part, ["arm", "n_target", "similarity"], axes, at="last", flat=TOLERANCE))
    return pd.concat(parts, ignore_index=True)


def convergence(frame: pd.DataFrame) -> pd.DataFrame:
    """Per selected arm and cell: the mean validation accuracy over the
    evaluation seeds at the scored epochs that open and close the last
    `LAST_SHARE` of the run's training before its rate decays (`from_epoch`,
    `to_epoch`: 60% and 80% of it), and the change between them: a plateau
    at a constant rate, not one the decay makes."""
    chosen = with_arms(stats.evaluation(frame[frame["selected"]]).dropna(subset=["val_acc"]))
    last = chosen.groupby(["arm", "n_target"])["epoch"].transform("max")
    chosen = chosen.assign(from_epoch=(last * (1 - DECAY - LAST_SHARE)).round().astype(int),
                           to_epoch=(last * (1 - DECAY)).round().astype(int))
    keys = ["arm", "n_target", "similarity", "from_epoch", "to_epoch"]
    means = {end: chosen[chosen["epoch"] == chosen[f"{end}_epoch"]].groupby(keys)["val_acc"].mean()
             for end in ("from", "to")}
    table = pd.concat({"start": means["from"], "end": means["to"]}, axis=1).reset_index()
    return table.assign(change=table["end"] - table["start"])


def phase_diagram(runs: pd.DataFrame) -> pd.DataFrame:
    """Per (size, similarity): the arm with the best mean final validation
    accuracy and the runner-up (a distinct arm: see `one_arm_per_run` and
    `rivals`), chosen on the tuning seeds, and the paired margin between them with its
    interval on the evaluation seeds, judged as a claim that the best arm is
    better (`stats.POINTS`: a tie within half a point)."""
    rule = stats.Rule(0.0, "above", stats.POINTS.tolerance)
    rows = []
    for (n, s), _ in runs.groupby(["n_target", "similarity"]):
        choose = one_arm_per_run(by_seed(runs, n, s, "val_acc", "tune"))
        best = choose.drop(columns=list(VARIANTS), errors="ignore").mean().idxmax()
        second, margin = stats.versus_best(rivals(choose, best), by_seed(runs, n, s), best)
        ci = stats.mean_ci(margin)
        rows.append({"n_target": n, "similarity": s, "best": best, "runner_up": second,
                     "accuracy": by_seed(runs, n, s)[best].mean(), "margin": ci.mean, "lo": ci.lo, "hi": ci.hi,
                     "n": ci.n, "verdict": rule.cell(ci)})
    return pd.DataFrame(rows)


COPIES = {"finetune_all": ("wide_head",)}  # an arm -> the same strategy under another name (three more outputs)


def one_arm_per_run(table: pd.DataFrame) -> pd.DataFrame:
    """`table` (seeds x arms) with arms that are the same runs as an earlier
    column (the same values on every seed: reinit where it picked scratch's
    rates for body and head) dropped: one arm, under its first name."""
    kept = []
    for arm in table:
        if not any(table[arm].equals(table[k]) for k in kept):
            kept.append(arm)
    return table[kept]


def rivals(table: pd.DataFrame, arm: str) -> pd.DataFrame:
    """`table` (seeds x arms) without `arm` under another name: the arms whose
    runs are its own (the same values on every seed), its relabelled copies
    (`COPIES`) and the rate variants (`VARIANTS`: a strategy at a rate
    validation did not choose). What a "best other" ranges over: the
    alternatives to `arm`, never itself."""
    same = [c for c in table if c != arm and (table[c].equals(table[arm]) or c in COPIES.get(arm, ())
                                              or arm in COPIES.get(c, ()) or c in VARIANTS)]
    return table.drop(columns=same)


def versus(runs: pd.DataFrame, arm: str, other: str | None, cells, value: str = "eval_acc") -> dict[str, pd.Series]:
    """Per cell: `arm` minus `other`, paired by evaluation seed; with `other`
    None, minus the best of its `rivals` by their mean validation accuracy
    on the tuning seeds."""
    out = {}
    for n, s in cells:
        test = by_seed(runs, n, s, value)
        if other:
            out[cell_name(n, s)] = test[arm] - test[other]
            continue
        rival, difference = stats.versus_best(rivals(by_seed(runs, n, s, "val_acc", "tune"), arm), test, arm)
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
