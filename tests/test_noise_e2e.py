"""Issue 22's first done-when, end to end: real seed repeats through `evaluate` (intake, matrix,
local executor, workers) to the leaderboard's noise floor, on the cheapest real path (the toy
classification task, Primus-M at its 32^3 toy patch, one optimizer step, one fold).

Two uploads whose weights differ by 1e-6 relative must come out within training noise of each
other, and the report must show the floor of the task. Not claimed here: that an encoder
fine-tuned on the task's own data comes out above the floor against the baseline; one optimizer
step on six test cases does not make that hold reliably.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from harness.jobs.evaluate import EvaluateOptions, evaluate
from harness.leaderboard.build import build_leaderboard
from harness.leaderboard.rows import read_leaderboard
from harness.runs import ResultsLayout, read_people_csv

# dynamic-network-architectures' Primus imports timm, which uses a deprecated torch.jit API.
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.interface` is deprecated:FutureWarning")

REPO = Path(__file__).resolve().parents[1]
TOY_YAML = REPO / "task_registry" / "toy" / "toy_cls_shape.yaml"
ONE_STEP = {"epochs": 1, "iterations_per_epoch": 1, "batch_size": 2, "gradient_accumulation": 1, "warmup_epochs": 0}
REPEATS = 3


def one_step_registry(root: Path, toy_data: Path) -> Path:
    """The shipped toy classification task, read from the session's toy data, one step long."""
    task = yaml.safe_load(TOY_YAML.read_text())
    for field in ("images", "labels", "masks"):
        task[field] = str(toy_data / Path(task[field]).relative_to("../../data/toy"))
    task["schedule"]["PrimusM"] |= ONE_STEP
    registry = root / "registry"
    registry.mkdir(parents=True)
    (registry / TOY_YAML.name).write_text(yaml.safe_dump(task))
    return registry


@pytest.mark.slow  # trains 6 one-step Primus-M jobs: 6.5 min wall, 3.6 min CPU on two shared cores
def test_twin_uploads_come_out_within_noise_and_the_report_shows_the_floor(
    tmp_path, toy_data, primus64_checkpoint, derive_checkpoint
):
    import torch

    twin_a = tmp_path / "twin_a.pth"
    os.link(primus64_checkpoint, twin_a)  # the session's file, read only

    def nudge(checkpoint: dict) -> None:
        for tensor in checkpoint["network_weights"].values():
            if torch.is_floating_point(tensor):
                tensor.mul_(1 + 1e-6)

    twin_b = derive_checkpoint(primus64_checkpoint, "twin_b.pth", nudge)
    results = tmp_path / "results"
    outcome = evaluate(
        EvaluateOptions(
            submissions=[twin_a, twin_b],
            tasks=one_step_registry(tmp_path, toy_data),
            results=results,
            folds=[0],
            noise_repeats=REPEATS,
            device="cpu",
            jobs=1,
        )
    )
    assert outcome.exit_code == 0, [(r.entry, r.fold, r.state, r.detail) for r in outcome.rows]
    runs = sorted(p.name for p in (results / "runs" / "baseline-PrimusM" / "ToyClsShape").glob("*/*"))
    assert runs == ["fold_0"] + [f"fold_0-repeat_{r}" for r in range(1, REPEATS + 1)]

    board_dir = tmp_path / "board"
    board = build_leaderboard(board_dir, results=results, n_bootstrap=200, plots=False)
    (track,) = board.tracks
    assert track.noise is not None
    assert set(track.ranking.track.entries) == {"baseline-PrimusM", "twin_a", "twin_b"}  # repeats never ranked
    rows = {r.entry: r for r in read_leaderboard(ResultsLayout.leaderboard_csv(board_dir, "PrimusM"))}
    assert "twin_b" in (rows["twin_a"].within_noise_of or ())
    assert "twin_a" in (rows["twin_b"].within_noise_of or ())
    floor = read_people_csv(board_dir / "noise_PrimusM.csv")
    assert set(floor["task"]) == {"ToyClsShape"} and set(floor["runs"]) == {REPEATS + 1}
    assert (floor["noise_sd"] > 0).any()  # other seeds train otherwise: a floor, not a zero
    report = board.report.read_text()
    assert "Noise floor" in report and "ToyClsShape" in report
