"""End to end through the real nnunetv2 path on the toy tasks: preprocessing, the harness trainer
(reference network + transferred encoder), training, sliding-window prediction, per-case scores.

Each fine-tuning run costs one to two minutes of CPU at the toy schedule, so the suite runs a
handful: a ResEnc-L submission, a Primus-M submission on the two-channel task, and a from-scratch
baseline. The weight-transfer assertions build the network through the trainer without training.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
import torch

from harness.finetune.run import run_finetune_job
from harness.finetune.segmentation import CONFIGURATION, nnunet_paths, prepare_dataset, run_plans
from harness.tasks import load_registry

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def toy(module_dir, monkeypatch_module, toy_data):
    """The bundled toy registry, copied beside a copy of the session's toy data (same relative layout)."""
    root = module_dir("toy")
    shutil.copytree(REPO / "task_registry" / "toy", root / "task_registry" / "toy")
    shutil.copytree(toy_data, root / "data" / "toy")
    monkeypatch_module.setenv("nnUNet_n_proc_DA", "0")
    monkeypatch_module.setenv("nnUNet_def_n_proc", "1")
    return {"tasks": load_registry(root / "task_registry" / "toy"), "results": root / "results"}


@pytest.fixture(scope="module")
def monkeypatch_module():
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


def _trainer_with_loaded_weights(toy, task_name: str, submission_path: Path, recipe=None):
    """The harness trainer, initialized (network built, pre-trained weights loaded), not trained."""
    from harness.finetune.nnunet_trainer import SSL3DFinetuneTrainer
    from harness.recipes import SSL3D_2025
    from harness.submission import load_submission

    recipe = recipe or SSL3D_2025
    task = toy["tasks"][task_name]
    sub = load_submission(submission_path)
    prepared = prepare_dataset(task, toy["results"], recipe.part("segmentation"))
    schedule = task.schedule_for(sub.track, recipe)
    plans = run_plans(prepared, task.patch_for(sub.track), schedule.batch_size)
    plans["continue_training"] = False
    work = toy["results"] / "scratch" / f"{task_name}-{sub.track}"
    with nnunet_paths(raw=prepared.raw, preprocessed=prepared.preprocessed, results=work):
        trainer = SSL3DFinetuneTrainer(plans, CONFIGURATION, 0, prepared.dataset_json, torch.device("cpu"))
        trainer.configure_finetuning(
            track=sub.track, schedule=schedule, submission=sub, recipe=recipe.part("segmentation")
        )
        trainer.initialize()
    return trainer, sub


def test_resencl_encoder_loaded_decoder_random(toy, resencl_checkpoint):
    trainer, sub = _trainer_with_loaded_weights(toy, "ToySegOneChannel", resencl_checkpoint)
    net = trainer.network.state_dict()
    encoder_keys = [k for k in net if k.startswith(("encoder.stem.", "encoder.stages."))]
    assert len(encoder_keys) > 200
    for k in encoder_keys:
        assert torch.equal(net[k], sub.weights[k].float()), k
    decoder_keys = [k for k in net if k.startswith("decoder.stages.") and net[k].shape == sub.weights[k].shape]
    assert decoder_keys, "the example submission carries a decoder of the same shapes"
    # convolution weights are randomly initialised (norm layers start at 1/0 either way)
    conv_weights = [k for k in decoder_keys if net[k].ndim == 5]
    assert conv_weights and not any(torch.equal(net[k], sub.weights[k].float()) for k in conv_weights)
    assert trainer.transfer_report.loaded_keys == len([k for k in sub.weights if k.startswith("encoder.")])
    assert trainer.enable_deep_supervision is False


@pytest.mark.parametrize("recipe_name, order", [("ssl3d-2025", "as-is"), ("ssl3d-2025-lossless", "nnssl")])
def test_primus_two_channel_in_projection_and_pos_embed(toy, primus_checkpoint, recipe_name, order):
    from harness.models import interpolate_pos_embed
    from harness.models.primus import PrimusNnsslOrder
    from harness.recipes import get_recipe

    trainer, sub = _trainer_with_loaded_weights(toy, "ToySegTwoChannel", primus_checkpoint, get_recipe(recipe_name))
    net = trainer.network.state_dict()
    assert isinstance(trainer.network, PrimusNnsslOrder) == (order == "nnssl")
    w = sub.weights["down_projection.proj.weight"]
    assert net["down_projection.proj.weight"].shape[1] == 2
    assert torch.allclose(net["down_projection.proj.weight"], w.repeat(1, 2, 1, 1, 1) / 2)
    expected = interpolate_pos_embed(sub.weights["eva.pos_embed"], (20, 20, 20), (4, 4, 4))  # copied, resized
    assert torch.allclose(net["eva.pos_embed"], expected)
    for k in (k for k in net if k.startswith("eva.blocks.")):
        assert torch.equal(net[k], sub.weights[k]), k
    assert not torch.equal(
        net["up_projection.decode.0.0.weight"][:1], sub.weights["up_projection.decode.0.0.weight"][:1]
    )
    assert trainer.transfer_report.in_proj_repeated and trainer.transfer_report.token_order == order


