"""Job health: corrupt results, real error messages with one traceback, disk checks, progress of
running jobs. Unit tests on hand-made run folders, plus one real worker on a segmentation job
whose dataset nnU-Net's integrity check rejects (it fails in seconds, before any training)."""

from __future__ import annotations

import errno
import json
import os
import time
from collections import namedtuple
from pathlib import Path

import pytest
from jobs_helpers import ROOT, write_tiny_dataset, write_tiny_task

from harness.jobs import disk, worker
from harness.jobs.disk import DiskSpaceError, check_writable, job_need_bytes
from harness.jobs.intake import IntakeRecord
from harness.jobs.state import (
    CORRUPT,
    DONE,
    ERROR,
    FAILED,
    OUT_OF_MEMORY,
    PENDING,
    RUNNING,
    STATES,
    JobFiles,
    job_state,
    this_process,
)
from harness.jobs.status import collect_status, parse_epoch_lines, training_progress
from harness.runs import ResultsLayout, write_json_atomic

Usage = namedtuple("Usage", "total used free")


def fake_run(
    results: Path,
    entry: str = "primus",
    task: str = "T",
    fold: int = 0,
    job_id: str = "abc",
    submission: str | None = "/subs/primus.pth",
    track: str = "PrimusM",
    task_file: str = "/registry/T.yaml",
    done: bool = True,
) -> JobFiles:
    """A run folder as a finished job leaves it: job.json, cases.csv, metrics.json, DONE."""
    files = JobFiles.at(results / "runs" / entry / task / "ssl3d-2025" / f"fold_{fold}")
    write_json_atomic(
        files.run.job_json,
        {
            "entry": entry,
            "task": task,
            "fold": fold,
            "job_id": job_id,
            "submission": submission,
            "track": track,
            "task_file": task_file,
            "task_type": "segmentation",
            "recipe": "ssl3d-2025",
        },
    )
    if done:
        files.run.cases_csv.write_text("case,label,dice,nsd,ref_voxels,pred_voxels\nc1,1,0.5,0.4,10,12\n")
        write_json_atomic(files.run.metrics_json, {"aggregates": {"dice": {"mean": 0.5}}})
        write_json_atomic(files.run.done_marker, {"job_id": job_id})
    return files


# ------------------------------------------------------------------------------ corrupt results
@pytest.mark.parametrize(
    "name,text,problem",
    [
        ("metrics.json", None, "missing"),
        ("metrics.json", '{"aggregates": {"dice": ', "does not parse: Expecting"),
        ("metrics.json", "[1, 2]\n", "a JSON list, not an object"),
        ("cases.csv", None, "missing"),
        ("cases.csv", "", "the file is empty"),
        (
            "cases.csv",
            "case,label,dice,nsd,ref_voxels,pred_voxels\nc1,1,0.5,0.4,10,12\nc1,2,0.3",
            "line 3 has 3 fields",
        ),
        ("cases.csv", "label,dice\n1,0.5\n", "no 'case' column"),
        ("cases.csv", "case,label,dice\n", "a header and no cases"),
        ("cases.csv", b"case,label\n\xff\xfe,1\n", "does not parse"),
    ],
)
def test_done_run_with_unparseable_result_is_corrupt(tmp_path, name, text, problem):
    files = fake_run(tmp_path)
    assert job_state(files, "abc", check_results=True).state == DONE
    path = files.folder / name
    if text is None:
        path.unlink()
    elif isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    state = job_state(files, "abc", check_results=True)
    assert state.state == CORRUPT and state.file == str(path)
    assert problem in state.message and state.detail.startswith(f"{path}: ")
    assert job_state(files, "abc").state == DONE  # without the check: the marker alone decides
    assert job_state(files, "other", check_results=True).state == PENDING  # stale beats corrupt


