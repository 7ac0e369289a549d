"""The task-type registry (``harness.task_types``): each entry's parts exist and fit, every stage
takes a task type from it, and a new type is one entry plus its own parts."""

from __future__ import annotations

import typing
from pathlib import Path
from typing import Literal

import pytest
import yaml

from harness.jobs.cost import CostModel
from harness.jobs.disk import job_need_bytes
from harness.leaderboard.read_runs import ResultsReader
from harness.metrics.registry import metrics_for
from harness.metrics.run_records import CasesSchema
from harness.recipes import get_recipe
from harness.task_types import GB, TASK_TYPES, TASK_TYPES_ENV, TaskType, get_task_type, register_from_environment
from harness.tasks import TaskSpecError, load_task_file
from harness.tasks.spec import MetricSpec, TaskSpec


@pytest.mark.parametrize("name", list(TASK_TYPES))
def test_each_entry_names_parts_that_fit(name):
    entry = TASK_TYPES[name]
    assert entry.name == name
    spec = entry.load("spec")
    assert issubclass(spec, TaskSpec)
    assert typing.get_args(spec.model_fields["type"].annotation) == (name,)  # its files say `type: <name>`
    assert callable(entry.load("data_check")) and callable(entry.load("runner")) and callable(entry.load("rescorer"))
    assert isinstance(entry.load("results"), ResultsReader)
    assert job_need_bytes(name) == entry.min_free_bytes > 0
    assert metrics_for(name), f"no metric of the registry ranks a {name} task"
    assert isinstance(get_recipe("ssl3d-2025").part(name), entry.load("recipe"))
    assert entry.cost is None or isinstance(entry.load("cost"), CostModel)
    assert isinstance(entry.load("cases"), CasesSchema) and entry.load("cases").task_type == name


def test_a_recipe_part_of_the_wrong_class_or_type_is_named():
    from harness.recipes import SSL3D_2025, ClassificationRecipe, RecipeError, SegmentationRecipe

    with pytest.raises(RecipeError, match=r"recipe ssl3d-2025: unknown task type 'regression'"):
        SSL3D_2025.part("regression")
    with pytest.raises(
        RecipeError, match=r"its segmentation part is a SegmentationRecipe, not a .*ClassificationRecipe"
    ):
        SSL3D_2025.part("segmentation", ClassificationRecipe)
    assert SSL3D_2025.part("segmentation", SegmentationRecipe) is SSL3D_2025.parts["segmentation"]


def test_entries_from_the_environment_are_registered_or_named(monkeypatch):
    monkeypatch.setenv(TASK_TYPES_ENV, "harness.task_types:GB")
    with pytest.raises(ValueError, match=r"HARNESS_TASK_TYPES: 'harness.task_types:GB' is a int, not a TaskType"):
        register_from_environment()
    monkeypatch.setenv(TASK_TYPES_ENV, "no_such_module_here:ENTRY")
    with pytest.raises(ValueError, match=r"HARNESS_TASK_TYPES: cannot import 'no_such_module_here:ENTRY'"):
        register_from_environment()
    monkeypatch.setenv(TASK_TYPES_ENV, "")
    assert register_from_environment() == []


def test_an_unknown_type_is_named_with_the_known_ones():
    with pytest.raises(ValueError, match=r"^task.yaml: unknown task type 'regression'; known: segmentation, class"):
        get_task_type("regression", "task.yaml")
    assert job_need_bytes("regression") == max(t.min_free_bytes for t in TASK_TYPES.values())


# ------------------------------------------------------------------------------ a new type
class CountingTask(TaskSpec):
    """A type the harness does not ship: count objects in a volume (its data, one CSV)."""

    type: Literal["counting"]
    counts: str
    metrics: tuple[MetricSpec, ...] = ()

    @property
    def fold_ids(self) -> tuple[int, ...]:
        return (0,)

    def required_paths(self) -> list[tuple[str, Path, str]]:
        return [("counts", self.resolve(self.counts), "file")]

    def summary(self) -> str:
        return f"{self.name:<24} counting       data {self.resolve(self.counts)}"


def test_a_new_type_is_one_registry_entry(tmp_path, monkeypatch):
    path = tmp_path / "count.yaml"
    path.write_text(yaml.safe_dump({"name": "Cells", "type": "counting", "counts": "counts.csv"}))
    with pytest.raises(TaskSpecError, match="unknown task type 'counting'"):
        load_task_file(path)

    entry = TaskType(
        "counting",
        spec=f"{__name__}:CountingTask",
        data_check="harness.tasks.preflight:plan_classification",  # (not called here)
        runner="harness.finetune.classification:run_classification",
        rescorer="harness.finetune.classification.train:rescore_classification",
        results="harness.leaderboard.read_runs:CLASSIFICATION_RESULTS",
        recipe="harness.recipes:ClassificationRecipe",
        min_free_bytes=1 * GB,
    )
    monkeypatch.setitem(TASK_TYPES, "counting", entry)
    with pytest.raises(TaskSpecError, match=r"field 'counts': file .*counts.csv does not exist"):
        load_task_file(path)  # its own schema and paths, checked on load
    (tmp_path / "counts.csv").write_text("case,count\na,3\n")
    task = load_task_file(path)
    assert isinstance(task, CountingTask) and task.fold_ids == (0,)
    assert task.summary().startswith("Cells") and job_need_bytes("counting") == GB
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"name": "Cells", "type": "counting", "counts": "counts.csv", "classes": []}))
    with pytest.raises(TaskSpecError, match="field 'classes': unknown field"):
        load_task_file(bad)
