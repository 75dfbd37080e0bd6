"""Q1. How does initialization affect training? (S-questions)

Two variants, both in `results/initialization.parquet` (column `variant`):

- `faithful`: the original code's setup: harmonic class gaps and a random
  shared covariance drawn per dataset, sigmoid, a 2-unit output trained with
  MSE on one-hot targets, Adam 0.003, minibatches of 64, hidden (100, 100),
  biases drawn like the weights, its five initializers; 84 epochs of 6
  minibatches = 504 steps (the original's 500).
- `stated`: the text's task (identity covariance, gap 1 in every dimension,
  Bayes limit 0.9584) with softmax cross-entropy, every scheme of
  `study.inits.SCHEMES` and ReLU, tanh and sigmoid; 100 epochs.

Run: `study run initialization` (16 seeds, 656 runs in 2 compiled programs).
"""

from __future__ import annotations

import itertools

import pandas as pd

from study import figures as fig
from study import inits, report, stats
from study.data import TwoGaussians
from study.results import Results
from study.runner import Program
from study.train import Setup, stride

NAME = "initialization"
QUESTION = "How does initialization affect training?"

FAITHFUL_SCHEMES = ("glorot_uniform", "zeros", "constant_1", "normal_0.01", "normal_1")
STATED_SCHEMES = tuple(inits.SCHEMES)
ACTIVATIONS = ("relu", "tanh", "sigmoid")
LEARNING_RATE = 0.003
SEEDS, QUICK_SEEDS = 16, 2
EPOCHS = {"faithful": 84, "stated": 100}
QUICK_EPOCHS = 6
EVAL_POINTS = 5  # at most this many large-sample scores per run, the last epoch among them
TRAINED = 0.9  # "trains": 90% of the way from chance (0.5) to the Bayes limit
REACHED = 0.9  # accuracy for "epochs to reach"
ACCURACY_RANGE = (0.45, 1.0)  # chance to perfect: the axis of every accuracy plot


def plan(seeds: int | None = None, epochs: int | None = None, quick: bool = False) -> list[Program]:
    """Two programs: the faithful variant, and the stated one with every
    activation (a traced value, like the scheme)."""
    seeds = seeds or (QUICK_SEEDS if quick else SEEDS)

    def setup(variant, **kwargs):
        n = epochs or (QUICK_EPOCHS if quick else EPOCHS[variant])
        return Setup(hidden=(100, 100), optimizer="adam", batch_size=64, epochs=n, evals=stride(n, EVAL_POINTS),
                     scored=("eval_acc", "distinct_units"),
                     **kwargs)

    def runs(variant, activations, schemes):
        grid = itertools.product(activations, schemes, range(seeds))
        return pd.DataFrame([{"variant": variant, "activation": a, "init": s, "seed": seed,
                              "data_seed": seed, "lr": LEARNING_RATE} for a, s, seed in grid])

    faithful = setup("faithful", task=TwoGaussians(harmonic_gaps=True, random_covariance=True),
                     activations=("sigmoid",), loss="mse", schemes=FAITHFUL_SCHEMES, init_biases=True)
    stated = setup("stated", activations=ACTIVATIONS, schemes=STATED_SCHEMES)
    return [Program("faithful", faithful, runs("faithful", ("sigmoid",), FAITHFUL_SCHEMES)),
            Program("stated", stated, runs("stated", ACTIVATIONS, STATED_SCHEMES))]


# --- analysis: everything below reads the results frame only ---------------

CELL = ["variant", "activation"]


