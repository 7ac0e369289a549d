"""The job matrix end to end: real toy fine-tuning jobs through `harness evaluate` subprocesses.

One module-scoped world (tiny dataset, a PrimusM example submission, registries) keeps the number
of real jobs small: the failure-isolation run doubles as the uninterrupted reference run that the
resumption test compares against (fine-tuning is seeded and, with single-threaded data
augmentation, bitwise reproducible on CPU).
"""

from __future__ import annotations

import functools
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from jobs_helpers import in_process as in_this_process
from jobs_helpers import lean_env, write_failing_classification, write_tiny_dataset, write_tiny_task

from harness.jobs.executors import SlurmConfig, SlurmConfigError
from harness.jobs.matrix import MatrixError, selected_folds
from harness.jobs.state import DONE, FAILED, PENDING, JobFiles, job_state, process_alive
from harness.jobs.worker import error_class
from harness.results_lock import ResultsLock, ResultsLockedError

PY = sys.executable


def harness(*args, check=None, **kw) -> subprocess.CompletedProcess:
    out = subprocess.run(
        [PY, "-m", "harness", *map(str, args)],
        capture_output=True,
        text=True,
        env=lean_env(),
        cwd=kw.pop("cwd", None),
        timeout=kw.pop("timeout", 600),
    )
    if check is not None:
        assert out.returncode == check, f"exit {out.returncode}\nstdout:\n{out.stdout}\nstderr:\n{out.stderr}"
    return out


@pytest.fixture(scope="module")
def world(module_dir, primus64_checkpoint) -> dict:
    root = module_dir("jobs")
    write_tiny_dataset(root / "data" / "Seg")
    # a task whose data passes the data check and breaks inside the job (a mask resampled away)
    write_failing_classification(root / "reg_all", "Broken", root / "data")
    write_tiny_task(root / "reg_all", "Good", "Seg")
    write_tiny_task(root / "reg_all", "Slow", "Seg", limit=0.05)  # 3 s: killed while it starts
    write_tiny_task(root / "reg_good", "Good", "Seg")
    # the session's Primus-M example (conftest.py) under the entry name "primus": a hard link, no copy
    sub = root / "subs" / "primus.pth"
    sub.parent.mkdir()
    os.link(primus64_checkpoint, sub)
    bad = root / "subs" / "broken_upload.pth"
    bad.write_bytes(b"this is not a checkpoint\n" * 100)
    return {"root": root, "sub": sub, "bad": bad}


@pytest.fixture(scope="module")
def failure_run(world) -> dict:
    """One evaluate over Good / Broken / Slow with a valid and a rejected submission, 2 in parallel."""
    results = world["root"] / "results_failures"
    t0 = time.time()
    out = harness(
        "evaluate",
        world["sub"],
        world["bad"],
        "--tasks",
        world["root"] / "reg_all",
        "--results",
        results,
        "--jobs",
        2,
        "--device",
        "cpu",
    )
    return {"results": results, "out": out, "seconds": time.time() - t0}


def run_folder(results: Path, entry: str, task: str, fold: int = 0) -> JobFiles:
    return JobFiles.at(results / "runs" / entry / task / "ssl3d-2025" / f"fold_{fold}")


def events(files: JobFiles, kind: str) -> int:
    return sum(1 for e in files.read_attempts() if e["event"] == kind)


ENTRIES = ("baseline-PrimusM", "primus")


# ------------------------------------------------------------------------------ fast unit tests
def test_state_from_files(tmp_path):
    files = JobFiles.at(tmp_path / "runs" / "e" / "T" / "ssl3d-2025" / "fold_0")
    assert job_state(files, "abc").state == PENDING
    files.run.path.mkdir(parents=True)
    files.run.done_marker.write_text(json.dumps({"job_id": "old"}))
    stale = job_state(files, "abc")
    assert stale.state == PENDING and stale.detail.startswith("stale")
    assert job_state(files, "old").state == DONE
    files.run.done_marker.unlink()
    files.mark_failed("abc", "timeout", "too slow")
    st = job_state(files, "abc")
    assert (st.state, st.error_class) == (FAILED, "timeout")
    files.run.failed_marker.unlink()
    # a RUNNING marker of a process that is gone is an interrupted job, not a running one
    dead = subprocess.Popen([PY, "-c", "pass"])
    dead.wait()
    files.running_marker.write_text(json.dumps({"host": os.uname().nodename, "pid": dead.pid, "proc_start": 1}))
    assert job_state(files, "abc").state == PENDING
    with pytest.raises(ValueError, match="unknown error class"):
        files.mark_failed("abc", "gremlins", "x")


