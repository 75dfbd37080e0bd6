"""The experiments and benchmark workloads the CLI runs.

`study` never imports `experiments`: the installed distribution names them
in its `study` entry points (see pyproject.toml), each a dict from name to a
question (`study.question.Question`) or workload module, so another
package can supply its own.
"""

from __future__ import annotations

import functools
import importlib.metadata
from types import ModuleType

from study.question import Question


class UnknownExperiment(LookupError):
    pass


@functools.cache
def _entry(name: str) -> dict:
    (point,) = importlib.metadata.entry_points(group="study", name=name)
    return point.load()


def experiments() -> dict[str, Question]:
    """Name -> question, in report order."""
    return _entry("experiments")


def workloads() -> dict[str, ModuleType]:
    """Name -> benchmark workload module (`plan`)."""
    return _entry("workloads")


def get(name: str) -> Question:
    if name not in experiments():
        raise UnknownExperiment(f"unknown experiment {name!r}; choose from {', '.join(experiments())} or all")
    return experiments()[name]


def select(name: str) -> list[Question]:
    """`all` or one experiment's name -> the questions to act on."""
    return list(experiments().values()) if name == "all" else [get(name)]
