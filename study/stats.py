"""Statistics over seeds and the verdict rule, in one place.

A claim's cells are intervals of a mean over seeds by the percentile
bootstrap (`scipy.stats.bootstrap`, resample count and random state fixed
here), so an interval never leaves the range its statistic can take;
differences between conditions are paired by seed (runs with the same seed
share data and initialization keys), which is what makes small differences
resolvable with 16 seeds. The cells of one claim share a Bonferroni level,
and each claim's verdict comes with its stability under seed resampling.
The bands of the figures are Student-t intervals (`mean_ci`): descriptive,
one per plotted point.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np
import pandas as pd
from scipy import stats

LEVEL = 0.95
VERDICTS = ("reproduced", "contradicted", "mixed", "inconclusive")
CLAIMED = ("above", "below")
RESAMPLES = 10_000  # bootstrap resamples of a cell's interval
STABILITY_RESAMPLES = 1000  # seed resamples of a whole claim, and of each resample's intervals
RANDOM_STATE = 0
FRAGILE = 0.8  # a verdict kept in fewer of the seed resamples is fragile


@dataclasses.dataclass(frozen=True)
class Interval:
    mean: float
    lo: float
    hi: float
    n: int

    def format(self, scale: float = 1.0, digits: int = 3, unit: str = "") -> str:
        m, lo, hi = (v * scale for v in (self.mean, self.lo, self.hi))
        return f"{m:.{digits}f}{unit} [{lo:.{digits}f}, {hi:.{digits}f}]"


def finite(values) -> np.ndarray:
    """The finite values of a per-seed sample, as floats (NaN: a run without the value)."""
    x = np.asarray(values, dtype=float)
    return x[np.isfinite(x)]


def mean_ci(values, level: float = LEVEL) -> Interval:
    """Mean of `values` (shape (seeds,)) with its Student-t interval; NaNs dropped.

    A constant sample has a zero-width interval; fewer than 2 values an
    infinitely wide one.
    """
    x = finite(values)
    if x.size == 0:
        return Interval(np.nan, np.nan, np.nan, 0)
    mean = float(x.mean())
    if x.size < 2:
        return Interval(mean, -np.inf, np.inf, 1)
    spread = x.std(ddof=1) if np.ptp(x) > 0 else 0.0  # exact zero: no rounding residue
    half = stats.t.ppf(0.5 + level / 2, x.size - 1) * spread / np.sqrt(x.size)
    return Interval(mean, mean - half, mean + half, int(x.size))


def bootstrap_ci(values, level: float = LEVEL) -> Interval:
    """Mean of `values` (shape (seeds,)) with its percentile-bootstrap
    interval; NaNs dropped. A constant sample has a zero-width interval;
    fewer than 2 values an infinitely wide one."""
    x = finite(values)
    if x.size < 2 or np.ptp(x) == 0:
        return mean_ci(x, level)
    ci = stats.bootstrap((x,), np.mean, n_resamples=RESAMPLES, confidence_level=level, method="percentile",
                         random_state=RANDOM_STATE).confidence_interval
    return Interval(float(x.mean()), float(ci.low), float(ci.high), int(x.size))


def family_level(cells: int) -> float:
    """Bonferroni: the level of each of a claim's `cells` intervals, so that
    all of them hold together with probability at least LEVEL."""
    return 1 - (1 - LEVEL) / max(cells, 1)


def selection_half(seeds) -> np.ndarray:
    """True for the even seeds, which choose an arm ("the best other"); the
    odd seeds then test it, so no seed both selects and tests."""
    return np.asarray(seeds) % 2 == 0


def versus_best(table: pd.DataFrame, arm: str) -> tuple[str, pd.Series]:
    """`arm` minus the best other column of `table` (rows: seeds, in an
    index level "seed"): the rival chosen by its mean on the even seeds, the
    paired difference on the odd ones."""
    selects = selection_half(table.index.get_level_values("seed"))
    rival = table.drop(columns=arm).dropna(axis=1, how="all")[selects].mean().idxmax()
    return rival, (table[arm] - table[rival])[~selects]


def summarize(frame: pd.DataFrame, by: list[str], value: str) -> pd.DataFrame:
    """One row per group of `by`: mean, lo, hi and n of `value` over its rows."""
    rows = []
    for key, group in frame.groupby(by, sort=False, observed=True):
        ci = mean_ci(group[value])
        rows.append({**dict(zip(by, key if isinstance(key, tuple) else (key,))),
                     "mean": ci.mean, "lo": ci.lo, "hi": ci.hi, "n": ci.n})
    return pd.DataFrame(rows)


def points(ci: Interval) -> str:
    """An interval of fractions in percentage points."""
    return ci.format(scale=100, digits=1, unit=" pt")


@dataclasses.dataclass(frozen=True)
class Unit:
    """How a claim's statistic is printed, and how far its threshold is moved
    either way to see whether the verdict depends on it."""

    format: Callable[[Interval], str]
    tolerance: float


POINTS = Unit(points, 0.005)  # fractions shown in percentage points; threshold moved by half a point


def robustness(result: Evaluation, threshold: float, claimed: str, tolerance: float) -> dict[float, str]:
    """The claim's verdict with its threshold moved by -tolerance and
    +tolerance, from the same intervals."""
    return {t: overall_verdict([cell_verdict(c.interval, t, claimed) for c in result.cells])
            for t in (threshold - tolerance, threshold + tolerance)}


def at_last_epoch(frame: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """The row of the last epoch of each group of `keys` (a run, or a run's layer)."""
    return frame.loc[frame.groupby(keys)["epoch"].idxmax()]


def chosen_on_validation(frame: pd.DataFrame, cell: list[str], tuned: list[str], by: str = "val_acc") -> np.ndarray:
    """Per `cell`, True on the rows of the `tuned` values (a learning rate,
    say) whose runs have the best mean final `by` over seeds: hyperparameters
    chosen on the validation sample, never on the one verdicts read (ties
    go to the first values in sorted order; a diverged setting, NaN, never wins)."""
    final = at_last_epoch(frame, [*cell, *tuned, "seed"])
    means = final.groupby([*cell, *tuned], dropna=False)[by].mean().dropna().reset_index()
    best = means.sort_values(by, ascending=False, kind="stable").drop_duplicates(cell)[[*cell, *tuned]]
    marked = frame[[*cell, *tuned]].merge(best.assign(selected=True), how="left", on=[*cell, *tuned])
    return marked["selected"].fillna(False).to_numpy(bool)


def cell_verdict(ci: Interval, threshold: float, claimed: str) -> str:
    """`claimed` is "above" or "below" `threshold`: reproduced when the whole
    interval lies on the claimed side, contradicted when it lies on the other,
    inconclusive when it touches or straddles it."""
    if claimed not in CLAIMED:
        raise ValueError(f"claimed must be 'above' or 'below', got {claimed!r}")
    if not np.isfinite(ci.mean):
        return "inconclusive"
    above, below = ci.lo > threshold, ci.hi < threshold
    if claimed == "above":
        return "reproduced" if above else "contradicted" if below else "inconclusive"
    return "reproduced" if below else "contradicted" if above else "inconclusive"


def overall_verdict(cells: list[str]) -> str:
    """Reproduced or contradicted only when every cell says so; inconclusive
    when no cell is decided; mixed otherwise."""
    if not cells:
        return "inconclusive"
    return cells[0] if all(c == cells[0] for c in cells) else "mixed"


@dataclasses.dataclass(frozen=True)
class Cell:
    label: str  # e.g. "stated / relu"
    interval: Interval
    verdict: str


@dataclasses.dataclass(frozen=True)
class Evaluation:
    cells: list[Cell]
    verdict: str
    level: float  # of each cell's interval
    stability: float  # share of seed resamples that keep the verdict

    @property
    def fragile(self) -> bool:
        return self.stability < FRAGILE


def evaluate(cells: dict[str, np.ndarray | Interval], threshold: float, claimed: str) -> Evaluation:
    """A claim's verdict: per cell (label -> per-seed values, or an Interval
    measured once) an interval at the claim's Bonferroni level and its
    verdict; the claim's verdict over the cells, and its stability."""
    level = family_level(len(cells))
    out = judged(cells, threshold, claimed, level)
    verdict = overall_verdict([c.verdict for c in out])
    return Evaluation(out, verdict, level, stability(cells, threshold, claimed, level, verdict))


def judged(cells: dict[str, np.ndarray | Interval], threshold: float, claimed: str, level: float) -> list[Cell]:
    """Each cell's interval at `level` and its verdict."""
    intervals = {label: v if isinstance(v, Interval) else bootstrap_ci(v, level) for label, v in cells.items()}
    return [Cell(label, ci, cell_verdict(ci, threshold, claimed)) for label, ci in intervals.items()]


def verdict_of(cells: dict[str, np.ndarray | Interval], threshold: float, claimed: str) -> str:
    """The claim's verdict alone (no stability): for its other analysis choices."""
    return overall_verdict([c.verdict for c in judged(cells, threshold, claimed, family_level(len(cells)))])


def stability(cells: dict, threshold: float, claimed: str, level: float, verdict: str) -> float:
    """The share of STABILITY_RESAMPLES resamples of each cell's seeds under
    which the claim's verdict stays `verdict`; each resample's intervals are
    percentile bootstraps of STABILITY_RESAMPLES inner resamples (one index
    set shared by all outer resamples, so the whole is a few array ops)."""
    rng = np.random.default_rng(RANDOM_STATE)
    tail = (1 - level) / 2 * 100
    verdicts = []
    for values in cells.values():
        if isinstance(values, Interval):  # measured once: the same verdict in every resample
            verdicts.append(np.full(STABILITY_RESAMPLES, cell_verdict(values, threshold, claimed)))
            continue
        x = finite(values)
        if x.size < 2:  # an infinitely wide interval, as in bootstrap_ci
            verdicts.append(np.full(STABILITY_RESAMPLES, "inconclusive"))
            continue
        outer = x[rng.integers(x.size, size=(STABILITY_RESAMPLES, x.size))]
        inner = rng.integers(x.size, size=(STABILITY_RESAMPLES, x.size))
        lo, hi = np.concatenate([np.percentile(chunk[:, inner].mean(-1), [tail, 100 - tail], axis=1)
                                 for chunk in np.array_split(outer, 10)], axis=1)  # bounded memory
        verdicts.append([cell_verdict(Interval(m, a, b, x.size), threshold, claimed)
                         for m, a, b in zip(outer.mean(1), lo, hi)])
    kept = [overall_verdict(list(row)) == verdict for row in zip(*verdicts)]
    return float(np.mean(kept))


VERDICT_RULE = (
    "Each claim is tested in every cell where it applies (variant x activation, optimizer, "
    "regularizer strength, or target size x similarity) by a confidence interval over seeds of "
    "the stated statistic: the percentile bootstrap of the mean over seeds "
    f"(scipy.stats.bootstrap, {RESAMPLES:,} resamples, random state {RANDOM_STATE}), paired by "
    "seed where two conditions are compared. The k cells of a claim are tested together "
    f"(Bonferroni): each interval has level 1 - {1 - LEVEL:.2f}/k. A cell is *reproduced* when "
    "the whole interval lies on the side of the threshold the source claims, *contradicted* "
    "when it lies on the other side, and *inconclusive* when it touches or straddles the "
    "threshold. A claim is reproduced (or contradicted) when every cell is; inconclusive when "
    "no cell is decided; mixed otherwise. Where a claim compares with \"the best other\" arm, "
    "the even seeds choose that arm and the odd seeds test it. *Stability* is the share of "
    f"{STABILITY_RESAMPLES:,} resamples of the seeds under which the claim's verdict stays the "
    f"same; a verdict kept in under {FRAGILE:.0%} of them is marked *fragile*. *Robustness*: the "
    "claim's verdict with its threshold moved either way by a tolerance stated in the statistic's unit "
    "(half a percentage point for accuracies and fractions) and, where the analysis makes choices the "
    "sources never fixed (the training budget read, a measure's threshold), under each other choice; "
    "*robust* when all keep the verdict, else *depends on* the ones that change it. Where an arm's "
    "learning rate is tuned, it is chosen on a validation sample, never on the sample verdicts read."
)