def test_error_classes_and_process_identity():
    import torch

    assert error_class(MemoryError()) == "out of memory"
    assert error_class(torch.OutOfMemoryError("CUDA out of memory")) == "out of memory"
    assert error_class(ValueError("x")) == "error"
    from harness.jobs.state import this_process

    me = this_process()
    assert process_alive(me) is True
    assert process_alive({**me, "proc_start": -5}) is False  # same pid, other process: pid reuse
    assert process_alive({**me, "host": "elsewhere.invalid"}) is None


def test_slurm_config_validation(tmp_path):
    cfg = tmp_path / "slurm.yaml"
    cfg.write_text("partition: gpu\nmem_gb: 32\ngpus_per_node: 1\nextra: {exclude: node7}\n")
    c = SlurmConfig.from_file(cfg, partition="debug")
    params = c.parameters(90)
    assert params["partition"] == "debug" and params["mem"] == "32768M" and params["time"] == 90
    assert params["additional_parameters"] == {"exclude": "node7"} and params["gpus_per_node"] == 1
    cfg.write_text("partiton: gpu\n")
    with pytest.raises(SlurmConfigError, match="unknown key.*partiton.*known keys"):
        SlurmConfig.from_file(cfg)
    cfg.write_text("mem_gb: lots\n")
    with pytest.raises(SlurmConfigError, match="mem_gb"):
        SlurmConfig.from_file(cfg)
    with pytest.raises(SlurmConfigError, match="cannot read"):
        SlurmConfig.from_file(tmp_path / "missing.yaml")


def test_lock_is_exclusive_and_names_holder(tmp_path):
    with ResultsLock(tmp_path):
        with pytest.raises(ResultsLockedError, match=rf"pid {os.getpid()} on"):
            ResultsLock(tmp_path).acquire()
    with ResultsLock(tmp_path):  # released: free again
        pass


def test_lock_names_the_command_that_holds_it(tmp_path):
    """Any holder is named as what it is: a rescore holding the folder is not called an evaluate."""
    with ResultsLock(tmp_path, "harness rescore"):
        with pytest.raises(ResultsLockedError, match=r"another `harness rescore` is running on this results folder"):
            ResultsLock(tmp_path, "harness evaluate").acquire()


def test_folds_selection_errors():
    class T:
        fold_ids = (0, 1)

    assert selected_folds({"A": T()}, [1]) == {"A": (1,)}
    with pytest.raises(MatrixError, match=r"--folds \[7\]"):
        selected_folds({"A": T()}, [7])


# ------------------------------------------------------------------------------ CLI, no jobs
def in_process(*args, check: int, capsys) -> subprocess.CompletedProcess:
    """``harness ARGS`` through the CLI's ``main`` in this process (no interpreter to start)."""
    from harness.cli import main

    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    assert code == check, f"exit {code}\nstdout:\n{captured.out}\nstderr:\n{captured.err}"
    return subprocess.CompletedProcess(args, code, captured.out, captured.err)


