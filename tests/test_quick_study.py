"""`study all --quick` once (one pytest-xdist worker runs a file's tests):
its results, figures and report, `study verify` on them, and the notebook
API on the same programs."""

import os
import shutil

import matplotlib
import numpy as np
import pandas as pd
import pytest

import study
from study import cli, config, registry, results, stats


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    """`study all --quick`, once."""
    out = tmp_path_factory.mktemp("quick")
    assert cli.main(["all", "--quick", "--out", str(out)]) == 0
    return out


def test_quick_run_writes_tidy_results_with_provenance(quick):
    res = results.read(quick / "results" / "initialization.parquet")
    frame, meta = res.frame, res.metadata
    assert list(frame.columns[:8]) == ["variant", "optimizer", "activation", "init", "seed", "data_seed", "lr", "role"]
    for column in ["epoch", "train_loss", "test_acc", "eval_acc", "diverged", "bayes_acc",
                   "distinct_h1", "distinct_h2", "grad_norm_l0", "grad_norm_l2"]:
        assert column in frame
    runs = frame.groupby(["variant", "optimizer", "activation", "init", "lr", "seed"]).size()
    # Every condition on 2 tuning + 2 evaluation seeds, 6 epochs; SGD's 2 rates on the tuning seeds only.
    assert len(runs) == 4 * (5 + 2 * 3 * 12) + 3 * 12 * (2 * 2 + 2) and set(runs) == {6}
    assert set(frame["variant"]) == {"faithful", "stated", "mixture"}
    assert frame["eval_acc"].notna().sum() == len(runs)  # the large sample scored once, after training
    assert meta["experiment"] == "initialization" and meta["config"]["quick"]
    assert meta["devices"]["count"] == 2 and "intra_op_parallelism_threads=1" in meta["devices"]["xla_flags"]
    assert {"jax", "flax", "optax"} <= set(meta["versions"]) and meta["git_commit"]
    assert meta["wall_time_s"] > 0
    assert [p["label"] for p in meta["programs"]] == ["faithful", "stated adam", "stated sgd", "mixture adam"]


@pytest.mark.parametrize("name, conditions, layers, measures", [  # a run: its conditions, rate and seed
    ("layer_convergence", ["variant", "optimizer", "activation", "lr"], 4,
     {"tracked_abs_change", "tracked_l2_change", "rel_change", "dist_init", "dist_final", "cka_final", "reset_acc"}),
    ("regularization", ["variant", "regularizer", "strength", "lr"], 3,
     {"mean_abs_w", "small_frac", "rel_small_frac", "zero_frac", "max_unit_norm"}),
])
def test_quick_run_writes_layer_and_weight_tables(quick, name, conditions, layers, measures):
    """Each question keeps the per-layer measures its analysis reads, and no other."""
    res = results.read(quick / "results" / f"{name}.parquet")
    assert sorted(res.tables) == ["layers", "weights"] and res.metadata["tables"] == ["layers", "weights"]
    per_layer, weights = res.tables["layers"], res.tables["weights"]
    assert {"layer", "epoch"} <= set(per_layer) and set(config.LAYER_MEASURES) & set(per_layer) == measures
    assert list(weights.columns[-4:]) == ["layer", "weight_index", "epoch", "value"]
    assert set(conditions) <= set(weights.columns) and "seed" in weights
    every = res.metadata["programs"][0]["setup"]["tracking"]["measures_every"]
    chosen = res.frame[res.frame["selected"]]  # a tuned grid's other values keep no side tables
    assert len(per_layer) == len(chosen) * layers // every
    assert weights.groupby([*conditions, "seed", "layer", "epoch"]).size().eq(50).all()
    assert set(weights["layer"]) == set(range(layers)) and weights["epoch"].min() == 0
    first = chosen[chosen["seed"] == 0]  # the sampled weights' values: the first seed's runs
    assert set(weights["seed"]) == {0} and weights.groupby(conditions).ngroups == first.groupby(conditions).ngroups


def test_quick_transfer_run_keeps_every_strategy_and_the_pretrained_weights(quick):
    res = results.read(quick / "results" / "transfer.parquet")
    frame = res.frame
    assert list(frame.columns[:7]) == ["n_target", "similarity", "strategy", "trainable_layers", "lr", "head_lr",
                                       "seed"]
    for column in ["epoch", "train_loss", "test_acc", "eval_acc", "val_acc", "step_time_s", "selected"]:
        assert column in frame
    assert set(frame["strategy"]) == {"scratch", "feature_extraction", "feature_extraction_early", "finetune_top",
                                      "finetune_all", "staged", "staged_small", "reinit", "wide_head",
                                      "random_features"}
    chosen = frame[frame["selected"]].groupby(["strategy", "trainable_layers", "n_target", "similarity"])
    assert chosen[["lr", "head_lr"]].nunique().eq(1).all().all()  # one rate pair per arm and cell
    assert chosen.ngroups == frame.groupby(["strategy", "trainable_layers", "n_target", "similarity"]).ngroups
    probe = res.tables["probe"]
    assert probe["probe_acc"].between(0, 1).all() and len(probe) == frame.groupby(["n_target", "similarity",
                                                                                   "seed"]).ngroups
    cells = frame.groupby("strategy")[["n_target", "similarity"]].nunique()
    assert (cells >= 2).all().all()  # at least 2 x 2 cells for every strategy
    assert sorted(frame.loc[frame["strategy"] == "finetune_top", "trainable_layers"].unique()) == [2, 3, 4]
    first = res.tables["first-epoch"]
    assert first["epoch"].eq(1).all() and set(first["strategy"]) == {"finetune_top", "finetune_all"}
    source = res.tables["source"]
    assert set(source["model"]) == {"mlp", "linear"} and source["eval_acc"].notna().any()
    kernel = res.params["source mlp/layer0_kernel"]
    assert kernel.shape == (source["seed"].nunique(), 12, 64) and np.isfinite(kernel).all()
    assert "source mlp/layer4_kernel" in res.params and not any(k.startswith("source linear") for k in res.params)


