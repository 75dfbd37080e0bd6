"""Q4. Fine-tuning versus feature extraction (S-questions, S-tfjs, S-finetune, S-tricks)

A source MLP (4 hidden layers of 64 ReLU units) is pretrained once per seed
on a `Mixture` source task (the `Mixture` defaults: 8 classes, each the
union of 3 Gaussian clusters in a 6-dimensional subspace of R^12), beside a linear classifier
on the raw inputs; its weights are kept in `results/transfer-params.npz`.
Every strategy then trains on the same target data and seeds, over a grid
of target sizes (examples per class) x similarity to the source (see
`study.data.Mixture`): 400 minibatches of 64 in 10 "epochs" of 40, whatever
the size, so sizes are a traced prefix of one training sample.

Strategies, with the number of top layers they train (`trainable_layers`,
5 = all) and the learning rate `lr` (Adam) of the trained layers below the
head; a new head trains at 1e-3, the rate it needs from random weights
(S-tricks: small rates are for pretrained weights), except in the second
phase of `staged`, where it trains with the top hidden layer at 1e-4:

- `scratch`: random initialization, every layer at 1e-3 (the source's rate);
- `feature_extraction`: a new head on the frozen last hidden layer;
- `feature_extraction_early`: a new head on the frozen second hidden layer;
- `finetune_top`: the top k = 2, 3, 4 layers (new head included), 1e-3;
- `finetune_all`: every layer from the pretrained weights, at 1e-4, 1e-3, 1e-2;
- `staged`: the head alone for 5 epochs, then the top hidden layer and the
  head together at 1e-4 (S-finetune's recipe, LP-FT);
- `reinit`: finetune_all at 1e-4 from re-initialized weights (what the
  pretrained weights add at that rate; at 1e-3 it would be `scratch`);
- `wide_head`: finetune_all at 1e-3 with 9 outputs for the 6 classes.

Frozen layers are out of the optimizer (`optax.partition`), so they leave
the backward pass, and without dropout they are applied to the data once
per phase (`study.train.frozen_view`): feature extraction trains a linear
model on fixed features.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import pandas as pd

from study import figures as fig
from study import report, stats
from study.data import Mixture
from study.results import Results
from study.runner import Program
from study.train import Setup

NAME = "transfer"
TEXT = Path(__file__).with_name("text") / f"{NAME}.md"  # the report's prose
QUESTION = "When should one freeze, fine-tune or train from scratch?"

HIDDEN = (64, 64, 64, 64)
EARLY = 2  # hidden layers under feature_extraction_early's head
WIDE = 9  # outputs of wide_head for the target's 6 classes
SOURCE_TASK = Mixture()
TARGET_TASK = Mixture(target=True, classes=6, clusters=4, n_train=1024)
SIZES = (4, 16, 64, 256, 1024)  # examples per class
SIMILARITIES = (0.0, 0.25, 0.5, 0.75, 1.0)
SEEDS, QUICK_SEEDS = 16, 2
SOURCE_EPOCHS, EPOCHS, STEPS, BATCH = 40, 10, 40, 64
QUICK_SOURCE_EPOCHS, QUICK_EPOCHS = 2, 2
LR, SMALL_LR, LARGE_LR = 1e-3, 1e-4, 1e-2
CONDITION = ["n_target", "similarity", "strategy", "trainable_layers", "lr"]
LAYERS = len(HIDDEN) + 1


def arms(epochs: int) -> list[dict]:
    """Every strategy's static setup fields and its learning rates."""
    pretrained = dict(pretrained=True, head_lr=LR)
    out = [dict(strategy="scratch", lrs=(LR,)), dict(strategy="reinit", lrs=(SMALL_LR,), head_lr=LR),
           dict(strategy="feature_extraction", lrs=(LR,), trainable=1, **pretrained),
           dict(strategy="feature_extraction_early", lrs=(LR,), hidden=HIDDEN[:EARLY], trainable=1, **pretrained)]
    out += [dict(strategy="finetune_top", lrs=(LR,), trainable=k, **pretrained) for k in range(2, LAYERS)]
    out += [dict(strategy="finetune_all", lrs=(SMALL_LR, LR, LARGE_LR), **pretrained),
            dict(strategy="staged", lrs=(SMALL_LR,), trainable=2, head_first=epochs // 2, **pretrained),
            dict(strategy="wide_head", lrs=(LR,), n_out=WIDE, **pretrained)]
    return out


def plan(seeds: int | None = None, epochs: int | None = None, quick: bool = False) -> list[Program]:
    """Two source programs (the MLP, whose weights are kept, and a linear
    classifier), then one program per strategy shape; sizes, similarities,
    learning rates and seeds are traced."""
    seeds = seeds or (QUICK_SEEDS if quick else SEEDS)
    epochs = epochs or (QUICK_EPOCHS if quick else EPOCHS)
    if epochs % 2:
        raise ValueError(f"{NAME} needs an even number of epochs (the staged recipe switches at half), "
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
    for arm in arms(epochs):
        strategy, lrs = arm.pop("strategy"), arm.pop("lrs")
        setup = Setup(task=TARGET_TASK, **{"hidden": HIDDEN, "n_out": TARGET_TASK.classes, **arm}, epochs=epochs, evals=2,
                      batch_size=BATCH, steps_per_epoch=STEPS)
        k = setup.trainable or LAYERS
        runs = pd.DataFrame([{"n_target": n, "similarity": s, "strategy": strategy, "trainable_layers": k,
                              "lr": lr, "seed": seed, "data_seed": seed, **common}
                             for n, s, lr, seed in itertools.product(sizes, similarities, lrs, range(seeds))])
        label = strategy + (f" k={k}" if strategy == "finetune_top" else "")
        programs.append(Program(label, setup, runs, start_from="source mlp" if setup.pretrained else None))
    return programs


# --- analysis: everything below reads the results only -----------------------

FROZEN_K = 2  # S-tfjs froze 3 of its 5 layers, training the top 2
FROZEN, NO_FREEZE, REINITIALIZED = f"finetune_top k={FROZEN_K}", f"finetune_all lr={LR:g}", "scratch"  # S-tfjs's modes


def arm_label(strategy: str, k: int, lr: float) -> str:
    """A strategy with the setting that tells its runs apart: k for finetune_top, lr for finetune_all."""
    if strategy == "finetune_top":
        return f"finetune_top k={k}"
    return f"finetune_all lr={lr:g}" if strategy == "finetune_all" else strategy


def per_run(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per run: its arm, final large-sample and test accuracy, and
    the first epoch's training loss and test accuracy."""
    keys = [*CONDITION, "seed"]
    last = stats.at_last_epoch(frame, keys)
    first = frame[frame["epoch"] == 1].set_index(keys)[["train_loss", "test_acc"]].add_prefix("first_")
    out = last.set_index(keys)[["eval_acc", "test_acc", "bayes_acc", "step_time_s"]].join(first).reset_index()
    out["arm"] = [arm_label(*row) for row in out[["strategy", "trainable_layers", "lr"]].itertuples(index=False)]
    return out


def by_seed(runs: pd.DataFrame, n: int, s: float, value: str = "eval_acc") -> pd.DataFrame:
    """One cell's `value`, seeds x arms (paired: a seed's arms share data and head initialization)."""
    cell = runs[(runs["n_target"] == n) & (runs["similarity"] == s)]
    return cell.pivot(index="seed", columns="arm", values=value)


def cell_name(n: int, s: float) -> str:
    return f"n = {n}/class, similarity {s:g}"


def phase_diagram(runs: pd.DataFrame) -> pd.DataFrame:
    """Per (size, similarity): the arm with the best mean final accuracy and
    the runner-up, chosen on the even seeds, and the paired margin between
    them with its interval on the odd seeds."""
    rows = []
    for (n, s), _ in runs.groupby(["n_target", "similarity"]):
        table = by_seed(runs, n, s)
        selects = stats.selection_half(table.index)
        best, second = table[selects].mean().sort_values(ascending=False).index[:2]
        ci = stats.bootstrap_ci((table[best] - table[second])[~selects])
        rows.append({"n_target": n, "similarity": s, "best": best, "runner_up": second, "accuracy": table[best].mean(),
                     "margin": ci.mean, "lo": ci.lo, "hi": ci.hi, "n": ci.n, "excludes_zero": bool(ci.lo > 0)})
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
    ratio = float(times[slow] / times[fast])
    return {f"{slow} / {fast}": stats.Interval(ratio, ratio, ratio, 1)}


def claims(runs: pd.DataFrame, source: pd.DataFrame) -> list[report.Claim]:
    scenarios = scenario_cells(runs)
    sizes, sims = sorted(runs["n_target"].unique()), sorted(runs["similarity"].unique())
    corners = [(n, s) for n in (sizes[0], sizes[-1]) for s in (sims[0], sims[-1])]
    largest = [(sizes[-1], s) for s in sims]
    advice = [(("small", "similar"), "feature_extraction", "a linear classifier on the last hidden layer's features"),
              (("large", "similar"), f"finetune_all lr={SMALL_LR:g}", "fine-tune the whole network (small rate)"),
              (("small", "dissimilar"), "feature_extraction_early", "a linear classifier on an earlier layer"),
              (("large", "dissimilar"), "scratch", "train from scratch")]
    final = stats.at_last_epoch(source, ["model", "seed"]).pivot(index="seed", columns="model", values="eval_acc")
    out = [report.Claim("this study", "The source task needs the hidden layers.", "none",
                        "the source MLP's final large-sample accuracy minus a linear classifier's on the raw "
                        "inputs, paired by seed; claimed above 10 points.",
                        {"source task": final["mlp"] - final["linear"]}, 0.10, "above", stats.POINTS,
                        design_check=True),
           report.Claim("this study", "Frozen source features are worth less as similarity falls.",
                        "none", "feature_extraction's final accuracy at similarity 1 minus at similarity 0, paired "
                        "by seed, per size; claimed above 0.",
                        {f"n = {n}/class": by_seed(runs, n, sims[-1])["feature_extraction"]
                         - by_seed(runs, n, sims[0])["feature_extraction"] for n in sizes}, 0.0, "above",
                        stats.POINTS, design_check=True)]
    for (size, sim), arm, words in advice:
        out.append(report.Claim("S-questions", f"{size.capitalize()} and {sim} target: {words}.", "none given",
                                f"final large-sample accuracy of {arm} minus the best other strategy in the cell "
                                "(chosen by its mean on the even seeds), paired by seed on the odd seeds; claimed "
                                "above 0.", versus(runs, arm, None, scenarios[(size, sim)]), 0.0, "above",
                                stats.POINTS))
    out += [
        report.Claim("S-questions", "Large and dissimilar: fine-tuning often still helps over training from scratch.",
                     "none given", f"final accuracy of finetune_all at the from-scratch rate {LR:g} minus scratch "
                     "(the same training from random weights); claimed above 0.",
                     versus(runs, NO_FREEZE, "scratch", scenarios[("large", "dissimilar")]), 0.0, "above", stats.POINTS),
        report.Claim("S-questions, S-tricks", "Fine-tune pretrained weights with a small learning rate.", "none given",
                     f"final accuracy of finetune_all with the pretrained layers at {SMALL_LR:g} minus at "
                     f"{LARGE_LR:g} (the new head at {LR:g} in both); claimed above 0.",
                     versus(runs, f"finetune_all lr={SMALL_LR:g}", f"finetune_all lr={LARGE_LR:g}", corners), 0.0, "above",
                     stats.POINTS),
        report.Claim("S-tricks", "Leave the first layers alone (freeze them).", "none given",
                     f"final accuracy with the first layer frozen (finetune_top k={LAYERS - 1}) minus with "
                     f"none frozen (finetune_all, same rate {LR:g}); claimed above 0.",
                     versus(runs, f"finetune_top k={LAYERS - 1}", NO_FREEZE, corners), 0.0, "above", stats.POINTS),
        report.Claim("S-tfjs", "Freezing the feature layers lowers the loss after the first epoch.", "0.27 vs 0.37",
                     f"mean minibatch loss of the first epoch, frozen ({FROZEN}) minus not frozen ({NO_FREEZE}), at "
                     "the largest size; claimed below 0.",
                     versus(runs, FROZEN, NO_FREEZE, largest, value="first_train_loss"), 0.0, "below",
                     stats.Unit(lambda ci: ci.format(digits=3), 0.02)),
        report.Claim("S-tfjs", "Freezing raises the accuracy after the first epoch.", "0.91 vs 0.87",
                     "test-split accuracy after the first epoch, frozen minus not frozen; claimed above 0.",
                     versus(runs, FROZEN, NO_FREEZE, largest, value="first_test_acc"), 0.0, "above", stats.POINTS),
        report.Claim("S-tfjs", "Freezing gives a higher final accuracy.", "about 0.968 vs 0.945",
                     "final large-sample accuracy, frozen minus not frozen; claimed above 0.",
                     versus(runs, FROZEN, NO_FREEZE, largest), 0.0, "above", stats.POINTS),
        report.Claim("S-tfjs", "Training without freezing takes about twice as long.", "about 60 s vs 30 s",
                     "training time per step of the whole program (evaluation included), not frozen over "
                     "frozen; one timing per program, so the interval is the ratio itself; claimed above 1.5.",
                     step_ratio(runs, NO_FREEZE, FROZEN), 1.5, "above", stats.Unit(lambda ci: f"{ci.mean:.2f}x", 0.25)),
        report.Claim("S-finetune", "Training the head first, then the top block with a very small rate, beats "
                     "feature extraction.", "93% validation accuracy",
                     "final accuracy of staged minus feature_extraction; claimed above 0.",
                     versus(runs, "staged", "feature_extraction", corners), 0.0, "above", stats.POINTS),
        report.Claim("S-tricks", "An output layer wider than the class count helps.", "none given",
                     f"final accuracy of wide_head ({WIDE} outputs for {TARGET_TASK.classes} classes) minus "
                     f"finetune_all at the same rate {LR:g}; claimed above 0.",
                     versus(runs, "wide_head", NO_FREEZE, corners), 0.0, "above", stats.POINTS),
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


def figures(results: Results) -> list[fig.Figure]:
    frame = results.frame
    runs = per_run(frame)
    sizes, sims = picked_sizes(runs), sorted(runs["similarity"].unique())
    out = []
    phase = phase_diagram(runs)

    def draw_phase(data):
        grid = data.pivot(index="similarity", columns="n_target", values="best").sort_index(ascending=False)
        notes = data.assign(note=[f"{100 * m:+.1f} pt{'' if e else ' (ns)'}\nvs {r}" for m, e, r in
                                  zip(data["margin"], data["excludes_zero"], data["runner_up"])])
        notes = notes.pivot(index="similarity", columns="n_target", values="note").sort_index(ascending=False)
        return fig.category_grid(grid, notes, xlabel="target examples per class", ylabel="similarity to the source")

    out.append(fig.Figure("phase", "The best strategy (colour) in each cell of target size x similarity, by mean "
                          "final large-sample accuracy over seeds; text: its margin over the runner-up, paired by "
                          "seed, '(ns)' where the 95% interval of the margin includes 0.", phase, draw_phase))
    depth = runs[runs["arm"].isin(depth_arms()) & runs["n_target"].isin(sizes)]
    depth = stats.summarize(depth.assign(similarity=depth["similarity"].map("{:g}".format)),
                            ["n_target", "similarity", "trainable_layers"], "eval_acc")
    out.append(fig.Figure("freeze-depth", "Final large-sample accuracy against the number of top layers trained "
                          "(1: feature extraction, 5: fine-tune all; learning rate 1e-3) for three target sizes; "
                          "mean and 95% band over seeds.", depth,
                          lambda d: fig.facets(d, "n_target", fig.bands, x="trainable_layers", hue="similarity",
                                               ylabel="final accuracy")))
    modes = {FROZEN: f"frozen ({LAYERS - FROZEN_K} of {LAYERS} layers)", NO_FREEZE: "no freeze",
             REINITIALIZED: "re-initialized"}
    curves = frame[(frame["n_target"] == runs["n_target"].max()) & frame["similarity"].isin([sims[0], sims[-1]])]
    curves = curves.assign(mode=[modes.get(arm_label(*r)) for r in
                                 curves[["strategy", "trainable_layers", "lr"]].itertuples(index=False)])
    long = curves.dropna(subset=["mode"]).melt(id_vars=["mode", "similarity", "seed", "epoch"],
                                               value_vars=["train_loss", "test_acc"], var_name="measure")
    long["panel"] = long["measure"].map({"train_loss": "training loss", "test_acc": "test accuracy"}) + \
        ", similarity " + long["similarity"].map("{:g}".format)
    stfjs = stats.summarize(long, ["panel", "mode", "epoch"], "value")
    out.append(fig.Figure("stfjs", "S-tfjs's comparison at the largest target size: frozen feature layers, "
                          "nothing frozen and re-initialized weights (learning rate 1e-3): mean minibatch loss of "
                          "each epoch and test-split accuracy after it, at similarity 1 and 0; mean and 95% band "
                          "over seeds.", stfjs,
                          lambda d: fig.facets(d, "panel", fig.bands, x="epoch", hue="mode", ylabel="value",
                                               sharey=False, width=3.6)))
    tuned = runs[(runs["strategy"] == "finetune_all") & runs["n_target"].isin(sizes)]
    tuned = stats.summarize(tuned.assign(similarity=tuned["similarity"].map("{:g}".format)),
                            ["n_target", "similarity", "lr"], "eval_acc")

    def draw_lr(data):
        f = fig.facets(data, "n_target", fig.bands, x="lr", hue="similarity", ylabel="final accuracy")
        for ax in f.axes:
            ax.set_xscale("log")
        return f

    out.append(fig.Figure("learning-rate", "Fine-tuning every layer: final large-sample accuracy against the "
                          "learning rate (Adam) of the pretrained layers, the new head at 1e-3, for three target "
                          "sizes; mean and 95% band over seeds.",
                          tuned, draw_lr))
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


def section(results: Results) -> report.Section:
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
    table = table[["n_target", "similarity", "best", "accuracy", "runner_up", "margin", "excludes_zero"]]
    model = transfer_model(results)
    times = runs.groupby("arm")["step_time_s"].first()
    text = report.prose(TEXT, hidden=HIDDEN, source_classes=SOURCE_TASK.classes, source_clusters=SOURCE_TASK.clusters,
                        mlp_accuracy=accuracy["mlp"], linear_accuracy=accuracy["linear"], bayes=bayes,
                        target_classes=TARGET_TASK.classes, steps=steps, batch=target["batch_size"],
                        seeds=runs["seed"].nunique(), runs=len(runs), wall_s=results.metadata["wall_time_s"],
                        scenarios=scenario_notes(phase, runs), frozen_k=FROZEN_K, layers=LAYERS,
                        flop_share=step_flops(model, FROZEN_K) / step_flops(model, LAYERS),
                        time_share=times[FROZEN] / times[NO_FREEZE])
    return report.Section(
        title=QUESTION, intro=text["intro"], claims=claims(runs, results.tables["source"]),
        tables=[("The phase diagram: per target size (examples per class) and similarity, the best strategy by "
                 "mean final large-sample accuracy on the even seeds, the runner-up, and their paired margin on the "
                 "odd seeds [95% bootstrap CI].", table)],
        notes=text["notes"])
