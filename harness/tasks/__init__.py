"""Task registry: YAML task specs, validated on load, plus the synthetic toy tasks for CI."""

from harness.tasks.registry import TaskSpecError, get_task, load_registry, load_task_file, summarize
from harness.tasks.spec import (
    ClassificationSchedule,
    ClassificationTask,
    SegmentationSchedule,
    SegmentationTask,
)

__all__ = [
    "ClassificationSchedule",
    "ClassificationTask",
    "SegmentationSchedule",
    "SegmentationTask",
    "TaskSpecError",
    "get_task",
    "load_registry",
    "load_task_file",
    "summarize",
]
