"""The cost plan: what the jobs a run would start will cost, said before anything starts.

Per track and task: the jobs to run and an estimate of device hours and of the disk their
results keep, from what was measured, never from a guess:

* the wall time of finished jobs of the same task, track, recipe values and device kind in this
  results folder (the best estimate: the same job for another entry);
* else, for segmentation, the schedule's iterations at a measured rate in iterations per second
  for the same track, patch, batch size and device kind: from finished jobs of any task here, or
  from the GPU benchmark's report (``results/bench/gpu_train.json``, `make bench-gpu`); training
  only, prediction not counted;
* else unknown, and said so.

The disk a finished job keeps (its run folder: result files, logs, kept predictions) is taken
from finished jobs of the same task and track; the free space a job needs while it runs
(checkpoints) is the task type's ``min_free_bytes``.
"""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from harness.jobs.disk import format_bytes, job_need_bytes
from harness.jobs.matrix import PlannedJob
from harness.runs import JobSpec, ResultsFileError, ResultsLayout, RunFolder, read_metrics_json

#: Where `make bench-gpu` writes its report (relative to the repository, as the benchmark does).
BENCH_REPORT = Path(__file__).resolve().parents[2] / "results" / "bench" / "gpu_train.json"


def _device_kind(device: str | None) -> str:
    return "cuda" if str(device or "").startswith("cuda") else "cpu"


@dataclass
class Measurements:
    """What finished jobs (and the benchmark) measured."""

    #: (task, track, recipe values hash, device kind) -> wall seconds of finished jobs
    wall: dict[tuple, list[float]] = field(default_factory=lambda: defaultdict(list))
    #: (track, patch, batch, device kind) -> [(iterations per second, source)]
    rate: dict[tuple, list[tuple[float, str]]] = field(default_factory=lambda: defaultdict(list))
    #: (task, track) -> bytes a finished job keeps
    kept: dict[tuple, list[int]] = field(default_factory=lambda: defaultdict(list))

    def add_run(self, run: RunFolder) -> None:
        try:
            spec = JobSpec.read(run, require=("task", "track"))
            metrics = read_metrics_json(run.metrics_json)
        except ResultsFileError:
            return
        device = _device_kind(spec.device)
        wall = metrics.get("wall_seconds")
        if isinstance(wall, (int, float)) and wall > 0:
            self.wall[spec.task, spec.track, spec.recipe_values_hash, device].append(float(wall))
        schedule, patch, train = metrics.get("schedule") or {}, metrics.get("patch_size"), metrics.get("train_seconds")
        if spec.task_type == "segmentation" and patch and isinstance(train, (int, float)) and train > 0:
            try:
                iterations = int(schedule["epochs"]) * int(schedule["iterations_per_epoch"])
                key = (spec.track, tuple(int(p) for p in patch), int(schedule["batch_size"]), device)
            except (KeyError, TypeError, ValueError):
                return
            self.rate[key].append((iterations / train, "finished jobs"))
        self.kept[spec.task, spec.track].append(_kept_bytes(run))

    def add_bench(self, path: Path) -> None:
        """The GPU benchmark's report: iterations per second per track at its patch and batch."""
        try:
            report = json.loads(Path(path).read_text(encoding="utf-8"))
            patch, batch = tuple(int(p) for p in report["patch"]), int(report["batch_size"])
            device = _device_kind(report.get("device"))
            for track, figures in report["results"].items():
                rate = figures.get("iterations_per_second")
                if isinstance(rate, (int, float)) and rate > 0:
                    self.rate[track, patch, batch, device].append((float(rate), f"benchmark {Path(path).name}"))
        except (OSError, ValueError, KeyError, TypeError):
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
    if task.type == "segmentation":
        schedule = fj.schedule
        key = (track, tuple(task.patch_for(track)), int(schedule.batch_size), device)
        rates = found.rate.get(key)
        if rates:
            rate = statistics.median(r for r, _ in rates)
            sources = sorted({s for _, s in rates})
            iterations = schedule.epochs * schedule.iterations_per_epoch
            return cost(iterations / rate, f"{rate:.2f} it/s ({', '.join(sources)}), training only")
    patch = "x".join(str(p) for p in task.patch_for(track))
    return cost(None, f"unknown: no finished job of this task, no measured rate for {track} at {patch} on {device}")


def _hours(seconds: float | None) -> str:
    return "unknown" if seconds is None else f"{seconds / 3600:.2f}"


def format_cost_plan(jobs: Iterable[PlannedJob], results: Path, bench: Path | None = BENCH_REPORT) -> str:
    """The dry run's cost plan of ``jobs`` (the ones that would run)."""
    jobs = list(jobs)
    found = measure(results, bench) if jobs else Measurements()
    costs = [estimate(job, found) for job in jobs]
    if not costs:
        return "cost plan: nothing to run"
    groups: dict[tuple[str, str], list[JobCost]] = defaultdict(list)
    for c in costs:
        groups[c.track, c.task].append(c)
    devices = sorted({c.device for c in costs})
    unit = "GPU hours" if devices == ["cuda"] else f"{'/'.join(devices)} hours"
    header = ("track", "task", "jobs", f"{unit} per job", unit, "kept per job", "from")
    table: list[Sequence[str]] = [header]
    for (track, task), group in sorted(groups.items()):
        first = group[0]
        known = [c.seconds for c in group if c.seconds is not None]
        total = sum(known) if len(known) == len(group) else None
        table.append(
            (
                track,
                task,
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
