"""Task registry: schema validation with errors naming the file and field, defaults per track,
the toy registry and toy data."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import yaml

from harness.tasks import TaskSpecError, load_registry, load_task_file
from harness.tasks.toy import TOY_SPACING, write_segmentation_dataset

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    return write_segmentation_dataset(
        root / "Seg",
        channel_names={"0": "T1"},
        labels={"background": 0, "a": 1},
        contrasts=[(1.0, 2.0)],
        n_train=2,
        n_test=1,
        seed=0,
    )


def _write(folder: Path, name: str, data: dict) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _seg(dataset: Path, **over) -> dict:
    return {"name": "T", "type": "segmentation", "dataset": str(dataset), **over}


def test_defaults_follow_the_challenge_schedules(tmp_path, dataset):
    task = load_task_file(_write(tmp_path, "t", _seg(dataset)))
    r, p = task.schedule_for("ResEncL"), task.schedule_for("PrimusM")
    assert (r.optimizer, r.lr, r.from_scratch_lr, r.weight_decay, r.momentum) == ("sgd", 1e-3, 1e-2, 3e-5, 0.99)
    assert (p.optimizer, p.lr, p.from_scratch_lr, p.weight_decay, p.betas, p.grad_clip) == (
        "adamw",
        1e-4,
        3e-4,
        5e-2,
        (0.9, 0.98),
        1.0,
    )
    assert (r.epochs, r.iterations_per_epoch, r.warmup_epochs) == (150, 250, 15)
    assert task.target_spacing == (1.0, 1.0, 1.0) and task.nsd_tolerance_mm == 1.0
    assert task.patch_for("PrimusM") == (160, 160, 160) and task.patch_for("ResEncL", (96, 96, 96)) == (96, 96, 96)


def test_override_merges_over_track_defaults(tmp_path, dataset):
    task = load_task_file(_write(tmp_path, "t", _seg(dataset, schedule={"PrimusM": {"epochs": 3}})))
    assert task.schedule_for("PrimusM").epochs == 3 and task.schedule_for("PrimusM").optimizer == "adamw"


@pytest.mark.parametrize(
    "over, message",
    [
        ({"schedul": {}}, "field 'schedul': unknown field"),
        ({"schedule": {"PrimusM": {"lr": -1}}}, "field 'schedule': PrimusM.lr: Input should be greater than 0"),
        ({"schedule": {"Primus": {}}}, "unknown track(s) ['Primus']"),
        ({"metrics": [{"name": "dise"}]}, "unknown metric 'dise' (did you mean 'dice'?)"),
        ({"patch_size": {"PrimusM": [30, 32, 32]}}, "patch embedding"),
        ({"folds": [5]}, "within 0..4"),
        ({"type": "regression"}, "field 'type': unknown task type 'regression'; known: segmentation, classification"),
        ({"type": None}, "field 'type': unknown task type None"),
    ],
)
def test_invalid_fields_name_the_file_and_field(tmp_path, dataset, over, message):
    path = _write(tmp_path, "bad", _seg(dataset, **over))
    with pytest.raises(TaskSpecError) as err:
        load_task_file(path)
    assert str(path) in str(err.value) and message in str(err.value)


def test_missing_data_path_names_field(tmp_path, dataset):
    path = _write(tmp_path, "t", _seg(tmp_path / "nowhere"))
    with pytest.raises(TaskSpecError, match=r"field 'dataset': folder .*nowhere does not exist"):
        load_task_file(path)
    shutil.copytree(dataset, tmp_path / "copy")
    shutil.rmtree(tmp_path / "copy" / "labelsTs")
    with pytest.raises(TaskSpecError, match="field 'test.labels'"):
        load_task_file(_write(tmp_path, "t2", _seg(tmp_path / "copy")))


def test_relative_paths_resolve_against_the_yaml_folder(tmp_path, dataset):
    reg = tmp_path / "reg"
    shutil.copytree(dataset, tmp_path / "d")
    task = load_task_file(_write(reg, "t", _seg("../d")))
    assert task.dataset_dir == (tmp_path / "d").resolve()


def test_registry_rejects_duplicates_broken_yaml_and_empty(tmp_path, dataset):
    a = _write(tmp_path / "r", "a", _seg(dataset))
    b = _write(tmp_path / "r", "b", _seg(dataset))
    with pytest.raises(TaskSpecError, match="defined twice") as err:
        load_registry(tmp_path / "r")
    assert str(a) in str(err.value) and str(b) in str(err.value)
    (tmp_path / "y").mkdir()
    (tmp_path / "y" / "x.yaml").write_text("name: [unclosed\n")
    with pytest.raises(TaskSpecError, match="not valid YAML"):
        load_registry(tmp_path / "y")
    (tmp_path / "empty").mkdir()
    with pytest.raises(TaskSpecError, match="no task files"):
        load_registry(tmp_path / "empty")


def test_spec_hash_changes_with_the_spec(tmp_path, dataset):
    h1 = load_task_file(_write(tmp_path, "t", _seg(dataset))).spec_hash()
    h2 = load_task_file(_write(tmp_path, "t", _seg(dataset))).spec_hash()
    h3 = load_task_file(_write(tmp_path, "t", _seg(dataset, schedule={"ResEncL": {"lr": 0.002}}))).spec_hash()
    assert h1 == h2 != h3


def test_toy_data_is_anisotropic_and_the_toy_registry_loads(tmp_path):
    root = tmp_path / "toy"
    shutil.copytree(REPO / "task_registry" / "toy", root / "task_registry" / "toy")
    out = subprocess.run(
        [sys.executable, "-m", "harness", "make-toy-data", "--out", str(root / "data" / "toy")],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert out.returncode == 0, out.stderr
    img = sitk.ReadImage(str(root / "data" / "toy" / "ToySegOneChannel" / "imagesTr" / "train_000_0000.nii.gz"))
    assert img.GetSpacing() == pytest.approx(TOY_SPACING) and len(set(img.GetSpacing())) == 2
    seg = sitk.GetArrayFromImage(
        sitk.ReadImage(str(root / "data" / "toy" / "ToySegOneChannel" / "labelsTr" / "train_000.nii.gz"))
    )
    assert set(np.unique(seg)) == {0, 1, 2}
    two = root / "data" / "toy" / "ToySegTwoChannel" / "imagesTr"
    assert (two / "train_000_0001.nii.gz").is_file()
    tasks = load_registry(root / "task_registry" / "toy")
    assert {"ToySegOneChannel", "ToySegTwoChannel"} <= set(tasks)
    listing = subprocess.run(
        [sys.executable, "-m", "harness", "tasks", "--tasks", str(root / "task_registry" / "toy")],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert listing.returncode == 0 and "ToySegTwoChannel" in listing.stdout and "segmentation" in listing.stdout


def test_classification_tasks_rank_by_the_registry_metrics_of_their_type():
    from harness.tasks.spec import _check_metric_name

    for name in ("auroc", "balanced_accuracy", "f1", "average_precision"):
        _check_metric_name(name, "classification")
    with pytest.raises(ValueError, match="'dice' is a segmentation metric"):
        _check_metric_name("dice", "classification")
    with pytest.raises(ValueError, match="did you mean 'auroc'"):
        _check_metric_name("aucroc", "classification")
