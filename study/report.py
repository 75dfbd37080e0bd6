"""The report: a section per question, rendered from evaluated claims.

Each question gives its evaluated claims (`study.claims`), the fields of
its text template and its tables (`study.question.Section`); this module
only renders them to Markdown, a standalone HTML file with the figures
embedded and `claims.csv`, one row per claim and cell. Every claim has a
citable id, `q<question>-claim-<number>`, and an anchor of that name in the
HTML. Nothing here trains or evaluates, and nothing is typed by hand: every
number comes from the results.
"""

from __future__ import annotations

import base64
import dataclasses
import re
import xml.etree.ElementTree
from pathlib import Path

import markdown
import markdown.inlinepatterns
import markdown.treeprocessors
import pandas as pd

from study import stats
from study.claims import Claim, claim_id, specification_table
from study.question import Question, Section
from study.results import ResultsError, atomic_write


@dataclasses.dataclass(frozen=True)
class Chapter:
    """One question's part of the report: all it is rendered from."""

    number: int
    question: Question
    claims: list[Claim]
    section: Section
    metadata: dict  # of its results
    figures: list[tuple[str, str]]  # (stem, caption)


def prose(template: Path, **values) -> dict[str, str]:
    """A question's text by part ("intro", "notes"): the Markdown file
    `template`, its parts after `<!-- part -->` lines, with `{name}` fields
    filled from `values` (numbers the results give)."""
    parts = re.split(r"^<!-- (\w+) -->\n", Path(template).read_text(), flags=re.M)[1:]
    return {name: text.strip().format(**values) + "\n" for name, text in zip(parts[::2], parts[1::2])}


def markdown_table(frame: pd.DataFrame) -> str:
    cols = [str(c) for c in frame.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join("" if pd.isna(v) else str(v) for v in row) + " |"  # blank: not measured
              for row in frame.itertuples(index=False)]
    return "\n".join(lines)


def verdict_text(claim: Claim) -> str:
    result = claim.result
    return f"**{result.verdict}**" + (" (fragile)" if result.fragile else "")


def claims_table(question: int, claims: list[Claim]) -> str:
    rows = pd.DataFrame([{
        "#": f"[{i}](#{claim_id(question, i)})", "source": "design check" if c.design_check else c.source,
        "claim": c.text, "source's number": c.source_number, "cells": len(c.result.cells),
        "verdict": verdict_text(c), "stability": f"{c.result.stability:.0%}",
        "robustness": c.robust} for i, c in enumerate(claims, 1)])
    return markdown_table(rows)


def claim_detail(question: int, i: int, claim: Claim) -> str:
    result, unit = claim.result, claim.unit
    rows = pd.DataFrame([{"cell": c.label, f"mean [{result.level:.1%} CI]": claim.shown(c.interval),
                          "n": c.interval.n,  # a cell measured once has no detectable effect
                          "detectable": unit.number(c.detectable) if pd.notna(c.detectable) else "",
                          "seeds for the tolerance": c.seeds_needed or "",
                          "verdict": c.verdict} for c in result.cells])
    return (f'<a id="{claim_id(question, i)}"></a>\n\n**{claim.kind.capitalize()} {i}. {claim.text}** ({claim.source}). '
            f"Statistic: {claim.statistic} Tie band: within {unit.number(unit.tolerance)} "
            f"of the threshold. Verdict: {verdict_text(claim)}, kept in {result.stability:.0%} of seed resamples; "
            f"{moved_text(claim)}.{where_text(claim)}\n\n{markdown_table(rows)}\n")


def where_text(claim: Claim) -> str:
    """Which cells give which verdict, for a claim whose cells differ."""
    cells = claim.result.cells
    if claim.result.kind != "split":
        return ""
    parts = [f"{verdict.capitalize()} in {', '.join(c.label for c in cells if c.verdict == verdict)}"
             for verdict in stats.VERDICTS if any(c.verdict == verdict for c in cells)]
    return " " + "; ".join(parts) + "."


