"""Device set-up, done once by the CLI before the first computation.

On CPU every core becomes `DEVICES_PER_CORE` JAX devices, so a grid's runs
spread over the cores through the same `runs` mesh that spreads them over
GPUs. Each device computes with a single thread: XLA's multi-threaded CPU
kernels may split a reduction differently from one call to the next and
change the last bits, and with one thread per device reruns are
bit-identical. A call gives every device the same share of runs, so with one
device per core a core that another process slows sets the wall time; with
two, the operating system moves the device threads onto whichever core is
free (the README's measurements). JAX's own $JAX_NUM_CPU_DEVICES, where
set, chooses the count instead.

Compiled programs are kept in a persistent cache (`cache_dir()`), so a rerun
of the same grid loads its programs instead of compiling them again.
"""

from __future__ import annotations

import collections
import functools
import os
from pathlib import Path

import jax

DETERMINISTIC_CPU_FLAGS = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
DEVICES_PER_CORE = 2
DEVICES_ENV = "JAX_NUM_CPU_DEVICES"  # JAX's own: where set, it chooses the CPU device count
CACHE_ENV = "STUDY_CACHE_DIR"  # the compilation cache's directory; empty: no cache
CACHE_EVENTS = collections.Counter()  # JAX's persistent-cache events, e.g. ".../cache_hits"


def cache_dir() -> Path | None:
    """$STUDY_CACHE_DIR, else `study/jax` in the user's cache directory."""
    if CACHE_ENV in os.environ:
        return Path(os.environ[CACHE_ENV]) if os.environ[CACHE_ENV] else None
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "study" / "jax"


@functools.cache
def count_cache_events() -> None:
    """Listen to JAX's monitoring events, once per process."""
    jax.monitoring.register_event_listener(lambda event, **_: CACHE_EVENTS.update([event]))


def cache_counts() -> tuple[int, int]:
    """(hits, misses) of the persistent compilation cache so far."""
    return (CACHE_EVENTS["/jax/compilation_cache/cache_hits"],
            CACHE_EVENTS["/jax/compilation_cache/cache_misses"])


def configure(distributed: bool = False, cache: bool = True) -> None:
    """Set the XLA flags, CPU device count and compilation cache, and join a
    multi-host job (the cluster from the environment, see `cluster_from_env`).
    Must run before the first computation."""
    flags = os.environ.get("XLA_FLAGS", "")
    if DETERMINISTIC_CPU_FLAGS not in flags:
        os.environ["XLA_FLAGS"] = f"{flags} {DETERMINISTIC_CPU_FLAGS}".strip()
    if DEVICES_ENV not in os.environ:
        jax.config.update("jax_num_cpu_devices", DEVICES_PER_CORE * (os.cpu_count() or 1))
    if cache and cache_dir() is not None:
        jax.config.update("jax_compilation_cache_dir", str(cache_dir()))
        jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
        count_cache_events()
    if distributed:
        jax.distributed.initialize(**cluster_from_env())


def cluster_from_env() -> dict[str, int]:
    """`num_processes` and `process_id` from $JAX_NUM_PROCESSES and
    $JAX_PROCESS_ID where set: JAX itself reads only $JAX_COORDINATOR_ADDRESS
    (and detects SLURM, Open MPI and Kubernetes jobs on its own)."""
    names = {"num_processes": "JAX_NUM_PROCESSES", "process_id": "JAX_PROCESS_ID"}
    return {arg: int(os.environ[env]) for arg, env in names.items() if os.environ.get(env)}


def describe() -> dict:
    """What the results record about where they were computed."""
    devices = jax.devices()
    return {"platform": devices[0].platform, "kind": devices[0].device_kind,
            "count": len(devices), "processes": jax.process_count(),
            "xla_flags": os.environ.get("XLA_FLAGS", "")}
