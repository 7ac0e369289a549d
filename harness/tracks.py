"""Track names and shape rules every layer agrees on, importable without torch (the CLI and the
task registry use them before any network is built)."""

from __future__ import annotations

from collections.abc import Sequence

#: The challenge tracks, i.e. the reference architectures a submission can pre-train.
TRACKS: tuple[str, ...] = ("ResEncL", "PrimusM")

#: How a Primus ``pos_embed`` from a checkpoint is read: in nnssl's token order and converted
#: (default), or copied unchanged. See harness/models/transfer.py.
TOKEN_ORDERS: tuple[str, ...] = ("nnssl", "as-is")

#: Primus-M's patch embedding: one token per 8x8x8 voxels.
PRIMUS_PATCH_EMBED: tuple[int, int, int] = (8, 8, 8)


def check_primus_patch(patch_size: Sequence[int]) -> None:
    """A Primus input must be three positive multiples of the patch embedding."""
    if len(patch_size) != 3 or any(p <= 0 or p % e for p, e in zip(patch_size, PRIMUS_PATCH_EMBED)):
        raise ValueError(
            f"patch size {tuple(patch_size)} is not three positive multiples of the "
            f"patch embedding {PRIMUS_PATCH_EMBED}"
        )
