"""From an experiment's declared grid to one tidy frame with provenance.

An experiment declares `Program`s: a static `Setup` and a table of runs (its
condition columns, `seed`, `data_seed`, the `init` and `activation` names
and `lr`). Seeds below the run's `tuning_seeds` tune, the rest evaluate
(the `role` column): a tuned program trains its whole grid (of learning
rates, say) on the tuning seeds, chooses per condition on their validation
sample, and trains only the chosen values on the evaluation seeds, which
the verdicts read. Each program is trained by `study.grid.train_grid`; the
per-run metrics are unrolled into one row per (run, epoch), and with
weight tracking into per-layer and sampled-weight tables (a tuned
program's at its chosen values only).
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.metadata
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import jax
import numpy as np
import pandas as pd
from tqdm import tqdm

from study import config, devices, network, results, stats
from study.grid import Timing, train_grid


MAIN = "main"  # the table of one row per (run, epoch): results/NAME.parquet


@dataclasses.dataclass(frozen=True)
class Program:
    """`table`: where its per-epoch rows go (`MAIN`: the main file); `start_from`:
    the label of an earlier program with `keep_params` whose final weights,
    one network per seed 0, 1, ..., start this one's hidden layers; `tuned`:
    run columns (learning rates) chosen per condition on the validation
    sample, marked in the main table's boolean `selected` column (see
    `stats.chosen_on_validation`; every row of an untuned program is selected);
    `tuned_at`: each run's validation accuracy read at its "best" scored
    epoch (for claims read early-stopped) or its "last"."""

    label: str
    setup: config.Setup
    runs: pd.DataFrame
    table: str = MAIN
    start_from: str | None = None
    tuned: tuple[str, ...] = ()
    tuned_at: str = "best"


# Per-epoch curves that a tuned grid keeps at its chosen values only: its other
# values are read for their validation accuracy (the choice and the grid checks).
CURVES = ("train_loss", "test_acc", "train_acc")
CODE = ("study", "experiments", "pyproject.toml")  # what a results file's git commit vouches for
PACKAGES = ("jax", "jaxlib", "flax", "optax", "numpy", "pandas", "pyarrow", "scipy", "seaborn", "matplotlib",
            "markdown")  # every package that shapes a number or a figure


def tidy(runs: pd.DataFrame, axes: dict[str, np.ndarray], columns: dict[str, np.ndarray]) -> pd.DataFrame:
    """One row per run and per combination of `axes` (in their order): the
    run's columns, one column per axis, then `columns`, each shaped (runs,
    *axis lengths) or a prefix of it (repeated over the missing axes)."""
    shape = (len(runs), *(len(v) for v in axes.values()))
    frame = runs.loc[runs.index.repeat(int(np.prod(shape[1:])))].reset_index(drop=True)
    for name, grid in zip(axes, np.meshgrid(*axes.values(), indexing="ij")):
        frame[name] = np.tile(grid.reshape(-1), len(runs))
    for name, values in columns.items():
        values = values.reshape(values.shape + (1,) * (len(shape) - values.ndim))
        frame[name] = np.broadcast_to(values, shape).reshape(-1)
    return frame


def tables(setup: config.Setup, runs: pd.DataFrame, out: dict, step_time_s: float) -> dict[str, pd.DataFrame]:
    """`train_grid`'s output as tidy frames: `MAIN` one row per (run, epoch);
    with tracking, "layers" per (run, layer, kept epoch) and "weights" per
    (run of the seeds whose values are kept, layer, weight_index, epoch).
    Epochs count from 1; the sampled weights also at epoch 0, their initial values."""
    epochs = np.arange(1, setup.epochs + 1, dtype=np.int32)
    frames = {MAIN: tidy(runs, {"epoch": epochs}, out["epochs"]).assign(step_time_s=step_time_s)}
    if "layers" in out:
        layers = np.arange(len(setup.hidden) + 1, dtype=np.int32)
        every = setup.tracking.measures_every
        frames["layers"] = tidy(runs, {"layer": layers, "epoch": epochs[every - 1::every]},
                                {k: np.moveaxis(v, 1, -1) if v.ndim == 3 else v for k, v in out["layers"].items()})
        kept = (runs["seed"] < setup.tracking.values_of_seeds).to_numpy()
        sampled = out["weights"][kept]  # (runs, records, layers, weights)
        records = np.arange(0, setup.epochs + 1, setup.tracking.every, dtype=np.int32)
        frames["weights"] = tidy(runs[kept].reset_index(drop=True),
                                 {"layer": layers, "weight_index": np.arange(sampled.shape[-1], dtype=np.int32),
                                  "epoch": records}, {"value": np.moveaxis(sampled, 1, -1)})
    return frames


def run_values(setup: config.Setup, runs: pd.DataFrame) -> dict[str, np.ndarray]:
    """The traced per-run values of `config.RUN_VALUES` from a runs table
    (those of `config.OPTIONAL` only where the table has them)."""
    values = {"seed": runs["seed"].to_numpy(), "data_seed": runs["data_seed"].to_numpy(),
              "init": runs["init"].map(setup.schemes.index).to_numpy(),
              "activation": runs["activation"].map(setup.activations.index).to_numpy(),
              "lr": runs["lr"].to_numpy()}
    return values | {k: runs[k].to_numpy() for k in config.OPTIONAL if k in runs}


def log(message: str) -> None:
    """A progress line on stderr, above the progress bar when there is one."""
    tqdm.write(message, file=sys.stderr)


def roles(runs: pd.DataFrame, tuning_seeds: int) -> pd.DataFrame:
    """`runs` with their `role`: "tune" for the seeds below `tuning_seeds`, else "evaluate"."""
    return runs.assign(role=np.where(runs["seed"] < tuning_seeds, "tune", "evaluate"))


def cell_columns(program: Program) -> list[str]:
    """The run columns that make a condition: all but the seeds and the tuned ones."""
    return [c for c in program.runs.columns if c not in ("seed", "data_seed", "role", *program.tuned)]


def to_train(program: Program, tuning_seeds: int) -> pd.DataFrame:
    """The runs a program trains before any choice: every run of an untuned
    program, the tuning seeds' runs of a tuned one."""
    runs = roles(program.runs, tuning_seeds)
    return runs[runs["role"] == "tune"] if program.tuned else runs


