"""`study bench`: how fast the engine trains, as ratios measured in one process.

- `peer`: the peer workload (`experiments/peer.py`) end to end, compile
  included, and with `--torch` the same workload in PyTorch
  (`study.peer_torch`), both with cold compilation caches.
- `grid`: per program of a grid, run-epochs per second; the FLOPs of the
  compiled program from XLA's cost analysis against this machine's
  dense-matmul rate (measured here, one device at a time, times the device
  count); and the time of the same runs trained the way a typical JAX user
  writes it (a jitted step called from a Python loop, one run at a time),
  timed on a few runs and scaled to the grid.
- `tracking`: each tracked experiment's programs with and without tracking.
- `freeze-depth`: a transfer step's time per freeze depth against XLA's
  FLOP count of the step.
- `scaling`: one workload's run-epochs per second at 16, 64 and 256 seeds,
  to see whether cost grows linearly with the work.

The workloads are the experiments' own programs, handed in by the CLI.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import tempfile
import time
from unittest import mock

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from study import data as data_lib
from study import config, loop, network, runner
from study.grid import Timing, train_grid


def run_flops(setup: config.Setup) -> float:
    """FLOPs of one run, from XLA's cost analysis.

    XLA counts a loop body once whatever its trip count, so the run is
    traced with every scan unrolled at 1-2 epochs, and the cost is solved for
    its fixed part, per epoch and per large-sample score, then scaled.
    """
    scan = jax.lax.scan
    shapes = {k: jax.ShapeDtypeStruct((), dt) for k, dt in config.RUN_VALUES.items()}

    def cost(epochs, evals):
        small = config.Setup(**{**setup.__dict__, "epochs": epochs, "evals": evals})
        with mock.patch.object(jax.lax, "scan", functools.partial(scan, unroll=True)):
            lowered = jax.jit(functools.partial(loop.train_run, small)).lower(shapes)
        return lowered.compile().cost_analysis()["flops"]

    base, per_epoch, per_eval = cost(1, 1), cost(2, 1), cost(2, 2)
    per_eval -= per_epoch
    per_epoch -= base
    fixed = base - per_epoch - per_eval
    return fixed + setup.epochs * per_epoch + setup.evals * per_eval


def matmul_rate(rows: int, width: int, seconds: float = 0.5) -> float:
    """Float32 FLOP/s of one device for (rows, width) @ (width, width),
    chained in a compiled loop so nothing is hoisted or dispatched."""
    x = jax.device_put(jnp.full((rows, width), 0.01, jnp.float32), jax.devices()[0])
    w = jnp.eye(width, dtype=jnp.float32)
    repeats = max(2, int(seconds * 50e9 / (2 * rows * width**2)))
    chain = jax.jit(lambda x, w: jax.lax.fori_loop(0, repeats, lambda i, c: (c @ w) * 0.999, x))
    chain(x, w).block_until_ready()
    start = time.perf_counter()
    chain(x, w).block_until_ready()
    return 2 * rows * width**2 * repeats / (time.perf_counter() - start)


def model_and_loss(setup: config.Setup, values: dict):
    """A model's parameters and `loss(params, x, y)`, for steps timed outside the grid."""
    graphdef, params = nnx.split(network.build_model(setup, values, jax.random.key(0)))

    def loss(params, x, y):
        return network.loss_fn(setup, nnx.merge(graphdef, params)(x), y)

    return params, loss


def python_loop_time(setup: config.Setup, runs: int) -> float:
    """Seconds to train `runs` runs of `setup` with a jitted step called from
    Python, one run at a time, metrics fetched every epoch."""
    values = {"seed": 0, "data_seed": 0, "init": 0, "activation": 0, "lr": 0.003, "strength": 0.0}
    _, loss = model_and_loss(setup, values)
    tx = optax.adam(values["lr"])
    step = jax.jit(network.make_step(loss, tx))
    score = jax.jit(loss)
    sample = jax.jit(functools.partial(data_lib.sample, setup.task))
    batch = setup.batch_size or setup.task.n_train
    start = time.perf_counter()
    for seed in range(runs):
        data = sample(jax.random.key(seed))
        params = nnx.split(network.build_model(setup, values, jax.random.key(seed)))[1]
        opt_state = tx.init(params)
        rng = np.random.default_rng(seed)
        for _ in range(setup.epochs):
            order = rng.permutation(setup.task.n_train)
            for b in range(setup.batches_per_epoch):
                idx = order[b * batch:(b + 1) * batch]
                params, opt_state, _ = step(params, opt_state, data["x_train"][idx], data["y_train"][idx])
            float(score(params, data["x_test"], data["y_test"]))
    return time.perf_counter() - start


