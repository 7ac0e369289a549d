"""Leaderboard on run folders whose files cannot be trusted: one corrupt run is a failed run of its
entry (flagged, the file named), never the end of the ranking; an entry without a single valid
value ranks last under every scheme and leaves the others' ranks alone."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from test_leaderboard import CLF, PROBS, PROBS_SUBC, SCHEMES, TRUTH, clf_cases, seg_cases, write_run

from harness.cli import main
from harness.leaderboard.build import build_leaderboard
from harness.leaderboard.model import FLAG_FAILED_JOB, LeaderboardInputError
from harness.leaderboard.ranking import rank_track
from harness.leaderboard.read_runs import collect_runs
from harness.leaderboard.stability import bootstrap_track
from harness.runs import RunFolder

SETUP = "ssl3d-2025"
SEG = {
    "subA": {0: {"case_s1": (0.9, 0.8), "case_s2": (0.8, 0.7)}, 1: {"case_s3": (0.8, 0.8), "case_s4": (0.7, 0.9)}},
    "subB": {0: {"case_s1": (0.7, 0.7), "case_s2": (0.9, 0.9)}, 1: {"case_s3": (0.6, 0.7), "case_s4": (0.8, 0.6)}},
    "subC": {0: {"case_s1": (0.6, 0.5), "case_s2": (0.5, 0.6)}, 1: {"case_s3": (0.9, 0.9), "case_s4": (0.5, 0.5)}},
    "baseline-ResEncL": {
        0: {"case_s1": (0.5, 0.5), "case_s2": (0.4, 0.6)},
        1: {"case_s3": (0.5, 0.4), "case_s4": (0.4, 0.4)},
    },
}
PROBS = {**PROBS, "subC": PROBS_SUBC}


def write_results(root, failed=(), entries=None):
    """Track ResEncL: every entry has task seg and clf, folds 0 and 1; ``failed`` (entry, task, fold)
    runs FAILED the ordinary way."""
    for entry in entries or SEG:
        for fold in (0, 1):
            state = "failed" if (entry, "seg", fold) in failed else "done"
            write_run(root, entry, "seg", fold, cases=seg_cases(SEG[entry][fold]), state=state)
            state = "failed" if (entry, "clf", fold) in failed else "done"
            write_run(root, entry, "clf", fold, cases=clf_cases(TRUTH[fold], PROBS[entry][fold]), state=state, **CLF)
    return root


def board(out, track="ResEncL") -> pd.DataFrame:
    frame = pd.read_csv(out / f"leaderboard_{track}.csv").set_index("entry").sort_index()
    return frame.drop(columns=["rank_lo", "rank_hi", "rank_median"])  # bootstrap: compared elsewhere


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """Per task: the leaderboard where subB's fold 0 of that task FAILED, and the clean one."""
    boards = {}
    for name, failed in (("seg", {("subB", "seg", 0)}), ("clf", {("subB", "clf", 0)}), ("clean", ())):
        root = write_results(tmp_path_factory.mktemp(f"ref_{name}") / "results", failed)
        build_leaderboard(root / "board", results=root, n_bootstrap=0, plots=False)
        boards[name] = board(root / "board")
    return boards


@pytest.fixture
def no_figures(monkeypatch):
    """The real command, but without rendering figures (a second each); one test renders them."""
    for name in ("blob_plot", "rank_heatmap", "significance_map"):
        monkeypatch.setattr(f"harness.leaderboard.build.{name}", lambda *args: b"\x89PNG\r\n\x1a\n")


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _truncate_last_row(path):
    """The last line cut after its first two fields, as a writer killed mid-line leaves it."""
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[:-1] + [",".join(lines[-1].split(",")[:2])]))


def _edit_csv(column, row, value):
    def edit(path):
        frame = pd.read_csv(path, dtype=str)
        frame.loc[row, column] = value
        frame.to_csv(path, index=False)

    return edit


def _drop_column(column):
    def edit(path):
        pd.read_csv(path, dtype=str).drop(columns=[column]).to_csv(path, index=False)

    return edit


def _edit_json(**changes):
    def edit(path):
        data = json.loads(path.read_text())
        for key, value in changes.items():
            if value is None:
                data.pop(key)
            else:
                data[key] = value
        path.write_text(json.dumps(data))

    return edit


