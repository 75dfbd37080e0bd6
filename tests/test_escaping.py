"""Strings from results metadata, captions and claims reach report.html as
text, never as live HTML: nothing a results file carries runs in a reader's
browser."""

import dataclasses
import html.parser
import json
import shutil
from pathlib import Path

from study import cli, figures, registry, results

ROOT = Path(__file__).resolve().parents[1]
SCRIPT, IMAGE = "<script>alert(1)</script>", '<img src=x onerror="alert(2)">'
PAYLOAD = f"{SCRIPT} {IMAGE} `{SCRIPT}` [link](javascript:alert(3))"


class Tags(html.parser.HTMLParser):
    """Every start tag of a page, with its attributes."""

    def __init__(self, text: str):
        super().__init__()
        self.tags = []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))


def planted(tmp_path: Path) -> Path:
    """The committed initialization results and figures, with PAYLOAD in the
    metadata's versions, commit and XLA flags and in a caption."""
    committed = results.read(results.path_for(ROOT, "initialization"))
    metadata = {**committed.metadata, "versions": {"jax": PAYLOAD}, "git_commit": PAYLOAD,
                "devices": {**committed.metadata["devices"], "xla_flags": PAYLOAD}}
    path = results.path_for(tmp_path, "initialization")
    results.write(path, results.Results(committed.frame, metadata))
    (tmp_path / "figures").mkdir()
    for png in (ROOT / "figures").glob("initialization-*.png"):
        shutil.copy(png, tmp_path / "figures")
    pairs = figures.read_captions("initialization", ROOT)
    pairs[0] = (pairs[0][0], PAYLOAD)
    figures.captions_path("initialization", tmp_path).write_text(
        json.dumps({"write_id": results.committed_id(path), "captions": pairs}))
    return tmp_path


def test_html_from_results_captions_and_claims_is_escaped(tmp_path, monkeypatch):
    question = registry.get("initialization")

    def with_payload(res):  # a claim's text and its cells' labels
        claims = question.claims(res)
        claims[0].text = PAYLOAD
        claims[0].cells = {f"{PAYLOAD} {label}": cell for label, cell in claims[0].cells.items()}
        return claims

    monkeypatch.setitem(registry.experiments(), "initialization", dataclasses.replace(question, claims=with_payload))
    out = planted(tmp_path)
    assert cli.main(["report", "--out", str(out)]) == 0
    md, page = ((out / "paper" / name).read_text() for name in ("report.md", "report.html"))
    assert md.count(SCRIPT) >= 6  # versions, commit, flags, caption, claim text, cell label
    tags = Tags(page).tags
    assert not [tag for tag, _ in tags if tag == "script"]
    assert not [attrs for _, attrs in tags if any(name.startswith("on") for name in attrs)]
    assert all(attrs["src"].startswith("data:image/png;base64,") for tag, attrs in tags if tag == "img")
    assert all(attrs.get("href", "#").startswith("#") for tag, attrs in tags if tag == "a")
    assert page.count("&lt;script&gt;alert(1)&lt;/script&gt;") >= 6
    assert '<a id="q1-claim-1"></a>' in page