def run_epochs(programs: list[runner.Program]) -> int:
    return sum(len(p.runs) * p.setup.epochs for p in programs)


def timed(program: runner.Program) -> Timing:
    """Train one program as the experiments do; only its timing is kept."""
    return train_grid(program.setup, runner.run_values(program.setup, program.runs))[1]


def peer(programs: list[runner.Program], torch: bool) -> None:
    """Train the peer workload end to end; with `torch`, also in PyTorch
    first, then the ratio. The last line is the engine's throughput."""
    work = run_epochs(programs)
    if torch:
        with tempfile.TemporaryDirectory() as cache:  # a cold compile, like the engine's below
            os.environ["TORCHINDUCTOR_CACHE_DIR"] = cache
            from study import peer_torch
            seeds, epochs = programs[0].runs["seed"].nunique(), programs[0].setup.epochs
            torch_s = peer_torch.train_peer(seeds=seeds, epochs=epochs)["wall_s"]
        print(f"pytorch (torch.func vmap + torch.compile): wall {torch_s:.1f} s, "
              f"{work / torch_s:,.0f} run-epochs/s")
    start = time.perf_counter()
    for program in programs:
        timing = timed(program)
        print(f"jax {program.label}: compile {timing.compile_s:.1f} s, train {timing.train_s:.1f} s "
              f"on {len(jax.devices())} x {jax.devices()[0].device_kind}")
    wall_s = time.perf_counter() - start
    if torch:
        print(f"jax: wall {wall_s:.1f} s, {torch_s / wall_s:.2f}x the speed of pytorch")
    print(f"throughput_run_epochs_per_s={work / wall_s:.1f} wall_s={wall_s:.2f}")


def grid(programs: list[runner.Program], naive_runs: int) -> None:
    devices = jax.devices()
    rate = matmul_rate(1024, 1024)
    shape = programs[-1].setup
    small = matmul_rate(shape.batch_size, shape.hidden[0])
    print(f"devices: {len(devices)} x {devices[0].device_kind}; dense matmul per device: "
          f"{rate / 1e9:.1f} GFLOP/s at 1024 x 1024 x 1024, {small / 1e9:.1f} GFLOP/s at the "
          f"workload's own {shape.batch_size} x {shape.hidden[0]} x {shape.hidden[0]} "
          f"(a floor for these shapes {rate / small:.2f}x the dense one)")
    total = {"runs": 0, "run_epochs": 0, "train_s": 0.0, "compile_s": 0.0, "flops": 0.0, "naive_s": 0.0}
    for program in programs:
        setup, runs = program.setup, program.runs
        timing = timed(program)
        flops = run_flops(setup) * len(runs)
        naive = python_loop_time(setup, naive_runs) * len(runs) / naive_runs
        floor = flops / (rate * len(devices))
        print(f"{program.label:18s} {len(runs):4d} runs x {setup.epochs} epochs: train "
              f"{timing.train_s:6.1f} s ({len(runs) * setup.epochs / timing.train_s:7.0f} run-epochs/s), "
              f"compile {timing.compile_s:4.1f} s; {flops / 1e12:.2f} TFLOP -> "
              f"{flops / timing.train_s / 1e9:5.1f} GFLOP/s, {timing.train_s / floor:.2f}x the matmul floor "
              f"({floor:.1f} s); Python loop {naive:7.1f} s = {naive / timing.train_s:.1f}x slower")
        for key, value in [("runs", len(runs)), ("run_epochs", len(runs) * setup.epochs),
                           ("train_s", timing.train_s), ("compile_s", timing.compile_s),
                           ("flops", flops), ("naive_s", naive)]:
            total[key] += value
    floor = total["flops"] / (rate * len(devices))
    print(f"{'total':18s} {total['runs']:4d} runs: train {total['train_s']:.1f} s "
          f"({total['run_epochs'] / total['train_s']:.0f} run-epochs/s), compile {total['compile_s']:.1f} s; "
          f"{total['flops'] / 1e12:.2f} TFLOP at {total['flops'] / total['train_s'] / 1e9:.1f} GFLOP/s = "
          f"{total['train_s'] / floor:.2f}x the dense matmul floor ({floor:.1f} s), "
          f"{total['train_s'] * small / rate / floor:.2f}x the floor at the workload's shapes; "
          f"Python loop {total['naive_s']:.0f} s = {total['naive_s'] / total['train_s']:.1f}x slower")


