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
  (``primus_encoder``: the organizers' without LayerScale and inner attention norm, or PrimusM's)
  and the pooling (``primus_pooling``: tokens 1..N as the organizers', or all tokens).

Initialisation (recipe ``network_init: ssl3d-2025``): torch's defaults and Eva's own init; a
from-scratch model then gets the organizers' ``on_train_start``: every ``nn.Linear`` (Eva's and
the head's) drawn from N(0, 1e-3) with zero bias (their Conv2d rule touches no 3D conv).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import torch
from torch import nn

from harness.models import TransferReport, build_network, get_track, load_pretrained_encoder
from harness.models.primus import PRIMUS_M_EVA, build_primus_encoder
from harness.recipes import ClassificationRecipe

if TYPE_CHECKING:  # dynamic-network-architectures is imported when a network is built
    from dynamic_network_architectures.building_blocks.residual_encoders import ResidualEncoder

#: Whether each of the recipe's Primus encoders has LayerScale and the inner attention norm.
ENCODER_LAYERSCALE = {"eva-no-layerscale": False, "primus-m": True}


class ResEncClassifier(nn.Module):
    """Input (B, C, Z, Y, X) with every edge a multiple of 32; output logits (B, num_classes)."""

    def __init__(self, encoder: ResidualEncoder, num_classes: int, dropout: float, features: int = 320):
        super().__init__()
        self.encoder = encoder
        self.encoder.return_skips = False  # only the deepest feature map
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(features, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.encoder(x)  # (B, 320, z, y, x)
        return self.head(self.dropout(feats.mean(dim=(2, 3, 4))))


class PrimusClassifier(nn.Module):
    """Input (B, C, *patch) with the patch the network was built for; output logits (B, num_classes).

    ``skip_first_token``: pool tokens 1..N (the organizers' config assumes a class token at 0 that
    their Eva does not have, so the first patch token is left out)."""

    def __init__(
        self,
        down_projection: nn.Module,
        eva: nn.Module,
        num_classes: int,
        dropout: float,
        embed_dim: int,
        skip_first_token: bool,
    ):
        super().__init__()
        self.down_projection = down_projection
        self.eva = eva
        self.skip_first_token = skip_first_token
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(embed_dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from harness.models.primus import to_tokens

        x = to_tokens(self.down_projection(x), "nnssl")  # (B, tokens, embed), nnssl's order
        x, _ = self.eva(x)  # keep_indices is None without patch dropping
        pooled = x[:, 1:].mean(dim=1) if self.skip_first_token else x.mean(dim=1)
        return self.head(self.dropout(pooled))


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
    if spec.name == "ResEncL":
        net = build_network("ResEncL", input_channels=input_channels, num_classes=1, initialize=False)
        model: nn.Module = ResEncClassifier(net.encoder, num_classes, dropout)
        del net
    else:
        down_projection, eva = build_primus_encoder(
            input_channels, patch_size, ENCODER_LAYERSCALE[recipe.primus_encoder]
        )
        model = PrimusClassifier(
            down_projection,
            eva,
            num_classes,
            dropout,
            PRIMUS_M_EVA["embed_dim"],
            skip_first_token=recipe.primus_pooling == "tokens-1..N",
        )
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
        token_order=recipe.primus_token_order,
    )
    return model, report
