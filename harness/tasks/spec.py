"""Task specifications: what a hidden (or toy) downstream task is and how it is fine-tuned.

One YAML file per task. The spec is frozen and rejects unknown keys, so a typo in a registry is
an error at load time, not a silently ignored setting. Per-track schedules start from the
challenge defaults (shared/reference/SSL3D.md sections 2-3) and a task overrides only what it
changes. Relative paths are resolved against the YAML file's folder.

Axis order: spacings and patch sizes are given in array order, the order of the axes of the
arrays nnU-Net and the networks see (SimpleITK's ``GetArrayFromImage`` order, i.e. (z, y, x) for
a NIfTI file), the same order in which nnssl plans store their patch sizes.

Over 450 lines for a reason: the task schema is one pydantic model per task type with the
validators they share; a reader of the registry format finds all of it here.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator

from harness.metrics.registry import get_metric, metrics_for
from harness.recipes import (
    DEFAULT_RECIPE,
    ClassificationAugmentation,
    ClassificationRecipe,
    ClassificationSchedule,
    Recipe,
    RecipeError,
    SegmentationSchedule,
    apply_overrides,
    get_recipe,
)
from harness.task_types import CLASSIFICATION
from harness.tracks import TRACKS, get_track

Triple = tuple[float, float, float]
IntTriple = tuple[int, int, int]


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# ----------------------------------------------------------------------------- metrics
#: The metrics a task may rank by, from the metric registry (``harness.metrics.registry``):
#: per case for segmentation; for classification computed on the test cases pooled across folds,
#: which the leaderboard recomputes on bootstrap resamples.
SEGMENTATION_METRICS = tuple(m.name for m in metrics_for("segmentation"))
CLASSIFICATION_METRICS = tuple(m.name for m in metrics_for("classification"))


class MetricSpec(_Frozen):
    name: str
    #: NSD tolerance in millimetres (segmentation ``nsd`` only).
    tolerance_mm: float | None = Field(default=None, gt=0)

    @property
    def higher_is_better(self) -> bool:
        """The metric's direction, from the registry (the task validated the name)."""
        return get_metric(self.name).higher_is_better


# ----------------------------------------------------------------------------- schedules
def _track_overrides(value: Any, task_type: str) -> dict[str, dict[str, Any]]:
    """A task's per-track schedule overrides, as written, checked against the default recipe (so a
    typo or a bad value is an error at load time); the recipe a job runs with is their base."""
    value = value or {}
    if not isinstance(value, dict):
        raise ValueError("must be a mapping from track name to schedule fields")
    unknown = sorted(set(value) - set(TRACKS))
    if unknown:
        raise ValueError(f"unknown track(s) {unknown}; accepted tracks: {', '.join(TRACKS)}")
    recipe = get_recipe(DEFAULT_RECIPE)
    out = {}
    for track, override in value.items():
        override = override or {}
        base = recipe.part(task_type).schedules[track]
        try:
            apply_overrides(base, override, field=track)
        except RecipeError as e:
            raise ValueError(str(e)) from None
        out[track] = dict(override)
    return out


