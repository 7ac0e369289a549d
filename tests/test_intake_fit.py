"""An upload is taken in only for the jobs it can run: a Primus without LayerScale and inner
attention norm (seen in the wild) fits the organizers' classification Eva, not PrimusM, so an
intake whose tasks need PrimusM's Eva rejects it at once, naming the missing tensors and what it
could run, instead of dispatching jobs that fail hours later with a TransferError."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from jobs_helpers import write_failing_classification, write_tiny_dataset, write_tiny_task

from harness.cli import main
from harness.models.transfer import LAYERSCALE_KEY
from harness.recipes import SSL3D_2025, SSL3D_2025_LOSSLESS
from harness.runs import ResultsLayout


@pytest.fixture(scope="module")
def world(module_dir, primus64_checkpoint) -> dict:
    import torch

    root = module_dir("intake_fit")
    write_tiny_dataset(root / "data" / "Seg")
    write_tiny_task(root / "reg_seg", "Seg", "Seg")
    write_failing_classification(root / "reg_cls", "Cls", root / "data")  # its data passes the check
    checkpoint = torch.load(primus64_checkpoint, map_location="cpu", weights_only=True, mmap=True)
    for key in [k for k in checkpoint["network_weights"] if LAYERSCALE_KEY.match(k)]:
        del checkpoint["network_weights"][key]
    subs = root / "subs"
    subs.mkdir()
    torch.save(checkpoint, subs / "nols.pth")
    os.link(primus64_checkpoint, subs / "whole.pth")
    return {"root": root, "nols": subs / "nols.pth", "whole": subs / "whole.pth"}


def dry_run(world, registry: str, recipe: str, capsys, *subs: Path) -> tuple[str, Path]:
    results = world["root"] / f"results_{registry}_{recipe}"
    args = ["evaluate", *map(str, subs), "--tasks", str(world["root"] / registry), "--results", str(results)]
    rc = main([*args, "--recipe", recipe, "--dry-run"])
    out = capsys.readouterr()
    assert rc == 0, out.out + out.err
    return out.out, results


def matrix_rows(out: str, entry: str) -> list[str]:
    return [line for line in out.splitlines() if line.startswith(entry + " ")]


def test_validate_says_which_task_types_and_recipes_a_file_runs(world, capsys):
    rc = main(["validate", str(world["nols"])])
    text = capsys.readouterr().out
    assert rc == 0, text
    assert "runs:\n  ssl3d-2025: classification\n  ssl3d-2025-lossless: no task type\n" in text
    rc = main(["validate", str(world["whole"]), "--json"])
    report = json.loads(capsys.readouterr().out)
    assert rc == 0 and report["lacks"] == []
    assert report["runnable"] == {name: ["segmentation", "classification"] for name in report["runnable"]}


def test_a_registry_with_segmentation_rejects_it_naming_what_is_missing(world, capsys):
    out, _ = dry_run(world, "reg_seg", "ssl3d-2025", capsys, world["nols"], world["whole"])
    (reason,) = [line for line in out.splitlines() if line.startswith("intake nols: REJECTED")]
    assert "the PrimusM checkpoint lacks layerscale (64 tensors, e.g. eva.blocks.0.gamma_1)" in reason
    assert "which the segmentation jobs of recipe ssl3d-2025 need" in reason
    assert "of these tasks it could run none" in reason
    assert "in all: classification under recipe ssl3d-2025" in reason
    assert all("rejected" in row for row in matrix_rows(out, "nols"))  # no job of it would run
    assert all(" run" in row and "pending" in row for row in matrix_rows(out, "whole"))


def test_a_classification_only_registry_takes_it_under_the_organizers_recipe_only(world, capsys):
    out, _ = dry_run(world, "reg_cls", SSL3D_2025.name, capsys, world["nols"])
    assert "intake nols: valid" in out
    assert all(" run" in row and "pending" in row for row in matrix_rows(out, "nols"))
    out, _ = dry_run(world, "reg_cls", SSL3D_2025_LOSSLESS.name, capsys, world["nols"])
    (reason,) = [line for line in out.splitlines() if line.startswith("intake nols: REJECTED")]
    assert "which the classification jobs of recipe ssl3d-2025-lossless need" in reason
    assert "of these tasks it could run none (in all: classification under recipe ssl3d-2025)" in reason
    assert all("rejected" in row for row in matrix_rows(out, "nols"))


def test_the_recorded_verdict_belongs_to_the_recipe_and_task_types(world, tmp_path):
    """A verdict recorded for one registry is not reused for another: the record names both."""
    from harness.jobs.intake import intake_file, resolve_submissions

    (sub,) = resolve_submissions([world["nols"]])
    quiet = lambda m: None  # noqa: E731
    layout = ResultsLayout(tmp_path)
    first = intake_file(sub, layout, recipe=SSL3D_2025, task_types=["classification"], write=True, log=quiet)
    assert first.valid and first.recipe == "ssl3d-2025" and first.task_types == ["classification"]
    again = intake_file(
        sub, layout, recipe=SSL3D_2025, task_types=["classification", "segmentation"], write=True, log=quiet
    )
    assert not again.valid and again.task_types == ["classification", "segmentation"]
    text = ResultsLayout(tmp_path).intake_report("nols").read_text()
    assert "REJECTED: the PrimusM checkpoint lacks layerscale" in text


CHALLENGE = """\
name: fitchal
tracks: [ResEncL, PrimusM]
recipe: {recipe}
inbox: inbox
phases:
  - name: {phase}
    tasks: {tasks}
    submission_limit: 2
"""


@pytest.mark.parametrize(
    ("registry", "recipe", "accepted"),
    [("reg_seg", "ssl3d-2025", False), ("reg_cls", "ssl3d-2025", True), ("reg_cls", "ssl3d-2025-lossless", False)],
)
def test_a_challenge_intake_rejects_it_for_the_phase_tasks(world, tmp_path, capsys, registry, recipe, accepted):
    phase = registry.replace("_", "")
    upload = tmp_path / "inbox" / phase / "delta" / "nols.pth"
    upload.parent.mkdir(parents=True)
    os.link(world["nols"], upload)
    challenge = tmp_path / "challenge.yaml"
    challenge.write_text(CHALLENGE.format(recipe=recipe, phase=phase, tasks=world["root"] / registry))
    rc = main(["intake", "--challenge", str(challenge), "--results", str(tmp_path / "results")])
    out = capsys.readouterr()
    assert rc == 0, out.out + out.err
    record = json.loads(ResultsLayout(tmp_path / "results").phase_intake("fitchal", phase).read_text())
    (entry,) = record["uploads"]
    if accepted:
        assert entry["status"] == "accepted" and entry["rejection"] is None
    else:
        assert entry["status"] == "rejected" and entry["rejection"] == "tasks"
        (reason,) = entry["reasons"]
        assert reason.startswith("the PrimusM checkpoint lacks layerscale (64 tensors, e.g. eva.blocks.0.gamma_1)")