def test_bad_inputs_give_clear_errors(world, tmp_path, capsys):
    harness = functools.partial(in_process, capsys=capsys)
    out = harness(
        "evaluate", tmp_path / "nope.pth", "--tasks", world["root"] / "reg_good", "--results", tmp_path / "r", check=2
    )
    assert "nope.pth: no such submission file" in out.stderr
    other = tmp_path / "elsewhere" / "primus.pth"  # same entry name, other bytes
    other.parent.mkdir()
    other.write_bytes(b"different")
    out = harness(
        "evaluate", world["sub"], other, "--tasks", world["root"] / "reg_good", "--results", tmp_path / "r", check=2
    )
    assert "entry name 'primus' is used by two different files" in out.stderr
    assert str(world["sub"]) in out.stderr and str(other) in out.stderr
    out = harness("evaluate", world["sub"], "--tasks", tmp_path / "no_registry", "--results", tmp_path / "r", check=2)
    assert "task registry folder does not exist" in out.stderr
    out = harness("status", "--results", tmp_path / "nothing_here", check=2)
    assert "does not exist" in out.stderr


def test_dry_run_prints_matrix_and_runs_nothing(world, tmp_path, capsys):
    """In-process (``harness evaluate`` in a subprocess: the tests above and the slow ones below)."""
    from harness.cli import main

    results = tmp_path / "results"
    args = ["evaluate", world["sub"], world["bad"], "--tasks", world["root"] / "reg_all", "--results", results]
    rc = main([*map(str, args), "--dry-run"])
    out = capsys.readouterr()
    assert rc == 0, out.out + out.err
    lines = out.out.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("entry"))
    table = lines[header + 1 : header + 1 + 9]
    assert sum(" run" in row and "pending" in row for row in table) == 6  # 3 tasks x (baseline + primus)
    assert sum("rejected" in row and row.startswith("broken_upload") for row in table) == 3
    assert "dry run: 9 jobs, 6 would run" in out.out
    # nothing but the data check's memory of the files it read (a real run then reads none again)
    assert [p.relative_to(results) for p in results.rglob("*") if p.is_file()] == [Path("cache/data-check.json")]


def test_dry_run_beside_a_live_evaluate_says_its_job_is_running(world, tmp_path, capsys):
    """A dry run takes no lock: a job whose RUNNING marker names a live worker, while an evaluate
    holds the folder, is that evaluate's (running, which one); with no evaluate it is an orphan."""
    from harness.cli import main
    from harness.jobs.state import this_process
    from harness.runs import write_json_atomic

    results = tmp_path / "results"
    files = run_folder(results, "baseline-PrimusM", "Good")
    files.folder.mkdir(parents=True)
    write_json_atomic(files.running_marker, {**this_process(), "job_id": "x", "slurm_job_id": None})
    args = ["evaluate", world["sub"], "--tasks", world["root"] / "reg_good", "--results", results, "--dry-run"]

    def row() -> str:
        assert main([*map(str, args)]) == 0
        (line,) = [line for line in capsys.readouterr().out.splitlines() if line.startswith("baseline-PrimusM")]
        return line

    me = f"pid {os.getpid()} on {this_process()['host']}"
    with ResultsLock(results):  # this process plays the evaluate (and its worker)
        live = row()
    assert "running" in live and f"none (running: worker {me}, of the evaluate {me})" in live, live
    assert "restart" not in live
    assert "restart (worker of a dead evaluate)" in row()  # the lock released: nobody owns it


def test_second_evaluate_fails_at_once_naming_the_holder(world, tmp_path):
    results = tmp_path / "results"
    with ResultsLock(results):
        t0 = time.time()
        out = harness("evaluate", world["sub"], "--tasks", world["root"] / "reg_good", "--results", results, check=2)
        assert time.time() - t0 < 60
    assert "another `harness evaluate` is running on this results folder" in out.stderr
    assert f"pid {os.getpid()}" in out.stderr
    assert not (results / "runs").exists()


