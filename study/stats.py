"""Statistics over seeds and the verdict rule, in one place.

Intervals are Student-t 95% confidence intervals of a mean over seeds;
differences between conditions are paired by seed (runs with the same seed
share data and initialization keys), which is what makes small differences
resolvable with 16 seeds.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
from scipy import stats

LEVEL = 0.95
VERDICTS = ("reproduced", "contradicted", "mixed", "inconclusive")


@dataclasses.dataclass(frozen=True)
class Interval:
    mean: float
    lo: float
    hi: float
    n: int

    def format(self, scale: float = 1.0, digits: int = 3, unit: str = "") -> str:
        m, lo, hi = (v * scale for v in (self.mean, self.lo, self.hi))
        return f"{m:.{digits}f}{unit} [{lo:.{digits}f}, {hi:.{digits}f}]"


def mean_ci(values, level: float = LEVEL) -> Interval:
    """Mean of `values` (shape (seeds,)) with its Student-t interval; NaNs dropped.

    A constant sample has a zero-width interval; fewer than 2 values an
    infinitely wide one.
    """
    x = np.asarray(values, dtype=float)
    x = x[np.isfinite(x)]
    if x.size == 0:
        return Interval(np.nan, np.nan, np.nan, 0)
    mean = float(x.mean())
    if x.size < 2:
        return Interval(mean, -np.inf, np.inf, 1)
    spread = x.std(ddof=1) if np.ptp(x) > 0 else 0.0  # exact zero: no rounding residue
    half = stats.t.ppf(0.5 + level / 2, x.size - 1) * spread / np.sqrt(x.size)
    return Interval(mean, mean - half, mean + half, int(x.size))


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


def at_last_epoch(frame: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """The row of the last epoch of each group of `keys` (a run, or a run's layer)."""
    return frame.loc[frame.groupby(keys)["epoch"].idxmax()]


def cell_verdict(ci: Interval, threshold: float, claimed: str) -> str:
    """`claimed` is "above" or "below" `threshold`: reproduced when the whole
    interval lies on the claimed side, contradicted when it lies on the other,
    inconclusive when it straddles."""
    if claimed not in ("above", "below"):
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
    if cells and all(c == cells[0] for c in cells):
        return cells[0]
    return "inconclusive" if all(c == "inconclusive" for c in cells) else "mixed"


VERDICT_RULE = (
    "Each claim is tested in every cell where it applies (variant x activation, optimizer or "
    "regularizer strength) by "
    f"a {LEVEL:.0%} Student-t confidence interval over seeds of the stated statistic, "
    "paired by seed where two conditions are compared. A cell is *reproduced* when the "
    "whole interval lies on the side of the threshold the source claims, *contradicted* "
    "when it lies on the other side, and *inconclusive* when it straddles the threshold. "
    "A claim is reproduced (or contradicted) when every cell is; inconclusive when no "
    "cell is decided; mixed otherwise."
)
