"""Every malformed file, and every place that cannot be written, is one
line on stderr and exit status 2, before any figure or report is written."""

import errno
import json
import os
import shutil
from pathlib import Path

import matplotlib.figure
import numpy as np
import pandas as pd
import pytest

from study import cli, figures, results

ROOT = Path(__file__).resolve().parents[1]
PROGRAM = {"label": "p", "setup": {"epochs": 2}, "runs": 2, "model": [], "compile_s": 1.0, "train_s": 2.0}
META = {"experiment": "initialization", "config": {"seeds": 2, "tuning_seeds": 2, "quick": True, "epochs": 2}, "programs": [PROGRAM],
        "versions": {"numpy": "2.0"}, "git_commit": "abc", "wall_time_s": 3.0,
        "devices": {"platform": "cpu", "kind": "cpu", "count": 2, "xla_flags": ""}}


def frame(**columns) -> pd.DataFrame:
    """Two seeds, two epochs each."""
    rows = pd.DataFrame({"init": "zeros", "seed": np.repeat([0, 1], 2), "role": np.repeat(["tune", "evaluate"], 2), "epoch": np.array([1, 2] * 2, np.int32),
                         "test_acc": [0.5, 0.6, 0.55, 0.65]})
    return rows.assign(**columns)


def write(out: Path, data: pd.DataFrame = None, metadata=META, **kwargs) -> Path:
    path = results.path_for(out, "initialization")
    results.write(path, results.Results(frame() if data is None else data, metadata, **kwargs))
    return path


def without(key):
    return {k: v for k, v in META.items() if k != key}


def captions(out: Path, text: str) -> None:
    path = figures.captions_path("initialization", out)
    path.parent.mkdir(exist_ok=True)
    path.write_text(text)


def committed_captions(out: Path, write_id: str) -> None:
    write(out)
    captions(out, json.dumps({"write_id": write_id, "captions": [["initialization-curves", "Curves."]]}))


CASES = {  # name: (make the malformed output folder, command, what the one line says)
    "no test_acc column": (lambda out: write(out, frame().drop(columns="test_acc")), "figures",
                           "lacks the column 'test_acc'"),
    "test_acc as text": (lambda out: write(out, frame(test_acc=["0.5"] * 4)), "figures",
                         "has a column 'test_acc' of str values, not numbers"),
    "seeds as floats": (lambda out: write(out, frame(seed=[0.0, 0, 1, 1])), "figures",
                        "has seeds that are not whole numbers"),
    "metadata a JSON list (report)": (lambda out: results.write_frame(results.path_for(out, "initialization"),
                                                                       frame(), [1, 2]), "report",
                                      "has metadata that is a JSON list, not an object"),
    "metadata a JSON list (verify)": (lambda out: results.write_frame(results.path_for(out, "initialization"),
                                                                       frame(), [1, 2]), "verify",
                                      "has metadata that is a JSON list, not an object"),
    "metadata without config (report)": (lambda out: write(out, metadata=without("config")), "report",
                                         "has metadata without 'config'"),
    "metadata without config (verify)": (lambda out: write(out, metadata=without("config")), "verify",
                                         "has metadata without 'config'"),
    "versions a list": (lambda out: write(out, metadata={**META, "versions": ["jax"]}), "report",
                        "has metadata 'versions' of type list"),
    "config without epochs": (lambda out: write(out, metadata={**META, "config": {"seeds": 2, "tuning_seeds": 2, "quick": True}}),
                              "figures", "has metadata 'config' without 'epochs'"),
    "a run without its last epoch": (lambda out: write(out, frame().drop(index=3)), "figures",
                                     "has 1 of 2 runs without every epoch up to their last"),
    "every run without its last epoch": (lambda out: write(out, frame().query("epoch == 1")), "figures",
                                         "has 2 of 2 runs without every epoch up to their last"),
    "test_acc all NaN": (lambda out: write(out, frame(test_acc=np.nan)), "figures",
                         "has no test_acc values (all missing)"),
    "accuracies in percent": (lambda out: write(out, frame(test_acc=[50.0, 60, 55, 65])), "figures",
                              "has test_acc values outside [0, 1] (largest 65; percentages?)"),
    "a 0-byte .npz": (lambda out: results.params_path(write(out, params={"w": np.ones(2)}),
                                                      results.committed_id(results.path_for(out, "initialization"))
                                                      ).write_bytes(b""), "figures",
                      "is missing or not this run's weights (EOFError)"),
    "a table's epochs as floats": (lambda out: write(out, tables={"layers": frame(epoch=[1.0, 2, 1, 2])}),
                                   "figures", "initialization-layers."),
    "truncated captions": (lambda out: (write(out), captions(out, '{"write_id": "ab", "capt')), "report",
                           "initialization-captions.json is not a captions file of this package"),
    "captions not a list": (lambda out: (write(out), captions(out, '{"write_id": "ab", "captions": 3}')),
                            "report", "initialization-captions.json is not a captions file of this package"),
    "captions without a write id": (lambda out: (write(out), captions(out, '[["initialization-curves", "C"]]')),
                                    "report", "initialization-captions.json is not a captions file"),
    "captions of another run": (lambda out: committed_captions(out, "0" * 32), "report",
                                "belongs to figures drawn from another run of initialization; run `study figures"),
    "figures/ a file": (lambda out: (write(out), (out / "figures").write_text("")), "figures",
                        "cannot write figures under"),
}


