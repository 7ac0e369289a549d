"""Building any track's reference network (each track's own module, named in
``harness.tracks.TRACKS``, says how), and its state-dict shapes.

Shapes are derived on the ``meta`` device, so checking a submission's tensor shapes never
allocates a model.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import torch
from torch import nn

from harness.tracks import TOKEN_ORDERS, Track, get_track

__all__ = ["Track", "build_network", "get_track", "reference_state_shapes"]


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
        network = spec.models().build_network(input_channels, num_classes, patch_size, token_order)
        init = getattr(network, "initialize", None)  # nn.Module's __getattr__ types it as Tensor | Module
        if initialize and init is not None:
            network.apply(init)
    return network


@lru_cache(maxsize=8)
def reference_state_shapes(
    track: str, patch_size: tuple[int, int, int] = (160, 160, 160), input_channels: int = 1
) -> dict[str, tuple[int, ...]]:
    """Every state-dict key of the reference network and its shape (built on ``meta``)."""
    net = build_network(
        track, input_channels=input_channels, num_classes=1, patch_size=patch_size, device="meta", initialize=False
    )
    return {k: tuple(v.shape) for k, v in net.state_dict().items()}
