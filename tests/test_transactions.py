"""A results write is a transaction: failed or killed at any step, a reader
finds the complete previous set or the complete new one, and the next
write removes whatever the failed one left behind."""

import errno
import os
import pathlib

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from study import cli, results

META = {"experiment": "x", "config": {"seeds": 2, "tuning_seeds": 2, "quick": True, "epochs": 1}, "versions": {}, "git_commit": "abc",
        "programs": [{"label": "p", "setup": {"epochs": 1}, "runs": 2, "model": [], "compile_s": 1.0, "train_s": 2.0}],
        "wall_time_s": 3.0, "devices": {"platform": "cpu", "kind": "cpu", "count": 2, "xla_flags": ""}}


def experiment(value: float) -> results.Results:
    frame = pd.DataFrame({"seed": np.array([0, 1]), "role": ["tune", "evaluate"], "epoch": np.array([1, 1], np.int32), "test_acc": [value] * 2})
    tables = {"layers": frame.assign(layer=np.int32(0)), "first-epoch": frame.assign(value=value)}  # names may hold "-"
    return results.Results(frame, META, tables, {"w": np.full((2, 3), value, np.float32)})


OLD, NEW = experiment(0.25), experiment(0.75)
STEPS = [(os, "replace"), (pq, "write_table"), (np, "savez"), (pathlib.Path, "unlink")]  # each a step that can fail


def fail_at(monkeypatch, k: int, fail) -> list[int]:
    """Make the k-th call of any of STEPS call `fail` first; returns the call count so far."""
    calls = [0]
    for owner, name in STEPS:
        def step(*args, _original=getattr(owner, name), **kwargs):
            calls[0] += 1
            if calls[0] == k:
                fail()
            return _original(*args, **kwargs)

        monkeypatch.setattr(owner, name, step)
    return calls


def full_disk():
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def same(read: results.Results, expected: results.Results) -> bool:
    return (read.frame.equals(expected.frame) and sorted(read.tables) == sorted(expected.tables)
            and all(read.tables[k].equals(v) for k, v in expected.tables.items())
            and np.array_equal(read.params["w"], expected.params["w"]))


def own_files(path) -> list[str]:
    tag = results.read(path).metadata["write_id"][:results.TAG_LENGTH]
    return sorted(["x.parquet", f"x-layers.{tag}.parquet", f"x-first-epoch.{tag}.parquet", f"x-params.{tag}.npz"])


def steps_of_a_write(tmp_path, monkeypatch) -> int:
    path = results.path_for(tmp_path / "count", "x")
    results.write(path, OLD)
    with monkeypatch.context() as patch:
        calls = fail_at(patch, 0, None)
        results.write(path, NEW)
    return calls[0]


def test_a_write_has_the_steps_this_test_fails(tmp_path, monkeypatch):
    """2 tables + weights + main file, each written and renamed, then the 3 replaced side files removed."""
    assert steps_of_a_write(tmp_path, monkeypatch) == 11


@pytest.mark.parametrize("k", range(1, 12))
def test_a_full_disk_at_any_step_leaves_the_old_set_or_the_new(tmp_path, monkeypatch, k):
    path = results.path_for(tmp_path, "x")
    results.write(path, OLD)
    with monkeypatch.context() as patch:
        fail_at(patch, k, full_disk)
        try:
            results.write(path, NEW)
            committed = True
        except OSError as err:
            assert err.errno == errno.ENOSPC
            committed = False
    assert same(results.read(path), NEW if committed else OLD)
    assert committed == (k >= 9)  # the main file's rename (step 8) commits; removing old files may fail
    if not committed:  # a failed write removes its own files
        assert sorted(os.listdir(path.parent)) == own_files(path)
    results.write(path, NEW)
    assert same(results.read(path), NEW) and sorted(os.listdir(path.parent)) == own_files(path)


@pytest.mark.parametrize("k", range(1, 12))
def test_a_kill_at_any_step_leaves_the_old_set_or_the_new_and_the_next_write_cleans_up(tmp_path, monkeypatch, k):
    """kill -9 in a forked child: no `finally` runs, files stay as they were."""
    path = results.path_for(tmp_path, "x")
    results.write(path, OLD)
    child = os.fork()
    if child == 0:
        fail_at(monkeypatch, k, lambda: os._exit(9))
        results.write(path, NEW)
        os._exit(0)
    assert os.waitpid(child, 0)[1] >> 8 == 9
    assert same(results.read(path), NEW if k >= 9 else OLD)
    results.write(path, NEW)
    assert same(results.read(path), NEW) and sorted(os.listdir(path.parent)) == own_files(path)


def test_a_read_overtaken_by_a_commit_reads_the_new_set(tmp_path, monkeypatch):
    """A write that commits, and removes the old tables, between a reader's
    reading of the main file and of the tables: the reader reads again."""
    path = results.path_for(tmp_path, "x")
    results.write(path, OLD)
    read_frame, overtaken = results.read_frame, []

    def commit_meanwhile(file):
        got = read_frame(file)
        if not overtaken:
            overtaken.append(results.write(path, NEW))
        return got

    monkeypatch.setattr(results, "read_frame", commit_meanwhile)
    assert same(results.read(path), NEW) and overtaken


@pytest.mark.parametrize("previous, says", [(True, "x.parquet still holds the previous results, unchanged"),
                                            (False, "no results were kept")])
def test_a_failed_write_says_what_a_reader_now_finds(tmp_path, monkeypatch, previous, says):
    path = results.path_for(tmp_path, "x")
    if previous:
        results.write(path, OLD)
    fail_at(monkeypatch, 1, full_disk)
    with pytest.raises(results.ResultsError) as err:
        cli.save(path, NEW)
    assert str(err.value) == f"cannot write {path}: No space left on device; {says}"
