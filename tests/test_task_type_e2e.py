"""A task type the harness does not ship, run end to end: a real job of it through `harness
evaluate` (intake, data check, matrix, local executor, worker) to a row of `harness leaderboard`.

Everything the type needs is in this module and registered through public API only
(``HARNESS_TASK_TYPES``, which the CLI and every worker read): its spec, data check, runner,
rescorer, results reader, recipe part and schedule, cases.csv schema and metric. ``counting``
predicts a count per case from one feature by least squares over the training cases of a CSV:
real, tiny work (no torch, no nnU-Net), seconds per job. docs/extending.md lists what it touched.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import yaml
from jobs_helpers import lean_env
from pydantic import BaseModel, ConfigDict, Field

from harness.finetune.job import FinetuneJob, finish_run, run_logged
from harness.leaderboard.model import FLAG_MISSING_CASE, FLAG_OK, PerCaseTask, unit_name
from harness.leaderboard.read_runs import ResultsReader
from harness.metrics.registry import PER_CASE, Metric
from harness.metrics.run_records import CasesSchema
from harness.recipes import RecipePart
from harness.runs import ResultsFileError, ResultsLayout, read_cases_csv
from harness.task_types import GB, TaskType
from harness.tasks.preflight import DataPlan
from harness.tasks.spec import MetricSpec, TaskSpec

COUNTING = "counting"


# ------------------------------------------------------------------------------ the type's parts
class CountingTask(TaskSpec):
    """spec: a CSV of cases (``case, feature, count, split``), ``split`` train or test."""

    type: Literal["counting"]
    counts: str
    metrics: tuple[MetricSpec, ...] = (MetricSpec(name="abs_error"),)
    schedule: dict[str, dict[str, Any]] = Field(default_factory=dict)

    @property
    def fold_ids(self) -> tuple[int, ...]:
        return (0,)

    def required_paths(self) -> list[tuple[str, Path, str]]:
        return [("counts", self.resolve(self.counts), "file")]

    def summary(self) -> str:
        return f"{self.name:<24} counting       data {self.resolve(self.counts)}"


class CountingSchedule(BaseModel):
    """schedule: the ridge penalty of the fit (a task file may override it per track)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    ridge: float = Field(0.0, ge=0)


class CountingRecipe(RecipePart):
    """recipe part: how every recipe fits a counting job (none lists the type: these defaults)."""

    schedule_model = CountingSchedule
    schedules: dict[str, CountingSchedule]
    fit: Literal["least-squares"] = "least-squares"


def plan_counting(task: CountingTask) -> DataPlan:
    """data check: the CSV is read and hashed (the jobs' data identity); a bad one is a problem."""
    plan = DataPlan(task)
    path = task.resolve(task.counts)
    plan.files[f"counts/{path.name}"] = (path, "text")  # type: ignore[assignment]  # hashed, not read as an image
    frame = pd.read_csv(path, dtype={"case": str})
    missing = sorted({"case", "feature", "count", "split"} - set(frame.columns))
    if missing:
        plan.problem(path, f"missing column(s) {missing}")
    elif not (frame["split"] == "test").any():
        plan.problem(path, "no test case")
    return plan


def _fit(train: pd.DataFrame, ridge: float) -> tuple[float, float]:
    x, y = train["feature"].to_numpy(float), train["count"].to_numpy(float)
    xm, ym = x.mean(), y.mean()
    slope = float(((x - xm) * (y - ym)).sum() / (((x - xm) ** 2).sum() + ridge))
    return slope, float(ym - slope * xm)


def _cases(test: pd.DataFrame, slope: float, intercept: float) -> pd.DataFrame:
    predicted = slope * test["feature"].to_numpy(float) + intercept
    true = test["count"].to_numpy(float)
    return pd.DataFrame(
        {"case": test["case"].to_numpy(), "true": true, "predicted": predicted, "abs_error": np.abs(predicted - true)}
    )


def run_counting(job: FinetuneJob) -> dict:
    """runner: fit on the training cases, predict the test cases, write the run folder."""
    started = time.time()

    def body(log) -> dict:
        frame = pd.read_csv(job.task.resolve(job.task.counts), dtype={"case": str})
        slope, intercept = _fit(frame[frame["split"] == "train"], job.schedule.ridge)
        log(f"counting: slope {slope:.3f}, intercept {intercept:.3f}")
        cases = _cases(frame[frame["split"] == "test"], slope, intercept)
        aggregates = {"mean_abs_error": float(cases["abs_error"].mean()), "slope": slope, "intercept": intercept}
        extra = {"schedule": job.schedule.model_dump(mode="json")}
        return finish_run(job, cases, aggregates, extra=extra, started=started)

    return run_logged(job, body)


def rescore_counting(task, run, old) -> tuple[pd.DataFrame, dict]:
    """rescorer: the errors again from the kept predictions (``old``: the run's ``RunRecords``)."""
    cases = old.cases.copy()
    cases["abs_error"] = (cases["predicted"] - cases["true"]).abs()
    return cases, {"aggregates": {**old.metrics.aggregates, "mean_abs_error": float(cases["abs_error"].mean())}}


