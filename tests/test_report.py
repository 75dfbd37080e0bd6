"""The report's account of verdicts that changed since the baseline's claims."""

import pandas as pd

from study import report


def claims(rows) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["id", "claim", "cell", "shown", "cell_verdict", "verdict"])


def test_changed_verdicts_name_the_cells_that_moved_before_and_after(tmp_path):
    baseline = tmp_path / "baseline-claims.csv"
    claims([("q1-claim-1", "A holds.", "cell a (vs x)", "0.1 pt [-0.2, 0.4]", "tie", "tie"),
            ("q1-claim-2", "B holds.", "cell a", "1.0 pt [0.5, 1.5]", "reproduced", "reproduced"),
            ("q1-claim-3", "C holds.", "cell a", "1.0 pt [0.5, 1.5]", "reproduced", "reproduced")]).to_csv(baseline)
    now = claims([("q1-claim-1", "A holds.", "cell a (vs y)", "0.9 pt [0.6, 1.2]", "reproduced", "reproduced"),
                  ("q1-claim-2", "B holds.", "cell a", "1.1 pt [0.6, 1.6]", "reproduced", "reproduced")])
    text = report.changes(baseline, now)
    assert text.startswith("1 of 2 verdicts differ from the baseline's; claims no longer made: q1-claim-3.")
    (row,) = [line for line in text.splitlines() if line.startswith("| [q1-claim")]
    assert "| tie | reproduced |" in row and "q1-claim-2" not in text
    assert row.endswith("cell a: tie 0.1 pt [-0.2, 0.4] -> reproduced 0.9 pt [0.6, 1.2] |")


def test_a_cell_new_or_gone_is_shown_as_absent_and_no_baseline_gives_no_section(tmp_path):
    baseline = tmp_path / "baseline-claims.csv"
    claims([("q1-claim-1", "A holds.", "cell a", "0.1 [0.0, 0.2]", "reproduced", "reproduced")]).to_csv(baseline)
    now = claims([("q1-claim-1", "A holds.", "cell b", "-0.1 [-0.2, 0.0]", "contradicted", "contradicted")])
    row = report.changes(baseline, now).splitlines()[-1]
    assert "cell b: absent -> contradicted -0.1 [-0.2, 0.0]" in row
    assert "cell a: reproduced 0.1 [0.0, 0.2] -> absent" in row
    assert report.changes(tmp_path / "none.csv", now) == ""
