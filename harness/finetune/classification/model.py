"""Encoder + linear head: the classification network of each track.

The encoder is the track's reference network (``harness.models.build_network``) with the
submission's stem and encoder loaded by ``harness.models.load_pretrained_encoder`` (channel
repeat, positional-embedding interpolation and token order all happen there); everything else
of the reference network (decoder, segmentation head) is dropped. Sub-modules keep the reference
names (``encoder.*`` for ResEnc-L, ``down_projection.*`` / ``eva.*`` for Primus-M), so the
classifier's state-dict keys of the transferred part are the submission's own keys.

* ResEnc-L: ``encoder`` output (last stage, 320 features) -> global average pool -> dropout -> linear.
* Primus-M: ``down_projection`` -> tokens ``b (w h d) c`` -> ``eva`` (ends in its LayerNorm) ->
  mean over tokens -> dropout -> linear.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import torch
from torch import nn

from harness.models import TransferReport, build_network, get_track, load_pretrained_encoder


class ResEncClassifier(nn.Module):
    """Input (B, C, Z, Y, X) with every edge a multiple of 32; output logits (B, num_classes)."""

    def __init__(self, encoder: nn.Module, num_classes: int, dropout: float, features: int = 320):
        super().__init__()
        self.encoder = encoder
        self.encoder.return_skips = False  # only the deepest feature map
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(features, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.encoder(x)  # (B, 320, z, y, x)
        return self.head(self.dropout(feats.mean(dim=(2, 3, 4))))


class PrimusClassifier(nn.Module):
    """Input (B, C, *patch) with the patch the network was built for; output logits (B, num_classes)."""

    def __init__(self, down_projection: nn.Module, eva: nn.Module, num_classes: int, dropout: float, embed_dim: int):
        super().__init__()
        self.down_projection = down_projection
        self.eva = eva
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(embed_dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from einops import rearrange

        x = self.down_projection(x)  # (B, embed, w, h, d)
        x = rearrange(x, "b c w h d -> b (w h d) c")  # the token order Primus.forward uses
        x, _ = self.eva(x)  # (B, tokens, embed); keep_indices is None without patch dropping
        return self.head(self.dropout(x.mean(dim=1)))


def build_classifier(
    track: str,
    *,
    input_channels: int,
    num_classes: int,
    patch_size: Sequence[int],
    dropout: float,
    weights: Mapping[str, torch.Tensor] | None = None,
    pretrain_patch_size: Sequence[int] | None = None,
    token_order: str = "nnssl",
) -> tuple[nn.Module, TransferReport | None]:
    """The track's classifier; with ``weights`` (a submission's, prefixes stripped) the stem and
    encoder are loaded from them, without it everything is randomly initialised (baseline).

    Returns ``(model, transfer report or None)``.
    """
    spec = get_track(track)
    net = build_network(spec.name, input_channels=input_channels, num_classes=1, patch_size=patch_size)
    report = None
    if weights is not None:
        if pretrain_patch_size is None:
            raise ValueError("pretrain_patch_size is needed to load pre-trained weights")
        report = load_pretrained_encoder(
            net,
            weights,
            spec.name,
            pretrain_patch_size=pretrain_patch_size,
            target_patch_size=patch_size,
            token_order=token_order,
        )
    if spec.name == "ResEncL":
        model: nn.Module = ResEncClassifier(net.encoder, num_classes, dropout)
    else:
        if net.register_tokens is not None:  # PrimusM has none; the forward above assumes it
            raise ValueError("Primus with register tokens is not supported by the classifier")
        model = PrimusClassifier(net.down_projection, net.eva, num_classes, dropout, net.embed_dim)
    del net
    return model, report