# name: (task, file of subB's fold-0 run, corruption, text the warning must hold)
CORRUPTIONS = {
    "metrics_truncated": ("seg", "metrics_json", _truncate, "metrics.json: does not parse: "),
    "metrics_not_json": ("seg", "metrics_json", lambda p: p.write_text("DONE\n"), "metrics.json: does not parse: "),
    "metrics_not_an_object": (
        "seg",
        "metrics_json",
        lambda p: p.write_text("[1, 2]"),
        "does not parse: a JSON list, not an object",
    ),
    "metrics_without_ranking_metrics": (
        "seg",
        "metrics_json",
        _edit_json(ranking_metrics=None),
        "'ranking_metrics' must be",
    ),
    "metrics_disagree_with_the_others": (
        "seg",
        "metrics_json",
        _edit_json(ranking_metrics=[{"name": "dice"}]),
        "is ['dice'] here but ['dice', 'nsd'] in 7 other run(s)",
    ),
    "metrics_deleted": ("clf", "metrics_json", lambda p: p.unlink(), "metrics.json: missing"),
    "metrics_without_classes": ("clf", "metrics_json", _edit_json(classes=None), "field 'classes' must list"),
    "cases_truncated": ("seg", "cases_csv", _truncate_last_row, "does not parse: line 5 has 2 fields, the header 6"),
    "cases_empty_file": ("seg", "cases_csv", lambda p: p.write_text(""), "does not parse: the file is empty"),
    "cases_binary": (
        "seg",
        "cases_csv",
        lambda p: p.write_bytes(b"\xff\xfe\x00\x81garbage\n\x00\xc3"),
        "cases.csv: does not parse: ",
    ),
    "cases_missing_column": ("seg", "cases_csv", _drop_column("nsd"), "missing column(s) ['nsd']"),
    "cases_not_a_number": (
        "seg",
        "cases_csv",
        _edit_csv("dice", 1, "high"),
        "column 'dice' is not a number on line(s) 3",
    ),
    "cases_out_of_range": ("seg", "cases_csv", _edit_csv("nsd", 0, "1.5"), "nsd values must lie in [0, 1]"),
    "clf_cases_truncated": ("clf", "cases_csv", _truncate, "cases.csv"),
    "clf_cases_unknown_label": ("clf", "cases_csv", _edit_csv("true_label", 2, "maybe"), "not one of classes"),
    "clf_cases_infinite_probability": ("clf", "cases_csv", _edit_csv("prob_pos", 0, "inf"), "must be finite"),
    "clf_cases_contradict_the_truth": (
        "clf",
        "cases_csv",
        _edit_csv("true_label", 0, "pos"),
        "the true_label of case 'case_k0' is 'pos' here but 'neg' in 3 other run(s)",
    ),
    "job_truncated": ("seg", "job_json", _truncate, "job.json: does not parse: "),
    "job_not_an_object": (
        "clf",
        "job_json",
        lambda p: p.write_text('"subB"'),
        "does not parse: a JSON str, not an object",
    ),
    "job_missing_field": ("seg", "job_json", _edit_json(task_type=None), "missing field 'task_type'"),
    "job_deleted": ("clf", "job_json", lambda p: p.unlink(), "job.json: missing"),
    "job_wrong_task_type": (
        "seg",
        "job_json",
        _edit_json(task_type="classification"),
        "the task_type of task 'seg' is 'classification' here but 'segmentation'",
    ),
}


@pytest.mark.parametrize("name", sorted(CORRUPTIONS))
def test_a_corrupt_run_is_ranked_as_a_failed_run_of_its_entry(name, tmp_path, reference, capsys, no_figures):
    task, file, corrupt, problem = CORRUPTIONS[name]
    results = write_results(tmp_path / "results")
    run = RunFolder.of(results, "subB", task, 0, SETUP)
    corrupt(getattr(run, file))
    out = tmp_path / "board"
    assert main(["leaderboard", "--results", str(results), "--out", str(out), "--bootstrap", "4"]) == 0
    captured = capsys.readouterr()
    path = str(getattr(run, file))
    (warning,) = [line for line in captured.err.splitlines() if line.startswith("warning:")]
    assert f"subB: {task} fold 0 is failed_job ({path}" in warning and problem in warning, warning
    assert f"note: subB: {task} fold 0 is failed_job ({path}" in captured.out
    # exactly what a FAILED run of subB gives: the others ranked as before, subB's cases worst
    pd.testing.assert_frame_equal(board(out), reference[task])
    assert board(out).loc["subB", "failed_jobs"] == 1
    meta = json.loads((out / "leaderboard.json").read_text())
    assert meta["warnings"] == [warning.removeprefix("warning: ")]
    assert any(path in note for note in meta["tracks"]["ResEncL"]["notes"])
    assert path in (out / "report.html").read_text()
    private = pd.read_csv(out / "private" / "cases_ResEncL.csv")
    mine = private[(private.entry == "subB") & (private.task == task) & private.case.str.startswith("fold_0/")]
    assert len(mine) and set(mine.flag) == {FLAG_FAILED_JOB}


