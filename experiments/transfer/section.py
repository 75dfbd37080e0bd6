"""Q4's report section: the fields of its text template and its tables."""

from __future__ import annotations

import pandas as pd

from study import stats
from study.claims import Claim
from study.question import Section
from study.results import Results
from experiments.transfer.analysis import (
    LAST_SHARE, grid_edges, per_run, phase_diagram, scenario_cells, step_flops, transfer_model,
)
from experiments.transfer.design import (
    DECAY, FROZEN, FROZEN_K, HEAD_RATES, HIDDEN, LAYERS, LONG_FACTOR, LONG_SIZES, NO_FREEZE, SLOW_ARMS_FACTOR,
    SOURCE_TASK, TARGET_TASK,
)


def scenario_notes(phase: pd.DataFrame, runs: pd.DataFrame) -> str:
    """Where the four-scenario advice holds on the phase diagram, in words:
    an arm wins a cell only where its margin's interval says so."""
    lines = []
    for (size, sim), cells in scenario_cells(runs).items():
        part = phase.set_index(["n_target", "similarity"]).loc[cells]
        outcome = (part["best"] + " ahead").where(part["verdict"] == "reproduced",
                                     part["verdict"].map({"tie": "a tie"}).fillna("unresolved"))
        won = ", ".join(f"{arm} ({count} of {len(part)})" for arm, count in outcome.value_counts().items())
        sizes = ", ".join(str(n) for n in sorted({int(c[0]) for c in cells}))
        sims = ", ".join(f"{s:g}" for s in sorted({float(c[1]) for c in cells}))
        lines.append(f"- *{size} and {sim}* (sizes {sizes} per class, similarities {sims}): {won}.")
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
    chosen = grid_edges(results.frame).groupby(["arm", "axis"]).agg(
        cells=("on_end", "size"), on_an_end=("on_end", "sum"), rising_at_an_end=("rising", "sum"),
        beyond_noise=("beyond_noise", "sum"),
        largest_gain_pt=("gain", lambda v: round(100 * v.max(), 2)),
        rates=("rate", lambda v: ", ".join(f"{r:g}" for r in sorted(set(v)))))
    model = transfer_model(results)
    times = runs.groupby("arm")["step_time_s"].first()
    programs = [p for p in results.metadata["programs"] if p["label"] not in ("source mlp", "source linear")]
    fields = dict(hidden=HIDDEN, source_classes=SOURCE_TASK.classes, source_clusters=SOURCE_TASK.clusters,
                  mlp_accuracy=accuracy["mlp"], linear_accuracy=accuracy["linear"], bayes=bayes,
                  target_classes=TARGET_TASK.classes, steps=steps,
                  long_steps=SLOW_ARMS_FACTOR * steps, batch=target["batch_size"], decay=DECAY,
                  long_sizes=f"{', '.join(map(str, LONG_SIZES[:-1]))} and {LONG_SIZES[-1]}",
                  long_factor=LONG_FACTOR, last_share=LAST_SHARE,
                  head_rates=f"{HEAD_RATES[0]:g} to {HEAD_RATES[-1]:g}",
                  seeds=stats.evaluation(runs)["seed"].nunique(), tuning_seeds=stats.tuning(runs)["seed"].nunique(),
                  runs=sum(p["runs"] for p in programs),
                  wall_s=results.metadata["wall_time_s"],
                  compile_share=sum(p["compile_s"] for p in results.metadata["programs"])
                  / results.metadata["wall_time_s"],
                  scenarios=scenario_notes(phase, runs), frozen_k=FROZEN_K, layers=LAYERS,
                  flop_share=step_flops(model, FROZEN_K) / step_flops(model, LAYERS),
                  time_share=times[FROZEN] / times[NO_FREEZE])
    return Section(fields, [
        ("The phase diagram: per target size (examples per class) and similarity, the best strategy by "
         "mean final validation accuracy on the tuning seeds, the runner-up (chosen the same way), and their "
         "paired margin in final large-sample accuracy on the evaluation seeds [95% Student-t interval]; its "
         "`accuracy` is the best arm's mean on the evaluation seeds.", table),
        ("The rates selected on validation per arm and rate axis (`lr`: the body's, or every layer's, or a "
         "head alone's; `head_lr`: a new head's beside trained layers): over how many cells, how many of them "
         "on an end of the axis, how many of those beat their inner neighbour by more than 0.2 pt of mean "
         "validation accuracy over the tuning seeds, how many of these beat it beyond the gain's 95% interval "
         "paired over the tuning seeds, the largest such gain, and the distinct rates chosen.",
         chosen.reset_index())])
