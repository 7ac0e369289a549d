"""The data check that runs before any job: every file of every task, read once, all problems
reported at once.

A broken input found inside a job costs a job per submission and fold, and a broken test set is
only found after training; at the challenge's schedule that is GPU hours per job. So ``harness
tasks --check`` and every ``harness evaluate`` (``--dry-run`` included) first read every image,
label map and mask of every task completely (``harness.tasks.datafiles``: the voxels as stored,
not as SimpleITK shows them), check the task's structure around them, and plan no job while any
problem is left. A problem names the file (or the case) and what is wrong; a warning (a class
missing from one fold) does not stop anything.

The same read gives each task's data identity: the content hash of every file its jobs read
(``TaskData``), which is part of every job's identity, so a changed file reruns exactly the jobs
that read it and names itself.

Over 450 lines for a reason: every file of every task is read once and all problems are reported at
once; the per-type plans and checks share that one read and its cache.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from harness.recipes import ClassificationRecipe
from harness.runs import JobSpec, ResultsLayout
from harness.task_types import CLASSIFICATION, get_task_type
from harness.tasks.datafiles import FactsCache, FileFacts, ReadStats, Role, read_all
from harness.tasks.labels import read_labels_file
from harness.tasks.registry import TaskSpecError, load_task_file
from harness.tasks.spec import ClassificationTask, SegmentationTask, TaskSpec

#: Channels and label of one case must agree within these: spacing as closely as nnU-Net's own
#: check demands (``np.allclose`` defaults, where it refuses the dataset); origin and direction,
#: which nnU-Net only warns about, within what no resampling would notice.
SPACING_RTOL, SPACING_ATOL = 1e-5, 1e-8
ORIGIN_ATOL_MM = 1e-3
DIRECTION_ATOL = 1e-4
IMAGE_SUFFIX = ".nii.gz"  # classification images and masks
_CHANNEL = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")


@dataclass(frozen=True)
class Problem:
    task: str
    path: str  # the file, folder or case the problem is about
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


@dataclass(frozen=True)
class TaskData:
    """Every file the jobs of one task read, by a name relative to the task's data (so a moved
    dataset keeps its identity), with its content sha256."""

    task: str
    files: tuple[tuple[str, str], ...]  # (name, sha256), sorted

    @property
    def fingerprint(self) -> str:
        text = "\n".join(f"{name}\t{digest}" for name, digest in self.files)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def as_dict(self) -> dict[str, str]:
        return dict(self.files)


def data_changes(before: Mapping[str, str], now: Mapping[str, str], limit: int = 3) -> str:
    """What differs between two file manifests, naming the files: "imagesTr/a.nii.gz changed,
    labelsTr/b.nii.gz removed (and 2 more)"; empty when equal."""
    changes = [f"{n} changed" for n in sorted(set(before) & set(now)) if before[n] != now[n]]
    changes += [f"{n} removed" for n in sorted(set(before) - set(now))]
    changes += [f"{n} added" for n in sorted(set(now) - set(before))]
    more = f" (and {len(changes) - limit} more)" if len(changes) > limit else ""
    return ", ".join(changes[:limit]) + more


@dataclass
class PreflightReport:
    problems: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)
    data: dict[str, TaskData] = field(default_factory=dict)
    stats: ReadStats = ReadStats(0, 0)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.problems

    def format_text(self) -> str:
        files = self.stats.read + self.stats.cached
        lines = [
            f"data check: {len(self.data)} task(s), {files} files ({self.stats.read} read, "
            f"{self.stats.cached} unchanged since the last check) in {self.seconds:.1f} s: "
            + (f"{len(self.problems)} problem(s)" if self.problems else "no problems")
            + (f", {len(self.warnings)} warning(s)" if self.warnings else "")
        ]
        for title, items in (("problem", self.problems), ("warning", self.warnings)):
            for task in dict.fromkeys(p.task for p in items):
                lines.append(f"{task}:")
                lines += [f"  {title}: {p}" for p in items if p.task == task]
        return "\n".join(lines)