def test_a_clean_folder_warns_of_nothing(tmp_path, reference, capsys):
    results = write_results(tmp_path / "results")
    out = tmp_path / "board"
    assert main(["leaderboard", "--results", str(results), "--out", str(out), "--bootstrap", "0"]) == 0
    assert "warning" not in capsys.readouterr().err
    pd.testing.assert_frame_equal(board(out), reference["clean"])
    assert json.loads((out / "leaderboard.json").read_text())["warnings"] == []


def _garbage_job(run: RunFolder) -> None:
    run.path.mkdir(parents=True)
    run.job_json.write_text("{")
    run.mark_done()


def test_an_unreadable_job_json_of_a_setup_the_recipe_does_not_rank_is_skipped(tmp_path, reference, capsys, no_figures):
    results = write_results(tmp_path / "results")
    other = RunFolder.of(results, "subB", "seg", 0, "some-other-setup")
    _garbage_job(other)
    out = tmp_path / "board"
    assert main(["leaderboard", "--results", str(results), "--out", str(out), "--bootstrap", "0"]) == 0
    err = capsys.readouterr().err
    assert f"warning: {other.job_json}: does not parse" in err
    assert "run folder skipped: setup 'some-other-setup' is not one recipe ssl3d-2025 ranks" in err
    pd.testing.assert_frame_equal(board(out), reference["clean"])


def test_an_unreadable_job_json_is_attributed_by_path_or_skipped_when_the_path_is_ambiguous(tmp_path):
    results = write_results(tmp_path / "results")
    # a newcomer whose only run lost its job.json: task seg exists in ResEncL only, so it is ResEncL's
    _garbage_job(RunFolder.of(results, "subZ", "seg", 0, SETUP))
    (track,) = collect_runs(results)
    assert "subZ" in track.entries and not track.notes
    (problem,) = [p for p in track.job_problems if p.entry == "subZ" and p.fold == 0 and p.task == "seg"]
    assert problem.unreadable and problem.status == FLAG_FAILED_JOB and "job.json: does not parse" in problem.detail
    ranks = dict(zip(track.entries, rank_track(track, "rank-then-aggregate").final_rank))
    assert ranks["subZ"] == len(track.entries) and max(r for e, r in ranks.items() if e != "subZ") < ranks["subZ"]
    # once seg is a task of two tracks, nothing tells which one the newcomer's run belongs to
    write_run(results, "subP", "seg", 0, track="PrimusM", cases=seg_cases({"case_s1": (0.5, 0.5)}))
    tracks = {t.track: t for t in collect_runs(results)}
    assert "subZ" not in tracks["ResEncL"].entries + tracks["PrimusM"].entries
    (note,) = tracks["ResEncL"].notes
    assert note == tracks["PrimusM"].notes[0] and "subZ/seg/ssl3d-2025/fold_0/job.json: does not parse" in note
    assert "run folder skipped: the readable runs allow" in note


def test_two_runs_claiming_one_job_both_fail(tmp_path):
    results = write_results(tmp_path / "results")
    stray = RunFolder.of(results, "subB", "seg", 1, SETUP)
    job = json.loads(stray.job_json.read_text())
    stray.job_json.write_text(json.dumps({**job, "fold": 0}))  # says fold 0 in the fold_1 folder
    (track,) = collect_runs(results)
    problems = {(p.task, p.fold): p for p in track.job_problems if p.entry == "subB"}
    assert set(problems) == {("seg", 0), ("seg", 1)}
    assert "both claim entry 'subB', task 'seg', fold 0" in problems["seg", 0].detail
    assert problems["seg", 1].status == "missing_job"


