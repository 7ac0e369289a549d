"""ResEnc-L, the CNN track: the reference network and its classifier.

The hyper-parameters are the challenge's (shared/reference/SSL3D.md section 1); nothing here is
planned by nnU-Net.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
from torch import nn

if TYPE_CHECKING:  # dynamic-network-architectures is imported when a network is built
    from dynamic_network_architectures.building_blocks.residual_encoders import ResidualEncoder

    from harness.recipes import ClassificationRecipe

#: Features of the deepest stage: what the classifier pools.
DEEPEST_FEATURES = 320


def build_network(input_channels: int, num_classes: int, patch_size: Sequence[int], token_order: str) -> nn.Module:
    """The reference ResidualEncoderUNet without deep supervision (patch-size agnostic; a CNN has
    no token order)."""
    from dynamic_network_architectures.architectures.unet import ResidualEncoderUNet

    return ResidualEncoderUNet(
        input_channels=input_channels,
        n_stages=6,
        features_per_stage=(32, 64, 128, 256, 320, DEEPEST_FEATURES),
        conv_op=nn.Conv3d,
        kernel_sizes=[[3, 3, 3]] * 6,
        strides=[[1, 1, 1]] + [[2, 2, 2]] * 5,
        n_blocks_per_stage=(1, 3, 4, 6, 6, 6),
        num_classes=num_classes,
        n_conv_per_stage_decoder=(1, 1, 1, 1, 1),
        conv_bias=True,
        norm_op=nn.InstanceNorm3d,
        norm_op_kwargs={"eps": 1e-5, "affine": True},
        nonlin=nn.LeakyReLU,
        nonlin_kwargs={"inplace": True},
        deep_supervision=False,
    )


class ResEncClassifier(nn.Module):
    """Input (B, C, Z, Y, X) with every edge a multiple of 32; output logits (B, num_classes)."""

    def __init__(self, encoder: ResidualEncoder, num_classes: int, dropout: float, features: int = DEEPEST_FEATURES):
        super().__init__()
        self.encoder = encoder
        self.encoder.return_skips = False  # only the deepest feature map
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(features, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.encoder(x)  # (B, 320, z, y, x)
        return self.head(self.dropout(feats.mean(dim=(2, 3, 4))))


def build_classifier(
    input_channels: int, num_classes: int, patch_size: Sequence[int], dropout: float, recipe: ClassificationRecipe
) -> nn.Module:
    """The reference network's encoder -> global average pool -> dropout -> linear. Not
    nnU-Net-initialised: the organizers' classifier never calls ``initialize``."""
    net = build_network(input_channels, 1, patch_size, "as-is")
    return ResEncClassifier(net.encoder, num_classes, dropout)
