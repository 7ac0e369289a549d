"""Moving a submission's pre-trained stem and encoder into a fine-tuning network.

The rules are the challenge's (shared/reference/SSL3D.md section 2):

* only the stem and the encoder are loaded; decoder and head keep their random init;
* more input channels than pre-training channels: the in-projection weight is repeated along the
  input-channel axis and divided by the channel count (every alias of that tensor too);
* a Primus patch size other than the pre-training one: the learned positional embedding is
  resized by trilinear interpolation over its token grid;
* token order: the checkpoint's ``pos_embed`` is always copied as it is (in the order of the
  sequence it was trained on); what differs is the sequence the fine-tuning network feeds Eva
  (harness/models/primus.py): ``"as-is"`` is dynamic-network-architectures' ``(w h d)``, as the
  organizers' segmentation ran it, ``"nnssl"`` the ``(h w d)`` of nnssl's pre-training. The
  embedding is resized over the grid in that sequence's axis order. Nothing crashes either way,
  which is why the policy is a recipe choice, recorded with every run;
* a network without LayerScale and inner attention norm (the organizers' classification Eva)
  drops the checkpoint's ``gamma_1``/``gamma_2``/``attn.norm`` tensors; a network with them
  rejects a checkpoint that lacks them, naming what is missing.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from harness.models.reference import get_track
from harness.tracks import TOKEN_ORDERS

#: Eva's LayerScale and inner attention-norm tensors: PrimusM has them, the organizers'
#: classification Eva and some released checkpoints do not.
LAYERSCALE_KEY = re.compile(r"^eva\.blocks\.\d+\.(gamma_1|gamma_2|attn\.norm\.weight|attn\.norm\.bias)$")

WRAPPER_PREFIXES: tuple[str, ...] = ("module.", "_orig_mod.")


class TransferError(ValueError):
    """The submitted weights cannot be put into the reference network."""


@dataclass
class TransferReport:
    """What the transfer did; written into every run's metadata."""

    track: str
    loaded_keys: int
    input_channels: int
    in_proj_repeated: bool
    token_order: str
    pos_embed_from_grid: tuple[int, ...] | None = None
    pos_embed_to_grid: tuple[int, ...] | None = None
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def strip_wrapper_prefixes(weights: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Remove ``module.`` / ``_orig_mod.`` when every key carries it (DDP, torch.compile).

    Returns the renamed mapping and the prefixes that were removed, in order.
    """
    out = dict(weights)
    stripped: list[str] = []
    changed = True
    while changed and out:
        changed = False
        for prefix in WRAPPER_PREFIXES:
            if all(k.startswith(prefix) for k in out):
                out = {k[len(prefix) :]: v for k, v in out.items()}
                stripped.append(prefix)
                changed = True
    return out, stripped


def interpolate_pos_embed(pos_embed: torch.Tensor, src_grid: Sequence[int], dst_grid: Sequence[int]) -> torch.Tensor:
    """Trilinearly (align_corners False) resize a ``[1, prod(src_grid), C]`` embedding whose tokens
    are the C-order flattening of ``src_grid`` to ``dst_grid`` (both in sequence axis order)."""
    src_grid = tuple(int(g) for g in src_grid)
    dst_grid = tuple(int(g) for g in dst_grid)
    _check_tokens(pos_embed, src_grid)
    if src_grid == dst_grid:
        return pos_embed
    c = pos_embed.shape[-1]
    vol = pos_embed.reshape(1, *src_grid, c).permute(0, 4, 1, 2, 3).float()
    vol = F.interpolate(vol, size=dst_grid, mode="trilinear", align_corners=False)
    return vol.permute(0, 2, 3, 4, 1).reshape(1, -1, c).to(pos_embed.dtype)


def _check_tokens(pos_embed: torch.Tensor, grid: tuple[int, ...]) -> None:
    n = grid[0] * grid[1] * grid[2]
    if pos_embed.ndim != 3 or pos_embed.shape[0] != 1 or pos_embed.shape[1] != n:
        raise TransferError(
            f"positional embedding of shape {tuple(pos_embed.shape)} does not fit a token grid {grid} ({n} tokens)"
        )


def adapt_pretrained_weights(
    weights: Mapping[str, torch.Tensor],
    track: str,
    *,
    pretrain_patch_size: Sequence[int],
    target_patch_size: Sequence[int],
    input_channels: int = 1,
    token_order: str = "as-is",
    dtype: torch.dtype | None = torch.float32,
) -> tuple[dict[str, torch.Tensor], TransferReport]:
    """Select the stem and encoder tensors of ``weights`` and adapt them to the fine-tuning setup.

    ``weights`` must already be free of wrapper prefixes. Tensors that need no change are passed
    through (cast to ``dtype`` when given), so memory-mapped inputs are not copied.
    """
    spec = get_track(track)
    if token_order not in TOKEN_ORDERS:
        raise TransferError(f"unknown token-order policy {token_order!r}; choose one of {', '.join(TOKEN_ORDERS)}")
    selected = {k: v for k, v in weights.items() if spec.is_transferred(k)}
    if not selected:
        raise TransferError(
            f"no stem or encoder weights for track {track} (expected keys under "
            f"{' / '.join(spec.transferred_prefixes)})"
        )
    report = TransferReport(
        track=spec.name,
        loaded_keys=len(selected),
        input_channels=int(input_channels),
        in_proj_repeated=False,
        token_order=token_order if spec.key_to_lpe else "n/a",
    )
    if dtype is not None:
        selected = {k: (v.to(dtype) if v.is_floating_point() else v) for k, v in selected.items()}

    if input_channels > 1:
        for base in spec.keys_to_in_proj:
            key = f"{base}.weight"
            if key not in selected:
                continue
            w = selected[key]
            if w.shape[1] != 1:
                raise TransferError(
                    f"in-projection {key} has {w.shape[1]} input channels; only 1-channel "
                    "pre-training is repeated over downstream channels"
                )
            selected[key] = w.repeat(1, input_channels, *([1] * (w.ndim - 2))) / input_channels
            report.in_proj_repeated = True
        if not report.in_proj_repeated:
            raise TransferError(f"none of the in-projection keys {spec.keys_to_in_proj} is in the weights")

    lpe_key = f"{spec.key_to_lpe}" if spec.key_to_lpe else None
    if lpe_key and lpe_key in selected:
        src, dst = spec.token_grid(pretrain_patch_size), spec.token_grid(target_patch_size)
        from harness.models.primus import sequence_grid

        selected[lpe_key] = interpolate_pos_embed(
            selected[lpe_key], sequence_grid(src, token_order), sequence_grid(dst, token_order)
        )
        report.pos_embed_from_grid, report.pos_embed_to_grid = src, dst
    return selected, report


def load_pretrained_encoder(
    network: nn.Module,
    weights: Mapping[str, torch.Tensor],
    track: str,
    *,
    pretrain_patch_size: Sequence[int],
    target_patch_size: Sequence[int],
    token_order: str = "as-is",
    assign: bool = False,
) -> TransferReport:
    """Load the adapted stem and encoder into ``network`` (built by ``build_network``).

    Every stem and encoder tensor of the network must be provided with the exact shape; nothing
    else is touched. ``assign=True`` makes the network use the given tensors instead of copying
    (the intake canary uses it to avoid a second copy of a memory-mapped checkpoint).
    """
    spec = get_track(track)
    target = network.state_dict()
    in_channels = _in_channels(target, spec)
    adapted, report = adapt_pretrained_weights(
        weights,
        track,
        pretrain_patch_size=pretrain_patch_size,
        target_patch_size=target_patch_size,
        input_channels=in_channels,
        token_order=token_order,
        dtype=next(iter(target.values())).dtype,
    )
    wanted = {k for k in target if spec.is_transferred(k)}
    missing = sorted(wanted - adapted.keys())
    unexpected = sorted(adapted.keys() - wanted)
    dropped = [k for k in unexpected if LAYERSCALE_KEY.match(k)]
    if dropped and not any(LAYERSCALE_KEY.match(k) for k in target):
        # the network has no LayerScale / inner attention norm by design: their weights go unused
        adapted = {k: v for k, v in adapted.items() if k not in set(dropped)}
        unexpected = [k for k in unexpected if k not in set(dropped)]
        report.loaded_keys -= len(dropped)
        report.notes.append(
            f"dropped {len(dropped)} LayerScale / inner attention-norm tensors the network does not have"
        )
    if missing and all(LAYERSCALE_KEY.match(k) for k in missing) and not unexpected:
        raise TransferError(
            f"the checkpoint's Primus has no LayerScale (gamma_1, gamma_2) or inner attention norm "
            f"(attn.norm): {len(missing)} tensors such as {missing[0]} are missing, and this network "
            "(PrimusM) needs them; such a checkpoint fits only the organizers' Eva without LayerScale "
            "(recipe ssl3d-2025, classification)"
        )
    mismatched = sorted(k for k in wanted & adapted.keys() if tuple(adapted[k].shape) != tuple(target[k].shape))
    if missing or unexpected or mismatched:
        parts = []
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", mismatched)):
            if keys:
                shown = (
                    keys[:5]
                    if label != "shape mismatch"
                    else [f"{k} {tuple(adapted[k].shape)} vs {tuple(target[k].shape)}" for k in keys[:5]]
                )
                parts.append(f"{len(keys)} {label} ({', '.join(shown)}{', ...' if len(keys) > 5 else ''})")
        raise TransferError(f"{track} stem/encoder weights do not fit the reference network: {'; '.join(parts)}")
    network.load_state_dict(adapted, strict=False, assign=assign)
    return report


def _in_channels(state: Mapping[str, torch.Tensor], spec) -> int:
    return int(state[f"{spec.keys_to_in_proj[0]}.weight"].shape[1])
