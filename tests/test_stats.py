"""Confidence intervals over seeds, the verdict rule, selection and stability."""

import math

import numpy as np
import pandas as pd
import pytest

from study import calibration, claims, stats
from study.stats import Interval, Rule, at_last_epoch, mean_ci, overall_verdict, summarize

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
def test_cell_verdict_without_a_tie_band(ci, claimed, verdict):
    assert Rule(0.5, claimed, 0.0).cell(ci) == verdict


@pytest.mark.parametrize("ci, verdict", [
    (Interval(0.5, 0.47, 0.53, 8), "tie"),  # inside the band 0.5 +- 0.05, across the threshold
    (Interval(0.52, 0.51, 0.53, 8), "tie"),  # inside the band, above the threshold: a difference too small to matter
    (Interval(0.45, 0.45, 0.55, 8), "tie"),  # the band's edges belong to it
    (Interval(0.53, 0.51, 0.56, 8), "reproduced"),  # above the threshold and reaching out of the band
    (Interval(0.5, 0.44, 0.53, 8), "inconclusive"),  # across the threshold and out of the band: too wide to say
    (Interval(0.47, 0.44, 0.49, 8), "contradicted"),
    (Interval(0.52, 0.52, 0.52, 1), "tie"),  # a number measured once, within the tolerance
])
def test_a_cell_inside_the_tolerance_band_is_a_tie(ci, verdict):
    assert Rule(0.5, "above", 0.05).cell(ci) == verdict


def test_a_rule_rejects_an_unknown_direction():
    with pytest.raises(ValueError, match="'abov'"):
        Rule(0.5, "abov", 0.0)


def test_at_last_epoch_keeps_each_runs_last_row_whatever_the_row_order():
    frame = pd.DataFrame({"seed": [0, 0, 0, 1, 1], "epoch": [3, 1, 2, 1, 2], "acc": [0.9, 0.5, 0.7, 0.6, 0.8]})
    last = at_last_epoch(frame, ["seed"])
    assert last["epoch"].tolist() == [3, 2] and last["acc"].tolist() == [0.9, 0.8]


@pytest.mark.parametrize("cells, verdict", [
    (["reproduced"] * 3, "reproduced"),
    (["contradicted"] * 2, "contradicted"),
    (["tie"] * 2, "tie"),
    (["inconclusive"] * 2, "inconclusive"),
    (["reproduced", "contradicted"], "reproduced in 1 of 2, contradicted in 1"),
    (["inconclusive", "reproduced", "tie", "reproduced"], "reproduced in 2 of 4, tie in 1, inconclusive in 1"),
    ([], "inconclusive"),
])
def test_overall_verdict_says_what_happened_where(cells, verdict):
    assert overall_verdict(cells) == verdict
    assert stats.kind(verdict) == (verdict if len(set(cells)) <= 1 else "split")


def test_an_interval_of_a_bounded_statistic_stays_in_bounds():
    """Per-seed Spearman rhos near their bound 1: Student-t alone would reach past it."""
    rho = [1.0, 1.0, 1.0, 0.8, 1.0, 0.4, 1.0, 1.0]
    assert mean_ci(rho).hi > 1
    ci = mean_ci(rho, bounds=(-1.0, 1.0))
    assert ci.mean == pytest.approx(0.9) and ci.lo == mean_ci(rho).lo and ci.hi == 1.0 and ci.n == 8


def test_student_t_covers_the_mean_at_its_nominal_level_at_8_seeds():
    """The verdicts' interval, chosen by the calibration table: on normal
    data at the smallest seed count a cell uses, its actual coverage is
    within a point of 95% and of a 4-cell claim's Bonferroni level, where
    the percentile bootstrap falls short."""
    draw, truth = calibration.DISTRIBUTIONS["normal"]
    rows = calibration.coverage(draw, truth, 8, levels=(0.95, stats.family_level(4)), repetitions=20_000,
                                bootstrap=False)
    assert [round(r["coverage"], 2) for r in rows] == [0.95, 0.99]
    assert all(abs(r["coverage"] - r["level"]) < 0.01 for r in rows)
    boot = calibration.coverage(draw, truth, 8, levels=(0.95,), repetitions=400)
    assert next(r for r in boot if r["method"] == "percentile bootstrap")["coverage"] < 0.93


