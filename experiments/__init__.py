"""The registry of experiments: one module per question of the study.

Each module defines `NAME`, `QUESTION`, `plan(seeds, epochs, quick)` (its
grid as `study.runner.Program`s), `figures(results)` and
`section(results)` (reading a `study.results.Results`); its claims and
verdict rules live with it.
"""

from __future__ import annotations

from types import ModuleType

from experiments import initialization, layer_convergence, regularization, transfer

REGISTRY: dict[str, ModuleType] = {m.NAME: m for m in (initialization, layer_convergence, regularization, transfer)}


class UnknownExperiment(LookupError):
    pass


def get(name: str) -> ModuleType:
    if name not in REGISTRY:
        raise UnknownExperiment(f"unknown experiment {name!r}; choose from {', '.join(REGISTRY)} or all")
    return REGISTRY[name]


def select(name: str) -> list[ModuleType]:
    """`all` or one experiment's name -> the modules to act on."""
    return list(REGISTRY.values()) if name == "all" else [get(name)]
