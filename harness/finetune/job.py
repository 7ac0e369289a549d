"""One fine-tuning job (entry x task x fold) and the run-folder lifecycle shared by the
segmentation and classification runners: start (job.json), finish (cases.csv, metrics.json,
then DONE, written last), provenance."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import random
import shutil
import subprocess
import time
import traceback
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from harness import __version__
from harness.metrics.run_records import RunMetrics, write_run_records
from harness.recipes import RECIPES, SSL3D_2025, Recipe, fingerprint
from harness.runs import JobSpec, ResultsLayout, RunFolder, baseline_entry, entry_name
from harness.tasks.preflight import TaskData


@dataclass(frozen=True)
class FinetuneJob:
    """What determines a run's result. ``submission=None`` is the track's from-scratch baseline.

    The recipe enters the identity only through what this job uses of it (``recipe_values``):
    a job that two recipes make identically has one identity and one run folder, named after the
    first shipped recipe that makes it (``Recipe.setup_name``)."""

    task: Any  # SegmentationTask | ClassificationTask
    fold: int
    track: str
    results: Path
    submission: Path | None = None
    entry: str | None = None
    device: str = "cpu"
    recipe: Recipe = SSL3D_2025
    submission_sha256: str | None = None
    #: The content hash of every file of the task this job reads (``harness.tasks.preflight``):
    #: part of the identity, so a changed file reruns the job.
    data: TaskData | None = None
    #: 0: the ranked run; r >= 1: its r-th seed repeat (training noise; never ranked)
    repeat: int = 0

    def __post_init__(self) -> None:
        if int(self.repeat) < 0:
            raise ValueError(f"repeat must be >= 0, got {self.repeat}")
        if self.entry is None:
            name = baseline_entry(self.track) if self.submission is None else entry_name(Path(self.submission).stem)
            object.__setattr__(self, "entry", name)

    @property
    def is_baseline(self) -> bool:
        return self.submission is None

    @cached_property
    def setup(self) -> Recipe:
        """The recipe this job's run folder and identity are named after."""
        return RECIPES[self.recipe.setup_name(self.task.type, self.track)]

    @property
    def layout(self) -> ResultsLayout:
        return ResultsLayout(self.results)

    @cached_property
    def run(self) -> RunFolder:
        assert self.entry is not None  # __post_init__ names it
        return self.layout.run(self.entry, self.task.name, self.setup.name, self.fold, self.repeat)

    @cached_property
    def schedule(self):
        """The recipe's schedule for this track with the task's overrides."""
        return self.task.schedule_for(self.track, self.recipe)

    @cached_property
    def recipe_values(self) -> dict:
        """Every recipe choice this job makes, resolved (task overrides applied)."""
        values = self.recipe.applicable_values(self.task.type, self.track)
        values["schedule"] = self.schedule.model_dump(mode="json")
        return values | self.task.recipe_extras(self.recipe)

    @property
    def seed(self) -> int:
        """task seed * 1000 + fold for the ranked run; a repeat adds ``REPEAT_SEED_STRIDE`` * r."""
        return int(self.task.seed) * 1000 + int(self.fold) + REPEAT_SEED_STRIDE * int(self.repeat)

    def description(self) -> dict:
        return {
            "entry": self.entry,
            "track": self.track,
            "is_baseline": self.is_baseline,
            "task": self.task.name,
            "task_type": self.task.type,
            "task_file": str(self.task.source) if self.task.source else None,
            "fold": int(self.fold),
            "submission": str(self.submission) if self.submission else None,
            "submission_sha256": self.submission_sha256,
            "task_spec_hash": self.task.spec_hash(),
            "task_training_hash": self.task.training_hash(),
            "recipe": self.setup.name,
            "recipe_version": self.setup.version,
            "recipe_values": self.recipe_values,
            "recipe_values_hash": fingerprint(self.recipe_values),
            "data_fingerprint": self.data.fingerprint if self.data is not None else None,
            "device": self.device,
            "seed": self.seed,
            "repeat": int(self.repeat),
        }

    def spec(self) -> JobSpec:
        """What job.json holds: the description, the job id and the data manifest (every file
        read, with its sha256: what names a changed file later)."""
        return JobSpec(
            **self.description(),
            job_id=self.job_id(),
            data_files=self.data.as_dict() if self.data is not None else None,
        )

    def job_id(self) -> str:
        """Stable hash of what determines the result: unchanged inputs, same id."""
        return job_id_of(self.description())


#: A seed repeat's seed lies this far from its ranked run's (beyond any task seed * 1000 + fold).
REPEAT_SEED_STRIDE = 1_000_003

#: What a job's identity is made of (fields of its description, i.e. of job.json); ``repeat``
#: only when it is not 0, so the ranked runs keep the ids they had before repeats existed.
JOB_ID_FIELDS = (
    "entry",
    "track",
    "task",
    "fold",
    "submission_sha256",
    "task_spec_hash",
    "recipe",
    "recipe_version",
    "recipe_values_hash",
    "data_fingerprint",
    "repeat",
)


def job_id_of(description: Mapping[str, Any]) -> str:
    """The job id of a job's description (``FinetuneJob.description()`` or job.json's fields)."""
    key = {k: description.get(k) for k in JOB_ID_FIELDS if k != "repeat" or description.get("repeat")}
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


