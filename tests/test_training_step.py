"""The training step both trainers share (harness.finetune.training_step): no backward pass on a
non-finite loss, the gradient clip before the step, and the one epoch line status reads."""

from __future__ import annotations

import pytest
import torch

from harness.finetune.divergence import DivergedError, DivergenceGuard
from harness.finetune.training_step import clipped_step, format_epoch_line, guarded_backward
from harness.jobs.status import parse_epoch_lines


def _weight_and_loss(value: float):
    w = torch.nn.Parameter(torch.tensor([3.0, 4.0]))
    return w, (w * torch.tensor([value, value])).sum()


def test_guarded_backward_divides_by_the_accumulation_and_skips_non_finite_losses():
    guard = DivergenceGuard(limit=2)
    w, loss = _weight_and_loss(2.0)
    assert guarded_backward(loss, guard, "it 1", divide_by=4)
    assert torch.equal(w.grad, torch.tensor([0.5, 0.5]))
    w, loss = _weight_and_loss(float("nan"))
    assert not guarded_backward(loss, guard, "it 2") and w.grad is None  # no gradient from it
    with pytest.raises(DivergedError, match="^it 3: "):
        guarded_backward(_weight_and_loss(float("inf"))[1], guard, "it 3")


@pytest.mark.parametrize("max_norm", [None, 1.0])
def test_clipped_step_clips_the_total_norm_before_stepping(max_norm):
    w = torch.nn.Parameter(torch.zeros(2))
    w.grad = torch.tensor([3.0, 4.0])  # norm 5
    clipped_step(torch.optim.SGD([w], lr=1.0), [w], max_norm)
    expected = [-3.0, -4.0] if max_norm is None else [-0.6, -0.8]
    assert w.detach().tolist() == pytest.approx(expected, rel=1e-5)


def test_both_trainers_epoch_lines_parse_with_their_seconds():
    classification = format_epoch_line(2, 10, loss=0.69314, lr=1e-4, seconds=2.06)
    segmentation = format_epoch_line(3, 10, loss=0.5, lr=1e-2, seconds=61.0, val_loss=0.25)
    assert classification == "epoch 2/10 loss 0.6931 lr 1.000e-04 (2.1s)"
    assert segmentation == "epoch 3/10 loss 0.5000 val_loss 0.2500 lr 1.000e-02 (61.0s)"
    log = f"2026-12-02 06:30:01: {classification}\n2026-12-02 06:31:02.123456: {segmentation}\n"
    assert [(e.epoch, e.epochs, e.seconds) for e in parse_epoch_lines(log)] == [(2, 10, 2.1), (3, 10, 61.0)]