# ------------------------------------------------------------------------------ real jobs
@pytest.mark.slow
def test_failures_are_isolated_and_retried(failure_run, world):
    results, out = failure_run["results"], failure_run["out"]
    assert out.returncode == 1, out.stdout + out.stderr
    for entry in ENTRIES:
        good = run_folder(results, entry, "Good")
        assert job_state(good, None).state == DONE, out.stdout + good.worker_log.read_text()
        broken = job_state(run_folder(results, entry, "Broken"), None)
        assert (broken.state, broken.error_class) == (FAILED, "error")
        assert "case_005.nii.gz" in broken.message and "empty after resampling" in broken.message
        slow = job_state(run_folder(results, entry, "Slow"), None)
        assert (slow.state, slow.error_class) == (FAILED, "timeout")
        assert "time limit of 0.05 min" in slow.message
    # the rejected submission got an intake record and no jobs
    intake = json.loads((results / "submissions" / "broken_upload" / "intake.json").read_text())
    assert intake["valid"] is False and intake["report"]["errors"]
    assert not (results / "runs" / "broken_upload").exists()

    status = json.loads(in_this_process("status", "--results", results, "--json").stdout)
    assert status["counts"] == {"pending": 0, "running": 0, "done": 2, "corrupt": 0, "failed": 4, "rejected": 3}
    assert sorted((f["task"], f["error_class"]) for f in status["failed"]) == [
        ("Broken", "error"),
        ("Broken", "error"),
        ("Slow", "timeout"),
        ("Slow", "timeout"),
    ]
    assert all(Path(f["log"]).is_file() for f in status["failed"])
    text = in_this_process("status", "--results", results).stdout
    assert "failed    4" in text and "timeout" in text

    provenance = sorted((results / "provenance").glob("evaluate-*.json"))
    assert provenance
    prov = json.loads(provenance[-1].read_text())
    assert prov["versions"]["torch"] and "git_revision" in prov and prov["device"] == "cpu"
    assert {j["seed"] for j in prov["jobs"] if j["seed"] is not None} == {0}
    assert prov["counts"]["done"] == 2

    done_before = {e: run_folder(results, e, "Good").run.done_marker.stat().st_mtime_ns for e in ENTRIES}
    # without --retry-failed nothing runs; with it, exactly the failed jobs run again
    again = harness(
        "evaluate",
        world["sub"],
        world["bad"],
        "--tasks",
        world["root"] / "reg_all",
        "--results",
        results,
        "--jobs",
        2,
        check=1,
    )
    assert "running 0 with the local executor" in again.stdout
    retry = harness(
        "evaluate",
        world["sub"],
        world["bad"],
        "--tasks",
        world["root"] / "reg_all",
        "--results",
        results,
        "--jobs",
        2,
        "--retry-failed",
        check=1,
    )
    assert "running 4 with the local executor" in retry.stdout
    for entry in ENTRIES:
        good = run_folder(results, entry, "Good")
        assert good.run.done_marker.stat().st_mtime_ns == done_before[entry]
        assert events(good, "start") == 1
        assert events(run_folder(results, entry, "Broken"), "start") == 2
        assert events(run_folder(results, entry, "Slow"), "start") <= 2  # a killed start may not get to log
        assert job_state(run_folder(results, entry, "Slow"), None).error_class == "timeout"


