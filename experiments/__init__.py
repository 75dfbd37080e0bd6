"""The study's questions, one module per question, and its benchmark workloads.

Each question module fulfils the contract of `study.question` (its name,
question, default seeds, text template, `plan`, `claims`, `figures`,
`section`), checked here when the registry is built; its claims and verdict
rules live with it. A workload module defines `plan(seeds, epochs)`. The
`study` command finds both tables through the entry points in pyproject.toml.
"""

from __future__ import annotations

from types import ModuleType

from experiments import initialization, layer_convergence, peer, regularization, transfer
from study.question import Question

REGISTRY: dict[str, Question] = {q.name: q for q in map(Question.load, (initialization, layer_convergence,
                                                                        regularization, transfer))}
WORKLOADS: dict[str, ModuleType] = {"peer": peer}