def tracking_overhead(plans: dict[str, list[runner.Program]]) -> None:
    """Training time of each tracked program against the same program untracked."""
    for name, programs in plans.items():
        tracked_s = plain_s = 0.0
        for program in programs:
            values = runner.run_values(program.setup, program.runs)
            tracked_s += timed(program).train_s
            plain_s += train_grid(dataclasses.replace(program.setup, tracking=None), values)[1].train_s
        print(f"{name:18s} weight tracking: train {tracked_s:.1f} s with, {plain_s:.1f} s without "
              f"(+{tracked_s / plain_s - 1:.0%})")


SCALING_SEEDS, SCALING_FACTORS = 16, (1, 4, 16)  # 16, 64 and 256 seeds
SCALING_EPOCHS = 200  # 739,200 run-epochs in all: about 30 s of training at the README's 2-core peer rate


def scaling(plans: dict[int, list[runner.Program]]) -> None:
    """A workload's training at each seed count (`plans`, seeds -> programs):
    with cost linear in the work, run-epochs/s stays flat as the grid grows."""
    print(f"{'seeds':>6} {'runs':>6} {'run-epochs':>11} {'compile s':>10} {'train s':>8} {'run-epochs/s':>13} "
          f"on {len(jax.devices())} x {jax.devices()[0].device_kind}")
    for seeds, programs in plans.items():
        timings = [timed(p) for p in programs]
        train_s = sum(t.train_s for t in timings)
        print(f"{seeds:6d} {sum(len(p.runs) for p in programs):6d} {run_epochs(programs):11,d} "
              f"{sum(t.compile_s for t in timings):10.1f} {train_s:8.1f} {run_epochs(programs) / train_s:13,.0f}")


def freeze_depth(setup: config.Setup, batches=(64, 1024), steps: int = 500) -> None:
    """A transfer setup's training step with the top k layers trained, k = 1
    .. all: time per step (`steps` steps in one compiled loop, so no dispatch
    cost) and XLA's FLOP count, each relative to training all layers."""
    values = {"init": 0, "activation": 0, "lr": 1e-3, "strength": 0.0}
    params, loss = model_and_loss(setup, values)
    layers = len(setup.hidden) + 1

    for batch in batches:
        # Distinct batches per step: with one fixed batch XLA would hoist the
        # frozen layers' forward pass out of the loop.
        xs = jax.random.normal(jax.random.key(1), (16, batch, setup.task.dim))
        ys = jax.random.randint(jax.random.key(2), (16, batch), 0, setup.n_out)
        rows = {}
        for k in range(1, layers + 1):
            step, tx = network.frozen_step(setup, values["lr"], values["strength"], params, loss, k)
            state = tx.init(params)
            flops = jax.jit(step).lower(params, state, xs[0], ys[0]).compile().cost_analysis()["flops"]
            loop = jax.jit(lambda p, s: jax.lax.fori_loop(
                0, steps, lambda i, c: step(*c, xs[i % 16], ys[i % 16])[:2], (p, s)))
            jax.block_until_ready(loop(params, state))
            start = time.perf_counter()
            jax.block_until_ready(loop(params, state))
            rows[k] = ((time.perf_counter() - start) / steps, flops)
        time_all, flops_all = rows[layers]
        for k, (seconds, flops) in rows.items():
            print(f"freeze depth: batch {batch:5d}, top {k} of {layers} layers trained: {seconds * 1e6:7.1f} us/step "
                  f"({seconds / time_all:.2f} of training all), {flops / 1e6:6.2f} MFLOP "
                  f"({flops / flops_all:.2f})")
