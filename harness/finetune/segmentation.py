"""Segmentation fine-tuning through nnunetv2: preprocess once per task, train the harness trainer,
predict the held-out cases with nnU-Net's sliding-window predictor, score each case and label.

nnU-Net finds its folders through the ``nnUNet_raw``/``nnUNet_preprocessed``/``nnUNet_results``
environment variables, read when used. The harness gives every task its own nnU-Net root inside
the results cache (so a task is always ``Dataset001_<task>`` there and ids never collide) and
sets the variables around each nnU-Net call.

Over 450 lines for a reason: it is the whole nnU-Net side of a job in the order a job runs it
(dataset, plans, preprocessing, training, prediction, scoring, rescoring), every step inside the
per-task nnU-Net environment set up here.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import sys
import tempfile
import time
from collections.abc import Iterator
from copy import deepcopy
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from harness.finetune.cache import build_once
from harness.finetune.job import (
    FinetuneJob,
    RunLog,
    finish_run,
    load_job_submission,
    recommended_patch,
    run_logged,
    seed_everything,
)
from harness.metrics.run_records import MEAN_DEFINITION, SEGMENTATION_CASES, RunRecords, reported_mean
from harness.recipes import SSL3D_2025, SegmentationRecipe
from harness.runs import ResultsLayout
from harness.task_types import SEGMENTATION
from harness.tasks.datafiles import read_facts
from harness.tasks.spec import SegmentationTask

CONFIGURATION = "ssl3d"
PLANS_NAME = "ssl3dPlans"
DATASET_ID = 1


class SegmentationDataError(ValueError):
    """The task's nnU-Net dataset cannot be used; the message names the folder and the problem."""


@contextlib.contextmanager
def nnunet_paths(
    raw: Path | None = None, preprocessed: Path | None = None, results: Path | None = None
) -> Iterator[None]:
    """Point nnU-Net at the given folders for the duration of the block."""
    with environment(nnUNet_raw=raw, nnUNet_preprocessed=preprocessed, nnUNet_results=results):
        yield


@contextlib.contextmanager
def environment(**wanted) -> Iterator[None]:
    """Set the given environment variables (None: leave as is) for the block, then restore them."""
    old = {k: os.environ.get(k) for k in wanted}
    try:
        for k, v in wanted.items():
            if v is not None:
                os.environ[k] = str(v)
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


# ------------------------------------------------------------------------------ dataset & cases
def _dataset_json(task: SegmentationTask) -> dict:
    path = task.dataset_dir / "dataset.json"
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise SegmentationDataError(f"{path}: cannot read dataset.json: {e}") from None
    for field in ("channel_names", "labels", "file_ending"):
        if field not in data:
            raise SegmentationDataError(f"{path}: dataset.json has no '{field}'")
    if any(not isinstance(v, int) for v in data["labels"].values()):
        raise SegmentationDataError(f"{path}: region-based labels are not supported; labels must be integers")
    return data


def foreground_labels(dataset_json: dict) -> list[int]:
    return sorted(v for v in dataset_json["labels"].values() if v != 0 and v != dataset_json["labels"].get("ignore"))


def _case_images(folder: Path, case: str, n_channels: int, ending: str) -> list[Path]:
    files = [folder / f"{case}_{c:04d}{ending}" for c in range(n_channels)]
    missing = [f.name for f in files if not f.is_file()]
    if missing:
        raise SegmentationDataError(f"{folder}: case {case!r} is missing channel file(s) {', '.join(missing)}")
    return files


def _cases_in(folder: Path, ending: str) -> list[str]:
    return sorted({p.name[: -len(ending) - 5] for p in folder.glob(f"*_[0-9][0-9][0-9][0-9]{ending}")})


