"""What both trainers do the same way in each iteration and after each epoch: the divergence guard
before the backward pass, the gradient clip (after unscaling, where an AMP ``GradScaler`` is
used) before the optimizer step, and the ``epoch N/E ...`` line of train.log.

The nnU-Net trainer (``harness.finetune.nnunet_trainer``) and the classification trainer
(``harness.finetune.classification.trainer``) call these, so a fix to one is a fix to both, and
``harness.jobs.status.parse_epoch_lines`` reads one line format (``format_epoch_line``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from harness.finetune.divergence import DivergenceGuard

if TYPE_CHECKING:
    import torch


def guarded_backward(
    loss: torch.Tensor,
    guard: DivergenceGuard,
    where: str,
    scaler: torch.amp.GradScaler | None = None,
    divide_by: int = 1,
) -> bool:
    """Backpropagate ``loss / divide_by`` (scaled by ``scaler`` where given) unless the guard says
    the loss is non-finite; returns whether it did. ``where`` names the iteration in the
    ``DivergedError`` the guard raises at its limit. ``divide_by`` is the gradient accumulation."""
    if not guard.finite(float(loss.detach()), where):
        return False  # no gradient from it: the weights never take a NaN update
    scaled = loss / divide_by
    (scaler.scale(scaled) if scaler is not None else scaled).backward()
    return True


def clipped_step(
    optimizer: torch.optim.Optimizer,
    parameters: Iterable[torch.Tensor],
    max_norm: float | None,
    scaler: torch.amp.GradScaler | None = None,
) -> None:
    """One optimizer step on the gradients gathered: unscaled first (``scaler``), their total norm
    clipped to ``max_norm`` (None: no clip), then stepped through the scaler (which skips a step
    whose gradients overflowed) and the scaler updated. The caller zeroes the gradients."""
    import torch

    if scaler is not None:
        scaler.unscale_(optimizer)
    if max_norm is not None:
        torch.nn.utils.clip_grad_norm_(parameters, max_norm)
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()


def format_epoch_line(
    epoch: int, epochs: int, loss: float, lr: float, seconds: float, val_loss: float | None = None
) -> str:
    """``epoch {e}/{E} loss 0.6931 [val_loss 0.7012 ]lr 1.000e-04 (12.3s)`` for 1-based ``epoch``:
    the progress line `harness status` reads from train.log (``parse_epoch_lines``)."""
    val = "" if val_loss is None else f"val_loss {val_loss:.4f} "
    return f"epoch {epoch}/{epochs} loss {loss:.4f} {val}lr {lr:.3e} ({seconds:.1f}s)"