def test_status_lists_corrupt_runs_with_the_command_that_reruns_them(tmp_path):
    results = tmp_path / "results"
    sub = fake_run(results, "primus", submission="/subs/my primus.pth")
    base = fake_run(results, "baseline-PrimusM", submission=None)
    fake_run(results, "primus", task="Fine")
    sub.run.metrics_json.write_text('{"aggregates": ')
    base.run.cases_csv.write_text("")
    IntakeRecord(
        "primus", "/subs/primus2.pth", "ab" * 32, True, "PrimusM", "0", "2026-01-01", {"errors": [], "warnings": []}
    ).write(ResultsLayout(results))
    report = collect_status(results)
    assert report.counts == {**{s: 0 for s in STATES}, DONE: 1, CORRUPT: 2}
    text = report.format_text()
    assert "corrupt   2" in text
    assert f"primus / T / ssl3d-2025 / fold 0: {sub.run.metrics_json}: does not parse" in text
    assert f"rerun: harness evaluate '/subs/my primus.pth' --tasks /registry --results {results}" in text
    assert (
        f"baseline-PrimusM / T / ssl3d-2025 / fold 0: {base.run.cases_csv}: does not parse: the file is empty" in text
    )
    assert f"rerun: harness evaluate /subs/primus2.pth --tasks /registry --results {results}" in text  # baseline
    data = report.to_dict()
    assert data["counts"]["corrupt"] == 2
    assert {c["file"] for c in data["corrupt"]} == {str(sub.run.metrics_json), str(base.run.cases_csv)}
    assert all(
        c["command"].startswith("harness evaluate ") and "--retry-failed" not in c["command"] for c in data["corrupt"]
    )
    json.dumps(data)


def test_status_gives_failed_jobs_the_command_that_retries_them(tmp_path, capsys):
    """As the README says: a failed job is listed with its message, log and the command that
    reruns it, which for a failed job needs --retry-failed (evaluate skips it otherwise)."""
    from harness.cli import main

    results = tmp_path / "results"
    failed = fake_run(results, "primus", submission="/subs/my primus.pth", done=False)
    failed.mark_failed("abc", ERROR, f"{failed.folder}/x.nii.gz: cannot read")
    fake_run(results, "primus", task="Fine")
    assert main(["status", "--results", str(results)]) == 0
    text = capsys.readouterr().out
    cmd = f"harness evaluate '/subs/my primus.pth' --tasks /registry --results {results} --retry-failed"
    lines = text.splitlines()
    at = lines.index(f"  primus / T / ssl3d-2025 / fold 0: error: {failed.folder}/x.nii.gz: cannot read")
    assert lines[at + 1 : at + 3] == [
        f"      log: {failed.worker_log if failed.worker_log.is_file() else failed.run.log}",
        f"      rerun: {cmd}",
    ]
    assert main(["status", "--results", str(results), "--json"]) == 0
    (entry,) = json.loads(capsys.readouterr().out)["failed"]
    assert entry["command"] == cmd


def _planned_job(tmp_path, task_name: str = "Good", data: str = "Seg"):
    """A PlannedJob of the tiny segmentation task's PrimusM baseline (no submission needed)."""
    from harness.finetune.job import FinetuneJob
    from harness.jobs.matrix import PlannedJob
    from harness.tasks import load_task_file

    task = load_task_file(write_tiny_task(tmp_path / "registry", task_name, data))
    job = FinetuneJob(task=task, fold=0, track="PrimusM", results=tmp_path / "results", device="cpu")
    return PlannedJob(job, job.job_id())