def held_out_cases(task: SegmentationTask, dataset_json: dict) -> list[tuple[str, list[Path], Path]]:
    """(case, image files, reference label file) for every held-out test case."""
    root, ending = task.dataset_dir, dataset_json["file_ending"]
    n_channels = len(dataset_json["channel_names"])
    if task.test.cases is not None:
        images, labels, cases = root / "imagesTr", root / "labelsTr", list(task.test.cases)
    else:
        assert task.test.images is not None and task.test.labels is not None  # HeldOutSplit checked them
        images, labels = root / task.test.images, root / task.test.labels
        cases = _cases_in(images, ending)
        if not cases:
            raise SegmentationDataError(f"{images}: no test images (<case>_0000{ending})")
    out = []
    for case in cases:
        ref = labels / f"{case}{ending}"
        if not ref.is_file():
            raise SegmentationDataError(f"{labels}: no reference segmentation for test case {case!r} ({ref.name})")
        out.append((case, _case_images(images, case, n_channels, ending), ref))
    return out


def held_out_count(task: SegmentationTask) -> int | None:
    """How many held-out cases a job of ``task`` predicts (the cost plan's count); None when its
    dataset cannot tell (the data check names the problem)."""
    try:
        return len(held_out_cases(task, _dataset_json(task)))
    except (SegmentationDataError, OSError):
        return None


# ------------------------------------------------------------------------------ preprocessing
@dataclass(frozen=True)
class PreparedDataset:
    """A task's preprocessed nnU-Net dataset, shared by every submission and baseline."""

    root: Path
    dataset_name: str
    plans: dict
    dataset_json: dict

    @property
    def raw(self) -> Path:
        return self.root / "raw"

    @property
    def preprocessed(self) -> Path:
        return self.root / "preprocessed"


def preprocessing_key(task: SegmentationTask, dataset_json: dict, recipe: SegmentationRecipe) -> str:
    """Everything the preprocessed data depends on: the data files, spacing, normalisation (and
    whether it uses nnU-Net's planned mask), transposition, split."""
    root = task.dataset_dir
    files = []
    for sub in ("imagesTr", "labelsTr"):
        for p in sorted((root / sub).iterdir()):
            st = p.stat()
            files.append((sub, p.name, st.st_size, int(st.st_mtime)))
    key = {
        "dataset": str(root),
        "dataset_json": dataset_json,
        "files": files,
        "spacing": list(task.target_spacing),
        "normalization": "ZScoreNormalization",
        "keep_planned_mask_for_norm": recipe.keep_planned_mask_for_norm,
        "keep_planned_transpose": recipe.keep_planned_transpose,
        "num_folds": task.num_folds,
        "held_out_from_train": list(task.test.cases or []),
        "version": 2,  # 2: the transposition planned from the data's spacing
    }
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]


def prepare_dataset(
    task: SegmentationTask, results: Path, recipe: SegmentationRecipe | None = None, log=print
) -> PreparedDataset:
    """Fingerprint, plan and preprocess ``task`` with nnunetv2, once; later calls reuse the cache
    (``recipe``: the job's segmentation part; None is ``ssl3d-2025``'s)."""
    recipe = recipe or SSL3D_2025.part(SEGMENTATION, SegmentationRecipe)
    dataset_json = _dataset_json(task)
    key = preprocessing_key(task, dataset_json, recipe)

    root = ResultsLayout(Path(results).resolve()).nnunet_cache(task.name, key)
    dataset_name = f"Dataset{DATASET_ID:03d}_{task.name}"
    build_once(root, lambda folder: _preprocess(task, dataset_json, folder, dataset_name, recipe), task.name, log)
    plans = json.loads((root / "preprocessed" / dataset_name / f"{PLANS_NAME}.json").read_text())
    return PreparedDataset(root=root, dataset_name=dataset_name, plans=plans, dataset_json=dataset_json)