@pytest.mark.slow
def test_leaderboard_ranks_the_run_folders_a_real_evaluate_wrote(failure_run):
    """`harness leaderboard` on what the real toy fine-tuning wrote: the two PrimusM entries
    ranked, Good's values exactly what its runs' files say, Broken and Slow failed jobs."""
    import pandas as pd

    from harness.runs import ResultsLayout, read_cases_csv, read_metrics_json

    results = failure_run["results"]
    out = in_this_process("leaderboard", "--results", results, "--bootstrap", 20)
    board_dir = ResultsLayout(results).leaderboard_dir("ssl3d-2025")
    assert f"report: {board_dir / 'report.html'}" in out.stdout
    board = pd.read_csv(board_dir / "leaderboard_PrimusM.csv").set_index("entry")
    assert sorted(board.index) == sorted(ENTRIES) and sorted(board["rank"]) in ([1, 2], [1, 1])
    assert board.loc["baseline-PrimusM", "is_baseline"] and not board.loc["primus", "is_baseline"]
    assert (board["failed_jobs"] == 2).all() and (board["missing_cases"] == 0).all()  # Broken, Slow: no cases

    per_case = {}  # entry -> per-case nan-mean over labels, as the ranking sees it
    for entry in ENTRIES:
        run = ResultsLayout(results).run(entry, "Good", "ssl3d-2025", 0)
        cases, metrics = read_cases_csv(run.cases_csv), read_metrics_json(run.metrics_json)
        names = [m["name"] for m in metrics["ranking_metrics"]]
        assert names and not cases.empty
        for name in names:
            # reported: per label the nan-mean over cases, then the mean over labels, as metrics.json has it
            reported = board.loc[entry, f"reported_Good_{name}"]
            assert reported == pytest.approx(cases.groupby("label")[name].mean().dropna().mean(), abs=1e-12)
            assert reported == pytest.approx(metrics["aggregates"][name]["mean"], abs=1e-12)
        per_case[entry] = cases.groupby("case")[names].mean()
    mean_ranks = {entry: [] for entry in ENTRIES}  # per metric, the mean per-case rank (min on ties)
    for name in names:
        values = pd.DataFrame({entry: table[name] for entry, table in per_case.items()}).dropna()  # applicable
        for entry in ENTRIES:
            assert board.loc[entry, f"ranked_mean_Good_{name}"] == pytest.approx(values[entry].mean(), abs=1e-12)
            mean_ranks[entry].append(values.rank(axis=1, ascending=False, method="min")[entry].mean())
    metric_ranks = pd.DataFrame(mean_ranks).rank(axis=1, method="min").mean()  # the task's value per entry
    expected = metric_ranks.rank(method="min")  # Broken and Slow tie everyone: Good decides
    for entry in ENTRIES:
        assert board.loc[entry, "rank_Good"] == board.loc[entry, "rank"] == expected[entry], (board, expected)

    private = pd.read_csv(board_dir / "private" / "cases_PrimusM.csv", keep_default_na=False)
    good = private[private.task == "Good"]
    n_cases = len(set().union(*(table.index for table in per_case.values())))
    assert set(good.flag) <= {"ok", "not_applicable"} and len(good) == len(ENTRIES) * len(names) * n_cases
    for row in good[good.flag == "ok"].itertuples():
        case = row.case.removeprefix("fold_0/")
        assert float(row.value) == pytest.approx(per_case[row.entry].loc[case, row.metric], abs=1e-12)
    notes = json.loads((board_dir / "leaderboard.json").read_text())["tracks"]["PrimusM"]["notes"]
    for entry in ENTRIES:
        for task in ("Broken", "Slow"):
            flagged = set(private[(private.entry == entry) & (private.task == task)].flag)
            assert flagged == {"failed_job"} or any(
                note.startswith(f"{entry}: {task} fold 0 is failed_job") for note in notes
            ), (entry, task, notes)
    assert any("Slow fold 0 is failed_job (timeout" in note for note in notes), notes


@pytest.mark.slow
def test_the_cost_plan_predicts_the_wall_time_of_real_jobs(failure_run, world):
    """Each finished Good job's cost estimated from the other one's measurements only, never its
    own: by the other job's wall time (same task) and, with that left out, from its parts (train +
    validation rate, prediction per case, the rest); both within 25 % of the measured wall time."""
    from harness.finetune.job import FinetuneJob
    from harness.jobs.cost import Measurements, estimate
    from harness.jobs.matrix import PlannedJob
    from harness.runs import read_metrics_json
    from harness.tasks import load_task_file

    results = failure_run["results"]
    task = load_task_file(world["root"] / "reg_all" / "Good.yaml")
    for entry, other in (ENTRIES, ENTRIES[::-1]):
        truth = read_metrics_json(run_folder(results, entry, "Good").run.metrics_json)["wall_seconds"]
        found = Measurements()
        found.add_run(run_folder(results, other, "Good").run)
        job = FinetuneJob(task=task, fold=0, track="PrimusM", results=results, device="cpu", entry=entry)
        planned = PlannedJob(job, job.job_id())
        by_wall = estimate(planned, found)
        assert by_wall.source == "1 finished job(s) of this task"
        found.wall.clear()  # as for a task nothing ran of yet: from the parts
        by_parts = estimate(planned, found)
        assert "train+val iterations" in by_parts.source and "not counted" not in by_parts.source, by_parts.source
        for est in (by_wall, by_parts):
            assert est.seconds == pytest.approx(truth, rel=0.25), (entry, est, truth)


