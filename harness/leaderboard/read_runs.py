"""Reading run folders (``results/runs/<entry>/<task>/<setup>/fold_<k>/``) into tracks.

Expected work is the union over the track: every entry of a track is expected to have every
(task, fold) that any entry of the track has, and every case that any finished run of that
(task, fold) has. A missing run, a FAILED or unfinished run, or a missing case is never dropped:
it counts as the worst value for that case and is flagged (``FLAG_*``).

One run never stops the ranking. A run whose own files cannot be trusted is a failed run of its
entry (``FLAG_FAILED_JOB``, ``JobProblem.unreadable``, the message naming the file and the
problem), even when it says DONE: a job.json, metrics.json or cases.csv that does not parse, lacks
a needed field or column, holds a non-number or a value out of range; or a run that contradicts
the majority of its peers (task type, is_baseline, ranking metrics and classes of the task, true
labels of a case; a tie goes to the first run in path order), or that claims the same (entry,
task, fold) as another run (then neither counts). A run whose job.json cannot be read is
attributed by its path ``runs/<entry>/<task>/<setup>/fold_<k>`` when the setup is one the recipe
ranks and the other runs tell its track and task type; otherwise it is skipped with a note
(``TrackData.notes``). ``LeaderboardInputError`` is left for what is global: no run at all, bad
arguments. Seed repeats (``fold_<k>-repeat_<r>``, job.json ``repeat`` r >= 1) are never ranked:
each repeat r is read the same way into a track of its own (``TrackData.repeats``) for the noise
floor (``harness.leaderboard.noise``).

The files are read through the results contract (``harness.runs``: ``JobSpec.read``,
``read_cases_csv``) and the run records (``harness.metrics.run_records``: ``RunMetrics.read``, the
cases.csv columns of each task type), whose errors name the file and whose NaN policy is the
leaderboard's: ``nan`` or an empty field is NaN; a header without cases does not parse.

A segmentation task becomes a ``PerCaseTask`` (a case's value: the nan-mean over its labels), a
classification task a ``PooledTask``; a classification run may rank only by the registry's
pooled classification metrics (``harness.metrics.registry``).

Over 450 lines for a reason: the rules that turn run folders into a track (expected work as the
union, failed, stale and unreadable runs as worst values, dissenting metrics) depend on each other
and are tested together; each rule is its own function.
"""

from __future__ import annotations

import re
import warnings
from collections import Counter
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from harness.leaderboard.model import (
    FLAG_FAILED_JOB,
    FLAG_MISSING_CASE,
    FLAG_MISSING_JOB,
    FLAG_OK,
    FLAG_UNFINISHED_JOB,
    JobProblem,
    LeaderboardInputError,
    PerCaseTask,
    PooledTask,
    TaskData,
    TrackData,
    check_metric_values,
    check_track_name,
    unit_name,
)
from harness.leaderboard.text_tables import line_numbers
from harness.metrics.registry import POOLED, Metric, metrics_for
from harness.metrics.run_records import (
    CLASSES,
    CLASSIFICATION_CASES,
    SEGMENTATION_CASES,
    CasesSchema,
    RunMetrics,
    prob_column,
    reported_mean,
)
from harness.runs import (
    BASELINE_PREFIX,
    JobSpec,
    ResultsFileError,
    ResultsLayout,
    RunFolder,
    read_cases_csv,
    read_json,
)
from harness.task_types import TASK_TYPES
from harness.tasks.preflight import CurrentTasks
from harness.tracks import TRACKS

#: What the leaderboard needs of a job.json (``JobSpec.read`` demands them).
JOB_FIELDS = ("entry", "track", "is_baseline", "task", "task_type", "fold")

# --------------------------------------------------------------------------- job.json, metrics.json