def moved_text(claim: Claim) -> str:
    """The verdict at the threshold moved either way, in words."""
    at = [f"{verdict} at {claim.unit.number(t)}" for t, verdict in claim.moved.items()]
    at += [f"{verdict} with {label}" for label, verdict in claim.alternatives.items()]
    return f"{claim.robust} ({', '.join(at)})"


def summary(chapters: list[Chapter]) -> str:
    """Verdict counts per question, the fragile verdicts named, and how many verdicts are robust."""
    rows = []
    for chapter in chapters:
        number, claims = chapter.number, chapter.claims
        verdicts = [c.result.kind for c in claims]
        fragile = [f"[{i}](#{claim_id(number, i)})" for i, c in enumerate(claims, 1) if c.result.fragile]
        rows.append({"question": f"[Q{number}. {chapter.question.question}](#q{number})",
                     **{v: verdicts.count(v) for v in stats.VERDICTS}, "fragile": ", ".join(fragile) or "none",
                     "robust": sum(c.robust == "robust" for c in claims)})
    return markdown_table(pd.DataFrame(rows))


def seeds_table(chapters: list[Chapter]) -> str:
    """The power analysis per question: its seeds of each role, and how many
    of its claims' cells resolve their tolerance at `stats.POWER` (a
    detectable effect within the tie band) with the seeds they have."""
    rows = []
    for chapter in chapters:
        cells = [(c, cell) for c in chapter.claims if not c.design_check for cell in c.result.cells
                 if cell.seeds_needed]
        needed = pd.Series([cell.seeds_needed for _, cell in cells], dtype=float)
        config = chapter.metadata["config"]
        rows.append({"question": f"Q{chapter.number}", "tuning seeds": config["tuning_seeds"],
                     "evaluation seeds": config["seeds"], "cells": len(cells),
                     "resolve the tolerance": sum(cell.detectable <= c.unit.tolerance for c, cell in cells),
                     "seeds needed (median)": "" if needed.empty else int(needed.median()),
                     "(75th percentile)": "" if needed.empty else int(needed.quantile(0.75))})
    return markdown_table(pd.DataFrame(rows))


BASELINE = Path("paper") / "baseline-claims.csv"  # claims.csv of the results the last release published


def cell_key(cell: str) -> str:
    """A cell's name without its trailing note ("(vs scratch)": the rival it was compared with), which may change."""
    return re.sub(r" \([^)]*\)$", "", cell)


def changes(baseline: Path, table: pd.DataFrame) -> str:
    """The claims whose verdict differs from those in the `baseline` file
    (matched by id; "" without one), each with its cells whose verdict
    moved, shown before and after; why they moved is in each question's
    account of what its design changed."""
    if not baseline.is_file():
        return ""

    def by_claim(frame):
        return frame.assign(key=frame["cell"].map(cell_key)).groupby("id", sort=False)

    old, rows = dict(list(by_claim(pd.read_csv(baseline)))), []
    for cid, new in by_claim(table):
        before = old.get(cid)
        if before is None or before["verdict"].iloc[0] == new["verdict"].iloc[0]:
            continue
        cells = new.merge(before[["key", "shown", "cell_verdict"]], on="key", how="outer", suffixes=("", "_before"))
        moved = cells[cells["cell_verdict"].fillna("") != cells["cell_verdict_before"].fillna("")]
        rows.append({"claim": f"[{cid}](#{cid})", "text": new["claim"].iloc[0],
                     "before": before["verdict"].iloc[0], "now": new["verdict"].iloc[0],
                     "cells that moved": "; ".join(
                         f"{c.key}: {c.cell_verdict_before} {c.shown_before} -> {c.cell_verdict} {c.shown}"
                         for c in moved.astype(object).fillna("absent").itertuples()
                     ).replace("absent absent", "absent")})
    dropped = sorted(set(old) - set(table["id"]))
    head = (f"{len(rows)} of {table['id'].nunique()} verdicts differ from the baseline's"
            + (f"; claims no longer made: {', '.join(dropped)}" if dropped else "") + ".")
    return head + ("\n\n" + markdown_table(pd.DataFrame(rows)) if rows else "") + "\n"


