"""PNG figures of one track's ranking, rendered with Agg through the Figure API (no pyplot state).

* blob plot: per task (and the final ranking) the distribution of bootstrap ranks per entry -
  disc area = how often the entry got that rank, cross = median, bar = 2.5-97.5 %;
* significance map: per task and metric, a dark cell where the row entry is significantly
  better than the column entry (one-sided, Holm-corrected), with a legend of the three cell kinds;
* rank heat map: entries x tasks, colour and number = rank; each number is written in black or
  white, whichever contrasts more with its cell (WCAG contrast ratio, at least 4.5 for any colour).

Every rank axis (the blob plots' y axes, the heat map's colour bar) shows whole ranks only.
``*_figure`` builds the figure (tests inspect it), the function of the plain name returns its PNG
bytes; entries are ordered best first.
"""

from __future__ import annotations

import io

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import ListedColormap, Normalize, to_rgb
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator

from harness.leaderboard.ranking import TrackRanking
from harness.leaderboard.stability import PairwiseTests, TrackStability

#: Above this many entries the tick labels would overlap: they are left out.
MAX_LABELLED_ENTRIES = 60


#: Significance map cells: not significant, significant (row better than column), the diagonal.
SIGNIFICANCE_COLOURS = ("#f2f2f2", "#1f4e79", "#b3b3b3")


def relative_luminance(colour) -> float:
    """WCAG 2 relative luminance of a matplotlib colour (0 black .. 1 white)."""
    channels = np.asarray(to_rgb(colour))
    linear = np.where(channels <= 0.04045, channels / 12.92, ((channels + 0.055) / 1.055) ** 2.4)
    return float(linear @ np.array([0.2126, 0.7152, 0.0722]))


def contrast_ratio(a, b) -> float:
    """WCAG 2 contrast ratio of two colours, 1 (none) .. 21 (black on white)."""
    la, lb = sorted((relative_luminance(a), relative_luminance(b)), reverse=True)
    return (la + 0.05) / (lb + 0.05)


def text_colour(background) -> str:
    """Black or white, whichever is more readable on ``background`` (the ratio is >= 4.58 for any
    colour, above WCAG's 4.5 for normal text)."""
    return "black" if contrast_ratio("black", background) >= contrast_ratio("white", background) else "white"


def _whole_ranks(axis) -> None:
    """Ticks at whole ranks only (a rank of 1.5 does not exist)."""
    axis.set_major_locator(MaxNLocator(integer=True))


def _png(fig: Figure) -> bytes:
    FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    return buffer.getvalue()


def _order(ranks: np.ndarray, entries: tuple[str, ...]) -> np.ndarray:
    return np.lexsort((np.asarray(entries), ranks))


def _entry_axis(ax, entries: list[str], axis: str = "x") -> None:
    if len(entries) > MAX_LABELLED_ENTRIES:
        getattr(ax, f"set_{axis}ticks")([])
        return
    getattr(ax, f"set_{axis}ticks")(range(len(entries)))
    getattr(ax, f"set_{axis}ticklabels")(entries, rotation=90 if axis == "x" else 0, fontsize=7)


def blob_plot(ranking: TrackRanking, stability: TrackStability) -> bytes:
    return _png(blob_plot_figure(ranking, stability))


def blob_plot_figure(ranking: TrackRanking, stability: TrackStability) -> Figure:
    entries = ranking.track.entries
    panels = [(t.task.task, t.rank, s.ranks, s.note) for t, s in zip(ranking.tasks, stability.tasks)]
    panels.append(("final", ranking.final_rank, stability.final_ranks, ""))
    width = max(6.0, 0.22 * len(entries) + 2)
    fig = Figure(figsize=(width, 2.8 * len(panels)), layout="constrained")
    axes = fig.subplots(len(panels), 1, squeeze=False)[:, 0]
    for ax, (title, full, boot, note) in zip(axes, panels):
        order = _order(full, entries)
        for x, e in enumerate(order):
            if boot.shape[0]:
                values, counts = np.unique(boot[:, e], return_counts=True)
                ax.scatter(
                    np.full(values.shape, x),
                    values,
                    s=120 * counts / boot.shape[0],
                    color="tab:blue",
                    alpha=0.6,
                    linewidths=0,
                )
                lo, median, hi = np.percentile(boot[:, e], (2.5, 50, 97.5), method="inverted_cdf")
                ax.plot([x, x], [lo, hi], color="black", linewidth=0.8)
                ax.plot([x], [median], marker="x", color="black", markersize=5)
            ax.plot([x], [full[e]], marker="_", color="tab:red", markersize=9)
        ax.set_ylim(len(entries) + 0.5, 0.5)
        _whole_ranks(ax.yaxis)
        ax.set_ylabel("rank")
        ax.set_title(f"{title}{' (' + note + ')' if note else ''}", fontsize=9)
        _entry_axis(ax, [entries[e] for e in order])
    fig.suptitle(f"{ranking.track.track}: bootstrap ranks (N={stability.n_bootstrap}); red = full-data rank")
    return fig