@dataclass(frozen=True)
class _Job:
    run: RunFolder
    entry: str
    track: str
    is_baseline: bool
    task: str
    task_type: str
    fold: int
    recipe: str | None = None
    #: why the leaderboard fails this run whatever its markers say (a message naming the file)
    problem: str = ""
    #: the job.json as read (compared with the task as it is now: ``_mark_stale``)
    spec: JobSpec | None = field(default=None, compare=False, repr=False)
    #: why a finished run no longer counts until evaluate reruns it (its task or data changed):
    #: unfinished, as `harness status` calls it pending, not failed
    stale: str = ""
    #: 0 the ranked run, r >= 1 a seed repeat (``TrackData.repeats``)
    repeat: int = 0

    @property
    def status(self) -> str:
        if self.problem:
            return FLAG_FAILED_JOB
        if self.stale:
            return FLAG_UNFINISHED_JOB
        if self.run.is_done():
            return FLAG_OK
        return FLAG_FAILED_JOB if self.run.is_failed() else FLAG_UNFINISHED_JOB

    def failed(self, problem: str) -> _Job:
        """This run counted as failed; a run failed already keeps its first problem."""
        return self if self.problem else replace(self, problem=problem)


def _read_job(run: RunFolder) -> _Job:
    """The run's job.json (``JobSpec.read``, with the fields the leaderboard needs), checked; a
    problem is a ``LeaderboardInputError`` naming the file."""
    where = str(run.job_json)
    try:
        spec = JobSpec.read(run, require=JOB_FIELDS)
    except ResultsFileError as exc:
        raise LeaderboardInputError(str(exc)) from None
    entry, track, is_baseline, task, task_type, fold = (getattr(spec, name) for name in JOB_FIELDS)  # none is None
    if task_type not in TASK_TYPES:
        raise LeaderboardInputError(f"{where}: task_type {task_type!r} is not one of {', '.join(TASK_TYPES)}")
    check_track_name(track, where)
    return _Job(run, entry, track, is_baseline, task, task_type, fold, spec.recipe, spec=spec, repeat=spec.repeat or 0)


def _ranking_metrics(job: _Job, pooled: bool) -> tuple[tuple[Metric, ...], tuple[str, ...]]:
    """The metrics.json's ranking metrics (and, for a task ranked on pooled cases, its classes):
    ``RunMetrics.read``, and the metrics checked to be ones the leaderboard can recompute."""
    where = str(job.run.metrics_json)
    try:
        found = RunMetrics.read(job.run)
        if pooled and not found.classes:
            raise ResultsFileError(where, f"field {CLASSES!r} must list at least two distinct classes")
    except ResultsFileError as exc:
        raise LeaderboardInputError(str(exc)) from None
    metrics = found.ranking_metrics
    if pooled:
        supported = metrics_for(job.task_type, POOLED)
        unsupported = [m.name for m in metrics if m not in supported]
        if unsupported:
            raise LeaderboardInputError(
                f"{where}: {job.task_type} ranking metrics {unsupported} cannot be recomputed on "
                f"resampled cases; supported: {', '.join(m.name for m in supported)}"
            )
    return metrics, (found.classes if pooled else ())


# --------------------------------------------------------------------------- cases.csv


def _cases_table(path: Path, schema: CasesSchema, metrics: tuple[Metric, ...], classes=()) -> pd.DataFrame:
    """A run's cases.csv (``harness.runs.read_cases_csv``: ids and labels text, the rest numbers,
    NaN from ``nan`` or an empty field) with the columns its task type's ``schema`` needs to rank
    by ``metrics`` and a case id on every line; a problem is a ``LeaderboardInputError`` naming
    the file."""
    try:
        frame = read_cases_csv(path)
        schema.check(frame, path, schema.ranked_columns(metrics, classes))
    except ResultsFileError as exc:
        raise LeaderboardInputError(str(exc)) from None
    empty = frame["case"].str.strip() == ""
    if empty.any():
        raise LeaderboardInputError(f"{path}: empty 'case' on line(s) {line_numbers(empty)}")
    return frame


def _segmentation_cases(path: Path, metrics: tuple[Metric, ...]) -> pd.DataFrame:
    """Per (case, label) values, checked: one row per pair, numbers in range."""
    frame = _cases_table(path, SEGMENTATION_CASES, metrics)
    duplicated = frame.duplicated(["case", "label"], keep=False)
    if duplicated.any():
        raise LeaderboardInputError(f"{path}: duplicate (case, label) on line(s) {line_numbers(duplicated)}")
    numbers = pd.DataFrame({"case": frame["case"], "label": frame["label"]})
    for metric in metrics:
        numbers[metric.name] = frame[metric.name].to_numpy(dtype=float)
        check_metric_values(metric, numbers[metric.name].to_numpy(), f"{path} column {metric.name!r}")
    return numbers


