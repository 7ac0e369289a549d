"""Both recipes end to end on the toy tasks through `make evaluate`, as an organizer runs them: a
Primus-M submission (the track where the recipes differ), fold 0 of every task."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_make_evaluate_runs_both_recipes_on_the_toy_tasks(tmp_path):
    results = tmp_path / "results"
    env = {**os.environ, "nnUNet_def_n_proc": "1", "nnUNet_n_proc_DA": "0"}
    for recipe in ("ssl3d-2025", "ssl3d-2025-lossless"):
        out = subprocess.run(
            [
                "make",
                "--no-print-directory",
                "evaluate",
                "SUB=submissions/example_PrimusM.pth",
                f"RECIPE={recipe}",
                f"RESULTS={results}",
                "EVALUATE_ARGS=--folds 0 --jobs 2",  # two at a time: most of a toy job is one-core start-up
            ],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=1500,
        )
        assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-4000:]
        report = (results / "leaderboard" / recipe / "report.html").read_text()
        assert f"recipe: {recipe} (version 2)" in report
    runs = sorted(p.parent for p in (results / "runs").glob("*/*/*/fold_0/job.json"))
    setups = {(p.parents[2].name, p.parents[1].name, p.parent.name) for p in runs}
    for entry in ("example_PrimusM", "baseline-PrimusM"):
        for task in ("ToyClsShape", "ToySegOneChannel", "ToySegTwoChannel"):
            assert {(entry, task, "ssl3d-2025"), (entry, task, "ssl3d-2025-lossless")} <= setups
    for run in runs:
        job = json.loads((run / "job.json").read_text())
        metrics = json.loads((run / "metrics.json").read_text())
        assert (run / "DONE").is_file() and metrics["job_id"] == job["job_id"] and metrics["recipe"] == job["recipe"]
        values = job["recipe_values"]
        if job["task_type"] == "segmentation":
            assert (
                values["primus_token_order"] == {"ssl3d-2025": "as-is", "ssl3d-2025-lossless": "nnssl"}[job["recipe"]]
            )
            per_label = metrics["aggregates"]["dice"]["per_label"].values()
            assert metrics["aggregates"]["dice"]["mean"] == pytest.approx(sum(per_label) / len(per_label))
        else:
            assert (
                values["primus_encoder"]
                == {"ssl3d-2025": "eva-no-layerscale", "ssl3d-2025-lossless": "primus-m"}[job["recipe"]]
            )
            assert values["split"] == "kfold" and values["split_seed"] == 12345