# ----------------------------------------------------------------------------- planning
@dataclass
class _Plan:
    """What one task's check reads, and the checks to run on what was read."""

    task: TaskSpec
    problems: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)
    #: name in the manifest -> (path, role)
    files: dict[str, tuple[Path, Role]] = field(default_factory=dict)
    #: case -> the files that must share one voxel grid (channels first)
    groups: dict[str, list[Path]] = field(default_factory=dict)
    #: label maps -> the values they may hold (None: any non-negative integer)
    allowed_values: dict[Path, set[int] | None] = field(default_factory=dict)
    masks: list[Path] = field(default_factory=list)
    #: classification: (case ids, label indices) in labels-file order, for the fold checks
    labelled: tuple[list[str], list[int]] | None = None
    #: classification: cases on a line of the labels file that has a bad label
    mislabelled: set[str] = field(default_factory=set)
    #: ``(plan, recipe)``: checks that need every file read and checked first (classification: folds)
    after_files: Callable[[_Plan, Any], None] | None = None

    def problem(self, path, message: str) -> None:
        self.problems.append(Problem(self.task.name, str(path), message))

    def warn(self, path, message: str) -> None:
        self.warnings.append(Problem(self.task.name, str(path), message))

    def add(self, name: str, path: Path, role: Role) -> None:
        self.files[name] = (path, role)


#: The plan a task type's ``data_check`` returns (``harness.task_types``).
DataPlan = _Plan


def _plan(task: TaskSpec) -> _Plan:
    """The data check's plan of ``task``, from its task type's entry (``harness.task_types``)."""
    return get_task_type(task.type, str(task.source)).load("data_check")(task)


def _list(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))


def _names_and_cases(plan: _Plan, folder: Path, ending: str, n_channels: int) -> dict[str, dict[int, Path]]:
    """``case -> {channel: file}`` of an nnU-Net image folder; misnamed files are problems."""
    cases: dict[str, dict[int, Path]] = {}
    for path in _list(folder):
        if not path.name.endswith(ending):
            plan.warn(path, f"ignored: not a {ending} file")
            continue
        m = _CHANNEL.match(path.name[: -len(ending)])
        if m is None:
            plan.problem(path, f"not named <case>_<channel 0000..>{ending} as nnU-Net expects")
            continue
        channel = int(m["channel"])
        if channel >= n_channels:
            plan.problem(path, f"channel {channel:04d}, but the task has {n_channels} channel(s)")
            continue
        cases.setdefault(m["case"], {})[channel] = path
    return cases


def _label_files(plan: _Plan, folder: Path, ending: str) -> dict[str, Path]:
    out = {}
    for path in _list(folder):
        if path.name.endswith(ending):
            out[path.name[: -len(ending)]] = path
        else:
            plan.warn(path, f"ignored: not a {ending} file")
    return out


def _pair(
    plan: _Plan,
    kind: str,
    images_dir: Path,
    labels_dir: Path,
    images: dict[str, dict[int, Path]],
    labels: dict[str, Path],
    ending: str,
    n_channels: int,
    allowed: set[int],
    prefix: tuple[str, str],
) -> list[str]:
    """Check images against labels (every case complete, with its label, and no label alone)
    and register the files; returns the complete cases."""
    complete = []
    for case in sorted(set(images) | set(labels)):
        channels = images.get(case, {})
        if case not in labels:
            plan.problem(
                images_dir / f"{case}_0000{ending}",
                f"{kind} case {case!r} has images but no "
                f"{'reference segmentation' if kind == 'test' else 'label'} {case}{ending} in {labels_dir}",
            )
            continue
        if not channels:
            plan.problem(
                labels[case], f"{kind} case {case!r} has a label but no image {case}_0000{ending} in {images_dir}"
            )
            continue
        missing = [f"{case}_{c:04d}{ending}" for c in range(n_channels) if c not in channels]
        if missing:
            plan.problem(images_dir, f"{kind} case {case!r} is missing channel file(s) {', '.join(missing)}")
            continue
        files = [channels[c] for c in range(n_channels)]
        for f in files:
            plan.add(f"{prefix[0]}/{f.name}", f, "image")
        plan.add(f"{prefix[1]}/{labels[case].name}", labels[case], "label")
        plan.groups[f"{kind} case {case!r}"] = files + [labels[case]]
        plan.allowed_values[labels[case]] = allowed
        complete.append(case)
    return complete


