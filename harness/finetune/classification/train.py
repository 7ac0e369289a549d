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

Checkpoints: after every epoch the whole training state (model, optimizer, gradient scaler, the
batch order's generator and pool, numpy's, Python's and torch's global generators, the epochs and
steps done) is written atomically to ``<run>/work/classification/checkpoint_latest.pt``; a killed
or requeued job of the same job id continues from the next epoch and ends with the weights an
uninterrupted run has (bitwise on CPU). The scratch folder goes when the run is done.
"""

from __future__ import annotations

import copy
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

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
from harness.finetune.divergence import DivergenceGuard
from harness.finetune.job import (
    FinetuneJob,
    RunLog,
    finish_run,
    load_job_submission,
    recommended_patch,
    run_logged,
    seed_everything,
)
from harness.metrics.classification import score_classification
from harness.metrics.run_records import RunRecords, prob_column
from harness.recipes import ClassificationRecipe, ClassificationSchedule
from harness.runs import write_atomic
from harness.task_types import CLASSIFICATION
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


# ----------------------------------------------------------------------------- checkpoints
#: Where a classification job keeps its training state, inside the run's scratch folder.
CHECKPOINT_FILE = Path("classification") / "checkpoint_latest.pt"
_CHECKPOINT_FORMAT = "ssl3d-harness classification checkpoint"
_CHECKPOINT_VERSION = 1


def checkpoint_path(work_dir: Path) -> Path:
    """The latest-epoch checkpoint of a run whose scratch folder is ``work_dir``."""
    return Path(work_dir) / CHECKPOINT_FILE


def _global_rng_states() -> dict:
    """Python's, numpy's global (the augmentation draws from it) and torch's generators, as plain
    data that ``torch.load(weights_only=True)`` reads back (numpy's key array becomes a list)."""
    import torch

    name, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss = random.getstate()
    cuda = None
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        cuda = torch.cuda.get_rng_state_all()
    return {
        "numpy": {
            "name": str(name),
            "keys": [int(k) for k in keys],
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "python": {"version": int(version), "internal": [int(i) for i in internal], "gauss": gauss},
        "torch": torch.get_rng_state(),
        "torch_cuda": cuda,
    }


def _checked_rng_states(saved: dict) -> dict:
    """``saved`` (from ``_global_rng_states``) turned back into what the setters take, each tried
    on a scratch generator first so that a bad value raises here, before anything is changed."""
    import torch

    n = saved["numpy"]
    numpy_state = (
        n["name"],
        np.array(n["keys"], dtype=np.uint32),
        int(n["pos"]),
        int(n["has_gauss"]),
        float(n["cached_gaussian"]),
    )
    np.random.RandomState().set_state(numpy_state)
    p = saved["python"]
    python_state = (int(p["version"]), tuple(int(i) for i in p["internal"]), p["gauss"])
    random.Random().setstate(python_state)
    torch_state = saved["torch"]
    torch.Generator().set_state(torch_state)
    cuda = saved.get("torch_cuda")
    if cuda is not None and not (torch.cuda.is_available() and len(cuda) == torch.cuda.device_count()):
        cuda = None  # saved on another machine: the CUDA generators start from the seed
    return {"numpy": numpy_state, "python": python_state, "torch": torch_state, "torch_cuda": cuda}


def _set_rng_states(states: dict) -> None:
    import torch

    np.random.set_state(states["numpy"])
    random.setstate(states["python"])
    torch.set_rng_state(states["torch"])
    if states["torch_cuda"] is not None:
        torch.cuda.set_rng_state_all(states["torch_cuda"])


def save_checkpoint(path: Path, state: dict) -> None:
    """``torch.save`` through ``write_atomic``: a kill while writing leaves the previous checkpoint
    whole."""
    import torch

    write_atomic(path, lambda f: torch.save(state, f))


def _read_checkpoint(
    path: Path,
    job_id: str | None,
    schedule: ClassificationSchedule,
    train_ids: Sequence[str],
    model,
    log: Callable[[str], None],
) -> dict | None:
    """The checkpoint at ``path`` if it is readable and this job's (same job id, epochs, training
    cases and model tensors), else None with a log line saying why. Never unpickles objects."""
    import torch

    if not path.is_file():
        return None
    why_not = None
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated, not a checkpoint, or holding objects weights_only refuses
        log(f"ignoring the checkpoint {path}: unreadable ({type(e).__name__}: {e}); training from the start")
        return None
    try:
        if not isinstance(ckpt, dict) or ckpt.get("format") != _CHECKPOINT_FORMAT:
            why_not = "not a classification checkpoint of this harness"
        elif ckpt.get("version") != _CHECKPOINT_VERSION:
            why_not = f"format version {ckpt.get('version')!r}, this harness writes {_CHECKPOINT_VERSION}"
        elif ckpt.get("job_id") != job_id:
            why_not = f"it belongs to job {ckpt.get('job_id')}, this is job {job_id}"
        elif ckpt.get("epochs") != schedule.epochs or not 1 <= int(ckpt.get("epoch", 0)) <= schedule.epochs:
            why_not = f"{ckpt.get('epoch')!r} of {ckpt.get('epochs')!r} epochs done, the schedule has {schedule.epochs}"
        elif list(ckpt.get("train_ids", ())) != list(train_ids):
            why_not = "it was trained on other cases"
        else:
            mine = {k: (tuple(v.shape), v.dtype) for k, v in model.state_dict().items()}
            theirs = {k: (tuple(v.shape), v.dtype) for k, v in ckpt["model"].items()}
            if mine != theirs:
                why_not = f"its model tensors differ ({len(set(mine) ^ set(theirs))} names not in both)"
    except Exception as e:
        why_not = f"malformed ({type(e).__name__}: {e})"
    if why_not:
        log(f"ignoring the checkpoint {path}: {why_not}; training from the start")
        return None
    return ckpt


def _resume(ckpt: dict, path: Path, model, optimizer, scaler, rng, log: Callable[[str], None]) -> dict | None:
    """Load ``ckpt`` into the model, optimizer, scaler and generators and return the progress
    (epoch, steps, lrs, epoch_loss, train_seconds, pool); None (nothing changed, a log line)
    when some part of it does not fit."""
    fresh_optimizer = copy.deepcopy(optimizer.state_dict())  # before the first step: no tensors
    try:
        states = _checked_rng_states(ckpt["rng"])
        np.random.PCG64().state = ckpt["rng"]["batches"]  # try it before setting the real one
        pool = [str(c) for c in ckpt["rng"]["pool"]]
        progress = {
            "epoch": int(ckpt["epoch"]),
            "steps": int(ckpt["optimizer_steps"]),
            "lrs": [float(x) for x in ckpt["lr_per_epoch"]],
            "epoch_loss": float(ckpt["epoch_loss"]),
            "train_seconds": float(ckpt["train_seconds"]),
            "pool": pool,
        }
        optimizer.load_state_dict(ckpt["optimizer"])
        if scaler is not None and ckpt.get("grad_scaler"):
            scaler.load_state_dict(ckpt["grad_scaler"])
        elif scaler is not None:
            log("the checkpoint has no gradient scaler state (saved without fp16): the scaler starts afresh")
    except Exception as e:
        optimizer.load_state_dict(fresh_optimizer)
        log(f"ignoring the checkpoint {path}: malformed ({type(e).__name__}: {e}); training from the start")
        return None
    # checked above: names, shapes and dtypes match, the generator states are valid
    model.load_state_dict(ckpt["model"])
    rng.bit_generator.state = ckpt["rng"]["batches"]
    _set_rng_states(states)
    return progress


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
    checkpoint: Path | None = None,
    job_id: str | None = None,
) -> dict:
    """Train ``model`` in place; returns a summary (steps, final loss, seconds, lr per epoch,
    the epoch resumed from).

    With ``checkpoint`` (a file path) the training state is saved there after every epoch, and a
    checkpoint found there at the start is resumed from when it was written for ``job_id`` (and
    these epochs, cases and model); any other, or an unreadable one, is logged and ignored. A
    checkpoint of the last epoch skips training. The ``epoch N/E`` line is logged after the
    epoch's checkpoint is written."""
    import torch

    if not train_ids:
        raise ValueError("no training cases in this fold")
    plan = plan_steps(schedule, len(train_ids))
    model.to(device).train()
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=lr_at_epoch(0, lr, schedule), weight_decay=schedule.weight_decay
    )
    criterion = torch.nn.CrossEntropyLoss(label_smoothing=schedule.label_smoothing)
    labels = dict(zip(train_ids, train_labels))
    rng = np.random.default_rng(seed)
    pool: list[str] = []
    acc = schedule.gradient_accumulation

    log(
        f"training {len(train_ids)} cases: {schedule.epochs} epochs x {plan.batches_per_epoch} batches "
        f"(batch {schedule.batch_size}, accumulation {acc}: {plan.steps_per_epoch} steps/epoch, "
        f"{plan.total_steps} steps, warm-up {schedule.warmup_epochs} epochs), lr {lr:g}, device {device}"
    )
    t_start = time.time()
    amp_dtype = _amp_dtype(device, precision)
    scaler = torch.amp.GradScaler("cuda") if amp_dtype == torch.float16 else None
    steps = 0
    lrs = []
    epoch_loss = float("nan")
    first_epoch = 0
    seconds_before = 0.0  # training time of earlier attempts
    if checkpoint is not None:
        checkpoint = Path(checkpoint)
        ckpt = _read_checkpoint(checkpoint, job_id, schedule, train_ids, model, log)
        progress = _resume(ckpt, checkpoint, model, optimizer, scaler, rng, log) if ckpt else None
        del ckpt
        if progress is not None:
            first_epoch, steps, lrs = progress["epoch"], progress["steps"], progress["lrs"]
            epoch_loss, seconds_before, pool = progress["epoch_loss"], progress["train_seconds"], progress["pool"]
            log(
                f"resuming from {checkpoint} at epoch {first_epoch}/{schedule.epochs}"
                + (": training is finished" if first_epoch == schedule.epochs else "")
            )

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

    guard = DivergenceGuard()
    for epoch in range(first_epoch, schedule.epochs):
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
            if guard.finite(loss.item(), f"epoch {epoch + 1} batch {i + 1}"):  # else: no gradient from it
                losses.append(loss.item())
                (scaler.scale(loss / acc) if scaler else loss / acc).backward()
            if (i + 1) % acc == 0 or i + 1 == len(batches):
                step()
                steps += 1
        epoch_loss = float(np.mean(losses)) if losses else float("nan")
        epoch_seconds = time.time() - t0
        if checkpoint is not None:
            save_checkpoint(
                checkpoint,
                {
                    "format": _CHECKPOINT_FORMAT,
                    "version": _CHECKPOINT_VERSION,
                    "job_id": job_id,
                    "epochs": schedule.epochs,
                    "epoch": epoch + 1,  # epochs done
                    "train_ids": list(train_ids),
                    "optimizer_steps": steps,
                    "lr_per_epoch": list(lrs),
                    "epoch_loss": epoch_loss,
                    "train_seconds": seconds_before + time.time() - t_start,
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "grad_scaler": scaler.state_dict() if scaler else None,
                    "rng": {"batches": rng.bit_generator.state, "pool": list(pool), **_global_rng_states()},
                },
            )
        log(f"epoch {epoch + 1}/{schedule.epochs} loss {epoch_loss:.4f} lr {epoch_lr:.3e} ({epoch_seconds:.1f}s)")
    return {
        "optimizer_steps": steps,
        "final_epoch_loss": epoch_loss,
        "train_seconds": round(seconds_before + time.time() - t_start, 1),
        "batches_per_epoch": plan.batches_per_epoch,
        "lr_per_epoch": lrs,
        "resumed_from_epoch": first_epoch or None,
    }


