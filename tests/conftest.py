"""Two fake CPU devices and XLA flags that compile fast, before JAX starts a
backend; how test files start the `study` command in a new process.

Tests compile many small programs and train them for seconds: XLA's backend
optimizations at level 0 and its older CPU emitters (no fusion emitters)
compile in about half the time, and every property tested (equal results
across grid layouts and processes, recorded values, masks) holds with any
flags. Subprocesses inherit the flags through XLA_FLAGS; they choose their
device count as the `study` command does.

Tests keep no persistent compilation cache: writing every program to it
cost seconds that a fresh machine never reads back. The tests of the cache
give their processes one of their own.
"""

import os
import subprocess
import sys

FAST_COMPILE = "--xla_backend_optimization_level=0 --xla_cpu_use_fusion_emitters=false"
os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {FAST_COMPILE}".strip()
os.environ["JAX_NUM_CPU_DEVICES"] = "2"  # devices.DEVICES_ENV, read when JAX is imported

import jax  # noqa: E402 - after the environment it reads

from study import data, devices  # noqa: E402

os.environ[devices.CACHE_ENV] = ""  # no persistent compilation cache (above)
devices.configure()

# A dataset drawn by one compiled program, as the engine draws it (op by op,
# one draw took seconds).
sample = jax.jit(data.sample, static_argnums=0)

# The smallest grid a fresh process runs: the experiment with the fewest and
# smallest programs, 2 seeds, 2 epochs.
SMALLEST = ["run", "layer_convergence", "--quick", "--seeds", "2", "--epochs", "2"]


def study_process(args: list[str], env: dict[str, str]) -> subprocess.Popen:
    """`study ARGS` in a new Python process, stderr piped."""
    inherited = {k: v for k, v in os.environ.items() if k != devices.DEVICES_ENV}
    return subprocess.Popen([sys.executable, "-m", "study.cli", *args], env={**inherited, **env},
                            stderr=subprocess.PIPE, text=True)
