"""Confidence intervals over seeds, the verdict rule, selection and stability."""

import math

import numpy as np
import pandas as pd
import pytest

from experiments import transfer
from study import claims, stats
from study.stats import Interval, at_last_epoch, cell_verdict, mean_ci, overall_verdict, summarize

T_975_3 = 3.182446305284263  # Student-t 97.5% quantile, 3 degrees of freedom
HALF_1234 = T_975_3 * math.sqrt(5 / 3) / 2  # s = sqrt(5/3) for [1, 2, 3, 4], over sqrt(4)


def test_mean_ci_by_hand():
    ci = mean_ci([1.0, 2.0, 3.0, 4.0])
    assert ci.n == 4 and ci.mean == pytest.approx(2.5)
    assert ci.lo == pytest.approx(2.5 - HALF_1234, rel=1e-12)
    assert ci.hi == pytest.approx(2.5 + HALF_1234, rel=1e-12)


def test_mean_ci_drops_nans():
    assert mean_ci([np.nan, 1.0, 2.0, np.nan, 3.0, 4.0]) == mean_ci([1.0, 2.0, 3.0, 4.0])


def test_mean_ci_other_level():
    # 90%: t_{0.95, 3} = 2.353363434801823.
    ci = mean_ci([1.0, 2.0, 3.0, 4.0], level=0.9)
    assert ci.hi - ci.mean == pytest.approx(2.353363434801823 * math.sqrt(5 / 3) / 2, rel=1e-12)


def test_mean_ci_degenerate_samples():
    assert mean_ci([0.7, 0.7, 0.7]) == Interval(pytest.approx(0.7), pytest.approx(0.7), pytest.approx(0.7), 3)
    assert mean_ci([0.7, 0.7, 0.7]).hi == mean_ci([0.7, 0.7, 0.7]).lo
    assert mean_ci([5.0, np.nan]) == Interval(5.0, -np.inf, np.inf, 1)
    empty = mean_ci([np.nan])
    assert np.isnan(empty.mean) and np.isnan(empty.lo) and np.isnan(empty.hi) and empty.n == 0
    assert mean_ci([]).n == 0


def test_interval_format():
    assert Interval(0.5, 0.25, 0.75, 4).format(scale=100, digits=1, unit=" pt") == "50.0 pt [25.0, 75.0]"


def test_summarize_groups_in_order_of_first_appearance():
    frame = pd.DataFrame({
        "variant": ["b", "b", "a", "a", "b", "b", "a", "a", "a"],
        "act": ["relu", "relu", "relu", "relu", "tanh", "tanh", "tanh", "tanh", "tanh"],
        "acc": [1.0, 3.0, 1.0, 2.0, 5.0, 5.0, 1.0, 2.0, 3.0],
    })
    out = summarize(frame, ["variant", "act"], "acc")
    assert list(out.columns) == ["variant", "act", "mean", "lo", "hi", "n"]
    assert list(zip(out["variant"], out["act"])) == [("b", "relu"), ("a", "relu"), ("b", "tanh"), ("a", "tanh")]
    np.testing.assert_allclose(out["mean"], [2.0, 1.5, 5.0, 2.0])
    assert out["n"].tolist() == [2, 2, 2, 3]
    # Group (a, tanh) is [1, 2, 3]: s = 1, t_{0.975, 2} = 4.302652729911275.
    np.testing.assert_allclose(out.loc[3, ["lo", "hi"]].astype(float), [2 - 4.302652729911275 / math.sqrt(3),
                                                                        2 + 4.302652729911275 / math.sqrt(3)])
    assert out.loc[2, "lo"] == out.loc[2, "hi"] == 5.0
    one = summarize(frame, ["variant"], "acc")
    assert one["variant"].tolist() == ["b", "a"] and one["n"].tolist() == [4, 5]


ABOVE, BELOW, STRADDLE = Interval(0.6, 0.55, 0.65, 8), Interval(0.4, 0.35, 0.45, 8), Interval(0.5, 0.45, 0.55, 8)


@pytest.mark.parametrize("ci, claimed, verdict", [
    (ABOVE, "above", "reproduced"), (BELOW, "above", "contradicted"), (STRADDLE, "above", "inconclusive"),
    (BELOW, "below", "reproduced"), (ABOVE, "below", "contradicted"), (STRADDLE, "below", "inconclusive"),
    (Interval(np.nan, np.nan, np.nan, 0), "above", "inconclusive"),
    (Interval(0.6, -np.inf, np.inf, 1), "above", "inconclusive"),
    (Interval(0.52, 0.5, 0.54, 8), "above", "inconclusive"),  # touching the threshold is not above it
    (Interval(0.48, 0.46, 0.5, 8), "above", "inconclusive"),  # nor below it
])
def test_cell_verdict(ci, claimed, verdict):
    assert cell_verdict(ci, 0.5, claimed) == verdict


