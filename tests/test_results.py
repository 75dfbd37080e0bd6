"""The one parquet reader and writer: round trip, atomic writes, clear errors."""

import os

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from study import results

FRAME = pd.DataFrame({"init": ["zeros", "he_normal"], "seed": np.array([0, 1], np.int32), "role": ["tune", "evaluate"],
                      "epoch": np.array([1, 1], np.int32), "test_acc": [0.5, 0.75],
                      "eval_acc": [np.nan, 0.95], "diverged": [False, True]})
PROGRAM = {"label": "p", "setup": {"epochs": 1}, "runs": 2, "model": [[12, 100]], "compile_s": 1.0, "train_s": 2.0}
META = {"experiment": "x", "config": {"seeds": 2, "tuning_seeds": 2, "quick": True, "epochs": 1}, "programs": [PROGRAM],
        "versions": {"numpy": "2.0"}, "git_commit": "abc", "wall_time_s": 3.0,
        "devices": {"platform": "cpu", "kind": "cpu", "count": 2, "xla_flags": ""}}


def test_round_trip_keeps_frame_and_metadata(tmp_path):
    path = results.path_for(tmp_path, "x")
    layers = FRAME.assign(layer=np.array([0, 1], np.int32))
    results.write(path, results.Results(FRAME, META, {"layers": layers}))
    back = results.read(path)
    pd.testing.assert_frame_equal(back.frame, FRAME)
    pd.testing.assert_frame_equal(back.tables["layers"], layers)
    write_id = back.metadata.pop("write_id")
    assert back.metadata == {**META, "tables": ["layers"], "params": []} and len(write_id) == 32
    assert sorted(os.listdir(path.parent)) == [f"x-layers.{write_id[:8]}.parquet", "x.parquet"]
    assert pq.ParquetFile(path).metadata.row_group(0).column(0).compression == "ZSTD"


def test_a_table_from_another_write_is_caught(tmp_path):
    """A table of another write under this write's name (copied by hand)
    is caught by its full write id."""
    path = results.path_for(tmp_path, "x")
    results.write(path, results.Results(FRAME, META, {"layers": FRAME}))
    old = results.table_path(path, "layers", results.read(path).metadata["write_id"]).read_bytes()
    results.write(path, results.Results(FRAME, META, {"layers": FRAME}))
    results.table_path(path, "layers", results.read(path).metadata["write_id"]).write_bytes(old)
    with pytest.raises(results.ResultsError, match=r"x-layers\.\w+\.parquet and x.parquet come from different runs"):
        results.read(path)


def test_kept_weights_from_another_write_or_truncated_are_caught(tmp_path):
    path = results.path_for(tmp_path, "x")
    params = {"w": np.ones((2, 3), np.float32)}
    results.write(path, results.Results(FRAME, META, {}, params))
    np.testing.assert_array_equal(results.read(path).params["w"], params["w"])
    kept = results.params_path(path, results.read(path).metadata["write_id"])
    kept.write_bytes(kept.read_bytes()[:40])
    with pytest.raises(results.ResultsError, match=r"x-params\.\w+\.npz is missing or not this run's weights"):
        results.read(path)


def test_stale_temporaries_of_a_killed_write_are_removed_by_the_next(tmp_path):
    path = results.path_for(tmp_path, "x")
    path.parent.mkdir()
    (path.parent / ".x.parquet.abc123.tmp").write_bytes(b"")
    results.write(path, results.Results(FRAME, META))
    assert os.listdir(path.parent) == ["x.parquet"]


@pytest.mark.parametrize("frame, problem", [
    (FRAME.iloc[:0], "has no rows"),
    (FRAME.assign(epoch=[1.0, 1.5]), "epochs that are not whole numbers"),
    (FRAME.assign(epoch=[1.0, np.nan]), "epochs that are not whole numbers"),
])
def test_results_without_rows_or_with_odd_epochs_are_rejected(tmp_path, frame, problem):
    path = results.path_for(tmp_path, "x")
    results.write(path, results.Results(frame, META))
    with pytest.raises(results.ResultsError, match=problem):
        results.read(path)


def test_missing_table_file_is_a_one_line_error(tmp_path):
    path = results.path_for(tmp_path, "x")
    results.write(path, results.Results(FRAME, META, {"weights": FRAME}))
    os.remove(results.table_path(path, "weights", results.read(path).metadata["write_id"]))
    with pytest.raises(results.ResultsError, match=r"no results file .*x-weights\.\w+\.parquet; run `study run x`"):
        results.read(path)


def test_failed_write_keeps_previous_file_and_leaves_no_temporary(tmp_path):
    path = results.path_for(tmp_path, "x")
    results.write(path, results.Results(FRAME, META))
    before = path.read_bytes()

    def broken(tmp):
        open(tmp, "wb").write(b"half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        results.atomic_write(path, broken)
    assert path.read_bytes() == before
    assert os.listdir(path.parent) == ["x.parquet"]


def test_checking_that_results_can_be_written_leaves_no_folder_behind(tmp_path):
    results.check_writable(tmp_path / "a" / "b" / "results")
    assert os.listdir(tmp_path) == []
    (tmp_path / "file").write_text("")
    with pytest.raises(NotADirectoryError):
        results.check_writable(tmp_path / "file" / "results")


def test_missing_file_is_a_one_line_error(tmp_path):
    with pytest.raises(results.ResultsError, match="no results file .*x.parquet; run `study run x` first"):
        results.read(results.path_for(tmp_path, "x"))


@pytest.mark.parametrize("content", ["garbage", "foreign parquet"])
def test_malformed_file_is_a_one_line_error(tmp_path, content):
    path = tmp_path / "x.parquet"
    if content == "garbage":
        path.write_bytes(os.urandom(256))
    else:
        pq.write_table(pa.table({"x": [1]}), path)
    with pytest.raises(results.ResultsError, match="is not a results file of this package") as err:
        results.read(path)
    assert "\n" not in str(err.value)


def test_differences_name_each_numeric_column_and_its_largest_gap():
    a = results.Results(pd.DataFrame({"seed": [0, 1], "acc": [0.5, np.nan], "step_time_s": [1.0, 2.0]}), {})
    b = results.Results(pd.DataFrame({"seed": [0, 1], "acc": [0.75, np.nan], "step_time_s": [9.0, 9.0]}), {})
    assert list(results.differences(a, b)) == [("", "seed", 0.0), ("", "acc", 0.25)]
    c = results.Results(pd.DataFrame({"seed": [0, 1], "acc": [0.5, 0.5], "step_time_s": [1.0, 2.0]}), {})
    assert list(results.differences(a, c))[1] == ("", "acc", np.inf)  # NaN against a number
    with pytest.raises(results.ResultsError, match="different grids"):
        list(results.differences(a, results.Results(a.frame.iloc[:1], {})))


def test_kept_weights_of_another_write_are_caught(tmp_path):
    path = results.path_for(tmp_path, "x")
    params = {"w": np.ones((2, 3), np.float32)}
    results.write(path, results.Results(FRAME, META, {}, params))
    old_weights = results.params_path(path, results.read(path).metadata["write_id"]).read_bytes()
    results.write(path, results.Results(FRAME, META, {}, params))
    results.params_path(path, results.read(path).metadata["write_id"]).write_bytes(old_weights)
    with pytest.raises(results.ResultsError, match=r"x-params\.\w+\.npz and x.parquet come from different runs"):
        results.read(path)
