"""Statistics over seeds and the verdict rule, in one place.

A claim's cells are Student-t intervals of a mean over seeds, chosen by
measured coverage (`study.calibration`: the percentile bootstrap covers
88% at a nominal 95% with 8 seeds, Student-t 95%), clipped to the range the
statistic can take; differences between conditions are paired by seed
(runs with the same seed share data and initialization keys). The cells of
one claim share a Bonferroni level. A cell inside the claim's tolerance
band around its threshold is a tie: an answer, apart from "inconclusive"
(too wide to say). Each claim's verdict comes with its stability under
seed resampling and the smallest effect its seeds can detect.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np
import pandas as pd
from scipy import stats

LEVEL = 0.95
POWER = 0.8  # of the smallest detectable effect (`Evaluation.detectable`)
VERDICTS = ("reproduced", "contradicted", "tie", "inconclusive", "split")
CLAIMED = ("above", "below")
STABILITY_RESAMPLES = 1000  # seed resamples of a whole claim
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


def half_width(spread, n, level: float, power: float | None = None):
    """The half-width of a Student-t interval of a mean over `n` seeds with
    this `spread` (arrays broadcast); with `power`, the smallest mean a
    two-sided t-test at `level` detects with that probability instead."""
    quantile = stats.t.ppf(0.5 + level / 2, n - 1) + (0 if power is None else stats.t.ppf(power, n - 1))
    return quantile * spread / np.sqrt(n)


def t_interval(mean, spread, n, level: float):
    """The ends (lo, hi) of Student-t intervals of means over `n` seeds
    (arrays broadcast): infinitely wide below 2 seeds, NaN with none."""
    n = np.asarray(n)
    with np.errstate(invalid="ignore"):
        half = np.where(n >= 2, half_width(spread, np.maximum(n, 2), level), np.inf)
    return np.where(n > 0, mean - half, np.nan), np.where(n > 0, mean + half, np.nan)


def spread_of(std, lowest, highest):
    """The seeds' spread: their standard deviation, exactly zero where all are
    equal (no rounding residue)."""
    return np.where(highest > lowest, std, 0.0)


def mean_ci(values, level: float = LEVEL, bounds: tuple[float, float] = (-np.inf, np.inf)) -> Interval:
    """Mean of `values` (shape (seeds,)) with its Student-t interval, clipped
    to `bounds` (the range of the statistic); NaNs dropped.

    A constant sample has a zero-width interval; fewer than 2 values an
    infinitely wide one.
    """
    x = finite(values)
    if x.size == 0:
        return Interval(np.nan, np.nan, np.nan, 0)
    mean = float(x.mean())
    if x.size < 2:  # unclipped: no data, whatever the bounds
        return Interval(mean, -np.inf, np.inf, 1)
    lo, hi = t_interval(mean, spread_of(x.std(ddof=1), x.min(), x.max()), x.size, level)
    return Interval(mean, max(float(lo), bounds[0]), min(float(hi), bounds[1]), int(x.size))


def family_level(cells: int) -> float:
    """Bonferroni: the level of each of a claim's `cells` intervals, so that
    all of them hold together with probability at least LEVEL."""
    return 1 - (1 - LEVEL) / max(cells, 1)


def detectable(values, level: float, power: float = POWER) -> float:
    """The smallest mean a one-sample t-test at `level` (two-sided) detects
    with probability `power`, from the sample's own spread: the minimum
    detectable effect of a cell (NaN with fewer than 2 values)."""
    x = finite(values)
    if x.size < 2:
        return np.nan
    return float(half_width(x.std(ddof=1), x.size, level, power))


def seeds_needed(values, effect: float, level: float, power: float = POWER, most: int = 1024) -> int:
    """Seeds at which `detectable` falls to `effect`, with the sample's spread
    (the power analysis behind a question's seed count)."""
    x = finite(values)
    spread = x.std(ddof=1) if x.size > 1 else np.nan
    if not np.isfinite(spread) or spread == 0:
        return 2
    n = np.arange(2, most + 1)
    needed = half_width(spread, n, level, power) <= effect
    return int(n[needed.argmax()]) if needed.any() else most


def evaluation(frame: pd.DataFrame) -> pd.DataFrame:
    """The rows of the evaluation seeds, which every interval reads."""
    return frame[frame["role"] == "evaluate"]


def tuning(frame: pd.DataFrame) -> pd.DataFrame:
    """The rows of the tuning seeds, which make every choice (a rate, the best other arm, a stopping rule)."""
    return frame[frame["role"] == "tune"]


def versus_best(choose: pd.DataFrame, test: pd.DataFrame, arm: str) -> tuple[str, pd.Series]:
    """`arm` minus the best other column (rows: seeds; columns: arms): the
    rival with the best mean in `choose` (the tuning seeds), the paired
    difference in `test` (the evaluation seeds), so no seed both chooses
    and tests."""
    rival = choose.drop(columns=arm).dropna(axis=1, how="all").mean().idxmax()
    return rival, test[arm] - test[rival]


def summarize(frame: pd.DataFrame, by: list[str], value: str) -> pd.DataFrame:
    """One row per group of `by`: mean, lo, hi and n of `value` over its rows
    (`mean_ci` of each group, computed for all groups at once)."""
    x = frame[value].astype(float)
    groups = frame.assign(**{value: x.where(np.isfinite(x))}).groupby(by, sort=False, observed=True)[value]
    table = groups.agg(["mean", "std", "count", "min", "max"])
    mean, n = table["mean"].to_numpy(), table["count"].to_numpy()
    spread = spread_of(table["std"].to_numpy(), table["min"].to_numpy(), table["max"].to_numpy())
    lo, hi = t_interval(mean, spread, n, LEVEL)
    return table.index.to_frame(index=False).assign(mean=mean, lo=lo, hi=hi, n=n)


def points(ci: Interval) -> str:
    """An interval of fractions in percentage points."""
    return ci.format(scale=100, digits=1, unit=" pt")


@dataclasses.dataclass(frozen=True)
class Unit:
    """How a claim's statistic is shown, the range it can take, and its
    tolerance: the band around the threshold inside which a cell is a tie,
    and how far the threshold is moved either way to test the verdict."""

    tolerance: float
    scale: float = 1.0
    digits: int = 3
    suffix: str = ""
    bounds: tuple[float, float] = (-np.inf, np.inf)

    def shown(self, value: float, digits: int, direction: str = "nearest") -> float:
        """`value` as shown: scaled and rounded to `digits`, outward for an
        interval's ends ("down" for the lower, "up" for the upper)."""
        x, step = value * self.scale, 10.0 ** -digits
        if not np.isfinite(x):
            return x
        rounding = {"down": np.floor, "up": np.ceil, "nearest": np.round}[direction]
        return float(rounding(round(x / step, 6)) * step) + 0.0  # no "-0.0"

    def digits_for(self, ci: Interval, marks: tuple[float, ...]) -> int:
        """The fewest digits (at least `digits`) at which the interval's shown
        ends, rounded outward, lie on the same side of every mark (a
        threshold, a band's edge) as the ends themselves."""
        for digits in range(self.digits, self.digits + 6):
            if all(np.sign(self.shown(end, digits, way) - m * self.scale) == np.sign((end - m) * self.scale)
                   for end, way in ((ci.lo, "down"), (ci.hi, "up")) for m in marks
                   if np.isfinite(end) and end != m):
                return digits
        return self.digits + 5

    def format(self, ci: Interval, marks: tuple[float, ...] = ()) -> str:
        """`mean [lo, hi]`, ends rounded outward with enough digits to keep
        them on their side of `marks`; a number measured once alone."""
        digits = self.digits_for(ci, marks)
        mean = f"{self.shown(ci.mean, digits):.{digits}f}{self.suffix}"
        if ci.n == 1 and ci.lo == ci.hi:
            return mean
        return f"{mean} [{self.shown(ci.lo, digits, 'down'):.{digits}f}, {self.shown(ci.hi, digits, 'up'):.{digits}f}]"

    def number(self, value: float) -> str:
        """A single number in this unit (a threshold, a tolerance, a detectable effect)."""
        return self.format(Interval(value, value, value, 1))


POINTS = Unit(0.005, scale=100, digits=1, suffix=" pt", bounds=(-1.0, 1.0))  # fractions, tie within half a point


def at_last_epoch(frame: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """The row of the last epoch of each group of `keys` (a run, or a run's layer)."""
    return frame.loc[frame.groupby(keys)["epoch"].idxmax()]


def per_run_score(frame: pd.DataFrame, keys: list[str], by: str = "val_acc", at: str = "last") -> pd.DataFrame:
    """One row per run (`keys`): its `by` at its last epoch, or with
    `at="best"` its best over the scored epochs (stopped early)."""
    if at not in ("last", "best"):
        raise ValueError(f"at must be 'last' or 'best', got {at!r}")
    if at == "last":
        return at_last_epoch(frame, keys)
    return frame.groupby(keys, dropna=False, observed=True)[by].max().reset_index()


def chosen_on_validation(frame: pd.DataFrame, cell: list[str], tuned: list[str], by: str = "val_acc",
                         at: str = "last") -> np.ndarray:
    """Per `cell`, True on the rows of the `tuned` values (a learning rate,
    say) whose runs have the best mean `by` over seeds, each run's at its
    last epoch or, with `at="best"`, its best scored epoch (the rate that
    does best when stopped early): hyperparameters chosen on the validation
    sample, never on the one verdicts read (ties go to the first values in
    sorted order; a diverged setting, NaN, never wins)."""
    final = per_run_score(frame, [*cell, *tuned, "seed"], by, at)
    means = final.groupby([*cell, *tuned], dropna=False)[by].mean().dropna().reset_index()
    best = means.sort_values(by, ascending=False, kind="stable").drop_duplicates(cell)[[*cell, *tuned]]
    marked = frame[[*cell, *tuned]].merge(best.assign(selected=True), how="left", on=[*cell, *tuned])
    return marked["selected"].fillna(False).to_numpy(bool)


@dataclasses.dataclass(frozen=True)
class Rule:
    """What decides a claim's cells: the side of `threshold` the source
    claims, and the half-width of the tie band around it."""

    threshold: float
    claimed: str  # "above" or "below"
    tolerance: float

    def __post_init__(self):
        if self.claimed not in CLAIMED:
            raise ValueError(f"claimed must be 'above' or 'below', got {self.claimed!r}")

    @property
    def marks(self) -> tuple[float, float, float]:
        """The threshold and the edges of its tie band."""
        return self.threshold - self.tolerance, self.threshold, self.threshold + self.tolerance

    def moved(self, by: float) -> Rule:
        return dataclasses.replace(self, threshold=self.threshold + by)

    def cell(self, ci: Interval) -> str:
        """A tie when the interval lies inside the band (the statistic is
        within the tolerance of the threshold, even if the interval excludes
        the threshold itself); else reproduced when the whole interval lies
        on the claimed side, contradicted when on the other, inconclusive
        when it straddles the threshold and reaches out of the band."""
        if not np.isfinite(ci.mean):
            return "inconclusive"
        low, threshold, high = self.marks
        if low <= ci.lo and ci.hi <= high:
            return "tie"
        above, below = ci.lo > threshold, ci.hi < threshold
        if self.claimed == "above":
            return "reproduced" if above else "contradicted" if below else "inconclusive"
        return "reproduced" if below else "contradicted" if above else "inconclusive"


def overall_verdict(cells: list[str]) -> str:
    """One verdict when every cell gives it (inconclusive when there are no
    cells), else what happened where: "reproduced in 3 of 5, tie in 2"."""
    if not cells:
        return "inconclusive"
    if len(set(cells)) == 1:
        return cells[0]
    counts = [(v, cells.count(v)) for v in VERDICTS if v in cells]
    return ", ".join(f"{v} in {k}" + (f" of {len(cells)}" if i == 0 else "") for i, (v, k) in enumerate(counts))


def kind(verdict: str) -> str:
    """A verdict's category: one of `VERDICTS` ("split" for "reproduced in 3 of 5, ...")."""
    return verdict if verdict in VERDICTS else "split"


@dataclasses.dataclass(frozen=True)
class Cell:
    label: str  # e.g. "stated / relu"
    interval: Interval
    verdict: str
    detectable: float  # the smallest mean this cell's seeds detect at its level with POWER
    seeds_needed: int  # the seeds at which that falls to the claim's tolerance (0: measured once)
    seeds: str = ""  # the seeds it reads, e.g. "8-39" (see `seed_ids`)


@dataclasses.dataclass(frozen=True)
class Evaluation:
    cells: list[Cell]
    verdict: str
    level: float  # of each cell's interval
    stability: float  # share of seed resamples that keep the verdict

    @property
    def fragile(self) -> bool:
        return self.stability < FRAGILE

    @property
    def kind(self) -> str:
        return kind(self.verdict)


def evaluate(cells: dict[str, np.ndarray | Interval], rule: Rule, bounds=(-np.inf, np.inf)) -> Evaluation:
    """A claim's verdict: per cell (label -> per-seed values, or an Interval
    measured once) an interval at the claim's Bonferroni level, its verdict,
    its detectable effect and the seeds that would bring that down to the
    tie band's half-width; the claim's verdict over the cells, and its stability."""
    level = family_level(len(cells))
    out = []
    for label, values in cells.items():
        ci = interval(values, level, bounds)
        power = (np.nan, 0) if isinstance(values, Interval) else \
            (detectable(values, level), seeds_needed(values, rule.tolerance, level) if rule.tolerance else 0)
        out.append(Cell(label, ci, rule.cell(ci), *power, seeds=span(seed_ids(values))))
    verdict = overall_verdict([c.verdict for c in out])
    return Evaluation(out, verdict, level, stability(cells, rule, level, bounds, verdict))


def seed_ids(values) -> list[int]:
    """The seeds of a cell's finite per-seed values, from their index level
    "seed" ([] for values without one, or measured once)."""
    if not isinstance(values, pd.Series) or "seed" not in values.index.names:
        return []
    return sorted(set(values[np.isfinite(values.astype(float))].index.get_level_values("seed")))


def span(ids: list[int]) -> str:
    """Seed ids compactly: "8-39" for a run of consecutive ids, else listed."""
    if ids and ids == list(range(ids[0], ids[-1] + 1)):
        return f"{ids[0]}-{ids[-1]}" if len(ids) > 1 else str(ids[0])
    return ",".join(map(str, ids))


def interval(values: np.ndarray | Interval, level: float, bounds) -> Interval:
    """A cell's interval: of its per-seed values, or the number measured once."""
    return values if isinstance(values, Interval) else mean_ci(values, level, bounds)


def verdict_of(cells: dict[str, np.ndarray | Interval], rule: Rule, bounds=(-np.inf, np.inf)) -> str:
    """The claim's verdict alone (no stability): for its other analysis choices."""
    level = family_level(len(cells))
    return overall_verdict([rule.cell(interval(values, level, bounds)) for values in cells.values()])


def stability(cells: dict, rule: Rule, level: float, bounds, verdict: str) -> float:
    """The share of STABILITY_RESAMPLES resamples of each cell's seeds under
    which the claim's verdict stays `verdict` (each resample's Student-t
    intervals computed at once, as array operations)."""
    rng = np.random.default_rng(RANDOM_STATE)
    verdicts = []
    for values in cells.values():
        if isinstance(values, Interval):  # measured once: the same verdict in every resample
            verdicts.append([rule.cell(values)] * STABILITY_RESAMPLES)
            continue
        x = finite(values)
        if x.size < 2:  # an infinitely wide interval, as in mean_ci
            verdicts.append(["inconclusive"] * STABILITY_RESAMPLES)
            continue
        resampled = x[rng.integers(x.size, size=(STABILITY_RESAMPLES, x.size))]
        mean, spread = resampled.mean(1), resampled.std(1, ddof=1)
        half = half_width(spread, x.size, level)
        verdicts.append([rule.cell(Interval(m, max(m - h, bounds[0]), min(m + h, bounds[1]), x.size))
                         for m, h in zip(mean, half)])
    kept = [overall_verdict(list(row)) == verdict for row in zip(*verdicts)]
    return float(np.mean(kept))


VERDICT_RULE = (
    "Each claim is tested in every cell where it applies (variant x activation, optimizer, "
    "regularizer strength, or target size x similarity) by a Student-t confidence interval over seeds "
    "of the mean of the stated statistic, paired by seed where two conditions are compared, and clipped "
    "to the range the statistic can take. Student-t was chosen by measured coverage, not by name: "
    "see the calibration table (`study calibrate`), where it holds its nominal level on normal data "
    "at the smallest seed count any cell uses while the percentile bootstrap does not. The k cells of "
    f"a claim are tested together (Bonferroni): each interval has level 1 - {1 - LEVEL:.2f}/k. "
    "Each claim has a tolerance in its statistic's unit (half a percentage point for accuracies and "
    "fractions). A cell is a *tie* when its whole interval lies within the tolerance of the threshold "
    "(no difference larger than the tolerance, even where the interval excludes the threshold itself); "
    "otherwise *reproduced* when the whole interval lies on the side of the threshold the source claims, "
    "*contradicted* when it lies on the other side, and *inconclusive* (too little data to say) when it "
    "straddles the threshold. A claim's verdict is its cells' verdict when they agree, else it says "
    "what happened where (\"reproduced in 3 of 5, tie in 2\"). Seeds have roles: every choice (a learning "
    "rate, \"the best other\" arm a claim compares with, a stopping epoch) is made on the tuning seeds' "
    "validation sample, and every interval reads only the evaluation seeds, at the configuration chosen. "
    "Shown intervals are rounded outward, with as many digits as it takes to keep each end on its side "
    "of the threshold and of the tie band. *Stability* is the share of "
    f"{STABILITY_RESAMPLES:,} resamples of the seeds under which the claim's verdict stays the "
    f"same; a verdict kept in under {FRAGILE:.0%} of them is marked *fragile*. *Detectable*: the "
    f"smallest effect a cell's seeds detect with {POWER:.0%} power at its level, from its own spread, and "
    "the seeds at which that would fall to the tolerance (the power analysis for its next run). "
    "*Robustness*: the claim's verdict with its threshold moved either way by its tolerance and, where "
    "the analysis makes choices the sources never fixed (the training budget read, a measure's "
    "threshold), under each other choice; *robust* when all keep the verdict, else *depends on* the "
    "ones that change it. Where an arm's learning rate is tuned, it is chosen on a validation sample, "
    "never on the sample verdicts read."
)
