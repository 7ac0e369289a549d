"""Recipes: every choice fine-tuning makes, named and versioned.

A recipe fixes the network initialisation, a transformer's token geometry, preprocessing, the
per-track default schedules, augmentation, the cross-validation split and how reported means are
taken, in one part per task type (``Recipe.part``; the part's class is the task type's ``recipe``
entry in ``harness.task_types``). A task file overrides single schedule (and augmentation) fields
on top of the recipe it is run with; a recipe may fix fields no task can change (``fixed_fields``).

Two recipes ship (docs/recipes.md has every value with its source):

* ``ssl3d-2025`` (default): the organizers' fine-tuning as their public code runs it, quirks
  included (shared/reference/SSL3D.md section 6);
* ``ssl3d-2025-lossless``: the same, except where the organizers' code loses or scrambles
  pre-trained information (``LOSSLESS_DIFFERENCES`` lists each change with its reason).

A job's identity holds only the recipe values that apply to it (``applicable_values``): nothing
transformer-specific for a ResEnc-L job. Two recipes that agree on everything a job uses share its
run folder (``setup_name``), so the lossless recipe re-trains only the Primus jobs. The fields of
those values keep the names they had in job.json when the transformer choices were named for
Primus (``IDENTITY_NAMES``), so the runs made before the rename keep their identities.

Torch-free: the CLI and the task registry import it before any network exists.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from functools import cache
from typing import Any, ClassVar, Literal, TypeVar, overload

from pydantic import BaseModel, ConfigDict, Field, SerializeAsAny

from harness.task_types import CLASSIFICATION, SEGMENTATION, TASK_TYPES, TaskType, UnknownTaskTypeError, get_task_type
from harness.tracks import TRACKS, get_track

DEFAULT_RECIPE = "ssl3d-2025"


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RecipeError(ValueError):
    """An unknown recipe or an override the recipe cannot take; the message names the file and field."""


#: A part of a transformer checkpoint that some jobs need beyond the keys every upload has:
#: PrimusM's LayerScale (``gamma_1``, ``gamma_2``) and inner attention norm. A Primus built
#: without them is seen in the wild (``ValidationReport.lacks``); it fits the organizers'
#: classification Eva, not PrimusM.
LAYERSCALE = "layerscale"
#: The recipe's transformer classification encoders that have LayerScale and the inner attention norm.
ENCODERS_WITH_LAYERSCALE = frozenset({"primus-m"})


# ----------------------------------------------------------------------------- schedules
class SegmentationSchedule(_Frozen):
    """nnU-Net-style fine-tuning schedule: linear warm-up, then poly decay, stepped per epoch."""

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
    #: The organizers: 48 (ABIDE, effective batch 96), 24 (WhiteCat); a task sets its own.
    gradient_accumulation: int = Field(48, ge=1)
    lr: float = Field(1e-4, gt=0)
    from_scratch_lr: float = Field(1e-4, gt=0)
    weight_decay: float = Field(1e-2, ge=0)
    warmup_epochs: int = Field(20, ge=0)
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    dropout: float = Field(0.2, ge=0, lt=1)
    grad_clip: float | None = Field(None, gt=0)


class ClassificationAugmentation(_Frozen):
    """batchgeneratorsv2 transforms of classification fine-tuning (per-sample probabilities).

    Defaults are the organizers' (``augmentation/policies/batchgenerators.py``); a task overrides
    single fields (``enabled: false`` switches all of it off)."""

    enabled: bool = True
    #: The organizers' ``rotation_for_DA: 0.523599`` (radians; ``math.radians(30)`` is 0.5235987...),
    #: passed as one scalar: every axis turns by exactly this angle when rotation fires.
    rotation_radians: float = Field(0.523599, ge=0)
    rotation_p: float = Field(0.2, ge=0, le=1)
    scale: tuple[float, float] = (0.7, 1.4)
    scale_p: float = Field(0.2, ge=0, le=1)
    gaussian_noise_variance: tuple[float, float] = (0.0, 0.1)
    gaussian_noise_p: float = Field(0.1, ge=0, le=1)
    gaussian_blur_sigma: tuple[float, float] = (0.5, 1.0)
    gaussian_blur_p: float = Field(0.2, ge=0, le=1)
    brightness: tuple[float, float] = (0.75, 1.25)
    brightness_p: float = Field(0.15, ge=0, le=1)
    contrast: tuple[float, float] = (0.75, 1.25)
    contrast_p: float = Field(0.15, ge=0, le=1)
    low_resolution_scale: tuple[float, float] = (0.5, 1.0)
    #: 0 (inferred): the organizers configure 0.25, but with the batchgeneratorsv2 of their time
    #: (<= 0.3.1) their ``SimulateLowResolutionTransform(ignore_axes=None)`` set every scale to 1, a
    #: no-op; later versions (0.3.6) resample. When a task sets it above 0, the harness's own
    #: transform runs (``harness.finetune.classification.augment.SimulatedLowResolution``), so the
    #: result never depends on the installed batchgeneratorsv2. docs/recipes.md has the evidence.
    low_resolution_p: float = Field(0.0, ge=0, le=1)
    gamma: tuple[float, float] = (0.7, 1.5)
    gamma_inverted_p: float = Field(0.1, ge=0, le=1)
    gamma_p: float = Field(0.3, ge=0, le=1)
    mirror_axes: tuple[int, ...] = (0, 1, 2)


# ----------------------------------------------------------------------------- recipe parts
#: The names the renamed recipe fields have in a job's identity (job.json's ``recipe_values``,
#: hashed into ``recipe_values_hash`` and so the job id): those of recipe version 2, when these
#: transformer choices were named for Primus. Kept, so the runs made before the rename stay done
#: (``tests/test_recipes.py`` pins the hashes); the rename changed no value.
IDENTITY_NAMES = {
    "token_order": "primus_token_order",
    "transformer_encoder": "primus_encoder",
    "token_pooling": "primus_pooling",
}


class RecipePart(_Frozen):
    """What a recipe fixes for the jobs of one task type: their per-track schedules and the
    choices they make. Each task type names its subclass (its ``recipe`` entry); the subclass's
    defaults, with each track's default schedule (``Track.schedules``), are the part of every
    recipe that does not list the type."""

    #: The schedule model of the type (a frozen pydantic model whose fields a task may override).
    schedule_model: ClassVar[type[BaseModel]]
    #: Fields that only a transformer (token) track's job uses: not part of a CNN job's identity.
    token_only_fields: ClassVar[tuple[str, ...]] = ()
    #: Fields whose name in a job's identity is another (``IDENTITY_NAMES``).
    identity_names: ClassVar[dict[str, str]] = {}
    schedules: dict[str, Any]
    #: Schedule fields a task may not override under this recipe.
    fixed_fields: tuple[str, ...] = ()

    def needs(self, track: str) -> frozenset[str]:
        """What a job of ``track`` needs of a checkpoint beyond its reference keys (``LAYERSCALE``)."""
        return frozenset()

    @classmethod
    def track_defaults(cls, task_type: str) -> dict[str, Any]:
        """``schedules`` from each track's defaults for ``task_type`` (``Track.schedules``)."""
        return {name: cls.schedule_model(**track.schedules.get(task_type, {})) for name, track in TRACKS.items()}