def test_quick_run_writes_figures_and_report(quick):
    for name in ["curves", "loss", "final", "faithful", "units", "symmetry"]:
        for suffix in ["png", "svg", "csv"]:
            assert (quick / "figures" / f"initialization-{name}.{suffix}").stat().st_size > 0
    md = (quick / "paper" / "report.md").read_text()
    assert "## Q1. How does initialization affect training?" in md
    assert "## Q2. Do different layers converge at different speeds?" in md
    assert "## Q3. How does regularization affect the weights?" in md
    assert "## Q4. When should one freeze, fine-tune or train from scratch?" in md
    assert md.count("**Claim ") == 6 + 12 + 11 + 16 and md.count("**Design check ") == 2 + 5 + 3 + 6
    assert "Verdict rule" in md and "| hidden 2 | 100 x 100 |" in md and "## Verdicts at a glance" in md
    assert "## What we found" in md and "[q3-claim-10](#q3-claim-10)" in md
    claims = pd.read_csv(quick / "paper" / "claims.csv")
    assert claims["id"].nunique() == 8 + 17 + 14 + 22 and "q4-claim-22" in set(claims["id"])
    assert claims["cell_verdict"].isin(["reproduced", "contradicted", "tie", "inconclusive"]).all()
    assert claims["verdict_kind"].isin(["reproduced", "contradicted", "tie", "inconclusive", "split"]).all()
    assert ((claims["lo"] <= claims["estimate"]) & (claims["estimate"] <= claims["hi"])).all()
    html = (quick / "paper" / "report.html").read_text()
    assert '<a id="q4-claim-15"></a>' in html and 'href="#q1-claim-1"' in html
    assert html.count("data:image/png;base64,") == len(list((quick / "figures").glob("*.png"))) == 7 + 6 + 6 + 6


def test_report_covers_the_experiments_with_results_and_names_the_others(quick, tmp_path):
    for folder, pattern in [("results", "initialization*"), ("figures", "initialization-*")]:
        (tmp_path / folder).mkdir()
        for path in (quick / folder).glob(pattern):
            shutil.copy(path, tmp_path / folder)
    assert cli.main(["report", "--out", str(tmp_path)]) == 0
    md = (tmp_path / "paper" / "report.md").read_text()
    assert "## Q1. How does initialization affect training?" in md and "## Q2." not in md
    assert "**Not in this report** (no results yet; `study run NAME`): layer_convergence, regularization, transfer." in md


def test_verify_reruns_the_committed_config_and_finds_the_same_verdicts(quick, capsys):
    """On the question that trains fastest, side tables included."""
    assert cli.main(["verify", "layer_convergence", "--out", str(quick)]) == 0
    out = capsys.readouterr().out  # the same command twice in one process: identical data
    gaps = [line for line in out.splitlines() if "largest absolute difference" in line]
    assert len(gaps) > 10 and all(line.endswith("difference 0") for line in gaps)
    for column in ["layer_convergence.test_acc", "layer_convergence-layers.cka_final",
                   "layer_convergence-weights.value"]:
        assert f"{column}: largest absolute difference 0" in out
    assert "no cell verdict changed" in out and out.rstrip().endswith("17 of 17 verdicts unchanged")


def test_every_claim_reads_its_cells_on_the_evaluation_seeds_only(quick):
    """Every per-seed cell of every claim (and of its other analysis choices)
    carries its seeds; a source's claim reads evaluation seeds only (a design
    check of the tuning may read the tuning seeds)."""
    for question in registry.experiments().values():
        res = cli.load(question, quick)
        tuning = res.metadata["config"]["tuning_seeds"]
        for claim in question.claims(res):
            for label, values in (item for cells in (claim.cells, *claim.choices.values()) for item in cells.items()):
                if isinstance(values, stats.Interval):
                    continue
                ids = stats.seed_ids(values)
                assert ids, (question.name, claim.text, label)
                assert claim.design_check or min(ids) >= tuning, (question.name, claim.text, label, ids)


def test_run_and_figures_from_python_write_nothing_and_keep_the_backend(quick, tmp_path, monkeypatch):
    """The notebook API, after the quick study in this process: its programs are compiled already."""
    monkeypatch.chdir(tmp_path)
    matplotlib.use("pdf")  # a backend the study's own CLI never picks
    res = study.run("layer_convergence", quick=True)  # the programs of `study all --quick`
    assert set(res.frame["optimizer"]) == {"adam", "sgd"} and res.frame["epoch"].max() == 10
    assert {"layers", "weights"} <= set(res.tables) and res.metadata["config"]["seeds"] == 2
    drawn = study.draw("layer_convergence", res)
    assert "summary" in drawn and drawn["summary"].axes
    assert matplotlib.get_backend() == "pdf" and os.listdir(tmp_path) == []
