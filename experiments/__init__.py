"""The study's questions, one module per question, and its benchmark workloads.

Each question module defines `NAME`, `QUESTION`, `SEEDS` and `QUICK_SEEDS`
(its default seeds), `plan(seeds, epochs, quick)`
(its grid as `study.runner.Program`s), `figures(results)` and
`section(results)` (reading a `study.results.Results`); its claims and
verdict rules live with it. A workload module defines `plan(seeds, epochs)`.
The `study` command finds both tables through the entry points in
pyproject.toml.
"""

from __future__ import annotations

from types import ModuleType

from experiments import initialization, layer_convergence, peer, regularization, transfer

REGISTRY: dict[str, ModuleType] = {m.NAME: m for m in (initialization, layer_convergence, regularization, transfer)}
WORKLOADS: dict[str, ModuleType] = {"peer": peer}
