"""Two fake CPU devices and XLA flags that compile fast, before JAX starts a
backend; the study runs that several test files share.

Tests compile many small programs and train them for seconds: XLA's backend
optimizations at level 0 and its older CPU emitters (no fusion emitters)
compile in about half the time, and every property tested (equal results
across grid layouts and processes, recorded values, masks) holds with any
flags. Subprocesses inherit the flags through XLA_FLAGS.
"""

import os
import subprocess
import sys

import pytest

from study import cli, devices

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


def pytest_collection_modifyitems(items):
    """Under pytest-xdist's `--dist loadgroup`, one worker runs a file's
    tests, and one every test that reads a session-wide study run, so that
    no worker trains a run (or a module's fixture) another already has."""
    for item in items:
        shared = sorted({"quick", "fresh_runs"} & set(item.fixturenames))
        item.add_marker(pytest.mark.xdist_group(shared[0] if shared else item.module.__name__))


@pytest.fixture(scope="session")
def quick(tmp_path_factory):
    """`study all --quick`, once per session."""
    out = tmp_path_factory.mktemp("quick")
    assert cli.main(["all", "--quick", "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="session")
def fresh_runs(tmp_path_factory):
    """SMALLEST in two new processes one after the other, sharing a
    compilation cache that starts empty: [(out folder, stderr)] of the cold
    and the warm one."""
    root = tmp_path_factory.mktemp("fresh")
    runs = []
    for name in ("cold", "warm"):
        process = study_process([*SMALLEST, "--out", str(root / name)], {devices.CACHE_ENV: str(root / "cache")})
        stderr = process.communicate()[1]
        assert process.returncode == 0, stderr
        runs.append((root / name, stderr))
    return runs
