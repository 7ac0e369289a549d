"""The leaderboard report, readable: the main table fits a 1400 px window or scrolls in its own
box, heat-map numbers contrast with their cells, rank axes show whole ranks, the significance map
has a legend, and failed jobs are told apart from pending ones.

Built from small synthetic run folders (``test_leaderboard.write_run``) and long tables; the 1400
px check renders the real report in headless Chromium, skipped with its reason where it cannot
start.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from html.parser import HTMLParser

import numpy as np
import pandas as pd
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import to_rgb
from test_leaderboard import CLF, PROBS, PROBS_SUBC, TRUTH, clf_cases, long_table, seg_cases, write_run

from harness.leaderboard.build import build_leaderboard
from harness.leaderboard.model import FLAG_FAILED_JOB, FLAG_MISSING_JOB, FLAG_UNFINISHED_JOB
from harness.leaderboard.plots import blob_plot_figure, rank_heatmap_figure, significance_map_figure
from harness.leaderboard.ranking import rank_track
from harness.leaderboard.read_csv import collect_long
from harness.leaderboard.read_runs import collect_runs
from harness.leaderboard.report import pending_jobs
from harness.leaderboard.stability import bootstrap_track, significance_track

PROBS = {**PROBS, "subC": PROBS_SUBC}
SEG = {
    "subA": {0: {"case_s1": (0.9, 0.8), "case_s2": (0.8, 0.7)}, 1: {"case_s3": (0.8, 0.8)}},
    "subB": {0: {"case_s1": (0.7, 0.7), "case_s2": (0.9, 0.9)}, 1: {"case_s3": (0.6, 0.7)}},
    "subC": {0: {"case_s1": (0.6, 0.5), "case_s2": (0.5, 0.6)}, 1: {"case_s3": (0.9, 0.9)}},
    "baseline-ResEncL": {0: {"case_s1": (0.5, 0.5), "case_s2": (0.4, 0.6)}, 1: {"case_s3": (0.5, 0.4)}},
}


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """Track ResEncL, tasks seg and clf, folds 0 and 1. subB's seg fold 1 ran and FAILED; subC's
    seg fold 1 was planned and never finished, its clf fold 1 never even planned (no folder)."""
    root = tmp_path_factory.mktemp("readable") / "results"
    for entry in SEG:
        for fold in (0, 1):
            if (entry, fold) == ("subB", 1):
                write_run(root, entry, "seg", fold, state="failed")
            elif (entry, fold) == ("subC", 1):
                write_run(root, entry, "seg", fold, state="unfinished")
            else:
                write_run(root, entry, "seg", fold, cases=seg_cases(SEG[entry][fold]))
            if (entry, fold) != ("subC", 1):
                write_run(root, entry, "clf", fold, cases=clf_cases(TRUTH[fold], PROBS[entry][fold]), **CLF)
    return root


@pytest.fixture(scope="module")
def board(results, tmp_path_factory):
    out = tmp_path_factory.mktemp("readable_board")
    build_leaderboard(out, results=results, n_bootstrap=20, seed=0)
    return out


@pytest.fixture(scope="module")
def ranked(results):
    (track,) = collect_runs(results)
    ranking = rank_track(track, "rank-then-aggregate")
    stability = bootstrap_track(ranking, 20, 0)
    return ranking, stability, significance_track(ranking, stability, 0.05)


def _drawn(fig):
    FigureCanvasAgg(fig).draw()
    return fig


# --------------------------------------------------------------------------- failed vs pending


def test_failed_jobs_count_only_jobs_that_ran_and_failed(results, board):
    (track,) = collect_runs(results)
    assert {(p.entry, p.status) for p in track.job_problems} == {
        ("subB", FLAG_FAILED_JOB),
        ("subC", FLAG_UNFINISHED_JOB),
        ("subC", FLAG_MISSING_JOB),
    }
    assert track.failed_jobs() == {"baseline-ResEncL": 0, "subA": 0, "subB": 1, "subC": 0}
    assert pending_jobs(track) == {"baseline-ResEncL": 0, "subA": 0, "subB": 0, "subC": 2}
    table = pd.read_csv(board / "leaderboard_ResEncL.csv").set_index("entry")
    assert table["failed_jobs"].to_dict() == {"baseline-ResEncL": 0, "subA": 0, "subB": 1, "subC": 0}
    assert table["pending_jobs"].to_dict() == {"baseline-ResEncL": 0, "subA": 0, "subB": 0, "subC": 2}
    # both kinds still count as worst: subB lacks 1 seg case, subC 1 seg case and 6 clf cases
    assert table.loc["subB", "missing_cases"] == 1 and table.loc["subC", "missing_cases"] == 7
    html = (board / "report.html").read_text()
    assert "pending_<wbr>jobs" in html and "failed_<wbr>jobs" in html
    assert "pending_jobs: jobs without a result yet" in html


def test_a_partial_leaderboard_says_so_first_and_last(results, tmp_path, capsys):
    """Unfinished jobs (an evaluate killed half-way): the report's first paragraph and the
    command's last line name the pending and failed jobs per track; a complete ranking says nothing."""
    from harness.cli import main

    warning = "partial results: track ResEncL: 2 pending, 1 failed job(s)."
    out = tmp_path / "board"
    assert main(["leaderboard", "--results", str(results), "--out", str(out), "--bootstrap", "0"]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[-1].startswith(f"warning: {warning}"), printed[-3:]
    page = (out / "report.html").read_text()
    first = re.search(r"<h1>[^<]*</h1>\s*<p([^>]*)>(.*?)</p>", page, re.S)
    assert first is not None and "warning" in first.group(1) and warning in first.group(2), page[:800]

    complete = tmp_path / "complete"  # every job done: no warning anywhere
    for entry in ("subA", "baseline-ResEncL"):
        shutil.copytree(results / "runs" / entry, complete / "runs" / entry)
    assert main(["leaderboard", "--results", str(complete), "--out", str(tmp_path / "b2"), "--bootstrap", "0"]) == 0
    assert not [line for line in capsys.readouterr().out.splitlines() if "partial results" in line]
    assert "partial results" not in (tmp_path / "b2" / "report.html").read_text()


def test_an_entry_without_rows_in_a_long_table_is_pending_not_failed():
    t1 = long_table({"A": [0.5, 0.5], "B": [0.4, 0.4]}, task="t1")
    t2 = long_table({"A": [0.5, 0.5]}, task="t2")
    (track,) = collect_long(pd.concat([t1, t2]))
    assert track.failed_jobs() == {"A": 0, "B": 0}
    assert pending_jobs(track) == {"A": 0, "B": 1}


# --------------------------------------------------------------------------- heat map contrast


def _wcag_luminance(colour) -> float:
    def linear(c):
        return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4

    r, g, b = (linear(c) for c in to_rgb(colour))
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def _wcag_contrast(a, b) -> float:
    hi, lo = sorted((_wcag_luminance(a), _wcag_luminance(b)), reverse=True)
    return (hi + 0.05) / (lo + 0.05)


def test_wcag_contrast_reference_values():
    assert _wcag_contrast("black", "white") == pytest.approx(21.0)
    assert _wcag_contrast("white", "#fde725") < 1.3  # the old heat map: white on viridis yellow


@pytest.mark.parametrize("n_entries", [3, 12])
def test_heatmap_numbers_contrast_with_their_cells(n_entries):
    values = {f"e{i:02d}": list(np.linspace(0.9, 0.5, 4) - 0.03 * i) for i in range(n_entries)}
    frame = pd.concat([long_table(values, task="t1"), long_table(values, task="t2")])
    (track,) = collect_long(frame)
    fig = _drawn(rank_heatmap_figure(rank_track(track, "aggregate-then-rank")))
    ax = fig.axes[0]
    (image,) = ax.get_images()
    texts = ax.texts
    assert len(texts) == image.get_array().size == n_entries * 3  # two tasks and final
    rank_one = 0
    for text in texts:
        col, row = text.get_position()
        value = image.get_array()[int(row), int(col)]
        assert float(text.get_text()) == value
        cell = image.cmap(image.norm(value))
        ratio = _wcag_contrast(text.get_color(), cell)
        assert ratio >= 4.5, f"rank {value}: {text.get_color()} on {cell} has contrast {ratio:.2f}"
        rank_one += value == 1
    assert rank_one == 3  # e00 is first on both tasks and overall


# --------------------------------------------------------------------------- whole ranks


def _visible_ticks(axis) -> np.ndarray:
    lo, hi = sorted(axis.get_view_interval())
    ticks = np.asarray(axis.get_majorticklocs())
    return ticks[(ticks >= lo - 1e-9) & (ticks <= hi + 1e-9)]


def _assert_whole(ticks: np.ndarray, where: str) -> None:
    assert ticks.size, f"{where}: no tick"
    assert np.allclose(ticks, np.round(ticks)), f"{where}: ticks {ticks.tolist()} are not whole ranks"


def test_rank_axes_show_whole_ranks(ranked):
    ranking, stability, _ = ranked
    blobs = _drawn(blob_plot_figure(ranking, stability))
    rank_axes = [ax for ax in blobs.axes if ax.get_ylabel() == "rank"]
    assert len(rank_axes) == len(ranking.tasks) + 1  # per task and final
    for ax in rank_axes:
        _assert_whole(_visible_ticks(ax.yaxis), f"blob plot {ax.get_title()}")
    heat = _drawn(rank_heatmap_figure(ranking))
    (colorbar,) = [ax for ax in heat.axes if ax.get_ylabel() == "rank"]
    ticks = _visible_ticks(colorbar.yaxis)
    _assert_whole(ticks, "heat map colour bar")
    assert 1 in ticks


def test_rank_axes_show_whole_ranks_for_many_entries():
    values = {f"e{i:02d}": [0.9 - 0.03 * i, 0.8 - 0.02 * i, 0.7 - 0.01 * i] for i in range(25)}
    (track,) = collect_long(long_table(values))
    ranking = rank_track(track, "aggregate-then-rank")
    stability = bootstrap_track(ranking, 10, 0)
    for fig in (_drawn(blob_plot_figure(ranking, stability)), _drawn(rank_heatmap_figure(ranking))):
        for ax in fig.axes:
            if ax.get_ylabel() == "rank":
                _assert_whole(_visible_ticks(ax.yaxis), ax.get_title() or "colour bar")


# --------------------------------------------------------------------------- significance legend


def test_significance_map_has_a_legend_of_its_cell_colours(ranked):
    ranking, _, tests = ranked
    fig = _drawn(significance_map_figure(ranking, tests))
    (legend,) = fig.legends
    labels = [t.get_text() for t in legend.get_texts()]
    assert labels == ["not significant", "row significantly better than column", "same entry"]
    handles = legend.legend_handles
    # every colour a cell can have is one the legend explains
    legend_colours = {tuple(np.round(h.get_facecolor()[:3], 3)) for h in handles}
    for ax in fig.axes:
        for image in ax.get_images():
            cells = np.unique(image.get_array())
            for value in cells:
                colour = tuple(np.round(image.cmap(image.norm(value))[:3], 3))
                assert colour in legend_colours, (ax.get_title(), value)
    assert {ax.get_ylabel() for ax in fig.axes if ax.get_images()} == {"row entry"}


# --------------------------------------------------------------------------- the HTML


class _Tables(HTMLParser):
    """The class of the element around each <table>."""

    def __init__(self):
        super().__init__()
        self.stack: list[tuple[str, str]] = []
        self.parents: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self.parents.append(self.stack[-1][1] if self.stack else "")
        if tag not in ("wbr", "br", "img", "meta"):
            self.stack.append((tag, dict(attrs).get("class") or ""))

    def handle_endtag(self, tag):
        while self.stack:
            if self.stack.pop()[0] == tag:
                break


def test_every_table_scrolls_inside_its_own_box(board):
    html = (board / "report.html").read_text()
    style = re.search(r"<style>(.*?)</style>", html, re.S)[1]
    box = re.search(r"\.table-box\s*\{([^}]*)\}", style)[1]
    assert "overflow-x: auto" in box and "max-width: 100%" in box
    parser = _Tables()
    parser.feed(html)
    assert parser.parents == ["table-box", "table-box"]  # the leaderboard and the stability table
    assert "<table class='leaderboard'>" in html
    assert "<tr class='baseline'>" in html
    assert "<th scope='col' class='text sticky'>entry</th>" in html  # kept in view when scrolled
    assert "<td class='text sticky'>subA</td>" in html


# --------------------------------------------------------------------------- a real browser

_MEASURE = """<script>
window.addEventListener('load', function () {
  var boxes = [];
  document.querySelectorAll('.table-box').forEach(function (b) { boxes.push([b.scrollWidth, b.clientWidth]); });
  var box = document.querySelector('.table-box'), pinned = document.querySelector('td.sticky');
  box.scrollLeft = box.scrollWidth;  // scrolled to its right end, the entry column stays in view
  var offset = pinned.getBoundingClientRect().left - box.getBoundingClientRect().left;
  var out = document.createElement('pre');
  out.id = 'measure';
  out.textContent = JSON.stringify({page: document.scrollingElement.scrollWidth, inner: window.innerWidth,
                                    boxes: boxes, pinned_offset: offset});
  document.body.appendChild(out);
});
</script>"""


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return name
    pytest.skip("no chromium on PATH (apt-get install chromium)")


def _measure_in_chromium(report, tmp_path) -> dict:
    """Page and table-box widths of ``report`` in a 1400 x 900 headless Chromium window."""
    page = tmp_path / "measured.html"
    page.write_text(report.read_text().replace("</body>", _MEASURE + "</body>"))
    command = [
        _chromium(),
        "--headless",
        "--no-sandbox",  # root in a container
        "--disable-gpu",
        "--disable-dev-shm-usage",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--window-size=1400,900",
        "--virtual-time-budget=5000",
        "--dump-dom",
        page.as_uri(),
    ]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as exc:
        pytest.skip(f"chromium could not start or did not finish: {exc}")
    found = re.search(r'<pre id="measure">(.*?)</pre>', done.stdout, re.S)
    if found is None:
        pytest.skip(f"chromium gave no page (exit {done.returncode}): {done.stderr.strip()[-500:]}")
    return json.loads(found[1].replace("&quot;", '"').replace("&amp;", "&"))


def test_report_fits_a_1400px_window_in_chromium(board, tmp_path):
    measured = _measure_in_chromium(board / "report.html", tmp_path)
    assert measured["inner"] == 1400, measured
    assert measured["page"] <= 1400, measured
    leaderboard_box = measured["boxes"][0]
    assert leaderboard_box[0] <= leaderboard_box[1], f"the small table should fit whole: {measured}"


def test_a_wide_table_scrolls_in_its_box_not_the_page(tmp_path):
    """Fourteen tasks of two metrics and long entry names: wider than any window, so the table
    scrolls inside its box while the page stays 1400 px wide."""
    rng = np.random.default_rng(0)
    names = [f"team-{i}-a-rather-long-submission-file-name-{'x' * 12}" for i in range(5)] + ["baseline-ResEncL"]
    frames = [
        long_table({n: list(rng.uniform(0.2, 0.9, 4)) for n in names}, task=f"task_{t:02d}", metric=metric)
        for t in range(14)
        for metric in ("dice", "nsd")
    ]
    csv = tmp_path / "long.csv"
    pd.concat(frames).to_csv(csv, index=False)
    out = tmp_path / "board"
    build_leaderboard(out, from_csv=csv, n_bootstrap=0, plots=False)
    measured = _measure_in_chromium(out / "report.html", tmp_path)
    assert measured["page"] <= 1400, measured
    leaderboard_box = measured["boxes"][0]
    assert leaderboard_box[0] > leaderboard_box[1], f"the wide table should scroll in its box: {measured}"
    assert abs(measured["pinned_offset"]) <= 2, f"the entry column should stay in view: {measured}"
