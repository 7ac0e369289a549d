"""Classification checkpoints: a job killed at an epoch boundary resumes from its scratch folder and
ends exactly where an uninterrupted run ends; checkpoints of other jobs, and unreadable ones, are
logged and ignored.

A kill is simulated by a log hook that raises a ``BaseException`` (which ``run_logged`` does not
catch, as it cannot catch SIGKILL) on the ``epoch 1/`` line, which is written after the epoch's
checkpoint. The resumed attempt starts from freshly built models and scrambled global generators,
as a new process would.
"""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

import harness.finetune.classification.train as train_module
import harness.finetune.job as job_module
from harness.finetune.classification import load_cases, run_classification
from harness.finetune.classification.augment import build_augmentation
from harness.finetune.classification.checkpoint import CHECKPOINT_FILE, checkpoint_path
from harness.finetune.classification.data import preprocess_task, split_cases
from harness.finetune.classification.trainer import ClassifierTrainer, TrainingCases
from harness.finetune.job import FinetuneJob, RunLog
from harness.recipes import ClassificationAugmentation, ClassificationSchedule
from harness.tasks import load_task_file

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.interface` is deprecated:FutureWarning")

REPO = Path(__file__).resolve().parents[1]
TOY_YAML = REPO / "task_registry" / "toy" / "toy_cls_shape.yaml"
PATCH = (32, 32, 32)
#: The job test: 2 epochs of 2 batches of 2 from a running pool (12 training cases: the pool
#: carries over), dropout (torch's generator) and the toy task's default augmentation (numpy's).
#: Short because a PrimusM checkpoint (weights and AdamW moments) is 1.7 GB.
TWO_EPOCHS = {
    "PrimusM": {"epochs": 2, "iterations_per_epoch": 2, "batch_size": 2, "gradient_accumulation": 1, "warmup_epochs": 1}
}


class Killed(BaseException):
    """Stands in for SIGKILL: not an ``Exception``, so nothing logs or handles it."""


@pytest.fixture(scope="module", autouse=True)
def _threads():
    """One intra-op thread: the comparisons are bitwise, and with several threads the BLAS may
    split a reduction differently when the machine is busy (seen in CI: 1e-8 apart)."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def task(module_dir, toy_data):
    """The toy classification task (data at ``root/data/toy``) with the two-epoch schedule."""
    root = module_dir("toy")
    shutil.copytree(toy_data, root / "data" / "toy")
    data = yaml.safe_load(TOY_YAML.read_text())
    data["schedule"] = TWO_EPOCHS
    path = root / "task_registry" / "resume" / "toy_cls_resume.yaml"
    path.parent.mkdir(parents=True)
    path.write_text(yaml.safe_dump(data))
    return load_task_file(path)


@pytest.fixture(scope="module")
def cache_and_ids(task, module_dir):
    """A preprocessed cache of the 5 cases the ``ClassifierTrainer`` tests train on (only those)."""
    cases = load_cases(task)[:5]
    cache = preprocess_task(task, cases, PATCH, module_dir("results"))
    return cache, [c.case_id for c in cases], [c.label_index for c in cases]


def scramble_global_rngs() -> None:
    """What a fresh process that built its model would have: anything but the killed run's state."""
    random.seed(12345)
    np.random.seed(12345)
    torch.manual_seed(12345)


class Recorder:
    """A log hook: keeps the lines; raises ``Killed`` on the first line containing ``kill_on``."""

    def __init__(self, kill_on: str | None = None):
        self.lines: list[str] = []
        self.kill_on = kill_on

    def __call__(self, message: str) -> None:
        self.lines.append(message)
        if self.kill_on is not None and self.kill_on in message:
            raise Killed(message)

    def epochs(self) -> list[str]:
        return [m.split(" loss ")[0] for m in self.lines if m.startswith("epoch ")]


# ----------------------------------------------------------------------------- ClassifierTrainer
SCHEDULE = ClassificationSchedule(
    epochs=3, iterations_per_epoch=2, batch_size=2, gradient_accumulation=1, warmup_epochs=1, dropout=0.5
)


def tiny_model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Dropout(0.5), torch.nn.Linear(32**3, 2))


def train(cache_and_ids, log, checkpoint=None, job_id="job-a", schedule=SCHEDULE):
    """``ClassifierTrainer`` on a freshly built model; returns (model, summary)."""
    cache, ids, labels = cache_and_ids
    model = tiny_model()
    aug = ClassificationAugmentation(gaussian_noise_p=1.0, rotation_p=0.0, scale_p=0.0, mirror_axes=(0, 1, 2))
    summary = ClassifierTrainer(
        model,
        TrainingCases(cache, ids, labels, build_augmentation(aug, PATCH)),
        schedule,
        1e-3,
        torch.device("cpu"),
        seed=7,
        log=log,
        checkpoint=checkpoint,
        job_id=job_id,
    ).run()
    return model, summary


def assert_same_weights(a, b) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key


def test_resume_after_kill_gives_the_uninterrupted_weights(cache_and_ids, tmp_path):
    scramble_global_rngs()
    reference, ref_summary = train(cache_and_ids, Recorder(), tmp_path / "ref" / "ckpt.pt")
    ckpt = tmp_path / "run" / "ckpt.pt"
    scramble_global_rngs()
    with pytest.raises(Killed):
        train(cache_and_ids, Recorder(kill_on="epoch 1/3"), ckpt)
    saved = torch.load(ckpt, weights_only=True)
    assert saved["epoch"] == 1 and saved["job_id"] == "job-a" and len(saved["rng"]["pool"]) == 1
    assert not list(ckpt.parent.glob("*.tmp"))  # written atomically, nothing left beside it
    scramble_global_rngs()
    log = Recorder()
    resumed, summary = train(cache_and_ids, log, ckpt)
    assert f"resuming from {ckpt} at epoch 1/3" in log.lines
    assert log.epochs() == ["epoch 2/3", "epoch 3/3"]
    assert_same_weights(resumed, reference)
    assert summary["optimizer_steps"] == ref_summary["optimizer_steps"] == 6
    assert summary["lr_per_epoch"] == ref_summary["lr_per_epoch"]
    assert summary["final_epoch_loss"] == ref_summary["final_epoch_loss"]
    assert summary["resumed_from_epoch"] == 1 and ref_summary["resumed_from_epoch"] is None
    # the global generators go on as after an uninterrupted run (the code after training draws on)
    assert torch.equal(torch.get_rng_state(), torch.load(ckpt, weights_only=True)["rng"]["torch"])


def test_finished_training_goes_straight_to_prediction(cache_and_ids, tmp_path):
    ckpt = tmp_path / "ckpt.pt"
    first, first_summary = train(cache_and_ids, Recorder(), ckpt)
    log = Recorder()
    again, summary = train(cache_and_ids, log, ckpt)
    assert log.epochs() == [] and f"resuming from {ckpt} at epoch 3/3: training is finished" in log.lines
    assert_same_weights(again, first)
    assert summary["optimizer_steps"] == 6 and summary["lr_per_epoch"] == first_summary["lr_per_epoch"]


def test_checkpoint_of_another_job_is_not_resumed(cache_and_ids, tmp_path):
    ckpt = tmp_path / "ckpt.pt"
    scramble_global_rngs()
    with pytest.raises(Killed):
        train(cache_and_ids, Recorder(kill_on="epoch 2/3"), ckpt, job_id="job-a")
    scramble_global_rngs()
    fresh, _ = train(cache_and_ids, Recorder(), None, job_id="job-b")
    scramble_global_rngs()
    log = Recorder()
    other, summary = train(cache_and_ids, log, ckpt, job_id="job-b")
    assert (
        f"ignoring the checkpoint {ckpt}: it belongs to job job-a, this is job job-b; training from the start"
        in log.lines
    )
    assert log.epochs() == ["epoch 1/3", "epoch 2/3", "epoch 3/3"] and summary["resumed_from_epoch"] is None
    assert_same_weights(other, fresh)
    assert torch.load(ckpt, weights_only=True)["job_id"] == "job-b"  # overwritten by this job's own
    # a checkpoint of another schedule (same job id) is not resumed either
    log = Recorder()
    train(cache_and_ids, log, ckpt, job_id="job-b", schedule=SCHEDULE.model_copy(update={"epochs": 4}))
    assert any("3 of 3 epochs done, the schedule has 4" in m for m in log.lines)
    assert log.epochs()[0] == "epoch 1/4"


class _Planted:
    """A pickled object that, if ever unpickled, leaves a file behind."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_corrupt_checkpoint_is_ignored_with_a_log_line(cache_and_ids, tmp_path):
    ckpt = tmp_path / "ckpt.pt"
    train(cache_and_ids, Recorder(), ckpt)
    scramble_global_rngs()
    fresh, _ = train(cache_and_ids, Recorder(), None)
    whole = ckpt.read_bytes()
    marker = tmp_path / "unpickled"
    planted = tmp_path / "planted.pt"
    torch.save({"format": "x", "payload": _Planted(marker)}, planted)
    for name, content in [
        ("truncated", whole[: len(whole) // 2]),
        ("garbage", b"not a checkpoint"),
        ("empty", b""),
        ("pickled object", planted.read_bytes()),
    ]:
        ckpt.write_bytes(content)
        scramble_global_rngs()
        log = Recorder()
        model, summary = train(cache_and_ids, log, ckpt)
        assert any(m.startswith(f"ignoring the checkpoint {ckpt}: unreadable (") for m in log.lines), name
        assert log.epochs() == ["epoch 1/3", "epoch 2/3", "epoch 3/3"], name
        assert_same_weights(model, fresh)
        assert torch.load(ckpt, weights_only=True)["epoch"] == 3, name  # replaced by a good one
    assert not marker.exists()  # never unpickled
    # readable but not ours: a dict of other things, a checkpoint with a broken part
    good = torch.load(ckpt, weights_only=True)
    for name, content in [
        ("a plain dict", {"epoch": 2}),
        ("broken rng", {**good, "rng": {**good["rng"], "numpy": {"name": "MT19937"}}}),
        ("other model", {**good, "model": {"w": torch.zeros(2)}}),
    ]:
        torch.save(content, ckpt)
        log = Recorder()
        model, _ = train(cache_and_ids, log, ckpt)
        assert any(m.startswith(f"ignoring the checkpoint {ckpt}: ") for m in log.lines), name
        assert log.epochs() == ["epoch 1/3", "epoch 2/3", "epoch 3/3"], name


# ----------------------------------------------------------------------------- the job
def _tiny_classifier(track, *, input_channels, num_classes, patch_size, dropout, **_):
    """Stands in for ``build_classifier``: the job's path with a 65k-parameter model."""
    n = input_channels * int(np.prod(patch_size))
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Dropout(dropout), torch.nn.Linear(n, num_classes)), None


@pytest.mark.parametrize(
    "model",
    [
        "tiny",
        # 2-4 minutes on two cores: PrimusM steps at 32^3 and four 1.7 GB checkpoints (weights + AdamW moments)
        pytest.param("PrimusM", marks=pytest.mark.slow),
    ],
)
def test_killed_job_resumes_and_predicts_as_an_uninterrupted_one(task, tmp_path, monkeypatch, model):
    """Through ``run_classification`` (PrimusM from scratch at 32^3, or a tiny stand-in model):
    the run's scratch folder holds the checkpoint of this job id; the resumed run's cases.csv
    equals an uninterrupted run's."""
    if model == "tiny":
        monkeypatch.setattr(train_module, "build_classifier", _tiny_classifier)
    fold = 0
    # two entries of one results folder: two run folders, one preprocessing cache
    uninterrupted = run_classification(
        FinetuneJob(task=task, fold=fold, track="PrimusM", results=tmp_path, entry="uninterrupted")
    )
    job = FinetuneJob(task=task, fold=fold, track="PrimusM", results=tmp_path, entry="killed")

    class KillingLog(RunLog):
        def __call__(self, message: str) -> None:
            super().__call__(message)
            if message.startswith("epoch 1/2"):
                raise Killed(message)

    with monkeypatch.context() as m:
        m.setattr(job_module, "RunLog", KillingLog)
        with pytest.raises(Killed):
            run_classification(job)
    ckpt = checkpoint_path(job.run.work_dir)
    assert (
        ckpt == job.run.work_dir / CHECKPOINT_FILE == job.run.path / "work" / "classification" / "checkpoint_latest.pt"
    )
    saved = torch.load(ckpt, weights_only=True)
    assert saved["job_id"] == job.job_id() and saved["epoch"] == 1 and not job.run.is_done()
    del saved

    resumed = run_classification(job)
    assert job.run.is_done() and not job.run.work_dir.exists()
    log = job.run.log.read_text()
    assert f"resuming from {ckpt} at epoch 1/2" in log
    assert log.count("epoch 1/2 loss") == 1 and log.count("epoch 2/2 loss") == 1
    assert resumed["training"]["resumed_from_epoch"] == 1
    for key in ("optimizer_steps", "final_epoch_loss", "lr_per_epoch"):
        assert resumed["training"][key] == uninterrupted["training"][key], key
    assert resumed["aggregates"] == uninterrupted["aggregates"]
    _, test_ids = split_cases(task, load_cases(task), fold)
    cases = {}
    for name, metrics in (("uninterrupted", uninterrupted), ("resumed", resumed)):
        folder = tmp_path / "runs" / metrics["entry"] / metrics["task"] / metrics["recipe"] / f"fold_{fold}"
        cases[name] = pd.read_csv(folder / "cases.csv")
    assert sorted(cases["uninterrupted"]["case"]) == sorted(test_ids)
    pd.testing.assert_frame_equal(cases["uninterrupted"], cases["resumed"], check_exact=True)


# ----------------------------------------------------------------------------- fixed reference
#: Accumulation 2 over 3 batches (a step after batch 2 and after the epoch's last), a gradient
#: clip, dropout and augmentation: every part of the training step.
REFERENCE_SCHEDULE = ClassificationSchedule(
    epochs=3,
    iterations_per_epoch=3,
    batch_size=2,
    gradient_accumulation=2,
    warmup_epochs=1,
    dropout=0.5,
    grad_clip=0.5,
    label_smoothing=0.1,
)


def test_fixed_seed_training_gives_the_recorded_losses_and_weights(cache_and_ids, tmp_path):
    """Numbers recorded from the training loop before it became ``ClassifierTrainer`` (and its
    step moved to ``harness.finetune.training_step``): a refactor that changes what is computed,
    or in which order the generators are drawn, changes them."""
    scramble_global_rngs()
    log = Recorder()
    model, summary = train(cache_and_ids, log, tmp_path / "ckpt.pt", schedule=REFERENCE_SCHEDULE)
    losses = [float(m.split(" loss ")[1].split()[0]) for m in log.lines if m.startswith("epoch ")]
    weight, bias = model[2].weight.detach().double(), model[2].bias.detach().double()
    observed = {
        "losses": losses,
        "final_epoch_loss": summary["final_epoch_loss"],
        "steps": summary["optimizer_steps"],
        "lrs": summary["lr_per_epoch"],
        "weight_sum": float(weight.sum()),
        "weight_abs_sum": float(weight.abs().sum()),
        "weight_head": [float(v) for v in weight[:, :3].flatten()],
        "bias": [float(v) for v in bias],
    }
    print(observed)
    assert observed["steps"] == REFERENCE["steps"] and observed["lrs"] == pytest.approx(REFERENCE["lrs"])
    assert observed["losses"] == pytest.approx(REFERENCE["losses"], abs=1e-4)
    for key in ("final_epoch_loss", "weight_sum", "weight_abs_sum", "weight_head", "bias"):
        assert observed[key] == pytest.approx(REFERENCE[key], rel=1e-5, abs=1e-7), key


REFERENCE: dict = {
    "losses": [0.9588, 0.8648, 1.5622],
    "final_epoch_loss": 1.5622230768203735,
    "steps": 6,
    "lrs": [0.0005, 0.001, 0.0005],
    "weight_sum": 0.17213195303702378,
    "weight_abs_sum": 196.28501213088566,
    "weight_head": [
        -0.0003601967473514378,
        0.0007487600087188184,
        -0.004337878432124853,
        0.002168523846194148,
        -0.0006566804950125515,
        0.0037849899381399155,
    ],
    "bias": [-0.006339354906231165, -0.0034494169522076845],
}
