"""The report: a section per question, built from parquet results only.

Each experiment turns its frame into a `Section` (claims as specs with
their cells' per-seed values, tables, figure references); `stats.evaluate`
turns every claim into intervals and verdicts, and this module renders the
sections to Markdown, a standalone HTML file with the figures embedded and
`claims.csv`, one row per claim and cell. Every claim has a citable id,
`q<question>-claim-<number>`, and an anchor of that name in the HTML.
Nothing here trains, and nothing is typed by hand: every number comes from
the results.
"""

from __future__ import annotations

import base64
import dataclasses
import functools
import re
import xml.etree.ElementTree
from pathlib import Path

import markdown
import markdown.inlinepatterns
import markdown.treeprocessors
import pandas as pd

from study import stats
from study.results import ResultsError, atomic_write


@dataclasses.dataclass(eq=False)
class Claim:
    """A claim as data: what the source says, what we measure, and per cell
    (label -> per-seed values, paired where two arms are compared; or a
    `stats.Interval` measured once) the statistic that decides it."""

    source: str
    text: str
    source_number: str  # the source's own number, or "none given"
    statistic: str  # what we measure, and the threshold that decides
    cells: dict[str, object]
    threshold: float
    claimed: str  # "above" or "below" the threshold
    unit: stats.Unit
    design_check: bool = False  # a check of the study's own design, not a source's claim
    # The same statistic under other analysis choices the sources never fixed
    # (label such as "budget 50%" -> cells): its specification curve.
    choices: dict[str, dict[str, object]] = dataclasses.field(default_factory=dict)

    @functools.cached_property
    def result(self) -> stats.Evaluation:
        return stats.evaluate(self.cells, self.threshold, self.claimed)

    @functools.cached_property
    def moved(self) -> dict[float, str]:
        """The verdict at the threshold moved either way by the unit's tolerance."""
        return stats.robustness(self.result, self.threshold, self.claimed, self.unit.tolerance)

    @functools.cached_property
    def alternatives(self) -> dict[str, str]:
        """The verdict under each of `choices`."""
        return {label: stats.verdict_of(cells, self.threshold, self.claimed) for label, cells in self.choices.items()}

    @property
    def robust(self) -> str:
        """"robust" when moving the threshold and every other analysis choice
        keep the verdict, else "depends on" the ones that change it."""
        verdict = self.result.verdict
        changed = (["the threshold"] if set(self.moved.values()) != {verdict} else []) + \
            [label for label, other in self.alternatives.items() if other != verdict]
        return "robust" if not changed else "depends on " + ", ".join(changed)


@dataclasses.dataclass(frozen=True)
class Section:
    title: str
    intro: str
    claims: list[Claim]
    tables: list[tuple[str, pd.DataFrame]]  # (caption, table)
    notes: str = ""


def prose(template: Path, **values) -> dict[str, str]:
    """A question's text by part ("intro", "notes"): the Markdown file
    `template`, its parts after `<!-- part -->` lines, with `{name}` fields
    filled from `values` (numbers the results give)."""
    parts = re.split(r"^<!-- (\w+) -->\n", Path(template).read_text(), flags=re.M)[1:]
    return {name: text.strip().format(**values) + "\n" for name, text in zip(parts[::2], parts[1::2])}


def markdown_table(frame: pd.DataFrame) -> str:
    cols = [str(c) for c in frame.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines)


def claim_id(question: int, i: int) -> str:
    return f"q{question}-claim-{i}"


def verdict_text(claim: Claim) -> str:
    result = claim.result
    return f"**{result.verdict}**" + (" (fragile)" if result.fragile else "")


def claims_table(question: int, claims: list[Claim]) -> str:
    rows = pd.DataFrame([{
        "#": f"[{i}](#{claim_id(question, i)})",
        "source": "design check" if c.design_check else c.source, "claim": c.text,
        "source's number": c.source_number,
        "cells reproduced / decided / all": (
            f"{sum(x.verdict == 'reproduced' for x in c.result.cells)} / "
            f"{sum(x.verdict != 'inconclusive' for x in c.result.cells)} / {len(c.result.cells)}"),
        "verdict": verdict_text(c), "stability": f"{c.result.stability:.0%}",
        "robustness": c.robust} for i, c in enumerate(claims, 1)])
    return markdown_table(rows)