def test_evaluate_reruns_a_corrupt_run_from_scratch(tmp_path):
    from harness.jobs.executors import LocalExecutor
    from harness.jobs.planning import Planner, prepare_job_folder
    from harness.recipes import SSL3D_2025

    write_tiny_dataset(tmp_path / "data" / "Seg")
    planned = _planned_job(tmp_path)
    prepare_job_folder(planned)
    run = planned.files.run
    run.cases_csv.write_text("case,label\nc1,1\n")
    run.metrics_json.write_text("{not json")
    write_json_atomic(run.done_marker, {"job_id": planned.job_id})
    planner = Planner(ResultsLayout(tmp_path / "results"), SSL3D_2025, LocalExecutor(), "cpu")
    row = planner.row(planned)
    assert (row.state, row.to_run, row.action) == (CORRUPT, True, "rerun (corrupt result: metrics.json)")
    assert str(run.metrics_json) in row.detail
    prepare_job_folder(planned)
    assert not run.done_marker.exists() and not run.metrics_json.exists() and not run.cases_csv.exists()
    assert run.job_json.is_file() and job_state(planned.files, planned.job_id, check_results=True).state == PENDING


# ------------------------------------------------------------------------------ real failing job
def test_failing_job_names_the_file_with_one_traceback_per_log(tmp_path, monkeypatch):
    """nnU-Net's integrity check finds a label value the dataset does not declare; it prints the
    file from a pool process and raises "check text output above". FAILED must name the file."""
    import numpy as np
    import SimpleITK as sitk

    from harness.jobs.evaluate import prepare_job_folder
    from harness.jobs.executors import LocalExecutor

    data = write_tiny_dataset(tmp_path / "data" / "BadLabel")
    label_file = Path(data) / "labelsTr" / "train_001.nii.gz"
    img = sitk.ReadImage(str(label_file))
    arr = sitk.GetArrayFromImage(img)
    arr.flat[0] = 7  # the dataset declares labels 0, 1, 2
    bad = sitk.GetImageFromArray(arr.astype(np.uint8))
    bad.CopyInformation(img)
    sitk.WriteImage(bad, str(label_file))
    planned = _planned_job(tmp_path, "BadLabel", "BadLabel")
    prepare_job_folder(planned)
    for key, value in {
        "nnUNet_n_proc_DA": "0",
        "nnUNet_def_n_proc": "1",
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": str(ROOT),
    }.items():
        monkeypatch.setenv(key, value)
    finished = []
    LocalExecutor().run([planned], lambda kind, job, state: finished.append(state) if state else None)

    files = planned.files
    state = job_state(files, planned.job_id)
    log = files.worker_log.read_text()
    assert state.state == FAILED and state.error_class == ERROR, log
    assert str(label_file) in state.message and "Unexpected labels" in state.message, state.message
    assert "check text output above" not in state.message
    assert log.count("Traceback (most recent call last)") == 1, log
    assert files.run.log.read_text().count("Traceback (most recent call last)") == 1
    text = collect_status(tmp_path / "results").format_text()
    assert (
        f"SegmentationDataError: {data}: nnU-Net dataset check failed: Error: Unexpected labels found in file "
        f"{label_file}" in text
    )


# ------------------------------------------------------------------------------ error messages
def test_see_above_errors_get_the_real_cause_from_the_output(tmp_path):
    exc = RuntimeError(
        "One or more background workers are no longer alive. Exiting. Please check the print "
        "statements above for the actual error message"
    )
    output = (
        "epoch 1\nException in background worker 0:\n bad crop\nTraceback (most recent call last):\n"
        '  File "x.py", line 1, in <module>\n    crop()\n    ^^^^^^\nValueError: bad crop of case_7\n'
    )
    cls, message = worker.describe_failure(exc, tmp_path, output)
    assert cls == ERROR and message.startswith("ValueError: bad crop of case_7 (in a background process")
    cls, message = worker.describe_failure(exc, tmp_path, "no traceback here\n")
    assert cls == OUT_OF_MEMORY and "died without an error message" in message
    assert worker.describe_failure(ValueError("plain"), tmp_path) == (ERROR, "ValueError: plain")


def _fake_job_folder(tmp_path) -> JobFiles:
    files = fake_run(tmp_path / "results", done=False)
    files.worker_log.write_text("an earlier attempt\nTraceback (most recent call last):\nKeyError: old\n")
    return files