class RunLog:
    """Appends timestamped lines to the run's ``train.log`` (and, with ``echo``, to stdout).
    nnU-Net's trainer writes its own lines into the same file."""

    def __init__(self, path: Path, echo: bool = True):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.echo = echo

    def __call__(self, message: str, *, echo: bool | None = None) -> None:
        """Append ``message`` with a timestamp; ``echo`` (default: the log's) also prints it."""
        line = f"{time.strftime('%Y-%m-%d %H:%M:%S')}: {message}\n"
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(line)
        if self.echo if echo is None else echo:
            print(line, end="", flush=True)


def seed_everything(seed: int) -> None:
    """Python, numpy's global generator (nnU-Net's and batchgeneratorsv2's augmentation draw from
    it) and torch (CPU and CUDA)."""
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def load_job_submission(job: FinetuneJob, log: RunLog):
    """The job's submission, checked against what the job was planned with; None for a baseline."""
    if job.submission is None:
        return None
    from harness.submission import load_submission

    sub = load_submission(job.submission)
    if sub.track != job.track:
        raise ValueError(f"{job.submission}: the submission is for track {sub.track}, the job for {job.track}")
    if job.submission_sha256 and sub.sha256 != job.submission_sha256:
        raise ValueError(
            f"{job.submission}: sha256 {sub.sha256} differs from the job's {job.submission_sha256} "
            "(the file changed since the job was planned)"
        )
    log(f"submission {sub.path} sha256 {sub.sha256} track {sub.track} pre-training patch {sub.pretrain_patch_size}")
    return sub


def recommended_patch(sub) -> tuple[int, int, int] | None:
    """The downstream patch the submission's plan recommends (None for a baseline)."""
    if sub is None:
        return None
    patch = tuple(int(p) for p in (sub.plan.get("recommended_downstream_patchsize") or (160, 160, 160)))
    assert len(patch) == 3  # load_submission checked the plan: 3 positive integers
    return patch


def run_logged(job: FinetuneJob, body) -> dict:
    """Start the run, call ``body(log)``, and log any failure's traceback to ``train.log``
    before re-raising it (the job matrix decides what a failure means). The console gets one
    line: whoever catches the exception prints its traceback there (the worker, or Python for
    `harness finetune`), so every log holds it once."""
    start_run(job)
    log = RunLog(job.run.log)
    try:
        return body(log)
    except Exception as e:
        log(f"FAILED: {type(e).__name__}: {e}\n{traceback.format_exc()}", echo=False)
        first = (str(e).strip().splitlines() or [""])[0]
        print(f"FAILED: {type(e).__name__}: {first} (traceback in {log.path})", flush=True)
        raise


def start_run(job: FinetuneJob) -> RunFolder:
    """Create the run folder and write job.json; clears a stale FAILED marker."""
    run = job.run
    run.path.mkdir(parents=True, exist_ok=True)
    run.failed_marker.unlink(missing_ok=True)
    job.spec().write(run)
    return run


#: Set (to anything) to keep a finished job's scratch folder, checkpoints included.
KEEP_CHECKPOINTS_ENV = "HARNESS_KEEP_CHECKPOINTS"


def finish_run(
    job: FinetuneJob,
    cases: pd.DataFrame,
    aggregates: dict,
    classes: Sequence[str] = (),
    extra: dict | None = None,
    started: float | None = None,
) -> dict:
    """Write cases.csv and metrics.json (``write_run_records``: the task's ranking metrics, the
    run's ``classes``, the job's description and provenance) and read them back, drop the scratch
    folder (checkpoints are big; kept as ``checkpoints/`` when ``HARNESS_KEEP_CHECKPOINTS`` is
    set, as `harness evaluate --keep-checkpoints` does), then DONE."""
    run = job.run
    fields = {
        **job.description(),
        "job_id": job.job_id(),
        "provenance": collect_provenance(job.device),
        **(extra or {}),
    }
    if started is not None:
        fields["wall_seconds"] = round(time.time() - started, 1)
    metrics = RunMetrics.of_task(job.task, classes, aggregates, fields)
    # read back before DONE: a done run is one its readers accept
    written = write_run_records(run, job.task.type, metrics, cases)
    shutil.rmtree(run.checkpoints_dir, ignore_errors=True)  # an earlier attempt's
    if os.environ.get(KEEP_CHECKPOINTS_ENV) and run.work_dir.is_dir():
        run.work_dir.rename(run.checkpoints_dir)
    else:
        shutil.rmtree(run.work_dir, ignore_errors=True)
    run.mark_done({"job_id": job.job_id(), "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
    return written.metrics.as_dict()  # exactly what readers of the run folder will see


def collect_provenance(device: str = "cpu") -> dict:
    """Versions, code revision and machine: enough to tell two results apart later."""
    import torch

    versions: dict[str, str | None] = {
        "harness": __version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
    }
    for pkg in ("nnunetv2", "dynamic_network_architectures", "batchgeneratorsv2", "numpy", "SimpleITK", "scikit-learn"):
        versions[pkg] = _package_version(pkg)
    device_name = "cpu"
    if str(device).startswith("cuda") and torch.cuda.is_available():
        device_name = torch.cuda.get_device_name()
    return {
        "versions": versions,
        "git_revision": harness_git_revision(),
        "device": str(device),
        "device_name": device_name,
        "hostname": platform.node(),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def _package_version(name: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    for candidate in (name, name.replace("_", "-")):
        try:
            return version(candidate)
        except PackageNotFoundError:
            continue
    return None


def harness_git_revision() -> str | None:
    root = Path(__file__).resolve().parents[2]
    try:
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:
        return None
    dirty = subprocess.run(
        ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
        capture_output=True,
        text=True,
        timeout=10,
    ).stdout.strip()
    return out.stdout.strip() + ("+dirty" if dirty else "")
