"""Loading a task registry: a folder of YAML files, one task each.

Three small stages, each with one job: read the YAML (pure data), index by task name (a
duplicate name reports both files), validate into frozen specs. Files are read in sorted
order so nothing depends on the file system; broken YAML is an error, never skipped.
"""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import TypeAdapter, ValidationError

from harness.tasks.spec import ClassificationTask, SegmentationTask, TaskSpec

_ADAPTER = TypeAdapter(TaskSpec)


class TaskSpecError(ValueError):
    """A task file is unreadable or invalid; the message names the file and the field."""


def read_task_file(path: Path) -> dict:
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise TaskSpecError(f"{path}: cannot read: {e.strerror or e}") from None
    except yaml.YAMLError as e:
        raise TaskSpecError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise TaskSpecError(f"{path}: a task file must be a mapping of fields, got {type(data).__name__}")
    return data


def parse_task(data: dict, source: Path) -> SegmentationTask | ClassificationTask:
    """Validate one task mapping; relative paths are taken relative to ``source``'s folder."""
    source = Path(source).resolve()
    try:
        task = _ADAPTER.validate_python(data)
    except ValidationError as e:
        raise TaskSpecError(f"{source}: {_describe(e)}") from None
    task._source = source
    _check_paths(task)
    return task


def load_task_file(path: Path) -> SegmentationTask | ClassificationTask:
    return parse_task(read_task_file(path), path)


def load_registry(folder: Path) -> dict[str, SegmentationTask | ClassificationTask]:
    """All tasks of a registry folder, by name, in sorted file order."""
    folder = Path(folder)
    if not folder.is_dir():
        raise TaskSpecError(f"{folder}: task registry folder does not exist")
    files = sorted(p for p in folder.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file())
    if not files:
        raise TaskSpecError(f"{folder}: no task files (*.yaml) in the registry")
    raw = {p: read_task_file(p) for p in files}
    seen: dict[str, Path] = {}
    for path, data in raw.items():
        name = data.get("name")
        if isinstance(name, str) and name in seen:
            raise TaskSpecError(f"task name {name!r} is defined twice: {seen[name]} and {path}")
        if isinstance(name, str):
            seen[name] = path
    tasks = {}
    for path, data in raw.items():
        task = parse_task(data, path)
        tasks[task.name] = task
    return tasks


def get_task(folder: Path, name: str) -> SegmentationTask | ClassificationTask:
    tasks = load_registry(folder)
    if name not in tasks:
        import difflib

        close = difflib.get_close_matches(name, list(tasks), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise TaskSpecError(f"{folder}: no task named {name!r}{hint}; tasks: {', '.join(sorted(tasks))}")
    return tasks[name]


def _describe(error: ValidationError) -> str:
    parts = []
    for err in error.errors():
        loc = ".".join(str(x) for x in err["loc"] if not str(x).startswith(("function-after", "function-before")))
        # drop the discriminator tag pydantic puts first ("segmentation." / "classification.")
        loc = loc.split(".", 1)[1] if loc.split(".")[0] in ("segmentation", "classification") and "." in loc else loc
        msg = err["msg"].removeprefix("Value error, ")
        parts.append(f"field '{loc}': {msg}" if loc else msg)
    return "; ".join(parts)


def _check_paths(task) -> None:
    def need(field: str, path: Path, kind: str) -> None:
        ok = path.is_dir() if kind == "folder" else path.is_file()
        if not ok:
            raise TaskSpecError(f"{task.source}: field '{field}': {kind} {path} does not exist")

    if isinstance(task, SegmentationTask):
        root = task.dataset_dir
        need("dataset", root, "folder")
        need("dataset", root / "dataset.json", "file")
        need("dataset", root / "imagesTr", "folder")
        need("dataset", root / "labelsTr", "folder")
        if task.test.cases is None:
            assert task.test.images is not None and task.test.labels is not None  # HeldOutSplit checked them
            need("test.images", root / task.test.images, "folder")
            need("test.labels", root / task.test.labels, "folder")
    else:
        need("images", task.images_dir, "folder")
        need("labels", task.labels_csv, "file")
        if task.masks_dir is not None:
            need("masks", task.masks_dir, "folder")


def summarize(task) -> str:
    """One line per task for ``harness tasks``."""
    if isinstance(task, SegmentationTask):
        metrics = ", ".join(m.name + (f"@{m.tolerance_mm:g}mm" if m.tolerance_mm else "") for m in task.metrics)
        return (
            f"{task.name:<24} segmentation   folds {list(task.folds)}  spacing {task.target_spacing}  "
            f"metrics {metrics}  data {task.dataset_dir}"
        )
    split = f"{task.folds.k}-fold CV" if task.folds else f"{len(task.test_cases)} test cases"
    return (
        f"{task.name:<24} classification {split}  classes {list(task.classes)}  "
        f"metrics {', '.join(m.name for m in task.metrics)}  images {task.images_dir}"
    )
