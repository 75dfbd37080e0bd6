"""Seaborn figures drawn from seed summaries, never from training.

Plot functions (`bands`, `intervals`, `lines`, `strips`, `category_grid`,
`verdict_grid`) take a frame and an optional Axes (a new figure sized for
the data when none is given) and return the Axes they drew on; `facets`
and `trajectories` lay out one such panel per value of a column and
return the whole matplotlib Figure. A `Figure`
couples the summary it draws with its drawing function, so the exact numbers
behind every plot are saved beside it as CSV and can be checked to
regenerate unchanged.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Callable
from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns
from matplotlib.colors import ListedColormap
from matplotlib.patches import Patch

from study.results import ResultsError, atomic_write

PALETTE = "colorblind"
BAYES_STYLE = {"color": "black", "linestyle": ":", "linewidth": 1.2}


@dataclasses.dataclass(frozen=True)
class Figure:
    name: str  # file stem: `<experiment>-<name>`
    caption: str
    data: pd.DataFrame  # the summary drawn
    draw: Callable[[pd.DataFrame], matplotlib.figure.Figure | matplotlib.axes.Axes]

    def render(self) -> matplotlib.figure.Figure:
        """The matplotlib figure `draw` makes of `data` (its Axes' figure for a single panel)."""
        drawn = self.draw(self.data)
        return drawn.figure if isinstance(drawn, matplotlib.axes.Axes) else drawn


def palette(levels) -> dict:
    """A distinct colour per level: the colour-blind palette's 10, else tab20's."""
    colors = sns.color_palette(PALETTE if len(levels) <= 10 else "tab20", len(levels))
    return dict(zip(levels, colors))


def bayes_line(ax, bayes: float | None) -> None:
    if bayes is not None:
        ax.axhline(bayes, **BAYES_STYLE, label=f"Bayes limit {bayes:.4f}")


def bands(summary: pd.DataFrame, x: str, hue: str, ax=None, *, dashed=(), bayes=None):
    """Mean curves with their 95% bands, one per level of `hue`; levels in
    `dashed` are drawn dashed (e.g. constant initializations)."""
    ax = ax or plt.gca()
    levels = list(dict.fromkeys(summary[hue]))
    colors = palette(levels)
    for level in levels:
        part = summary[summary[hue] == level].sort_values(x)
        ax.plot(part[x], part["mean"], color=colors[level], label=level,
                linestyle="--" if level in dashed else "-")
        ax.fill_between(part[x], part["lo"], part["hi"], color=colors[level], alpha=0.15, linewidth=0)
    bayes_line(ax, bayes)
    ax.set_xlabel(x)
    return ax


def intervals(summary: pd.DataFrame, y: str, hue: str, ax=None, *, bayes=None):
    """Horizontal means with 95% error bars: one row per level of `y`, dodged by `hue`."""
    ax = ax or plt.gca()
    rows = list(dict.fromkeys(summary[y]))
    levels = list(dict.fromkeys(summary[hue]))
    colors = palette(levels)
    step = 0.7 / max(len(levels), 1)
    for j, level in enumerate(levels):
        part = summary[summary[hue] == level]
        pos = part[y].map(rows.index) + (j - (len(levels) - 1) / 2) * step
        ax.errorbar(part["mean"], pos, xerr=[part["mean"] - part["lo"], part["hi"] - part["mean"]],
                    fmt="o", color=colors[level], label=level, capsize=2, markersize=4)
    ax.set_yticks(range(len(rows)), rows)
    ax.invert_yaxis()
    if bayes is not None:
        ax.axvline(bayes, **BAYES_STYLE, label=f"Bayes limit {bayes:.4f}")
    return ax


def trajectories(data: pd.DataFrame, panel: str, *, ylabel: str, title: str = "{}", width: float = 4.0,
                 sharey: bool = False) -> matplotlib.figure.Figure:
    """The sources' weight plot: one panel per level of `panel`, one line per
    `weight_index` of its `value` over `epoch`."""
    levels = list(dict.fromkeys(data[panel]))
    fig, axes = plt.subplots(1, len(levels), figsize=(width * len(levels), 3.4), sharey=sharey, squeeze=False)
    for ax, level in zip(axes[0], levels):
        for _, w in data[data[panel] == level].groupby("weight_index"):
            ax.plot(w["epoch"], w["value"], linewidth=0.7, alpha=0.8)
        ax.set_title(title.format(level))
        ax.set_xlabel("epoch")
    axes[0][0].set_ylabel(ylabel)
    fig.tight_layout()
    return fig


def facets(summary: pd.DataFrame, col: str, plot: Callable, *, ylabel: str, width: float = 4.2,
           height: float = 3.6, sharey: bool = True, **kwargs) -> matplotlib.figure.Figure:
    """One panel per level of `col`, each drawn by `plot(part, ax=ax, **kwargs)`,
    with one shared legend to the right."""
    levels = list(dict.fromkeys(summary[col]))
    fig, axes = plt.subplots(1, len(levels), figsize=(width * len(levels) + 1.8, height),
                             sharey=sharey, squeeze=False)
    for ax, level in zip(axes[0], levels):
        plot(summary[summary[col] == level], ax=ax, **kwargs)
        ax.set_title(f"{col} = {level}")
    axes[0][0].set_ylabel(ylabel)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    fig.tight_layout()
    return fig


def lines(data: pd.DataFrame, *, x: str, y: str, hue: str, ylim=None, ax=None) -> matplotlib.axes.Axes:
    """One marked line per level of `hue` (values without seeds to summarise)."""
    ax = ax or plt.subplots(figsize=(5.5, 3.6))[1]
    sns.lineplot(data, x=x, y=y, hue=hue, marker="o", ax=ax, palette=palette(list(dict.fromkeys(data[hue]))))
    ax.set_ylim(ylim)
    ax.figure.tight_layout()
    return ax


def strips(data: pd.DataFrame, *, x: str, y: str, hue: str, bounds=(), xlabel: str, ax=None) -> matplotlib.axes.Axes:
    """One dot per row along `x`, a row of dots per level of `y`, coloured
    by `hue`; dashed lines at `bounds` (e.g. a check's limits)."""
    levels = [str(level) for level in sorted(data[hue].unique())]  # one distinct colour per level, in order
    data = data.assign(**{hue: data[hue].astype(str)})
    ax = ax or plt.subplots(figsize=(6.5, 0.35 * data[y].nunique() + 1.6))[1]
    sns.swarmplot(data, x=x, y=y, hue=hue, hue_order=levels, palette=dict(zip(levels, sns.color_palette(
        "viridis", len(levels)))), size=4, ax=ax)  # deterministic, unlike a jittered strip plot
    for bound in bounds:
        ax.axvline(bound, color="grey", linestyle="--", linewidth=1)
    ax.set_xlabel(xlabel)
    ax.legend(title=hue, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    ax.figure.tight_layout()
    return ax


def category_grid(categories: pd.DataFrame, notes: pd.DataFrame, *, xlabel: str, ylabel: str,
                  width: float = 2.2, height: float = 1.0, colors: dict | None = None,
                  ax=None) -> matplotlib.axes.Axes:
    """A heatmap of categories (e.g. the best strategy per cell), each cell
    coloured by its category (`colors`, else a palette) and annotated with
    its `notes` text."""
    levels = sorted(set(categories.to_numpy().ravel()))
    colors = colors or palette(levels)
    rows, cols = categories.shape
    ax = ax or plt.subplots(figsize=(width * cols + 2.5, height * rows + 1.2))[1]
    sns.heatmap(categories.map(levels.index), annot=notes, fmt="", cbar=False, ax=ax, linewidths=1,
                cmap=ListedColormap([colors[level] for level in levels]), vmin=-0.5, vmax=len(levels) - 0.5,
                annot_kws={"fontsize": 8})
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    handles = [Patch(color=colors[level], label=level) for level in levels]
    ax.figure.legend(handles=handles, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    ax.figure.tight_layout()
    return ax


VERDICT_COLORS = {"reproduced": "#4daf4a", "contradicted": "#e41a1c", "tie": "#80b1d3", "split": "#ffbf47",
                  "inconclusive": "#bdbdbd", "not read": "#ffffff"}


def verdict_grid(data: pd.DataFrame, ax=None) -> matplotlib.axes.Axes:
    """A specification curve (`claims.specification_frame`): each claim's
    verdict (a row) under each analysis choice (a column), in fixed colours."""
    grid = data.pivot(index="claim", columns="choice", values="verdict")
    grid = grid.loc[list(dict.fromkeys(data["claim"])), list(dict.fromkeys(data["choice"]))].fillna("not read")
    grid.index = [label if len(label) <= 90 else label[:87] + "..." for label in grid.index]
    ax = category_grid(grid, grid.replace("not read", ""), xlabel="analysis choice", ylabel="claim",
                       width=max(1.3, 10 / grid.shape[1]), height=0.45, colors=VERDICT_COLORS, ax=ax)  # room for labels
    ax.tick_params(axis="x", labelrotation=30)
    ax.figure.tight_layout()
    return ax


def csv_text(figure: Figure) -> str:
    """Exactly what the figure draws, as the CSV written beside it."""
    return figure.data.to_csv(index=False, float_format="%.6g")


def captions_path(experiment: str, out: Path) -> Path:
    return Path(out) / "figures" / f"{experiment}-captions.json"


def save_captions(figures: list[Figure], experiment: str, out: Path, write_id: str) -> Path:
    """`figures/<experiment>-captions.json`: each figure's file stem and
    caption, in order, for the report (which never recomputes a figure),
    and the write id of the results they were drawn from."""
    path = captions_path(experiment, out)
    captions = {"write_id": write_id, "captions": [[f"{experiment}-{f.name}", f.caption] for f in figures]}
    atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(captions, indent=1) + "\n"))
    return path


def load_captions(experiment: str, out: Path) -> tuple[str, list[tuple[str, str]]]:
    """The write id the figures were drawn from and their (stem, caption)
    pairs, or a one-line ResultsError for a missing or malformed file."""
    path = captions_path(experiment, out)
    if not path.is_file():
        raise ResultsError(f"no figure captions {path}; run `study figures {experiment} --out {out}` first")
    try:
        data = json.loads(path.read_text())
        pairs = [(stem, caption) for stem, caption in data["captions"]]
        valid = isinstance(data["write_id"], str) and all(
            isinstance(caption, str) and re.fullmatch(rf"{re.escape(experiment)}-[\w-]+", stem)
            for stem, caption in pairs)
    except (OSError, UnicodeDecodeError, ValueError, TypeError, KeyError):
        valid = False
    if not valid:
        raise ResultsError(f"{path} is not a captions file of this package; run `study figures {experiment} "
                           f"--out {out}` again")
    return data["write_id"], pairs


def read_captions(experiment: str, out: Path) -> list[tuple[str, str]]:
    return load_captions(experiment, out)[1]


def save(figure: Figure, experiment: str, out: Path) -> list[Path]:
    """Write `figures/<experiment>-<name>.{png,svg,csv}` under `out`."""
    stem = Path(out) / "figures" / f"{experiment}-{figure.name}"
    with sns.axes_style("whitegrid"), sns.plotting_context("notebook", font_scale=0.9):
        fig = figure.render()
    paths = []
    with plt.rc_context({"svg.hashsalt": figure.name}):  # stable SVG ids: reruns leave files unchanged
        for suffix, kwargs in [(".png", {"dpi": 150}), (".svg", {"metadata": {"Date": None}})]:
            path = stem.with_suffix(suffix)
            atomic_write(path, lambda tmp, kw=kwargs, s=suffix: fig.savefig(
                tmp, format=s[1:], bbox_inches="tight", **kw))
            paths.append(path)
    plt.close(fig)
    csv = stem.with_suffix(".csv")
    atomic_write(csv, lambda tmp: Path(tmp).write_text(csv_text(figure)))
    return [*paths, csv]
