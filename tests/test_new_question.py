"""The README's worked example of a new question, copied from the README,
registered and run end to end: what a newcomer follows works as written."""

import importlib.util
import re
import types
from pathlib import Path

import pandas as pd
import pytest

from study import cli, registry
from study.question import Question

ROOT = Path(__file__).resolve().parents[1]


def templates() -> dict[str, str]:
    """Path -> text of each file the README's "Adding a question" gives."""
    found = re.findall(r"<!-- question template: (\S+) -->\n```\w*\n(.*?)```", (ROOT / "README.md").read_text(),
                       flags=re.S)
    return dict(found)


def test_the_readmes_question_template_runs_end_to_end(tmp_path, monkeypatch):
    files = templates()
    assert sorted(files) == ["experiments/text/width.md", "experiments/width.py"]
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    spec = importlib.util.spec_from_file_location("width", tmp_path / "experiments" / "width.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setitem(registry.experiments(), "width", Question.load(module))
    out = tmp_path / "out"
    for command in (["run", "width", "--quick"], ["figures", "width"], ["report"]):
        assert cli.main([*command, "--out", str(out)]) == 0
    claims = pd.read_csv(out / "paper" / "claims.csv")
    assert claims["id"].tolist() == ["q5-claim-1"] and claims["n"].tolist() == [2]
    assert "two widths of one hidden layer, 2 seeds each" in (out / "paper" / "report.md").read_text()
    assert (out / "figures" / "width-curves.png").stat().st_size > 0


def test_a_module_that_breaks_the_contract_is_named_when_loaded():
    module = types.ModuleType("half_done")
    module.NAME, module.QUESTION, module.TEXT, module.SEEDS = "half", "?", "not a path", 16
    with pytest.raises(TypeError, match=r"half_done lacks or mistypes: TEXT \(Path\), TUNING_SEEDS \(int\), QUICK_SEEDS \(int\), plan"):
        Question.load(module)
