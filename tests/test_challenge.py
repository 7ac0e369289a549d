"""A challenge through the real commands (the CLI's ``main``, in this process; one check runs it
as a subprocess): the challenge file, intake over two phases and three
teams (an upload over quota, a garbage upload, the same bytes from two teams, a late upload),
idempotency, the matrix `evaluate --challenge --phase --dry-run` plans, and, on hand-written run
folders of the phase, its leaderboard, the per-team feedback and the public export.

Uploads are ResEnc-L examples: one is written, the others are that checkpoint saved again with a
different ignored key (other bytes, same weights), so only one network is ever built.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from jobs_helpers import in_process, write_finished_run

from harness.challenge.config import ChallengeError, load_challenge
from harness.runs import ResultsLayout

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
T0 = 1_750_000_000  # 2025-06-15, inside the validation window


def harness(*args, check: int | None = 0, process: bool = False) -> subprocess.CompletedProcess:
    """``harness ARGS`` from the repository root: through the CLI's own ``main`` in this process
    (an interpreter and torch import saved per command), or with ``process`` as ``python -m
    harness`` in a subprocess."""
    if process:
        env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
        command = [PY, "-m", "harness", *map(str, args)]
        out = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT, timeout=900)
    else:
        with contextlib.chdir(ROOT):
            out = in_process(*args, check=None)
    if check is not None:
        assert out.returncode == check, f"exit {out.returncode}\nstdout:\n{out.stdout}\nstderr:\n{out.stderr}"
    return out


CHALLENGE_YAML = """\
name: toychal
description: a test challenge
tracks: [ResEncL, PrimusM]
recipe: ssl3d-2025
inbox: inbox
teams:
  alpha: {{display_name: Alpha Lab}}
phases:
  - name: validation
    tasks: {tasks}
    submission_limit: 2
    opens: 2025-06-01
    closes: 2025-07-01T00:00:00Z
    public: true
    counts: last-valid
  - name: test
    tasks: {tasks}
    submission_limit: 1
    closes: 2025-08-01T00:00:00Z
    public: false
    counts: each
    manifest: test_manifest.csv
