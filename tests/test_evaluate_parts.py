"""The parts evaluate is made of, each on its own: the intake record (one writer, one reader whose
errors name the file and the field) and the executor registry (each executor's own options reach
it; an unknown name lists the known ones). Unit tests on hand-made files and command lines."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from harness.jobs.errors import EvaluateError
from harness.jobs.evaluate import EvaluateOptions
from harness.jobs.executor_registry import (
    EXECUTOR_KINDS,
    check_executor_options,
    get_executor_kind,
    make_executor,
)
from harness.jobs.executors import LocalExecutor, SlurmExecutor
from harness.jobs.intake import IntakeRecord, PhaseRecord, UploadRecord, read_intake_records
from harness.jobs.matrix import Entry
from harness.runs import ResultsFileError, ResultsLayout


def _record(**changes) -> IntakeRecord:
    values = dict(
        entry="primus",
        file="/subs/primus.pth",
        sha256="ab" * 32,
        valid=True,
        track="PrimusM",
        harness_version="0.1",
        checked="2026-12-07T18:00:00+0000",
        report={"errors": [], "warnings": ["no decoder"], "fingerprint": None},
        recipe="ssl3d-2025",
        task_types=["segmentation"],
    )
    return IntakeRecord(**{**values, **changes})


# ------------------------------------------------------------------------------ intake.json
def test_the_intake_record_round_trips_and_keeps_unknown_keys(tmp_path):
    layout = ResultsLayout(tmp_path)
    record = _record(similar=[{"entry": "other", "share": 0.9}])
    record.write(layout, "primus: valid")
    assert IntakeRecord.read(layout.intake_record("primus")) == record
    assert layout.intake_report("primus").read_text() == "primus: valid\n"
    data = json.loads(layout.intake_record("primus").read_text())
    assert "team" not in data and "jobs" not in data  # unset optional fields are not written
    data["from_a_newer_harness"] = 1
    layout.intake_record("primus").write_text(json.dumps(data))
    again = IntakeRecord.read(layout.intake_record("primus"))
    assert again == record and again.to_dict()["from_a_newer_harness"] == 1
    assert again.accepted_entry() == Entry("primus", Path("/subs/primus.pth"), "ab" * 32, "PrimusM")


def test_a_broken_intake_record_names_the_file_and_the_field(tmp_path):
    layout = ResultsLayout(tmp_path)
    path = layout.intake_record("primus")
    with pytest.raises(ResultsFileError, match="missing") as caught:
        IntakeRecord.read(path)
    assert caught.value.path == path
    _record().write(layout)
    data = json.loads(path.read_text())
    for broken, field in (({**data, "valid": "yes"}, "'valid'"), ({**data, "report": []}, "'report'")):
        path.write_text(json.dumps(broken))
        with pytest.raises(ResultsFileError, match=f"an intake record: field {field} is") as caught:
            IntakeRecord.read(path)
        assert str(caught.value).startswith(f"{path}: ")
    del data["sha256"]
    path.write_text(json.dumps(data))
    with pytest.raises(ResultsFileError, match="not an intake record: no 'sha256'"):
        IntakeRecord.read(path)
    path.write_text("[1, 2]")
    with pytest.raises(ResultsFileError, match="a JSON list, not an object"):
        IntakeRecord.read(path)
    path.write_text('{"entry": ')
    with pytest.raises(ResultsFileError, match="does not parse"):
        IntakeRecord.read(path)
    _record(entry="other").write(layout)
    assert [r.entry for _, r in read_intake_records(layout)] == ["other"]  # the broken one is left out


# ------------------------------------------------------------------------------ executors
def _parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("--executor", default="local")
    for kind in EXECUTOR_KINDS.values():
        kind.add_options(parser)
    return parser.parse_args(list(argv))


def test_an_executors_own_options_reach_it(tmp_path):
    args = _parse("--executor", "slurm", "--partition", "gpu", "--mem-gb", "8", "--sbatch", "exclude=node7")
    check_executor_options(args)
    settings = get_executor_kind("slurm").settings(args)
    executor = make_executor(EvaluateOptions(submissions=[], executor="slurm", **settings), ResultsLayout(tmp_path))
    assert isinstance(executor, SlurmExecutor) and executor.outlives_evaluate
    assert (executor.config.partition, executor.config.mem_gb, executor.config.extra) == (
        "gpu",
        8.0,
        {"exclude": "node7"},
    )
    assert executor.folder == ResultsLayout(tmp_path.resolve()).slurm_dir

    args = _parse("--jobs", "2")
    settings = get_executor_kind("local").settings(args)
    executor = make_executor(EvaluateOptions(submissions=[], device="cpu", **settings), ResultsLayout(tmp_path))
    assert isinstance(executor, LocalExecutor) and not executor.outlives_evaluate
    assert len(executor.slots) == 2


def test_another_executors_options_and_an_unknown_executor_are_errors(tmp_path):
    with pytest.raises(EvaluateError, match="Slurm options given without --executor slurm"):
        check_executor_options(_parse("--partition", "gpu"))
    with pytest.raises(EvaluateError, match="--gpus is the local executor's"):
        check_executor_options(_parse("--executor", "slurm", "--gpus", "0"))
    with pytest.raises(EvaluateError, match=r"unknown executor 'kubernetes'; choose one of local, slurm"):
        make_executor(EvaluateOptions(submissions=[], executor="kubernetes"), ResultsLayout(tmp_path))


# ------------------------------------------------------------------------------ inbox.json
def test_the_phase_record_round_trips_and_a_broken_upload_names_file_index_and_field(tmp_path):
    upload = UploadRecord(
        entry="val-north-0123456789ab",
        team="north",
        name="north/w.pth",
        file="/inbox/val/north/w.pth",
        sha256="01" * 32,
        size_bytes=10,
        mtime_ns=5,
        submitted_at="2026-12-07T18:00:00+00:00",
        track="PrimusM",
        order=1,
        status="accepted",
        rejection=None,
        reasons=[],
        checked="2026-12-07T18:00:01+00:00",
        similar=[],
    )
    record = PhaseRecord("chal", "val", "0.1", [upload, UploadRecord(**{**upload.to_dict(), "order": 2})])
    path = tmp_path / "inbox.json"
    record.write(path)
    assert PhaseRecord.read(path) == record
    data = json.loads(path.read_text())
    assert "withdrawn" not in data["uploads"][0]  # written only where it applies
    data["uploads"][1]["size_bytes"] = True
    path.write_text(json.dumps(data))
    with pytest.raises(ResultsFileError, match=r"uploads\[1\]: an upload record: field 'size_bytes' is True") as e:
        PhaseRecord.read(path)
    assert str(e.value).startswith(str(path))
    del data["uploads"][1]["status"]
    path.write_text(json.dumps(data))
    with pytest.raises(ResultsFileError, match=r"uploads\[1\]: not an upload record: no 'status'"):
        PhaseRecord.read(path)
    path.write_text(json.dumps({"challenge": "chal", "phase": "val", "harness_version": "0.1"}))
    with pytest.raises(ResultsFileError, match="not an intake record: no 'uploads'"):
        PhaseRecord.read(path)
