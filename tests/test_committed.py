"""The committed figures' data and report regenerate from the committed
parquet files unchanged: what a reader cites is what the results say.
(Drawing the images is left to the end-to-end test of the CLI.)"""

import shutil
from pathlib import Path

from study import cli, figures, registry

ROOT = Path(__file__).resolve().parents[1]


def test_committed_figures_and_report_regenerate_unchanged(tmp_path):
    regenerated = {}
    for question in registry.experiments().values():
        res = cli.load(question, ROOT)
        drawn = question.figures(res, question.claims(res))
        regenerated.update({f"{question.name}-{figure.name}.csv": figures.csv_text(figure) for figure in drawn})
        assert figures.read_captions(question.name, ROOT) == [(f"{question.name}-{f.name}", f.caption) for f in drawn]
    committed = {path.name: path.read_text() for path in (ROOT / "figures").glob("*.csv")}
    assert committed and sorted(committed) == sorted(regenerated)
    for name, text in committed.items():
        assert regenerated[name] == text, name
    for folder in ("results", "figures"):  # the HTML report embeds the committed images
        shutil.copytree(ROOT / folder, tmp_path / folder)
    assert cli.main(["report", "--out", str(tmp_path)]) == 0
    assert (tmp_path / "paper" / "report.md").read_text() == (ROOT / "paper" / "report.md").read_text()
