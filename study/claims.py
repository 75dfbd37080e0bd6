"""Claims: the one home of a claim, from its spec to its citable row.

A question declares each claim of its sources (or each check of the
study's own design) as a `Claim`: what the source says, the statistic we
measure, and per cell the per-seed values that decide it. `stats` turns the
cells into intervals and verdicts; this module gives every claim its id
(`q<question>-claim-<number>`), its verdict under other analysis choices
(the specification curve), the rows of `claims.csv`, and the comparison
`study verify` prints. Figures and the report read evaluated claims; they
never evaluate one again.
"""

from __future__ import annotations

import dataclasses
import functools

import pandas as pd

from study import stats


@dataclasses.dataclass(eq=False, kw_only=True)
class Claim:
    """A claim as data: what the source says, what we measure, and per cell
    (label -> per-seed values, paired where two arms are compared; or a
    `stats.Interval` measured once) the statistic that decides it."""

    source: str
    text: str
    source_number: str  # the source's own number, or "none given"
    statistic: str  # what we measure, and the threshold that decides
    cells: dict[str, object]
    threshold: float
    claimed: str  # "above" or "below" the threshold
    unit: stats.Unit
    design_check: bool = False  # a check of the study's own design, not a source's claim
    # The same statistic under other analysis choices the sources never fixed
    # (label such as "budget 50%" -> cells): its specification curve.
    choices: dict[str, dict[str, object]] = dataclasses.field(default_factory=dict)

    @property
    def rule(self) -> stats.Rule:
        return stats.Rule(self.threshold, self.claimed, self.unit.tolerance)

    @functools.cached_property
    def result(self) -> stats.Evaluation:
        return stats.evaluate(self.cells, self.rule, self.unit.bounds)

    @functools.cached_property
    def moved(self) -> dict[float, str]:
        """The verdict with the threshold moved either way by the unit's tolerance."""
        return {self.threshold + by: stats.verdict_of(self.cells, self.rule.moved(by), self.unit.bounds)
                for by in (-self.unit.tolerance, self.unit.tolerance)}

    @functools.cached_property
    def alternatives(self) -> dict[str, str]:
        """The verdict under each of `choices`."""
        return {label: stats.verdict_of(cells, self.rule, self.unit.bounds) for label, cells in self.choices.items()}

    def shown(self, ci: stats.Interval) -> str:
        """An interval as the report shows it: on the same side of the
        threshold and the tie band's edges as the numbers themselves."""
        return self.unit.format(ci, self.rule.marks)

    @property
    def robust(self) -> str:
        """"robust" when moving the threshold and every other analysis choice
        keep the verdict, else "depends on" the ones that change it."""
        verdict = self.result.verdict
        changed = (["the threshold"] if set(self.moved.values()) != {verdict} else []) + \
            [label for label, other in self.alternatives.items() if other != verdict]
        return "robust" if not changed else "depends on " + ", ".join(changed)

    @property
    def kind(self) -> str:
        return "design check" if self.design_check else "claim"


def claim_id(question: int, i: int) -> str:
    return f"q{question}-claim-{i}"


def specification_frame(claims: list[Claim]) -> pd.DataFrame:
    """Per claim and analysis choice (as stated, the threshold moved either
    way by its tolerance, each of its other choices): the verdict, from the
    intervals alone, as its category ("split" for one that differs between
    cells). The data of a question's specification-curve figure."""
    rows = []
    for i, claim in enumerate(claims, 1):
        lower, upper = claim.moved.values()
        verdicts = {"as stated": claim.result.verdict, "threshold lower": lower, "threshold higher": upper,
                    **claim.alternatives}
        verdicts = {choice: stats.kind(verdict) for choice, verdict in verdicts.items()}
        rows += [{"claim": f"{i}. {claim.text}", "choice": choice, "verdict": verdict}
                 for choice, verdict in verdicts.items()]
    return pd.DataFrame(rows)


def specification_table(claims: list[Claim]) -> pd.DataFrame | None:
    """Per claim with other analysis choices: its verdict under each (the
    specification curve as a table), or None when no claim has any."""
    if not any(c.choices for c in claims):
        return None
    rows = [{"#": i, "claim": c.text, "verdict": c.result.verdict, **c.alternatives}
            for i, c in enumerate(claims, 1) if c.choices]
    return pd.DataFrame(rows).fillna("")


def claims_frame(questions: list[tuple[int, list[Claim]]]) -> pd.DataFrame:
    """One row per claim and cell of each (question number, claims): what a
    reader cites (`paper/claims.csv`)."""
    rows = []
    for question, claims in questions:
        for i, claim in enumerate(claims, 1):
            result = claim.result
            for cell in result.cells:
                rows.append({"id": claim_id(question, i), "question": f"Q{question}", "kind": claim.kind,
                             "source": claim.source, "claim": claim.text, "source_number": claim.source_number,
                             "statistic": claim.statistic, "threshold": claim.threshold,
                             "claimed": claim.claimed, "tolerance": claim.unit.tolerance, "cell": cell.label,
                             "estimate": cell.interval.mean, "lo": cell.interval.lo, "hi": cell.interval.hi,
                             "level": result.level, "n": cell.interval.n, "seeds": cell.seeds,
                             "shown": claim.shown(cell.interval),
                             "scale": claim.unit.scale, "detectable": cell.detectable,
                             "seeds_needed": cell.seeds_needed,
                             "cell_verdict": cell.verdict, "verdict": result.verdict, "verdict_kind": result.kind,
                             "stability": result.stability, "fragile": result.fragile,
                             "robustness": claim.robust,
                             "other_choices": "; ".join(f"{k}: {v}" for k, v in claim.alternatives.items()),
                             **{f"verdict_at_{side}": v for side, v in zip(("lower", "upper"), claim.moved.values())}})
    return pd.DataFrame(rows)


def changes(before: list[Claim], after: list[Claim]) -> tuple[list[str], list[str]]:
    """What `study verify` reports between two evaluations of one question's
    claims: (claims whose verdict changed, cells whose verdict changed), as lines."""
    claims, cells = [], []
    for i, (a, b) in enumerate(zip(before, after), 1):
        if a.result.verdict != b.result.verdict:
            claims.append(f"claim {i} ({a.text}): {a.result.verdict} -> {b.result.verdict}")
        cells += [f"claim {i}, {x.label}: {x.verdict} -> {y.verdict}"
                  for x, y in zip(a.result.cells, b.result.cells) if x.verdict != y.verdict]
    return claims, cells
