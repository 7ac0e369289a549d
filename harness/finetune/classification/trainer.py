"""The classification trainer: its schedule (learning rate per epoch, batches, steps) and
``ClassifierTrainer``, a short loop over named hooks.

Schedule (the recipe's ``ClassificationSchedule`` with the task's overrides; the organizers'
``base_model.py`` and Lightning 2.4 trainer, shared/reference/SSL3D.md section 6): AdamW (torch's
default betas and eps, one parameter group, weight decay on everything); the learning rate changes
once per epoch: ``lr * (e + 1) / (W + 1)`` for the ``W`` warm-up epochs (epoch 0 at lr/21 for
W = 20), then ``lr * (1 + cos(pi * (e - W) / (E - W))) / 2``; cross-entropy with the task's label
smoothing. An epoch is one shuffled pass over the training cases in batches of ``batch_size`` (the
last one smaller), or ``iterations_per_epoch`` batches where a task sets it. Each batch's loss is
divided by ``gradient_accumulation`` and the optimizer steps every ``gradient_accumulation``
batches and after an epoch's last batch, as Lightning does; no gradient clipping unless a task
sets one. Mixed precision on CUDA (the recipe's fp16, with a gradient scaler), fp32 on CPU.
Pre-trained entries use ``lr``, baselines ``from_scratch_lr``.

The training step (divergence guard, gradient clip after unscaling, the AMP scaler) and the
epoch line are ``harness.finetune.training_step``'s, shared with the nnU-Net trainer; the
checkpoint after every epoch is ``checkpoint``'s.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from harness.finetune.classification.checkpoint import (
    CHECKPOINT_FORMAT,
    CHECKPOINT_VERSION,
    global_rng_states,
    read_checkpoint,
    restore_checkpoint,
    save_checkpoint,
)
from harness.finetune.classification.data import PreprocessedCache
from harness.finetune.divergence import DivergenceGuard
from harness.finetune.training_step import clipped_step, format_epoch_line, guarded_backward
from harness.recipes import ClassificationSchedule


# ----------------------------------------------------------------------------- schedule
@dataclass(frozen=True)
class StepPlan:
    """How many batches and optimizer steps an epoch amounts to."""

    batches_per_epoch: int
    steps_per_epoch: int
    total_steps: int


def plan_steps(schedule: ClassificationSchedule, n_train: int) -> StepPlan:
    batches = schedule.iterations_per_epoch or math.ceil(n_train / schedule.batch_size)
    steps = math.ceil(batches / schedule.gradient_accumulation)
    return StepPlan(batches, steps, schedule.epochs * steps)


def lr_at_epoch(epoch: int, lr: float, schedule: ClassificationSchedule) -> float:
    """The organizers' ``CosineAnnealingLR_Warmstart`` (eta_min 0), in closed form."""
    warmup, epochs = schedule.warmup_epochs, schedule.epochs
    if epoch < warmup:
        return lr * (epoch + 1) / (warmup + 1)
    return lr * (1.0 + math.cos(math.pi * (epoch - warmup) / max(1, epochs - warmup))) / 2.0


def epoch_batches(train_ids: Sequence[str], schedule: ClassificationSchedule, rng, pool: list[str]) -> list[list[str]]:
    """One epoch's batches: a shuffled pass (the last batch smaller), or ``iterations_per_epoch``
    full batches drawn from a running shuffled pool (``pool`` carries over between epochs)."""
    bs = schedule.batch_size
    if schedule.iterations_per_epoch is None:
        order = rng.permutation(list(train_ids)).tolist()
        return [order[i : i + bs] for i in range(0, len(order), bs)]
    batches = []
    for _ in range(schedule.iterations_per_epoch):
        batch: list[str] = []
        while len(batch) < bs:
            if not pool:
                pool.extend(rng.permutation(list(train_ids)).tolist())
            batch.append(pool.pop())
        batches.append(batch)
    return batches


def amp_dtype_for(device, precision: str = "fp16"):
    """Autocast dtype on CUDA (the recipe's; fp16 needs a gradient scaler); None on CPU."""
    import torch

    if device.type != "cuda":
        return None
    return torch.bfloat16 if precision == "bf16" and torch.cuda.is_bf16_supported() else torch.float16


def autocast_for(device, amp_dtype):
    import contextlib

    import torch

    return contextlib.nullcontext() if amp_dtype is None else torch.autocast(device.type, dtype=amp_dtype)