def test_disk_full_inside_a_job_names_the_file_and_free_space(tmp_path, monkeypatch):
    files = _fake_job_folder(tmp_path)
    target = files.folder / "work" / "checkpoint_latest.pth"

    def job_that_fills_the_disk(job):
        raise OSError(errno.ENOSPC, "No space left on device", str(target))

    monkeypatch.setattr(worker, "load_job", lambda folder: object())
    monkeypatch.setattr("harness.finetune.run.run_job", job_that_fills_the_disk)
    monkeypatch.setenv(disk.MIN_FREE_ENV, "0")
    with pytest.raises(OSError):
        worker.run_job_folder(files.folder)
    state = job_state(files, "abc")
    assert state.state == FAILED and state.error_class == ERROR
    assert state.message.startswith(f"disk full: {target}, ") and " GB free" in state.message
    assert not files.running_marker.exists()
    # torch.save hides the errno: "file write failed" on a nearly full disk counts too
    monkeypatch.setattr(disk.shutil, "disk_usage", lambda p: Usage(10**12, 10**12 - 10**6, 10**6))
    cls, message = worker.describe_failure(
        RuntimeError(
            "[enforce fail at inline_container.cc:603] . "
            "PytorchStreamWriter failed writing file data/3: file write "
            "failed"
        ),
        files.folder,
    )
    assert (cls, message.split(" (")[0]) == (ERROR, f"disk full: {files.folder}, 1.0 MB free")


def test_a_failed_that_cannot_be_written_is_said_on_stderr(tmp_path, monkeypatch, capsys):
    files = _fake_job_folder(tmp_path)

    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(worker, "load_job", lambda folder: object())
    monkeypatch.setattr("harness.finetune.run.run_job", lambda job: (_ for _ in ()).throw(ValueError("boom")))
    monkeypatch.setattr(JobFiles, "mark_failed", no_space)
    monkeypatch.setenv(disk.MIN_FREE_ENV, "0")
    with pytest.raises(ValueError, match="boom"):
        worker.run_job_folder(files.folder)
    err = capsys.readouterr().err
    assert (
        f"cannot write {files.run.failed_marker} (No space left on device); the job failed: error: "
        "ValueError: boom" in err
    )


def test_worker_checks_free_space_before_the_job_starts(tmp_path, monkeypatch):
    files = _fake_job_folder(tmp_path)
    started = []
    monkeypatch.setattr(worker, "load_job", lambda folder: started.append(folder))
    monkeypatch.setattr(disk.shutil, "disk_usage", lambda p: Usage(10**12, 10**12 - 3 * 10**8, 3 * 10**8))
    monkeypatch.delenv(disk.MIN_FREE_ENV, raising=False)
    with pytest.raises(DiskSpaceError):
        worker.run_job_folder(files.folder)
    assert not started
    state = job_state(files, "abc")
    assert state.state == FAILED and state.error_class == ERROR
    assert state.message == (
        f"DiskSpaceError: {files.folder}: only 300.0 MB free on its file system, the job "
        f"{files.folder} needs at least 5.0 GB (free some space, or set "
        "HARNESS_MIN_FREE_GB to change the threshold)"
    )


# ------------------------------------------------------------------------------ disk checks
def test_check_writable_free_space_message(tmp_path, monkeypatch):
    check_writable(tmp_path, 1, "the test")  # real disk, 1 byte: fine
    monkeypatch.setattr(disk.shutil, "disk_usage", lambda p: Usage(10**12, 10**12 - 1_500_000_000, 1_500_000_000))
    with pytest.raises(DiskSpaceError) as e:
        check_writable(tmp_path / "results" / "new", 2 * disk.GB, "harness evaluate")
    assert str(e.value) == (
        f"{tmp_path / 'results' / 'new'} (to be created in {tmp_path}): only 1.5 GB free on "
        "its file system, harness evaluate needs at least 2.0 GB (free some space, or set "
        "HARNESS_MIN_FREE_GB to change the threshold)"
    )
    assert (e.value.free_bytes, e.value.need_bytes) == (1_500_000_000, 2 * disk.GB)
    assert isinstance(e.value, OSError)
    assert not list(tmp_path.glob(".harness-write-test-*"))


