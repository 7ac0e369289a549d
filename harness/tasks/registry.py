"""Loading a task registry: a folder of YAML files, one task each.

Three small stages, each with one job: read the YAML (pure data), index by task name (a
duplicate name reports both files), validate into frozen specs. Files are read in sorted
order so nothing depends on the file system; broken YAML is an error, never skipped.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import ValidationError

from harness.config_files import describe_validation, read_yaml_mapping
from harness.task_types import UnknownTaskTypeError, get_task_type
from harness.tasks.spec import TaskSpec


class TaskSpecError(ValueError):
    """A task file is unreadable or invalid; the message names the file and the field."""


def read_task_file(path: Path) -> dict:
    return read_yaml_mapping(path, "a task file", TaskSpecError)


def parse_task(data: dict, source: Path) -> TaskSpec:
    """Validate one task mapping against the schema of its ``type`` (``harness.task_types``);
    relative paths are taken relative to ``source``'s folder."""
    source = Path(source).resolve()
    try:
        spec = get_task_type(data.get("type"), "field 'type'").load("spec")
    except UnknownTaskTypeError as e:
        raise TaskSpecError(f"{source}: {e}") from None
    try:
        task = spec.model_validate(data)
    except ValidationError as e:
        raise TaskSpecError(f"{source}: {describe_validation(e)}") from None
    task._source = source
    _check_paths(task)
    return task


def load_task_file(path: Path) -> TaskSpec:
    return parse_task(read_task_file(path), path)


def load_registry(folder: Path) -> dict[str, TaskSpec]:
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


def get_task(folder: Path, name: str) -> TaskSpec:
    tasks = load_registry(folder)
    if name not in tasks:
        import difflib

        close = difflib.get_close_matches(name, list(tasks), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise TaskSpecError(f"{folder}: no task named {name!r}{hint}; tasks: {', '.join(sorted(tasks))}")
    return tasks[name]


def _check_paths(task) -> None:
    for field, path, kind in task.required_paths():
        if not (path.is_dir() if kind == "folder" else path.is_file()):
            raise TaskSpecError(f"{task.source}: field '{field}': {kind} {path} does not exist")


def summarize(task) -> str:
    """One line per task for ``harness tasks``."""
    return task.summary()