def evaluation_runs(program: Program, tuning_seeds: int, chosen: pd.DataFrame) -> pd.DataFrame:
    """A tuned program's evaluation-seed runs at the `chosen` values (one row per condition)."""
    runs = roles(program.runs, tuning_seeds)
    return runs[runs["role"] == "evaluate"].merge(chosen, on=list(chosen.columns))


def chosen(program: Program, runs: pd.DataFrame, main: pd.DataFrame) -> pd.DataFrame:
    """Per condition of a tuned program, its tuned values with the best mean
    validation accuracy over the tuning seeds (`stats.chosen_on_validation`)."""
    keys = [*cell_columns(program), *program.tuned]
    picked = main[stats.chosen_on_validation(main, cell_columns(program), list(program.tuned), at=program.tuned_at)]
    return picked[keys].drop_duplicates().astype(runs[keys].dtypes.to_dict())


def run(name: str, programs: list[Program], config: dict, progress: Callable[[str], None] = log,
        batch_runs: int | None = None) -> results.Results:
    """Train every program and return its tidy frames and their metadata.

    `config["tuning_seeds"]` seeds tune (see the module docstring). On a
    terminal a progress bar counts the experiment's run-epochs, with the
    elapsed time and an ETA (off when stderr is not a terminal, so logs stay
    short)."""
    start, tuning = time.perf_counter(), config.get("tuning_seeds", 0)
    parts, records, kept = [], [], {}
    bar = tqdm(total=sum(planned_runs(p, tuning) * p.setup.epochs for p in programs), desc=name,
               unit=" run-epochs", file=sys.stderr, disable=not sys.stderr.isatty(), leave=False,
               dynamic_ncols=True)
    for i, program in enumerate(programs, 1):
        label = f"[{name}] program {i}/{len(programs)} {program.label}"
        setup, epochs = program.setup, program.setup.epochs
        train = functools.partial(train_grid, setup, pretrained=kept[program.start_from] if program.start_from else (),
                                  batch_runs=batch_runs, trained=lambda n: bar.update(n * epochs))
        progress(f"{label}: {planned_runs(program, tuning)} runs x {epochs} epochs, compiling and training ...")
        runs, out, timing, best = train_program(program, tuning, train)
        cached = " (from the compilation cache)" if timing.cache_hits else ""
        progress(f"{label}: compiled in {timing.compile_s:.1f} s{cached}, trained in {timing.train_s:.1f} s "
                 f"({len(runs) * epochs / timing.train_s:,.0f} run-epochs/s)")
        if "params" in out:
            if not np.array_equal(runs["seed"], np.arange(len(runs))):
                raise ValueError(f"program {program.label!r} keeps weights: its runs must be seeds 0, 1, ...")
            kept[program.label] = out.pop("params")
        # Each device trains its share of the runs batch_runs at a time.
        steps = -(-len(runs) // (len(jax.devices()) * timing.batch_runs)) * epochs * setup.batches_per_epoch
        frames = tables(setup, runs, out, timing.train_s / steps)
        if best is not None:  # the weight tables of a tuned grid keep its chosen values: nothing reads the rest
            frames |= {k: f.merge(best) for k, f in frames.items() if k != MAIN}
        if any(p.tuned for p in programs) and program.table == MAIN:
            frames[MAIN]["selected"] = selected(frames[MAIN], best)
        if best is not None:
            frames[MAIN].loc[~selected(frames[MAIN], best), [c for c in CURVES if c in frames[MAIN]]] = np.nan
        parts.append({table_name(program.table, k): f for k, f in frames.items()})
        records.append({"label": program.label, "setup": dataclasses.asdict(setup),
                        "runs": len(runs), "model": network.model_table(setup),
                        "compile_s": timing.compile_s, "train_s": timing.train_s})
    bar.close()
    frames = {key: pd.concat([p[key] for p in parts if key in p], ignore_index=True)
              for key in dict.fromkeys(k for p in parts for k in p)}
    metadata = {"experiment": name, "config": config, "programs": records,
                "versions": {p: importlib.metadata.version(p) for p in PACKAGES},
                "git_commit": git_commit(), "devices": devices.describe(),
                "wall_time_s": time.perf_counter() - start}
    params = {f"{label}/layer{j // 2}_{('kernel', 'bias')[j % 2]}": w
              for label, weights in kept.items() for j, w in enumerate(weights)}
    return results.Results(frames.pop(MAIN), metadata, frames, params)


def train_program(program: Program, tuning_seeds: int, train: Callable) \
        -> tuple[pd.DataFrame, dict, Timing, pd.DataFrame | None]:
    """A program's runs, their `train_grid` output and timing, and its
    choices: every run of an untuned program (no choices); a tuned one's
    grid on the tuning seeds, then the values chosen there (one row per
    condition) on the evaluation seeds (both calls to one compiled program)."""
    runs = to_train(program, tuning_seeds).reset_index(drop=True)
    out, timing = train(run_values(program.setup, runs))
    if not program.tuned:
        return runs, out, timing, None
    best = chosen(program, runs, tidy(runs, {"epoch": np.arange(1, program.setup.epochs + 1)}, out["epochs"]))
    more = evaluation_runs(program, tuning_seeds, best)
    extra, more_timing = train(run_values(program.setup, more))
    return (pd.concat([runs, more], ignore_index=True), jax.tree.map(lambda *a: np.concatenate(a), out, extra),
            dataclasses.replace(timing, train_s=timing.train_s + more_timing.train_s), best)


def planned_runs(program: Program, tuning_seeds: int) -> int:
    """How many runs a program trains: its tuned grid on the tuning seeds,
    one run per condition and evaluation seed."""
    runs = roles(program.runs, tuning_seeds)
    if not program.tuned:
        return len(runs)
    evaluate = runs[runs["role"] == "evaluate"].drop_duplicates([*cell_columns(program), "seed"])
    return int((runs["role"] == "tune").sum()) + len(evaluate)


def table_name(program_table: str, kind: str) -> str:
    """Where a program's frames of `kind` (MAIN, "layers", "weights") go:
    "layers" for the main program's layers, "source-layers" for those of a
    program whose rows go to "source"."""
    return "-".join(part for part in (program_table, kind) if part != MAIN) or MAIN


def selected(frame: pd.DataFrame, best: pd.DataFrame | None) -> np.ndarray:
    """`selected` for a program's rows: True on every row of the values
    chosen per condition (`best`; every row of an untuned program)."""
    if best is None:
        return np.ones(len(frame), bool)
    return frame[list(best.columns)].merge(best.assign(selected=True), how="left")["selected"].fillna(False) \
        .to_numpy(bool)


def git_commit() -> str:
    """HEAD of the package's checkout, with `+dirty` for uncommitted changes
    to the code that computes results (not to results, figures or text)."""
    root = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True,
                              text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", *CODE], cwd=root,
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("+dirty" if dirty else "")