def _check_run(metrics: dict, results: Path, entry: str, task: str, n_cases: int, labels: list[int]) -> pd.DataFrame:
    run = results / "runs" / entry / task / "ssl3d-2025" / "fold_0"
    assert (run / "DONE").is_file()
    assert not (run / "work").exists(), "the fine-tuned checkpoint is dropped once the run is done"
    cases = pd.read_csv(run / "cases.csv")
    assert list(cases.columns) == ["case", "label", "dice", "nsd", "ref_voxels", "pred_voxels"]
    assert len(cases) == n_cases * len(labels)
    assert sorted(cases["label"].unique()) == labels
    assert cases["ref_voxels"].gt(0).all()
    assert cases[["dice", "nsd"]].apply(lambda c: c.between(0, 1)).all().all()
    on_disk = json.loads((run / "metrics.json").read_text())
    assert on_disk == metrics
    for key in ("harness", "torch", "nnunetv2"):
        assert on_disk["provenance"]["versions"][key]
    assert on_disk["task_spec_hash"] and on_disk["seed"] == 0 and on_disk["device"] == "cpu"
    assert [m["name"] for m in on_disk["ranking_metrics"]] == ["dice", "nsd"]
    assert "Epoch 0" in (run / "train.log").read_text()
    return cases


def test_resencl_submission_finetunes_predicts_and_scores(toy, resencl_checkpoint):
    from harness.submission import load_submission

    sha = load_submission(resencl_checkpoint).sha256
    metrics = run_finetune_job(
        task=toy["tasks"]["ToySegOneChannel"],
        fold=0,
        track="ResEncL",
        results=toy["results"],
        submission=resencl_checkpoint,
        submission_sha256=sha,
        device="cpu",
    )
    _check_run(metrics, toy["results"], "ResEncL", "ToySegOneChannel", n_cases=3, labels=[1, 2])
    assert metrics["submission_sha256"] == sha
    assert metrics["transfer"]["loaded_keys"] > 200 and "primus_token_order" not in metrics["recipe_values"]
    assert metrics["initial_lr"] == toy["tasks"]["ToySegOneChannel"].schedule_for("ResEncL").lr
    assert metrics["recipe"] == "ssl3d-2025" and metrics["use_mask_for_norm"] is not None
    # reported means as the organizers take them: per label over cases, then over labels
    per_label = metrics["aggregates"]["dice"]["per_label"]
    assert metrics["aggregates"]["dice"]["mean"] == pytest.approx(sum(per_label.values()) / len(per_label))


def test_primus_submission_on_two_channel_task(toy, primus_checkpoint):
    metrics = run_finetune_job(
        task=toy["tasks"]["ToySegTwoChannel"],
        fold=0,
        track="PrimusM",
        results=toy["results"],
        submission=primus_checkpoint,
        device="cpu",
    )
    _check_run(metrics, toy["results"], "PrimusM", "ToySegTwoChannel", n_cases=3, labels=[1])
    assert metrics["transfer"]["in_proj_repeated"] and metrics["transfer"]["input_channels"] == 2
    assert metrics["transfer"]["pos_embed_from_grid"] == [20, 20, 20]
    assert metrics["transfer"]["pos_embed_to_grid"] == [4, 4, 4]


def test_from_scratch_baseline_reuses_preprocessing(toy):
    task = toy["tasks"]["ToySegTwoChannel"]
    first = prepare_dataset(task, toy["results"])  # already prepared by the test above, or now
    metrics = run_finetune_job(task=task, fold=0, track="PrimusM", results=toy["results"], device="cpu")
    _check_run(metrics, toy["results"], "baseline-PrimusM", "ToySegTwoChannel", n_cases=3, labels=[1])
    assert metrics["is_baseline"] and metrics["transfer"] is None
    assert metrics["initial_lr"] == task.schedule_for("PrimusM").from_scratch_lr
    assert metrics["preprocessed"] == str(first.root)
    log = (
        toy["results"] / "runs" / "baseline-PrimusM" / "ToySegTwoChannel" / "ssl3d-2025" / "fold_0" / "train.log"
    ).read_text()
    assert "reusing preprocessed ToySegTwoChannel" in log and "preprocessing ToySegTwoChannel" not in log.replace(
        "reusing preprocessed ToySegTwoChannel", ""
    )


def test_a_submission_changed_since_planning_is_refused(toy, resencl_checkpoint):
    from harness.finetune.job import FinetuneJob, RunLog, load_job_submission

    job = FinetuneJob(
        task=toy["tasks"]["ToySegOneChannel"],
        fold=0,
        track="ResEncL",
        results=toy["results"],
        submission=resencl_checkpoint,
        submission_sha256="0" * 64,
    )
    with pytest.raises(
        ValueError, match=r"differs from the job's 0{64} \(the file changed since the job was planned\)"
    ):
        load_job_submission(job, RunLog(toy["results"] / "sha-check.log", echo=False))
    wrong_track = FinetuneJob(
        task=job.task, fold=0, track="PrimusM", results=toy["results"], submission=resencl_checkpoint
    )
    with pytest.raises(ValueError, match="the submission is for track ResEncL, the job for PrimusM"):
        load_job_submission(wrong_track, RunLog(toy["results"] / "sha-check.log", echo=False))
