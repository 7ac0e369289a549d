"""The harness's nnU-Net trainer: nnunetv2's own training loop, data loading, augmentation, loss
and checkpointing, with the challenge's network, weight transfer and schedule.

PyPI nnunetv2 has no nnssl fine-tuning trainer, so this subclass brings one. It differs from
``nnUNetTrainer`` only where the challenge requires it:

* ``build_network_architecture``: the track's reference network (not what nnU-Net would plan),
  initialised as nnU-Net initialises its own, with the submission's stem and encoder loaded on
  top (harness.models.transfer), in the recipe's Primus token order;
* ``get_training_transforms``: nnU-Net's own, brought to what the organizers' fork (nnunetv2
  2.6.1 with the batchgeneratorsv2 of 2025) ran where the recipe says so (``as_fork_ran``);
* ``configure_optimizers``: SGD (ResEnc-L) or AdamW (Primus-M), linear warm-up then poly decay;
* ``train_step``: the schedule's gradient clip (1 for Primus, nnU-Net's 12 otherwise), and the
  divergence guard (``harness.finetune.divergence``: no step on a non-finite loss, FAILED
  "diverged" after a few in a row), both through ``harness.finetune.training_step``, which the
  classification trainer shares;
* no deep supervision;
* no "best" checkpoint: the held-out cases are predicted with the final network, so writing a
  full checkpoint whenever the validation EMA improves would only cost time and disk;
* one ``epoch {e}/{E} ...`` line per epoch in train.log (``epoch_line``), the progress
  `harness status` shows.

The schedule is handed over with ``configure_finetuning`` (not smuggled through the plans), and
the trainer is passed to the runner as a class, never looked up by name.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import torch
from nnunetv2.training.lr_scheduler.polylr import PolyLRScheduler
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from nnunetv2.utilities.helpers import dummy_context
from torch import autocast, nn

from harness.finetune.divergence import DivergenceGuard
from harness.finetune.training_step import clipped_step, format_epoch_line, guarded_backward
from harness.models import build_network, load_pretrained_encoder

if TYPE_CHECKING:
    from harness.recipes import SegmentationRecipe, SegmentationSchedule


class WarmupPolyLRScheduler(PolyLRScheduler):
    """Linear warm-up over ``warmup_steps`` epochs (lr/w, 2lr/w, ..., lr), then nnU-Net's poly decay
    over the remaining epochs."""

    def __init__(self, optimizer, initial_lr: float, max_steps: int, warmup_steps: int, exponent: float = 0.9):
        self.warmup_steps = int(warmup_steps)
        super().__init__(optimizer, initial_lr, max_steps, exponent)

    def lr_at(self, step: int) -> float:
        if step < self.warmup_steps:
            return self.initial_lr * (step + 1) / self.warmup_steps
        decay_steps = max(1, self.max_steps - self.warmup_steps)
        progress = min(1.0, (step - self.warmup_steps) / decay_steps)
        return self.initial_lr * (1 - progress) ** self.exponent

    def step(self, current_step=None):
        if current_step is None or current_step == -1:
            current_step = self.ctr
            self.ctr += 1
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr_at(current_step)
        self._last_lr = [group["lr"] for group in self.optimizer.param_groups]


def as_fork_ran(transforms):
    """nnunetv2 2.8.1's training transforms (a batchgeneratorsv2 ``ComposeTransforms``, changed in
    place and returned) as nnunetv2 2.6.1 with the batchgeneratorsv2 of 2025 (<= 0.3.0) ran them:

    * ``SpatialTransform`` pads the segmentation with label 0 (``border_mode_seg="zeros"``, the
      batchgeneratorsv2 default 2.6.1 left alone) where 2.8.1 asks for -1 (``"constant"``);
    * ``SimulateLowResolutionTransform`` with ``ignore_axes=None`` (every 3D configuration without
      dummy-2D augmentation) is left out: batchgeneratorsv2 <= 0.3.0 set all its scales to 1
      (``scales[:, None] = 1``), so it never changed an image; 0.3.2 and later resample.
    """
    from batchgeneratorsv2.transforms.spatial.low_resolution import SimulateLowResolutionTransform
    from batchgeneratorsv2.transforms.spatial.spatial import SpatialTransform
    from batchgeneratorsv2.transforms.utils.random import RandomTransform

    kept = []
    for t in transforms.transforms:
        inner = t.transform if isinstance(t, RandomTransform) else t
        if isinstance(inner, SimulateLowResolutionTransform) and inner.ignore_axes is None:
            continue
        if isinstance(inner, SpatialTransform):
            inner.border_mode_seg, inner.padding_value_seg = "zeros", 0
        kept.append(t)
    transforms.transforms = kept
    return transforms


class SSL3DFinetuneTrainer(nnUNetTrainer):
    """nnU-Net trainer for SSL3D fine-tuning; call ``configure_finetuning`` before training."""

    def __init__(
        self,
        plans: dict,
        configuration: str,
        fold: int,
        dataset_json: dict,
        device: torch.device = torch.device("cuda"),  # noqa: B008 - nnUNetTrainer's own signature
    ):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.enable_deep_supervision = False
        self.track: str | None = None
        self.schedule: SegmentationSchedule | None = None
        self.submission = None
        self.recipe: SegmentationRecipe | None = None
        self.transfer_report = None
        self.divergence = DivergenceGuard()
        #: the autocast dtype on CUDA: nnU-Net's float16 (with its GradScaler); bfloat16 needs no
        #: scaler (``use_bfloat16``, which bench/gpu_train.py measures)
        self.amp_dtype = torch.float16
        self._iteration = 0  # within the epoch, for the divergence message

    def use_bfloat16(self) -> None:
        """Mixed precision in bfloat16 on CUDA (no loss scaling); call before training."""
        self.amp_dtype = torch.bfloat16
        self.grad_scaler = None

    def configure_finetuning(
        self, *, track: str, schedule: SegmentationSchedule, recipe: SegmentationRecipe, submission=None
    ) -> None:
        """Set the track, its schedule, the recipe's segmentation choices (``SegmentationRecipe``)
        and the pre-trained weights (``submission=None``: from scratch)."""
        self.track = track
        self.schedule = schedule
        self.recipe = recipe
        self.submission = submission
        self.initial_lr = schedule.lr if submission is not None else schedule.from_scratch_lr
        self.weight_decay = schedule.weight_decay
        self.num_epochs = schedule.epochs
        self.num_iterations_per_epoch = schedule.iterations_per_epoch
        self.num_val_iterations_per_epoch = schedule.val_iterations_per_epoch
        self.save_every = schedule.checkpoint_every

    # -- network ------------------------------------------------------------------------------
    def build_network_architecture(
        self,
        plans_manager,
        configuration_manager,
        num_input_channels,
        num_output_channels,
        enable_deep_supervision=False,
    ) -> nn.Module:
        if self.track is None:
            raise RuntimeError("configure_finetuning() must be called before the trainer is initialized")
        assert self.recipe is not None  # configure_finetuning set it with the track
        patch = tuple(configuration_manager.patch_size)
        # nnU-Net's initialisation first (recipe network_init "nnunet"), the encoder loaded on top
        network = build_network(
            self.track,
            num_input_channels,
            num_output_channels,
            patch,
            token_order=self.recipe.token_order,
            initialize=True,
        )
        if self.submission is not None:
            self.transfer_report = load_pretrained_encoder(
                network,
                self.submission.weights,
                self.track,
                pretrain_patch_size=self.submission.pretrain_patch_size,
                target_patch_size=patch,
                token_order=self.recipe.token_order,
            )
            self.print_to_log_file(f"loaded pre-trained stem+encoder: {self.transfer_report.to_dict()}")
        else:
            self.print_to_log_file("from-scratch baseline: no pre-trained weights loaded")
        return network

    def get_training_transforms(self, *args, **kwargs):  # nnU-Net calls it on the instance
        transforms = nnUNetTrainer.get_training_transforms(*args, **kwargs)
        assert self.recipe is not None  # configure_finetuning ran before initialize
        return as_fork_ran(transforms) if self.recipe.training_transforms == "nnunetv2-2.6.1" else transforms

    def set_deep_supervision_enabled(self, enabled: bool):
        # Primus has no deep-supervision switch; the ResEnc-L reference is built without it.
        decoder = getattr(self.network, "decoder", None)
        if decoder is not None and hasattr(decoder, "deep_supervision"):
            decoder.deep_supervision = enabled

    def on_train_epoch_start(self):
        self._iteration = 0
        super().on_train_epoch_start()

    def on_epoch_end(self):
        epoch = self.current_epoch  # nnU-Net's on_epoch_end moves it on
        super().on_epoch_end()
        try:
            line = self.epoch_line(epoch)
        except (KeyError, IndexError, TypeError, ValueError):  # a progress line never fails the job
            line = f"epoch {epoch + 1}/{self.num_epochs}"
        self.print_to_log_file(line)

    def epoch_line(self, epoch: int) -> str:
        """``epoch {e}/{E} loss ... val_loss ... lr ... (12.3s)`` for 0-based ``epoch`` (1-based in
        the line): ``harness.finetune.training_step.format_epoch_line``, as the classification trainer
        writes it (without ``val_loss``)."""
        get = self.logger.get_value
        return format_epoch_line(
            epoch + 1,
            self.num_epochs,
            loss=float(get("train_losses", step=epoch)),
            val_loss=float(get("val_losses", step=epoch)),
            lr=float(get("lrs", step=epoch)),
            seconds=get("epoch_end_timestamps", step=epoch) - get("epoch_start_timestamps", step=epoch),
        )

    def save_checkpoint(self, filename: str) -> None:
        if os.path.basename(filename) == "checkpoint_best.pth":
            return
        super().save_checkpoint(filename)

    # -- optimisation ---------------------------------------------------------------------------
    def configure_optimizers(self):
        s = self.schedule
        assert s is not None  # configure_finetuning ran before initialize
        params = self.network.parameters()
        optimizer: torch.optim.Optimizer
        if s.optimizer == "sgd":
            optimizer = torch.optim.SGD(
                params, self.initial_lr, weight_decay=s.weight_decay, momentum=s.momentum, nesterov=True
            )
        else:
            optimizer = torch.optim.AdamW(params, self.initial_lr, weight_decay=s.weight_decay, betas=s.betas)
        scheduler = WarmupPolyLRScheduler(optimizer, self.initial_lr, self.num_epochs, s.warmup_epochs, s.poly_exponent)
        return optimizer, scheduler

    def train_step(self, batch: dict) -> dict:
        assert self.schedule is not None  # configure_finetuning ran before training
        data = batch["data"].to(self.device, non_blocking=True)
        target = batch["target"]
        target = (
            [t.to(self.device, non_blocking=True) for t in target]
            if isinstance(target, list)
            else target.to(self.device, non_blocking=True)
        )
        self.optimizer.zero_grad(set_to_none=True)
        # mixed precision exactly where nnU-Net uses it: on CUDA only
        cuda = self.device.type == "cuda"
        with autocast(self.device.type, dtype=self.amp_dtype, enabled=True) if cuda else dummy_context():
            loss = self.loss(self.network(data), target)
        where = f"epoch {self.current_epoch + 1} iteration {self._iteration + 1}"
        self._iteration += 1
        # no step on a non-finite loss (nnU-Net averages the losses it gets)
        if guarded_backward(loss, self.divergence, where, self.grad_scaler):
            clipped_step(self.optimizer, self.network.parameters(), self.schedule.grad_clip, self.grad_scaler)
        return {"loss": loss.detach().cpu().numpy()}
