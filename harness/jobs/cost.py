"""The cost plan: what the jobs a run would start will cost, said before anything starts.

Per track and task: the jobs to run and an estimate of device hours and of the disk their
results keep, from what was measured, never from a guess:

* the wall time of finished jobs of the same task, track, recipe values and device kind in this
  results folder (the best estimate: the same job for another entry);
* else, for a task type whose entry has a ``cost`` (a ``CostModel``: segmentation's is
  ``SEGMENTATION_COST``), everything such a job does, each part from what was measured: its
  training and validation iterations (the model's ``iterations`` of its schedule; segmentation:
  epochs x (iterations_per_epoch + val_iterations_per_epoch)) at a rate in iterations per second
  for the same task type, track, patch, batch size and device kind (from
  finished jobs of any task here, whose train_seconds hold both; or, for a type the model calls
  ``benchmarked``, from the GPU benchmark's report,
  ``results/bench/gpu_train.json`` of `make bench-gpu`, at the precision and compile setting the
  jobs run with, ``job_settings``, a validation iteration counted as a training one), the
  prediction of its held-out cases (the model's ``held_out_cases``, at the seconds per case of
  finished jobs of the type at that track, patch and device) and the rest of a job (preprocessing,
  loading, scoring: wall less training and prediction of finished jobs of the type on that device
  kind); a part nothing measured is named
  in the estimate's source as not counted;
* else unknown, and said so.

The disk a finished job keeps (its run folder: result files, logs, kept predictions) is taken
from finished jobs of the same task and track; the free space a job needs while it runs
(checkpoints) is the task type's ``min_free_bytes``.
"""

from __future__ import annotations

import json
import os
import statistics
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.jobs.disk import format_bytes, job_need_bytes
from harness.jobs.matrix import PlannedJob
from harness.metrics.run_records import RunTimings
from harness.runs import JobSpec, ResultsFileError, ResultsLayout, RunFolder
from harness.task_types import TASK_TYPES

#: Where `make bench-gpu` writes its report (relative to the repository, as the benchmark does).
BENCH_REPORT = Path(__file__).resolve().parents[2] / "results" / "bench" / "gpu_train.json"


def _device_kind(device: str | None) -> str:
    return "cuda" if str(device or "").startswith("cuda") else "cpu"


def job_settings() -> dict[str, str]:
    """The GPU settings a segmentation job trains with, as the benchmark records them: float16
    autocast (``SSL3DFinetuneTrainer.amp_dtype``; the runner never switches to bfloat16) and
    nnU-Net's torch.compile default, on unless ``nnUNet_compile`` (which the workers inherit) says
    otherwise. A rate measured at other settings does not predict the jobs."""
    compiled = os.environ.get("nnUNet_compile", "true").lower() in ("true", "1", "t")
    return {"precision": "fp16", "compile": "on" if compiled else "off"}


def _iterations(schedule) -> int:
    """Training plus validation iterations of a schedule (a model or its JSON dump)."""

    def get(name: str) -> int:
        return int(schedule[name] if isinstance(schedule, dict) else getattr(schedule, name))

    return get("epochs") * (get("iterations_per_epoch") + get("val_iterations_per_epoch"))


@dataclass(frozen=True)
class CostModel:
    """How the device time of a task type's job follows from measured rates (its entry's ``cost``)."""

    #: Training plus validation iterations of a job's schedule (a model or its metrics.json dump).
    iterations: Callable[[Any], int]
    #: The held-out cases a job of the task predicts; None when it cannot be told.
    held_out_cases: Callable[[Any], int | None]
    #: Whether the GPU benchmark (`make bench-gpu`, ``BENCH_REPORT``) measures its jobs' rate.
    benchmarked: bool = False


def _segmentation_held_out(task) -> int | None:
    from harness.finetune.segmentation import held_out_count

    return held_out_count(task)


#: nnU-Net's training loop, which bench/gpu_train.py times.
SEGMENTATION_COST = CostModel(_iterations, _segmentation_held_out, benchmarked=True)


def cost_model(task_type: str | None) -> CostModel | None:
    """The ``CostModel`` of ``task_type``'s entry; None for a type without one (or unknown)."""
    entry = TASK_TYPES.get(task_type) if task_type is not None else None
    return entry.load("cost") if entry is not None and entry.cost is not None else None


