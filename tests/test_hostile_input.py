"""What participants and their platforms control, through the real commands (the CLI's ``main``,
in this process): team ids that are no names (in a manifest and as inbox folder names) never
become paths outside the results folder; display names never become spreadsheet formulas; a
manifest saved by a spreadsheet (byte-order mark) is read; an impossible date in a challenge or
task file is an error naming the file and the line, not a traceback.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import subprocess
from pathlib import Path

import pytest
from jobs_helpers import write_finished_run, write_tiny_dataset, write_tiny_task

from harness.cli import main
from harness.runs import ResultsLayout

ROOT = Path(__file__).resolve().parents[1]
T0 = 1_750_000_000  # 2025-06-15


def harness(*args, check: int | None = 0) -> subprocess.CompletedProcess:
    """``harness ARGS`` through the CLI's ``main`` in this process; argparse's exit is a code too."""
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        try:
            code = main([str(a) for a in args])
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 2
    out = subprocess.CompletedProcess(args, code, stdout.getvalue(), stderr.getvalue())
    if check is not None:
        assert out.returncode == check, f"exit {out.returncode}\nstdout:\n{out.stdout}\nstderr:\n{out.stderr}"
    assert "Traceback" not in out.stderr, out.stderr
    return out


CHALLENGE = """\
name: hostile
tracks: [ResEncL]
inbox: inbox
phases:
  - name: validation
    tasks: {tasks}
    submission_limit: 2
    opens: 2025-06-01
    public: true
  - name: test
    tasks: {tasks}
    submission_limit: 2
    opens: 2025-06-01
    public: true
    manifest: manifest.csv