def significance_map(ranking: TrackRanking, tests: list[PairwiseTests]) -> bytes:
    return _png(significance_map_figure(ranking, tests))


def significance_map_figure(ranking: TrackRanking, tests: list[PairwiseTests]) -> Figure:
    entries = ranking.track.entries
    task_rank = {t.task.task: t.rank for t in ranking.tasks}
    n_cols = min(3, max(1, len(tests)))
    n_rows = max(1, -(-len(tests) // n_cols))
    side = max(3.5, 0.12 * len(entries) + 2)
    fig = Figure(figsize=(side * n_cols, side * n_rows + 0.6), layout="constrained")
    axes = fig.subplots(n_rows, n_cols, squeeze=False).ravel()
    cmap = ListedColormap(list(SIGNIFICANCE_COLOURS))
    for ax in axes[len(tests) :]:
        ax.set_axis_off()
    for ax, test in zip(axes, tests):
        order = _order(task_rank[test.task], entries)
        cells = test.significant[np.ix_(order, order)].astype(float)
        np.fill_diagonal(cells, 2.0)
        ax.imshow(cells, cmap=cmap, vmin=0, vmax=2, interpolation="nearest")
        names = [entries[e] for e in order]
        _entry_axis(ax, names, "x")
        _entry_axis(ax, names, "y")
        ax.set_xlabel("column entry", fontsize=7)
        ax.set_ylabel("row entry", fontsize=7)
        ax.set_title(f"{test.task} / {test.metric}\n{test.method}", fontsize=8)
    alpha = f"Holm-corrected, alpha {tests[0].alpha}" if tests else "Holm-corrected"
    labels = ("not significant", "row significantly better than column", "same entry")
    handles = [
        Patch(facecolor=colour, edgecolor="#666666", label=label) for colour, label in zip(SIGNIFICANCE_COLOURS, labels)
    ]
    fig.legend(handles=handles, loc="outside lower center", ncols=3, fontsize=8, frameon=False)
    fig.suptitle(f"{ranking.track.track}: row significantly better than column (one-sided, {alpha})")
    return fig


def rank_heatmap(ranking: TrackRanking) -> bytes:
    return _png(rank_heatmap_figure(ranking))


def rank_heatmap_figure(ranking: TrackRanking) -> Figure:
    entries = ranking.track.entries
    order = _order(ranking.final_rank, entries)
    columns = [t.task.task for t in ranking.tasks] + ["final"]
    matrix = np.column_stack([t.rank for t in ranking.tasks] + [ranking.final_rank])[order]
    fig = Figure(figsize=(max(4.0, 0.9 * len(columns) + 2), max(3.0, 0.25 * len(entries) + 1.5)), layout="constrained")
    ax = fig.subplots()
    norm = Normalize(vmin=1, vmax=max(1, len(entries)))
    image = ax.imshow(matrix, cmap="viridis_r", norm=norm, aspect="auto")
    ax.set_xticks(range(len(columns)))
    ax.set_xticklabels(columns, rotation=45, ha="right", fontsize=8)
    _entry_axis(ax, [entries[e] for e in order], "y")
    if matrix.size <= 1500:
        size = 8 if len(entries) <= 30 else 6
        for (row, col), value in np.ndenumerate(matrix):
            colour = text_colour(image.cmap(norm(value)))
            ax.text(col, row, f"{value:g}", ha="center", va="center", fontsize=size, color=colour)
    colorbar = fig.colorbar(image, ax=ax, label="rank")
    _whole_ranks(colorbar.ax.yaxis)
    colorbar.ax.invert_yaxis()  # rank 1 (best) on top, as in the rows
    ax.set_title(f"{ranking.track.track}: ranks per task ({ranking.scheme})")
    return fig
