"""Primus-M in the token geometry of nnssl's pre-training.

nnssl's Primus pre-training module flattens the patch-embedding output ``(b, c, w, h, d)`` as
``rearrange(x, 'b c w h d -> b (h w d) c')``; dynamic-network-architectures' ``Primus`` as
``(w h d)``. Eva adds two position signals: the learned ``pos_embed`` (in the checkpoint) and
rotary embeddings (RoPE, computed from the token's index in the sequence, never stored). Permuting
``pos_embed`` alone therefore cannot restore the pre-training function: RoPE stays transposed.
``PrimusNnsslOrder`` instead feeds Eva the sequence nnssl fed it, so a copied ``pos_embed`` and
RoPE both mean what they meant in pre-training; the output is rearranged back, so segmentation
predictions keep the input's orientation. The state dict is PrimusM's, key for key.
"""
from __future__ import annotations

import torch
from dynamic_network_architectures.architectures.primus import PrimusM
from einops import rearrange

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
        grid = tuple(x.shape[2:])
        x, _ = self.eva(to_tokens(x, "nnssl"))  # keep_indices is None without patch dropping
        return self.up_projection(from_tokens(x, grid, "nnssl"))