def load_batch(cache: PreprocessedCache, ids: Sequence[str], transform=None):
    import torch

    images = []
    for case in ids:
        x = torch.from_numpy(np.array(cache.array(case), dtype=np.float32))  # a writable copy
        if transform is not None:
            x = transform(image=x)["image"]
        images.append(x)
    return torch.stack(images)


@dataclass(frozen=True)
class TrainingCases:
    """What a classifier trains on: the preprocessed cases, the training ones with their class
    indices (in the same order), and the augmentation each batch gets (None: none)."""

    cache: PreprocessedCache
    ids: Sequence[str]
    labels: Sequence[int]
    transform: Callable | None = None


@dataclass
class TrainingProgress:
    """Where a training stands after ``epoch`` epochs: what a checkpoint keeps besides the tensors."""

    epoch: int = 0
    steps: int = 0
    lrs: list[float] = field(default_factory=list)
    epoch_loss: float = float("nan")
    seconds_before: float = 0.0  # training time of earlier attempts
    pool: list[str] = field(default_factory=list)  # the running batch pool (iterations_per_epoch)


class ClassifierTrainer:
    """Trains a classifier in place, one epoch after the other, with hooks as nnU-Net's trainer
    has them: ``train_step`` (one batch's forward and guarded backward), ``optimizer_step``,
    ``on_epoch_end`` (``save_checkpoint``, then the epoch line) and ``resume``. The step's pieces
    (divergence guard, gradient clip with the AMP scaler, the epoch line) are
    ``harness.finetune.training_step``'s, shared with the nnU-Net trainer.

    With ``checkpoint`` (a file path) the training state is saved there after every epoch, and a
    checkpoint found there at the start is resumed from when it was written for ``job_id`` (and
    these epochs, cases and model); any other, or an unreadable one, is logged and ignored. A
    checkpoint of the last epoch skips training. The ``epoch N/E`` line is logged after the
    epoch's checkpoint is written."""

    def __init__(
        self,
        model,
        cases: TrainingCases,
        schedule: ClassificationSchedule,
        lr: float,
        device,
        *,
        seed: int,
        log: Callable[[str], None],
        precision: str = "fp16",
        checkpoint: Path | None = None,
        job_id: str | None = None,
    ):
        import torch

        if not cases.ids:
            raise ValueError("no training cases in this fold")
        self.model, self.cases, self.schedule, self.lr, self.device = model, cases, schedule, lr, device
        self.log, self.job_id = log, job_id
        self.checkpoint = None if checkpoint is None else Path(checkpoint)
        self.plan = plan_steps(schedule, len(cases.ids))
        model.to(device).train()
        self.optimizer = torch.optim.AdamW(
            model.parameters(), lr=lr_at_epoch(0, lr, schedule), weight_decay=schedule.weight_decay
        )
        self.criterion = torch.nn.CrossEntropyLoss(label_smoothing=schedule.label_smoothing)
        self.labels = dict(zip(cases.ids, cases.labels))
        self.rng = np.random.default_rng(seed)  # the batch order
        self.amp_dtype = amp_dtype_for(device, precision)
        self.scaler = torch.amp.GradScaler("cuda") if self.amp_dtype == torch.float16 else None
        self.guard = DivergenceGuard()
        self.progress = TrainingProgress()
        self.first_epoch = 0
        self.started = time.time()

    # -- the loop -------------------------------------------------------------------------------
    def run(self) -> dict:
        """Train to the schedule's end; returns a summary (steps, final loss, seconds, lr per
        epoch, the epoch resumed from)."""
        self.log_plan()
        self.started = time.time()
        if self.checkpoint is not None:
            self.resume(self.checkpoint)
        for epoch in range(self.first_epoch, self.schedule.epochs):
            t0 = time.time()
            self.train_epoch(epoch)
            self.on_epoch_end(epoch, time.time() - t0)
        return self.summary()

    def log_plan(self) -> None:
        s, plan = self.schedule, self.plan
        self.log(
            f"training {len(self.cases.ids)} cases: {s.epochs} epochs x {plan.batches_per_epoch} batches "
            f"(batch {s.batch_size}, accumulation {s.gradient_accumulation}: {plan.steps_per_epoch} steps/epoch, "
            f"{plan.total_steps} steps, warm-up {s.warmup_epochs} epochs), lr {self.lr:g}, device {self.device}"
        )

    def train_epoch(self, epoch: int) -> None:
        """One epoch at its learning rate; an optimizer step every ``gradient_accumulation``
        batches and after the epoch's last."""
        epoch_lr = lr_at_epoch(epoch, self.lr, self.schedule)
        for group in self.optimizer.param_groups:
            group["lr"] = epoch_lr
        self.progress.lrs.append(epoch_lr)
        losses = []
        self.optimizer.zero_grad(set_to_none=True)
        batches = epoch_batches(self.cases.ids, self.schedule, self.rng, self.progress.pool)
        acc = self.schedule.gradient_accumulation
        for i, ids in enumerate(batches):
            loss = self.train_step(ids, f"epoch {epoch + 1} batch {i + 1}")
            if loss is not None:
                losses.append(loss)
            if (i + 1) % acc == 0 or i + 1 == len(batches):
                self.optimizer_step()
        self.progress.epoch_loss = float(np.mean(losses)) if losses else float("nan")
        self.progress.epoch = epoch + 1

    def train_step(self, ids: Sequence[str], where: str) -> float | None:
        """Forward and backward pass of one batch (its loss divided by the accumulation); the
        loss, or None when it was non-finite and gave no gradient."""
        import torch

        x = load_batch(self.cases.cache, ids, self.cases.transform).to(self.device, non_blocking=True)
        y = torch.tensor([self.labels[c] for c in ids], dtype=torch.long, device=self.device)
        with autocast_for(self.device, self.amp_dtype):
            logits = self.model(x)
        loss = self.criterion(logits.float(), y)
        acc = self.schedule.gradient_accumulation
        return loss.item() if guarded_backward(loss, self.guard, where, self.scaler, divide_by=acc) else None

    def optimizer_step(self) -> None:
        clipped_step(self.optimizer, self.model.parameters(), self.schedule.grad_clip, self.scaler)
        self.optimizer.zero_grad(set_to_none=True)
        self.progress.steps += 1

    def on_epoch_end(self, epoch: int, seconds: float) -> None:
        """The checkpoint first, then the epoch line: a job killed after the line resumes from the
        next epoch."""
        if self.checkpoint is not None:
            self.save_checkpoint(self.checkpoint)
        p = self.progress
        self.log(format_epoch_line(epoch + 1, self.schedule.epochs, p.epoch_loss, p.lrs[-1], seconds))

    def training_seconds(self) -> float:
        return self.progress.seconds_before + time.time() - self.started

    def summary(self) -> dict:
        p = self.progress
        return {
            "optimizer_steps": p.steps,
            "final_epoch_loss": p.epoch_loss,
            "train_seconds": round(self.training_seconds(), 1),
            "batches_per_epoch": self.plan.batches_per_epoch,
            "lr_per_epoch": p.lrs,
            "resumed_from_epoch": self.first_epoch or None,
        }

    # -- checkpoints ----------------------------------------------------------------------------
    def save_checkpoint(self, path: Path) -> None:
        p = self.progress
        save_checkpoint(
            path,
            {
                "format": CHECKPOINT_FORMAT,
                "version": CHECKPOINT_VERSION,
                "job_id": self.job_id,
                "epochs": self.schedule.epochs,
                "epoch": p.epoch,  # epochs done
                "train_ids": list(self.cases.ids),
                "optimizer_steps": p.steps,
                "lr_per_epoch": list(p.lrs),
                "epoch_loss": p.epoch_loss,
                "train_seconds": self.training_seconds(),
                "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "grad_scaler": self.scaler.state_dict() if self.scaler else None,
                "rng": {"batches": self.rng.bit_generator.state, "pool": list(p.pool), **global_rng_states()},
            },
        )

    def resume(self, path: Path) -> None:
        """Continue from the checkpoint at ``path`` where it is this job's (``read_checkpoint``)."""
        ckpt = read_checkpoint(path, self.job_id, self.schedule, self.cases.ids, self.model, self.log)
        state = (
            restore_checkpoint(ckpt, path, self.model, self.optimizer, self.scaler, self.rng, self.log)
            if ckpt
            else None
        )
        del ckpt
        if state is None:
            return
        self.progress = TrainingProgress(
            epoch=state["epoch"],
            steps=state["steps"],
            lrs=state["lrs"],
            epoch_loss=state["epoch_loss"],
            seconds_before=state["train_seconds"],
            pool=state["pool"],
        )
        self.first_epoch = state["epoch"]
        self.log(
            f"resuming from {path} at epoch {self.first_epoch}/{self.schedule.epochs}"
            + (": training is finished" if self.first_epoch == self.schedule.epochs else "")
        )
