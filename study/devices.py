"""Device set-up, done once by the CLI before the first computation.

On CPU every core becomes one JAX device, so a grid's runs spread over the
cores through the same `runs` mesh that spreads them over GPUs. Each device
then computes with a single thread: XLA's multi-threaded CPU kernels may
split a reduction differently from one call to the next and change the last
bits, and with one thread per device reruns are bit-identical.
"""

from __future__ import annotations

import os

import jax

DETERMINISTIC_CPU_FLAGS = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"


def configure(cpu_devices: int | None = None, distributed: bool = False) -> None:
    """Set the XLA flags and CPU device count, and join a multi-host job
    (`jax.distributed.initialize` reads the cluster from its environment).
    Must run before the first computation."""
    flags = os.environ.get("XLA_FLAGS", "")
    if DETERMINISTIC_CPU_FLAGS not in flags:
        os.environ["XLA_FLAGS"] = f"{flags} {DETERMINISTIC_CPU_FLAGS}".strip()
    jax.config.update("jax_num_cpu_devices", cpu_devices or os.cpu_count() or 1)
    if distributed:
        jax.distributed.initialize()


def describe() -> dict:
    """What the results record about where they were computed."""
    devices = jax.devices()
    return {"platform": devices[0].platform, "kind": devices[0].device_kind,
            "count": len(devices), "processes": jax.process_count(),
            "xla_flags": os.environ.get("XLA_FLAGS", "")}
