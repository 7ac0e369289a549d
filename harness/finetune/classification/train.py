"""Classification fine-tuning of one entry on one task and fold: the job and the prediction.

The schedule and the loop are ``trainer.ClassifierTrainer``'s (the module docstring has the
schedule). Checkpoints: after every epoch the whole training state (model, optimizer, gradient
scaler, the batch order's generator and pool, numpy's, Python's and torch's global generators,
the epochs and steps done) is written atomically to
``<run>/work/classification/checkpoint_latest.pt`` (``checkpoint``); a killed or requeued job of
the same job id continues from the next epoch and ends with the weights an uninterrupted run has
(bitwise on CPU). The scratch folder goes when the run is done.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np
import pandas as pd

from harness.finetune.classification.augment import build_augmentation
from harness.finetune.classification.checkpoint import checkpoint_path
from harness.finetune.classification.data import (
    PreprocessedCache,
    load_cases,
    preprocess_task,
    split_cases,
)
from harness.finetune.classification.model import build_classifier
from harness.finetune.classification.trainer import (
    ClassifierTrainer,
    TrainingCases,
    amp_dtype_for,
    autocast_for,
    load_batch,
)
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
from harness.recipes import ClassificationRecipe
from harness.task_types import CLASSIFICATION
from harness.tasks.spec import ClassificationTask


def predict(
    model, cache: PreprocessedCache, ids: Sequence[str], batch_size: int, device, precision: str = "fp16"
) -> np.ndarray:
    """Softmax probabilities (N, K) float64 of the cases ``ids``, without augmentation."""
    import torch

    model.to(device).eval()
    amp_dtype = amp_dtype_for(device, precision)
    out = []
    with torch.no_grad():
        for start in range(0, len(ids), batch_size):
            x = load_batch(cache, ids[start : start + batch_size]).to(device)
            with autocast_for(device, amp_dtype):
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
    train_cases = TrainingCases(cache, train_ids, [by_id[i].label_index for i in train_ids], transform)
    summary = ClassifierTrainer(
        model,
        train_cases,
        schedule,
        lr,
        device,
        seed=job.seed,
        log=log,
        precision=recipe.cuda_precision,
        checkpoint=checkpoint_path(job.run.work_dir),
        job_id=job.job_id(),
    ).run()

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