def _preprocess(
    task: SegmentationTask, dataset_json: dict, root: Path, dataset_name: str, recipe: SegmentationRecipe
) -> None:
    from nnunetv2.experiment_planning.dataset_fingerprint.fingerprint_extractor import DatasetFingerprintExtractor
    from nnunetv2.experiment_planning.experiment_planners.default_experiment_planner import ExperimentPlanner
    from nnunetv2.utilities.crossval_split import generate_crossval_split
    from nnunetv2.utilities.utils import get_filenames_of_train_images_and_targets

    raw = root / "raw"
    pre = root / "preprocessed" / dataset_name
    raw.mkdir(parents=True, exist_ok=True)
    os.symlink(task.dataset_dir, raw / dataset_name, target_is_directory=True)
    n_proc = max(1, int(os.environ.get("nnUNet_def_n_proc", "1")))
    with nnunet_paths(raw=raw, preprocessed=root / "preprocessed"):
        verify_with_nnunet(task, raw / dataset_name, n_proc)
        DatasetFingerprintExtractor(DATASET_ID, n_proc, verbose=False).run(overwrite_existing=True)
        # nnU-Net's planner hands nnUNet_n_proc_DA to torch.set_num_threads, which rejects 0
        # (0 is otherwise a valid setting: single-threaded data augmentation)
        da_threads = str(max(1, int(os.environ.get("nnUNet_n_proc_DA", "1") or 1)))
        # planned from the data's own spacing, as the organizers' plans are (nnU-Net's default
        # planner; like_nnssl.py only replaces the spacing afterwards): the transposition nnU-Net
        # plans depends on that spacing, and the isotropic target spacing would plan none
        planner = ExperimentPlanner(
            DATASET_ID, plans_name=PLANS_NAME, suppress_transpose=not recipe.keep_planned_transpose
        )
        with environment(nnUNet_n_proc_DA=da_threads):
            planner.plan_experiment()
        plans_file = pre / f"{PLANS_NAME}.json"
        plans = json.loads(plans_file.read_text())
        plans["configurations"] = {CONFIGURATION: _harness_configuration(plans, task, dataset_json, recipe)}
        plans_file.write_text(json.dumps(plans, indent=2))

        from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

        plans_manager = PlansManager(plans)
        cm = plans_manager.get_configuration(CONFIGURATION)
        preprocessor = cm.preprocessor_class(verbose=False)
        out_dir = pre / cm.data_identifier
        out_dir.mkdir(parents=True, exist_ok=True)
        cases = get_filenames_of_train_images_and_targets(str(raw / dataset_name), dataset_json)
        for case, files in sorted(cases.items()):
            preprocessor.run_case_save(
                str(out_dir / case), files["images"], files["label"], plans_manager, cm, dataset_json
            )
        held_out = set(task.test.cases or [])
        unknown = held_out - set(cases)
        if unknown:
            raise SegmentationDataError(f"{task.source}: field 'test.cases': not in imagesTr: {sorted(unknown)}")
        train_cases = sorted(set(cases) - held_out)
        if len(train_cases) < task.num_folds:
            raise SegmentationDataError(
                f"{task.source}: {len(train_cases)} training cases cannot make {task.num_folds} folds"
            )
        splits = generate_crossval_split(train_cases, seed=12345, n_splits=task.num_folds)
        (pre / "splits_final.json").write_text(json.dumps(splits, indent=2))


def verify_with_nnunet(task: SegmentationTask, raw_dataset: Path, n_proc: int) -> None:
    """nnU-Net's own dataset check (after the harness's, which should leave it nothing to find).
    It prints what it finds from its pool's processes and raises "check text output above": its
    output is captured at file descriptor 1 (the processes inherit it), echoed to the job's output,
    and the error raised names the files."""
    from nnunetv2.experiment_planning.verify_dataset_integrity import verify_dataset_integrity

    problem = None
    with capture_fd1() as printed:
        try:
            verify_dataset_integrity(str(raw_dataset), n_proc)
        except (AssertionError, RuntimeError, FileNotFoundError) as e:
            problem = e
    print(printed.text, end="", flush=True)  # nnU-Net's own words stay in the job's output
    if problem is None:
        return

    def real(text: str) -> str:  # paths through our symlink: the task's dataset; np.int64(1): 1
        return re.sub(r"np\.\w+\(([^()]*)\)", r"\1", text.replace(str(raw_dataset), str(task.dataset_dir)))

    found, block = [], None  # one line per problem: "Error: ..." / "Images contain NaN ..." + its details
    for line in real(printed.text).splitlines():
        if re.match(r"\s*(Error:|Images contain NaN|Segmentation contains NaN)", line):
            block = [line.strip()]
            found.append(block)
        elif block is not None and line.strip() and not line.lstrip().lower().startswith("warning"):
            block.append(line.strip())
        else:
            block = None
    lines = [" ".join(b)[:400] for b in found] or [real(str(problem)).strip() or type(problem).__name__]
    more = f"\n... and {len(lines) - 20} more (see the job's output)" if len(lines) > 20 else ""
    raise SegmentationDataError(
        f"{task.dataset_dir}: nnU-Net dataset check failed: " + "\n".join(lines[:20]) + more
    ) from None


