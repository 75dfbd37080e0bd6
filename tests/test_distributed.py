"""Two processes on JAX's distributed runtime, as on a cluster: the grid is
sharded over both processes' devices, every process gathers the results,
process 0 writes them, and they are the data one process computes."""

import socket

from conftest import SMALLEST, study_process
from study import results


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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
