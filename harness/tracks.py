"""The challenge tracks: one registry entry per reference network participants can pre-train.

Importable without torch (the CLI, task files and recipes read it before any network exists).
Each entry names the module that builds its networks (``harness/models/<track>.py``, with
``build_network`` and ``build_classifier``); everything else a stage needs to know about a
track is a field here. Adding a track is that module plus one line in ``TRACKS``
(docs/extending.md).
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

#: The sequence a Primus fine-tuning network feeds Eva (a recipe's ``token_order``): ``as-is``
#: is dynamic-network-architectures' ``(w h d)`` (the organizers' segmentation, ``ssl3d-2025``),
#: ``nnssl`` the ``(h w d)`` of nnssl's pre-training. The checkpoint's ``pos_embed`` is copied as it
#: is either way; see harness/models/transfer.py and harness/models/primus.py.
TOKEN_ORDERS: tuple[str, ...] = ("nnssl", "as-is")


@dataclass(frozen=True)
class Track:
    """What every stage needs to know about one track's network."""

    name: str
    #: Module with ``build_network(input_channels, num_classes, patch_size, token_order)`` and
    #: ``build_classifier(input_channels, num_classes, patch_size, dropout, recipe)``.
    module: str
    #: nnssl's key prefixes: what fine-tuning transfers (stem and encoder) and how the input
    #: projection and learned positional embedding are found (SSL3D.md section 1).
    key_to_encoder: str
    key_to_stem: str
    keys_to_in_proj: tuple[str, ...]
    key_to_lpe: str | None
    #: Patch sizes it trains at: three multiples of ``patch_multiple``, each at least ``patch_min``;
    #: ``patch_rule`` says why, in the error a bad task file gets.
    patch_multiple: tuple[int, int, int]
    patch_min: int
    patch_rule: str
    #: Edge of the cube the intake canary runs on (the smallest input the network takes).
    canary_patch: int
    #: Default schedule fields per task type, as fields of the type's ``schedule_model``
    #: (``harness.recipes.RecipePart``; a recipe may still change them). A type not listed
    #: runs with its schedule model's defaults. (Task type names as strings: this module sits beside
    #: harness.task_types, in the lowest layer.)
    schedules: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    #: Transformer tracks: tokens ``patch_embed_size`` voxels wide; None for CNNs.
    patch_embed_size: tuple[int, int, int] | None = None

    @property
    def tokens(self) -> bool:
        """True for a transformer, whose inputs are token grids (recipes' token-order and pooling
        choices concern only such tracks)."""
        return self.patch_embed_size is not None

    @property
    def transferred_prefixes(self) -> tuple[str, ...]:
        return (self.key_to_stem, self.key_to_encoder)

    def is_transferred(self, key: str) -> bool:
        """True for state-dict keys of the stem and encoder: the only weights fine-tuning loads."""
        return any(key == p or key.startswith(p + ".") for p in self.transferred_prefixes)

    def check_patch(self, patch_size: Sequence[int]) -> None:
        """A patch this track cannot train at is a ValueError saying which rule it breaks."""
        patch = tuple(patch_size)
        if len(patch) != 3 or any(p < self.patch_min or p % m for p, m in zip(patch, self.patch_multiple)):
            at_least = f", each at least {self.patch_min}" if self.patch_min > max(self.patch_multiple) else ""
            raise ValueError(
                f"{self.name} patch size {patch} is not three positive multiples of "
                f"{self.patch_rule} {self.patch_multiple}{at_least}"
            )

    def token_grid(self, patch_size: Sequence[int]) -> tuple[int, int, int]:
        """Tokens per axis of a transformer's input of ``patch_size``."""
        if self.patch_embed_size is None:
            raise ValueError(f"track {self.name} has no token grid")
        self.check_patch(patch_size)
        x, y, z = (int(p) // e for p, e in zip(patch_size, self.patch_embed_size))
        return x, y, z

    def models(self) -> ModuleType:
        """The module that builds this track's networks (imports torch)."""
        return importlib.import_module(self.module)


TRACKS: dict[str, Track] = {
    track.name: track
    for track in (
        Track(
            name="ResEncL",
            module="harness.models.resencl",
            key_to_encoder="encoder.stages",
            key_to_stem="encoder.stem",
            keys_to_in_proj=("encoder.stem.convs.0.conv", "encoder.stem.convs.0.all_modules.0"),
            key_to_lpe=None,
            patch_multiple=(32, 32, 32),
            patch_min=64,
            patch_rule="its five stride-2 stages",
            canary_patch=64,
            # SSL3D.md section 2: the "150 epoch" trainer; from scratch lr 1e-2
            schedules={
                "segmentation": dict(
                    optimizer="sgd", lr=1e-3, from_scratch_lr=1e-2, weight_decay=3e-5, momentum=0.99, grad_clip=12.0
                )
            },
        ),
        Track(
            name="PrimusM",
            module="harness.models.primus",
            key_to_encoder="eva",
            key_to_stem="down_projection",
            keys_to_in_proj=("down_projection.proj",),
            key_to_lpe="eva.pos_embed",
            patch_multiple=(8, 8, 8),
            patch_min=8,
            patch_rule="the patch embedding",
            canary_patch=32,
            # SSL3D.md section 2: from scratch lr 3e-4
            schedules={
                "segmentation": dict(
                    optimizer="adamw",
                    lr=1e-4,
                    from_scratch_lr=3e-4,
                    weight_decay=5e-2,
                    betas=(0.9, 0.98),
                    grad_clip=1.0,
                )
            },
            patch_embed_size=(8, 8, 8),
        ),
    )
}


def get_track(name: str) -> Track:
    try:
        return TRACKS[name]
    except KeyError:
        raise ValueError(f"unknown track {name!r}; accepted tracks: {', '.join(TRACKS)}") from None