# ----------------------------------------------------------------------------- tasks
class TaskSpec(_Frozen):
    """What every task type's spec has; a type's own class (``harness.task_types``) adds its
    data, split and metrics, and a ``type: Literal["<its name>"]``."""

    type: str
    #: Fields that decide only how predictions are scored, never what is trained or predicted.
    SCORING_FIELDS: ClassVar[tuple[str, ...]] = ("metrics",)
    #: What the task ranks by (each type sets its own default and the names it accepts).
    metrics: tuple[MetricSpec, ...]
    name: Annotated[str, Field(pattern=r"^[A-Za-z][A-Za-z0-9_-]*$")]
    description: str = ""
    target_spacing: Triple = (1.0, 1.0, 1.0)
    #: Patch size per track; a missing track uses the submission plan's
    #: ``recommended_downstream_patchsize`` (160^3 in the challenge).
    patch_size: dict[str, IntTriple] = Field(default_factory=dict)
    seed: int = 0
    #: Wall-clock limit of one fine-tuning job (the job matrix enforces it).
    time_limit_minutes: float = Field(24 * 60, gt=0)

    _source: Path | None = PrivateAttr(default=None)

    @field_validator("target_spacing")
    @classmethod
    def _positive_spacing(cls, v: Triple) -> Triple:
        if any(s <= 0 for s in v):
            raise ValueError("spacing must be positive (mm)")
        return v

    @field_validator("patch_size")
    @classmethod
    def _patch_per_track(cls, v: dict[str, IntTriple]) -> dict[str, IntTriple]:
        for track, patch in v.items():
            get_track(track).check_patch(patch)
        return v

    # paths --------------------------------------------------------------------------
    @property
    def source(self) -> Path | None:
        """The YAML file this spec was loaded from."""
        return self._source

    def resolve(self, path: str | Path) -> Path:
        p = Path(path).expanduser()
        if not p.is_absolute() and self._source is not None:
            p = self._source.parent / p
        return p.resolve()

    def patch_for(self, track: str, recommended: IntTriple | None = None) -> IntTriple:
        if track in self.patch_size:
            return self.patch_size[track]
        z, y, x = recommended or (160, 160, 160)
        return (z, y, x)

    def check_recipe(self, recipe: Recipe) -> None:
        """Resolve what a job of this task takes from ``recipe``, for every track, before anything
        runs: an override the recipe cannot take is an error naming the task file and the field."""
        for track in TRACKS:
            self.schedule_for(track, recipe)

    def recipe_extras(self, recipe: Recipe) -> dict[str, Any]:
        """Recipe choices a job of this task makes beyond its schedule (part of its identity)."""
        return {}

    def schedule_for(self, track: str, recipe: Recipe | None = None) -> Any:
        return _resolved_schedule(self, track, recipe)

    @property
    def fold_ids(self) -> tuple[int, ...]:
        """The folds a job matrix runs."""
        raise NotImplementedError

    def required_paths(self) -> list[tuple[str, Path, str]]:
        """``(field, path, "folder" | "file")`` that must exist for the file to load."""
        raise NotImplementedError

    def summary(self) -> str:
        """One line for ``harness tasks``."""
        raise NotImplementedError

    def spec_hash(self) -> str:
        """Hash of everything in the spec as written: a changed spec gives new job identities."""
        return _hash(self.model_dump(mode="json"))

    def training_hash(self) -> str:
        """Hash of the spec without what only scores the predictions (``SCORING_FIELDS``): equal
        before and after a change, `harness rescore` may rescore a finished job instead of training
        it again."""
        return _hash(self.model_dump(mode="json", exclude=set(self.SCORING_FIELDS)))


class HeldOutSplit(_Frozen):
    """The test cases: an nnU-Net ``imagesTs``/``labelsTs`` pair, or named cases of ``imagesTr``."""

    images: str | None = "imagesTs"
    labels: str | None = "labelsTs"
    cases: tuple[str, ...] | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> HeldOutSplit:
        if self.cases is not None and len(self.cases) == 0:
            raise ValueError("cases: the explicit held-out list is empty")
        if self.cases is None and (self.images is None or self.labels is None):
            raise ValueError("images and labels name the held-out folders; give both, or cases (of imagesTr)")
        return self


class SegmentationTask(TaskSpec):
    type: Literal["segmentation"]
    #: An nnU-Net raw dataset folder: imagesTr/, labelsTr/, dataset.json (+ imagesTs/, labelsTs/).
    dataset: str
    test: HeldOutSplit = HeldOutSplit()
    folds: tuple[int, ...] = (0,)
    num_folds: int = Field(5, ge=2)
    #: Per-track schedule overrides on top of the recipe's schedule (``schedule_for``).
    schedule: dict[str, dict[str, Any]] = Field(default_factory=dict)
    metrics: tuple[MetricSpec, ...] = (MetricSpec(name="dice"), MetricSpec(name="nsd", tolerance_mm=1.0))
    test_time_mirroring: bool = True

    @field_validator("schedule", mode="before")
    @classmethod
    def _schedule_overrides(cls, v: Any) -> Any:
        return _track_overrides(v, "segmentation")

    def schedule_for(self, track: str, recipe: Recipe | None = None) -> SegmentationSchedule:
        return _resolved_schedule(self, track, recipe)

    def required_paths(self) -> list[tuple[str, Path, str]]:
        root = self.dataset_dir
        paths = [("dataset", root, "folder"), ("dataset", root / "dataset.json", "file")]
        paths += [("dataset", root / "imagesTr", "folder"), ("dataset", root / "labelsTr", "folder")]
        if self.test.cases is None:
            assert self.test.images is not None and self.test.labels is not None  # HeldOutSplit checked them
            paths += [("test.images", root / self.test.images, "folder")]
            paths += [("test.labels", root / self.test.labels, "folder")]
        return paths

    def summary(self) -> str:
        metrics = ", ".join(m.name + (f"@{m.tolerance_mm:g}mm" if m.tolerance_mm else "") for m in self.metrics)
        return (
            f"{self.name:<24} segmentation   folds {list(self.folds)}  spacing {self.target_spacing}  "
            f"metrics {metrics}  data {self.dataset_dir}"
        )

    @field_validator("metrics")
    @classmethod
    def _known_metrics(cls, v: tuple[MetricSpec, ...]) -> tuple[MetricSpec, ...]:
        out = []
        for m in v:
            _check_metric_name(m.name, "segmentation")
            if m.name == "nsd" and m.tolerance_mm is None:
                m = m.model_copy(update={"tolerance_mm": 1.0})
            out.append(m)
        if not out:
            raise ValueError("at least one metric is needed to rank entries")
        return tuple(out)

    @model_validator(mode="after")
    def _folds_in_range(self) -> SegmentationTask:
        bad = [f for f in self.folds if not 0 <= f < self.num_folds]
        if bad or not self.folds:
            raise ValueError(f"folds {list(self.folds)} must be non-empty and within 0..{self.num_folds - 1}")
        return self

    @property
    def fold_ids(self) -> tuple[int, ...]:
        return tuple(self.folds)

    @property
    def dataset_dir(self) -> Path:
        return self.resolve(self.dataset)

    @property
    def nsd_tolerance_mm(self) -> float:
        tol = next((m.tolerance_mm for m in self.metrics if m.name == "nsd"), 1.0)
        assert tol is not None  # _known_metrics gives nsd a tolerance
        return tol


