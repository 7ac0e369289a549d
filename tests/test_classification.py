"""Classification fine-tuning end to end on the toy task, plus its parts on hand-made inputs.

The toy data, the example submissions and the preprocessing cache are written once per module
(fixtures below); the end-to-end runs use a shortened copy of the shipped toy schedule so that
the whole file fits in a few minutes on two CPU cores.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
import torch
import yaml

from harness.finetune.cache import COMPLETE_MARKER
from harness.finetune.classification import ClassificationDataError, build_classifier, load_cases, run_classification
from harness.finetune.classification.augment import build_augmentation
from harness.finetune.classification.data import (
    cache_key,
    crop_or_pad,
    preprocess_task,
    read_labels,
    split_cases,
)
from harness.finetune.classification.trainer import lr_at_epoch, plan_steps
from harness.finetune.job import FinetuneJob
from harness.metrics.classification import (
    ClassificationMetricsError,
    score_classification,
)
from harness.models import interpolate_pos_embed
from harness.recipes import SSL3D_2025, SSL3D_2025_LOSSLESS, ClassificationAugmentation, ClassificationSchedule
from harness.runs import ResultsLayout
from harness.tasks import load_task_file
from harness.tasks.toy import write_toy_data
from harness.tasks.toy_classification import CASES_PER_CLASS, CLASSES, CLS_SHAPE

# dynamic-network-architectures' Primus imports timm, which uses a deprecated torch.jit API.
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.interface` is deprecated:FutureWarning")

REPO = Path(__file__).resolve().parents[1]
TOY_YAML = REPO / "task_registry" / "toy" / "toy_cls_shape.yaml"
#: A few optimizer steps per track: enough to run every part of the loop (accumulation, clipping,
#: warm-up, cosine), not to learn much.
FAST_SCHEDULE = {
    "ResEncL": {
        "epochs": 1,
        "iterations_per_epoch": 2,
        "batch_size": 1,
        "gradient_accumulation": 2,
        "warmup_epochs": 0,
        "grad_clip": 1.0,
    },
    "PrimusM": {
        "epochs": 2,
        "iterations_per_epoch": 1,
        "batch_size": 2,
        "gradient_accumulation": 1,
        "warmup_epochs": 1,
    },
}


@pytest.fixture(scope="module", autouse=True)
def _threads():
    old = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(old)


def write_task(root: Path, file_name: str, **override):
    """A copy of the shipped toy YAML with ``override`` applied, at ``root/task_registry/<x>/``
    so that its relative data paths (``../../data/toy/...``) resolve to ``root/data/toy``."""
    data = yaml.safe_load(TOY_YAML.read_text())
    data.update(override)
    path = root / "task_registry" / "variants" / f"{file_name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data))
    return load_task_file(path)


@pytest.fixture(scope="module")
def toy_root(module_dir) -> Path:
    """``root/data/toy/*`` written by ``write_toy_data`` and ``root/task_registry/toy/toy_cls_shape.yaml``."""
    root = module_dir("toy")
    written = write_toy_data(root / "data" / "toy")
    assert root / "data" / "toy" / CLS_SHAPE in written
    (root / "task_registry" / "toy").mkdir(parents=True)
    shutil.copy(TOY_YAML, root / "task_registry" / "toy" / TOY_YAML.name)
    return root


@pytest.fixture(scope="module")
def fast_task(toy_root):
    return write_task(toy_root, "fast", schedule=FAST_SCHEDULE)


@pytest.fixture(scope="module")
def results(module_dir) -> Path:
    return module_dir("results")


@pytest.fixture(scope="module")
def submissions(resencl_checkpoint, primus64_checkpoint) -> dict[str, Path]:
    """The session's example submissions (conftest.py): ResEnc-L, and Primus-M pre-trained at 64^3."""
    return {"ResEncL": resencl_checkpoint, "PrimusM": primus64_checkpoint}


@pytest.fixture(scope="module")
def loaded(submissions):
    """``loaded(track)``: ``load_submission`` of that track's example, once per module (the
    tests below only read its weights)."""
    from harness.submission import load_submission

    done = {}

    def load(track: str):
        if track not in done:
            done[track] = load_submission(submissions[track])
        return done[track]

    return load


@pytest.fixture
def dataset_copy(toy_root, tmp_path) -> Path:
    """A private copy of the toy classification data under ``tmp_path/data/toy`` (for breaking it)."""
    dst = tmp_path / "data" / "toy" / CLS_SHAPE
    shutil.copytree(toy_root / "data" / "toy" / CLS_SHAPE, dst)
    return dst


def run_dir(results: Path, metrics: dict) -> Path:
    return results / "runs" / metrics["entry"] / metrics["task"] / metrics["recipe"] / f"fold_{metrics['fold']}"


def check_run_folder(results: Path, metrics: dict, task, test_ids: list[str]) -> pd.DataFrame:
    folder = run_dir(results, metrics)
    assert (folder / "DONE").is_file() and not (folder / "FAILED").exists()
    assert not (folder / "work").exists()
    on_disk = json.loads((folder / "metrics.json").read_text())
    assert on_disk["classes"] == list(task.classes)
    assert [m["name"] for m in on_disk["ranking_metrics"]] == [m.name for m in task.metrics]
    for name in ("auroc", "balanced_accuracy", "f1", "average_precision"):
        assert name in on_disk["aggregates"]
    cases = pd.read_csv(folder / "cases.csv")
    assert list(cases.columns) == ["case", "true_label", "pred_label"] + [f"prob_{c}" for c in task.classes]
    assert sorted(cases["case"]) == sorted(test_ids)
    probs = cases[[f"prob_{c}" for c in task.classes]].to_numpy()
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    assert (cases["pred_label"] == [task.classes[k] for k in probs.argmax(axis=1)]).all()
    labels = read_labels(task.labels_csv, task.classes)
    assert (cases["true_label"] == [labels[c] for c in cases["case"]]).all()
    log = (folder / "train.log").read_text()
    assert "epoch 1/" in log and "loss" in log and " lr " in log
    return cases


# ----------------------------------------------------------------------------- toy task
def test_toy_dataset_and_yaml(toy_root):
    task = load_task_file(toy_root / "task_registry" / "toy" / TOY_YAML.name)
    assert task.type == "classification" and task.classes == CLASSES
    assert task.folds.k == 3 and task.patch_size == {"ResEncL": (64, 64, 64), "PrimusM": (32, 32, 32)}
    assert all(task.schedule_for(t).batch_size == 2 for t in ("ResEncL", "PrimusM"))
    cases = load_cases(task)
    assert len(cases) == 2 * CASES_PER_CLASS
    assert sorted(c.label for c in cases) == sorted(list(CLASSES) * CASES_PER_CLASS)
    img = sitk.ReadImage(str(cases[0].images[0]))
    assert img.GetSpacing() == pytest.approx((1.2, 1.2, 2.5))  # anisotropic, like the segmentation toy data
    # the classes differ inside the mask: the sphere is brighter than the tissue, the cube darker
    means = {c: [] for c in CLASSES}
    for case in cases:
        image = sitk.GetArrayFromImage(sitk.ReadImage(str(case.images[0])))
        mask = sitk.GetArrayFromImage(sitk.ReadImage(str(case.mask))) > 0
        assert mask.sum() > 100
        means[case.label].append(image[mask].mean())
    assert min(means["sphere"]) > max(means["cube"])


def test_folds_partition_the_cases(fast_task):
    cases = load_cases(fast_task)
    seen = []
    for fold in fast_task.fold_ids:
        train, test = split_cases(fast_task, cases, fold)
        assert not set(train) & set(test) and len(train) + len(test) == len(cases)
        assert split_cases(fast_task, cases, fold) == (train, test)  # deterministic
        seen += test
    assert sorted(seen) == sorted(c.case_id for c in cases)
    with pytest.raises(ClassificationDataError, match="fold 3 is outside 0..2"):
        split_cases(fast_task, cases, 3)


# ----------------------------------------------------------------------------- preprocessing
def test_preprocessing_cache_resample_centre_and_reuse(fast_task, results):
    cases = load_cases(fast_task)
    patch = (32, 32, 32)
    cache = preprocess_task(fast_task, cases, patch, results)
    assert (cache.path / COMPLETE_MARKER).is_file()
    assert cache.path.parent == results / "cache" / "classification" / fast_task.name
    info = {i["case"]: i for i in cache.info()["cases"]}
    # 24 x 48 x 48 voxels of 2.5 x 1.2 x 1.2 mm resampled to 1 mm: 60 x 58 x 58 (z, y, x)
    assert info[cases[0].case_id]["resampled_shape"] == [60, 58, 58]
    for case in cases:
        arr = cache.array(case.case_id)
        assert arr.shape == (1, *patch) and arr.dtype == np.float32
        assert info[case.case_id]["centred_on"] == "mask centre of mass"
        # z-scored over the whole crop, after the voxels outside the mask were set to 0
        assert abs(float(arr.mean())) < 1e-4 and float(arr.std()) == pytest.approx(1.0, abs=1e-3)
        # the structure is centred: the patch centre is inside the mask, never the zeroed outside
        outside = float(arr[0, 0, 0, 0])
        assert float(arr[0, 14:18, 14:18, 14:18].min()) != outside
    # a second call reuses the folder without rewriting it
    stamp = (cache.path / COMPLETE_MARKER).stat().st_mtime_ns
    again = preprocess_task(fast_task, cases, patch, results)
    assert again.path == cache.path and (cache.path / COMPLETE_MARKER).stat().st_mtime_ns == stamp
    # another patch is another folder (the key has the patch: test_cache_key_follows_the_data_files)
    other = ResultsLayout(results).classification_cache(fast_task.name, cache_key(fast_task, cases, (64, 64, 64)))
    assert other != cache.path and other.parent == cache.path.parent
    # a patch larger than the resampled volume (60 x 58 x 58) is padded; three cases show it
    padded = preprocess_task(fast_task, cases[:3], (64, 64, 64), results)
    assert padded.path != cache.path and (padded.path / COMPLETE_MARKER).is_file()
    for case in cases[:3]:
        arr = padded.array(case.case_id)
        assert arr.shape == (1, 64, 64, 64) and np.isfinite(arr).all()


def test_cache_key_follows_the_data_files(fast_task, dataset_copy, tmp_path):
    task = write_task(tmp_path, "copy")
    cases = load_cases(task)
    key = cache_key(task, cases, (32, 32, 32))
    assert cache_key(task, cases, (32, 32, 32)) == key
    assert cache_key(task, cases, (64, 64, 64)) != key
    img = cases[0].images[0]
    st = img.stat()
    import os

    os.utime(img, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert cache_key(task, cases, (32, 32, 32)) != key


def test_incomplete_cache_is_rebuilt(dataset_copy, tmp_path):
    task = write_task(tmp_path, "copy")
    cases = load_cases(task)[:3]  # a cache of three cases is a cache all the same
    key = cache_key(task, cases, (32, 32, 32))
    stale = tmp_path / "res" / "cache" / "classification" / task.name / key
    stale.mkdir(parents=True)
    (stale / "junk.npy").write_bytes(b"half written")
    cache = preprocess_task(task, cases, (32, 32, 32), tmp_path / "res")
    assert cache.path == stale and (stale / COMPLETE_MARKER).is_file() and not (stale / "junk.npy").exists()


def test_crop_or_pad_by_hand():
    vol = np.arange(2 * 4 * 5 * 6, dtype=np.float32).reshape(2, 4, 5, 6)
    out = crop_or_pad(vol, (2, 2, 3), (4, 5, 6))  # centred: the whole volume
    np.testing.assert_array_equal(out, vol)
    out = crop_or_pad(vol, (0, 0, 0), (2, 2, 2))  # at a corner: one voxel in, the rest padding
    assert out.shape == (2, 2, 2, 2)
    np.testing.assert_array_equal(out[:, 1, 1, 1], vol[:, 0, 0, 0])
    assert out[:, 0].sum() == 0 and out[:, :, 0].sum() == 0
    out = crop_or_pad(vol, (2, 2, 3), (8, 9, 10))  # larger than the volume: zero border
    np.testing.assert_array_equal(out[:, 2:6, 2:7, 2:8], vol)
    assert out.sum() == vol.sum()


# ----------------------------------------------------------------------------- bad inputs
def test_unknown_label_names_case_and_file(dataset_copy, tmp_path):
    labels = dataset_copy / "labels.csv"
    text = labels.read_text().replace("case_004,sphere", "case_004,spehre")
    labels.write_text(text)
    task = write_task(tmp_path, "copy")
    with pytest.raises(ClassificationDataError) as e:
        load_cases(task)
    msg = str(e.value)
    assert "case_004" in msg and "'spehre'" in msg and str(labels) in msg and "sphere" in msg
    # through the runner: the error surfaces and is written to the run's log
    job = FinetuneJob(task=task, fold=0, track="PrimusM", results=tmp_path / "res")
    with pytest.raises(ClassificationDataError, match="case_004"):
        run_classification(job)
    assert "FAILED: ClassificationDataError" in job.run.log.read_text()
    assert not job.run.is_done()


def test_case_without_image_names_case(dataset_copy, tmp_path):
    (dataset_copy / "imagesTr" / "case_007_0000.nii.gz").unlink()
    task = write_task(tmp_path, "copy")
    with pytest.raises(ClassificationDataError, match=r"case 'case_007'.*case_007_0000\.nii\.gz"):
        load_cases(task)


def test_missing_second_channel_names_case(dataset_copy, tmp_path):
    for img in (dataset_copy / "imagesTr").glob("*_0000.nii.gz"):
        if not img.name.startswith("case_002_"):
            shutil.copy(img, img.with_name(img.name.replace("_0000", "_0001")))
    task = write_task(tmp_path, "copy", num_channels=2)
    with pytest.raises(ClassificationDataError, match=r"case 'case_002'.*case_002_0001\.nii\.gz.*2 channel"):
        load_cases(task)


def test_wrong_dimensionality_names_case(dataset_copy, tmp_path):
    img2d = sitk.GetImageFromArray(np.ones((30, 40), np.float32))
    sitk.WriteImage(img2d, str(dataset_copy / "imagesTr" / "case_011_0000.nii.gz"))
    task = write_task(tmp_path, "copy")
    with pytest.raises(ClassificationDataError, match=r"case 'case_011'.*case_011_0000\.nii\.gz.*2D.*3D volume"):
        load_cases(task)


def test_duplicate_case_and_bad_header(dataset_copy, tmp_path):
    labels = dataset_copy / "labels.csv"
    labels.write_text(labels.read_text() + "case_003,cube\n")
    task = write_task(tmp_path, "copy")
    with pytest.raises(ClassificationDataError, match=r"case 'case_003' is listed twice \(lines 5 and 20\)"):
        load_cases(task)
    labels.write_text("case,diagnosis\ncase_000,sphere\n")
    with pytest.raises(ClassificationDataError, match="needs the columns case_id,label"):
        load_cases(task)


def test_mask_on_another_grid_and_missing_mask(dataset_copy, tmp_path):
    small = sitk.GetImageFromArray(np.ones((4, 4, 4), np.uint8))
    sitk.WriteImage(small, str(dataset_copy / "masksTr" / "case_001.nii.gz"))
    task = write_task(tmp_path, "copy")
    with pytest.raises(ClassificationDataError, match=r"case 'case_001': mask case_001\.nii\.gz has size"):
        load_cases(task)
    (dataset_copy / "masksTr" / "case_001.nii.gz").unlink()
    with pytest.raises(ClassificationDataError, match=r"case 'case_001': no mask file"):
        load_cases(task)


def test_unlabelled_test_case_is_an_error(toy_root, tmp_path):
    shutil.copytree(toy_root / "data", tmp_path / "data")
    task = write_task(tmp_path, "explicit", test_cases=["case_000", "case_999"])
    with pytest.raises(ClassificationDataError, match=r"\['case_999'\] are not labelled"):
        load_cases(task)


# ----------------------------------------------------------------------------- model and transfer
def test_resencl_encoder_equals_submission(loaded):
    sub = loaded("ResEncL")
    model, report = build_classifier(
        "ResEncL",
        input_channels=1,
        num_classes=2,
        patch_size=(64, 64, 64),
        dropout=0.2,
        recipe=SSL3D_2025.part("classification"),
        weights=sub.weights,
        pretrain_patch_size=sub.pretrain_patch_size,
    )
    state = model.state_dict()
    encoder = {k: v for k, v in state.items() if k.startswith("encoder.")}
    assert report.loaded_keys > 0 and len(encoder) > 400
    for key, value in encoder.items():
        assert torch.equal(value, sub.weights[key].float()), key
    assert set(state) - set(encoder) == {"head.weight", "head.bias"}
    assert model(torch.zeros(1, 1, 64, 64, 64)).shape == (1, 2)


@pytest.mark.parametrize("recipe", [SSL3D_2025, SSL3D_2025_LOSSLESS], ids=lambda r: r.name)
def test_primus_encoder_equals_submission_after_adaptation(loaded, recipe):
    sub = loaded("PrimusM")
    model, report = build_classifier(
        "PrimusM",
        input_channels=1,
        num_classes=2,
        patch_size=(32, 32, 32),
        dropout=0.0,
        recipe=recipe.part("classification"),
        weights=sub.weights,
        pretrain_patch_size=sub.pretrain_patch_size,
    )
    state = model.state_dict()
    assert report.pos_embed_from_grid == (8, 8, 8) and report.pos_embed_to_grid == (4, 4, 4)
    expected_lpe = interpolate_pos_embed(sub.weights["eva.pos_embed"].float(), (8, 8, 8), (4, 4, 4))
    torch.testing.assert_close(state["eva.pos_embed"], expected_lpe)
    compared = 0
    for key, value in state.items():
        if key.startswith(("eva.", "down_projection.")) and key != "eva.pos_embed":
            assert torch.equal(value, sub.weights[key].float()), key
            compared += 1
    layerscale = [k for k in sub.weights if k.startswith("eva.") and ("gamma_" in k or ".attn.norm." in k)]
    assert len(layerscale) == 16 * 4
    if recipe is SSL3D_2025:  # the organizers' Eva: LayerScale and inner attention norm dropped
        assert not set(layerscale) & set(state) and compared > 250
        assert report.notes == ["dropped 64 LayerScale / inner attention-norm tensors the network does not have"]
        assert model.skip_first_token
    else:
        assert set(layerscale) <= set(state) and compared > 300 and not model.skip_first_token
    assert set(state) - {k for k in state if k.startswith(("eva.", "down_projection."))} == {"head.weight", "head.bias"}
    assert model(torch.zeros(2, 1, 32, 32, 32)).shape == (2, 2)


def test_two_channel_in_projection_is_repeated(loaded):
    sub = loaded("PrimusM")
    model, report = build_classifier(
        "PrimusM",
        input_channels=2,
        num_classes=3,
        patch_size=(32, 32, 32),
        dropout=0.0,
        recipe=SSL3D_2025.part("classification"),
        weights=sub.weights,
        pretrain_patch_size=sub.pretrain_patch_size,
    )
    w = sub.weights["down_projection.proj.weight"].float()
    assert report.in_proj_repeated
    torch.testing.assert_close(model.state_dict()["down_projection.proj.weight"], torch.cat([w, w], 1) / 2)


# ----------------------------------------------------------------------------- end to end
@pytest.mark.slow  # trains
def test_resencl_end_to_end(fast_task, submissions, results):
    job = FinetuneJob(task=fast_task, fold=0, track="ResEncL", results=results, submission=submissions["ResEncL"])
    metrics = run_classification(job)
    _, test_ids = split_cases(fast_task, load_cases(fast_task), 0)
    check_run_folder(results, metrics, fast_task, test_ids)
    assert metrics["transfer"]["track"] == "ResEncL" and metrics["transfer"]["loaded_keys"] > 400
    assert metrics["is_baseline"] is False and metrics["initial_lr"] == fast_task.schedule_for("ResEncL").lr
    assert metrics["training"]["optimizer_steps"] == 1  # 2 iterations, accumulated into one step
    assert metrics["recipe"] == "ssl3d-2025" and metrics["recipe_values"]["schedule"]["gradient_accumulation"] == 2
    assert metrics["undefined_metrics"] == []
    assert all(isinstance(metrics["aggregates"][m], float) for m in ("auroc", "balanced_accuracy", "f1"))
    job_json = json.loads(job.run.job_json.read_text())
    assert job_json["task_type"] == "classification" and job_json["fold"] == 0


@pytest.mark.slow  # trains
def test_primus_end_to_end_and_baseline(fast_task, submissions, results):
    _, test_ids = split_cases(fast_task, load_cases(fast_task), 1)
    sub = run_classification(
        FinetuneJob(task=fast_task, fold=1, track="PrimusM", results=results, submission=submissions["PrimusM"])
    )
    check_run_folder(results, sub, fast_task, test_ids)
    assert list(sub["transfer"]["pos_embed_to_grid"]) == [4, 4, 4] and sub["transfer"]["token_order"] == "nnssl"
    assert sub["training"]["optimizer_steps"] == 2
    assert sub["training"]["lr_per_epoch"] == pytest.approx([1e-4 / 2, 1e-4])  # warm-up lr/(W+1), then cosine
    base = run_classification(FinetuneJob(task=fast_task, fold=1, track="PrimusM", results=results))
    check_run_folder(results, base, fast_task, test_ids)
    assert base["entry"] == "baseline-PrimusM" and base["is_baseline"] is True
    assert base["transfer"] is None and base["initial_lr"] == fast_task.schedule_for("PrimusM").from_scratch_lr
    # one preprocessing folder serves the submission and the baseline
    assert sub["preprocessed"] == base["preprocessed"]


@pytest.mark.slow  # trains
def test_fold_missing_a_class_is_reported_not_fatal(toy_root, tmp_path):
    spheres = [
        c for c, lab in read_labels(toy_root / "data/toy/ToyClsShape/labels.csv", CLASSES).items() if lab == "sphere"
    ][:3]
    one_step = {"PrimusM": {"epochs": 1, "iterations_per_epoch": 1, "batch_size": 2, "warmup_epochs": 0}}
    task = write_task(toy_root, "one_class_test", test_cases=spheres, schedule=one_step)
    runs = []
    for name in ("a", "b"):
        runs.append(run_classification(FinetuneJob(task=task, fold=0, track="PrimusM", results=tmp_path / name)))
    metrics = runs[0]
    cases = check_run_folder(tmp_path / "a", metrics, task, spheres)
    assert set(cases["true_label"]) == {"sphere"}
    undefined = {(u["metric"], u["class"]) for u in metrics["undefined_metrics"]}
    assert undefined == {("auroc", "sphere"), ("auroc", "cube"), ("average_precision", "cube")}
    assert metrics["aggregates"]["auroc"] is None and metrics["class_counts"] == {"sphere": 3, "cube": 0}
    assert isinstance(metrics["aggregates"]["balanced_accuracy"], float)
    # seeded: the same job gives the same probabilities
    pd.testing.assert_frame_equal(
        pd.read_csv(run_dir(tmp_path / "a", runs[0]) / "cases.csv"),
        pd.read_csv(run_dir(tmp_path / "b", runs[1]) / "cases.csv"),
    )


# ----------------------------------------------------------------------------- schedule, augmentation
@pytest.mark.parametrize("pretrained", [True, False])
def test_lr_per_epoch_is_the_organizers_warmstart_cosine(pretrained):
    """SSL3D_classification's CosineAnnealingLR_Warmstart at their values: 200 epochs, 20 warm-up."""
    for track in ("ResEncL", "PrimusM"):
        sched = SSL3D_2025.part("classification").schedules[track]
        lr = sched.lr if pretrained else sched.from_scratch_lr
        assert lr == 1e-4
        lrs = [lr_at_epoch(e, lr, sched) for e in range(200)]
        assert lrs[0] == pytest.approx(1e-4 / 21) and lrs[19] == pytest.approx(1e-4 * 20 / 21)
        assert lrs[20] == pytest.approx(1e-4) and lrs[21] == pytest.approx(9.99924e-5, rel=1e-5)
        assert lrs[110] == pytest.approx(5e-5) and lrs[199] == pytest.approx(7.615e-9, rel=1e-3)
    # batches per epoch: one pass over the training cases, the last batch smaller
    plan = plan_steps(ClassificationSchedule(batch_size=2, gradient_accumulation=4), n_train=9)
    assert (plan.batches_per_epoch, plan.steps_per_epoch) == (5, 2)


def test_accumulation_steps_every_k_batches_and_at_the_epoch_end(fast_task, results):
    """batch 2, accumulation 2, 5 training cases: batches of 2, 2, 1 -> steps after batch 2 and 3."""
    from harness.finetune.classification.trainer import ClassifierTrainer, TrainingCases

    cases = load_cases(fast_task)
    cache = preprocess_task(fast_task, cases, (32, 32, 32), results)
    ids = [c.case_id for c in cases][:5]
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(32**3, 2))
    steps = []
    sched = ClassificationSchedule(epochs=2, batch_size=2, gradient_accumulation=2, warmup_epochs=1)
    opt_step = torch.optim.AdamW.step

    def counting_step(self, *a, **k):
        steps.append(self.param_groups[0]["lr"])
        return opt_step(self, *a, **k)

    torch.optim.AdamW.step = counting_step
    try:
        cases = TrainingCases(cache, ids, [0, 1, 0, 1, 0])
        summary = ClassifierTrainer(model, cases, sched, 1e-4, torch.device("cpu"), seed=0, log=lambda m: None).run()
    finally:
        torch.optim.AdamW.step = opt_step
    assert summary["optimizer_steps"] == 4 and summary["batches_per_epoch"] == 3
    assert steps == pytest.approx([5e-5, 5e-5, 1e-4, 1e-4])  # the lr changes per epoch, not per step


def test_augmentation_keeps_shape_and_changes_the_image():
    torch.manual_seed(0)
    np.random.seed(0)
    aug = ClassificationAugmentation(gaussian_noise_p=1.0, mirror_axes=(0,), rotation_p=0.0, scale_p=0.0)
    transform = build_augmentation(aug, (16, 16, 16))
    x = torch.randn(2, 16, 16, 16)
    y = transform(image=x.clone())["image"]
    assert y.shape == x.shape and not torch.equal(x, y)
    assert build_augmentation(ClassificationAugmentation(enabled=False), (16, 16, 16)) is None
    with pytest.raises(ValueError, match="mirror_axes"):
        build_augmentation(ClassificationAugmentation(mirror_axes=(3,)), (16, 16, 16))


# ----------------------------------------------------------------------------- metrics
def _probs(p_first: list[float]) -> np.ndarray:
    p = np.array(p_first)
    return np.stack([p, 1 - p], axis=1)


def test_metrics_perfect_and_reversed():
    y = [0, 0, 1, 1]
    good = score_classification(y, _probs([0.9, 0.8, 0.3, 0.1]), ["a", "b"])
    assert good.aggregates == {
        "auroc": 1.0,
        "balanced_accuracy": 1.0,
        "f1": 1.0,
        "average_precision": 1.0,
        "accuracy": 1.0,
    }
    bad = score_classification(y, _probs([0.1, 0.3, 0.8, 0.9]), ["a", "b"])
    assert bad.aggregates["auroc"] == 0.0 and bad.aggregates["balanced_accuracy"] == 0.0
    assert bad.aggregates["f1"] == 0.0 and bad.undefined == []


def test_metrics_by_hand_binary():
    # class b scores: case 0 (a) 0.4, 1 (a) 0.7, 2 (b) 0.6, 3 (b) 0.9 -> pairs (b>a): 0.6>0.4, 0.9>0.4, 0.9>0.7,
    # not 0.6>0.7: AUROC 3/4 for both classes; predictions a, b, b, b
    y = [0, 0, 1, 1]
    s = score_classification(y, _probs([0.6, 0.3, 0.4, 0.1]), ["a", "b"])
    assert s.aggregates["auroc"] == pytest.approx(0.75)
    assert s.per_class["a"]["auroc"] == pytest.approx(0.75) and s.per_class["b"]["auroc"] == pytest.approx(0.75)
    assert s.aggregates["balanced_accuracy"] == pytest.approx((0.5 + 1.0) / 2)
    f1_a, f1_b = 2 * 1 * 0.5 / 1.5, 2 * (2 / 3) * 1 / (2 / 3 + 1)
    assert s.aggregates["f1"] == pytest.approx((f1_a + f1_b) / 2)
    # AP of b: ranking 0.9 (b), 0.7 (a), 0.6 (b), 0.4 (a) -> precisions at the hits 1, 2/3;
    # of a: 0.6 (a), 0.4 (b), 0.3 (a), 0.1 (b) -> the same
    assert s.per_class["b"]["average_precision"] == pytest.approx((1 + 2 / 3) / 2)
    assert s.per_class["a"]["average_precision"] == pytest.approx((1 + 2 / 3) / 2)


def test_metrics_three_classes_match_sklearn_ovr():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    y = np.array([0, 1, 2] * 5)
    logits = rng.normal(size=(15, 3)) + np.eye(3)[y]
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    s = score_classification(y, p, ["x", "y", "z"])
    assert s.aggregates["auroc"] == pytest.approx(roc_auc_score(y, p, multi_class="ovr", average="macro"))


def test_metrics_absent_class_is_undefined_not_fatal():
    # three classes, "c" absent from the test cases but predicted once
    p = np.array([[0.7, 0.2, 0.1], [0.2, 0.7, 0.1], [0.1, 0.3, 0.6], [0.5, 0.4, 0.1]])
    s = score_classification([0, 1, 1, 0], p, ["a", "b", "c"])
    assert s.per_class["c"]["auroc"] is None and s.per_class["c"]["average_precision"] is None
    assert {(u["metric"], u["class"]) for u in s.undefined} == {("auroc", "c"), ("average_precision", "c")}
    assert s.aggregates["auroc"] == pytest.approx(np.mean([s.per_class["a"]["auroc"], s.per_class["b"]["auroc"]]))
    assert s.per_class["c"]["f1"] == 0.0  # predicted but absent: a false positive, F1 0
    only_one = score_classification([0, 0], _probs([0.8, 0.6]), ["a", "b"])
    assert only_one.aggregates["auroc"] is None and only_one.aggregates["average_precision"] == 1.0
    assert only_one.per_class["b"]["f1"] is None  # neither present nor predicted
    json.dumps(only_one.to_dict(), allow_nan=False)  # plain JSON: no NaN


def test_metrics_bad_inputs_and_table():
    with pytest.raises(ClassificationMetricsError, match="do not sum to 1"):
        score_classification([0, 1], np.array([[0.5, 0.6], [0.5, 0.5]]), ["a", "b"])
    with pytest.raises(ClassificationMetricsError, match="shape"):
        score_classification([0, 1], np.array([[0.5, 0.5]]), ["a", "b"])
    with pytest.raises(ClassificationMetricsError, match="outside 0..1"):
        score_classification([0, 2], _probs([0.5, 0.5]), ["a", "b"])


def test_rescoring_recomputes_from_the_runs_records(fast_task, tmp_path):
    """`harness rescore`'s classification part: the probabilities of the run's cases.csv scored
    again, with the classes its metrics.json lists (another order is refused, naming the file)."""
    from harness.finetune.classification.train import rescore_classification
    from harness.metrics.run_records import RunMetrics, RunRecords, prob_column

    task = fast_task
    classes = list(task.classes)
    run = ResultsLayout(tmp_path).run("sub", task.name, "ssl3d-2025", 0)
    cases = pd.DataFrame({"case": ["a", "b"], "true_label": classes[:2], "pred_label": classes[:2]})
    for k, name in enumerate(classes):
        cases[prob_column(name)] = [1.0 if k == row else 0.0 for row in range(2)]
    records = RunRecords(RunMetrics.of_task(task, classes), cases)
    again, changed = rescore_classification(task, run, records)
    assert again is cases and changed["aggregates"]["balanced_accuracy"] == 1.0
    swapped = RunRecords(RunMetrics.of_task(task, classes[::-1]), cases)
    with pytest.raises(ValueError, match=r"metrics.json: the run's classes"):
        rescore_classification(task, run, swapped)