def test_no_readable_run_at_all_is_an_error_naming_the_file(tmp_path, capsys):
    _garbage_job(RunFolder.of(tmp_path / "results", "subA", "seg", 0, SETUP))
    with pytest.raises(
        LeaderboardInputError, match=r"no run folder with a readable job\.json; .*job\.json: does not parse"
    ):
        collect_runs(tmp_path / "results")
    assert main(["leaderboard", "--results", str(tmp_path / "results"), "--bootstrap", "0"]) == 2
    assert "subA/seg/ssl3d-2025/fold_0/job.json" in capsys.readouterr().err


# --------------------------------------------------------------------------- no valid value


def final_and_task_ranks(results, scheme, n_bootstrap=0):
    (track,) = collect_runs(results)
    ranking = rank_track(track, scheme)
    per_entry = {
        e: (ranking.final_rank[i], tuple(t.rank[i] for t in ranking.tasks)) for i, e in enumerate(track.entries)
    }
    boot = bootstrap_track(ranking, n_bootstrap, seed=1) if n_bootstrap else None
    return track, per_entry, boot


@pytest.mark.parametrize("scheme", SCHEMES)
def test_an_entry_whose_every_run_failed_ranks_last_and_leaves_the_others_alone(tmp_path, scheme):
    without = write_results(tmp_path / "without")
    with_dead = write_results(tmp_path / "with")
    for task, kind in (("seg", {}), ("clf", CLF)):
        for fold in (0, 1):
            write_run(with_dead, "subDead", task, fold, state="failed", **kind)
    _, others, _ = final_and_task_ranks(without, scheme)
    track, ranks, boot = final_and_task_ranks(with_dead, scheme, n_bootstrap=6)
    dead = ranks.pop("subDead")
    assert ranks == others  # every other entry's final and task ranks as if subDead were not there
    assert dead == (len(track.entries), (len(track.entries),) * 2)
    d = track.entries.index("subDead")
    assert (boot.final_ranks[:, d] == len(track.entries)).all()  # last in every resample too
    others_boot = np.delete(boot.final_ranks, d, axis=1)
    assert (others_boot < len(track.entries)).all()


def _zero_and_empty(root):
    """subZero: a real Dice 0 on every case and inverted (AUROC 0) predictions; subEmpty: finished
    segmentation runs with no case in cases.csv, classification runs that all failed; a second
    such entry, subEmpty2; subA and baseline as usual."""
    write_results(root, entries=("subA", "baseline-ResEncL"))
    for fold in (0, 1):
        zeros = [{**row, "dice": 0.0, "nsd": 0.0, "pred_voxels": 0} for row in seg_cases(SEG["subA"][fold])]
        write_run(root, "subZero", "seg", fold, cases=zeros)
        inverted = [1.0 - t for t in TRUTH[fold]]
        write_run(root, "subZero", "clf", fold, cases=clf_cases(TRUTH[fold], inverted), **CLF)
        for entry in ("subEmpty", "subEmpty2"):
            run = write_run(root, entry, "seg", fold, cases=seg_cases(SEG["subA"][fold]))
            pd.read_csv(run.cases_csv).iloc[:0].to_csv(run.cases_csv, index=False)  # header only
            write_run(root, entry, "clf", fold, state="failed", **CLF)
    return root


@pytest.mark.parametrize("scheme", SCHEMES)
def test_an_entry_without_a_valid_value_never_ties_a_real_worst_result(tmp_path, scheme):
    track, ranks, boot = final_and_task_ranks(_zero_and_empty(tmp_path / "results"), scheme, n_bootstrap=6)
    seg = track.tasks[1]
    assert not seg.has_value[:, track.entries.index("subEmpty")].any()
    zero_final, zero_tasks = ranks["subZero"]
    for entry in ("subEmpty", "subEmpty2"):  # both share the last place, on each task and overall
        final, tasks = ranks[entry]
        assert final == 4 and tasks == (4, 4)
        assert final > zero_final and all(t > z for t, z in zip(tasks, zero_tasks))
    e = [track.entries.index(name) for name in ("subEmpty", "subEmpty2")]
    assert (boot.final_ranks[:, e] == 4).all() and (np.delete(boot.final_ranks, e, axis=1) < 4).all()


def test_a_track_where_nobody_has_a_value_ties_everyone(tmp_path):
    for entry in ("e1", "e2"):
        write_run(tmp_path, entry, "clf", 0, state="failed", **CLF)
    (track,) = collect_runs(tmp_path)
    for scheme in SCHEMES:
        assert rank_track(track, scheme).final_rank.tolist() == [1.0, 1.0]