def test_check_writable_unwritable_folder(tmp_path, monkeypatch):
    folder = tmp_path / "readonly"
    folder.mkdir()
    if os.geteuid() != 0:
        folder.chmod(0o500)
        try:
            with pytest.raises(DiskSpaceError, match=rf"^{folder}: not writable: permission denied; the job writes"):
                check_writable(folder, 0, "the job")
        finally:
            folder.chmod(0o700)
    else:  # root writes through chmod 0o500: have the probe file refused as it would be

        def refuse(*args, **kwargs):
            raise PermissionError(errno.EACCES, "Permission denied")

        with monkeypatch.context() as m:
            m.setattr(disk.tempfile, "mkstemp", refuse)
            with pytest.raises(DiskSpaceError, match=rf"^{folder}: not writable: permission denied; the job writes"):
                check_writable(folder, 0, "the job")
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    with pytest.raises(DiskSpaceError, match=rf"{blocker / 'results'}: cannot be created: {blocker} is a file"):
        check_writable(blocker / "results", 0, "harness evaluate")


def test_job_need_bytes(monkeypatch):
    monkeypatch.delenv(disk.MIN_FREE_ENV, raising=False)
    assert job_need_bytes("segmentation") == 5 * disk.GB and job_need_bytes("classification") == 4 * disk.GB
    assert job_need_bytes(None) == 5 * disk.GB
    monkeypatch.setenv(disk.MIN_FREE_ENV, "0.25")
    assert job_need_bytes("segmentation") == disk.GB // 4
    monkeypatch.setenv(disk.MIN_FREE_ENV, "lots")
    with pytest.raises(ValueError, match="HARNESS_MIN_FREE_GB='lots': not a number"):
        job_need_bytes("segmentation")


# ------------------------------------------------------------------------------ progress
def _nnunet_log_lines(path: Path, epochs: int, seconds: list[float]) -> None:
    """Epoch lines as the harness trainer writes them, through nnU-Net's own print_to_log_file."""
    from nnunetv2.training.logging.nnunet_logger import LocalLogger
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    from harness.finetune.nnunet_trainer import SSL3DFinetuneTrainer

    class Stub:
        local_rank, log_file, num_epochs, logger = 0, str(path), epochs, LocalLogger()

    stub = Stub()
    nnUNetTrainer.print_to_log_file(stub, "Epoch 0", also_print_to_console=False)  # nnU-Net's own, 0-based
    t = time.time()
    for e, s in enumerate(seconds):
        for key, value in (
            ("epoch_start_timestamps", t),
            ("epoch_end_timestamps", t + s),
            ("train_losses", 0.5),
            ("val_losses", 0.4),
            ("lrs", 1e-4),
        ):
            stub.logger.log(key, value, e)
        t += s
        time.sleep(s)  # the line's timestamp is when it is written
        nnUNetTrainer.print_to_log_file(stub, SSL3DFinetuneTrainer.epoch_line(stub, e), also_print_to_console=False)


