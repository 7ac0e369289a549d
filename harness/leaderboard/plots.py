"""PNG figures of one track's ranking, rendered with Agg through the Figure API (no pyplot state).

* blob plot: per task (and the final ranking) the distribution of bootstrap ranks per entry -
  disc area = how often the entry got that rank, cross = median, bar = 2.5-97.5 %;
* significance map: per task and metric, a dark cell where the row entry is significantly
  better than the column entry (one-sided, Holm-corrected);
* rank heat map: entries x tasks, colour and number = rank.

Each function returns the PNG bytes; entries are ordered best first.
"""

from __future__ import annotations

import io

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure

from harness.leaderboard.ranking import TrackRanking
from harness.leaderboard.stability import PairwiseTests, TrackStability

#: Above this many entries the tick labels would overlap: they are left out.
MAX_LABELLED_ENTRIES = 60


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
        ax.set_ylabel("rank")
        ax.set_title(f"{title}{' (' + note + ')' if note else ''}", fontsize=9)
        _entry_axis(ax, [entries[e] for e in order])
    fig.suptitle(f"{ranking.track.track}: bootstrap ranks (N={stability.n_bootstrap}); red = full-data rank")
    return _png(fig)


def significance_map(ranking: TrackRanking, tests: list[PairwiseTests]) -> bytes:
    entries = ranking.track.entries
    task_rank = {t.task.task: t.rank for t in ranking.tasks}
    n_cols = min(3, max(1, len(tests)))
    n_rows = max(1, -(-len(tests) // n_cols))
    side = max(3.5, 0.12 * len(entries) + 2)
    fig = Figure(figsize=(side * n_cols, side * n_rows), layout="constrained")
    axes = fig.subplots(n_rows, n_cols, squeeze=False).ravel()
    cmap = ListedColormap(["#f2f2f2", "#1f4e79"])
    for ax in axes[len(tests) :]:
        ax.set_axis_off()
    for ax, test in zip(axes, tests):
        order = _order(task_rank[test.task], entries)
        ax.imshow(test.significant[np.ix_(order, order)].astype(float), cmap=cmap, vmin=0, vmax=1)
        names = [entries[e] for e in order]
        _entry_axis(ax, names, "x")
        _entry_axis(ax, names, "y")
        ax.set_title(f"{test.task} / {test.metric}\n{test.method}", fontsize=8)
    fig.suptitle(
        f"{ranking.track.track}: row significantly better than column (Holm, alpha {tests[0].alpha if tests else ''})"
    )
    return _png(fig)


def rank_heatmap(ranking: TrackRanking) -> bytes:
    entries = ranking.track.entries
    order = _order(ranking.final_rank, entries)
    columns = [t.task.task for t in ranking.tasks] + ["final"]
    matrix = np.column_stack([t.rank for t in ranking.tasks] + [ranking.final_rank])[order]
    fig = Figure(figsize=(max(4.0, 0.9 * len(columns) + 2), max(3.0, 0.25 * len(entries) + 1.5)), layout="constrained")
    ax = fig.subplots()
    image = ax.imshow(matrix, cmap="viridis_r", aspect="auto", vmin=1, vmax=max(1, len(entries)))
    ax.set_xticks(range(len(columns)))
    ax.set_xticklabels(columns, rotation=45, ha="right", fontsize=8)
    _entry_axis(ax, [entries[e] for e in order], "y")
    if matrix.size <= 1500:
        for (row, col), value in np.ndenumerate(matrix):
            ax.text(col, row, f"{value:g}", ha="center", va="center", fontsize=6, color="white")
    fig.colorbar(image, ax=ax, label="rank")
    ax.set_title(f"{ranking.track.track}: ranks per task ({ranking.scheme})")
    return _png(fig)