@pytest.mark.parametrize("case", CASES)
def test_a_malformed_file_is_one_line_exit_2_and_nothing_drawn(tmp_path, capsys, case):
    make, command, message = CASES[case]
    make(tmp_path)
    before = sorted(tmp_path.rglob("*"))
    argv = [command] + (["initialization"] if command != "report" else []) + ["--out", str(tmp_path)]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("study: error: ") and err.count("\n") == 1 and message in err, err
    assert sorted(tmp_path.rglob("*")) == before  # no figure, no report, no half-written file


def test_a_compilation_cache_that_is_a_file_is_one_line_before_any_work(tmp_path, capsys, monkeypatch):
    (tmp_path / "cache").write_text("")
    monkeypatch.setenv("STUDY_CACHE_DIR", str(tmp_path / "cache"))
    assert cli.main(["run", "initialization", "--quick", "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("study: error: cannot use the compilation cache") and err.count("\n") == 1
    assert os.listdir(tmp_path) == ["cache"]


@pytest.fixture(scope="module")
def committed(tmp_path_factory) -> Path:
    """The committed initialization results, a real file to draw and verify from."""
    out = tmp_path_factory.mktemp("committed")
    (out / "results").mkdir()
    shutil.copy(results.path_for(ROOT, "initialization"), out / "results")
    return out


def test_a_full_disk_while_drawing_is_one_line_and_leaves_no_file(committed, capsys, monkeypatch):
    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", full)
    assert cli.main(["figures", "initialization", "--out", str(committed)]) == 2
    err = capsys.readouterr().err
    assert err == f"study: error: cannot write figures under {committed / 'figures'}: No space left on device\n"
    assert not list((committed / "figures").iterdir())


def test_verify_fails_when_numbers_moved_though_no_verdict_changed(committed, capsys, monkeypatch):
    before = results.read(results.path_for(committed, "initialization"))
    rerun = results.Results(before.frame.assign(train_loss=before.frame["train_loss"] + 1e-3), before.metadata)
    monkeypatch.setattr(cli.devices, "configure", lambda **kwargs: None)
    monkeypatch.setattr(cli.runner, "run", lambda *args, **kwargs: rerun)
    assert cli.main(["verify", "initialization", "--out", str(committed)]) == 1
    out = capsys.readouterr().out
    assert "initialization.train_loss: largest absolute difference 0.001" in out
    assert f"columns that differ by more than {cli.VERIFY_TOLERANCE:g}: 1" in out
    assert out.rstrip().endswith("8 of 8 verdicts unchanged")