@dataclass
class Measurements:
    """What finished jobs (and the benchmark) measured."""

    #: (task, track, recipe values hash, device kind) -> wall seconds of finished jobs
    wall: dict[tuple, list[float]] = field(default_factory=lambda: defaultdict(list))
    #: (task type, track, patch, batch, device kind) -> [(iterations per second, source)]
    rate: dict[tuple, list[tuple[float, str]]] = field(default_factory=lambda: defaultdict(list))
    #: (task, track) -> bytes a finished job keeps
    kept: dict[tuple, list[int]] = field(default_factory=lambda: defaultdict(list))
    #: (task type, track, patch, device kind) -> seconds of prediction per held-out case
    predict: dict[tuple, list[float]] = field(default_factory=lambda: defaultdict(list))
    #: (task type, device kind) -> seconds of a job beside training and prediction
    other: dict[tuple, list[float]] = field(default_factory=lambda: defaultdict(list))

    def add_run(self, run: RunFolder) -> None:
        try:
            spec = JobSpec.read(run, require=("task", "track"))
            timings = RunTimings.read(run)
        except ResultsFileError:
            return
        device = _device_kind(spec.device)
        wall, train, predict, patch = (
            timings.wall_seconds,
            timings.train_seconds,
            timings.predict_seconds,
            timings.patch_size,
        )
        if wall:
            self.wall[spec.task, spec.track, spec.recipe_values_hash, device].append(wall)
        self.kept[spec.task, spec.track].append(_kept_bytes(run))
        model = cost_model(spec.task_type)
        if model is None or patch is None or not train:
            return
        try:
            iterations = model.iterations(timings.schedule)
            key = (spec.task_type, spec.track, patch, int(timings.schedule["batch_size"]), device)
        except (KeyError, TypeError, ValueError):
            return
        self.rate[key].append((iterations / train, "finished jobs"))
        if predict is not None and timings.num_cases:
            self.predict[spec.task_type, spec.track, patch, device].append(predict / timings.num_cases)
            if wall is not None and wall >= train + predict:
                self.other[spec.task_type, device].append(wall - train - predict)

    def add_bench(self, path: Path, settings: dict[str, str] | None = None) -> None:
        """The GPU benchmark's report, for the task types whose cost model it measures
        (``benchmarked``): per track, the harness trainer's iterations per second at
        its patch and batch, from its run at ``settings`` (default ``job_settings()``), not its
        best one (``results``, which may be bfloat16 or compiled where the jobs are not). A report
        without a run at those settings gives no rate."""
        settings = job_settings() if settings is None else settings
        kinds = [name for name in TASK_TYPES if (model := cost_model(name)) is not None and model.benchmarked]
        try:
            report = json.loads(Path(path).read_text(encoding="utf-8"))
            patch, batch = tuple(int(p) for p in report["patch"]), int(report["batch_size"])
            device = _device_kind(report.get("device"))
            records = [r for r in report.get("runs") or [] if str(r.get("trainer", "")).startswith("harness ")]
            records += [{**figures, "track": track} for track, figures in (report.get("results") or {}).items()]
            for track in dict.fromkeys(r.get("track") for r in records):
                same = [
                    r for r in records if r.get("track") == track and all(r.get(k) == v for k, v in settings.items())
                ]
                rate = same[0].get("iterations_per_second") if same else None
                if track and isinstance(rate, (int, float)) and rate > 0:
                    where = f"benchmark {Path(path).name}, {settings['precision']}, compile {settings['compile']}"
                    for kind in kinds:
                        self.rate[kind, track, patch, batch, device].append((float(rate), where))
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return


def _kept_bytes(run: RunFolder) -> int:
    return sum(
        p.stat().st_size
        for p in run.path.rglob("*")
        if p.is_file() and run.checkpoints_dir not in p.parents and run.work_dir not in p.parents
    )


def measure(results: Path, bench: Path | None = BENCH_REPORT) -> Measurements:
    found = Measurements()
    for run in ResultsLayout(Path(results)).run_folders():
        if run.is_done():
            found.add_run(run)
    if bench is not None and Path(bench).is_file():
        found.add_bench(bench)
    return found


@dataclass(frozen=True)
class JobCost:
    track: str
    task: str
    seconds: float | None
    source: str
    kept_bytes: int | None
    need_bytes: int
    device: str