def test_cell_verdict_rejects_an_unknown_direction():
    with pytest.raises(ValueError, match="'abov'"):
        cell_verdict(ABOVE, 0.5, "abov")


def test_at_last_epoch_keeps_each_runs_last_row_whatever_the_row_order():
    frame = pd.DataFrame({"seed": [0, 0, 0, 1, 1], "epoch": [3, 1, 2, 1, 2], "acc": [0.9, 0.5, 0.7, 0.6, 0.8]})
    last = at_last_epoch(frame, ["seed"])
    assert last["epoch"].tolist() == [3, 2] and last["acc"].tolist() == [0.9, 0.8]


@pytest.mark.parametrize("cells, verdict", [
    (["reproduced"] * 3, "reproduced"),
    (["contradicted"] * 2, "contradicted"),
    (["inconclusive"] * 2, "inconclusive"),
    (["reproduced", "contradicted"], "mixed"),
    (["reproduced", "inconclusive", "reproduced"], "mixed"),
    (["inconclusive", "contradicted"], "mixed"),
    ([], "inconclusive"),
])
def test_overall_verdict(cells, verdict):
    assert overall_verdict(cells) == verdict


def test_bootstrap_interval_of_a_bounded_statistic_stays_in_bounds():
    """Per-seed Spearman rhos near their bound 1: Student-t would reach past it."""
    rho = [1.0, 1.0, 1.0, 0.8, 1.0, 0.4, 1.0, 1.0]
    assert mean_ci(rho).hi > 1
    ci = stats.bootstrap_ci(rho)
    assert ci.mean == pytest.approx(0.9) and 0.4 <= ci.lo < 0.9 < ci.hi <= 1.0 and ci.n == 8


def test_bootstrap_interval_of_degenerate_samples():
    assert stats.bootstrap_ci([0.3] * 5) == Interval(0.3, 0.3, 0.3, 5)
    assert stats.bootstrap_ci([0.3, np.nan]) == Interval(0.3, -np.inf, np.inf, 1)
    assert stats.bootstrap_ci([]).n == 0


def test_bootstrap_interval_is_reproducible_and_recorded_in_the_rule():
    values = np.random.default_rng(1).normal(size=16)
    assert stats.bootstrap_ci(values) == stats.bootstrap_ci(values)
    assert f"{stats.RESAMPLES:,} resamples, random state {stats.RANDOM_STATE}" in stats.VERDICT_RULE


def test_claim_cells_share_a_bonferroni_level():
    far = np.linspace(0.5, 0.7, 16)  # far above 0: reproduced in every cell and every resample
    result = stats.evaluate({"a": far, "b": far + 0.1, "c": far + 0.2, "d": far - 0.1, "e": far}, 0.0, "above")
    assert result.level == pytest.approx(1 - 0.05 / 5)
    assert result.verdict == "reproduced" and result.stability == 1.0 and not result.fragile


def test_a_verdict_near_its_threshold_is_fragile():
    values = np.linspace(-1, 1, 16) + 0.32  # mean 0.32, the interval's lower end at 0.02
    result = stats.evaluate({"cell": values}, 0.0, "above")
    assert result.verdict == "reproduced" and 0.3 < result.stability < stats.FRAGILE and result.fragile


def test_a_value_measured_once_keeps_its_verdict():
    result = stats.evaluate({"ratio": Interval(2.0, 2.0, 2.0, 1)}, 1.5, "above")
    assert result.verdict == "reproduced" and result.stability == 1.0


def test_the_best_other_arm_is_chosen_on_even_seeds_and_tested_on_odd_ones():
    """Arm b wins on the even seeds, arm c on the odd ones: a's rival is b,
    and a minus b is read on the odd seeds only."""
    acc = {"a": [0.5, 0.5, 0.5, 0.5], "b": [0.9, 0.1, 0.9, 0.1], "c": [0.1, 0.8, 0.1, 0.8]}
    runs = pd.DataFrame([{"n_target": 4, "similarity": 1.0, "arm": arm, "seed": seed, "eval_acc": values[seed]}
                         for arm, values in acc.items() for seed in range(4)])
    (label, diff), = transfer.versus(runs, "a", None, [(4, 1.0)]).items()
    assert label.endswith("(vs b)") and diff.index.tolist() == [1, 3]
    np.testing.assert_allclose(diff, [0.4, 0.4])
    assert stats.selection_half([0, 1, 2, 3]).tolist() == [True, False, True, False]


def test_points_and_formats_by_hand():
    assert stats.points(Interval(0.5, 0.4, 0.625, 8)) == "50.0 pt [40.0, 62.5]"
    assert Interval(1.0, 0.5, 1.5, 4).format(digits=1, unit=" epochs") == "1.0 epochs [0.5, 1.5]"