def test_claim_cells_share_a_bonferroni_level():
    far = np.linspace(0.5, 0.7, 16)  # far above 0: reproduced in every cell and every resample
    result = stats.evaluate({"a": far, "b": far + 0.1, "c": far + 0.2, "d": far - 0.1, "e": far}, ABOVE_0)
    assert result.level == pytest.approx(1 - 0.05 / 5)
    assert result.cells[0].interval == mean_ci(far, 1 - 0.05 / 5)
    assert result.cells[0].interval.lo < mean_ci(far).lo  # wider than a lone 95% interval
    assert result.verdict == "reproduced" and result.stability == 1.0 and not result.fragile


ABOVE_0 = Rule(0.0, "above", 0.0)


def test_a_verdict_near_its_threshold_is_fragile():
    values = np.linspace(-1, 1, 16) + 0.38  # mean 0.38, the interval's lower end at 0.04
    result = stats.evaluate({"cell": values}, ABOVE_0)
    assert result.verdict == "reproduced" and 0.3 < result.stability < stats.FRAGILE and result.fragile
    assert result.stability == stats.evaluate({"cell": values}, ABOVE_0).stability  # a fixed random state


def test_a_value_measured_once_keeps_its_verdict():
    result = stats.evaluate({"ratio": Interval(2.0, 2.0, 2.0, 1)}, Rule(1.5, "above", 0.25))
    assert result.verdict == "reproduced" and result.stability == 1.0 and np.isnan(result.cells[0].detectable)
    assert result.cells[0].seeds_needed == 0


def test_the_detectable_effect_and_the_seeds_a_tolerance_needs_by_hand():
    """With spread s over n seeds at level L and 80% power, the smallest
    detectable mean is (t_{1-(1-L)/2, n-1} + t_{0.8, n-1}) s / sqrt(n)."""
    values = np.array([1.0, 2.0, 3.0, 4.0])
    expected = (T_975_3 + 0.9784723123633045) * math.sqrt(5 / 3) / 2  # t_{0.8, 3}
    assert stats.detectable(values, 0.95) == pytest.approx(expected)
    assert stats.detectable([1.0], 0.95) != stats.detectable([1.0], 0.95)  # NaN
    needed = stats.seeds_needed(values, 1.0, 0.95)
    spread = np.std(values, ddof=1)
    assert stats.detectable(np.r_[values, values][:4], 0.95) == pytest.approx(expected)
    assert needed == next(n for n in range(2, 100) if (stats.stats.t.ppf(0.975, n - 1) + stats.stats.t.ppf(0.8, n - 1))
                          * spread / math.sqrt(n) <= 1.0)


def test_the_best_other_arm_is_chosen_on_the_tuning_seeds_and_tested_on_the_evaluation_seeds():
    """Arm b wins on the tuning seeds, arm c on the evaluation seeds: a's
    rival is b, and a minus b is read on the evaluation seeds only."""
    choose = pd.DataFrame({"a": [0.5, 0.5], "b": [0.9, 0.9], "c": [0.1, 0.1]}, index=[0, 1])
    test = pd.DataFrame({"a": [0.5, 0.5, 0.5], "b": [0.1, 0.2, 0.3], "c": [0.8, 0.8, 0.8]}, index=[2, 3, 4])
    rival, diff = stats.versus_best(choose, test, "a")
    assert rival == "b" and diff.index.tolist() == [2, 3, 4]
    np.testing.assert_allclose(diff, [0.4, 0.3, 0.2])


def test_roles_split_a_frame():
    frame = pd.DataFrame({"seed": [0, 1, 2], "role": ["tune", "evaluate", "evaluate"]})
    assert stats.tuning(frame)["seed"].tolist() == [0] and stats.evaluation(frame)["seed"].tolist() == [1, 2]


def test_points_and_formats_by_hand():
    assert stats.points(Interval(0.5, 0.4, 0.625, 8)) == "50.0 pt [40.0, 62.5]"
    assert Interval(1.0, 0.5, 1.5, 4).format(digits=1, unit=" epochs") == "1.0 epochs [0.5, 1.5]"


