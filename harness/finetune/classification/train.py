"""Classification fine-tuning of one entry on one task and fold: the job, the loop, the prediction.

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
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import pandas as pd

from harness.finetune.classification.augment import build_augmentation
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
from harness.recipes import ClassificationSchedule
from harness.tasks.spec import ClassificationTask

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
        return [order[i:i + bs] for i in range(0, len(order), bs)]
    batches = []
    for _ in range(schedule.iterations_per_epoch):
        batch = []
        while len(batch) < bs:
            if not pool:
                pool.extend(rng.permutation(list(train_ids)).tolist())
            batch.append(pool.pop())
        batches.append(batch)
    return batches


def _amp_dtype(device, precision: str = "fp16"):
    """Autocast dtype on CUDA (the recipe's; fp16 needs a gradient scaler); None on CPU."""
    import torch

    if device.type != "cuda":
        return None
    return torch.bfloat16 if precision == "bf16" and torch.cuda.is_bf16_supported() else torch.float16


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
    precision: str = "fp16",
) -> dict:
    """Train ``model`` in place; returns a summary (steps, final loss, seconds, lr per epoch)."""
    import torch

    if not train_ids:
        raise ValueError("no training cases in this fold")
    plan = plan_steps(schedule, len(train_ids))
    model.to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr_at_epoch(0, lr, schedule),
                                  weight_decay=schedule.weight_decay)
    criterion = torch.nn.CrossEntropyLoss(label_smoothing=schedule.label_smoothing)
    labels = dict(zip(train_ids, train_labels))
    rng = np.random.default_rng(seed)
    pool: list[str] = []
    acc = schedule.gradient_accumulation

    log(f"training {len(train_ids)} cases: {schedule.epochs} epochs x {plan.batches_per_epoch} batches "
        f"(batch {schedule.batch_size}, accumulation {acc}: {plan.steps_per_epoch} steps/epoch, "
        f"{plan.total_steps} steps, warm-up {schedule.warmup_epochs} epochs), lr {lr:g}, device {device}")
    t_start = time.time()
    amp_dtype = _amp_dtype(device, precision)
    scaler = torch.amp.GradScaler("cuda") if amp_dtype == torch.float16 else None
    steps = 0
    lrs = []
    epoch_loss = float("nan")

    def step() -> None:
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

    for epoch in range(schedule.epochs):
        t0 = time.time()
        epoch_lr = lr_at_epoch(epoch, lr, schedule)
        for group in optimizer.param_groups:
            group["lr"] = epoch_lr
        lrs.append(epoch_lr)
        losses = []
        optimizer.zero_grad(set_to_none=True)
        batches = epoch_batches(train_ids, schedule, rng, pool)
        for i, ids in enumerate(batches):
            x = _batch(cache, ids, transform).to(device, non_blocking=True)
            y = torch.tensor([labels[c] for c in ids], dtype=torch.long, device=device)
            with _autocast(device, amp_dtype):
                logits = model(x)
            loss = criterion(logits.float(), y)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"epoch {epoch + 1}: the training loss is {loss.item()}")
            losses.append(loss.item())
            (scaler.scale(loss / acc) if scaler else loss / acc).backward()
            if (i + 1) % acc == 0 or i + 1 == len(batches):
                step()
                steps += 1
        epoch_loss = float(np.mean(losses))
        log(f"epoch {epoch + 1}/{schedule.epochs} loss {epoch_loss:.4f} lr {epoch_lr:.3e} "
            f"({time.time() - t0:.1f}s)")
    return {"optimizer_steps": steps, "final_epoch_loss": epoch_loss, "train_seconds": round(time.time() - t_start, 1),
            "batches_per_epoch": plan.batches_per_epoch, "lr_per_epoch": lrs}


def predict(model, cache: PreprocessedCache, ids: Sequence[str], batch_size: int, device,
            precision: str = "fp16") -> np.ndarray:
    """Softmax probabilities (N, K) float64 of the cases ``ids``, without augmentation."""
    import torch

    model.to(device).eval()
    amp_dtype = _amp_dtype(device, precision)
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
    schedule = job.schedule
    recipe = job.recipe.classification
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
    train_ids, test_ids = split_cases(task, cases, job.fold, job.recipe.classification)
    by_id = {c.case_id: c for c in cases}
    log(f"{len(cases)} labelled cases, fold {job.fold}: {len(train_ids)} train, {len(test_ids)} test; patch {patch}")
    cache = preprocess_task(task, cases, patch, job.results, recipe=job.recipe.classification, log=log)

    seed_everything(job.seed)
    model, report = build_classifier(
        job.track,
        input_channels=task.num_channels,
        num_classes=len(task.classes),
        patch_size=patch,
        dropout=schedule.dropout,
        recipe=recipe,
        weights=weights,
        pretrain_patch_size=pretrain_patch,
    )
    del weights  # the encoder holds copies now; drop the memory map
    if report is not None:
        log(f"loaded {report.loaded_keys} stem/encoder tensors: {report.to_dict()}")
    device = torch.device(job.device)
    lr = schedule.from_scratch_lr if job.is_baseline else schedule.lr
    augmentation = task.augmentation_for(job.recipe)
    transform = build_augmentation(augmentation, patch)
    summary = train_classifier(
        model, cache, train_ids, [by_id[i].label_index for i in train_ids], schedule, lr, transform, device,
        job.seed, log, precision=recipe.cuda_precision,
    )

    probs = predict(model, cache, test_ids, schedule.batch_size, device, precision=recipe.cuda_precision)
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
            "augmentation": augmentation.model_dump(mode="json"),
            "initial_lr": lr,
            "training": summary,
            "preprocessed": str(cache.path),
            "transfer": report.to_dict() if report is not None else None,
            "submission_info": submission_info,
        },
        started=started,
    )
