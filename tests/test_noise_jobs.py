"""Seed repeats on the jobs side: planned, seeded, stored beside the ranked run, costed."""

from __future__ import annotations

from pathlib import Path

import pytest
from jobs_helpers import write_tiny_dataset, write_tiny_task

from harness.finetune.job import REPEAT_SEED_STRIDE, job_id_of
from harness.jobs.cost import format_cost_plan
from harness.jobs.matrix import Entry, MatrixError, build_matrix
from harness.leaderboard.rows import NOISE_COLUMNS, read_leaderboard, write_leaderboard
from harness.runs import JobSpec, ResultsLayout
from harness.tasks.registry import load_registry


@pytest.fixture
def tasks(tmp_path):
    write_tiny_dataset(tmp_path / "data" / "Seg")
    write_tiny_task(tmp_path / "reg", "Good", "Seg")
    return load_registry(tmp_path / "reg")


def entries(tmp_path) -> list[Entry]:
    return [
        Entry("alpha", tmp_path / "alpha.pth", "a" * 64, "PrimusM"),
        Entry("beta", tmp_path / "beta.pth", "b" * 64, "PrimusM"),
    ]


def test_repeats_of_the_baseline_and_named_entries_are_planned_with_other_seeds(tmp_path, tasks):
    plain = build_matrix(entries(tmp_path), tasks, tmp_path / "results")
    noisy = build_matrix(entries(tmp_path), tasks, tmp_path / "results", noise_repeats=3, noise_entries=["beta"])
    assert [(j.job.entry, j.job.repeat) for j in plain] == [("baseline-PrimusM", 0), ("alpha", 0), ("beta", 0)]
    assert len(noisy) == 3 + 3 * 2  # the baseline and beta, three times more
    # the ranked runs keep their identity, seed and folder
    assert [(j.job_id, j.job.seed, j.folder) for j in noisy[:3]] == [(j.job_id, j.job.seed, j.folder) for j in plain]
    repeats = [j for j in noisy if j.job.repeat]
    assert {j.job.entry for j in repeats} == {"baseline-PrimusM", "beta"}
    base = plain[0].job
    baseline_repeats = [j.job for j in repeats if j.job.is_baseline]
    assert [j.seed for j in baseline_repeats] == [base.seed + REPEAT_SEED_STRIDE * r for r in (1, 2, 3)]
    assert [j.run.path.name for j in baseline_repeats] == ["fold_0-repeat_1", "fold_0-repeat_2", "fold_0-repeat_3"]
    assert base.run.path.name == "fold_0"
    assert len({j.job_id for j in noisy}) == len(noisy)
    assert "repeat 2" in repeats[2].label
    # the repeat is part of the identity only where it is not 0
    description = base.description()
    assert description["repeat"] == 0
    assert job_id_of({k: v for k, v in description.items() if k != "repeat"}) == base.job_id()
    # stored and read back: the folder's layout knows it, job.json holds the repeat
    spec = baseline_repeats[0].spec()
    spec.write(baseline_repeats[0].run)
    assert JobSpec.read(baseline_repeats[0].run).repeat == 1
    assert baseline_repeats[0].run in list(ResultsLayout(tmp_path / "results").run_folders())
    assert ResultsLayout.of_run(baseline_repeats[0].run.path).root == (tmp_path / "results").resolve()


def test_the_cost_plan_counts_the_repeats(tmp_path, tasks):
    noisy = build_matrix(entries(tmp_path), tasks, tmp_path / "results", noise_repeats=2)
    assert "total: 5 job(s)" in format_cost_plan(noisy, tmp_path / "results", bench=None)


def test_bad_repeat_requests_are_errors(tmp_path, tasks):
    with pytest.raises(MatrixError, match=r"noise_entries \['gamma'\]: no accepted entry"):
        build_matrix(entries(tmp_path), tasks, tmp_path / "results", noise_repeats=1, noise_entries=["gamma"])
    with pytest.raises(MatrixError, match="noise_repeats must be >= 0"):
        build_matrix(entries(tmp_path), tasks, tmp_path / "results", noise_repeats=-1)
    with pytest.raises(ValueError, match="repeat must be >= 0"):
        ResultsLayout(Path("r")).run("e", "t", "s", 0, repeat=-1)


# --------------------------------------------------------------------------- the leaderboard side


def write_run(results: Path, entry: str, task: str, dice: list[float], repeat: int = 0) -> None:
    """A finished segmentation run (fold 0, repeat ``repeat``) written by hand, one Dice per case."""
    import pandas as pd

    from harness.runs import RunResult

    run = ResultsLayout(results).run(entry, task, "ssl3d-2025", 0, repeat)
    JobSpec(
        entry=entry,
        track="ResEncL",
        is_baseline=entry.startswith("baseline-"),
        task=task,
        task_type="segmentation",
        fold=0,
        recipe="ssl3d-2025",
        repeat=repeat,
    ).write(run)
    cases = pd.DataFrame(
        [
            {"case": f"c{i:03d}", "label": 1, "dice": d, "nsd": d, "ref_voxels": 10, "pred_voxels": 10}
            for i, d in enumerate(dice)
        ]
    )
    RunResult({"ranking_metrics": [{"name": "dice", "higher_is_better": True}], "aggregates": {}}, cases).write(run)
    run.mark_done()


