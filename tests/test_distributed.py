"""New processes: the same command twice, with an empty and then a warm
compilation cache; and two processes on JAX's distributed runtime, as on a
cluster: the grid is sharded over both processes' devices, every process
gathers the results, process 0 writes them, and they are the data one
process computes."""

import os
import socket

import pandas as pd
import pytest

from conftest import SMALLEST, study_process
from study import devices, results


@pytest.fixture(scope="module")
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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_fresh_processes_give_identical_data_with_a_cold_and_a_warm_cache(fresh_runs):
    """The same command in two new processes: the first compiles into an
    empty compilation cache, the second loads from it; same data. Each
    spreads its runs over `DEVICES_PER_CORE` CPU devices per core."""
    frames = []
    for out, stderr in fresh_runs:
        assert ("programs loaded" in stderr) and (out.name == "cold") == (" 0 programs loaded" in stderr)
        count = results.read(out / "results" / "layer_convergence.parquet").metadata["devices"]["count"]
        assert count == devices.DEVICES_PER_CORE * os.cpu_count()
        frames.append(pd.read_parquet(out / "results" / "layer_convergence.parquet").drop(columns="step_time_s"))
    pd.testing.assert_frame_equal(*frames)


def test_two_processes_write_the_results_of_one(fresh_runs, tmp_path):
    cluster = {"JAX_COORDINATOR_ADDRESS": f"127.0.0.1:{free_port()}", "JAX_NUM_PROCESSES": "2"}
    processes = [study_process([*SMALLEST, "--distributed", "--out", str(tmp_path / str(i))],
                               {**cluster, "JAX_PROCESS_ID": str(i), "STUDY_CACHE_DIR": str(tmp_path / "cache")})
                 for i in range(2)]
    try:
        for process in processes:
            stderr = process.communicate(timeout=300)[1]
            assert process.returncode == 0, stderr
    finally:  # a process whose peer failed would wait for it
        for process in processes:
            process.kill()
    assert not list((tmp_path / "1").rglob("*.parquet"))  # process 1 writes nothing
    two = results.read(tmp_path / "0" / "results" / "layer_convergence.parquet")
    one = results.read(fresh_runs[0][0] / "results" / "layer_convergence.parquet")
    assert two.metadata["devices"]["processes"] == 2 and one.metadata["devices"]["processes"] == 1
    assert two.metadata["devices"]["count"] == 2 * one.metadata["devices"]["count"]
    gaps = list(results.differences(one, two))
    assert len(gaps) > 10 and all(gap == 0 for _, _, gap in gaps), gaps