def claim_detail(question: int, i: int, claim: Claim) -> str:
    result = claim.result
    rows = pd.DataFrame([{"cell": c.label, f"mean [{result.level:.1%} CI]": claim.unit.format(c.interval),
                          "n": c.interval.n, "verdict": c.verdict} for c in result.cells])
    kind = "Design check" if claim.design_check else "Claim"
    return (f'<a id="{claim_id(question, i)}"></a>\n\n**{kind} {i}. {claim.text}** ({claim.source}). '
            f"Statistic: {claim.statistic} Verdict: {verdict_text(claim)}, kept in "
            f"{result.stability:.0%} of seed resamples; {moved_text(claim)}.\n\n{markdown_table(rows)}\n")


def moved_text(claim: Claim) -> str:
    """The verdict at the threshold moved either way, in words."""
    at = [f"{verdict} at {claim.unit.format(stats.Interval(t, t, t, 1)).split(' [')[0]}"
          for t, verdict in claim.moved.items()]
    at += [f"{verdict} with {label}" for label, verdict in claim.alternatives.items()]
    return f"{claim.robust} ({', '.join(at)})"


def specification_frame(claims: list[Claim]) -> pd.DataFrame:
    """Per claim and analysis choice (as stated, the threshold moved either
    way by its tolerance, each of its other choices): the verdict, from the
    intervals alone. The data of a question's specification-curve figure."""
    rows = []
    for i, claim in enumerate(claims, 1):
        tolerance = claim.unit.tolerance
        thresholds = {"as stated": claim.threshold, "threshold lower": claim.threshold - tolerance,
                      "threshold higher": claim.threshold + tolerance}
        verdicts = {choice: stats.verdict_of(claim.cells, threshold, claim.claimed)
                    for choice, threshold in thresholds.items()}
        rows += [{"claim": f"{i}. {claim.text}", "choice": choice, "verdict": verdict}
                 for choice, verdict in {**verdicts, **claim.alternatives}.items()]
    return pd.DataFrame(rows)


def specification_table(claims: list[Claim]) -> pd.DataFrame | None:
    """Per claim with other analysis choices: its verdict under each (the
    specification curve as a table), or None when no claim has any."""
    if not any(c.choices for c in claims):
        return None
    rows = [{"#": i, "claim": c.text, "verdict": c.result.verdict, **c.alternatives}
            for i, c in enumerate(claims, 1) if c.choices]
    return pd.DataFrame(rows).fillna("")


def claims_frame(sections: list[tuple[int, Section]]) -> pd.DataFrame:
    """One row per claim and cell of each (question number, section): what a
    reader cites (`paper/claims.csv`)."""
    rows = []
    for question, section in sections:
        for i, claim in enumerate(section.claims, 1):
            result = claim.result
            for cell in result.cells:
                rows.append({"id": claim_id(question, i), "question": f"Q{question}",
                             "kind": "design check" if claim.design_check else "claim", "source": claim.source,
                             "claim": claim.text, "source_number": claim.source_number,
                             "statistic": claim.statistic, "threshold": claim.threshold,
                             "claimed": claim.claimed, "cell": cell.label, "estimate": cell.interval.mean,
                             "lo": cell.interval.lo, "hi": cell.interval.hi, "level": result.level,
                             "n": cell.interval.n, "cell_verdict": cell.verdict, "verdict": result.verdict,
                             "stability": result.stability, "fragile": result.fragile,
                             "robustness": claim.robust,
                             "other_choices": "; ".join(f"{k}: {v}" for k, v in claim.alternatives.items()),
                             **{f"verdict_at_{side}": v for side, v in zip(("lower", "upper"), claim.moved.values())}})
    return pd.DataFrame(rows)


def summary(sections: list[tuple[int, Section]]) -> str:
    """Verdict counts per question, the fragile verdicts named, and how many verdicts are robust."""
    rows = []
    for question, section in sections:
        verdicts = [c.result.verdict for c in section.claims]
        fragile = [f"[{i}](#{claim_id(question, i)})" for i, c in enumerate(section.claims, 1) if c.result.fragile]
        rows.append({"question": f"[Q{question}. {section.title}](#q{question})",
                     **{v: verdicts.count(v) for v in stats.VERDICTS}, "fragile": ", ".join(fragile) or "none",
                     "robust": sum(c.robust == "robust" for c in section.claims)})
    return markdown_table(pd.DataFrame(rows))


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