def predict(
    model, cache: PreprocessedCache, ids: Sequence[str], batch_size: int, device, precision: str = "fp16"
) -> np.ndarray:
    """Softmax probabilities (N, K) float64 of the cases ``ids``, without augmentation."""
    import torch

    model.to(device).eval()
    amp_dtype = _amp_dtype(device, precision)
    out = []
    with torch.no_grad():
        for start in range(0, len(ids), batch_size):
            x = _batch(cache, ids[start : start + batch_size]).to(device)
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
    recipe = job.recipe.part(CLASSIFICATION, ClassificationRecipe)
    log(f"job {job.job_id()}: entry {job.entry} track {job.track} task {task.name} fold {job.fold} device {job.device}")

    weights = pretrain_patch = submission_info = None
    sub = load_job_submission(job, log)
    recommended = recommended_patch(sub)
    if sub is not None:
        weights, pretrain_patch = sub.weights, sub.pretrain_patch_size
        submission_info = {"sha256": sub.sha256, "size_bytes": sub.size_bytes, "warnings": list(sub.warnings)}
        del sub
    patch = tuple(int(p) for p in task.patch_for(job.track, recommended))

    cases = load_cases(task)
    train_ids, test_ids = split_cases(task, cases, job.fold, recipe)
    by_id = {c.case_id: c for c in cases}
    log(f"{len(cases)} labelled cases, fold {job.fold}: {len(train_ids)} train, {len(test_ids)} test; patch {patch}")
    cache = preprocess_task(task, cases, patch, job.results, recipe=recipe, log=log)

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
        model,
        cache,
        train_ids,
        [by_id[i].label_index for i in train_ids],
        schedule,
        lr,
        transform,
        device,
        job.seed,
        log,
        precision=recipe.cuda_precision,
        checkpoint=checkpoint_path(job.run.work_dir),
        job_id=job.job_id(),
    )

    probs = predict(model, cache, test_ids, schedule.batch_size, device, precision=recipe.cuda_precision)
    y_true = np.array([by_id[i].label_index for i in test_ids], dtype=np.int64)
    scores = score_classification(y_true, probs, task.classes)
    classes = list(task.classes)
    cases_df = pd.DataFrame(
        {
            "case": test_ids,
            "true_label": [by_id[i].label for i in test_ids],
            "pred_label": [classes[k] for k in probs.argmax(axis=1)],
            **{prob_column(c): probs[:, k] for k, c in enumerate(classes)},
        }
    )
    for u in scores.undefined:
        log(f"undefined: {u['metric']} for class {u['class']}: {u['reason']}")
    log(f"done: {scores.aggregates}")
    return finish_run(
        job,
        cases_df,
        scores.aggregates,
        classes=classes,
        extra={
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


def rescore_classification(task: ClassificationTask, run, old: RunRecords) -> tuple[pd.DataFrame, dict]:
    """A finished run scored again from its own cases.csv (the test cases' probabilities): the
    same cases, the aggregates and what ``metrics.json`` says of them recomputed (`harness
    rescore`). Returns (cases, the metrics.json fields that change)."""
    cases = old.cases
    classes = list(task.classes)
    if list(old.metrics.classes) != classes:
        raise ValueError(
            f"{run.metrics_json}: the run's classes {list(old.metrics.classes)} are not the task's {classes}"
        )
    y_true = np.array([classes.index(label) for label in cases["true_label"]], dtype=np.int64)
    probs = cases[[prob_column(c) for c in classes]].to_numpy(dtype=float)
    scores = score_classification(y_true, probs, classes)
    changed = {
        "aggregates": scores.aggregates,
        "per_class": scores.per_class,
        "undefined_metrics": scores.undefined,
        "class_counts": scores.class_counts,
    }
    return cases, changed
