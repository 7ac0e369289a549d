"""Classification fine-tuning of one entry on one task and fold: the job, the loop, the prediction.

Schedule (shared/reference/SSL3D.md section 3, values from the task's ``ClassificationSchedule``):
AdamW over the whole network; the learning rate warms up linearly for ``warmup_epochs`` and then
follows a cosine decay to 0, both updated at every optimizer step; cross-entropy with optional
label smoothing; ``batch_size`` cases per iteration and one optimizer step every
``gradient_accumulation`` iterations (the last group of an epoch steps with what it has);
bf16 autocast on CUDA (fp16 with a gradient scaler where bf16 is missing), fp32 on CPU; optional
gradient-norm clipping. An epoch is ``iterations_per_epoch`` iterations, or one pass over the
training cases when that is unset. Pre-trained entries use ``lr``, baselines ``from_scratch_lr``.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import pandas as pd

from harness.finetune.classification.data import (
    PreprocessedCache,
    load_cases,
    preprocess_task,
    split_cases,
)
from harness.finetune.classification.model import build_classifier
from harness.finetune.job import (
    FinetuneJob,
    RunLog,
    finish_run,
    load_job_submission,
    recommended_patch,
    run_logged,
    seed_everything,
)
from harness.metrics.classification import prob_column, score_classification
from harness.tasks.spec import ClassificationAugmentation, ClassificationSchedule, ClassificationTask

#: nnU-Net's probabilities of a spatial transform per sample (its default training transforms).
P_ROTATION = 0.2
P_SCALING = 0.2


# ----------------------------------------------------------------------------- augmentation
def build_augmentation(aug: ClassificationAugmentation, patch: Sequence[int]):
    """batchgeneratorsv2 transforms for one (C, *patch) image tensor, or None when disabled.

    nnU-Net's default training transforms restricted to what a classifier needs (no
    segmentation): rotation and scaling (probability 0.2 each, angles within
    +-``rotation_degrees`` about every axis, one scale for all axes), Gaussian noise,
    multiplicative brightness, contrast and gamma with the task's per-sample probabilities and
    nnU-Net's ranges, then mirroring along ``mirror_axes`` (each axis with probability 0.5).
    """
    if not aug.enabled:
        return None
    from batchgeneratorsv2.transforms.intensity.brightness import MultiplicativeBrightnessTransform
    from batchgeneratorsv2.transforms.intensity.contrast import BGContrast, ContrastTransform
    from batchgeneratorsv2.transforms.intensity.gamma import GammaTransform
    from batchgeneratorsv2.transforms.intensity.gaussian_noise import GaussianNoiseTransform
    from batchgeneratorsv2.transforms.spatial.mirroring import MirrorTransform
    from batchgeneratorsv2.transforms.spatial.spatial import SpatialTransform
    from batchgeneratorsv2.transforms.utils.compose import ComposeTransforms
    from batchgeneratorsv2.transforms.utils.random import RandomTransform

    bad_axes = [a for a in aug.mirror_axes if a not in (0, 1, 2)]
    if bad_axes:
        raise ValueError(f"augmentation.mirror_axes {list(aug.mirror_axes)}: axes must be 0, 1 or 2")
    lo, hi = aug.scale
    if not 0 < lo <= hi:
        raise ValueError(f"augmentation.scale {aug.scale}: need 0 < low <= high")
    transforms = []
    rotate = aug.rotation_degrees > 0
    scale = (lo, hi) != (1.0, 1.0)
    if rotate or scale:
        angle = math.radians(aug.rotation_degrees)
        transforms.append(SpatialTransform(
            tuple(int(p) for p in patch),
            patch_center_dist_from_border=0,
            random_crop=False,
            p_elastic_deform=0,
            p_rotation=P_ROTATION if rotate else 0,
            rotation=(-angle, angle),
            p_scaling=P_SCALING if scale else 0,
            scaling=(lo, hi),
            p_synchronize_scaling_across_axes=1,
            bg_style_seg_sampling=False,
        ))
    if aug.gaussian_noise_p > 0:
        transforms.append(RandomTransform(GaussianNoiseTransform(
            noise_variance=(0, 0.1), p_per_channel=1, synchronize_channels=True), apply_probability=aug.gaussian_noise_p))
    if aug.brightness_p > 0:
        transforms.append(RandomTransform(MultiplicativeBrightnessTransform(
            multiplier_range=BGContrast((0.75, 1.25)), synchronize_channels=False, p_per_channel=1),
            apply_probability=aug.brightness_p))
    if aug.contrast_p > 0:
        transforms.append(RandomTransform(ContrastTransform(
            contrast_range=BGContrast((0.75, 1.25)), preserve_range=True, synchronize_channels=False, p_per_channel=1),
            apply_probability=aug.contrast_p))
    if aug.gamma_p > 0:
        transforms.append(RandomTransform(GammaTransform(
            gamma=BGContrast((0.7, 1.5)), p_invert_image=0, synchronize_channels=False, p_per_channel=1,
            p_retain_stats=1), apply_probability=aug.gamma_p))
    if aug.mirror_axes:
        transforms.append(MirrorTransform(allowed_axes=tuple(aug.mirror_axes)))
    return ComposeTransforms(transforms) if transforms else None


# ----------------------------------------------------------------------------- schedule
@dataclass(frozen=True)
class StepPlan:
    """How many iterations and optimizer steps the schedule amounts to."""

    iterations_per_epoch: int
    steps_per_epoch: int
    total_steps: int
    warmup_steps: int


def plan_steps(schedule: ClassificationSchedule, n_train: int) -> StepPlan:
    iters = schedule.iterations_per_epoch or math.ceil(n_train / schedule.batch_size)
    steps = math.ceil(iters / schedule.gradient_accumulation)
    total = schedule.epochs * steps
    return StepPlan(iters, steps, total, min(schedule.warmup_epochs * steps, total))


def lr_factor(step: int, plan: StepPlan) -> float:
    """Multiplier of the base lr for optimizer step ``step`` (0-based): linear warm-up from
    1/warmup to 1 over the warm-up steps, then cosine from 1 towards 0 over the rest."""
    if step < plan.warmup_steps:
        return (step + 1) / plan.warmup_steps
    rest = max(1, plan.total_steps - plan.warmup_steps)
    progress = min(1.0, (step - plan.warmup_steps) / rest)
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def _amp_dtype(device):
    """Autocast dtype: bf16 on CUDA where supported, else fp16 (needs a gradient scaler); None on CPU."""
    import torch

    if device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def _autocast(device, amp_dtype):
    import contextlib

    import torch

    return contextlib.nullcontext() if amp_dtype is None else torch.autocast(device.type, dtype=amp_dtype)


def _batch(cache: PreprocessedCache, ids: Sequence[str], transform=None):
    import torch

    images = []
    for case in ids:
        x = torch.from_numpy(np.array(cache.array(case), dtype=np.float32))  # a writable copy
        if transform is not None:
            x = transform(image=x)["image"]
        images.append(x)
    return torch.stack(images)


def train_classifier(
    model,
    cache: PreprocessedCache,
    train_ids: Sequence[str],
    train_labels: Sequence[int],
    schedule: ClassificationSchedule,
    lr: float,
    transform,
    device,
    seed: int,
    log: Callable[[str], None],
) -> dict:
    """Train ``model`` in place; returns a summary (steps, final loss, seconds)."""
    import torch

    if not train_ids:
        raise ValueError("no training cases in this fold")
    plan = plan_steps(schedule, len(train_ids))
    model.to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=schedule.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, plan))
    criterion = torch.nn.CrossEntropyLoss(label_smoothing=schedule.label_smoothing)
    labels = dict(zip(train_ids, train_labels))
    rng = np.random.default_rng(seed)
    order: list[str] = []

    def next_ids(n: int) -> list[str]:
        out = []
        while len(out) < n:
            if not order:
                order.extend(rng.permutation(list(train_ids)).tolist())
            out.append(order.pop())
        return out

    log(f"training {len(train_ids)} cases: {schedule.epochs} epochs x {plan.iterations_per_epoch} iterations "
        f"(batch {schedule.batch_size}, accumulation {schedule.gradient_accumulation}: {plan.steps_per_epoch} "
        f"steps/epoch, {plan.total_steps} steps, warm-up {plan.warmup_steps}), lr {lr:g}, device {device}")
    t_start = time.time()
    amp_dtype = _amp_dtype(device)
    scaler = torch.amp.GradScaler("cuda") if amp_dtype == torch.float16 else None
    step = 0
    last_lr = lr
    epoch_loss = float("nan")
    for epoch in range(schedule.epochs):
        t0 = time.time()
        losses = []
        optimizer.zero_grad(set_to_none=True)
        for group_start in range(0, plan.iterations_per_epoch, schedule.gradient_accumulation):
            group = min(schedule.gradient_accumulation, plan.iterations_per_epoch - group_start)
            for _ in range(group):
                ids = next_ids(schedule.batch_size)
                x = _batch(cache, ids, transform).to(device, non_blocking=True)
                y = torch.tensor([labels[i] for i in ids], dtype=torch.long, device=device)
                with _autocast(device, amp_dtype):
                    logits = model(x)
                loss = criterion(logits.float(), y)
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"epoch {epoch + 1}: the training loss is {loss.item()}")
                losses.append(loss.item())
                (scaler.scale(loss / group) if scaler else loss / group).backward()
            if scaler:
                scaler.unscale_(optimizer)
            if schedule.grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(model.parameters(), schedule.grad_clip)
            if scaler:
                scaler.step(optimizer)
                scaler.update()
            else:
                optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            last_lr = optimizer.param_groups[0]["lr"]
            scheduler.step()
            step += 1
        epoch_loss = float(np.mean(losses))
        log(f"epoch {epoch + 1}/{schedule.epochs} loss {epoch_loss:.4f} lr {last_lr:.3e} "
            f"({time.time() - t0:.1f}s)")
    return {"optimizer_steps": step, "final_epoch_loss": epoch_loss, "train_seconds": round(time.time() - t_start, 1),
            "iterations_per_epoch": plan.iterations_per_epoch, "warmup_steps": plan.warmup_steps}


def predict(model, cache: PreprocessedCache, ids: Sequence[str], batch_size: int, device) -> np.ndarray:
    """Softmax probabilities (N, K) float64 of the cases ``ids``, without augmentation."""
    import torch

    model.to(device).eval()
    amp_dtype = _amp_dtype(device)
    out = []
    with torch.no_grad():
        for start in range(0, len(ids), batch_size):
            x = _batch(cache, ids[start:start + batch_size]).to(device)
            with _autocast(device, amp_dtype):
                logits = model(x)
            out.append(torch.softmax(logits.float(), dim=1).cpu().numpy().astype(np.float64))
    return np.concatenate(out) if out else np.zeros((0, 0))


# ----------------------------------------------------------------------------- the job
def run_classification(job: FinetuneJob) -> dict:
    """Fine-tune one entry (or the track's from-scratch baseline) on one classification task and
    fold, predict the fold's test cases and write the run folder (cases.csv, metrics.json, DONE).
    Returns the metrics written. Errors are logged to ``train.log`` and re-raised."""
    started = time.time()
    if not isinstance(job.task, ClassificationTask):
        raise TypeError(f"run_classification needs a classification task, got {type(job.task).__name__}")
    return run_logged(job, lambda log: _run(job, log, started))


def _run(job: FinetuneJob, log: RunLog, started: float) -> dict:
    import torch

    task: ClassificationTask = job.task
    schedule = task.schedule[job.track]
    log(f"job {job.job_id()}: entry {job.entry} track {job.track} task {task.name} fold {job.fold} "
        f"device {job.device}")

    weights = pretrain_patch = submission_info = None
    sub = load_job_submission(job, log)
    recommended = recommended_patch(sub)
    if sub is not None:
        weights, pretrain_patch = sub.weights, sub.pretrain_patch_size
        submission_info = {"sha256": sub.sha256, "size_bytes": sub.size_bytes, "warnings": list(sub.warnings)}
        del sub
    patch = tuple(int(p) for p in task.patch_for(job.track, recommended))

    cases = load_cases(task)
    train_ids, test_ids = split_cases(task, cases, job.fold)
    by_id = {c.case_id: c for c in cases}
    log(f"{len(cases)} labelled cases, fold {job.fold}: {len(train_ids)} train, {len(test_ids)} test; patch {patch}")
    cache = preprocess_task(task, cases, patch, job.results, log=log)

    seed_everything(job.seed)
    model, report = build_classifier(
        job.track,
        input_channels=task.num_channels,
        num_classes=len(task.classes),
        patch_size=patch,
        dropout=schedule.dropout,
        weights=weights,
        pretrain_patch_size=pretrain_patch,
        token_order=job.token_order,
    )
    del weights  # the encoder holds copies now; drop the memory map
    if report is not None:
        log(f"loaded {report.loaded_keys} stem/encoder tensors: {report.to_dict()}")
    device = torch.device(job.device)
    lr = schedule.from_scratch_lr if job.is_baseline else schedule.lr
    transform = build_augmentation(task.augmentation, patch)
    summary = train_classifier(
        model, cache, train_ids, [by_id[i].label_index for i in train_ids], schedule, lr, transform, device,
        job.seed, log,
    )

    probs = predict(model, cache, test_ids, schedule.batch_size, device)
    y_true = np.array([by_id[i].label_index for i in test_ids], dtype=np.int64)
    scores = score_classification(y_true, probs, task.classes)
    classes = list(task.classes)
    cases_df = pd.DataFrame({
        "case": test_ids,
        "true_label": [by_id[i].label for i in test_ids],
        "pred_label": [classes[k] for k in probs.argmax(axis=1)],
        **{prob_column(c): probs[:, k] for k, c in enumerate(classes)},
    })
    for u in scores.undefined:
        log(f"undefined: {u['metric']} for class {u['class']}: {u['reason']}")
    log(f"done: {scores.aggregates}")
    return finish_run(
        job,
        cases_df,
        scores.aggregates,
        ranking_metrics=[(m.name, True) for m in task.metrics],
        extra={
            "classes": classes,
            "per_class": scores.per_class,
            "undefined_metrics": scores.undefined,
            "class_counts": scores.class_counts,
            "n_train": len(train_ids),
            "n_test": len(test_ids),
            "patch_size": list(patch),
            "target_spacing": list(task.target_spacing),
            "schedule": schedule.model_dump(mode="json"),
            "augmentation": task.augmentation.model_dump(mode="json"),
            "initial_lr": lr,
            "training": summary,
            "preprocessed": str(cache.path),
            "transfer": report.to_dict() if report is not None else None,
            "token_order_policy": job.token_order,
            "submission_info": submission_info,
        },
        started=started,
    )