def render_section(number: int, section: Section, metadata: dict, figures: list[tuple[str, str]]) -> str:
    parts = [f'<a id="q{number}"></a>\n\n## Q{number}. {section.title}\n', section.intro,
             "\n### Claims and verdicts\n", claims_table(number, section.claims), ""]
    spec = specification_table(section.claims)
    if spec is not None:
        parts.append("**Specification curve.** Each claim's verdict under the analysis choices the sources never "
                     f"fixed (budget, thresholds, measures), beside its verdict as stated:\n\n{markdown_table(spec)}\n")
    parts += [claim_detail(number, i, c) for i, c in enumerate(section.claims, 1)]
    for stem, caption in figures:
        parts.append(f"![{caption}](../figures/{stem}.png)\n\n*Figure {stem}: {caption}*\n")
    for caption, table in section.tables:
        parts.append(f"{caption}\n\n{markdown_table(table)}\n")
    if section.notes:
        parts.append(section.notes)
    parts += ["### Model\n", model_table(metadata), "### Provenance\n", provenance(metadata), ""]
    return "\n".join(parts)


def render(sections: list[tuple[int, Section, dict, list[tuple[str, str]]]], missing: list[str] = ()) -> str:
    """Markdown from (question number, section, its results' metadata, its
    figures' stems and captions) per question; `missing` names experiments
    without results."""
    head = ("# Deep-learning details, re-measured\n\n"
            "Each claim of the sources stands beside our measurement, its confidence "
            "interval over seeds and a verdict. Generated by `study report` from the parquet "
            "files in `results/`; no number here is typed by hand. Every claim and cell is also "
            "in `claims.csv`; link a claim as `report.html#q4-claim-10`.\n\n"
            "[TOC]\n\n## Verdicts at a glance\n\n"
            f"{summary([(n, s) for n, s, _, _ in sections])}\n\n**Verdict rule.** {stats.VERDICT_RULE}\n")
    if missing:
        head += f"\n**Not in this report** (no results yet; `study run NAME`): {', '.join(missing)}.\n"
    body = [render_section(*section) for section in sections]
    return "\n".join([head, *body])


class NoRawHtml(markdown.Extension):
    """Every string of the report reaches HTML as text: raw HTML in the
    Markdown (from data, metadata, captions or prose) is escaped, links go
    only to anchors, the web and the figures; the report's own anchors
    `<a id="..."></a>` are the one tag kept."""

    ANCHOR = r'<a id="([\w-]+)"></a>'
    LINKS = ("#", "https://", "http://", "../figures/")

    class Anchor(markdown.inlinepatterns.InlineProcessor):
        def handleMatch(self, match, data):
            return xml.etree.ElementTree.Element("a", {"id": match.group(1)}), match.start(0), match.end(0)

    class SafeLinks(markdown.treeprocessors.Treeprocessor):
        def run(self, root):
            for element in root.iter():
                for attribute in ("href", "src"):
                    if not element.get(attribute, "#").startswith(NoRawHtml.LINKS):
                        del element.attrib[attribute]

    def extendMarkdown(self, md):
        md.preprocessors.deregister("html_block")
        md.inlinePatterns.deregister("html")
        md.inlinePatterns.register(self.Anchor(self.ANCHOR, md), "anchor", 90)
        md.treeprocessors.register(self.SafeLinks(md), "safe_links", 0)


def to_html(md: str, base: Path) -> str:
    """Standalone HTML: Markdown rendered with raw HTML escaped, figures
    embedded as data URIs."""

    def embed(match):
        path = (base / match.group(1)).resolve()
        if not path.is_file():
            raise ResultsError(f"missing figure {path}; run `study figures` first")
        return f'src="data:image/png;base64,{base64.b64encode(path.read_bytes()).decode()}"'

    body = markdown.markdown(md, extensions=["tables", "toc", NoRawHtml()])
    body = re.sub(r'src="(\.\./figures/[\w-]+\.png)"', embed, body)
    style = ("body{font-family:sans-serif;max-width:70em;margin:auto;padding:1em;line-height:1.4}"
             "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #bbb;padding:.2em .5em}"
             "img{max-width:100%}")
    return (f"<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>Study report</title>"
            f"<style>{style}</style></head><body>\n{body}\n</body></html>\n")


def write(md: str, claims: pd.DataFrame, out: Path) -> list[Path]:
    paper = Path(out) / "paper"
    html = to_html(md, paper)
    md_path, html_path, csv_path = paper / "report.md", paper / "report.html", paper / "claims.csv"
    atomic_write(md_path, lambda tmp: Path(tmp).write_text(md))
    atomic_write(html_path, lambda tmp: Path(tmp).write_text(html))
    atomic_write(csv_path, lambda tmp: claims.to_csv(tmp, index=False))
    return [md_path, html_path, csv_path]
