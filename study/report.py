"""The report: a section per question, built from parquet results only.

Each experiment turns its frame into a `Section` (claims with their cells,
tables, figure references); this module renders sections to Markdown and a
standalone HTML file with the figures embedded. Nothing here trains, and
nothing is typed by hand: every number comes from the results.
"""

from __future__ import annotations

import base64
import dataclasses
import re
from collections.abc import Callable
from pathlib import Path

import markdown
import pandas as pd

from study import stats
from study.results import ResultsError, atomic_write


@dataclasses.dataclass(frozen=True)
class Cell:
    label: str  # e.g. "stated / relu"
    interval: stats.Interval
    verdict: str


@dataclasses.dataclass(frozen=True)
class Claim:
    source: str
    text: str
    source_number: str  # the source's own number, or "none given"
    statistic: str  # what we measure, and the threshold that decides
    cells: list[Cell]
    fmt: Callable[[stats.Interval], str]

    @property
    def verdict(self) -> str:
        return stats.overall_verdict([c.verdict for c in self.cells])


@dataclasses.dataclass(frozen=True)
class Section:
    title: str
    intro: str
    claims: list[Claim]
    figures: list[tuple[str, str]]  # (file stem, caption)
    tables: list[tuple[str, pd.DataFrame]]  # (caption, table)
    notes: str = ""


def markdown_table(frame: pd.DataFrame) -> str:
    cols = [str(c) for c in frame.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines)


def claims_table(claims: list[Claim]) -> str:
    rows = pd.DataFrame([{
        "#": i, "source": c.source, "claim": c.text, "source's number": c.source_number,
        "our measurement (cells reproduced / decided / all)": (
            f"{sum(x.verdict == 'reproduced' for x in c.cells)} / "
            f"{sum(x.verdict != 'inconclusive' for x in c.cells)} / {len(c.cells)}"),
        "verdict": f"**{c.verdict}**"} for i, c in enumerate(claims, 1)])
    return markdown_table(rows)


def claim_detail(i: int, claim: Claim) -> str:
    rows = pd.DataFrame([{"cell": c.label, "mean [95% CI]": claim.fmt(c.interval), "n": c.interval.n,
                          "verdict": c.verdict} for c in claim.cells])
    return (f"**Claim {i}. {claim.text}** ({claim.source}). Statistic: {claim.statistic} "
            f"Verdict: **{claim.verdict}**.\n\n{markdown_table(rows)}\n")


def model_table(metadata: dict) -> str:
    """The layer table of each distinct model of an experiment (S-tricks'
    "visualize the model"), read from the results' metadata."""
    seen, parts = set(), []
    for program in metadata["programs"]:
        rows = pd.DataFrame(program["model"])
        key = rows.to_json()
        if key in seen:
            continue
        seen.add(key)
        rows["kernel"] = rows["kernel"].map(lambda s: " x ".join(map(str, s)))
        rows["bias"] = rows["bias"].map(lambda s: " x ".join(map(str, s)))
        total = int(rows["params"].sum())
        users = [p["label"] for p in metadata["programs"] if pd.DataFrame(p["model"]).to_json() == key]
        parts.append(f"Model of {', '.join(users)} ({total:,} parameters):\n\n{markdown_table(rows)}\n")
    return "\n".join(parts)


def provenance(metadata: dict) -> str:
    dev, cfg = metadata["devices"], metadata["config"]
    timing = "; ".join(f"{p['label']}: {p['runs']} runs, compile {p['compile_s']:.1f} s, "
                       f"train {p['train_s']:.1f} s" for p in metadata["programs"])
    versions = ", ".join(f"{k} {v}" for k, v in metadata["versions"].items())
    return (f"Run with {cfg['seeds']} seeds{' (quick)' if cfg['quick'] else ''} on "
            f"{dev['count']} x {dev['kind']} ({dev['platform']}), XLA flags `{dev['xla_flags']}`; "
            f"wall time {metadata['wall_time_s']:.1f} s ({timing}). Commit `{metadata['git_commit']}`; "
            f"{versions}.")


def render_section(number: int, section: Section, metadata: dict) -> str:
    parts = [f"## Q{number}. {section.title}\n", section.intro, "\n### Claims and verdicts\n",
             claims_table(section.claims), ""]
    parts += [claim_detail(i, c) for i, c in enumerate(section.claims, 1)]
    for stem, caption in section.figures:
        parts.append(f"![{caption}](../figures/{stem}.png)\n\n*Figure {stem}: {caption}*\n")
    for caption, table in section.tables:
        parts.append(f"{caption}\n\n{markdown_table(table)}\n")
    if section.notes:
        parts.append(section.notes)
    parts += ["### Model\n", model_table(metadata), "### Provenance\n", provenance(metadata), ""]
    return "\n".join(parts)


def render(sections: list[tuple[Section, dict]]) -> str:
    head = ("# Deep-learning details, re-measured\n\n"
            "Each claim of the sources stands beside our measurement, its 95% confidence "
            "interval over seeds and a verdict. Generated by `study report` from the parquet "
            "files in `results/`; no number here is typed by hand.\n\n"
            f"**Verdict rule.** {stats.VERDICT_RULE}\n")
    body = [render_section(i, s, m) for i, (s, m) in enumerate(sections, 1)]
    return "\n".join([head, *body])


def to_html(md: str, base: Path) -> str:
    """Standalone HTML: Markdown rendered, figures embedded as data URIs."""

    def embed(match):
        path = (base / match.group(1)).resolve()
        if not path.is_file():
            raise ResultsError(f"missing figure {path}; run `study figures` first")
        return f'src="data:image/png;base64,{base64.b64encode(path.read_bytes()).decode()}"'

    body = markdown.markdown(md, extensions=["tables"])
    body = re.sub(r'src="([^"]+\.png)"', embed, body)
    style = ("body{font-family:sans-serif;max-width:70em;margin:auto;padding:1em;line-height:1.4}"
             "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #bbb;padding:.2em .5em}"
             "img{max-width:100%}")
    return (f"<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>Study report</title>"
            f"<style>{style}</style></head><body>\n{body}\n</body></html>\n")


def write(md: str, out: Path) -> list[Path]:
    paper = Path(out) / "paper"
    html = to_html(md, paper)
    md_path, html_path = paper / "report.md", paper / "report.html"
    atomic_write(md_path, lambda tmp: Path(tmp).write_text(md))
    atomic_write(html_path, lambda tmp: Path(tmp).write_text(html))
    return [md_path, html_path]