def estimate(job: PlannedJob, found: Measurements) -> JobCost:
    fj = job.job
    task, track, device = fj.task, fj.track, _device_kind(fj.device)
    desc = fj.description()
    kept = found.kept.get((task.name, track))
    kept_bytes = int(statistics.median(kept)) if kept else None
    need = job_need_bytes(task.type)

    def cost(seconds: float | None, source: str) -> JobCost:
        return JobCost(track, task.name, seconds, source, kept_bytes, need, device)

    same = found.wall.get((task.name, track, desc["recipe_values_hash"], device))
    if same:
        return cost(statistics.median(same), f"{len(same)} finished job(s) of this task")
    model = cost_model(task.type)
    if model is not None:
        schedule, patch = fj.schedule, tuple(task.patch_for(track))
        rates = found.rate.get((task.type, track, patch, int(schedule.batch_size), device))
        if rates:
            rate = statistics.median(r for r, _ in rates)
            iterations = model.iterations(schedule)
            seconds = iterations / rate
            parts = [
                f"{iterations} train+val iterations at {rate:.3g} it/s ({', '.join(sorted({s for _, s in rates}))})"
            ]
            per_case, n_cases = found.predict.get((task.type, track, patch, device)), model.held_out_cases(task)
            if per_case and n_cases is not None:
                seconds += n_cases * statistics.median(per_case)
                parts.append(f"{n_cases} case(s) predicted at {statistics.median(per_case):.1f} s")
            else:
                parts.append("prediction not measured, not counted")
            other = found.other.get((task.type, device))
            if other:
                seconds += statistics.median(other)
                parts.append(f"{statistics.median(other):.0f} s preprocessing and the rest")
            else:
                parts.append("preprocessing not measured, not counted")
            return cost(seconds, "; ".join(parts))
    shown = "x".join(str(p) for p in task.patch_for(track))
    return cost(None, f"unknown: no finished job of this task, no measured rate for {track} at {shown} on {device}")


def _hours(seconds: float | None) -> str:
    return "unknown" if seconds is None else f"{seconds / 3600:.2f}"


def format_cost_plan(jobs: Iterable[PlannedJob], results: Path, bench: Path | None = BENCH_REPORT) -> str:
    """The dry run's cost plan of ``jobs`` (the ones that would run)."""
    jobs = list(jobs)
    found = measure(results, bench) if jobs else Measurements()
    costs = [estimate(job, found) for job in jobs]
    if not costs:
        return "cost plan: nothing to run"
    groups: dict[tuple, list[JobCost]] = defaultdict(list)  # jobs of one estimate: one row, true for each
    for c in costs:
        groups[c.track, c.task, c.seconds is None, c.seconds or 0.0, c.source, c.kept_bytes or -1].append(c)
    devices = sorted({c.device for c in costs})
    unit = "GPU hours" if devices == ["cuda"] else f"{'/'.join(devices)} hours"
    header = ("track", "task", "jobs", f"{unit} per job", unit, "kept per job", "from")
    table: list[Sequence[str]] = [header]
    for _, group in sorted(groups.items()):
        first = group[0]
        total = None if first.seconds is None else first.seconds * len(group)
        table.append(
            (
                first.track,
                first.task,
                str(len(group)),
                _hours(first.seconds),
                _hours(total),
                format_bytes(first.kept_bytes) if first.kept_bytes is not None else "unknown",
                first.source,
            )
        )
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    lines = ["cost plan (estimates from measurements; see harness/jobs/cost.py):"]
    lines += ["  " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in table]
    unknown = sum(c.seconds is None for c in costs)
    known_s = sum(c.seconds for c in costs if c.seconds is not None)
    kept = [c.kept_bytes for c in costs if c.kept_bytes is not None]
    lines.append(
        f"  total: {len(costs)} job(s), {known_s / 3600:.2f} {unit}"
        + (f" + {unknown} job(s) of unknown cost" if unknown else "")
        + f"; disk kept {format_bytes(sum(kept))}"
        + (f" + {len(costs) - len(kept)} job(s) unknown" if len(kept) < len(costs) else "")
        + f"; each running job needs up to {format_bytes(max(c.need_bytes for c in costs))} free"
    )
    return "\n".join(lines)
