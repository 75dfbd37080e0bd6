"""The committed figures' data and report regenerate from the committed
parquet files unchanged: what a reader cites is what the results say.
(Drawing the images is left to the end-to-end test of the CLI.)"""

import re
import shutil
from pathlib import Path

import pandas as pd

from study import cli, figures, registry, report

ROOT = Path(__file__).resolve().parents[1]


def test_committed_figures_and_report_regenerate_unchanged(tmp_path):
    regenerated = {}
    for question in registry.experiments().values():
        res = cli.load(question, ROOT)
        drawn = question.figures(res, cli.evaluated(question, res))  # the report reuses them
        regenerated.update({f"{question.name}-{figure.name}.csv": figures.csv_text(figure) for figure in drawn})
        assert figures.read_captions(question.name, ROOT) == [(f"{question.name}-{f.name}", f.caption) for f in drawn]
    committed = {path.name: path.read_text() for path in (ROOT / "figures").glob("*.csv")}
    assert committed and sorted(committed) == sorted(regenerated)
    for name, text in committed.items():
        assert regenerated[name] == text, name
    for folder in ("results", "figures"):  # the HTML report embeds the committed images
        shutil.copytree(ROOT / folder, tmp_path / folder)
    (tmp_path / report.BASELINE).parent.mkdir()
    shutil.copy(ROOT / report.BASELINE, tmp_path / report.BASELINE)  # the verdicts the report compares with
    assert cli.main(["report", "--out", str(tmp_path)]) == 0
    md = (tmp_path / "paper" / "report.md").read_text()
    assert md == (ROOT / "paper" / "report.md").read_text() and not re.search(r"\bnan\b", md)  # blank, not "nan"


def shown_ends(shown: str) -> tuple[float, float]:
    """The ends of an interval as claims.csv shows it ("0.3 pt [0.1, 0.5]"), or a number measured once twice."""
    numbers = [float(v) for v in re.findall(r"-?\d+(?:\.\d+)?", shown)]
    return (numbers[1], numbers[2]) if "[" in shown else (numbers[0], numbers[0])


def test_every_shown_interval_lies_where_its_verdict_says():
    """What a reader sees agrees with the label beside it: a reproduced
    cell's shown interval is wholly on the claimed side of the threshold, a
    tie's inside the tie band, an inconclusive one across the threshold."""
    table = pd.read_csv(ROOT / "paper" / "claims.csv")
    assert {"tie", "reproduced", "contradicted"} <= set(table["cell_verdict"])
    for row in table.itertuples():
        lo, hi = shown_ends(row.shown)
        threshold, band = row.threshold * row.scale, row.tolerance * row.scale
        above, below = lo > threshold, hi < threshold
        inside = threshold - band <= lo and hi <= threshold + band
        expected = ("tie" if inside else "inconclusive" if not (above or below)
                    else "reproduced" if above == (row.claimed == "above") else "contradicted")
        assert row.cell_verdict == expected, (row.id, row.cell, row.shown)
