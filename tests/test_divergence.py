"""The divergence guard: a loss that stays non-finite stops the job at once as FAILED "diverged";
one non-finite iteration is skipped without a step."""

from __future__ import annotations

import shutil

import pytest
import yaml
from jobs_helpers import write_tiny_dataset

from harness.finetune.divergence import NONFINITE_LIMIT, DivergedError, DivergenceGuard
from harness.jobs.state import DIVERGED, ERROR_CLASSES
from harness.jobs.worker import describe_failure

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.interface` is deprecated:FutureWarning")


def test_a_run_of_non_finite_losses_stops_at_the_limit():
    guard = DivergenceGuard(limit=3)
    assert guard.finite(0.5, "it 1")
    assert not guard.finite(float("nan"), "it 2") and not guard.finite(float("inf"), "it 3")
    assert guard.finite(0.4, "it 4")  # a finite loss in between: the count starts again
    assert not guard.finite(float("nan"), "it 5") and not guard.finite(float("nan"), "it 6")
    with pytest.raises(DivergedError, match=r"^it 7: the training loss was nan for 3 consecutive iterations"):
        guard.finite(float("nan"), "it 7")
    assert guard.skipped == 5
    with pytest.raises(ValueError, match="at least 1"):
        DivergenceGuard(limit=0)


def test_diverged_is_an_error_class_of_its_own(tmp_path):
    assert DIVERGED in ERROR_CLASSES
    cls, message = describe_failure(DivergedError("epoch 2 batch 1: the training loss was nan"), tmp_path)
    assert (cls, message) == (DIVERGED, "DivergedError: epoch 2 batch 1: the training loss was nan")


# ------------------------------------------------------------------------------ real jobs
def _run_to_failure(task_file, track: str, results):
    """The job of ``task_file`` (the track's baseline, fold 0) through the worker, as every
    executor runs it; returns its state in ``harness status`` and its train.log."""
    from harness.finetune.job import FinetuneJob
    from harness.jobs.evaluate import prepare_job_folder
    from harness.jobs.matrix import PlannedJob
    from harness.jobs.status import collect_status
    from harness.jobs.worker import run_job_folder
    from harness.tasks import load_task_file

    job = FinetuneJob(task=load_task_file(task_file), fold=0, track=track, results=results, device="cpu")
    planned = PlannedJob(job, job.job_id())
    prepare_job_folder(planned)
    with pytest.raises(DivergedError):
        run_job_folder(planned.folder)
    (state,) = collect_status(results).failed
    return state, job.run.log.read_text()


@pytest.mark.slow
def test_a_classification_job_with_an_exploding_lr_fails_as_diverged(tmp_path, toy_data, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    shutil.copytree(toy_data, tmp_path / "data" / "toy")
    data = yaml.safe_load(open("task_registry/toy/toy_cls_shape.yaml"))
    # AdamW steps by about lr whatever the gradient: weights of 1e36 overflow to inf, the loss to NaN
    data["schedule"]["PrimusM"].update(epochs=4, iterations_per_epoch=4, warmup_epochs=0, from_scratch_lr=1e36)
    task_file = tmp_path / "task_registry" / "div" / "div.yaml"
    task_file.parent.mkdir(parents=True)
    task_file.write_text(yaml.safe_dump(data))
    state, log = _run_to_failure(task_file, "PrimusM", tmp_path / "results")
    assert state.error_class == DIVERGED
    assert f"for {NONFINITE_LIMIT} consecutive iterations (the training diverged)" in state.message
    assert "epoch 4/4" not in log  # stopped, not run to the end of its schedule


@pytest.mark.slow
def test_a_segmentation_job_with_an_exploding_lr_fails_as_diverged(tmp_path, monkeypatch):
    """Through nnU-Net's own training loop (the harness trainer's train_step)."""
    for key, value in {"nnUNet_n_proc_DA": "0", "nnUNet_def_n_proc": "1", "OMP_NUM_THREADS": "1"}.items():
        monkeypatch.setenv(key, value)
    write_tiny_dataset(tmp_path / "data" / "Seg")
    task_file = tmp_path / "registry" / "Div.yaml"
    task_file.parent.mkdir()
    task_file.write_text(
        yaml.safe_dump(
            {
                "name": "Div",
                "type": "segmentation",
                "dataset": "../data/Seg",
                "folds": [0],
                "num_folds": 2,
                "patch_size": {"PrimusM": [32, 32, 32]},
                "schedule": {
                    "PrimusM": {
                        "epochs": 3,
                        "iterations_per_epoch": 4,
                        "val_iterations_per_epoch": 1,
                        "batch_size": 1,
                        "warmup_epochs": 0,
                        "from_scratch_lr": 1e36,
                    }
                },
                "test_time_mirroring": False,
            }
        )
    )
    state, log = _run_to_failure(task_file, "PrimusM", tmp_path / "results")
    assert state.error_class == DIVERGED, state.message
    assert "epoch 3/3" not in log
    assert "iteration" in state.message and "(the training diverged)" in state.message