#: metrics: what a counting task ranks by (the registry lists them beside its own).
ABS_ERROR = Metric("abs_error", False, (0.0, 1000.0), PER_CASE, COUNTING, "|predicted - true count|")
COUNTING_METRICS = (ABS_ERROR,)
#: cases schema: cases.csv is case, abs_error (the per-case metric), true and predicted counts.
COUNTING_CASES = CasesSchema(COUNTING, keys=("case",), extra=("true", "predicted"))


def _read_counting_runs(task: str, jobs: list) -> tuple[list, tuple[Metric, ...], tuple[str, ...], dict]:
    tables, out = {}, []
    for job in jobs:
        if job.status == FLAG_OK:
            try:
                frame = read_cases_csv(job.run.cases_csv)
                tables[job.entry, job.fold] = frame.set_index("case")["abs_error"].astype(float)
            except (ResultsFileError, KeyError) as e:
                job = job.failed(f"{job.run.cases_csv}: {e}")
        out.append(job)
    return out, (ABS_ERROR,), (), tables


def _counting_task(task, entries, metrics, classes, tables, status) -> PerCaseTask:
    units = sorted({(fold, case) for (_, fold), table in tables.items() for case in table.index})
    values = np.full((1, len(entries), len(units)), np.nan)
    flags = np.full(values.shape, FLAG_OK, dtype=object)
    for e, entry in enumerate(entries):
        for u, (fold, case) in enumerate(units):
            table = tables.get((entry, fold))
            if status[entry, fold] != FLAG_OK:
                flags[:, e, u] = status[entry, fold]
            elif table is None or case not in table.index:
                flags[:, e, u] = FLAG_MISSING_CASE
            else:
                values[0, e, u] = table[case]
    cases = tuple(unit_name(f, c) for f, c in units)
    return PerCaseTask.from_values(task, entries, cases, metrics, values, flags)


#: results reader: the leaderboard's task of its runs, ranked per case by the absolute error.
COUNTING_RESULTS = ResultsReader(_read_counting_runs, _counting_task)

ENTRY = TaskType(
    COUNTING,
    spec=f"{__name__}:CountingTask",
    data_check=f"{__name__}:plan_counting",
    runner=f"{__name__}:run_counting",
    rescorer=f"{__name__}:rescore_counting",
    results=f"{__name__}:COUNTING_RESULTS",
    recipe=f"{__name__}:CountingRecipe",
    min_free_bytes=GB // 1000,
    cases=f"{__name__}:COUNTING_CASES",
    metrics=f"{__name__}:COUNTING_METRICS",
)


# ------------------------------------------------------------------------------ the test
def _harness(*args, env: dict) -> subprocess.CompletedProcess:
    out = subprocess.run(
        [sys.executable, "-m", "harness", *map(str, args)], capture_output=True, text=True, env=env, timeout=600
    )
    assert out.returncode == 0, f"exit {out.returncode}\nstdout:\n{out.stdout}\nstderr:\n{out.stderr}"
    return out


def test_a_registered_type_runs_through_evaluate_to_a_leaderboard_row(tmp_path, resencl_checkpoint):
    registry = tmp_path / "tasks"
    registry.mkdir()
    rng = np.random.default_rng(0)
    feature = rng.uniform(0, 10, 12)
    frame = pd.DataFrame(
        {
            "case": [f"c{i:02d}" for i in range(12)],
            "feature": feature.round(3),
            "count": (3 * feature + 2 + rng.normal(0, 0.5, 12)).round(3),
            "split": ["train"] * 8 + ["test"] * 4,
        }
    )
    frame.to_csv(registry / "counts.csv", index=False)
    task = {"name": "Cells", "type": COUNTING, "counts": "counts.csv", "schedule": {"ResEncL": {"ridge": 0.5}}}
    (registry / "cells.yaml").write_text(yaml.safe_dump(task))
    env = {
        **lean_env(),
        "HARNESS_TASK_TYPES": f"{__name__}:ENTRY",
        "PYTHONPATH": f"{lean_env()['PYTHONPATH']}:{Path(__file__).parent}",  # where the worker finds this module
    }
    results = tmp_path / "results"
    out = _harness(
        "evaluate", resencl_checkpoint, "--tasks", registry, "--results", results, "--device", "cpu", env=env
    )
    assert "FAILED" not in out.stdout

    layout = ResultsLayout(results)
    runs = [run for run in layout.run_folders() if run.task == "Cells"]
    assert runs and all(run.is_done() for run in runs)
    job = json.loads(runs[0].job_json.read_text())
    assert job["task_type"] == COUNTING and job["recipe"] == "ssl3d-2025"
    assert job["recipe_values"] == {"fit": "least-squares", "fixed_fields": [], "schedule": {"ridge": 0.5}}
    cases = read_cases_csv(runs[0].cases_csv)
    assert len(cases) == 4 and cases["abs_error"].max() < 3  # a fit, not a guess

    _harness("leaderboard", "--results", results, env=env)
    board = pd.read_csv(layout.leaderboard_csv(layout.leaderboard_dir("ssl3d-2025"), "ResEncL"))
    entry = Path(resencl_checkpoint).stem
    assert entry in board.astype(str).to_numpy().ravel().tolist(), board