@pytest.mark.parametrize("ci, shown", [
    (Interval(0.003, 0.0004, 0.00612, 8), "0.30 pt [0.04, 0.62]"),  # at one digit 0.0 would touch the threshold
    (Interval(-0.002, -0.0052, -0.0001, 8), "-0.20 pt [-0.52, -0.01]"),  # and 0.0 here
    (Interval(0.004, 0.0041, 0.00496, 8), "0.400 pt [0.410, 0.496]"),  # inside the band, not on its edge
    (Interval(0.004, 0.0041, 0.005004, 8), "0.4 pt [0.4, 0.6]"),  # just out of the band: shown out of it
    (Interval(0.3, 0.21, 0.39, 8), "30.0 pt [21.0, 39.0]"),  # outward: already on its side at one digit
    (Interval(0.00505, 0.00505, 0.00505, 1), "0.505 pt"),  # measured once: its value alone, past the band's edge
])
def test_shown_intervals_keep_their_ends_on_the_side_of_the_threshold_and_band(ci, shown):
    assert stats.POINTS.format(ci, Rule(0.0, "above", stats.POINTS.tolerance).marks) == shown


def test_stability_resamples_every_cell_after_one_measured_once():
    mixed = {"ratio": Interval(2.0, 2.0, 2.0, 1), "cell": np.linspace(-1, 1, 16) + 0.38}
    assert stats.evaluate(mixed, ABOVE_0).stability < stats.FRAGILE


def test_a_cell_without_finite_values_is_inconclusive_in_every_resample():
    far = np.linspace(0.5, 0.7, 16)
    result = stats.evaluate({"empty": [np.nan] * 4, "far": far}, ABOVE_0)
    assert [c.verdict for c in result.cells] == ["inconclusive", "reproduced"]
    assert result.verdict == "reproduced in 1 of 2, inconclusive in 1" and result.stability == 1.0


def test_moving_the_threshold_rereads_the_same_intervals():
    spec = dict(source="s", text="t", source_number="none", statistic="x", cells={"a": np.linspace(0.5, 0.7, 16)},
                threshold=0.0, claimed="above")
    assert claims.Claim(**spec, unit=stats.Unit(0.6)).moved == {-0.6: "reproduced", 0.6: "tie"}
    assert claims.Claim(**spec, unit=stats.Unit(0.1)).moved == {-0.1: "reproduced", 0.1: "reproduced"}


def test_a_single_value_is_inconclusive_in_the_interval_and_in_every_resample():
    result = stats.evaluate({"one seed": [0.3]}, ABOVE_0)
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


def test_rates_tuned_for_early_stopping_are_chosen_on_each_runs_best_epoch():
    """Rate 1.0 peaks at epoch 1 and overfits; 0.1 ends higher: the final
    reading picks 0.1, the early-stopped one 1.0."""
    val = {0.1: (0.80, 0.85), 1.0: (0.95, 0.70)}
    frame = pd.DataFrame([{"cell": "a", "lr": lr, "seed": seed, "epoch": epoch, "val_acc": v[epoch - 1]}
                          for lr, v in val.items() for seed in (0, 1) for epoch in (1, 2)])
    for at, rate in [("last", 0.1), ("best", 1.0)]:
        assert set(frame[stats.chosen_on_validation(frame, ["cell"], ["lr"], at=at)]["lr"]) == {rate}
    with pytest.raises(ValueError, match="at must be"):
        stats.per_run_score(frame, ["cell", "lr", "seed"], at="first")


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


def test_a_cell_names_the_seeds_it_reads():
    values = pd.Series([0.1, np.nan, 0.3, 0.2], index=pd.Index([8, 9, 10, 11], name="seed"))
    assert stats.seed_ids(values) == [8, 10, 11] and stats.span([8, 9, 10]) == "8-10"
    cell, = stats.evaluate({"c": values}, stats.Rule(0.0, "above", 0.005)).cells
    assert cell.seeds == "8,10,11" and cell.interval.n == 3
    assert stats.seed_ids(values.to_numpy()) == []