class SegmentationRecipe(RecipePart):
    schedule_model = SegmentationSchedule
    token_only_fields = ("token_order",)
    identity_names = {"token_order": IDENTITY_NAMES["token_order"]}
    #: ``nnunet``: ``network.apply(network.initialize)`` where the class defines it (He init with
    #: slope 1e-2, last norm of each residual block zeroed), before the encoder is loaded.
    network_init: Literal["nnunet"] = "nnunet"
    #: The sequence a tokenising (transformer) encoder is fed: ``as-is`` feeds Eva
    #: dynamic-network-architectures' ``(w h d)`` token order with the checkpoint's pos_embed copied
    #: unchanged; ``nnssl`` feeds the ``(h w d)`` order of nnssl's pre-training, so pos_embed and
    #: RoPE mean what they meant there.
    token_order: Literal["as-is", "nnssl"] = "as-is"
    #: nnU-Net's planned ``use_mask_for_norm`` and ``transpose_forward``/``_backward`` are kept.
    keep_planned_mask_for_norm: bool = True
    keep_planned_transpose: bool = True
    #: Reported means: per label the nan-mean over cases, then the mean over labels.
    reported_mean: Literal["labels-of-case-nanmeans"] = "labels-of-case-nanmeans"
    #: nnU-Net's training transforms as the organizers' fork ran them: nnunetv2 2.6.1 (the
    #: segmentation padded with label 0, mode ``zeros``, where 2.8.1 pads -1, mode ``constant``)
    #: with the batchgeneratorsv2 of 2025 (<= 0.3.0), whose ``SimulateLowResolutionTransform``
    #: with ``ignore_axes=None`` changed nothing (inferred: the version they ran is not recorded);
    #: ``installed``: the installed nnunetv2's transforms unchanged. docs/recipes.md lists every
    #: default that differs between the two versions.
    training_transforms: Literal["nnunetv2-2.6.1", "installed"] = "nnunetv2-2.6.1"
    schedules: dict[str, SegmentationSchedule]

    def needs(self, track: str) -> frozenset[str]:
        """What a job of ``track`` needs of a checkpoint beyond its reference keys: the track's
        reference network, i.e. PrimusM's LayerScale for a transformer."""
        return frozenset({LAYERSCALE}) if get_track(track).tokens else frozenset()


