"""Task specifications: what a hidden (or toy) downstream task is and how it is fine-tuned.

One YAML file per task. The spec is frozen and rejects unknown keys, so a typo in a registry is
an error at load time, not a silently ignored setting. Per-track schedules start from the
challenge defaults (shared/reference/SSL3D.md sections 2-3) and a task overrides only what it
changes. Relative paths are resolved against the YAML file's folder.

Axis order: spacings and patch sizes are given in array order, the order of the axes of the
arrays nnU-Net and the networks see (SimpleITK's ``GetArrayFromImage`` order, i.e. (z, y, x) for
a NIfTI file), the same order in which nnssl plans store their patch sizes.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator

from harness.tracks import TRACKS, check_primus_patch

Triple = tuple[float, float, float]
IntTriple = tuple[int, int, int]


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# ----------------------------------------------------------------------------- metrics
SEGMENTATION_METRICS = ("dice", "nsd")
#: Classification entries are ranked by metrics the leaderboard can recompute on bootstrap
#: resamples of the pooled test cases; macro F1 and average precision are always reported in
#: metrics.json as well, but do not rank.
CLASSIFICATION_METRICS = ("auroc", "balanced_accuracy")


class MetricSpec(_Frozen):
    name: str
    #: NSD tolerance in millimetres (segmentation ``nsd`` only).
    tolerance_mm: float | None = Field(default=None, gt=0)


# ----------------------------------------------------------------------------- schedules
class SegmentationSchedule(_Frozen):
    """nnU-Net-style fine-tuning schedule: linear warm-up, then poly decay (exponent 0.9)."""

    epochs: int = Field(150, ge=1)
    iterations_per_epoch: int = Field(250, ge=1)
    val_iterations_per_epoch: int = Field(50, ge=1)
    batch_size: int = Field(2, ge=1)
    optimizer: Literal["sgd", "adamw"] = "sgd"
    lr: float = Field(1e-3, gt=0)
    from_scratch_lr: float = Field(1e-2, gt=0)
    weight_decay: float = Field(3e-5, ge=0)
    momentum: float = Field(0.99, ge=0, lt=1)
    betas: tuple[float, float] = (0.9, 0.98)
    warmup_epochs: int = Field(15, ge=0)
    poly_exponent: float = Field(0.9, gt=0)
    #: Gradient-norm clip; nnU-Net's own value is 12, the Primus schedule clips at 1.
    grad_clip: float = Field(12.0, gt=0)
    #: Save a resumable nnU-Net checkpoint every this many epochs.
    checkpoint_every: int = Field(5, ge=1)


class ClassificationSchedule(_Frozen):
    """Encoder + head schedule: AdamW, linear warm-up, then cosine decay."""

    epochs: int = Field(200, ge=1)
    iterations_per_epoch: int | None = Field(None, ge=1)  # None: one pass over the training cases
    batch_size: int = Field(2, ge=1)
    gradient_accumulation: int = Field(4, ge=1)
    lr: float = Field(1e-4, gt=0)
    from_scratch_lr: float = Field(1e-4, gt=0)
    weight_decay: float = Field(1e-2, ge=0)
    warmup_epochs: int = Field(20, ge=0)
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    dropout: float = Field(0.2, ge=0, lt=1)
    grad_clip: float | None = Field(None, gt=0)


SEGMENTATION_DEFAULTS: dict[str, dict[str, Any]] = {
    "ResEncL": dict(optimizer="sgd", lr=1e-3, from_scratch_lr=1e-2, weight_decay=3e-5, grad_clip=12.0),
    "PrimusM": dict(optimizer="adamw", lr=1e-4, from_scratch_lr=3e-4, weight_decay=5e-2, betas=(0.9, 0.98), grad_clip=1.0),
}
CLASSIFICATION_DEFAULTS: dict[str, dict[str, Any]] = {"ResEncL": {}, "PrimusM": {}}


def _merge_track_schedules(value: Any, defaults: dict[str, dict[str, Any]]) -> dict[str, Any]:
    value = value or {}
    if not isinstance(value, dict):
        raise ValueError("must be a mapping from track name to schedule fields")
    unknown = sorted(set(value) - set(TRACKS))
    if unknown:
        raise ValueError(f"unknown track(s) {unknown}; accepted tracks: {', '.join(TRACKS)}")
    merged = {}
    for track in TRACKS:
        override = value.get(track) or {}
        if not isinstance(override, dict):
            raise ValueError(f"{track}: must be a mapping of schedule fields")
        merged[track] = {**defaults[track], **override}
    return merged


# ----------------------------------------------------------------------------- tasks
class _TaskBase(_Frozen):
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
            if track not in TRACKS:
                raise ValueError(f"unknown track {track!r}; accepted tracks: {', '.join(TRACKS)}")
            if track == "PrimusM":
                check_primus_patch(patch)
            elif any(p < 64 or p % 32 for p in patch):
                raise ValueError(f"ResEncL patch {patch} must be multiples of 32, at least 64 (5 stride-2 stages)")
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
            return tuple(self.patch_size[track])
        return tuple(recommended or (160, 160, 160))

    def spec_hash(self) -> str:
        """Hash of everything in the spec as written: a changed spec gives new job identities."""
        canonical = json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]


class HeldOutSplit(_Frozen):
    """The test cases: an nnU-Net ``imagesTs``/``labelsTs`` pair, or named cases of ``imagesTr``."""

    images: str | None = "imagesTs"
    labels: str | None = "labelsTs"
    cases: tuple[str, ...] | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> "HeldOutSplit":
        if self.cases is not None and len(self.cases) == 0:
            raise ValueError("cases: the explicit held-out list is empty")
        return self


class SegmentationTask(_TaskBase):
    type: Literal["segmentation"]
    #: An nnU-Net raw dataset folder: imagesTr/, labelsTr/, dataset.json (+ imagesTs/, labelsTs/).
    dataset: str
    test: HeldOutSplit = HeldOutSplit()
    folds: tuple[int, ...] = (0,)
    num_folds: int = Field(5, ge=2)
    schedule: dict[str, SegmentationSchedule] = Field(default_factory=dict, validate_default=True)
    metrics: tuple[MetricSpec, ...] = (MetricSpec(name="dice"), MetricSpec(name="nsd", tolerance_mm=1.0))
    test_time_mirroring: bool = True

    @field_validator("schedule", mode="before")
    @classmethod
    def _schedule_defaults(cls, v: Any) -> Any:
        return _merge_track_schedules(v, SEGMENTATION_DEFAULTS)

    @field_validator("metrics")
    @classmethod
    def _known_metrics(cls, v: tuple[MetricSpec, ...]) -> tuple[MetricSpec, ...]:
        out = []
        for m in v:
            _check_metric_name(m.name, SEGMENTATION_METRICS)
            if m.name == "nsd" and m.tolerance_mm is None:
                m = m.model_copy(update={"tolerance_mm": 1.0})
            out.append(m)
        if not out:
            raise ValueError("at least one metric is needed to rank entries")
        return tuple(out)

    @model_validator(mode="after")
    def _folds_in_range(self) -> "SegmentationTask":
        bad = [f for f in self.folds if not 0 <= f < self.num_folds]
        if bad or not self.folds:
            raise ValueError(f"folds {list(self.folds)} must be non-empty and within 0..{self.num_folds - 1}")
        return self

    @property
    def fold_ids(self) -> tuple[int, ...]:
        """The folds a job matrix runs (both task types answer this)."""
        return tuple(self.folds)

    @property
    def dataset_dir(self) -> Path:
        return self.resolve(self.dataset)

    @property
    def nsd_tolerance_mm(self) -> float:
        return next((m.tolerance_mm for m in self.metrics if m.name == "nsd"), 1.0)


class ClassificationFolds(_Frozen):
    """Stratified k-fold cross-validation over the labelled cases (each fold's test part is held out)."""

    k: int = Field(3, ge=2)
    seed: int = 0


class ClassificationAugmentation(_Frozen):
    """batchgeneratorsv2 transforms applied during classification fine-tuning."""

    enabled: bool = True
    rotation_degrees: float = Field(15.0, ge=0)
    scale: tuple[float, float] = (0.85, 1.15)
    mirror_axes: tuple[int, ...] = (0, 1, 2)
    gaussian_noise_p: float = Field(0.1, ge=0, le=1)
    brightness_p: float = Field(0.15, ge=0, le=1)
    contrast_p: float = Field(0.15, ge=0, le=1)
    gamma_p: float = Field(0.3, ge=0, le=1)


class ClassificationTask(_TaskBase):
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
    schedule: dict[str, ClassificationSchedule] = Field(default_factory=dict, validate_default=True)
    metrics: tuple[MetricSpec, ...] = (MetricSpec(name="auroc"), MetricSpec(name="balanced_accuracy"))
    augmentation: ClassificationAugmentation = ClassificationAugmentation()

    @field_validator("schedule", mode="before")
    @classmethod
    def _schedule_defaults(cls, v: Any) -> Any:
        return _merge_track_schedules(v, CLASSIFICATION_DEFAULTS)

    @field_validator("metrics")
    @classmethod
    def _known_metrics(cls, v: tuple[MetricSpec, ...]) -> tuple[MetricSpec, ...]:
        for m in v:
            _check_metric_name(m.name, CLASSIFICATION_METRICS)
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
    def _one_split(self) -> "ClassificationTask":
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


TaskSpec = Annotated[Union[SegmentationTask, ClassificationTask], Field(discriminator="type")]


def _check_metric_name(name: str, known: tuple[str, ...]) -> None:
    if name not in known:
        import difflib

        close = difflib.get_close_matches(name, known, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"unknown metric {name!r}{hint}; known: {', '.join(known)}")