@dataclass
class _Captured:
    text: str = ""


@contextlib.contextmanager
def capture_fd1() -> Iterator[_Captured]:
    """Everything written to stdout in the block, by this process (``sys.stdout``) and by the
    processes it starts (file descriptor 1), unbuffered; ``.text`` is set when the block ends."""
    captured, in_process = _Captured(), io.StringIO()
    with tempfile.TemporaryFile() as out, environment(PYTHONUNBUFFERED="1"):
        sys.stdout.flush()
        saved = os.dup(1)
        os.dup2(out.fileno(), 1)
        try:
            with contextlib.redirect_stdout(in_process):
                yield captured
        finally:
            os.dup2(saved, 1)
            os.close(saved)
            out.seek(0)
            captured.text = in_process.getvalue() + out.read().decode("utf-8", "replace")


def _harness_configuration(plans: dict, task: SegmentationTask, dataset_json: dict, recipe: SegmentationRecipe) -> dict:
    """The one configuration the harness trains: nnU-Net's 3d_fullres plan with the challenge's
    target spacing and per-channel z-scoring, as the organizers' ``like_nnssl`` planner does: what
    else nnU-Net planned (``use_mask_for_norm``, the transposition) stays unless the recipe says
    otherwise. Patch and batch size are set per run (``run_plans``), for the job's track."""
    cfg = deepcopy(plans["configurations"]["3d_fullres"])
    n_channels = len(dataset_json["channel_names"])
    spacing_id = "x".join(f"{s:g}" for s in task.target_spacing)
    # the planner's spacing is in its transposed axis order; the task's is in array order
    spacing = [float(task.target_spacing[i]) for i in plans["transpose_forward"]]
    cfg.update(
        data_identifier=f"ssl3d_{spacing_id}mm_zscore",
        preprocessor_name="DefaultPreprocessor",
        spacing=spacing,
        normalization_schemes=["ZScoreNormalization"] * n_channels,
    )  # the patch stays nnU-Net's planned one: the preprocessed data does not depend on it
    if not recipe.keep_planned_mask_for_norm:
        cfg["use_mask_for_norm"] = [False] * n_channels
    for stage_key in ("previous_stage", "next_stage"):
        cfg.pop(stage_key, None)
    return cfg


def run_plans(prepared: PreparedDataset, patch_size, batch_size: int) -> dict:
    """A copy of the cached plans with this run's patch (given in array order, stored in nnU-Net's
    transposed order) and batch size; the cache is never mutated."""
    plans = deepcopy(prepared.plans)
    cfg = plans["configurations"][CONFIGURATION]
    cfg["patch_size"] = [int(patch_size[i]) for i in plans["transpose_forward"]]
    cfg["batch_size"] = int(batch_size)
    return plans


# ------------------------------------------------------------------------------ the job
def run_segmentation(job: FinetuneJob) -> dict:
    """Fine-tune one entry on one segmentation task and fold; write the run folder. Returns the
    metrics written. Errors are logged to ``train.log`` and re-raised."""
    started = time.time()
    return run_logged(job, lambda log: _run(job, log, started))