def plan_segmentation(task: SegmentationTask) -> _Plan:
    plan = _Plan(task)
    root = task.dataset_dir
    dataset_json = root / "dataset.json"
    try:
        meta = json.loads(dataset_json.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        plan.problem(dataset_json, f"not readable JSON: {e}")
        return plan
    missing = [k for k in ("channel_names", "labels", "file_ending", "numTraining") if k not in meta]
    if missing:
        plan.problem(dataset_json, f"has no {', '.join(repr(k) for k in missing)}")
        return plan
    labels = meta["labels"]
    if not isinstance(labels, dict) or not all(isinstance(v, int) and not isinstance(v, bool) for v in labels.values()):
        plan.problem(dataset_json, "'labels' must map names to integers (region-based labels are not supported)")
        return plan
    values = sorted(labels.values())
    if values != list(range(len(values))):
        plan.problem(
            dataset_json, f"label values {values} must be consecutive from 0 (background), as nnU-Net requires"
        )
    plan.files["dataset.json"] = (dataset_json, "json")  # type: ignore[assignment]
    ending, n_channels = str(meta["file_ending"]), len(meta["channel_names"])
    allowed = set(labels.values())

    train_images = _names_and_cases(plan, root / "imagesTr", ending, n_channels)
    train_labels = _label_files(plan, root / "labelsTr", ending)
    train = _pair(
        plan,
        "training",
        root / "imagesTr",
        root / "labelsTr",
        train_images,
        train_labels,
        ending,
        n_channels,
        allowed,
        ("imagesTr", "labelsTr"),
    )
    expected = meta.get("numTraining")
    if isinstance(expected, int) and expected != len(train_images):
        plan.problem(
            dataset_json,
            f"numTraining is {expected}, but imagesTr holds {len(train_images)} case(s) (nnU-Net refuses the dataset)",
        )

    if task.test.cases is not None:
        held_out = list(task.test.cases)
        dup = sorted({c for c in held_out if held_out.count(c) > 1})
        if dup:
            plan.problem(task.source, f"field 'test.cases' lists {dup} more than once")
        unknown = [c for c in held_out if c not in train_images]
        if unknown:
            plan.problem(task.source, f"field 'test.cases': {unknown} are not cases of {root / 'imagesTr'}")
        train = [c for c in train if c not in set(held_out)]
        if not set(held_out) - set(unknown):
            plan.problem(task.source, "no test case is left to score")
    else:
        assert task.test.images is not None and task.test.labels is not None  # HeldOutSplit checked them
        images_dir, labels_dir = root / task.test.images, root / task.test.labels
        test_images = _names_and_cases(plan, images_dir, ending, n_channels)
        test_labels = _label_files(plan, labels_dir, ending)
        test = _pair(
            plan,
            "test",
            images_dir,
            labels_dir,
            test_images,
            test_labels,
            ending,
            n_channels,
            allowed,
            (task.test.images, task.test.labels),
        )
        both = sorted(set(test_images) & set(train_images))
        if both:
            plan.problem(images_dir, f"case id(s) {both[:5]} are both training and test cases")
        if not test_images and not test_labels:
            plan.problem(images_dir, f"no test images (<case>_0000{ending})")
        elif not test:
            plan.problem(images_dir, "no complete test case (image and reference) to score")
    if len(train) < task.num_folds:
        plan.problem(task.source, f"{len(train)} training case(s) cannot make num_folds = {task.num_folds} folds")
    return plan


def plan_classification(task: ClassificationTask) -> _Plan:
    plan = _Plan(task)
    table = read_labels_file(task.labels_csv, task.classes)
    for message in table.problems:
        plan.problem(task.labels_csv, message)
    labels, plan.mislabelled = table.labels, table.mislabelled
    plan.files[f"labels/{task.labels_csv.name}"] = (task.labels_csv, "text")  # type: ignore[assignment]
    present = sorted(set(labels.values()))
    if len(present) == 1:
        plan.problem(task.labels_csv, f"every case has the class {present[0]!r}: nothing to classify")
    for c in task.classes:
        if labels and c not in present:
            plan.warn(task.labels_csv, f"class {c!r} has no case")

    images = _names_and_cases(plan, task.images_dir, IMAGE_SUFFIX, task.num_channels)
    masks = _label_files(plan, task.masks_dir, IMAGE_SUFFIX) if task.masks_dir is not None else {}
    for case in sorted(set(images) - set(labels) - plan.mislabelled):
        plan.problem(
            images[case][min(images[case])], f"image of case {case!r}, which has no label in {task.labels_csv}"
        )
    for case in sorted(set(masks) - set(labels) - plan.mislabelled):
        plan.warn(masks[case], f"mask of case {case!r}, which has no label in {task.labels_csv}")
    ids, indices = [], []
    for case, label in labels.items():
        channels = images.get(case, {})
        missing = [f"{case}_{c:04d}{IMAGE_SUFFIX}" for c in range(task.num_channels) if c not in channels]
        if missing:
            plan.problem(
                task.images_dir,
                f"case {case!r} (labelled in {task.labels_csv.name}) has no image file {', '.join(missing)}",
            )
            continue
        files = [channels[c] for c in range(task.num_channels)]
        for f in files:
            plan.add(f"images/{f.name}", f, "image")
        if task.masks_dir is not None:
            if case not in masks:
                plan.problem(task.masks_dir, f"case {case!r} has no mask {case}{IMAGE_SUFFIX}")
                continue
            plan.add(f"masks/{masks[case].name}", masks[case], "label")
            plan.allowed_values[masks[case]] = None
            plan.masks.append(masks[case])
            files.append(masks[case])
        plan.groups[f"case {case!r}"] = files
        ids.append(case)
        indices.append(task.classes.index(label))
    if task.test_cases is not None:
        dup = sorted({c for c in task.test_cases if task.test_cases.count(c) > 1})
        if dup:
            plan.problem(task.source, f"field 'test_cases' lists {dup} more than once")
        unknown = [c for c in task.test_cases if c not in labels]
        if unknown:
            plan.problem(task.source, f"field 'test_cases': {unknown} are not labelled in {task.labels_csv}")
    elif task.folds is not None and len(labels) < task.folds.k:
        plan.problem(task.source, f"{len(labels)} labelled case(s) cannot make {task.folds.k} folds")
    plan.labelled = (ids, indices)
    plan.after_files = _check_folds
    return plan


# ----------------------------------------------------------------------------- checking
def _check_file(plan: _Plan, path: Path, facts: FileFacts) -> bool:
    if facts.error:
        plan.problem(path, facts.error)
        return False
    ok = True
    if facts.dimension != 3:
        shape = "x".join(str(s) for s in (facts.shape or ()))
        plan.problem(path, f"a {facts.dimension}D image ({shape}); a 3D volume is expected")
        ok = False
    if facts.components not in (None, 1):
        plan.problem(path, f"{facts.components} components per voxel; channels must be separate files")
        ok = False
    if facts.nonfinite:
        plan.problem(path, f"{facts.nonfinite} NaN or infinite voxel(s)")
        ok = False
    if path in plan.allowed_values:
        allowed = plan.allowed_values[path]
        values = facts.values or ()
        if facts.non_integer_values:
            plan.problem(path, "holds non-integer values; a label map or mask holds integers")
            ok = False
        elif allowed is not None and not set(int(v) for v in values) <= allowed:
            bad = sorted(set(int(v) for v in values) - allowed)
            plan.problem(path, f"label value(s) {bad[:10]} are not labels of dataset.json {sorted(allowed)}")
            ok = False
        elif allowed is None and any(v < 0 for v in values):
            plan.problem(path, "holds negative values; a mask is 0 outside and non-zero inside")
            ok = False
        if path in plan.masks and not any(v != 0 for v in values):
            plan.problem(path, "the mask is empty (the crop is centred on it)")
            ok = False
    return ok


def _check_grid(plan: _Plan, case: str, files: Sequence[Path], facts: Mapping[Path, FileFacts]) -> None:
    """Every file of a case on the first one's voxel grid (shape, spacing, origin, direction)."""
    ref_path, ref = files[0], facts[files[0]]
    for path in files[1:]:
        f = facts[path]
        diffs = []
        if f.shape != ref.shape:
            diffs.append(f"shape {f.shape} vs {ref.shape}")
        else:
            # both passed _check_file: read without an error, so their geometry is known
            assert f.spacing is not None and f.origin is not None and f.direction is not None
            assert ref.spacing is not None and ref.origin is not None and ref.direction is not None
            if not np.allclose(f.spacing, ref.spacing, rtol=SPACING_RTOL, atol=SPACING_ATOL):
                diffs.append(f"spacing {_fmt(f.spacing)} vs {_fmt(ref.spacing)}")
            if not np.allclose(f.origin, ref.origin, rtol=0, atol=ORIGIN_ATOL_MM):
                diffs.append(f"origin {_fmt(f.origin)} vs {_fmt(ref.origin)}")
            if not np.allclose(f.direction, ref.direction, rtol=0, atol=DIRECTION_ATOL):
                diffs.append(f"direction {_fmt(f.direction)} vs {_fmt(ref.direction)}")
        if diffs:
            plan.problem(path, f"{case}: not on the grid of {ref_path.name}: {'; '.join(diffs)}")


def _fmt(values) -> str:
    return "(" + ", ".join(f"{v:.6g}" for v in values) + ")"


def _check_folds(plan: _Plan, recipe) -> None:
    task = plan.task
    assert isinstance(task, ClassificationTask)  # plan_classification's own check
    ids, indices = plan.labelled or ([], [])
    if not ids or plan.problems:
        return
    for fold in task.fold_ids:
        try:
            part = recipe.part(CLASSIFICATION, ClassificationRecipe) if recipe else None
            train, test = task.fold_split(ids, indices, fold, part)
        except ValueError as e:
            plan.problem(task.source, str(e))
            return
        label = dict(zip(ids, indices))
        for part, members in (("training", train), ("test", test)):
            missing = [task.classes[k] for k in range(len(task.classes)) if k not in {label[c] for c in members}]
            if missing:
                plan.warn(
                    task.source,
                    f"fold {fold}: no {', '.join(map(repr, missing))} case among its {len(members)} {part} case(s)",
                )


def check_tasks(
    tasks: Mapping[str, TaskSpec] | Iterable[TaskSpec],
    cache: Path | None = None,
    recipe=None,
    workers: int | None = None,
) -> PreflightReport:
    """Check every task; ``cache`` is the facts cache file (None: read everything). ``recipe``
    decides the classification folds (None: the default recipe's)."""
    t0 = time.time()
    tasks = list(tasks.values()) if isinstance(tasks, Mapping) else list(tasks)
    plans = [_plan(t) for t in tasks]
    facts, stats = _read(plans, cache, workers)
    report = PreflightReport(stats=stats)
    for plan in plans:
        good = {
            path
            for path, role in plan.files.values()
            if role in ("image", "label") and _check_file(plan, path, facts[path])
        }
        for case, files in plan.groups.items():
            if all(f in good for f in files):
                _check_grid(plan, case, files, facts)
        if plan.after_files is not None:
            plan.after_files(plan, recipe)
        report.problems += plan.problems
        report.warnings += plan.warnings
        report.data[plan.task.name] = _task_data(plan, facts)
    report.seconds = time.time() - t0
    return report


def task_data(task, cache: Path | None = None) -> TaskData:
    """The data identity of one task as it is on disk now (what a job checks before it starts);
    unchanged files are not read again (``cache``)."""
    plan = _plan(task)
    facts, _ = _read([plan], cache, None)
    return _task_data(plan, facts)


def _read(plans: Sequence[_Plan], cache: Path | None, workers: int | None):
    store = FactsCache(cache)
    wanted = [(path, role) for plan in plans for path, role in plan.files.values() if role in ("image", "label")]
    facts, stats = read_all(wanted, store, workers)
    for plan in plans:  # small text files (dataset.json, labels.csv): hashed, never cached
        for path, role in plan.files.values():
            if role not in ("image", "label"):
                facts[path] = _hash_only(path)
    store.save()
    return facts, stats


def _hash_only(path: Path) -> FileFacts:
    try:
        raw = Path(path).read_bytes()
    except OSError as e:
        return FileFacts(sha256="", size=0, error=f"cannot read: {e.strerror or e}")
    return FileFacts(sha256=hashlib.sha256(raw).hexdigest(), size=len(raw))


def _task_data(plan: _Plan, facts: Mapping[Path, FileFacts]) -> TaskData:
    return TaskData(plan.task.name, tuple(sorted((name, facts[path].sha256) for name, (path, _) in plan.files.items())))


def preflight_cache(results: Path) -> Path:
    """Where the facts of checked files are remembered, per results folder
    (``ResultsLayout.data_check_cache``)."""
    return ResultsLayout(results).data_check_cache


class CurrentTasks:
    """The tasks as their files define them now, each loaded (and its data identity worked out)
    once: what a finished run is compared with before it counts (``harness status``, the
    leaderboard). ``cache``: the facts cache, so unchanged files are not read again."""

    def __init__(self, cache: Path | None = None):
        self.cache = cache
        self._tasks: dict[str, tuple[str, dict[str, str]] | None] = {}

    def _current(self, task_file: str) -> tuple[str, dict[str, str]] | None:
        if task_file not in self._tasks:
            try:
                task = load_task_file(Path(task_file))
                self._tasks[task_file] = (task.spec_hash(), task_data(task, self.cache).as_dict())
            except (TaskSpecError, OSError):
                self._tasks[task_file] = None  # cannot be told from here; evaluate reports the file
        return self._tasks[task_file]

    def staleness(self, spec: JobSpec | Mapping) -> str:
        """Why the run described by ``spec`` (its ``JobSpec``, or job.json's content as a mapping)
        was computed on another task than the one its file defines now: "its task file changed
        since it ran" or "its data changed since it ran: <files>"; "" when it was not, or when that
        cannot be told (no task file recorded, or one that no longer loads)."""
        if isinstance(spec, JobSpec):
            spec = spec.as_dict()
        task_file = spec.get("task_file")
        current = self._current(str(task_file)) if task_file else None
        if current is None:
            return ""
        spec_hash, files = current
        if spec.get("task_spec_hash") not in (None, spec_hash):
            return "its task file changed since it ran"
        before = spec.get("data_files")
        change = data_changes(before, files) if isinstance(before, dict) else ""
        return f"its data changed since it ran: {change}" if change else ""