class ClassificationRecipe(RecipePart):
    schedule_model = ClassificationSchedule
    token_only_fields = ("transformer_encoder", "token_order", "token_pooling")
    identity_names = IDENTITY_NAMES

    #: The transformer encoder class: ``eva-no-layerscale`` is the organizers' Eva (no LayerScale
    #: gamma, no inner attention norm: those checkpoint weights are dropped); ``primus-m`` keeps
    #: PrimusM's Eva whole.
    transformer_encoder: Literal["eva-no-layerscale", "primus-m"] = "eva-no-layerscale"
    #: The sequence the tokenising encoder is fed: both recipes show Eva the tokens in nnssl's
    #: pre-training order.
    token_order: Literal["nnssl"] = "nnssl"
    #: The pooling over tokens: ``tokens-1..N``, the organizers' mean over all tokens but the first
    #: (their config claims a class token their Eva does not have); ``all-tokens``: the mean over
    #: every patch token.
    token_pooling: Literal["tokens-1..N", "all-tokens"] = "tokens-1..N"
    #: ``ssl3d-2025``: nnU-Net's He init for the from-scratch ResEnc-L encoder, timm's for Eva,
    #: torch's default for the linear head (see docs/recipes.md).
    network_init: Literal["ssl3d-2025"] = "ssl3d-2025"
    #: Spline order of resampling to the target spacing, images and mask alike (the organizers resample
    #: the mask with order 3 too, thresholded at 0.5 by nnU-Net's resize_segmentation).
    resampling_order: int = Field(3, ge=0, le=5)
    #: Crop centre: the mean of the mask's voxel coordinates (not the bounding-box centre).
    crop_centre: Literal["mask-centre-of-mass"] = "mask-centre-of-mass"
    #: Voxels outside the mask are set to 0 before normalisation.
    zero_outside_mask: bool = True
    #: z-score per channel after the crop, over the whole crop (zero padding included).
    normalization: Literal["zscore-after-crop"] = "zscore-after-crop"
    #: A case without a mask: the whole image is resized to the patch.
    without_mask: Literal["resize-to-patch"] = "resize-to-patch"
    #: ``kfold``: scikit-learn's KFold(k, shuffle=True, random_state=split_seed) over the cases
    #: in labels-file order (not stratified).
    split: Literal["kfold", "stratified-kfold"] = "kfold"
    split_seed: int = 12345
    #: The learning rate changes once per epoch: warm-up lr*(e+1)/(W+1) for e < W, then cosine.
    lr_stepping: Literal["epoch"] = "epoch"
    #: Mixed precision on CUDA (fp32 on CPU).
    cuda_precision: Literal["fp16", "bf16"] = "fp16"
    schedules: dict[str, ClassificationSchedule]
    augmentation: ClassificationAugmentation = ClassificationAugmentation()

    def needs(self, track: str) -> frozenset[str]:
        """What a job of ``track`` needs of a checkpoint beyond its reference keys: LayerScale
        only with an Eva that has it (``transformer_encoder``)."""
        layerscale = get_track(track).tokens and self.transformer_encoder in ENCODERS_WITH_LAYERSCALE
        return frozenset({LAYERSCALE}) if layerscale else frozenset()


