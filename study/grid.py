"""A whole grid of runs as one compiled program.

A grid's runs share one `Setup` (static: changing it recompiles); their
per-run values (`config.RUN_VALUES`: seeds, the index of the initialization
scheme, the rates, ...) are traced arrays with a leading `runs` axis. The
program is `jit(shard_map(...))` over a 1-D mesh named `runs` that spans
every device; each device starts its runs one at a time (`loop.start_run`
under `lax.map`) and trains them `batch_runs` at a time (`loop.train_from`
under `vmap`), every training a `lax.scan` over epochs (see `study.loop`).
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Sequence

import jax
import numpy as np
from jax.sharding import PartitionSpec as P

from study import devices as devices_lib
from study.config import OPTIONAL, RUN_VALUES, Setup
from study.loop import start_run, train_from


@dataclasses.dataclass(frozen=True)
class Timing:
    compile_s: float
    train_s: float
    batch_runs: int  # runs trained together on each device
    cache_hits: int = 0  # programs loaded from the persistent compilation cache


@functools.lru_cache(maxsize=32)
def _compiled(setup: Setup, devices: tuple, n_runs: int, batch_runs: int, pretrained: tuple):
    """The program for `n_runs` runs; `pretrained` holds the shapes of the
    pretrained arrays, which every device receives whole."""
    mesh = jax.sharding.Mesh(np.array(devices), ("runs",))

    def batch(values, weights):
        runs = jax.lax.map(lambda v: start_run(setup, v, weights), values)
        return jax.vmap(functools.partial(train_from, setup))(runs)

    def per_device(values, weights):
        batches = jax.tree.map(lambda v: v.reshape(-1, batch_runs), values)
        out = jax.lax.map(lambda v: batch(v, weights), batches)
        return jax.tree.map(lambda v: v.reshape(-1, *v.shape[2:]), out)

    program = jax.jit(jax.shard_map(per_device, mesh=mesh, in_specs=(P("runs"), P()), out_specs=P("runs"),
                                      check_vma=False))
    sharding, replicated = (jax.sharding.NamedSharding(mesh, spec) for spec in (P("runs"), P()))
    shapes = {k: jax.ShapeDtypeStruct((n_runs,), dt, sharding=sharding) for k, dt in RUN_VALUES.items()}
    weights = tuple(jax.ShapeDtypeStruct(shape, np.float32, sharding=replicated) for shape in pretrained)
    return program.lower(shapes, weights).compile(), sharding, replicated


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
               devices: Sequence | None = None, batch_runs: int | None = None) -> tuple[dict, Timing]:
    """Train every run of a grid in one compiled program.

    `values` maps each key of `RUN_VALUES` (those in `OPTIONAL` default to
    0) to a sequence of length `runs`;
    `pretrained`, for a `setup.pretrained` grid, is `network.flat_params` of the
    pretrained networks stacked by seed. Returns `loop.train_run`'s output with a
    leading `runs` axis on every array, and the compile and training times.
    Runs are padded to a multiple of the device count times `batch_runs`
    (copies of the last run) and the padding dropped. Each device trains `batch_runs` runs at a
    time (vmapped); by default see `default_batch_runs`.
    """
    devices = tuple(devices or jax.devices())
    n_runs = len(values["seed"])
    batch_runs = batch_runs or default_batch_runs(setup, devices, n_runs)
    shard = len(devices) * batch_runs
    padded = -(-n_runs // shard) * shard
    start = time.perf_counter()
    if setup.pretrained != bool(pretrained):
        raise ValueError("pass pretrained weights exactly when setup.pretrained is set")
    hits = devices_lib.cache_counts()[0]
    program, sharding, replicated = _compiled(setup, devices, padded, batch_runs,
                                              tuple(np.shape(w) for w in pretrained))
    compiled = time.perf_counter()
    hits = devices_lib.cache_counts()[0] - hits
    args = {k: np.asarray(values[k] if k in values or k not in OPTIONAL else np.zeros(n_runs), dtype=dt)
            for k, dt in RUN_VALUES.items()}
    args = {k: jax.device_put(np.pad(v, (0, padded - n_runs), mode="edge"), sharding)
            for k, v in args.items()}
    weights = tuple(jax.device_put(np.asarray(w, np.float32), replicated) for w in pretrained)
    out = wait(program(args, weights))
    trained = time.perf_counter()
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils
        out = multihost_utils.process_allgather(out, tiled=True)
    metrics = jax.tree.map(lambda v: np.asarray(v)[:n_runs], out)
    return metrics, Timing(compiled - start, trained - compiled, batch_runs, hits)
