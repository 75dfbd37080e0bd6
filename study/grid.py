"""A whole grid of runs as one compiled program.

A grid's runs share one `Setup` (static: changing it recompiles); their
per-run values (`config.RUN_VALUES`: seeds, the index of the initialization
scheme, the rates, ...) are traced arrays with a leading `runs` axis. The
program is two `jit(shard_map(...))` stages over a 1-D mesh named `runs`
that spans every device. One call trains `batch_runs` runs on each device:
the first stage starts them one at a time (`loop.start_run` under
`lax.map`), the second trains them together (`loop.train_from` under
`vmap`), every training a `lax.scan` over epochs (see `study.loop`). A
grid of any size is a sequence of such calls to the same compiled stages,
so grids of one setup and different sizes (a learning-rate grid on the
tuning seeds, its chosen rates on the evaluation seeds) compile once.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Callable, Sequence

import jax
import numpy as np
from jax.sharding import PartitionSpec as P

from study import devices as devices_lib
from study.config import OPTIONAL, RUN_VALUES, Setup, Start
from study.loop import start_run, train_from


@dataclasses.dataclass(frozen=True)
class Timing:
    compile_s: float
    train_s: float
    batch_runs: int  # runs trained together on each device
    cache_hits: int = 0  # programs loaded from the persistent compilation cache


def _mesh(devices: tuple):
    """The 1-D mesh over `devices` and its shardings: split over runs, and whole on every device."""
    mesh = jax.sharding.Mesh(np.array(devices), ("runs",))
    return mesh, *(jax.sharding.NamedSharding(mesh, spec) for spec in (P("runs"), P()))


@functools.lru_cache(maxsize=32)
def _starter(start: Start, devices: tuple, batch_runs: int, pretrained: tuple):
    """The compiled program that starts `batch_runs` runs on each device (data
    and initial weights, one run at a time) and the shapes of its output.
    Starting is most of a program's code (every random draw) and reads only
    `start`: programs that differ in how they train trace, lower and compile
    it once. `pretrained` holds the shapes of the pretrained arrays, which
    every device receives whole."""
    mesh, sharding, replicated = _mesh(devices)
    values = {k: jax.ShapeDtypeStruct((len(devices) * batch_runs,), dt, sharding=sharding)
              for k, dt in RUN_VALUES.items()}
    weights = tuple(jax.ShapeDtypeStruct(shape, np.float32, sharding=replicated) for shape in pretrained)

    def per_device(values, weights):
        return jax.lax.map(lambda v: start_run(start, v, weights), values)

    lowered = sharded(per_device, mesh, (P("runs"), P())).lower(values, weights)
    return compiled(lowered), lowered.out_info


@functools.lru_cache(maxsize=32)
def _compiled(setup: Setup, devices: tuple, batch_runs: int, pretrained: tuple):
    """The two programs of one call, `batch_runs` runs on each device: one
    starts the runs (`_starter`), one trains them (vmapped)."""
    mesh, sharding, replicated = _mesh(devices)
    starter, started = _starter(setup.start, devices, batch_runs, pretrained)
    runs = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sharding), started)

    def train(runs):
        return jax.vmap(functools.partial(train_from, setup))(runs)

    trainer = compiled(sharded(train, mesh, (P("runs"),)).lower(runs))
    return (lambda values, weights: trainer(starter(values, weights))), sharding, replicated


def sharded(per_device: Callable, mesh, in_specs: tuple):
    """`per_device` over the runs axis of `mesh`, jitted."""
    return jax.jit(jax.shard_map(per_device, mesh=mesh, in_specs=in_specs, out_specs=P("runs"), check_vma=False))


_PROGRAMS: dict[str, jax.stages.Compiled] = {}  # by program text


def compiled(lowered: jax.stages.Lowered) -> jax.stages.Compiled:
    """`lowered` compiled once per distinct program text in this process."""
    text = lowered.as_text()
    if text not in _PROGRAMS:
        _PROGRAMS[text] = lowered.compile()
    return _PROGRAMS[text]


def wait(tree, poll_s: float = 0.05):
    """`tree` once every array in it is computed. Python gets control back
    every `poll_s` meanwhile, so a Ctrl-C stops a long program within that
    time instead of after it (a blocking wait would hold the interrupt)."""
    leaves = jax.tree.leaves(tree)
    while not all(leaf.is_ready() for leaf in leaves):
        time.sleep(poll_s)
    return tree


CPU_BATCH_RUNS = 4


def default_batch_runs(setup: Setup, devices: Sequence, n_runs: int) -> int:
    """Runs vmapped together per device: all of a device's runs on a GPU; on a
    CPU `CPU_BATCH_RUNS`, which shares the per-operation overhead of small
    steps (a head alone on frozen features trains twice as fast, a whole
    network 5-8% faster; the README's measurements), except with the linear
    probe, whose vmapped line search runs every run as long as the slowest."""
    if devices[0].platform != "cpu":
        return -(-n_runs // len(devices))
    return 1 if "probe_acc" in setup.scored else CPU_BATCH_RUNS


def train_grid(setup: Setup, values: dict[str, Sequence], *, pretrained: Sequence[np.ndarray] = (),
               devices: Sequence | None = None, batch_runs: int | None = None,
               trained: Callable[[int], None] = lambda runs: None) -> tuple[dict, Timing]:
    """Train every run of a grid with one compiled program.

    `values` maps each key of `RUN_VALUES` (those in `OPTIONAL` default to
    0) to a sequence of length `runs`;
    `pretrained`, for a `setup.pretrained` grid, is `network.flat_params` of the
    pretrained networks stacked by seed. Returns `loop.train_run`'s output with a
    leading `runs` axis on every array, and the compile and training times.
    Each call trains `batch_runs` runs per device (vmapped; by default see
    `default_batch_runs`) and reports them to `trained`; the last call is
    padded with copies of the last run, and the padding dropped.
    """
    devices = tuple(devices or jax.devices())
    n_runs = len(values["seed"])
    batch_runs = batch_runs or default_batch_runs(setup, devices, n_runs)
    call = len(devices) * batch_runs
    padded = -(-n_runs // call) * call
    start = time.perf_counter()
    if setup.pretrained != bool(pretrained):
        raise ValueError("pass pretrained weights exactly when setup.pretrained is set")
    hits = devices_lib.cache_counts()[0]
    program, sharding, replicated = _compiled(setup, devices, batch_runs, tuple(np.shape(w) for w in pretrained))
    compiled = time.perf_counter()
    hits = devices_lib.cache_counts()[0] - hits
    args = {k: np.pad(np.asarray(values[k] if k in values or k not in OPTIONAL else np.zeros(n_runs), dtype=dt),
                      (0, padded - n_runs), mode="edge") for k, dt in RUN_VALUES.items()}
    weights = tuple(jax.device_put(np.asarray(w, np.float32), replicated) for w in pretrained)
    # Every call is queued at once (JAX dispatches asynchronously), so no
    # device idles between calls while this loop gathers their outputs.
    starts = range(0, padded, call)
    pending = [program({k: jax.device_put(v[first:first + call], sharding) for k, v in args.items()}, weights)
               for first in starts]
    outs = []
    for first, out in zip(starts, pending):
        out = wait(out)
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils
            out = multihost_utils.process_allgather(out, tiled=True)
        outs.append(jax.tree.map(np.asarray, out))
        trained(min(call, n_runs - first))
    done = time.perf_counter()
    metrics = jax.tree.map(lambda *parts: np.concatenate(parts)[:n_runs], *outs)
    return metrics, Timing(compiled - start, done - compiled, batch_runs, hits)