def test_epoch_lines_of_both_logs_are_parsed(tmp_path):
    from harness.finetune.job import RunLog

    log = RunLog(tmp_path / "cls.log", echo=False)
    log("training 8 cases: 3 epochs x 2 batches")
    log("epoch 1/3 loss 0.6931 lr 1.000e-04 (2.1s)")
    log("epoch 2/3 loss 0.6500 lr 9.000e-05 (2.0s)")
    lines = parse_epoch_lines((tmp_path / "cls.log").read_text())
    assert [(e.epoch, e.epochs, e.seconds) for e in lines] == [(1, 3, 2.1), (2, 3, 2.0)]
    assert abs(lines[-1].time - time.time()) < 60

    _nnunet_log_lines(tmp_path / "seg.log", 5, [0.3, 0.3])  # 0.3 s per epoch
    text = (tmp_path / "seg.log").read_text()
    assert ": epoch 2/5 loss 0.5000 val_loss 0.4000 lr 1.000e-04 (0.3s)" in text
    lines = parse_epoch_lines(text)
    assert [(e.epoch, e.epochs, e.seconds) for e in lines] == [(1, 5, 0.3), (2, 5, 0.3)]  # not "Epoch 0"

    p = training_progress(lines, started=None, now=lines[-1].time)
    assert (p["epoch"], p["epochs"]) == (2, 5) and p["epoch_seconds"] == pytest.approx(0.3, abs=0.1)
    assert training_progress([], None, 0.0)["eta_s"] is None


def test_eta_from_epoch_timestamps_of_this_attempt(tmp_path):
    text = (
        "2026-12-02 06:00:00: epoch 1/10 loss 1 (5.0s)\n"  # an earlier attempt, a day before
        "2026-12-03 06:30:00.250000: epoch 2/10 loss 1 (9.0s)\n"
        "2026-12-03 06:31:00.250000: epoch 3/10 loss 1 (9.0s)\n"
        "2026-12-03 06:33:00.250000: epoch 4/10 loss 1 (9.0s)\n"
    )
    lines = parse_epoch_lines(text)
    started = lines[1].time - 100
    p = training_progress(lines, started, now=lines[-1].time + 30)
    assert p["epoch_seconds"] == 90.0 and p["eta_s"] == 6 * 90 - 30
    only_one = training_progress(lines[:1], started=None, now=lines[0].time)
    assert only_one["epoch_seconds"] == 5.0 and only_one["eta_s"] == 45


def test_status_shows_running_jobs_with_epoch_and_eta(tmp_path):
    results = tmp_path / "results"
    files = fake_run(results, done=False)
    marker = {**this_process(), "job_id": "abc", "slurm_job_id": None}
    write_json_atomic(files.running_marker, marker)
    started = time.mktime(time.strptime(marker["started"][:19], "%Y-%m-%dT%H:%M:%S"))
    stamp = lambda t: time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started + t))  # noqa: E731
    files.run.log.write_text(
        f"{stamp(1)}: job abc: entry primus\n{stamp(20)}: epoch 1/5 loss 0.7 (10.0s)\n"
        f"{stamp(30)}: epoch 2/5 loss 0.6 (10.0s)\n"
    )
    queued = fake_run(results, task="Q", done=False)
    write_json_atomic(queued.submitted_marker, {"slurm_job_id": "12_3", "submitted": marker["started"]})
    fresh = fake_run(results, task="F", done=False)
    write_json_atomic(fresh.running_marker, marker)

    report = collect_status(results, now=started + 40)
    assert report.counts[RUNNING] == 3
    text = report.format_text()
    assert (
        f"primus / T / ssl3d-2025 / fold 0: pid {os.getpid()} on {marker['host']}; elapsed 0:00:40, epoch 2/5, "
        f"ETA 0:00:20" in text
    )  # 3 epochs left x 10 s, less 10 s since the last line
    assert "primus / F / ssl3d-2025 / fold 0" in text and "no epoch finished yet, ETA unknown" in text
    assert "primus / Q / ssl3d-2025 / fold 0: queued on Slurm as 12_3; queued for 0:00:40" in text
    running = {r["task"]: r for r in report.to_dict()["running"]}
    assert (running["T"]["epoch"], running["T"]["epochs"], running["T"]["eta_s"], running["T"]["elapsed_s"]) == (
        2,
        5,
        20,
        40,
    )
    assert running["F"]["eta_s"] is None and running["Q"]["queued"] is True
