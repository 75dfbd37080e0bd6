"""Two fake CPU devices and XLA flags that compile fast, before JAX starts a
backend; how test files start the `study` command in a new process.

Tests compile many small programs and train them for seconds: XLA's backend
optimizations at level 0 and its older CPU emitters (no fusion emitters)
compile in about half the time, and every property tested (equal results
across grid layouts and processes, recorded values, masks) holds with any
flags. Subprocesses inherit the flags through XLA_FLAGS.
"""

import os
import subprocess
import sys

from study import devices

FAST_COMPILE = "--xla_backend_optimization_level=0 --xla_cpu_use_fusion_emitters=false"
os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {FAST_COMPILE}".strip()
devices.configure(cpu_devices=2)

# The smallest grid a fresh process runs: the experiment with the fewest and
# smallest programs, 2 seeds, 2 epochs.
SMALLEST = ["run", "layer_convergence", "--quick", "--seeds", "2", "--epochs", "2"]


def study_process(args: list[str], env: dict[str, str]) -> subprocess.Popen:
    """`study ARGS` in a new Python process, stderr piped."""
    return subprocess.Popen([sys.executable, "-m", "study.cli", *args], env={**os.environ, **env},
                            stderr=subprocess.PIPE, text=True)
