"""The `study` command: its listing, and its handling of bad input, a malformed file and Ctrl-C."""

import contextlib
import gc
import os
import signal
import subprocess
import sys
import time

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import SMALLEST
from study import cli


def test_list_names_each_experiment(capsys):
    assert cli.main(["list"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "initialization\tHow does initialization affect training?",
        "layer_convergence\tDo different layers converge at different speeds?",
        "regularization\tHow does regularization affect the weights?",
        "transfer\tWhen should one freeze, fine-tune or train from scratch?"]


def test_transfer_epochs_off_its_scoring_stride_are_one_line_errors(tmp_path, capsys):
    assert cli.main(["run", "transfer", "--epochs", "3", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "must be a multiple of 5" in err and not os.listdir(tmp_path)


@pytest.mark.parametrize("argv, message", [
    (["run", "nope"], "unknown experiment 'nope'; choose from initialization, layer_convergence, regularization, transfer or all"),
    (["run", "all", "--seeds", "0"], "argument --seeds: must be at least 1, got 0"),
    (["run", "transfer", "--epochs", "1000000000"], "transfer with 32 evaluation seeds would train up to"),
    (["run", "all", "--epochs", "-3"], "argument --epochs: must be at least 1, got -3"),
    (["run", "all", "--epochs", "x"], "argument --epochs: expected a whole number >= 1, got 'x'"),
    (["run", "all", "--seeds", "1000000000"],
     "initialization with 1000000000 evaluation seeds would train up to 83,220,000,665,760 run-epochs; "
     "the limit is 50,000,000"),
    (["figures", "initialization"], "no results file"),
    (["report"], "no results file"),
    (["frobnicate"], "invalid choice: 'frobnicate'"),
])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(argv, message, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert cli.main([*argv, "--out", str(tmp_path)] if argv[0] != "frobnicate" else argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("study: error: ") and message in err
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("out, reason", [("file", "Not a directory"), ("x" * 300, "File name too long")])
def test_an_out_that_cannot_hold_results_is_rejected_before_training(tmp_path, capsys, out, reason):
    (tmp_path / "file").write_text("not a folder")
    assert cli.main(["run", "initialization", "--quick", "--out", str(tmp_path / out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"cannot write results under {tmp_path / out}: {reason}" in err
    assert os.listdir(tmp_path) == ["file"]


def test_malformed_results_file_is_rejected(tmp_path, capsys):
    path = tmp_path / "results" / "initialization.parquet"
    path.parent.mkdir()
    pq.write_table(pa.table({"x": [1]}), path)  # parquet, but without the study's metadata
    assert cli.main(["figures", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "is not a results file of this package" in err and err.count("\n") == 1
    assert not (tmp_path / "figures").exists()



def test_ctrl_c_inside_a_gc_callback_is_sent_again_not_dropped(monkeypatch):
    """Python prints and drops an exception raised in a garbage collector's
    callback (JAX registers one): Ctrl-C there is sent again, outside it."""
    sent, raised = [], []
    monkeypatch.setattr(cli.os, "kill", lambda pid, signum: sent.append((pid, signum)))

    def callback(phase, info):
        if phase == "start":
            try:
                cli.interrupt_outside_gc(signal.SIGINT, sys._getframe())
            except KeyboardInterrupt:
                raised.append(phase)

    gc.callbacks.append(callback)
    try:
        gc.collect()
    finally:
        gc.callbacks.remove(callback)
    for _ in range(100):  # the signal goes again after 50 ms, from a timer thread
        if sent:
            break
        time.sleep(0.05)
    assert sent == [(os.getpid(), signal.SIGINT)] and not raised
    with pytest.raises(KeyboardInterrupt):
        cli.interrupt_outside_gc(signal.SIGINT, sys._getframe())


def test_ctrl_c_while_compiling_exits_130_with_one_line_and_writes_nothing(tmp_path):
    """SIGINT while XLA compiles on its own threads: one line, status 130,
    no crash in the interpreter's teardown, no results file."""
    env = {**os.environ, "STUDY_CACHE_DIR": ""}
    start = ("import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "  # as in a terminal,
             "from study import cli; sys.exit(cli.main(sys.argv[1:]))")  # even where the tests run under nohup
    command = [sys.executable, "-c", start, *SMALLEST, "--out", str(tmp_path)]
    process = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)
    for line in process.stderr:  # the first program has started compiling
        if "compiling and training" in line:
            break
    for _ in range(3):  # once; again should it land where even the study's handler cannot raise
        process.send_signal(signal.SIGINT)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=5)
            break
    rest = process.stderr.read()
    assert process.wait(timeout=60) == 130
    assert rest.strip().splitlines()[-1].startswith("study: interrupted;") and "Traceback" not in rest
    assert not list(tmp_path.rglob("*.parquet"))