Part = TypeVar("Part", bound=RecipePart)


@cache
def _default_part(entry: TaskType) -> RecipePart:
    cls = entry.load("recipe")
    return cls(schedules=cls.track_defaults(entry.name))


class Recipe(_Frozen):
    name: str
    #: Bump when a change of the harness changes what this recipe computes.
    version: int = Field(ge=1)
    description: str
    #: Its part per task type (``part``); a type not listed runs with its part's defaults.
    parts: dict[str, SerializeAsAny[RecipePart]]
    #: How this recipe differs from ``ssl3d-2025`` and why (empty for ``ssl3d-2025`` itself).
    differences: tuple[str, ...] = ()

    @overload
    def part(self, task_type: str) -> RecipePart: ...
    @overload
    def part(self, task_type: str, kind: type[Part]) -> Part: ...
    def part(self, task_type: str, kind: type[RecipePart] = RecipePart) -> RecipePart:
        """This recipe's part for ``task_type`` jobs, an instance of the type's ``recipe`` class
        (and of ``kind``, for a caller that needs that class's fields); an unknown type or a part
        of another class is a ``RecipeError``."""
        try:
            entry = get_task_type(task_type, f"recipe {self.name}")
        except UnknownTaskTypeError as e:
            raise RecipeError(str(e)) from None
        part = self.parts[task_type] if task_type in self.parts else _default_part(entry)
        expected = entry.load("recipe")
        if not isinstance(part, expected) or not isinstance(part, kind):
            want = expected.__name__ if kind is RecipePart else f"{expected.__name__} and {kind.__name__}"
            raise RecipeError(f"recipe {self.name}: its {task_type} part is a {type(part).__name__}, not a {want}")
        return part

    def runnable_task_types(
        self, track: str, lacks: Iterable[str], task_types: Iterable[str] = TASK_TYPES
    ) -> list[str]:
        """The ``task_types`` whose jobs of ``track`` this recipe can run on a checkpoint that
        ``lacks`` these parts (``ValidationReport.lacks``)."""
        missing = set(lacks)
        return [t for t in task_types if not self.part(t).needs(track) & missing]

    def applicable_values(self, task_type: str, track: str) -> dict[str, Any]:
        """Every recipe choice a ``task_type`` job of ``track`` makes (its track's schedule only)."""
        part = self.part(task_type)
        values = part.model_dump(mode="json", exclude={"schedules"})
        if not get_track(track).tokens:
            for name in part.token_only_fields:
                values.pop(name, None)
        values = {part.identity_names.get(name, name): value for name, value in values.items()}
        values["schedule"] = part.schedules[track].model_dump(mode="json")
        return values

    def setup_name(self, task_type: str, track: str) -> str:
        """The first shipped recipe that makes exactly this recipe's choices for such a job: the
        name of its run folder, shared by every recipe that agrees."""
        mine = self.applicable_values(task_type, track)
        for other in RECIPES.values():
            if other.applicable_values(task_type, track) == mine:
                return other.name
        return self.name


def fingerprint(values: Any) -> str:
    return hashlib.sha256(json.dumps(values, sort_keys=True, default=str).encode()).hexdigest()[:16]


# ----------------------------------------------------------------------------- the shipped recipes
_SEGMENTATION_FIXED = ("optimizer", "momentum", "betas", "poly_exponent")