"""


# ------------------------------------------------------------------------------ the file
def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "challenge.yaml"
    (tmp_path / "test_manifest.csv").write_text("team,file\n")
    path.write_text(text)
    return path


def test_the_example_challenge_loads():
    challenge = load_challenge(ROOT / "challenges" / "toy.yaml")
    assert [p.name for p in challenge.phases] == ["validation", "test"]
    assert challenge.phases[0].tasks == (ROOT / "task_registry" / "toy").resolve()
    assert challenge.inbox == (ROOT / "submissions").resolve()


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (
            lambda t: t.replace("recipe: ssl3d-2025", "recipe: ssl3d-2024"),
            "field 'recipe': unknown recipe 'ssl3d-2024'",
        ),
        (
            lambda t: t.replace("[ResEncL, PrimusM]", "[ResEncL, PrimusL]"),
            "field 'tracks': unknown track(s) ['PrimusL']",
        ),
        (lambda t: t.replace("counts: each", "counts: best"), "field 'phases.1.counts'"),
        (lambda t: t.replace("submission_limit: 1", "submission_limit: 0"), "field 'phases.1.submission_limit'"),
        (
            lambda t: t.replace("public: true", "public: true\n    publc: false"),
            "field 'phases.0.publc': unknown field",
        ),
        (lambda t: t + "colour: blue\n", "field 'colour': unknown field"),
        (lambda t: t.replace("2025-07-01T00:00:00Z", "2025-07-01T00:00:00"), "field 'phases.0.closes'"),
        (lambda t: t.replace("2025-07-01T00:00:00Z", "2025-05-01T00:00:00Z"), "must be after opens"),
        (lambda t: t.replace("name: test", "name: validation"), "phase name(s) ['validation'] appear more than once"),
        (lambda t: t.replace("name: test", "name: baseline"), "field 'phases.1.name'"),
        (lambda t: t.replace("manifest: test_manifest.csv", "manifest: nowhere.csv"), "field 'phases.1.manifest'"),
        (lambda t: t.replace("teams:\n  alpha: {display_name: Alpha Lab}\n", ""), None),
    ],
)
def test_a_bad_challenge_file_names_the_file_and_the_field(tmp_path, edit, expected):
    text = edit(CHALLENGE_YAML.format(tasks=ROOT / "task_registry" / "toy"))
    path = _write(tmp_path, text)
    if expected is None:
        assert load_challenge(path).teams == {}
        return
    with pytest.raises(ChallengeError) as caught:
        load_challenge(path)
    assert str(path) in str(caught.value) and expected in str(caught.value), str(caught.value)


def test_a_missing_task_registry_is_named(tmp_path):
    path = _write(tmp_path, CHALLENGE_YAML.format(tasks="no/such/registry"))
    with pytest.raises(ChallengeError, match=r"field 'phases.0.tasks': task registry folder .* does not exist"):
        load_challenge(path)


def test_the_cli_reports_a_bad_file_with_exit_2(tmp_path):
    path = _write(
        tmp_path, CHALLENGE_YAML.format(tasks=ROOT / "task_registry" / "toy").replace("counts: each", "counts: x")
    )
    out = harness("intake", "--challenge", path, check=2, process=True)
    assert f"{path}: field 'phases.1.counts'" in out.stderr


# ------------------------------------------------------------------------------ the world
@pytest.fixture(scope="module")
def world(module_dir, toy_data) -> dict:
    import torch

    from harness.submission import write_example_submission

    root = module_dir("challenge")
    base = write_example_submission(root / "base.pth", "ResEncL", pretrain_patch=(64, 64, 64))
    checkpoint = torch.load(base, map_location="cpu", weights_only=True, mmap=True)

    def variant(path: Path, tag: str, when: float) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({**checkpoint, "note": tag}, path)  # other bytes, same (valid) weights
        os.utime(path, (when, when))
        return path

    val = root / "inbox" / "validation"
    a1 = variant(val / "alpha" / "a1.pth", "a1", T0 + 10)
    a2 = variant(val / "alpha" / "a2.pth", "a2", T0 + 20)
    a3 = variant(val / "alpha" / "a3.pth", "a3", T0 + 30)  # third of a limit of 2: over quota
    b1 = variant(val / "beta" / "b1.pth", "b1", T0 + 15)
    copy = val / "beta" / "copy_of_alpha.pth"
    shutil.copyfile(a1, copy)  # alpha's bytes, later, by beta (a copy: a link would share a1's mtime)
    os.utime(copy, (T0 + 40, T0 + 40))
    broken = val / "gamma" / "broken.pth"
    broken.parent.mkdir(parents=True)
    broken.write_bytes(b"PK\x03\x04 not really a checkpoint" * 50)
    os.utime(broken, (T0 + 5, T0 + 5))
    (val / "gamma" / "notes.txt").write_text("not an upload\n")
    late = variant(val / "gamma" / "late.pth", "late", T0 + 40 * 86400)  # after the window closed

    test_dir = root / "test_uploads"
    g1 = variant(test_dir / "g1.pth", "g1", T0)
    a_test = test_dir / "alpha_again.pth"
    os.link(a2, a_test)  # alpha's own validation bytes in the test phase: allowed
    (root / "test_manifest.csv").write_text(
        "team,track,file,submitted_at,display_name,method_name\n"
        "gamma,ResEncL,test_uploads/g1.pth,2025-07-10T12:00:00Z,Gamma Group,MAE-3D\n"
        "alpha,,test_uploads/alpha_again.pth,2025-07-11T08:00:00+02:00,,VoCo\n"
        "beta,ResEncL,test_uploads/missing.pth,2025-07-12T00:00:00Z,,\n"
        "gamma,ResEncL,test_uploads/g1.pth,2025-08-02T00:00:00Z,,\n"
    )
    # the shipped toy registry beside a copy of the session's toy data (its paths are ../../data/toy/...)
    shutil.copytree(toy_data, root / "data" / "toy")
    registry = root / "task_registry" / "toy"
    shutil.copytree(ROOT / "task_registry" / "toy", registry)
    challenge = root / "challenge.yaml"
    challenge.write_text(CHALLENGE_YAML.format(tasks=registry))
    results = root / "results"
    first = harness("intake", "--challenge", challenge, "--results", results)
    return {
        "root": root,
        "challenge": challenge,
        "results": results,
        "first": first,
        "files": {"a1": a1, "a2": a2, "a3": a3, "b1": b1, "copy": copy, "broken": broken, "late": late, "g1": g1},
    }


def _record(world, phase: str) -> dict:
    return json.loads(ResultsLayout(world["results"]).phase_intake("toychal", phase).read_text())


def _by_name(world, phase: str) -> dict[str, dict]:
    return {u["name"]: u for u in _record(world, phase)["uploads"]}


def test_intake_decides_each_upload_with_its_reason(world):
    ups = _by_name(world, "validation")
    assert sorted(ups) == sorted(
        [
            "alpha/a1.pth",
            "alpha/a2.pth",
            "alpha/a3.pth",
            "beta/b1.pth",
            "beta/copy_of_alpha.pth",
            "gamma/broken.pth",
            "gamma/late.pth",
        ]
    )  # notes.txt is no upload
    verdict = {n: (u["status"], u["rejection"]) for n, u in ups.items()}
    assert verdict == {
        "alpha/a1.pth": ("accepted", None),
        "alpha/a2.pth": ("accepted", None),
        "alpha/a3.pth": ("rejected", "quota"),
        "beta/b1.pth": ("accepted", None),
        "beta/copy_of_alpha.pth": ("rejected", "duplicate"),
        "gamma/broken.pth": ("rejected", "invalid"),
        "gamma/late.pth": ("rejected", "window"),
    }
    a1 = ups["alpha/a1.pth"]
    assert a1["entry"] == f"validation-alpha-{a1['sha256'][:12]}" and a1["track"] == "ResEncL"
    copy = ups["beta/copy_of_alpha.pth"]
    assert copy["duplicate_of"] == a1["entry"] and a1["entry"] in copy["reasons"][0] and "'alpha'" in copy["reasons"][0]
    quota = ups["alpha/a3.pth"]["reasons"][0]
    assert "accepts 2 submission(s) per team and track" in quota
    assert ups["alpha/a1.pth"]["entry"] in quota and ups["alpha/a2.pth"]["entry"] in quota
    assert ups["gamma/broken.pth"]["reasons"]  # the validation's own words
    assert "after phase 'validation' closed" in ups["gamma/late.pth"]["reasons"][0]
    # upload order: time, then name; gamma's broken file came first
    assert [u["name"] for u in _record(world, "validation")["uploads"]][0] == "gamma/broken.pth"


def test_the_manifest_phase_and_the_teams(world):
    ups = _by_name(world, "test")
    assert {n: (u["status"], u["rejection"]) for n, u in ups.items()} == {
        "gamma/g1.pth": ("accepted", None),
        "alpha/alpha_again.pth": ("accepted", None),  # its own validation bytes: no duplicate
    }
    # the late row names the same file and bytes as an upload already taken: known, not new
    assert "missing.pth does not exist (yet)" in world["first"].stdout
    assert ups["gamma/g1.pth"]["method_name"] == "MAE-3D" and ups["gamma/g1.pth"]["time_source"] == "manifest"
    assert ups["alpha/alpha_again.pth"]["submitted_at"] == "2025-07-11T08:00:00+02:00"
    teams = json.loads(ResultsLayout(world["results"]).challenge_teams("toychal").read_text())["teams"]
    assert teams["alpha"]["display_name"] == "Alpha Lab"  # the challenge file's
    assert teams["gamma"]["display_name"] == "Gamma Group"  # the manifest's
    assert teams["beta"]["display_name"] == "beta"
    assert sorted(t["anonymous_id"] for t in teams.values()) == ["team-001", "team-002", "team-003"]


def test_per_entry_records_let_status_list_the_rejections(world):
    phase = ResultsLayout(world["results"]).phase("toychal", "validation")
    ups = _by_name(world, "validation")
    record = json.loads(phase.intake_record(ups["gamma/broken.pth"]["entry"]).read_text())
    assert record["valid"] is False and record["rejection"] == "invalid" and record["report"]["errors"]
    out = harness("status", "--results", phase.root)
    assert f"rejected at intake: {ups['alpha/a3.pth']['entry']}" in out.stdout


def test_a_second_intake_changes_nothing_and_a_new_upload_is_taken(world):
    layout = ResultsLayout(world["results"])
    paths = [layout.phase_intake("toychal", p) for p in ("validation", "test")] + [layout.challenge_teams("toychal")]
    before = [p.read_bytes() for p in paths]
    out = harness("intake", "--challenge", world["challenge"], "--results", world["results"])
    assert "phase validation: 0 new upload(s)" in out.stdout and "phase test: 0 new upload(s)" in out.stdout
    assert [p.read_bytes() for p in paths] == before
    # gamma's test-phase bytes show up in beta's validation folder: a duplicate across phases
    stolen = world["root"] / "inbox" / "validation" / "beta" / "b_new.pth"
    shutil.copyfile(world["files"]["g1"], stolen)
    os.utime(stolen, (T0 + 50, T0 + 50))
    out = harness("intake", "--challenge", world["challenge"], "--results", world["results"], "--phase", "validation")
    assert "phase validation: 1 new upload(s) (0 accepted, 1 rejected)" in out.stdout
    ups = _by_name(world, "validation")
    assert ups["beta/b_new.pth"]["rejection"] == "duplicate"
    assert ups["beta/b_new.pth"]["duplicate_of"] == _by_name(world, "test")["gamma/g1.pth"]["entry"]
    after = json.loads(paths[0].read_text())["uploads"]
    assert [u for u in after if u["name"] != "beta/b_new.pth"] == json.loads(before[0])["uploads"]


def test_an_intake_stopped_halfway_keeps_its_verdicts(tmp_path, monkeypatch):
    import harness.submission
    from harness.challenge.intake import intake_phase

    path = _write(tmp_path, CHALLENGE_YAML.format(tasks=ROOT / "task_registry" / "toy"))
    for n, team in enumerate(("alpha", "beta", "gamma")):
        upload = tmp_path / "inbox" / "validation" / team / "w.pth"
        upload.parent.mkdir(parents=True)
        upload.write_bytes(f"not a checkpoint {n}".encode() * 100)  # invalid: a quick validation
        os.utime(upload, (T0 + n, T0 + n))
    challenge = load_challenge(path)
    validate, calls = harness.submission.validate_submission, []

    def interrupted(*args, **kwargs):
        calls.append(args[0])
        if len(calls) == 2:
            raise KeyboardInterrupt  # the organizer's Ctrl-C during the second validation
        return validate(*args, **kwargs)

    monkeypatch.setattr(harness.submission, "validate_submission", interrupted)
    results = tmp_path / "results"
    with pytest.raises(KeyboardInterrupt):
        intake_phase(challenge, challenge.phases[0], results, log=lambda m: None)
    layout = ResultsLayout(results)
    first = json.loads(layout.phase_intake("toychal", "validation").read_text())["uploads"]
    assert [(u["name"], u["rejection"]) for u in first] == [("alpha/w.pth", "invalid")]
    assert list(json.loads(layout.challenge_teams("toychal").read_text())["teams"]) == ["alpha"]
    outcome = intake_phase(challenge, challenge.phases[0], results, log=lambda m: None)
    assert [u.name for u in outcome.new] == ["beta/w.pth", "gamma/w.pth"]  # alpha is not validated again
    assert calls.count(calls[0]) == 1 and outcome.uploads[0].to_dict() == first[0]


def _dry_run_entries(world, phase: str, results: Path | None = None) -> set[str]:
    results = results or world["results"]
    out = harness("evaluate", "--challenge", world["challenge"], "--phase", phase, "--results", results, "--dry-run")
    lines = out.stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("entry "))
    end = next(i for i, line in enumerate(lines) if line.startswith(("local executor", "cost plan", "dry run")))
    return {line.split()[0] for line in lines[start + 1 : end] if line}


def test_evaluate_dry_run_plans_the_counted_entries_of_the_phase(world):
    ups = _by_name(world, "validation")
    # last-valid: alpha's a2 replaces a1; beta's b1; no rejected upload
    assert _dry_run_entries(world, "validation") == {
        ups["alpha/a2.pth"]["entry"],
        ups["beta/b1.pth"]["entry"],
        "baseline-ResEncL",
    }
    test = _by_name(world, "test")
    assert _dry_run_entries(world, "test") == {
        test["gamma/g1.pth"]["entry"],
        test["alpha/alpha_again.pth"]["entry"],
        "baseline-ResEncL",
    }


def test_evaluate_challenge_usage_errors(world):
    out = harness("evaluate", "--challenge", world["challenge"], "--results", world["results"], check=2)
    assert "--challenge FILE and --phase NAME go together" in out.stderr
    out = harness("evaluate", "--challenge", world["challenge"], "--phase", "final", "--dry-run", check=2)
    assert "no phase 'final'; phases: validation, test" in out.stderr
    out = harness(
        "evaluate", world["files"]["a1"], "--challenge", world["challenge"], "--phase", "test", "--dry-run", check=2
    )
    assert "give no SUB" in out.stderr
    fresh = world["root"] / "fresh_results"
    out = harness("evaluate", "--challenge", world["challenge"], "--phase", "test", "--results", fresh, check=2)
    assert "has no intake record" in out.stderr and "harness intake" in out.stderr


# ------------------------------------------------------------------------------ ranked phase
HIDDEN = "hidden_case_"


def _fake_run(phase_root: Path, entry: str, task: str, dice: list[float], track: str = "ResEncL") -> None:
    write_finished_run(phase_root, entry, task, dice, track=track, case_prefix=HIDDEN)


@pytest.fixture(scope="module")
def ranked(world) -> dict:
    """The validation phase with hand-written finished runs: a2 best, b1 second, the baseline
    last, and a1 (superseded by a2) better than all, which must not be ranked."""
    ups = _by_name(world, "validation")
    phase_root = ResultsLayout(world["results"]).phase("toychal", "validation").root
    entries = {
        ups["alpha/a2.pth"]["entry"]: [0.9, 0.8, 0.85, 0.9],
        ups["beta/b1.pth"]["entry"]: [0.7, 0.6, 0.65, 0.7],
        "baseline-ResEncL": [0.5, 0.4, 0.45, 0.5],
        ups["alpha/a1.pth"]["entry"]: [0.99, 0.99, 0.99, 0.99],
    }
    for entry, dice in entries.items():
        _fake_run(phase_root, entry, "ToySegOneChannel", dice)
    out = harness(
        "leaderboard", "--challenge", world["challenge"], "--phase", "validation", "--results", world["results"],
        "--bootstrap", "50",
    )  # fmt: skip
    return {"ups": ups, "leaderboard": out, "phase_root": phase_root}


def test_the_phase_leaderboard_ranks_only_what_counts(world, ranked):
    import pandas as pd

    board_dir = ranked["phase_root"] / "leaderboard" / "ssl3d-2025"
    board = pd.read_csv(board_dir / "leaderboard_ResEncL.csv")
    ups = ranked["ups"]
    assert list(board["entry"]) == [ups["alpha/a2.pth"]["entry"], ups["beta/b1.pth"]["entry"], "baseline-ResEncL"]
    assert {"rank_lo", "rank_hi"} <= set(board.columns)
    assert not (world["results"] / "leaderboard").exists()  # nothing outside the phase's folder
    meta = json.loads((board_dir / "leaderboard.json").read_text())
    counted = sorted([ups["alpha/a2.pth"]["entry"], ups["beta/b1.pth"]["entry"]])
    assert meta["entries_filter"] == counted and meta["source"] == str(ranked["phase_root"])
    assert not [p for p in ranked["phase_root"].rglob("*") if p.is_symlink()]  # read in place, no view of links


def test_feedback_tells_each_team_its_own_results_only(world, ranked):
    out = harness("feedback", "--challenge", world["challenge"], "--phase", "validation", "--results", world["results"])
    assert "wrote feedback for 3 team(s)" in out.stdout
    layout = ResultsLayout(world["results"])
    ups = ranked["ups"]
    alpha = json.loads(layout.feedback_json("toychal", "validation", "alpha").read_text())
    assert alpha["display_name"] == "Alpha Lab"
    by_file = {u["file"]: u for u in alpha["uploads"]}
    assert by_file["a1.pth"]["superseded_by"] == ups["alpha/a2.pth"]["entry"] and not by_file["a1.pth"]["counts"]
    assert by_file["a3.pth"]["status"] == "rejected" and "per team and track" in by_file["a3.pth"]["reasons"][0]
    assert alpha["quota"] == {
        "ResEncL": {"used": 2, "limit": 2, "remaining": 0},
        "PrimusM": {"used": 0, "limit": 2, "remaining": 2},
    }
    [result] = alpha["results"]
    assert result["entry"] == ups["alpha/a2.pth"]["entry"] and result["rank"] == 1
    assert result["rank_lo"] >= 1 and result["rank_hi"] >= result["rank_lo"] and result["entries_ranked"] == 3
    jobs = {(j["entry"], j["task"]): j["state"] for j in alpha["jobs"]}
    assert jobs[(ups["alpha/a2.pth"]["entry"], "ToySegOneChannel")] == "done"
    assert jobs[(ups["alpha/a2.pth"]["entry"], "ToyClsShape")] == "not started"
    beta = json.loads(layout.feedback_json("toychal", "validation", "beta").read_text())
    dup = next(u for u in beta["uploads"] if u["file"] == "copy_of_alpha.pth")
    assert dup["reasons"] == ["the same bytes as an earlier upload by another team: the same weights count once, "
                              "for the team that uploaded them first"]  # fmt: skip
    display = {"alpha": ["Alpha Lab"], "beta": [], "gamma": ["Gamma Group"]}
    for team in display:
        for kind in (layout.feedback_json, layout.feedback_html):
            text = kind("toychal", "validation", team).read_text()
            assert HIDDEN not in text, (team, kind)
            for other in set(display) - {team}:
                assert f"validation-{other}-" not in text and f"test-{other}-" not in text, (team, other)
                assert not [name for name in display[other] if name in text], (team, other)
    html = layout.feedback_html("toychal", "validation", "gamma").read_text()
    assert "<script" not in html and "broken.pth" in html and "rejected" in html


def test_feedback_finds_the_runs_a_recipe_shares(world, ranked):
    """Under ssl3d-2025-lossless a ResEnc-L job lives in the ssl3d-2025 folder (the two recipes
    agree on it): the feedback of a lossless challenge must still see it done."""
    from harness.challenge.feedback import team_feedback
    from harness.challenge.teams import load_teams
    from harness.jobs.intake import PhaseRecord
    from harness.jobs.status import collect_status

    lossless = load_challenge(world["challenge"]).model_copy(update={"recipe": "ssl3d-2025-lossless"})
    phase = lossless.get_phase("validation")
    status = collect_status(ranked["phase_root"]).jobs
    names = load_teams(ResultsLayout(world["results"]), "toychal")
    record = PhaseRecord.read(ResultsLayout(world["results"]).phase_intake("toychal", "validation"))
    data = team_feedback(lossless, phase, "alpha", record, status, {}, {}, names)
    jobs = {(j["entry"], j["task"]): j["state"] for j in data["jobs"]}
    assert jobs[(ranked["ups"]["alpha/a2.pth"]["entry"], "ToySegOneChannel")] == "done"


def test_publish_exports_a_public_phase_and_holds_back_a_private_one(world, ranked):
    import pandas as pd

    layout = ResultsLayout(world["results"])
    harness("publish", "--challenge", world["challenge"], "--phase", "validation", "--results", world["results"])
    public = pd.read_csv(layout.public_leaderboard("toychal", "validation", "ResEncL", "csv"))
    assert list(public["name"]) == ["Alpha Lab", "beta", "from-scratch baseline"]
    assert "entry" not in public.columns
    page = layout.public_page("toychal", "validation").read_text()
    data = json.loads(layout.public_leaderboard("toychal", "validation", "ResEncL", "json").read_text())
    assert data["rows"][0]["rank"] == 1 and data["phase"] == "validation"
    for text in (page, json.dumps(data)):
        assert HIDDEN not in text and "validation-alpha-" not in text
    harness(
        "publish", "--challenge", world["challenge"], "--phase", "validation", "--results", world["results"],
        "--names", "anonymous",
    )  # fmt: skip
    anon = layout.public_page("toychal", "validation").read_text()
    assert "Alpha Lab" not in anon and ">beta<" not in anon and "team-00" in anon
    out = harness(
        "publish", "--challenge", world["challenge"], "--phase", "test", "--results", world["results"], check=1
    )
    assert "is not public" in out.stderr and not layout.phase_public("toychal", "test").exists()
    out = harness(
        "publish", "--challenge", world["challenge"], "--phase", "test", "--results", world["results"], "--publish",
        check=2,
    )  # fmt: skip
    assert "has no leaderboard" in out.stderr


# ------------------------------------------------------------------------------ in a browser
def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


def _render(browser: str, page: Path, tmp_path: Path) -> str:
    """The page's DOM as a headless Chromium built it; a screenshot at 1400 px must come out too."""
    flags = ["--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={tmp_path / 'profile'}"]
    try:
        dom = subprocess.run([browser, *flags, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=60)
        shot = tmp_path / f"{page.parent.name}.png"
        subprocess.run(
            [browser, *flags, "--window-size=1400,900", f"--screenshot={shot}", page.as_uri()],
            capture_output=True,
            timeout=60,
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        pytest.skip(f"headless Chromium did not run: {e}")
    if dom.returncode != 0 or "<body" not in dom.stdout:
        pytest.skip(f"headless Chromium could not start: {dom.stderr.strip()[-300:]}")
    assert shot.is_file() and shot.stat().st_size > 1000, f"no screenshot of {page}"
    return dom.stdout


def test_feedback_and_public_pages_in_a_headless_browser(world, ranked, tmp_path):
    browser = _chromium()
    if browser is None:
        pytest.skip("no Chromium on PATH (the distribution's chromium package)")
    layout = ResultsLayout(world["results"])
    harness("feedback", "--challenge", world["challenge"], "--phase", "validation", "--results", world["results"])
    harness("publish", "--challenge", world["challenge"], "--phase", "validation", "--results", world["results"])
    ups = ranked["ups"]
    alpha = _render(browser, layout.feedback_html("toychal", "validation", "alpha"), tmp_path)
    assert "feedback for Alpha Lab" in alpha and ups["alpha/a2.pth"]["entry"] in alpha
    assert "rank <b>1</b> of 3" in alpha and "a3.pth" in alpha and "over the limit" in alpha
    assert "ResEncL 2 of 2 used (0 left); PrimusM 0 of 2 used (2 left)" in alpha
    assert HIDDEN not in alpha and "validation-beta-" not in alpha and "gamma" not in alpha
    public = _render(browser, layout.public_page("toychal", "validation"), tmp_path)
    assert "Alpha Lab" in public and "from-scratch baseline" in public and "<table>" in public
    assert HIDDEN not in public and "validation-alpha-" not in public and "broken.pth" not in public


# ------------------------------------------------------------------------------ withdrawal
def test_the_organizers_withdraw_an_accepted_upload(world, ranked, tmp_path):
    results = tmp_path / "results"
    shutil.copytree(world["results"], results, symlinks=True)  # the module's world stays as it is
    ups = ranked["ups"]
    a1, a2 = ups["alpha/a1.pth"]["entry"], ups["alpha/a2.pth"]["entry"]
    common = ("--challenge", world["challenge"], "--results", results)
    out = harness("intake", *common, "--phase", "validation", "--withdraw", a2, check=2)
    assert "--withdraw ENTRY needs --phase NAME and --reason TEXT" in out.stderr
    out = harness("intake", *common, "--phase", "validation", "--withdraw", "no-such", "--reason", "x", check=2)
    assert "no upload with entry id 'no-such'" in out.stderr
    reason = "trained on the validation cases (rule 4)"
    out = harness("intake", *common, "--phase", "validation", "--withdraw", a2, "--reason", reason)
    assert f"{a2}: WITHDRAWN" in out.stdout
    record = {
        u["entry"]: u
        for u in json.loads(ResultsLayout(results).phase_intake("toychal", "validation").read_text())["uploads"]
    }
    assert (record[a2]["status"], record[a2]["rejection"]) == ("rejected", "withdrawn") and reason in record[a2][
        "reasons"
    ][0]
    out = harness("intake", *common, "--phase", "validation", "--withdraw", a2, "--reason", reason, check=2)
    assert "was not accepted (withdrawn)" in out.stderr
    # the old tables were ranked with a2 in the field: publishing them is refused
    out = harness("publish", *common, "--phase", "validation", check=2)
    assert "is older than the phase's entries" in out.stderr
    assert f"no longer counted: {a2}" in out.stderr and f"counted now, not ranked: {a1}" in out.stderr
    # last-valid: alpha's earlier upload counts again, in the matrix and in the ranking, even
    # before it has a run (here its run folder is gone): listed, every job pending
    assert _dry_run_entries(world, "validation", results) == {a1, ups["beta/b1.pth"]["entry"], "baseline-ResEncL"}
    shutil.rmtree(ResultsLayout(results).phase("toychal", "validation").runs_dir / a1)
    harness("leaderboard", *common, "--phase", "validation", "--bootstrap", "0")
    import pandas as pd

    board = pd.read_csv(
        ResultsLayout(results).phase("toychal", "validation").leaderboard_dir("ssl3d-2025") / "leaderboard_ResEncL.csv"
    )
    assert a1 in set(board["entry"]) and a2 not in set(board["entry"])
    assert int(board.set_index("entry").loc[a1, "pending_jobs"]) == 1 and board["entry"].iloc[-1] == a1
    harness("publish", *common, "--phase", "validation")  # the rebuilt tables are the phase's
    harness("feedback", *common, "--phase", "validation", "--team", "alpha")
    alpha = json.loads(ResultsLayout(results).feedback_json("toychal", "validation", "alpha").read_text())
    by_entry = {u["entry"]: u for u in alpha["uploads"]}
    assert by_entry[a2]["status"] == "rejected" and reason in by_entry[a2]["reasons"][0] and by_entry[a1]["counts"]
    assert alpha["quota"]["ResEncL"] == {"used": 2, "limit": 2, "remaining": 0}  # the slot stays used
    phase_root = ResultsLayout(results).phase("toychal", "validation")
    assert json.loads(phase_root.intake_record(a2).read_text())["valid"] is False
    assert f"rejected at intake: {a2}" in harness("status", "--results", phase_root.root).stdout
