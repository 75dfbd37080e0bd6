"""Re-run the deep-learning-details study from Python (a notebook, say).

    import study
    res = study.run("initialization", seeds=2, epochs=5)  # trains; writes nothing
    res.frame.head()                                       # one row per (run, epoch)
    figs = study.draw("initialization", res)               # name -> matplotlib Figure

`res` is a `study.results.Results` (frame, per-layer tables, metadata,
kept weights); `study.results.write` saves it where the CLI would. The
CLI runs `study.devices.configure()` first (one JAX device per CPU core,
deterministic kernels, the compilation cache); call it before the first JAX
computation for the same numbers as the CLI.
"""

from __future__ import annotations


def run(name: str, seeds: int | None = None, epochs: int | None = None, quick: bool = False):
    """Train experiment `name` (its default grid, or `seeds`/`epochs`/`quick`) and return its Results."""
    from study import registry, runner

    question = registry.get(name)
    return runner.run(name, question.plan(seeds, epochs, quick), question.config(seeds, epochs, quick))


def draw(name: str, results) -> dict:
    """Experiment `name`'s figures of `results`, drawn but not saved: name -> matplotlib Figure."""
    from study import registry

    question = registry.get(name)
    return {f.name: f.render() for f in question.figures(results, question.claims(results))}