@pytest.mark.slow
def test_kill_minus_nine_mid_matrix_then_resume(failure_run, world):
    results = world["root"] / "results_resume"
    cmd = [
        PY,
        "-m",
        "harness",
        "evaluate",
        str(world["sub"]),
        "--tasks",
        str(world["root"] / "reg_good"),
        "--results",
        str(results),
        "--jobs",
        "1",
        "--device",
        "cpu",
    ]
    log = open(world["root"] / "resume_first.log", "w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=lean_env(), start_new_session=True)
    first, second = (run_folder(results, e, "Good") for e in ENTRIES)  # the matrix runs the baseline first
    deadline = time.time() + 420
    try:
        while time.time() < deadline:
            if first.run.done_marker.is_file() and second.running_marker.is_file():
                break
            assert proc.poll() is None, (world["root"] / "resume_first.log").read_text()
            time.sleep(0.2)
        else:
            pytest.fail("evaluate never had one job done and another running")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the harness and its process group, like a crash
        proc.wait()
    running = json.loads(second.running_marker.read_text())
    for _ in range(100):  # the orphaned worker dies with its harness (parent-death signal)
        if process_alive(running) is not True:
            break
        time.sleep(0.1)
    assert process_alive(running) is False
    first_cases = first.run.cases_csv.read_bytes()
    first_mtime = first.run.cases_csv.stat().st_mtime_ns
    assert not second.run.done_marker.exists()
    status = json.loads(in_this_process("status", "--results", results, "--json").stdout)
    assert status["counts"]["done"] == 1 and status["counts"]["pending"] == 1

    rerun = harness(*cmd[3:], check=0)
    assert "running 1 with the local executor" in rerun.stdout
    for files in (first, second):
        assert job_state(files, None).state == DONE
        assert events(files, "done") == 1  # done exactly once
    assert events(first, "start") == 1 and events(second, "start") == 2
    assert first.run.cases_csv.read_bytes() == first_cases
    assert first.run.cases_csv.stat().st_mtime_ns == first_mtime
    assert not second.running_marker.exists() and not second.run.work_dir.exists()

    # per-case results equal those of the uninterrupted run of the same jobs
    reference = failure_run["results"]
    for entry, files in zip(ENTRIES, (first, second)):
        expected = run_folder(reference, entry, "Good").run.cases_csv.read_text()
        assert files.run.cases_csv.read_text() == expected, entry

    # a changed task spec makes done jobs stale: reported pending, rerun by the next evaluate
    spec = world["root"] / "reg_good" / "Good.yaml"
    spec.write_text(spec.read_text().replace("time_limit_minutes: 10", "time_limit_minutes: 11"))
    status = json.loads(in_this_process("status", "--results", results, "--json").stdout)
    assert status["counts"]["pending"] == 2 and status["counts"]["done"] == 0
    dry = harness(*cmd[3:], "--dry-run", check=0)
    assert dry.stdout.count("rerun (inputs changed)") == 2


def test_progress_is_a_bar_on_a_terminal_and_log_lines_otherwise():
    import io

    from harness.jobs.progress import Progress
    from harness.jobs.state import JobState

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    class Job:
        label = "e / T / fold 0"

    plain = io.StringIO()
    p = Progress(2, plain)
    p("started", Job, None)
    p("finished", Job, JobState(DONE))
    p("finished", Job, JobState(FAILED, error_class="timeout", message="too slow", log="x.log"))
    assert plain.getvalue().splitlines()[1].endswith("[1/2] e / T / fold 0: done")
    assert "[2/2] e / T / fold 0: FAILED (timeout: too slow; log x.log)" in plain.getvalue()
    tty = Terminal()
    p = Progress(2, tty)
    p("finished", Job, JobState(DONE))
    p.close()
    assert "1/2" in tty.getvalue() and "\r" in tty.getvalue() and "[1/2]" not in tty.getvalue()
