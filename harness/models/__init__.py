"""The challenge reference networks and the rules for moving pre-trained weights into them.

Shared by intake (shape checks, canary), segmentation and classification fine-tuning, so that
every stage agrees on what "the encoder" of a track is.
"""

from harness.models.reference import (
    Track,
    build_network,
    get_track,
    reference_state_shapes,
)
from harness.models.transfer import (
    TOKEN_ORDERS,
    TransferError,
    TransferReport,
    adapt_pretrained_weights,
    interpolate_pos_embed,
    load_pretrained_encoder,
    strip_wrapper_prefixes,
)

__all__ = [
    "TOKEN_ORDERS",
    "Track",
    "TransferError",
    "TransferReport",
    "adapt_pretrained_weights",
    "build_network",
    "get_track",
    "interpolate_pos_embed",
    "load_pretrained_encoder",
    "reference_state_shapes",
    "strip_wrapper_prefixes",
]