def _run(job: FinetuneJob, log: RunLog, started: float) -> dict:
    import torch

    task: SegmentationTask = job.task
    run = job.run
    log(f"job {job.job_id()}: entry {job.entry} track {job.track} task {task.name} fold {job.fold} device {job.device}")
    submission = load_job_submission(job, log)
    patch = task.patch_for(job.track, recommended_patch(submission))
    schedule = job.schedule
    recipe = job.recipe.part(SEGMENTATION, SegmentationRecipe)

    prepared = prepare_dataset(task, job.results, recipe, log=log)
    # seeded after preprocessing, which draws from torch's generator (nnU-Net's planner builds
    # networks) only when the cache is cold: a job's result never depends on who built the cache
    seed_everything(job.seed)
    plans = run_plans(prepared, patch, schedule.batch_size)
    device = torch.device(job.device)
    nnunet_results = run.work_dir / "nnunet"

    from harness.finetune.nnunet_trainer import SSL3DFinetuneTrainer

    with nnunet_paths(raw=prepared.raw, preprocessed=prepared.preprocessed, results=nnunet_results):
        plans["continue_training"] = False
        trainer = SSL3DFinetuneTrainer(plans, CONFIGURATION, job.fold, prepared.dataset_json, device)
        trainer.log_file = str(run.log)
        trainer.configure_finetuning(track=job.track, schedule=schedule, submission=submission, recipe=recipe)
        # A requeued or re-run job resumes from nnU-Net's own checkpoints in its scratch folder:
        # the final one skips training, the latest one continues it.
        final = Path(trainer.output_folder) / "checkpoint_final.pth"
        latest = Path(trainer.output_folder) / "checkpoint_latest.pth"
        t_train = time.time()
        if final.is_file():
            log(f"training already finished: loading {final}")
            trainer.load_checkpoint(str(final))
        else:
            if latest.is_file():
                log(f"resuming training from {latest}")
                trainer.load_checkpoint(str(latest))
            trainer.run_training()
        train_seconds = time.time() - t_train
        trainer.submission = submission = None  # the weights are in the network now: unmap the file
        t_pred = time.time()
        cases = predict_and_score(trainer, task, prepared, run.predictions_dir)
        predict_seconds = time.time() - t_pred

    labels = foreground_labels(prepared.dataset_json)
    aggregates = aggregate_segmentation(cases, labels)
    log(f"done: {json.dumps(aggregates)}")
    return finish_run(
        job,
        cases,
        aggregates,
        extra={
            "labels": {str(v): k for k, v in prepared.dataset_json["labels"].items()},
            "patch_size": list(patch),
            "target_spacing": list(task.target_spacing),
            "schedule": schedule.model_dump(mode="json"),
            "initial_lr": trainer.initial_lr,
            "transfer": trainer.transfer_report.to_dict() if trainer.transfer_report else None,
            "transpose_forward": prepared.plans["transpose_forward"],
            "use_mask_for_norm": prepared.plans["configurations"][CONFIGURATION]["use_mask_for_norm"],
            "nsd_tolerance_mm": task.nsd_tolerance_mm,
            "train_seconds": round(train_seconds, 1),
            "predict_seconds": round(predict_seconds, 1),
            "preprocessed": str(prepared.root),
        },
        started=started,
    )


