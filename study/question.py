"""The contract a question module fulfils, as a type checked when it is loaded.

A question module (see `experiments/`) defines

- `NAME`, `QUESTION` (one line), `TEXT` (its report prose: a Markdown
  template, see `report.prose`), `SEEDS` (evaluation seeds, from a power
  analysis), `TUNING_SEEDS` and `QUICK_SEEDS` (of each role with `--quick`);
- `plan(seeds, epochs, quick)`: its grid as `runner.Program`s over seeds
  0 .. seeds - 1, tuning seeds first (`Question.plan` adds them to the
  evaluation seeds asked for);
- `claims(results)`: its `claims.Claim`s, read from a `results.Results`;
- `figures(results, claims)`: its `figures.Figure`s;
- `section(results, claims)`: a `Section`, the fields its template needs
  and the tables the report shows.

Everything after `plan` reads results only, so figures and the report
never train.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pandas as pd


@dataclasses.dataclass(frozen=True)
class Section:
    """What a question adds to its claims in the report."""

    fields: dict[str, object]  # the values its Markdown template's {fields} take
    tables: list[tuple[str, pd.DataFrame]] = dataclasses.field(default_factory=list)  # (caption, table)


REQUIRED = {"NAME": str, "QUESTION": str, "TEXT": Path, "SEEDS": int, "TUNING_SEEDS": int, "QUICK_SEEDS": int,
            "plan": Callable, "claims": Callable, "figures": Callable, "section": Callable}


@dataclasses.dataclass(frozen=True)
class Question:
    name: str
    question: str
    text: Path
    seeds: int
    tuning_seeds: int
    quick_seeds: int
    grid: Callable  # the module's `plan`
    claims: Callable
    figures: Callable
    section: Callable

    @classmethod
    def load(cls, module: ModuleType) -> Question:
        """The question a module defines, or a TypeError naming what it lacks."""
        wrong = [f"{name} ({kind.__name__})" for name, kind in REQUIRED.items()
                 if not isinstance(getattr(module, name, None), kind)]
        if wrong:
            raise TypeError(f"question module {module.__name__} lacks or mistypes: {', '.join(wrong)}")
        return cls(module.NAME, module.QUESTION, module.TEXT, module.SEEDS, module.TUNING_SEEDS,
                   module.QUICK_SEEDS, module.plan,
                   module.claims, module.figures, module.section)

    def seeds_for(self, seeds: int | None = None, quick: bool = False) -> int:
        """Evaluation seeds: `seeds`, or the question's default."""
        return seeds or (self.quick_seeds if quick else self.seeds)

    def tuning_for(self, quick: bool = False) -> int:
        return self.quick_seeds if quick else self.tuning_seeds

    def plan(self, seeds: int | None = None, epochs: int | None = None, quick: bool = False,
             tuning: int | None = None) -> list:
        """The grid's programs: the tuning seeds, then `seeds` evaluation seeds
        (defaults: the question's; `study verify` passes a run's own)."""
        return self.grid((tuning or self.tuning_for(quick)) + self.seeds_for(seeds, quick), epochs, quick)

    def config(self, seeds: int | None = None, epochs: int | None = None, quick: bool = False) -> dict:
        """What a results file records of the options it was run with."""
        return {"seeds": self.seeds_for(seeds, quick), "tuning_seeds": self.tuning_for(quick), "epochs": epochs,
                "quick": quick}
