"""Design checks shared by the questions: the numbers that show a comparison
was fair, each a `Claim` with `design_check=True`.

A check is usually a number measured once over the whole grid (its
"interval" is itself). The one every tuned question runs: each rate chosen
on the tuning seeds lies inside its grid, or where the curve is flat
(`grid_edges`), with a tolerance smaller than the effects the claims read.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import pandas as pd

from study import stats
from study.claims import Claim

FLAT = 0.002  # a grid end "rises" when it beats its inner neighbour by more (0.2 pt of validation accuracy)
SHARE = stats.Unit(0.02, scale=100, digits=0, suffix="%", bounds=(0.0, 1.0))  # of runs, cells or epochs


def measured(value: float) -> stats.Interval:
    """A number measured once from the whole grid: its 'interval' is itself."""
    return stats.Interval(float(value), float(value), float(value), 1)


def once(values: pd.Series, label: Callable = str) -> dict[str, stats.Interval]:
    """A check's cells: one number per cell (`label` names its index key), measured once."""
    return {label(key): measured(v) for key, v in values.items()}


def grid_edges(frame: pd.DataFrame, cell: list[str], axes: tuple[str, ...] = ("lr",), at: str = "last",
               flat: float = FLAT) -> pd.DataFrame:
    """Per condition (`cell`) of a tuned grid and per tuned axis with more
    than one value: the chosen value (`rate`), whether it is an end of the
    axis (`on_end`), its gain in mean validation accuracy over the tuning
    seeds (read `at` the epoch the rate was chosen on, `stats.per_run_score`)
    against its inner neighbour with the other axes as chosen (`gain`), and
    `rising` where an end gains more than `flat`: the best rate may lie
    beyond the grid. `beyond_noise`: the gain's 95% interval, paired over
    the tuning seeds, lies above 0 (with 8 seeds, gains of a few tenths of a
    point are mostly within it). Only the tuning seeds train the whole grid."""
    tune = stats.tuning(frame)
    keys = [*cell, *axes]
    scores = stats.per_run_score(tune, [*keys, "seed"], at=at).set_index([*keys, "seed"])["val_acc"]
    means = scores.groupby(keys).mean()
    rows = []
    for key, part in tune.groupby(cell, sort=False):
        key = key if isinstance(key, tuple) else (key,)
        chosen = part.loc[part["selected"], list(axes)].iloc[0].to_dict()
        for axis in axes:
            grid = sorted(part[axis].unique())
            if len(grid) < 2:
                continue
            on_end = chosen[axis] in (grid[0], grid[-1])
            inner = grid[1] if chosen[axis] == grid[0] else grid[-2]
            at_rate, at_inner = (*key, *chosen.values()), (*key, *{**chosen, axis: inner}.values())
            gain = means[at_rate] - means.get(at_inner, math.nan) if on_end else 0.0
            rising = bool(gain > flat)
            beyond = rising and stats.mean_ci((scores[at_rate] - scores[at_inner]).to_numpy()).lo > 0
            rows.append({**dict(zip(cell, key)), "axis": axis, "rate": chosen[axis], "on_end": on_end, "gain": gain,
                         "rising": rising, "beyond_noise": bool(beyond)})
    return pd.DataFrame(rows, columns=[*cell, "axis", "rate", "on_end", "gain", "rising", "beyond_noise"])


def beyond_noise(edges: pd.DataFrame) -> str:
    """How many of `grid_edges`' rising ends rise beyond the tuning seeds' noise, in words."""
    return (f"{edges['rising'].sum()} rising, {edges['beyond_noise'].sum()} of these beyond the 95% interval of "
            "the gain paired over the tuning seeds")


def tuned_check(frame: pd.DataFrame, cell: list[str], label: Callable = str, at: str = "best") -> Claim:
    """Whether each tuned rate was chosen inside its grid, per condition: a
    rate on a rising end compares an arm at a rate that may not be its best."""
    edges = grid_edges(frame, cell, at=at).set_index(cell)
    chosen = "; ".join(f"{label(key)} {rate:g}" for key, rate in edges["rate"].items())
    return Claim(source="this study", text="Each tuned rate is inside its grid, or where the curve is flat.",
                 source_number="none", statistic="per tuned condition, 1 where the rate chosen on the tuning seeds' "
                 f"validation accuracy is an end of its grid and beats its inner neighbour by more than {FLAT * 100:g} "
                 f"pt ({beyond_noise(edges)}; chosen: {chosen}); measured once; claimed below 0.5.",
                 cells=once(edges["rising"].astype(float), label), threshold=0.5, claimed="below",
                 design_check=True, unit=stats.Unit(0.1, digits=0, bounds=(0.0, 1.0)))
