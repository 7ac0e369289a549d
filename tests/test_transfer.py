"""Weight-transfer rules on small hand-made tensors: token order, positional-embedding
interpolation, in-projection repeat, prefix stripping, and the trainer's warm-up/poly schedule."""

from __future__ import annotations

import pytest
import torch

from harness.models import (
    TransferError,
    adapt_pretrained_weights,
    interpolate_pos_embed,
    strip_wrapper_prefixes,
)
from harness.models.primus import from_tokens, sequence_grid, to_tokens
from harness.models.reference import get_track, reference_state_shapes


def _grid_coordinates(w: int, h: int, d: int) -> torch.Tensor:
    """[W, H, D, 3] tensor whose values are each voxel's own (w, h, d) index."""
    return torch.stack(torch.meshgrid(torch.arange(w), torch.arange(h), torch.arange(d), indexing="ij"), -1).float()


def test_token_orders_flatten_as_nnssl_and_dynamic_network_architectures_do():
    w, h, d = 3, 4, 2
    grid = _grid_coordinates(w, h, d).permute(3, 0, 1, 2)[None]  # (1, 3, W, H, D): each voxel's (w, h, d)
    nnssl = to_tokens(grid, "nnssl")[0]
    dna = to_tokens(grid, "as-is")[0]
    for i in range(w * h * d):
        # nnssl: 'b c w h d -> b (h w d) c', token i is (i % (W*D) // D, i // (W*D), i % D)
        assert nnssl[i].tolist() == [(i // d) % w, i // (w * d), i % d]
        # dynamic-network-architectures: 'b c w h d -> b (w h d) c'
        assert dna[i].tolist() == [i // (h * d), (i // d) % h, i % d]
    for order in ("nnssl", "as-is"):
        assert torch.equal(from_tokens(to_tokens(grid, order), (w, h, d), order), grid)
    assert sequence_grid((w, h, d), "nnssl") == (h, w, d) and sequence_grid((w, h, d), "as-is") == (w, h, d)


def test_token_order_is_not_a_no_op_on_cubic_grids():
    # The trap: on a cubic grid the shapes agree, nothing crashes, and the sequence is transposed.
    grid = _grid_coordinates(3, 3, 3).permute(3, 0, 1, 2)[None]
    assert not torch.equal(to_tokens(grid, "nnssl"), to_tokens(grid, "as-is"))


def test_pos_embed_interpolation_preserves_a_linear_ramp():
    src, dst = (8, 8, 4), (4, 4, 4)
    coords = _grid_coordinates(*src)
    # positions in physical units (voxel centres at (i + 0.5) / n) are preserved by align_corners=False
    phys = (coords + 0.5) / torch.tensor(src, dtype=torch.float32)
    out = interpolate_pos_embed(phys.reshape(1, -1, 3), src, dst).reshape(*dst, 3)
    expected = (_grid_coordinates(*dst) + 0.5) / torch.tensor(dst, dtype=torch.float32)
    assert torch.allclose(out, expected, atol=1e-6)


def test_pos_embed_interpolation_identity_and_shape_errors():
    pe = torch.randn(1, 64, 5)
    assert interpolate_pos_embed(pe, (4, 4, 4), (4, 4, 4)) is pe
    with pytest.raises(TransferError, match="does not fit a token grid"):
        interpolate_pos_embed(pe, (4, 4, 5), (4, 4, 4))


def _primus_weights(pretrain=(64, 64, 32)) -> dict[str, torch.Tensor]:
    shapes = reference_state_shapes("PrimusM", pretrain)
    g = torch.Generator().manual_seed(0)
    return {k: torch.randn(s, generator=g) for k, s in shapes.items() if get_track("PrimusM").is_transferred(k)}


def test_adapt_primus_repeats_in_projection_and_resizes_pos_embed():
    weights = _primus_weights()
    out, report = adapt_pretrained_weights(
        weights, "PrimusM", pretrain_patch_size=(64, 64, 32), target_patch_size=(32, 32, 32), input_channels=3
    )
    w = weights["down_projection.proj.weight"]
    assert out["down_projection.proj.weight"].shape == (w.shape[0], 3, *w.shape[2:])
    for c in range(3):
        assert torch.allclose(out["down_projection.proj.weight"][:, c], w[:, 0] / 3)
    assert out["eva.pos_embed"].shape == (1, 4 * 4 * 4, 864)
    assert report.in_proj_repeated and report.pos_embed_from_grid == (8, 8, 4) and report.pos_embed_to_grid == (4, 4, 4)
    # untouched encoder tensors are passed through, not copied
    assert out["eva.blocks.0.attn.q_proj.weight"].data_ptr() == weights["eva.blocks.0.attn.q_proj.weight"].data_ptr()


def test_pos_embed_is_copied_and_resized_in_the_order_of_its_sequence():
    weights = _primus_weights((64, 64, 64))
    for order in ("as-is", "nnssl"):
        out, report = adapt_pretrained_weights(
            weights, "PrimusM", pretrain_patch_size=(64, 64, 64), target_patch_size=(64, 64, 64), token_order=order
        )
        assert torch.equal(out["eva.pos_embed"], weights["eva.pos_embed"]) and report.token_order == order
    # a non-cubic pre-training grid (W, H, D) = (8, 6, 4): nnssl's sequence is (h w d), so its
    # embedding is a (H, W, D) grid and is resized as one
    pre, target = (64, 48, 32), (32, 48, 32)
    weights = _primus_weights(pre)
    out, _ = adapt_pretrained_weights(
        weights, "PrimusM", pretrain_patch_size=pre, target_patch_size=target, token_order="nnssl"
    )
    expected = interpolate_pos_embed(weights["eva.pos_embed"], (6, 8, 4), (6, 4, 4))
    assert torch.equal(out["eva.pos_embed"], expected)
    dna, _ = adapt_pretrained_weights(
        weights, "PrimusM", pretrain_patch_size=pre, target_patch_size=target, token_order="as-is"
    )
    assert torch.equal(dna["eva.pos_embed"], interpolate_pos_embed(weights["eva.pos_embed"], (8, 6, 4), (4, 6, 4)))


def test_resencl_in_projection_aliases_are_repeated_together():
    shapes = reference_state_shapes("ResEncL")
    weights = {k: torch.randn(s) for k, s in shapes.items() if k.startswith("encoder.stem.")}
    out, report = adapt_pretrained_weights(
        weights, "ResEncL", pretrain_patch_size=(160,) * 3, target_patch_size=(64,) * 3, input_channels=2
    )
    a, b = out["encoder.stem.convs.0.conv.weight"], out["encoder.stem.convs.0.all_modules.0.weight"]
    assert (
        a.shape[1] == 2 and b.shape[1] == 2 and torch.equal(a[:, :1] * 2, weights["encoder.stem.convs.0.conv.weight"])
    )
    assert report.token_order == "n/a" and report.pos_embed_from_grid is None


def test_transfer_errors_are_specific():
    with pytest.raises(TransferError, match="no stem or encoder weights"):
        adapt_pretrained_weights(
            {"decoder.x": torch.zeros(1)}, "ResEncL", pretrain_patch_size=(160,) * 3, target_patch_size=(64,) * 3
        )
    with pytest.raises(TransferError, match="unknown token-order policy"):
        adapt_pretrained_weights(
            _primus_weights(),
            "PrimusM",
            pretrain_patch_size=(64, 64, 32),
            target_patch_size=(32,) * 3,
            token_order="hwd",
        )
    with pytest.raises(ValueError, match="patch embedding"):
        get_track("PrimusM").token_grid((60, 64, 64))


def test_strip_wrapper_prefixes_only_when_every_key_has_it():
    t = torch.zeros(1)
    out, stripped = strip_wrapper_prefixes({"module._orig_mod.a": t, "module._orig_mod.b": t})
    assert set(out) == {"a", "b"} and stripped == ["module.", "_orig_mod."]
    out, stripped = strip_wrapper_prefixes({"module.a": t, "b": t})
    assert set(out) == {"module.a", "b"} and stripped == []


def test_warmup_then_poly_schedule():
    from harness.finetune.nnunet_trainer import WarmupPolyLRScheduler

    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = WarmupPolyLRScheduler(opt, initial_lr=1.0, max_steps=10, warmup_steps=4, exponent=0.9)
    lrs = [sched.lr_at(e) for e in range(10)]
    assert lrs[:4] == [0.25, 0.5, 0.75, 1.0]
    assert lrs[4] == pytest.approx(1.0) and all(a > b for a, b in zip(lrs[4:], lrs[5:]))
    assert lrs[9] == pytest.approx((1 - 5 / 6) ** 0.9)
    sched.step(2)
    assert opt.param_groups[0]["lr"] == 0.75
