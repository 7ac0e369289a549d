"""Encoder + linear head: the classification network of each track, as the recipe builds it.

Built as the organizers' classification code builds it (shared/reference/SSL3D.md section 6,
docs/recipes.md); the submission's stem and encoder are loaded by
``harness.models.load_pretrained_encoder`` (channel repeat, positional-embedding resize).
Sub-modules keep the reference names (``encoder.*`` for ResEnc-L, ``down_projection.*`` /
``eva.*`` for Primus-M), so the classifier's keys of the transferred part are the submission's.

* ResEnc-L: the reference network's ``encoder`` (last stage, 320 features) -> global average pool
  -> dropout -> linear. Not nnU-Net-initialised: the organizers' classifier never calls
  ``initialize``.
* Primus-M: a patch embedding (8^3 conv) -> tokens in nnssl's ``(h w d)`` order -> Eva (ends in
  its LayerNorm) -> mean over tokens -> dropout -> linear. The recipe picks the Eva
  (``transformer_encoder``: the organizers' without LayerScale and inner attention norm, or PrimusM's)
  and the pooling (``token_pooling``: tokens 1..N as the organizers', or all tokens).

Initialisation (recipe ``network_init: ssl3d-2025``): torch's defaults and Eva's own init; a
from-scratch model then gets the organizers' ``on_train_start``: every ``nn.Linear`` (Eva's and
the head's) drawn from N(0, 1e-3) with zero bias (their Conv2d rule touches no 3D conv).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from harness.models import TransferReport, load_pretrained_encoder
from harness.recipes import ClassificationRecipe
from harness.tracks import get_track


def init_from_scratch(model: nn.Module) -> None:
    """The organizers' ``on_train_start`` for a model without pre-trained weights."""
    for m in model.modules():
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=1e-3)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def build_classifier(
    track: str,
    *,
    input_channels: int,
    num_classes: int,
    patch_size: Sequence[int],
    dropout: float,
    recipe: ClassificationRecipe,
    weights: Mapping[str, torch.Tensor] | None = None,
    pretrain_patch_size: Sequence[int] | None = None,
) -> tuple[nn.Module, TransferReport | None]:
    """The track's classifier under ``recipe``; with ``weights`` (a submission's, prefixes
    stripped) the stem and encoder are loaded from them, without it the model is initialised
    from scratch (baseline). Returns ``(model, transfer report or None)``."""
    spec = get_track(track)
    model = spec.models().build_classifier(input_channels, num_classes, patch_size, dropout, recipe)
    if weights is None:
        init_from_scratch(model)
        return model, None
    if pretrain_patch_size is None:
        raise ValueError("pretrain_patch_size is needed to load pre-trained weights")
    report = load_pretrained_encoder(
        model,
        weights,
        spec.name,
        pretrain_patch_size=pretrain_patch_size,
        target_patch_size=patch_size,
        token_order=recipe.token_order,
    )
    return model, report