class ClassificationFolds(_Frozen):
    """k-fold cross-validation over the labelled cases (each fold's test part is held out); the
    recipe says how the folds are drawn, and with what seed unless the task sets one."""

    k: int = Field(3, ge=2)
    seed: int | None = None


class ClassificationTask(TaskSpec):
    type: Literal["classification"]
    #: Folder of NIfTI images named as nnU-Net does: ``<case>_0000.nii.gz`` (+ ``_0001`` ... per channel).
    images: str
    #: CSV with columns ``case_id,label``.
    labels: str
    #: The class list, fixed here so that an unseen or missing label is an error.
    classes: tuple[str, ...] = Field(min_length=2)
    #: Optional folder of ``<case>.nii.gz`` foreground masks used to centre the crop.
    masks: str | None = None
    num_channels: int = Field(1, ge=1)
    folds: ClassificationFolds | None = ClassificationFolds()
    #: Alternative to ``folds``: an explicit held-out test list (then there is one fold, 0).
    test_cases: tuple[str, ...] | None = None
    #: Per-track schedule overrides on top of the recipe's schedule (``schedule_for``).
    schedule: dict[str, dict[str, Any]] = Field(default_factory=dict)
    metrics: tuple[MetricSpec, ...] = (MetricSpec(name="auroc"), MetricSpec(name="balanced_accuracy"))
    #: Augmentation overrides on top of the recipe's augmentation (``augmentation_for``).
    augmentation: dict[str, Any] = Field(default_factory=dict)

    @field_validator("schedule", mode="before")
    @classmethod
    def _schedule_overrides(cls, v: Any) -> Any:
        return _track_overrides(v, "classification")

    @field_validator("augmentation", mode="before")
    @classmethod
    def _augmentation_overrides(cls, v: Any) -> Any:
        v = v or {}
        try:
            apply_overrides(
                get_recipe(DEFAULT_RECIPE).part(CLASSIFICATION, ClassificationRecipe).augmentation, v, field=""
            )
        except RecipeError as e:
            raise ValueError(str(e)) from None
        return dict(v)

    def schedule_for(self, track: str, recipe: Recipe | None = None) -> ClassificationSchedule:
        return _resolved_schedule(self, track, recipe)

    def check_recipe(self, recipe: Recipe) -> None:
        super().check_recipe(recipe)
        self.augmentation_for(recipe)

    def recipe_extras(self, recipe: Recipe) -> dict[str, Any]:
        return {
            "augmentation": self.augmentation_for(recipe).model_dump(mode="json"),
            "split_seed": self.split_seed(recipe.part(CLASSIFICATION, ClassificationRecipe)),
        }

    def required_paths(self) -> list[tuple[str, Path, str]]:
        paths = [("images", self.images_dir, "folder"), ("labels", self.labels_csv, "file")]
        if self.masks_dir is not None:
            paths.append(("masks", self.masks_dir, "folder"))
        return paths

    def summary(self) -> str:
        split = f"{self.folds.k}-fold CV" if self.folds else f"{len(self.test_cases or ())} test cases"
        return (
            f"{self.name:<24} classification {split}  classes {list(self.classes)}  "
            f"metrics {', '.join(m.name for m in self.metrics)}  images {self.images_dir}"
        )

    def augmentation_for(self, recipe: Recipe | None = None) -> ClassificationAugmentation:
        recipe = recipe or get_recipe(DEFAULT_RECIPE)
        part = recipe.part(CLASSIFICATION, ClassificationRecipe)
        return apply_overrides(
            part.augmentation,
            self.augmentation,
            fixed=part.fixed_fields,
            recipe=recipe.name,
            where=str(self.source or self.name),
            field="augmentation",
        )

    def split_seed(self, recipe: ClassificationRecipe | None = None) -> int:
        """The task's own fold seed, else the recipe's (``recipe``: its classification part;
        ``None`` is the default recipe's)."""
        recipe = recipe or get_recipe(DEFAULT_RECIPE).part(CLASSIFICATION, ClassificationRecipe)
        return recipe.split_seed if self.folds is None or self.folds.seed is None else self.folds.seed

    def fold_split(
        self,
        case_ids: Sequence[str],
        label_indices: Sequence[int],
        fold: int,
        recipe: ClassificationRecipe | None = None,
    ) -> tuple[list[str], list[str]]:
        """``(train ids, test ids)`` of ``fold``, each in the given (labels-file) order; the
        details are in ``harness.finetune.classification.data.split_cases``. Lives here, free of
        torch, so that the data check can look at every fold before any job runs. A bad fold or
        too few cases raise ValueError."""
        import numpy as np

        part = recipe or get_recipe(DEFAULT_RECIPE).part(CLASSIFICATION, ClassificationRecipe)
        ids = list(case_ids)
        if self.test_cases is not None:
            if fold != 0:
                raise ValueError(f"task {self.name} has an explicit test list: the only fold is 0, not {fold}")
            test = set(self.test_cases)
            return [i for i in ids if i not in test], [i for i in ids if i in test]
        assert self.folds is not None  # _one_split: no test_cases means folds
        k = self.folds.k
        if not 0 <= fold < k:
            raise ValueError(f"task {self.name}: fold {fold} is outside 0..{k - 1}")
        if len(ids) < k:
            raise ValueError(f"task {self.name}: {len(ids)} labelled cases cannot make {k} folds")
        seed = self.split_seed(part)
        if part.split == "kfold":
            from sklearn.model_selection import KFold

            train_idx, test_idx = list(KFold(n_splits=k, shuffle=True, random_state=seed).split(ids))[fold]
        elif part.split == "stratified-kfold":
            import warnings

            from sklearn.model_selection import StratifiedKFold

            skf = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # a class with fewer than k cases: some folds miss it
                try:
                    train_idx, test_idx = list(skf.split(np.zeros(len(ids)), np.asarray(label_indices)))[fold]
                except ValueError as e:  # every class has fewer than k cases
                    raise ValueError(f"task {self.name}: cannot stratify {k} folds: {e}") from None
        else:  # the recipe's Literal admits nothing else
            raise ValueError(f"task {self.name}: unknown split {part.split!r}")
        return [ids[i] for i in sorted(train_idx)], [ids[i] for i in sorted(test_idx)]

    @field_validator("metrics")
    @classmethod
    def _known_metrics(cls, v: tuple[MetricSpec, ...]) -> tuple[MetricSpec, ...]:
        for m in v:
            _check_metric_name(m.name, "classification")
        if not v:
            raise ValueError("at least one metric is needed to rank entries")
        return v

    @field_validator("classes")
    @classmethod
    def _unique_classes(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if len(set(v)) != len(v):
            raise ValueError(f"classes must be unique, got {list(v)}")
        return v

    @model_validator(mode="after")
    def _one_split(self) -> ClassificationTask:
        if self.test_cases is not None:
            object.__setattr__(self, "folds", None)
        elif self.folds is None:
            raise ValueError("give either folds (k-fold CV) or test_cases (an explicit held-out list)")
        return self

    @property
    def fold_ids(self) -> tuple[int, ...]:
        return tuple(range(self.folds.k)) if self.folds is not None else (0,)

    @property
    def images_dir(self) -> Path:
        return self.resolve(self.images)

    @property
    def labels_csv(self) -> Path:
        return self.resolve(self.labels)

    @property
    def masks_dir(self) -> Path | None:
        return self.resolve(self.masks) if self.masks else None


def _hash(data: Any) -> str:
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def _resolved_schedule(task, track: str, recipe: Recipe | None):
    """The recipe's schedule for ``track`` with the task's overrides; an override the recipe fixes
    is an error naming the task file and the field."""
    if track not in TRACKS:
        raise ValueError(f"unknown track {track!r}; accepted tracks: {', '.join(TRACKS)}")
    recipe = recipe or get_recipe(DEFAULT_RECIPE)
    part = recipe.part(task.type)
    return apply_overrides(
        part.schedules[track],
        task.schedule.get(track, {}),
        fixed=part.fixed_fields,
        recipe=recipe.name,
        where=str(task.source or task.name),
        field=f"schedule.{track}",
    )


def _check_metric_name(name: str, task_type: str) -> None:
    """A ``ValueError`` (the registry's ``UnknownMetricError``) unless ``name`` is a ``task_type``
    metric of the registry; it says "did you mean ...?" and lists the valid names."""
    get_metric(name, task_type)