def per_run(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per run at its last epoch, with the derived measures:
    `norm_acc` (large-sample accuracy scaled so chance = 0 and Bayes = 1),
    `epochs_to_90` (first epoch with test accuracy >= 0.9; epochs + 1 if
    never, a censored value) and `ever_diverged`."""
    keys = [*CELL, "init", "seed"]
    groups = frame.groupby(keys, sort=False)
    last = frame.loc[groups["epoch"].idxmax()].set_index(keys)
    reached = frame[frame["test_acc"] >= REACHED].groupby(keys)["epoch"].min()
    last["epochs_to_90"] = reached.reindex(last.index).fillna(last["epoch"] + 1)
    last["ever_diverged"] = groups["diverged"].any()
    last["norm_acc"] = (last["eval_acc"] - 0.5) / (last["bayes_acc"] - 0.5)
    return last.reset_index()


def paired(runs: pd.DataFrame, value: str) -> pd.DataFrame:
    """`value` with one column per scheme, one row per (variant, activation, seed)."""
    return runs.pivot_table(index=[*CELL, "seed"], columns="init", values=value)


def cells(table: pd.DataFrame, statistic) -> dict[str, pd.Series]:
    """Apply `statistic(cell_table) -> (label_suffix, per-seed values)` to each
    (variant, activation) cell of a paired table."""
    return {f"{variant} / {activation}{suffix}": values
            for (variant, activation), part in table.groupby(level=[0, 1], sort=False)
            for suffix, values in statistic(part)}


def claims(runs: pd.DataFrame) -> list[report.Claim]:
    acc, norm, speed = paired(runs, "eval_acc"), paired(runs, "norm_acc"), paired(runs, "epochs_to_90")

    def xavier_minus_best_other(part):
        selects = stats.selection_half(part.index.get_level_values("seed"))
        others = part.drop(columns="glorot_uniform").dropna(axis=1, how="all")
        best = others[selects].mean().idxmax()
        yield f" (vs {best})", (part["glorot_uniform"] - part[best])[~selects]

    def low_variance_minus_xavier(part):
        yield "", part["normal_0.01"] - part["glorot_uniform"]

    def largest_variance_minus_xavier(part):
        widest = [s for s in ("normal_10", "normal_1") if part[s].notna().any()][0]
        yield f" ({widest})", part[widest] - part["glorot_uniform"]

    def scheme(names):
        def statistic(part):
            for name in names:
                if name in part and part[name].notna().any():
                    yield f" ({name})", part[name]
        return statistic

    trained = f"large-sample accuracy scaled to chance = 0, Bayes limit = 1; trains when above {TRAINED}."
    return [
        report.Claim("S-questions, hypothesis", "Xavier initialization (the TensorFlow default) trains best.",
                     "none given",
                     "final large-sample accuracy of Xavier-uniform minus that of the best other scheme "
                     "(chosen by its mean on the even seeds), paired by seed on the odd seeds; claimed above 0.",
                     cells(acc, xavier_minus_best_other), 0.0, "above", stats.points),
        report.Claim("S-questions, conclusion", "Low-variance Gaussian initialization trains well, like Xavier.",
                     "none given",
                     "final large-sample accuracy of N(0, 0.01^2) minus Xavier-uniform, paired by seed; "
                     "claimed above -1 point.",
                     cells(acc, low_variance_minus_xavier), -0.01, "above", stats.points),
        report.Claim("S-questions, conclusion", "With a large variance, training slows down.", "none given",
                     f"epochs to reach test accuracy {REACHED} with the widest Gaussian minus with "
                     "Xavier-uniform (runs that never reach it count as epochs + 1); claimed above 0.",
                     cells(speed, largest_variance_minus_xavier), 0.0, "above",
                     lambda ci: ci.format(digits=1, unit=" epochs")),
        report.Claim("S-questions, conclusion", "A constant 0 initialization eventually trains.", "none given",
                     trained, cells(norm, scheme(["zeros"])), TRAINED, "above", lambda ci: ci.format()),
        report.Claim("S-questions, conclusion + hypothesis",
                     "Other constant initializations do not train (constants train worst).", "none given",
                     trained + " Claimed below.",
                     cells(norm, scheme(["constant_0.5", "constant_1"])), TRAINED, "below",
                     lambda ci: ci.format()),
    ]


def mechanism_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Distinct hidden units at the end, and divergence, per scheme and cell."""
    keys = [*CELL, "init"]
    table = runs.groupby(keys, sort=False).agg(
        distinct_h1=("distinct_h1", "mean"), distinct_h2=("distinct_h2", "mean"),
        diverged=("ever_diverged", "mean"), final_eval_acc=("eval_acc", "mean")).reset_index()
    return table.round({"distinct_h1": 1, "distinct_h2": 1, "diverged": 2, "final_eval_acc": 3})


def figures(results: Results) -> list[fig.Figure]:
    frame = results.frame
    stated = frame[frame["variant"] == "stated"]
    faithful = frame[frame["variant"] == "faithful"]
    runs = per_run(frame)
    bayes = float(stated["bayes_acc"].iloc[0]) if len(stated) else None
    dashed = inits.CONSTANT_SCHEMES

    curves = stats.summarize(stated, ["activation", "init", "epoch"], "test_acc")
    loss = stats.summarize(stated, ["activation", "init", "epoch"], "train_loss")
    final = stats.summarize(runs[runs["variant"] == "stated"], ["activation", "init"], "eval_acc")
    original = stats.summarize(faithful, ["init", "epoch"], "test_acc")
    original_bayes = float(runs.loc[runs["variant"] == "faithful", "bayes_acc"].mean())
    units = pd.concat([
        stats.summarize(runs.assign(cell=runs["variant"] + " / " + runs["activation"], layer=layer),
                        ["layer", "init", "cell"], column)
        for layer, column in [("hidden 1", "distinct_h1"), ("hidden 2", "distinct_h2")]])
    units = units.sort_values("init", key=lambda s: s.map(STATED_SCHEMES.index), kind="stable")

    def draw_curves(data):
        f = fig.facets(data, "activation", fig.bands, x="epoch", hue="init", dashed=dashed,
                       bayes=bayes, ylabel="test accuracy (100-point split)")
        f.axes[0].set_ylim(*ACCURACY_RANGE)
        return f

    def draw_loss(data):
        f = fig.facets(data, "activation", fig.bands, x="epoch", hue="init", dashed=dashed,
                       ylabel="training loss", sharey=False)
        for ax in f.axes:
            ax.set_yscale("log")
        return f

    def draw_final(data):
        f = fig.facets(data.assign(panel="stated"), "panel", fig.intervals, y="init", hue="activation",
                       bayes=bayes, ylabel="initialization", width=6, height=5)
        f.axes[0].set_xlabel(f"large-sample accuracy after {int(stated['epoch'].max())} epochs")
        f.axes[0].set_xlim(*ACCURACY_RANGE)
        f.axes[0].set_title("stated variant")
        return f

    def draw_original(data):
        f = fig.facets(data.assign(variant="faithful"), "variant", fig.bands, x="epoch", hue="init",
                       dashed=dashed, bayes=original_bayes, ylabel="test accuracy (100-point split)",
                       width=6)
        f.axes[0].set_ylim(*ACCURACY_RANGE)
        return f

    def draw_units(data):
        f = fig.facets(data, "layer", fig.intervals, y="init", hue="cell", ylabel="initialization",
                       width=5, height=5)
        for ax in f.axes:
            ax.set_xscale("log")
            ax.set_xlabel("distinct units at the end (of 100)")
        return f

    return [
        fig.Figure("curves", "Test accuracy per epoch, stated variant; mean and 95% band over seeds; "
                   "dashed: constant initializations; dotted: Bayes limit.", curves, draw_curves),
        fig.Figure("loss", "Training loss per epoch (log scale), stated variant; mean and 95% band over "
                   "seeds of runs with a finite loss.", loss, draw_loss),
        fig.Figure("final", "Final accuracy on 10,000 fresh points per scheme and activation, with 95% "
                   "intervals over seeds; dotted: Bayes limit.", final, draw_final),
        fig.Figure("faithful", "The original code's setup: test accuracy per epoch; dotted: the mean Bayes "
                   "limit of its random-covariance datasets.", original, draw_original),
        fig.Figure("units", "Distinct hidden units at the end of training per layer (log scale): 1 means "
                   "the layer's symmetry was never broken.", units, draw_units),
    ]


def section(results: Results) -> report.Section:
    runs = per_run(results.frame)
    bayes = runs.groupby("variant")["bayes_acc"].agg(["mean", "min", "max"])
    intro = (
        "S-questions trained one network per initialization and concluded that Xavier and "
        "low-variance Gaussians train well, a large variance slows training, a constant 0 "
        "\"eventually trains\" and other constants do not. We re-run its code's setup "
        "(*faithful*: sigmoid, MSE on one-hot outputs, a random covariance per dataset) and "
        "its text's setup (*stated*: identity covariance, Bayes limit "
        f"{bayes.loc['stated', 'mean']:.4f}) with {len(STATED_SCHEMES)} schemes and three "
        f"activations, {runs['seed'].nunique()} seeds each. The faithful datasets' Bayes limits range "
        f"over [{bayes.loc['faithful', 'min']:.3f}, {bayes.loc['faithful', 'max']:.3f}], so its "
        "accuracies are compared through the scaled accuracy (chance = 0, Bayes = 1). The source "
        f"ran 5 trainings in about 34.1 s; our {len(runs)} took {results.metadata['wall_time_s']:.0f} s.\n")
    notes = (
        "**Mechanism.** With a constant initialization every unit of a layer receives the same "
        "gradient, so in exact arithmetic the layer stays one effective unit (`distinct_h1`, "
        "`distinct_h2` = 1 above; a mean above 1 means float32 rounding split the units in some "
        "runs). "
        "Whether that unit learns depends on the activation: with zero weights ReLU and tanh units "
        "output 0 and pass no gradient to the layers below, while sigmoid units output 0.5 and keep "
        "learning. One effective unit per layer can still solve this almost linear task, which is why "
        "a constant initialization can reach the Bayes limit without ever breaking symmetry. "
        "Literature: Glorot & Bengio (2010) on saturating sigmoids under naive initialization; "
        "He et al. (2015) on variance 2/fan-in for ReLU; Saxe et al. (2013) on orthogonal initialization.\n")
    return report.Section(
        title=QUESTION, intro=intro, claims=claims(runs),
        figures=[(f"{NAME}-{f.name}", f.caption) for f in figures(results)],
        tables=[("Per scheme at the last epoch: mean distinct units per hidden layer, fraction of runs "
                 "that diverged (non-finite loss), mean large-sample accuracy.", mechanism_table(runs))],
        notes=notes)
