"""From an experiment's declared grid to one tidy frame with provenance.

An experiment declares `Program`s: a static `Setup` and a table of runs (its
condition columns, `seed`, `data_seed`, the `init` and `activation` names
and `lr`).
Each program is trained by `train.train_grid` in one compiled call; the
per-run metrics are unrolled into one row per (run, epoch).
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from study import devices, train


@dataclasses.dataclass(frozen=True)
class Program:
    label: str
    setup: train.Setup
    runs: pd.DataFrame


PACKAGES = ("jax", "jaxlib", "flax", "optax", "numpy", "pandas", "pyarrow", "scipy", "seaborn")


def tidy(runs: pd.DataFrame, metrics: dict[str, np.ndarray], epochs: int) -> pd.DataFrame:
    """One row per (run, epoch): the run's columns, `epoch` (1-based), then
    each metric; per-run scalars are repeated on every row of their run."""
    frame = runs.loc[runs.index.repeat(epochs)].reset_index(drop=True)
    frame["epoch"] = np.tile(np.arange(1, epochs + 1, dtype=np.int32), len(runs))
    for name, values in metrics.items():
        frame[name] = values.reshape(-1) if values.ndim == 2 else np.repeat(values, epochs)
    return frame


def run_values(setup: train.Setup, runs: pd.DataFrame) -> dict[str, np.ndarray]:
    """The traced per-run values of `train.RUN_VALUES` from a runs table."""
    return {"seed": runs["seed"].to_numpy(), "data_seed": runs["data_seed"].to_numpy(),
            "init": runs["init"].map(setup.schemes.index).to_numpy(),
            "activation": runs["activation"].map(setup.activations.index).to_numpy(),
            "lr": runs["lr"].to_numpy()}


def run(name: str, programs: list[Program], config: dict,
        progress: Callable[[str], None] = lambda msg: print(msg, file=sys.stderr, flush=True),
        batch_runs: int = 1) -> tuple[pd.DataFrame, dict]:
    """Train every program and return the tidy frame and its metadata."""
    start = time.perf_counter()
    frames, records = [], []
    for i, program in enumerate(programs, 1):
        setup, runs = program.setup, program.runs.reset_index(drop=True)
        progress(f"[{name}] program {i}/{len(programs)} {program.label}: "
                 f"{len(runs)} runs x {setup.epochs} epochs, compiling and training ...")
        metrics, timing = train.train_grid(setup, run_values(setup, runs), batch_runs=batch_runs)
        progress(f"[{name}] program {i}/{len(programs)} {program.label}: compiled in "
                 f"{timing.compile_s:.1f} s, trained in {timing.train_s:.1f} s "
                 f"({len(runs) * setup.epochs / timing.train_s:,.0f} run-epochs/s)")
        frames.append(tidy(runs, metrics, setup.epochs))
        records.append({"label": program.label, "setup": dataclasses.asdict(setup),
                        "runs": len(runs), "model": train.model_table(setup),
                        "compile_s": timing.compile_s, "train_s": timing.train_s})
    frame = pd.concat(frames, ignore_index=True)
    metadata = {"experiment": name, "config": config, "programs": records,
                "versions": {p: importlib.metadata.version(p) for p in PACKAGES},
                "git_commit": git_commit(), "devices": devices.describe(),
                "wall_time_s": time.perf_counter() - start}
    return frame, metadata


def git_commit() -> str:
    """HEAD of the package's checkout, with `+dirty` for uncommitted changes."""
    root = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True,
                              text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("+dirty" if dirty else "")
