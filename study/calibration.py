"""The calibration table: how often each interval method covers the true mean.

The verdicts' interval is chosen by its measured coverage at the seed
counts and levels the claims use, not by its name. Each method is run on
many simulated samples whose mean is known; its actual coverage is the
share of intervals that contain it. `study calibrate` prints the table and
writes it to `paper/calibration.csv`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from study.stats import LEVEL, family_level, half_width

DISTRIBUTIONS = {  # name -> (draw(rng, shape), true mean)
    "normal": (lambda rng, shape: rng.normal(size=shape), 0.0),
    "skewed (Beta(19, 1), like accuracies)": (lambda rng, shape: rng.beta(19, 1, size=shape), 0.95),
}
SEEDS = (8, 16, 32)
LEVELS = (LEVEL, family_level(4), family_level(16))  # one cell, 4 and 16 cells under Bonferroni
REPETITIONS, RESAMPLES = 4000, 2000
RANDOM_STATE = 0


def student_t(x: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
    """Student-t intervals of the mean of each row of `x`."""
    half = half_width(x.std(1, ddof=1), x.shape[1], level)
    return x.mean(1) - half, x.mean(1) + half


def resampled_means(x: np.ndarray, rng) -> tuple[np.ndarray, np.ndarray]:
    """(means, standard errors) of RESAMPLES bootstrap resamples of each row."""
    n = x.shape[1]
    picks = x[np.arange(len(x))[:, None, None], rng.integers(n, size=(len(x), RESAMPLES, n))]
    return picks.mean(-1), picks.std(-1, ddof=1) / np.sqrt(n)


def percentile(x: np.ndarray, level: float, means: np.ndarray, errors: np.ndarray):
    """The percentile bootstrap (scipy.stats.bootstrap's default method "percentile")."""
    tail = (1 - level) / 2
    return np.quantile(means, tail, axis=1), np.quantile(means, 1 - tail, axis=1)


def bootstrap_t(x: np.ndarray, level: float, means: np.ndarray, errors: np.ndarray):
    """The studentized (bootstrap-t) interval."""
    n, tail = x.shape[1], (1 - level) / 2
    mean, error = x.mean(1), x.std(1, ddof=1) / np.sqrt(n)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = (means - mean[:, None]) / errors
    t = np.where(np.isfinite(t), t, 0.0)
    return mean - np.quantile(t, 1 - tail, axis=1) * error, mean - np.quantile(t, tail, axis=1) * error


def coverage(draw, truth: float, n: int, levels=LEVELS, repetitions: int = REPETITIONS,
             bootstrap: bool = True, seed: int = RANDOM_STATE) -> list[dict]:
    """Per method and level: the share of `repetitions` samples of `n` draws
    whose interval holds `truth` (the bootstrap methods only with `bootstrap`)."""
    rng = np.random.default_rng(seed)
    x = draw(rng, (repetitions, n))
    rows = []
    for level in levels:
        lo, hi = student_t(x, level)
        rows.append({"method": "Student-t", "level": level, "coverage": np.mean((lo <= truth) & (truth <= hi))})
    if bootstrap:
        resampled = [resampled_means(chunk, rng) for chunk in np.array_split(x, max(1, len(x) // 100))]
        for name, method in (("percentile bootstrap", percentile), ("bootstrap-t", bootstrap_t)):
            for level in levels:
                held = [(lo <= truth) & (truth <= hi) for chunk, (means, errors) in
                        zip(np.array_split(x, len(resampled)), resampled)
                        for lo, hi in [method(chunk, level, means, errors)]]
                rows.append({"method": name, "level": level, "coverage": np.mean(np.concatenate(held))})
    return rows


def table(seeds=SEEDS, repetitions: int = REPETITIONS, progress=None) -> pd.DataFrame:
    """The calibration table: method x distribution x seeds x level -> actual coverage."""
    rows = []
    for name, (draw, truth) in DISTRIBUTIONS.items():
        for n in seeds:
            if progress:
                progress(f"calibrating on {name} data, {n} seeds ...")
            rows += [{"distribution": name, "seeds": n, **row}
                     for row in coverage(draw, truth, n, repetitions=repetitions)]
    return pd.DataFrame(rows)


def wide(calibration: pd.DataFrame) -> pd.DataFrame:
    """The table as a reader scans it: a row per method, distribution and
    seed count, a column per nominal level (actual coverage in percent)."""
    out = calibration.assign(level=calibration["level"].map(lambda v: f"nominal {100 * v:.2f}%"),
                             coverage=(100 * calibration["coverage"]).round(1))
    return out.pivot_table(index=["method", "distribution", "seeds"], columns="level", values="coverage",
                           sort=False).reset_index()