FOUND = {"reproduced": "Holds", "contradicted": "Fails", "tie": "Ties", "inconclusive": "Too little data",
         "split": "Depends on the cell"}


def estimates(claim: Claim) -> str:
    """How large: the one cell's shown interval, or the range of the cells' means."""
    cells = claim.result.cells
    if len(cells) == 1:
        return claim.shown(cells[0].interval)
    means = sorted(c.interval.mean for c in cells)
    return f"{claim.unit.number(means[0])} to {claim.unit.number(means[-1])} over {len(cells)} cells"


def finding(number: int, i: int, claim: Claim, link: str) -> str:
    """A claim's answer in one line: what happened, how large, where to read more."""
    result = claim.result
    what = FOUND[result.kind]
    if result.kind == "tie":
        what += f" (no difference beyond {claim.unit.number(claim.unit.tolerance)})"
    elif result.kind == "split":
        what += f" ({result.verdict})"
    cited = claim_id(number, i)
    return f"- **{what}**: {claim.text} Measured: {estimates(claim)}; [{cited}]({link}{cited})."


def findings(chapters: list[Chapter], link: str = "#") -> str:
    """What we found, per question, from the evaluated claims: a line per
    source claim, the design checks counted; `link` prefixes each claim's anchor."""
    parts = []
    for chapter in chapters:
        numbered = list(enumerate(chapter.claims, 1))
        lines = [finding(chapter.number, i, c, link) for i, c in numbered if not c.design_check]
        checks = [(i, c) for i, c in numbered if c.design_check]
        if checks:
            failing = [f"[{claim_id(chapter.number, i)}]({link}{claim_id(chapter.number, i)})"
                       for i, c in checks if c.result.kind != "reproduced"]
            lines.append(f"- Design checks: {len(checks) - len(failing)} of {len(checks)} hold in every cell"
                         + (f"; see {', '.join(failing)} before citing the claims they guard." if failing else "."))
        parts.append(f"**Q{chapter.number}. {chapter.question.question}**\n\n" + "\n".join(lines) + "\n")
    return "\n".join(parts)


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


def render_section(chapter: Chapter) -> str:
    number, claims = chapter.number, chapter.claims
    text = prose(chapter.question.text, **chapter.section.fields)
    parts = [f'<a id="q{number}"></a>\n\n## Q{number}. {chapter.question.question}\n', text["intro"],
             "\n### Claims and verdicts\n", claims_table(number, claims), ""]
    spec = specification_table(claims)
    if spec is not None:
        parts.append("**Specification curve.** Each claim's verdict under the analysis choices the sources never "
                     f"fixed (budget, thresholds, measures), beside its verdict as stated:\n\n{markdown_table(spec)}\n")
    parts += [claim_detail(number, i, c) for i, c in enumerate(claims, 1)]
    for stem, caption in chapter.figures:
        parts.append(f"![{caption}](../figures/{stem}.png)\n\n*Figure {stem}: {caption}*\n")
    for caption, table in chapter.section.tables:
        parts.append(f"{caption}\n\n{markdown_table(table)}\n")
    if text.get("notes"):
        parts.append(text["notes"])
    metadata = chapter.metadata
    parts += ["### Model\n", model_table(metadata), "### Provenance\n", provenance(metadata), ""]
    return "\n".join(parts)


