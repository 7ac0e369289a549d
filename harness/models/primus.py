"""Primus-M, the transformer track: the reference network, in either token order, and its
classifier.

Token geometry.
nnssl's Primus pre-training module flattens the patch-embedding output ``(b, c, w, h, d)`` as
``rearrange(x, 'b c w h d -> b (h w d) c')``; dynamic-network-architectures' ``Primus`` as
``(w h d)``. Eva adds two position signals: the learned ``pos_embed`` (in the checkpoint) and
rotary embeddings (RoPE, computed from the token's index in the sequence, never stored). Permuting
``pos_embed`` alone therefore cannot restore the pre-training function: RoPE stays transposed.
``PrimusNnsslOrder`` instead feeds Eva the sequence nnssl fed it, so a copied ``pos_embed`` and
RoPE both mean what they meant in pre-training; the output is rearranged back, so segmentation
predictions keep the input's orientation. The state dict is PrimusM's, key for key.

``build_primus_encoder`` builds Primus-M's patch embedding and Eva alone, with or without
LayerScale and the inner attention norm (the organizers' classification Eva has neither; some
released checkpoints neither): what a classifier and the intake canary of such a checkpoint use.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
from dynamic_network_architectures.architectures.primus import PrimusM
from einops import rearrange
from torch import nn

from harness.recipes import ENCODERS_WITH_LAYERSCALE
from harness.tracks import get_track

if TYPE_CHECKING:
    from harness.recipes import ClassificationRecipe

TRACK = get_track("PrimusM")
#: Primus-M's transformer (SSL3D.md section 1).
PRIMUS_M_EVA = dict(embed_dim=864, depth=16, num_heads=12)

#: einops patterns of each token order: the sequence Eva sees, from the patch grid ``(w, h, d)``.
SEQUENCE_PATTERNS = {"as-is": "b c w h d -> b (w h d) c", "nnssl": "b c w h d -> b (h w d) c"}


def to_tokens(x: torch.Tensor, token_order: str) -> torch.Tensor:
    """Patch-embedding output ``(B, C, W, H, D)`` -> the token sequence ``(B, N, C)``."""
    return rearrange(x, SEQUENCE_PATTERNS[token_order])


def from_tokens(x: torch.Tensor, grid: tuple[int, int, int], token_order: str) -> torch.Tensor:
    """The inverse of ``to_tokens`` for a patch grid ``(W, H, D)``."""
    w, h, d = grid
    src, dst = SEQUENCE_PATTERNS[token_order].split(" -> ")
    return rearrange(x, f"{dst} -> {src}", w=w, h=h, d=d)


def sequence_grid(grid: tuple[int, int, int], token_order: str) -> tuple[int, int, int]:
    """The patch grid in the axis order its tokens are flattened in: ``(W, H, D)`` or ``(H, W, D)``.
    A positional embedding ``[1, N, C]`` reshapes to this grid (for resizing it)."""
    w, h, d = grid
    return (h, w, d) if token_order == "nnssl" else (w, h, d)


class PrimusNnsslOrder(PrimusM):
    """PrimusM whose Eva sees the patch tokens in nnssl's ``(h w d)`` pre-training order."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.register_tokens is not None:  # PrimusM has none; this forward assumes it
            raise NotImplementedError("register tokens are not supported")
        x = self.down_projection(x)
        w, h, d = x.shape[2:]
        x, _ = self.eva(to_tokens(x, "nnssl"))  # keep_indices is None without patch dropping
        return self.up_projection(from_tokens(x, (w, h, d), "nnssl"))


def build_primus_encoder(
    input_channels: int, patch_size: Sequence[int], layerscale: bool
) -> tuple[nn.Module, nn.Module]:
    """``(down_projection, eva)`` of Primus-M for ``patch_size``: an 8^3 patch embedding and
    dynamic-network-architectures' Eva with PrimusM's sizes. ``layerscale``: PrimusM's Eva
    (LayerScale 0.1, inner attention norm); without it, Eva's defaults (neither), as the
    organizers' classification builds it."""
    from dynamic_network_architectures.building_blocks.eva import Eva
    from dynamic_network_architectures.building_blocks.patch_encode_decode import PatchEmbed

    assert TRACK.patch_embed_size is not None  # a transformer track
    down_projection = PatchEmbed(TRACK.patch_embed_size, input_channels, PRIMUS_M_EVA["embed_dim"])
    eva = Eva(
        **PRIMUS_M_EVA,
        ref_feat_shape=TRACK.token_grid(patch_size),
        num_reg_tokens=0,
        use_rot_pos_emb=True,
        use_abs_pos_emb=True,
        drop_path_rate=0.0,
        init_values=0.1 if layerscale else None,
        scale_attn_inner=layerscale,
    )
    return down_projection, eva


def build_network(input_channels: int, num_classes: int, patch_size: Sequence[int], token_order: str) -> nn.Module:
    """dynamic-network-architectures' PrimusM for ``patch_size`` (it fixes the token grid and so
    the ``eva.pos_embed`` length); ``token_order`` ``nnssl`` gives ``PrimusNnsslOrder``."""
    TRACK.check_patch(patch_size)
    cls = PrimusNnsslOrder if token_order == "nnssl" else PrimusM
    return cls(
        input_channels=input_channels,
        output_channels=num_classes,
        patch_embed_size=TRACK.patch_embed_size,
        input_shape=tuple(int(p) for p in patch_size),
    )


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
        x = to_tokens(self.down_projection(x), "nnssl")  # (B, tokens, embed), nnssl's order
        x, _ = self.eva(x)  # keep_indices is None without patch dropping
        pooled = x[:, 1:].mean(dim=1) if self.skip_first_token else x.mean(dim=1)
        return self.head(self.dropout(pooled))


def build_classifier(
    input_channels: int, num_classes: int, patch_size: Sequence[int], dropout: float, recipe: ClassificationRecipe
) -> nn.Module:
    """Patch embedding (8^3 conv) -> tokens in nnssl's ``(h w d)`` order -> Eva (ends in its
    LayerNorm) -> mean over tokens -> dropout -> linear. The recipe picks the Eva
    (``transformer_encoder``: the organizers' without LayerScale and inner attention norm, or PrimusM's)
    and the pooling (``token_pooling``: tokens 1..N as the organizers', or all tokens)."""
    down_projection, eva = build_primus_encoder(
        input_channels, patch_size, recipe.transformer_encoder in ENCODERS_WITH_LAYERSCALE
    )
    return PrimusClassifier(
        down_projection,
        eva,
        num_classes,
        dropout,
        PRIMUS_M_EVA["embed_dim"],
        skip_first_token=recipe.token_pooling == "tokens-1..N",
    )