def _case_means(numbers: pd.DataFrame, metrics: tuple[Metric, ...]) -> pd.DataFrame:
    """Per-case values: the nan-mean over the case's labels (NaN when every label is NaN)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        # pandas' mean skips NaN: a nan-mean
        return numbers.groupby("case", sort=True)[[m.name for m in metrics]].mean()


def _reported_means(per_label: dict, entries, units, status, metrics: tuple[Metric, ...]) -> np.ndarray:
    """(M, E) the reported mean (``harness.metrics.run_records.reported_mean``) over every (fold,
    case) unit. A unit or label an entry lacks counts as the worst value."""
    labels = sorted({label for table in per_label.values() for label in table["label"]})
    indexed = {key: table.set_index(["case", "label"]) for key, table in per_label.items()}
    out = np.full((len(metrics), len(entries)), np.nan)
    for m, metric in enumerate(metrics):
        worst = metric.worst if metric.worst is not None else np.nan
        for e, entry in enumerate(entries):
            grid = np.full((len(labels), len(units)), worst)
            for u, (fold, case) in enumerate(units):
                table = indexed.get((entry, fold))
                if status[entry, fold] != FLAG_OK or table is None:
                    continue
                for label_index, label in enumerate(labels):
                    if (case, label) in table.index:
                        grid[label_index, u] = table.at[(case, label), metric.name]
            mean = reported_mean(grid)[1]
            out[m, e] = np.nan if mean is None else mean
    return out


def _classification_cases(path: Path, classes: tuple[str, ...]) -> pd.DataFrame:
    prob_columns = [prob_column(c) for c in classes]
    frame = _cases_table(path, CLASSIFICATION_CASES, (), classes)
    duplicated = frame.duplicated(["case"], keep=False)
    if duplicated.any():
        raise LeaderboardInputError(f"{path}: duplicate case on line(s) {line_numbers(duplicated)}")
    for column in ("true_label", "pred_label"):
        unknown = ~frame[column].isin(classes)
        if unknown.any():
            raise LeaderboardInputError(
                f"{path}: column {column!r} has a label that is not one of classes {list(classes)} "
                f"on line(s) {line_numbers(unknown)}"
            )
    out = pd.DataFrame(
        {
            "true": frame["true_label"].map(classes.index).to_numpy(),
            "pred": frame["pred_label"].map(classes.index).to_numpy(),
        },
        index=frame["case"].to_numpy(),
    )
    for column in prob_columns:
        values = frame[column].to_numpy(dtype=float)
        if not np.isfinite(values).all():
            raise LeaderboardInputError(f"{path}: column {column!r} must be finite on every line")
        out[column] = values
    return out


# --------------------------------------------------------------------------- collecting


def _run_folders(layout: ResultsLayout) -> list[RunFolder]:
    """Every run folder with a job.json, and every finished or failed one without (its job.json
    lost: attributed by its path), in path order."""
    runs = {run.path: run for run in layout.run_folders()}
    for run in layout.all_run_folders():
        if run.path not in runs and (run.done_marker.is_file() or run.failed_marker.is_file()):
            runs[run.path] = run
    return [runs[path] for path in sorted(runs)]


def collect_runs(
    results: Path, recipe=None, entries: Collection[str] | Mapping[str, str] | None = None
) -> list[TrackData]:
    """Every track found under ``results/runs``, sorted by track name. With ``recipe`` (a
    ``harness.recipes.Recipe``), only the runs that recipe makes (its ``setup_name`` per task type
    and track: a ResEnc-L run two recipes share counts for both). With ``entries``, only the runs
    of those entries (as their folders ``runs/<entry>`` name them) and of the baselines: a
    challenge phase ranks the uploads that count, while the runs of a replaced upload stay on disk.
    ``entries`` as a mapping (entry -> track) also lists an entry that has no run yet in its
    track, every job of it pending: a ranking never drops an entry that counts.

    A run whose files cannot be read is a failed run of its entry, never an error (module doc);
    ``LeaderboardInputError`` only when no run can be ranked at all.
    """
    layout = ResultsLayout(results)
    root = layout.runs_dir
    jobs: list[_Job] = []
    unreadable: list[tuple[RunFolder, str]] = []
    folders = _run_folders(layout)
    if entries is not None:
        wanted = set(entries)
        folders = [r for r in folders if r.entry in wanted or r.entry.startswith(BASELINE_PREFIX)]
    for run in folders:
        try:
            jobs.append(_read_job(run))
        except LeaderboardInputError as exc:
            unreadable.append((run, str(exc)))
    found = "".join(f"; {problem}" for _, problem in unreadable[:5])  # what an error should show
    if not jobs:
        among = "" if entries is None else f" among the entries ranked ({len(set(entries))}) and the baselines"
        raise LeaderboardInputError(f"{root}: no run folder with a readable job.json{among}{found}")
    setups = None
    if recipe is not None:
        # the run folder a (task type, track) job of this recipe has; a track the harness does not
        # know has none (no recipe makes it)
        setups = {(kind, track): recipe.setup_name(kind, track) for kind in TASK_TYPES for track in TRACKS}
        jobs = [j for j in jobs if j.recipe is not None and j.recipe == setups.get((j.task_type, j.track))]
        if not jobs:
            raise LeaderboardInputError(f"{root}: no run of recipe {recipe.name} with a readable job.json{found}")
    notes: list[str] = []
    attributed = []
    for run, problem in unreadable:
        job = _attribute_by_path(run, problem, jobs, setups, recipe)
        if isinstance(job, str):
            notes.append(job)
        else:
            attributed.append(job)
    seen: dict[tuple[str, str, str, int, int], _Job] = {}
    for job in sorted(jobs + attributed, key=lambda j: j.run.path):
        key = (job.track, job.entry, job.task, job.fold, job.repeat)
        if key in seen:
            # which of the two is the entry's run cannot be told: neither counts
            seen[key] = seen[key].failed(
                f"{job.run.job_json} and {seen[key].run.job_json}: both claim entry {job.entry!r}, "
                f"task {job.task!r}, fold {job.fold} of track {job.track!r}"
            )
        else:
            seen[key] = job
    jobs = _mark_stale(list(seen.values()), layout)
    repeated = [j for j in jobs if j.repeat]
    jobs = [j for j in jobs if not j.repeat]
    tracks = sorted({job.track for job in jobs})
    expected = entries if isinstance(entries, Mapping) else {}
    return [
        replace(
            _track_from_jobs(
                track,
                [j for j in jobs if j.track == track],
                str(results),
                tuple(notes),
                expected=tuple(e for e, t in expected.items() if t == track),
            ),
            repeats=tuple(
                _track_from_jobs(track, [j for j in repeated if j.track == track and j.repeat == r], str(results))
                for r in sorted({j.repeat for j in repeated if j.track == track})
            ),
        )
        for track in tracks
    ]


def _mark_stale(jobs: list[_Job], layout: ResultsLayout) -> list[_Job]:
    """A finished run computed on another task than its file defines now (a changed spec or data
    file: ``harness.tasks.preflight.CurrentTasks``) counts as unfinished until evaluate reruns it
    (`harness status` shows it pending): nothing is ranked that was computed on other data than
    the task holds now, and it is not counted as a failure of its entry."""

    current = CurrentTasks(layout.data_check_cache)
    out = []
    for job in jobs:
        stale = current.staleness(job.spec) if job.spec is not None and job.status == FLAG_OK else ""
        out.append(replace(job, stale=f"{job.run.job_json}: {stale}; `harness evaluate` reruns it") if stale else job)
    return out


def _attribute_by_path(run: RunFolder, problem: str, jobs: list[_Job], setups: dict | None, recipe) -> _Job | str:
    """The failed run of ``runs/<entry>/<task>/<setup>/fold_<k>`` whose job.json cannot be read, when
    the setup is one the recipe ranks (any, without a recipe) and the readable ``jobs`` leave one
    (task type, track) for that task and entry; else a note saying why it is skipped."""
    entry, task, setup, fold_name = run.entry, run.task, run.setup, run.path.name
    skipped = f"{problem}; run folder skipped"
    fold = re.fullmatch(r"fold_(\d+)", fold_name)
    if fold is None:  # a job.json in a folder named fold_<something else>
        return f"{skipped}: {fold_name!r} is not fold_<k>"
    allowed = None if setups is None else {pair for pair, name in setups.items() if name == setup}
    if allowed is not None and not allowed:
        return f"{skipped}: setup {setup!r} is not one recipe {recipe.name} ranks"
    pairs = {(j.task_type, j.track) for j in jobs if j.task == task}
    if allowed is not None:
        pairs &= allowed
    tracks = {j.track for j in jobs if j.entry == entry}
    if not tracks and entry.startswith(BASELINE_PREFIX):
        tracks = {entry[len(BASELINE_PREFIX) :]}
    if tracks:
        pairs = {pair for pair in pairs if pair[1] in tracks}
    if len(pairs) != 1:
        why = "no readable run" if not pairs else f"the readable runs allow {sorted(pairs)}"
        return f"{skipped}: {why} to tell the track and task type of entry {entry!r}, task {task!r}"
    ((task_type, track),) = pairs
    peers = [j.is_baseline for j in jobs if j.entry == entry and j.track == track]
    is_baseline = Counter(peers).most_common(1)[0][0] if peers else entry.startswith(BASELINE_PREFIX)
    return _Job(run, entry, track, is_baseline, task, task_type, int(fold[1]), setup, problem)


def _majority(claims: list[tuple[_Job, Any]], file, what: str, show=repr) -> tuple[Any, dict[Path, str]]:
    """The value most of the (run, value) ``claims`` give (a tie: the first run's, in path order;
    runs failed already vote only when no other run does), and per dissenting run a message
    naming its ``file(run)``, ``what``, both values (``show``) and a file of the majority."""
    voters = [c for c in claims if not c[0].problem] or claims
    if not voters:
        return None, {}
    counts = Counter(value for _, value in voters)
    top = max(counts.values())
    winner = next(value for _, value in voters if counts[value] == top)
    example = next(file(job) for job, value in voters if value == winner)
    dissent = {
        job.run.path: f"{file(job)}: {what} is {show(value)} here but {show(winner)} in {counts[winner]} "
        f"other run(s), e.g. {example}"
        for job, value in claims
        if value != winner
    }
    return winner, dissent


def _fail_dissent(jobs: list[_Job], dissent: dict[Path, str]) -> list[_Job]:
    return [job.failed(dissent[job.run.path]) if job.run.path in dissent else job for job in jobs]


def _track_from_jobs(
    track: str, jobs: list[_Job], source: str, notes: tuple[str, ...] = (), expected: tuple[str, ...] = ()
) -> TrackData:
    task_types: dict[str, str] = {}
    for task in sorted({j.task for j in jobs}):
        claims = [(j, j.task_type) for j in jobs if j.task == task]
        task_types[task], dissent = _majority(claims, lambda j: j.run.job_json, f"the task_type of task {task!r}")
        jobs = _fail_dissent(jobs, dissent)
    baselines = set()
    for entry in sorted({j.entry for j in jobs}):
        votes = [(j, j.is_baseline) for j in jobs if j.entry == entry]
        is_baseline, dissent = _majority(votes, lambda j: j.run.job_json, f"the is_baseline of entry {entry!r}")
        jobs = _fail_dissent(jobs, dissent)
        if is_baseline:
            baselines.add(entry)
    entries = tuple(sorted({j.entry for j in jobs} | set(expected)))  # an expected entry without runs: pending
    problems: list[JobProblem] = []
    tasks: list[TaskData] = []
    for task in sorted(task_types):
        task_jobs = [j for j in jobs if j.task == task]
        reader: ResultsReader = TASK_TYPES[task_types[task]].load("results")
        task_jobs, metrics, classes, tables = reader.read_runs(task, task_jobs)
        by_key = {(j.entry, j.fold): j for j in task_jobs}
        folds = sorted({j.fold for j in task_jobs})
        status: dict[tuple[str, int], str] = {}
        for entry in entries:
            for fold in folds:
                job = by_key.get((entry, fold))
                state = FLAG_MISSING_JOB if job is None else job.status
                status[entry, fold] = state
                if state != FLAG_OK:
                    unreadable = job is not None and bool(job.problem)
                    stale = job is not None and bool(job.stale) and not unreadable
                    problems.append(JobProblem(entry, task, fold, state, _failure_detail(job), unreadable, stale))
        ok = {key: table for key, table in tables.items() if status[key] == FLAG_OK}
        tasks.append(reader.make_task(task, entries, metrics, classes, ok, status))
    return TrackData(track, entries, frozenset(baselines), tuple(tasks), tuple(problems), source, notes)


def _failure_detail(job: _Job | None) -> str:
    if job is not None and job.problem:
        return job.problem
    if job is not None and job.stale:
        return job.stale
    if job is None or not job.run.is_failed():
        return ""
    try:
        info = read_json(job.run.failed_marker)
        return f"{info.get('error_class', '')}: {info.get('message', '')}".strip(": ")
    except (OSError, ValueError, AttributeError):
        return "FAILED marker unreadable"


def _agreed_metrics(
    task: str, jobs: list[_Job], pooled: bool
) -> tuple[list[_Job], tuple[Metric, ...], tuple[str, ...]]:
    """The ranking metrics and classes of the finished runs' metrics.json; a run whose file cannot
    be read or disagrees with the majority is failed."""
    claims = []
    for i, job in enumerate(jobs):
        if job.status != FLAG_OK:
            continue
        try:
            claims.append((job, _ranking_metrics(job, pooled)))
        except LeaderboardInputError as exc:
            jobs[i] = job.failed(str(exc))
    found, dissent = _majority(
        claims, lambda j: j.run.metrics_json, f"the ranking metrics/classes of task {task!r}", _show_metrics
    )
    metrics, classes = found if found is not None else ((), ())
    return _fail_dissent(jobs, dissent), metrics, classes


def _show_metrics(found: tuple[tuple[Metric, ...], tuple[str, ...]]) -> str:
    metrics, classes = found
    names = [m.name if m.higher_is_better else f"{m.name} (lower is better)" for m in metrics]
    return f"{names}" + (f" with classes {list(classes)}" if classes else "")


def _read_cases(jobs: list[_Job], read) -> tuple[list[_Job], dict[tuple[str, int], pd.DataFrame]]:
    """``read(cases_csv)`` of every finished run; a run whose cases.csv cannot be read is failed."""
    tables = {}
    for i, job in enumerate(jobs):
        if job.status != FLAG_OK:
            continue
        try:
            tables[job.entry, job.fold] = read(job.run.cases_csv)
        except LeaderboardInputError as exc:
            jobs[i] = job.failed(str(exc))
    return jobs, tables


def _read_segmentation_runs(task: str, jobs: list[_Job]):
    jobs, metrics, _ = _agreed_metrics(task, list(jobs), pooled=False)
    jobs, tables = _read_cases(jobs, lambda path: _segmentation_cases(path, metrics))
    return jobs, metrics, (), tables


def _read_classification_runs(task: str, jobs: list[_Job]):
    """As for segmentation, and each case's true label is the majority's over the runs that have
    it: a run that gives another is failed (its cases.csv disagrees with the task's truth)."""
    jobs, metrics, classes = _agreed_metrics(task, list(jobs), pooled=True)
    jobs, tables = _read_cases(jobs, lambda path: _classification_cases(path, classes))
    done = [j for j in jobs if j.status == FLAG_OK]
    votes: dict[tuple[int, str], list[tuple[_Job, int]]] = {}
    for job in done:
        table = tables[job.entry, job.fold]
        for case, label in zip(table.index, table["true"]):
            votes.setdefault((job.fold, case), []).append((job, int(label)))
    dissent: dict[Path, str] = {}
    for (_, case), claims in sorted(votes.items()):
        named = [(job, classes[label]) for job, label in claims]
        _, found = _majority(named, lambda j: j.run.cases_csv, f"the true_label of case {case!r}")
        for path, message in found.items():
            dissent.setdefault(path, message)
    return _fail_dissent(jobs, dissent), metrics, classes, tables


# --------------------------------------------------------------------------- tasks from the runs' tables


def _segmentation_task(task, entries, metrics, classes, per_label, status) -> PerCaseTask:
    """``per_label``: (entry, fold) -> the checked per-label table of each run counted as done."""
    per_run = {key: _case_means(numbers, metrics) for key, numbers in per_label.items()}
    units = sorted({(fold, case) for (_, fold), table in per_run.items() for case in table.index})
    cases = tuple(unit_name(f, c) for f, c in units)
    values = np.full((len(metrics), len(entries), len(cases)), np.nan)
    flags = np.full(values.shape, FLAG_OK, dtype=object)
    for e, entry in enumerate(entries):
        for u, (fold, case) in enumerate(units):
            state = status[entry, fold]
            table = per_run.get((entry, fold))
            if state != FLAG_OK:
                flags[:, e, u] = state
            elif table is None or case not in table.index:  # a done run has its table (``status``)
                flags[:, e, u] = FLAG_MISSING_CASE
            else:
                values[:, e, u] = table.loc[case, [m.name for m in metrics]].to_numpy(dtype=float)
    reported = _reported_means(per_label, entries, units, status, metrics)
    return PerCaseTask.from_values(task, entries, cases, metrics, values, flags, reported)


def _classification_task(task, entries, metrics, classes, per_run, status) -> PooledTask:
    """``per_run``: (entry, fold) -> the checked table of each run counted as done; their true
    labels agree (``_read_classification_runs``)."""
    truth: dict[tuple[int, str], int] = {}
    for (_, fold), table in per_run.items():
        for case, label in zip(table.index, table["true"]):
            truth.setdefault((fold, case), int(label))
    units = sorted(truth)
    cases = tuple(unit_name(f, c) for f, c in units)
    y_true = np.array([truth[u] for u in units], dtype=int)
    n_classes = len(classes)  # 0 only when no run of the task finished, and then there are no cases
    # The most wrong answer: true class below every real probability, the others above.
    worst_probs = np.where(np.eye(n_classes, dtype=bool)[y_true], -1.0, 2.0)
    probs = np.broadcast_to(worst_probs, (len(entries), len(units), n_classes)).copy()
    pred = np.broadcast_to((y_true + 1) % max(n_classes, 1), (len(entries), len(units))).copy()
    flags = np.full((len(entries), len(units)), FLAG_OK, dtype=object)
    prob_columns = [prob_column(c) for c in classes]
    for e, entry in enumerate(entries):
        for u, (fold, case) in enumerate(units):
            state = status[entry, fold]
            table = per_run.get((entry, fold))
            if state != FLAG_OK:
                flags[e, u] = state
            elif case not in table.index:
                flags[e, u] = FLAG_MISSING_CASE
            else:
                probs[e, u] = table.loc[case, prob_columns].to_numpy(dtype=float)
                pred[e, u] = table.loc[case, "pred"]
    return PooledTask(task, tuple(entries), cases, metrics, classes, y_true, probs, pred, flags.astype(str))


# --------------------------------------------------------------------------- the readers of the task types


@dataclass(frozen=True)
class ResultsReader:
    """How the leaderboard reads the runs of one task type (its entry in ``harness.task_types``).

    ``read_runs(task, jobs) -> (jobs, metrics, classes, tables)``: the agreed ranking metrics (and
    classes) and each finished run's checked cases.csv by (entry, fold); a run that cannot be read
    or disagrees with the others is returned failed. ``make_task(task, entries, metrics, classes,
    tables, status) -> TaskData``: the leaderboard's task, which scores itself.
    """

    read_runs: Callable[[str, list[_Job]], tuple[list[_Job], tuple[Metric, ...], tuple[str, ...], dict]]
    make_task: Callable[..., TaskData]


SEGMENTATION_RESULTS = ResultsReader(_read_segmentation_runs, _segmentation_task)
CLASSIFICATION_RESULTS = ResultsReader(_read_classification_runs, _classification_task)