def predict_and_score(trainer, task: SegmentationTask, prepared: PreparedDataset, out_dir: Path) -> pd.DataFrame:
    """Sliding-window prediction of every held-out case with nnU-Net's predictor into ``out_dir``
    (kept: the run's ``predictions/``), then ``score_predictions``."""
    import torch
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    test = held_out_cases(task, prepared.dataset_json)
    predictor = nnUNetPredictor(
        tile_step_size=0.5,
        use_gaussian=True,
        use_mirroring=task.test_time_mirroring,
        perform_everything_on_device=trainer.device.type == "cuda",
        device=trainer.device,
        verbose=False,
        verbose_preprocessing=False,
        allow_tqdm=False,
    )
    network = trainer.network
    network.eval()
    predictor.manual_initialization(
        network,
        trainer.plans_manager,
        trainer.configuration_manager,
        [{k: v for k, v in network.state_dict().items()}],
        trainer.dataset_json,
        type(trainer).__name__,
        trainer.inference_allowed_mirroring_axes,
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        predictor.predict_from_files_sequential(
            [[str(f) for f in images] for _, images, _ in test],
            [str(out_dir / case) for case, _, _ in test],
            save_probabilities=False,
            overwrite=True,
        )
    return score_predictions(task, prepared.dataset_json, out_dir)


def score_predictions(task: SegmentationTask, dataset_json: dict, predictions: Path) -> pd.DataFrame:
    """Per-case, per-label Dice and NSD of the predictions in ``predictions`` (``<case><ending>``)
    against the held-out references, at the reference's own spacing, with the task's metric
    settings: what a job scores after predicting, and what `harness rescore` scores again. A
    missing prediction is a ``FileNotFoundError`` naming it."""
    import SimpleITK as sitk

    from harness.metrics.segmentation import score_case

    ending = dataset_json["file_ending"]
    labels = foreground_labels(dataset_json)
    rows = []
    for case, _, ref_file in held_out_cases(task, dataset_json):
        ref_img = sitk.ReadImage(str(ref_file))
        predicted = Path(predictions) / f"{case}{ending}"
        if not predicted.is_file():
            raise FileNotFoundError(f"{predicted}: no prediction of held-out case {case!r}")
        pred_img = sitk.ReadImage(str(predicted))
        spacing = tuple(float(s) for s in ref_img.GetSpacing()[::-1])
        for row in score_case(
            sitk.GetArrayFromImage(pred_img),
            sitk.GetArrayFromImage(ref_img),
            spacing,
            labels,
            tolerance_mm=task.nsd_tolerance_mm,
        ):
            rows.append({"case": case, **row})
    return pd.DataFrame(rows, columns=list(SEGMENTATION_CASES.columns()))


def aggregate_segmentation(cases: pd.DataFrame, labels: list[int]) -> dict:
    """Reported means of every per-case metric of the cases table, as the organizers compute them
    (``harness.metrics.run_records.reported_mean``) over the foreground ``labels`` (background is
    never scored)."""
    out: dict = {"num_cases": int(cases["case"].nunique()), "mean_definition": MEAN_DEFINITION}
    for metric in SEGMENTATION_CASES.metric_columns:
        label_means, mean = reported_mean(cases.loc[cases["label"] == lb, metric] for lb in labels)
        out[metric] = {"mean": mean, "per_label": {str(lb): m for lb, m in zip(labels, label_means)}}
    return out


class KeptPredictionError(ValueError):
    """A kept prediction fails the data check's integrity read; the message names the file."""


def check_kept_predictions(task: SegmentationTask, dataset_json: dict, predictions: Path) -> None:
    """Every kept prediction read in full by the data check's reader (gzip + nibabel), because
    SimpleITK reads a truncated file as zero-filled voxels and would rescore it silently; a file
    that fails is a ``KeptPredictionError`` naming it and the problem (a missing one is left to
    ``score_predictions``)."""

    ending = dataset_json["file_ending"]
    for case, _, _ in held_out_cases(task, dataset_json):
        path = Path(predictions) / f"{case}{ending}"
        if not path.is_file():
            continue
        facts = read_facts(path, "label")
        problem = facts.error or (f"{facts.nonfinite} voxels are NaN or infinite" if facts.nonfinite else None)
        if problem is not None:
            raise KeptPredictionError(f"kept prediction {path}: {problem}")


def rescore_segmentation(task: SegmentationTask, run, old: RunRecords) -> tuple[pd.DataFrame, dict]:
    """A finished run's kept predictions (``run.predictions_dir``) scored again with the task's
    metric settings as they are now (`harness rescore`). Returns (cases, the metrics.json fields
    that change)."""
    if not run.predictions_dir.is_dir():
        raise FileNotFoundError(f"{run.predictions_dir}: no predictions kept; `harness evaluate` reruns it")
    dataset_json = _dataset_json(task)
    check_kept_predictions(task, dataset_json, run.predictions_dir)
    cases = score_predictions(task, dataset_json, run.predictions_dir)
    changed = {
        "aggregates": aggregate_segmentation(cases, foreground_labels(dataset_json)),
        "nsd_tolerance_mm": task.nsd_tolerance_mm,
    }
    return cases, changed