"""

#: Inbox folder names a platform export could produce: none is a usable team id.
HOSTILE_FOLDERS = ("alpha\n", "x\\..\\..\\..\\evil", "$(touch pwned)", "a b")
DISPLAY = {"eq": '=HYPERLINK("x")', "at": "@SUM(1)", "dash": "-2+3"}


def _registry(root: Path) -> Path:
    """A registry of one tiny segmentation task, ``Tiny``, with its data (intake reads the phase's tasks)."""
    write_tiny_dataset(root / "data" / "Seg")
    write_tiny_task(root / "registry", "Tiny")
    return root / "registry"


def _files(root: Path) -> set[Path]:
    return {p for p in root.rglob("*")}


def _fake_run(phase_root: Path, entry: str, dice: list[float]) -> None:
    write_finished_run(phase_root, entry, "Tiny", dice, case_prefix="c")


@pytest.fixture(scope="module")
def hostile(module_dir) -> dict:
    """A challenge whose validation inbox has team folders that are no names (and one good team,
    with a broken upload), and whose test manifest has three accepted teams with formula-like
    display names beside rows whose team is ``../..``-ish or an absolute path. Intake, the test
    phase's leaderboard (hand-written runs), feedback and publish all run; every file that
    appeared since the inputs were written is listed in ``new``."""
    import torch

    from harness.submission import write_example_submission

    root = module_dir("hostile")
    base = write_example_submission(root / "base.pth", "ResEncL", pretrain_patch=(64, 64, 64))
    checkpoint = torch.load(base, map_location="cpu", weights_only=True, mmap=True)
    uploads = root / "uploads"
    uploads.mkdir()
    for team in DISPLAY:
        torch.save({**checkpoint, "note": team}, uploads / f"{team}.pth")  # other bytes, same weights
    for n, team in enumerate((*HOSTILE_FOLDERS, "good")):
        path = root / "inbox" / "validation" / team / "w.pth"
        path.parent.mkdir(parents=True)
        path.write_bytes(f"not a checkpoint {n}".encode() * 50)
        os.utime(path, (T0 + n, T0 + n))
    escapes = {"deep": "../" * 8 + "escaped_m", "absolute": str(root / "abs_team"), "baseline": "baseline/../../x"}
    for n, key in enumerate(escapes):
        (uploads / f"{key}.pth").write_bytes(f"garbage {n}".encode() * 50)
    rows = [["team", "track", "file", "submitted_at", "display_name"]]
    rows += [[team, "ResEncL", f"uploads/{team}.pth", "2025-06-20T00:00:00Z", name] for team, name in DISPLAY.items()]
    rows += [[team, "ResEncL", f"uploads/{key}.pth", "2025-06-21T00:00:00Z", "x"] for key, team in escapes.items()]
    with open(root / "manifest.csv", "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows(rows)
    challenge = root / "challenge.yaml"
    challenge.write_text(CHALLENGE.format(tasks=_registry(root)))
    results = root / "work" / "results"
    before = _files(root)

    common = ("--challenge", challenge, "--results", results)
    intake = harness("intake", *common)
    layout = ResultsLayout(results)
    record = json.loads(layout.phase_intake("hostile", "test").read_text())
    entries = {u["team"]: u["entry"] for u in record["uploads"] if u["status"] == "accepted"}
    phase_root = layout.phase("hostile", "test").root
    dice = {"eq": [0.9, 0.8, 0.9], "at": [0.7, 0.7, 0.6], "dash": [0.2, 0.1, 0.2]}  # dash below the baseline
    for team, values in dice.items():
        _fake_run(phase_root, entries[team], values)
    _fake_run(phase_root, "baseline-ResEncL", [0.5, 0.5, 0.5])
    harness("leaderboard", *common, "--phase", "test", "--bootstrap", "0")
    feedback = {phase: harness("feedback", *common, "--phase", phase) for phase in ("validation", "test")}
    explicit = harness("feedback", *common, "--phase", "test", "--team", escapes["deep"], check=2)
    publish = harness("publish", *common, "--phase", "test")
    return {
        "root": root,
        "results": results,
        "layout": layout,
        "intake": intake,
        "feedback": feedback,
        "explicit": explicit,
        "publish": publish,
        "escapes": escapes,
        "entries": entries,
        "new": _files(root) - before,
    }


def test_hostile_team_ids_write_nothing_outside_the_results_folder(hostile):
    results = hostile["results"]
    outside = sorted(p for p in hostile["new"] if results not in p.parents and p not in (results, results.parent))
    assert outside == [], outside
    assert not (hostile["root"] / "abs_team").exists() and not (hostile["root"] / "escaped_m").exists()
    # what was written is all there, inside: per-entry records of the rejected uploads too
    layout = hostile["layout"]
    for phase, count in (("validation", len(HOSTILE_FOLDERS) + 1), ("test", len(DISPLAY) + 3)):
        record = json.loads(layout.phase_intake("hostile", phase).read_text())
        assert len(record["uploads"]) == count
        for upload in record["uploads"]:
            assert layout.phase("hostile", phase).intake_record(upload["entry"]).is_file(), upload["entry"]


def test_hostile_team_ids_are_rejected_saying_why(hostile):
    layout = hostile["layout"]
    rejected = {}
    for phase in ("validation", "test"):
        for u in json.loads(layout.phase_intake("hostile", phase).read_text())["uploads"]:
            if u["rejection"] == "unusable":
                rejected[u["team"]] = u
    assert set(rejected) == {*HOSTILE_FOLDERS, *hostile["escapes"].values()}
    for team, upload in rejected.items():
        assert f"team id {team!r} is not usable" in upload["reasons"][0], upload
        assert upload["entry"].split("-")[1] == "unusable" and "/" not in upload["entry"], upload["entry"]
        assert f"REJECTED (unusable): team id {team!r} is not usable" in hostile["intake"].stdout
    # feedback skips them, saying why; asked for by name it refuses
    for phase, out in hostile["feedback"].items():
        for team in (t for t, u in rejected.items() if u["entry"].startswith(f"{phase}-")):
            assert f"team id {team!r} is no name" in out.stderr and "no feedback is written" in out.stderr, out.stderr
    assert "wrote feedback for 1 team(s)" in hostile["feedback"]["validation"].stdout  # the good team
    assert "wrote feedback for 3 team(s)" in hostile["feedback"]["test"].stdout
    assert layout.feedback_json("hostile", "validation", "good").is_file()
    assert f"team id {hostile['escapes']['deep']!r} is no name" in hostile["explicit"].stderr


def test_the_layout_refuses_a_name_that_leaves_the_results_folder(tmp_path):
    from harness.runs import UnsafePathError

    layout = ResultsLayout(tmp_path / "results")
    for bad in ("../../x", "/etc", "..", ".hidden", "a/b", "a\nb", ""):
        with pytest.raises(UnsafePathError, match="team id") as caught:
            layout.feedback_json("c", "p", bad)
        assert repr(bad) in str(caught.value)
        with pytest.raises(UnsafePathError, match="entry"):
            layout.intake_record(bad)
        with pytest.raises(UnsafePathError, match="entry"):
            layout.run(bad, "T", "ssl3d-2025", 0)
    assert layout.feedback_json("c", "p", "team-1") == tmp_path / "results/challenges/c/p/feedback/team-1/feedback.json"


def test_display_names_are_never_spreadsheet_formulas(hostile):
    layout = hostile["layout"]
    text = layout.public_leaderboard("hostile", "test", "ResEncL", "csv").read_text()
    rows = list(csv.DictReader(io.StringIO(text)))
    names = [r["name"] for r in rows]
    assert names == ["'" + DISPLAY["eq"], "'" + DISPLAY["at"], "from-scratch baseline", "'" + DISPLAY["dash"]]
    assert '"\'=HYPERLINK(""x"")"' in text and ",'@SUM(1)," in text
    # numbers stay numbers: the entry below the baseline has a negative gain, written bare
    gain = next(c for c in rows[0] if c.startswith("gain_"))
    assert float(rows[-1][gain]) < 0 and not rows[-1][gain].startswith("'"), rows[-1]
    # the JSON and the page keep the names as given (the page escaped)
    data = json.loads(layout.public_leaderboard("hostile", "test", "ResEncL", "json").read_text())
    assert [r["name"] for r in data["rows"]][:2] == [DISPLAY["eq"], DISPLAY["at"]]
    assert "=HYPERLINK(&quot;x&quot;)" in layout.public_page("hostile", "test").read_text()


def test_leaderboard_csvs_neutralise_text_and_read_back_as_written(tmp_path):
    """Every CSV the leaderboard writes for people; feedback and publish read it back exactly."""
    from harness.challenge.pages import read_phase_leaderboard

    lines = ["track,entry,task,metric,case,value,is_baseline"]
    for entry, base, values in (
        ("=cmd|x", "false", (0.9, 0.8)),
        ("-minus", "false", (0.3, 0.2)),
        ("b", "true", (0.5, 0.5)),
    ):
        lines += [f"ResEncL,{entry},@T,dice,{case},{v},{base}" for case, v in zip(("c1", "+c2"), values)]
    source = tmp_path / "long.csv"
    source.write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    harness("leaderboard", "--from-csv", source, "--out", out, "--bootstrap", "20")
    for name in ("leaderboard", "stability", "significance"):
        for row in csv.reader(io.StringIO((out / f"{name}_ResEncL.csv").read_text())):
            for cell in row:
                assert not cell.startswith(("=", "+", "-", "@")) or _number(cell), (name, cell)
    private = (out / "private" / "cases_ResEncL.csv").read_text()
    assert "'+c2" in private and "'=cmd|x" in private
    board = (out / "leaderboard_ResEncL.csv").read_text()
    assert "'=cmd|x" in board and "'-minus" in board
    boards, _ = read_phase_leaderboard(out, ["ResEncL"])
    assert [r.entry for r in boards["ResEncL"]] == ["=cmd|x", "b", "-minus"]


def _number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


# ------------------------------------------------------------------------------ manifests, labels
def _manifest_challenge(tmp_path: Path, header: str) -> Path:
    upload = tmp_path / "u.pth"
    upload.write_bytes(b"not a checkpoint" * 50)
    # what Excel's "CSV UTF-8" writes: a byte-order mark, then the text
    (tmp_path / "manifest.csv").write_bytes(("\ufeff" + header + "\nalpha,u.pth,2025-06-20T00:00:00Z\n").encode())
    challenge = tmp_path / "challenge.yaml"
    challenge.write_text(CHALLENGE.format(tasks=_registry(tmp_path)))
    return challenge


def test_a_manifest_with_a_byte_order_mark_is_read(tmp_path):
    challenge = _manifest_challenge(tmp_path, "team,file,submitted_at")
    harness("intake", "--challenge", challenge, "--results", tmp_path / "r", "--phase", "test")
    [upload] = json.loads(ResultsLayout(tmp_path / "r").phase_intake("hostile", "test").read_text())["uploads"]
    assert upload["team"] == "alpha" and upload["rejection"] == "invalid"


def test_a_missing_manifest_column_names_the_bytes_found(tmp_path):
    challenge = _manifest_challenge(tmp_path, "\u200bteam,file,submitted_at")  # a zero-width space
    out = harness("intake", "--challenge", challenge, "--results", tmp_path / "r", "--phase", "test", check=2)
    assert "missing column(s) ['team']" in out.stderr and "['\\u200bteam', 'file', 'submitted_at']" in out.stderr


def test_a_labels_file_saved_by_a_spreadsheet(tmp_path):
    from harness.tasks.labels import read_labels_file

    path = tmp_path / "labels.csv"
    path.write_bytes("\ufeffcase_id,label\nc1,cube\nc2,sphere\n".encode())
    table = read_labels_file(path, ["cube", "sphere"])
    assert table.problems == [] and table.labels == {"c1": "cube", "c2": "sphere"}
    path.write_bytes("case_id,\u200blabel\nc1,cube\n".encode())  # a zero-width space
    [problem] = read_labels_file(path, ["cube", "sphere"]).problems
    assert "found ['case_id', '\\u200blabel']" in problem, problem


# ------------------------------------------------------------------------------ impossible dates
@pytest.mark.parametrize("date", ["2025-02-30T00:00:00Z", "2025-13-01"])
def test_an_impossible_date_in_a_challenge_file(tmp_path, date):
    (tmp_path / "manifest.csv").write_text("team,file\n")
    text = CHALLENGE.format(tasks=ROOT / "task_registry" / "toy").replace("opens: 2025-06-01", f"opens: {date}", 2)
    challenge = tmp_path / "challenge.yaml"
    challenge.write_text(text)
    line = text.splitlines().index(f"    opens: {date}") + 1
    out = harness("intake", "--challenge", challenge, "--results", tmp_path / "r", check=2)
    assert f"{challenge}: line {line}, field 'phases.0.opens': '{date}' is not a date" in out.stderr, out.stderr
    assert not (tmp_path / "r").exists()


def test_an_impossible_date_in_a_task_file(tmp_path):
    path = write_tiny_task(tmp_path / "registry", "T0")
    path.write_text(path.read_text() + "notes:\n  checked: 2025-02-30\n")
    line = len(path.read_text().splitlines())
    out = harness("tasks", "--tasks", tmp_path / "registry", check=2)
    assert f"{path}: line {line}, field 'notes.checked': '2025-02-30' is not a date" in out.stderr, out.stderr
    assert "day is out of range for month" in out.stderr
