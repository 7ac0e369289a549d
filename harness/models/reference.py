"""Reference architectures of the two SSL3D tracks, built with dynamic-network-architectures.

The hyper-parameters are the challenge's (shared/reference/SSL3D.md section 1); nothing here is
planned by nnU-Net. Shapes are derived on the ``meta`` device, so checking a submission's
tensor shapes never allocates a model.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import torch
from torch import nn

from harness.tracks import PRIMUS_PATCH_EMBED, TOKEN_ORDERS, TRACKS, check_primus_patch


@dataclass(frozen=True)
class TrackSpec:
    """What the harness needs to know about one track's network."""

    name: str
    key_to_encoder: str
    key_to_stem: str
    keys_to_in_proj: tuple[str, ...]
    key_to_lpe: str | None
    #: Primus patch embedding (tokens are patch_embed voxels wide); None for CNNs.
    patch_embed_size: tuple[int, int, int] | None
    #: Edge of the cube the intake canary runs on.
    canary_patch: int

    @property
    def transferred_prefixes(self) -> tuple[str, ...]:
        return (self.key_to_stem, self.key_to_encoder)

    def is_transferred(self, key: str) -> bool:
        """True for state-dict keys of the stem and encoder: the only weights fine-tuning loads."""
        return any(key == p or key.startswith(p + ".") for p in self.transferred_prefixes)


_TRACK_SPECS = {
    "ResEncL": TrackSpec(
        name="ResEncL",
        key_to_encoder="encoder.stages",
        key_to_stem="encoder.stem",
        keys_to_in_proj=("encoder.stem.convs.0.conv", "encoder.stem.convs.0.all_modules.0"),
        key_to_lpe=None,
        patch_embed_size=None,
        canary_patch=64,
    ),
    "PrimusM": TrackSpec(
        name="PrimusM",
        key_to_encoder="eva",
        key_to_stem="down_projection",
        keys_to_in_proj=("down_projection.proj",),
        key_to_lpe="eva.pos_embed",
        patch_embed_size=PRIMUS_PATCH_EMBED,
        canary_patch=32,
    ),
}


def get_track(name: str) -> TrackSpec:
    try:
        return _TRACK_SPECS[name]
    except KeyError:
        raise ValueError(f"unknown track {name!r}; accepted tracks: {', '.join(TRACKS)}") from None


def build_network(
    track: str,
    input_channels: int = 1,
    num_classes: int = 1,
    patch_size: Sequence[int] = (160, 160, 160),
    device: torch.device | str | None = None,
    *,
    token_order: str = "as-is",
    initialize: bool = True,
) -> nn.Module:
    """Build the track's reference network without deep supervision.

    ``patch_size`` fixes Primus' token grid (and so its ``eva.pos_embed`` length); the CNN
    is patch-size agnostic. ``device="meta"`` gives shapes without allocating memory.
    ``initialize``: nnU-Net's initialisation, ``network.apply(network.initialize)``, where the
    class defines it (ResEnc-L: He init, last norm of every residual block zeroed), as nnU-Net's
    ``get_network_from_plans(allow_init=True)`` does. ``token_order`` (Primus): ``as-is`` is
    dynamic-network-architectures' ``(w h d)`` sequence, ``nnssl`` the ``(h w d)`` sequence of
    nnssl's pre-training (``PrimusNnsslOrder``); the state dict is the same either way.
    """
    spec = get_track(track)
    patch_size = tuple(int(p) for p in patch_size)
    if token_order not in TOKEN_ORDERS:
        raise ValueError(f"unknown token order {token_order!r}; choose one of {', '.join(TOKEN_ORDERS)}")
    with torch.device(device or "cpu"):
        network = _construct(spec, input_channels, num_classes, patch_size, token_order)
        init = getattr(network, "initialize", None)  # nn.Module's __getattr__ types it as Tensor | Module
        if initialize and init is not None:
            network.apply(init)
    return network


def _construct(
    spec: TrackSpec, input_channels: int, num_classes: int, patch_size: tuple[int, ...], token_order: str
) -> nn.Module:
    if spec.name == "ResEncL":
        from dynamic_network_architectures.architectures.unet import ResidualEncoderUNet

        return ResidualEncoderUNet(
            input_channels=input_channels,
            n_stages=6,
            features_per_stage=(32, 64, 128, 256, 320, 320),
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
    check_primus_patch(patch_size)
    # imported here: Primus pulls in timm and torchvision, which a ResEnc-L job never needs
    from dynamic_network_architectures.architectures.primus import PrimusM

    from harness.models.primus import PrimusNnsslOrder

    cls = PrimusNnsslOrder if token_order == "nnssl" else PrimusM
    return cls(
        input_channels=input_channels,
        output_channels=num_classes,
        patch_embed_size=spec.patch_embed_size,
        input_shape=patch_size,
    )


def token_grid(patch_size: Sequence[int], track: str = "PrimusM") -> tuple[int, int, int]:
    spec = get_track(track)
    check_primus_patch(patch_size)
    assert spec.patch_embed_size is not None, f"track {track} has no token grid"  # only Primus tracks have one
    grid = tuple(int(p) // e for p, e in zip(patch_size, spec.patch_embed_size))
    assert len(grid) == 3  # check_primus_patch: three edges
    return grid


@lru_cache(maxsize=8)
def reference_state_shapes(
    track: str, patch_size: tuple[int, int, int] = (160, 160, 160), input_channels: int = 1
) -> dict[str, tuple[int, ...]]:
    """Every state-dict key of the reference network and its shape (built on ``meta``)."""
    net = build_network(
        track, input_channels=input_channels, num_classes=1, patch_size=patch_size, device="meta", initialize=False
    )
    return {k: tuple(v.shape) for k, v in net.state_dict().items()}