SSL3D_2025 = Recipe(
    name="ssl3d-2025",
    # 2: the transposition planned from the data's own spacing, nnunetv2 2.6.1's training
    # transforms, the organizers' rotation value (docs/recipes.md)
    version=2,
    description="the SSL3D 2025 organizers' fine-tuning as their public code runs it, quirks included",
    parts={
        SEGMENTATION: SegmentationRecipe(
            token_order="as-is",
            schedules=SegmentationRecipe.track_defaults(SEGMENTATION),
            fixed_fields=_SEGMENTATION_FIXED,
        ),
        CLASSIFICATION: ClassificationRecipe(
            transformer_encoder="eva-no-layerscale",
            token_pooling="tokens-1..N",
            schedules=ClassificationRecipe.track_defaults(CLASSIFICATION),
        ),
    },
)

LOSSLESS_DIFFERENCES = (
    "segmentation, Primus: tokens reach Eva in nnssl's pre-training order (h w d), so the copied "
    "pos_embed and Eva's rotary embeddings (which follow the sequence index and are not in the "
    "checkpoint) both mean what they meant in pre-training; ssl3d-2025 feeds (w h d), which "
    "transposes the pre-trained geometry in its first two axes",
    "classification, Primus: PrimusM's Eva with LayerScale (gamma_1, gamma_2) and the inner "
    "attention norm, so those pre-trained weights are used; ssl3d-2025 drops them",
    "classification, Primus: the mean over all patch tokens; ssl3d-2025 leaves the first patch "
    "token out (its config assumes a class token its Eva does not have)",
)

SSL3D_2025_LOSSLESS = Recipe(
    name="ssl3d-2025-lossless",
    version=2,  # 2: as ssl3d-2025's version 2
    description="ssl3d-2025, except where the organizers' code loses or scrambles pre-trained information",
    parts={
        SEGMENTATION: SSL3D_2025.parts[SEGMENTATION].model_copy(update={"token_order": "nnssl"}),
        CLASSIFICATION: SSL3D_2025.parts[CLASSIFICATION].model_copy(
            update={"transformer_encoder": "primus-m", "token_pooling": "all-tokens"}
        ),
    },
    differences=LOSSLESS_DIFFERENCES,
)

RECIPES: dict[str, Recipe] = {r.name: r for r in (SSL3D_2025, SSL3D_2025_LOSSLESS)}
RECIPE_NAMES: tuple[str, ...] = tuple(RECIPES)


def get_recipe(name: str, where: str = "--recipe") -> Recipe:
    """The shipped recipe ``name``; an unknown name is an error naming ``where`` it came from."""
    try:
        return RECIPES[name]
    except (KeyError, TypeError):
        import difflib

        close = difflib.get_close_matches(str(name), RECIPE_NAMES, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise RecipeError(f"{where}: unknown recipe {name!r}{hint}; recipes: {', '.join(RECIPE_NAMES)}") from None


def apply_overrides(
    base: BaseModel,
    overrides: dict[str, Any],
    *,
    fixed: tuple[str, ...] = (),
    recipe: str = DEFAULT_RECIPE,
    where: str = "",
    field: str = "schedule",
):
    """``base`` with a task's ``overrides``, validated. An unknown field, a bad value or a field the
    recipe fixes is a ``RecipeError``: ``"<where>: field '<field>.<name>': <problem>"``, or without
    ``where`` (inside the task's own validation) ``"<field>.<name>: <problem>"``."""
    from pydantic import ValidationError

    def error(problems: list[tuple[str, str]]) -> RecipeError:
        if where:
            return RecipeError(f"{where}: " + "; ".join(f"field '{field}.{n}': {m}" for n, m in problems))
        return RecipeError("; ".join(f"{field}.{n}: {m}" if field else f"{n}: {m}" for n, m in problems))

    if not isinstance(overrides, dict):
        raise error([("", f"must be a mapping of fields, got {type(overrides).__name__}")])
    locked = [
        (n, f"recipe {recipe} fixes it to {getattr(base, n)!r}; a task cannot override it")
        for n in overrides
        if n in fixed and overrides[n] != getattr(base, n)
    ]
    if locked:
        raise error(locked)
    try:
        return type(base).model_validate({**base.model_dump(), **overrides})
    except ValidationError as e:
        raise error(
            [(".".join(str(x) for x in err["loc"]), err["msg"].removeprefix("Value error, ")) for err in e.errors()]
        ) from None
