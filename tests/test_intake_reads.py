"""What intake reads of an upload: the size limit before any byte, and one hash per upload (the
validation takes the digest intake computed instead of reading the file a second time for it)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from harness.cli import main
from harness.runs import ResultsLayout

REPO = Path(__file__).resolve().parents[1]

CHALLENGE = """\
name: readchal
tracks: [ResEncL, PrimusM]
inbox: inbox
phases:
  - name: val
    tasks: {tasks}
    submission_limit: 3
"""


@pytest.fixture
def hashed(monkeypatch) -> list[str]:
    """Every file sha256_file reads, wherever it is called from."""
    import harness.submission.checkpoint as checkpoint
    import harness.submission.validate as validate

    calls: list[str] = []
    real = checkpoint.sha256_file

    def counting(path, *args, **kwargs):
        calls.append(Path(path).name)
        return real(path, *args, **kwargs)

    import harness.challenge.intake  # noqa: F401  (the modules that call it, loaded)
    import harness.jobs.intake  # noqa: F401

    for module in [checkpoint, validate, *(m for n, m in sys.modules.items() if n.startswith("harness."))]:
        if getattr(module, "sha256_file", None) is real:
            monkeypatch.setattr(module, "sha256_file", counting)
    return calls


def test_an_oversized_upload_is_rejected_unread_and_a_valid_one_hashed_once(
    resencl_checkpoint, tmp_path, hashed, monkeypatch, capsys
):
    import harness.challenge.intake as intake

    inbox = tmp_path / "inbox" / "val" / "team-a"
    inbox.mkdir(parents=True)
    os.link(resencl_checkpoint, inbox / "ok.pth")
    big = inbox / "huge.pth"
    with open(big, "wb") as f:  # sparse: its size, not its bytes
        f.truncate(resencl_checkpoint.stat().st_size + 1)
    monkeypatch.setattr(intake, "DEFAULT_MAX_SIZE", resencl_checkpoint.stat().st_size)
    challenge = tmp_path / "challenge.yaml"
    challenge.write_text(CHALLENGE.format(tasks=REPO / "task_registry" / "toy"))
    rc = main(["intake", "--challenge", str(challenge), "--results", str(tmp_path / "results")])
    out = capsys.readouterr()
    assert rc == 0, out.out + out.err
    record = json.loads(ResultsLayout(tmp_path / "results").phase_intake("readchal", "val").read_text())
    by_name = {u["name"]: u for u in record["uploads"]}
    assert by_name["team-a/ok.pth"]["status"] == "accepted"
    huge = by_name["team-a/huge.pth"]
    assert (huge["status"], huge["rejection"], huge["sha256"]) == ("rejected", "invalid", None)
    assert "over the limit" in huge["reasons"][0] and "it was not read" in huge["reasons"][0]
    assert huge["entry"] == "val-team-a-unread"
    assert hashed == ["ok.pth"]  # the big one never, the valid one once (intake; validation reuses it)
    # a second intake finds nothing new: neither file is read again
    assert main(["intake", "--challenge", str(challenge), "--results", str(tmp_path / "results")]) == 0
    assert hashed == ["ok.pth"]


def test_a_file_that_changes_while_it_is_validated_is_invalid(resencl_checkpoint, tmp_path, hashed, monkeypatch):
    from harness.submission import validate_submission
    from harness.submission.checkpoint import sha256_file
    from harness.submission.validate import _Intake

    path = tmp_path / "moving.pth"
    os.link(resencl_checkpoint, path)
    digest = sha256_file(path)
    hashed.clear()
    assert validate_submission(path, sha256=digest, canary=False).valid
    assert hashed == []  # the caller's digest is taken, the file not hashed again
    real = _Intake._check_safe_load

    def touched(self):
        os.utime(self.path, ns=(1, 1))  # the organizer's copy is overwritten while it is read
        return real(self)

    monkeypatch.setattr(_Intake, "_check_safe_load", touched)
    report = validate_submission(path, sha256=digest, canary=False)
    assert not report.valid and report.errors == ["the file changed during intake"]
