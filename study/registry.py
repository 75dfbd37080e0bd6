"""The experiments and benchmark workloads the CLI runs.

`study` never imports `experiments`: the installed distribution names them
in its `study` entry points (see pyproject.toml), each a dict from name to a
module, so another package can supply its own.
"""

from __future__ import annotations

import functools
import importlib.metadata
from types import ModuleType


class UnknownExperiment(LookupError):
    pass


@functools.cache
def _entry(name: str) -> dict[str, ModuleType]:
    (point,) = importlib.metadata.entry_points(group="study", name=name)
    return point.load()


def experiments() -> dict[str, ModuleType]:
    """Name -> question module (`NAME`, `QUESTION`, `plan`, `figures`, `section`), in report order."""
    return _entry("experiments")


def workloads() -> dict[str, ModuleType]:
    """Name -> benchmark workload module (`plan`)."""
    return _entry("workloads")


def get(name: str) -> ModuleType:
    if name not in experiments():
        raise UnknownExperiment(f"unknown experiment {name!r}; choose from {', '.join(experiments())} or all")
    return experiments()[name]


def select(name: str) -> list[ModuleType]:
    """`all` or one experiment's name -> the modules to act on."""
    return list(experiments().values()) if name == "all" else [get(name)]