def render(chapters: list[Chapter], missing: list[str] = (), changed: str = "") -> str:
    """Markdown of every chapter; `missing` names experiments without results;
    `changed`, the verdicts that differ from the baseline's (`changes`)."""
    head = ("# Deep-learning details, re-measured\n\n"
            "Each claim of the sources stands beside our measurement, its confidence "
            "interval over seeds and a verdict. Generated by `study report` from the parquet "
            "files in `results/`; no number here is typed by hand. Every claim and cell is also "
            "in `claims.csv`; link a claim as `report.html#q4-claim-10`.\n\n"
            f"[TOC]\n\n## What we found\n\n{findings(chapters)}\n## Verdicts at a glance\n\n"
            f"{summary(chapters)}\n\n**Verdict rule.** {stats.VERDICT_RULE}\n\n**Seeds.** Every choice is made "
            "on the tuning seeds, every interval reads the evaluation seeds. Per question, of its claims' cells "
            f"measured over seeds: how many resolve their tolerance with {stats.POWER:.0%} power at their level "
            "(detectable effect within the tie band), and the seeds that would (from each cell's own spread):\n\n"
            f"{seeds_table(chapters)}\n")
    if changed:
        head += (f"\n## Verdicts changed since the baseline\n\nAgainst `{BASELINE.as_posix()}`, the claims of the "
                 "previous published results; each question's section says what its design changed. "
                 f"{changed}")
    if missing:
        head += f"\n**Not in this report** (no results yet; `study run NAME`): {', '.join(missing)}.\n"
    return "\n".join([head, *map(render_section, chapters)])


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
    # A wide table scrolls inside its own box, so the page itself fits its window.
    style = ("body{font-family:sans-serif;max-width:70em;margin:auto;padding:1em;line-height:1.4}"
             "table{border-collapse:collapse;margin:1em 0;display:block;max-width:100%;overflow-x:auto}"
             "td,th{border:1px solid #bbb;padding:.2em .5em}"
             "img{max-width:100%}")
    return (f"<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>Study report</title>"
            f"<style>{style}</style></head><body>\n{body}\n</body></html>\n")


def readme_mark(block: str) -> tuple[str, str]:
    """The comments around a README block `study report` writes ("findings", "cost")."""
    return f"<!-- {block}: written by `study report` -->\n", f"<!-- end of {block} -->\n"


def readme_with(blocks: dict[str, str], readme: str) -> str:
    """`readme` with each of its marked `blocks` replaced (a block without its marks is left out)."""
    for block, text in blocks.items():
        start, end = readme_mark(block)
        if start in readme and end in readme:
            head, rest = readme.split(start, 1)
            readme = head + start + "\n" + text + "\n" + end + rest.split(end, 1)[1]
    return readme


def write(md: str, claims: pd.DataFrame, out: Path, readme_blocks: dict[str, str] | None = None) -> list[Path]:
    """The report, its HTML and claims.csv under `out/paper`; with
    `readme_blocks`, also those blocks of `out/README.md` where it has their marks."""
    paper = Path(out) / "paper"
    html = to_html(md, paper)
    md_path, html_path, csv_path = paper / "report.md", paper / "report.html", paper / "claims.csv"
    atomic_write(md_path, lambda tmp: Path(tmp).write_text(md))
    atomic_write(html_path, lambda tmp: Path(tmp).write_text(html))
    atomic_write(csv_path, lambda tmp: claims.to_csv(tmp, index=False))
    readme = Path(out) / "README.md"
    if readme_blocks and readme.is_file() and readme_with(readme_blocks, readme.read_text()) != readme.read_text():
        atomic_write(readme, lambda tmp: Path(tmp).write_text(readme_with(readme_blocks, readme.read_text())))
        return [md_path, html_path, csv_path, readme]
    return [md_path, html_path, csv_path]


def cost_table(chapters: list[Chapter], out: Path) -> str:
    """What each experiment's committed run cost, from its metadata: runs
    per role, wall time, compile time and programs, and its files on disk."""
    rows = []
    for chapter in chapters:
        meta, name = chapter.metadata, chapter.question.name
        files = sorted(Path(out, "results").glob(f"{name}[.-]*"))
        rows.append({"experiment": name, "seeds (tune + evaluate)": f"{meta['config']['tuning_seeds']} + "
                     f"{meta['config']['seeds']}", "runs": f"{sum(p['runs'] for p in meta['programs']):,}",
                     "wall time": f"{meta['wall_time_s']:.0f} s",
                     "of which compiling": f"{sum(p['compile_s'] for p in meta['programs']):.0f} s "
                                           f"({len(meta['programs'])} programs)",
                     "files": f"{sum(f.stat().st_size for f in files) / 1e6:.1f} MB ({len(files)})"})
    return markdown_table(pd.DataFrame(rows))
