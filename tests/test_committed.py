"""The committed figures' data and report regenerate from the committed
parquet files unchanged: what a reader cites is what the results say."""

import shutil
from pathlib import Path

from study import cli

ROOT = Path(__file__).resolve().parents[1]


def test_committed_figures_and_report_regenerate_unchanged(tmp_path):
    shutil.copytree(ROOT / "results", tmp_path / "results")
    assert cli.main(["figures", "--out", str(tmp_path)]) == 0
    assert cli.main(["report", "--out", str(tmp_path)]) == 0
    committed = sorted((ROOT / "figures").glob("*.csv"))
    assert committed and [p.name for p in committed] == sorted(p.name for p in (tmp_path / "figures").glob("*.csv"))
    for path in committed:
        assert (tmp_path / "figures" / path.name).read_text() == path.read_text(), path.name
    assert (tmp_path / "paper" / "report.md").read_text() == (ROOT / "paper" / "report.md").read_text()
