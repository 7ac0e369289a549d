"""The challenge simulator (bench/simulate_challenge.py) at a tiny size: what it writes is what the
harness's own readers accept. `harness status` counts its failed, stale, corrupt, pending and
rejected jobs as the simulator made them; the phase's leaderboard ranks every accepted entry and
the baselines, flagging the runs that are not done; feedback and publish read it."""

from __future__ import annotations

import contextlib
import io
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from simulate_challenge import CHALLENGE, RECIPE, ChallengeSize, simulate  # noqa: E402

from harness.cli import main  # noqa: E402
from harness.jobs.intake import PhaseRecord  # noqa: E402
from harness.jobs.status import collect_status  # noqa: E402
from harness.runs import ResultsLayout  # noqa: E402

TINY = ChallengeSize(
    teams=3,
    phases=1,
    segmentation_tasks=1,
    classification_tasks=1,
    cases=12,
    labels=2,
    folds=2,
    failed=2,
    stale=1,
    corrupt=1,
    pending=1,
)


def harness(*args: object) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        code = main([str(a) for a in args])
    return code, out.getvalue()


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    return simulate(tmp_path_factory.mktemp("sim"), TINY)


def test_status_reports_each_run_as_the_simulator_made_it(sim):
    (phase,) = sim.phases
    root = ResultsLayout(sim.results).phase(CHALLENGE, phase).root
    report = collect_status(root)
    made = {(e, t, f): s for (_, e, t, f), s in sim.runs.items()}
    states = {(j.entry, j.task, j.fold): j.state for j in report.jobs if j.state != "rejected"}
    expected = {"done": "done", "failed": "failed", "corrupt": "corrupt", "pending": "pending", "stale": "pending"}
    assert states == {key: expected[s] for key, s in made.items()}
    assert [s for s in made.values()].count("stale") == 1
    stale = next(j for j in report.jobs if made.get((j.entry, j.task, j.fold)) == "stale")
    assert stale.detail.startswith("stale")
    assert {j.error_class for j in report.failed} == {"out of memory"}
    [corrupt] = report.corrupt
    assert corrupt.file is not None and corrupt.file.endswith("cases.csv")
    # 3 teams x 2 tracks + 2 baselines, x 2 tasks x 2 folds; the two rejected uploads' would-be jobs
    assert len(made) == 8 * 2 * 2 and report.counts["rejected"] == 2 * 2 * 2
    record = PhaseRecord.read(ResultsLayout(sim.results).phase_intake(CHALLENGE, phase))
    assert sorted(u.rejection for u in record.uploads if u.status == "rejected") == ["invalid", "quota"]
    code, text = harness("status", "--results", root)
    assert code == 0 and "failed jobs:" in text and "corrupt results" in text


def test_the_leaderboard_feedback_and_publish_read_the_simulated_phase(sim):
    import pandas as pd

    (phase,) = sim.phases
    common = ("--challenge", sim.challenge, "--phase", phase, "--results", sim.results)
    code, _ = harness("leaderboard", *common, "--bootstrap", 20)
    assert code == 0
    root = ResultsLayout(sim.results).phase(CHALLENGE, phase).root
    accepted = {e for (_, e, _, _) in sim.runs if not e.startswith("baseline-")}
    ranked, failed, pending = set(), 0, 0
    for track in TINY.tracks:
        board = pd.read_csv(ResultsLayout.leaderboard_csv(root / "leaderboard" / RECIPE, track))
        ranked |= set(board["entry"])
        failed, pending = failed + board["failed_jobs"].sum(), pending + board["pending_jobs"].sum()
    # a corrupt run counts as failed; a stale one (its DONE names another job) is ranked: the
    # leaderboard tells staleness from the task file, which the simulator does not record
    made = list(sim.runs.values())
    assert (failed, pending) == (made.count("failed") + made.count("corrupt"), made.count("pending"))
    assert ranked == accepted | {f"baseline-{t}" for t in TINY.tracks}
    code, text = harness("feedback", *common)
    assert code == 0 and f"wrote feedback for {TINY.teams} team(s)" in text
    code, _ = harness("publish", *common)
    assert code == 0  # the first phase is public
