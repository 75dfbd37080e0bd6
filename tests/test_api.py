"""The notebook API: train a tiny grid, draw its figures, write nothing, leave the backend alone."""

import os

import matplotlib

import study


def test_run_and_figures_from_python_write_nothing_and_keep_the_backend(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    matplotlib.use("pdf")  # a backend the study's own CLI never picks
    res = study.run("layer_convergence", quick=True)  # the programs of `study all --quick`
    assert set(res.frame["optimizer"]) == {"adam", "sgd"} and res.frame["epoch"].max() == 10
    assert {"layers", "weights"} <= set(res.tables) and res.metadata["config"]["seeds"] == 2
    drawn = study.draw("layer_convergence", res)
    assert "summary" in drawn and drawn["summary"].axes
    assert matplotlib.get_backend() == "pdf" and os.listdir(tmp_path) == []
