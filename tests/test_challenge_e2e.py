"""A challenge phase for real: intake, `evaluate --challenge --phase` training real toy jobs,
the phase's leaderboard, feedback and public export, on a tiny Primus-M segmentation task (the
cheapest real nnU-Net run, tests/jobs_helpers.py): two teams and the baseline, one fold. The
evaluate is a subprocess, as an organizer runs it; the commands around it run in-process."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
from jobs_helpers import in_process, lean_env, write_tiny_dataset, write_tiny_task

from harness.runs import ResultsLayout

PY = sys.executable
T0 = 1_750_000_000


def harness(*args, check: int | None = 0) -> subprocess.CompletedProcess:
    out = subprocess.run(
        [PY, "-m", "harness", *map(str, args)], capture_output=True, text=True, env=lean_env(), timeout=1500
    )
    if check is not None:
        assert out.returncode == check, (
            f"exit {out.returncode}\nstdout:\n{out.stdout[-3000:]}\nstderr:\n{out.stderr[-3000:]}"
        )
    return out


@pytest.mark.slow
def test_a_phase_end_to_end(tmp_path, primus64_checkpoint):
    from harness.submission import write_example_submission

    write_tiny_dataset(tmp_path / "data" / "Seg")
    write_tiny_task(tmp_path / "reg", "Tiny", "Seg")
    inbox = tmp_path / "inbox" / "val"
    # north: a copy of the session's 64^3 Primus-M example (a copy, not a link: its time is set
    # below); south: other weights (a Primus-M takes seconds to build)
    (inbox / "north").mkdir(parents=True)
    uploads = [shutil.copyfile(primus64_checkpoint, inbox / "north" / "weights.pth")]
    uploads.append(
        write_example_submission(inbox / "south" / "weights.pth", "PrimusM", seed=1, pretrain_patch=(64,) * 3)
    )
    for n, path in enumerate(uploads):
        os.utime(path, (T0 + n, T0 + n))
    challenge = tmp_path / "challenge.yaml"
    challenge.write_text(
        "name: e2e\ntracks: [PrimusM]\ninbox: inbox\npublic_names: anonymous\n"
        "phases:\n  - {name: val, tasks: reg, submission_limit: 1, public: true, counts: last-valid}\n"
    )
    results = tmp_path / "results"
    common = ("--challenge", challenge, "--results", results)
    in_process("intake", *common)
    out = harness("evaluate", *common, "--phase", "val")
    assert "finished: 3 done" in out.stdout, out.stdout[-2000:]
    in_process("leaderboard", *common, "--phase", "val", "--bootstrap", "20")
    in_process("feedback", *common, "--phase", "val")
    in_process("publish", *common, "--phase", "val")
    layout = ResultsLayout(results)
    north = json.loads(layout.feedback_json("e2e", "val", "north").read_text())
    assert [j["state"] for j in north["jobs"]] == ["done"]
    assert north["results"][0]["rank"] in (1, 2, 3) and north["results"][0]["entries_ranked"] == 3
    public = json.loads(layout.public_leaderboard("e2e", "val", "PrimusM", "json").read_text())
    assert sorted(r["name"] for r in public["rows"]) == ["from-scratch baseline", "team-001", "team-002"]
    assert "north" not in layout.public_page("e2e", "val").read_text()
    assert not (results / "runs").exists()  # everything of the phase stays in its folder