def test_a_two_value_sample_is_bootstrapped_within_its_range():
    ci = stats.bootstrap_ci([0.0, 1.0])
    assert ci.mean == 0.5 and 0.0 <= ci.lo < 0.5 < ci.hi <= 1.0 and ci.n == 2


def test_cells_use_the_claims_bonferroni_level_and_a_fixed_random_state():
    values = np.linspace(-1, 1, 16) + 0.32
    five = stats.evaluate({str(k): values for k in range(5)}, 0.0, "above")
    assert five.cells[0].interval == stats.bootstrap_ci(values, 1 - 0.05 / 5)
    assert five.cells[0].interval.lo < stats.bootstrap_ci(values).lo  # wider than a lone 95% interval
    assert stats.evaluate({"cell": values}, 0.0, "above").stability == pytest.approx(0.569)


def test_stability_resamples_every_cell_after_one_measured_once():
    mixed = {"ratio": Interval(2.0, 2.0, 2.0, 1), "cell": np.linspace(-1, 1, 16) + 0.32}
    assert stats.evaluate(mixed, 0.0, "above").stability < stats.FRAGILE


def test_a_cell_without_finite_values_is_inconclusive_in_every_resample():
    far = np.linspace(0.5, 0.7, 16)
    result = stats.evaluate({"empty": [np.nan] * 4, "far": far}, 0.0, "above")
    assert [c.verdict for c in result.cells] == ["inconclusive", "reproduced"]
    assert result.verdict == "mixed" and result.stability == 1.0


def test_moving_the_threshold_rereads_the_same_intervals():
    result = stats.evaluate({"a": np.linspace(0.5, 0.7, 16)}, 0.0, "above")
    assert stats.robustness(result, 0.0, "above", 0.6) == {-0.6: "reproduced", 0.6: "inconclusive"}
    assert stats.robustness(result, 0.0, "above", 0.1) == {-0.1: "reproduced", 0.1: "reproduced"}


def test_a_single_value_is_inconclusive_in_the_interval_and_in_every_resample():
    result = stats.evaluate({"one seed": [0.3]}, 0.0, "above")
    assert result.verdict == "inconclusive" and result.stability == 1.0


def test_rates_are_chosen_on_validation_never_on_the_eval_sample():
    """Per cell, the rate with the best mean final val_acc over seeds is
    selected, on all its rows, even where eval_acc would pick another rate;
    earlier epochs and a diverged (NaN) rate do not count."""
    rows = []
    for cell, rates in [("a", {0.1: (0.80, 0.99), 1.0: (0.90, 0.50), 10.0: (np.nan, 0.99)}),
                        ("b", {0.1: (0.70, 0.60), 1.0: (0.60, 0.70), 10.0: (0.65, 0.90)})]:
        for lr, (val, evaluation) in rates.items():
            for seed in (0, 1):
                rows += [{"cell": cell, "lr": lr, "seed": seed, "epoch": 1, "val_acc": 1.0, "eval_acc": 1.0},
                         {"cell": cell, "lr": lr, "seed": seed, "epoch": 2, "val_acc": val + 0.01 * seed,
                          "eval_acc": evaluation}]
    frame = pd.DataFrame(rows).sample(frac=1, random_state=0)
    chosen = frame[stats.chosen_on_validation(frame, ["cell"], ["lr"])]
    assert chosen.groupby("cell")["lr"].unique().map(list).to_dict() == {"a": [1.0], "b": [0.1]}
    assert len(chosen) == 8  # every epoch of every seed of the chosen rates


def test_a_verdict_that_another_analysis_choice_flips_is_labelled_by_that_choice():
    """A claim's verdict is recomputed under each other choice (its
    specification curve); the label names the choices that change it and
    the specification table lists every verdict."""
    above, straddles = np.array([0.30, 0.32, 0.31, 0.29]), np.array([-0.2, 0.3, -0.1, 0.25])
    spec = dict(source="source", source_number="none", statistic="statistic", threshold=0.0, claimed="above",
                unit=stats.POINTS)
    claim = claims.Claim(text="claim", cells={"cell": above}, **spec,
                         choices={"budget 50%": {"cell": straddles}, "budget 75%": {"cell": above}})
    assert claim.result.verdict == "reproduced"
    assert claim.alternatives == {"budget 50%": "inconclusive", "budget 75%": "reproduced"}
    assert claim.robust == "depends on budget 50%"
    table = claims.specification_table([claim, claims.Claim(text="plain", cells={"cell": above}, **spec)])
    assert table.to_dict("records") == [{"#": 1, "claim": "claim", "verdict": "reproduced",
                                         "budget 50%": "inconclusive", "budget 75%": "reproduced"}]
    curve = claims.specification_frame([claim]).set_index("choice")["verdict"].to_dict()
    assert curve == {"as stated": "reproduced", "threshold lower": "reproduced", "threshold higher": "reproduced",
                     "budget 50%": "inconclusive", "budget 75%": "reproduced"}