def test_the_leaderboard_reads_repeats_for_the_floor_and_never_ranks_them(tmp_path):
    import json

    import numpy as np
    import pandas as pd

    from harness.leaderboard.build import build_leaderboard

    results = tmp_path / "results"
    for task, shift in (("T1", 0.0), ("T2", -0.2)):
        cases = np.array([0.60, 0.62, 0.58, 0.61, 0.59]) + shift
        # the baseline's runs move by +-0.02 with the seed
        for repeat, delta in enumerate((0.0, 0.02, -0.02, 0.01)):
            write_run(results, "baseline-ResEncL", task, list(cases + delta), repeat)
        write_run(results, "twin_a", task, list(cases + 0.05))
        write_run(results, "twin_b", task, list(cases + 0.05 + 1e-6))  # far below training noise
        write_run(results, "tuned", task, list(cases + 0.3))  # far above
    out = tmp_path / "board"
    outcome = build_leaderboard(out, results=results, n_bootstrap=200, plots=False)
    (track,) = outcome.tracks
    assert set(track.ranking.track.entries) == {"baseline-ResEncL", "twin_a", "twin_b", "tuned"}
    board = pd.read_csv(out / "leaderboard_ResEncL.csv", keep_default_na=False).set_index("entry")
    assert board.loc["twin_a", "within_noise_of"] == "twin_b"
    assert board.loc["twin_b", "within_noise_of"] == "twin_a"
    assert "tuned" not in board.loc["baseline-ResEncL", "within_noise_of"]
    assert board.loc["tuned", "within_noise_of"] == ""
    assert set(NOISE_COLUMNS) <= set(board.columns)
    # the case bootstrap keeps the twins apart (twin_b is better on every case); training noise swaps them
    assert board.loc["twin_a", "rank_lo"] == board.loc["twin_a", "rank_hi"] == 3
    assert board.loc["twin_a", "noise_rank_lo"] == 2 and board.loc["twin_b", "noise_rank_hi"] == 3
    assert board.loc["tuned", "noise_rank_hi"] == 1
    meta = json.loads((out / "leaderboard.json").read_text())["tracks"]["ResEncL"]
    runs = [0.0, 0.02, -0.02, 0.01]
    sd = float(np.std(runs, ddof=1))
    for task in ("T1", "T2"):
        assert meta["noise_floor"][task]["dice"]["sd"] == pytest.approx(sd)
        assert meta["noise_floor"][task]["dice"]["runs"] == 4
    pairs = {(p["upper"], p["lower"], p["task"]): p["above_floor"] for p in meta["adjacent_above_floor"]}
    twins = [v for (u, lo, _), v in pairs.items() if {u, lo} == {"twin_a", "twin_b"}]
    assert twins == [False, False]
    assert all(v for (u, lo, _), v in pairs.items() if "tuned" in (u, lo))
    floor_csv = pd.read_csv(out / "noise_ResEncL.csv")
    assert list(floor_csv["task"]) == ["T1", "T2"]
    report = outcome.report.read_text()
    assert "Noise floor" in report and "within_noise_of" in report


def test_published_and_feedback_rows_name_no_entry_id_within_noise(tmp_path):
    import pandas as pd

    from harness.challenge.public import public_rows

    fixed = {"mean_task_rank": 1.0, "rank_lo": 1, "rank_hi": 2, "rank_median": 1}
    counts = {"failed_jobs": 0, "pending_jobs": 0, "missing_cases": 0}
    noise = {"noise_rank_lo": 1, "noise_rank_hi": 3, "noise_rank_median": 2}
    table = pd.DataFrame(
        [
            {
                "rank": 1,
                "entry": "team1-a",
                "is_baseline": False,
                **fixed,
                "gain_T1": 0.1,
                **counts,
                **noise,
                "within_noise_of": "team2-b; baseline-ResEncL",
            },
            {
                "rank": 2,
                "entry": "team2-b",
                "is_baseline": False,
                **fixed,
                "gain_T1": 0.1,
                **counts,
                **noise,
                "within_noise_of": "team1-a; team9-withdrawn",
            },
            {
                "rank": 3,
                "entry": "baseline-ResEncL",
                "is_baseline": True,
                **fixed,
                "gain_T1": 0.0,
                **counts,
                **noise,
                "within_noise_of": "",
            },
        ]
    )
    write_leaderboard(tmp_path / "leaderboard_ResEncL.csv", table)
    rows = read_leaderboard(tmp_path / "leaderboard_ResEncL.csv")
    assert rows[0].within_noise_of == ("team2-b", "baseline-ResEncL") and rows[2].within_noise_of == ()
    assert rows[0].noise_rank_hi == 3.0
    labels = {"team1-a": ("Alpha", None), "team2-b": ("Beta", None)}
    public = public_rows(rows, labels)
    assert [r["within_noise_of"] for r in public] == ["Beta; from-scratch baseline", "Alpha", ""]
    # a team's feedback shows a row's scores: no noise column (within_noise_of names other teams)
    assert not set(NOISE_COLUMNS) & set(rows[0].scores) and "gain_T1" in rows[0].scores


def test_a_phase_asks_for_seed_repeats():
    from pydantic import ValidationError

    from harness.challenge.config import PhaseSpec

    phase = {"name": "test", "tasks": "/tmp", "submission_limit": 1}
    assert PhaseSpec.model_validate(phase).noise_repeats == 0
    asked = PhaseSpec.model_validate({**phase, "noise_repeats": 3, "noise_entries": ["team1-a"]})
    assert (asked.noise_repeats, asked.noise_entries) == (3, ("team1-a",))
    with pytest.raises(ValidationError, match="noise_repeats"):
        PhaseSpec.model_validate({**phase, "noise_repeats": -1})
