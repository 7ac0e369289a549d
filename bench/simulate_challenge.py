"""A challenge results folder at full size, written through the harness's own writers, without
training: what `harness status`, `harness leaderboard`, `harness feedback` and `harness publish`
read at the size of a real SSL3D-style challenge (bench/bench_scale.py times them).

It writes, under one folder:

    task_registry/            real task YAMLs (segmentation and classification), so that the
                              challenge file loads and the leaderboard reads each task's metrics
    challenge.yaml            the challenge (harness/challenge/config.py's format), every phase on
                              that registry
    results/                  the results folder: teams.json (``Teams``), and per phase its intake
                              record (``PhaseRecord`` of ``UploadRecord``), one ``IntakeRecord``
                              per upload, and per (entry, task, fold) a run folder (``JobSpec``,
                              ``write_run_records`` + DONE; a few FAILED, stale, corrupt, pending)

Quality is drawn per team (a skill), per team and task (a smaller deviation: entries of
different quality, correlated across tasks) and per case (a case's difficulty is shared by every
entry, so entries are compared on the same hard and easy cases). Each team has one accepted
upload per track and phase; a few uploads are rejected (invalid, quota), so that the status and
feedback show rejections. An upload's file holds a few bytes, not a checkpoint: nothing reads it.

Run from the repository root: ``.venv/bin/python bench/simulate_challenge.py OUT [--teams N ...]``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from harness import __version__
from harness.challenge.teams import Teams
from harness.jobs.intake import IntakeRecord, PhaseRecord, UploadRecord
from harness.jobs.state import JobFiles
from harness.metrics.run_records import RunMetrics, cases_schema, prob_column, write_run_records
from harness.runs import JobSpec, ResultsLayout, RunResult, baseline_entry
from harness.tasks.registry import load_registry

CHALLENGE = "simchal"
RECIPE = "ssl3d-2025"
CLASSES = ("negative", "positive")
PHASE_NAMES = ("validation", "test", "final", "extra")

SEGMENTATION_YAML = """\
name: {name}
type: segmentation
description: simulated segmentation task ({labels} labels, {cases} test cases)
dataset: ../data/{name}
test: {{images: imagesTs, labels: labelsTs}}
folds: {folds}
num_folds: {num_folds}
patch_size: {{ResEncL: [64, 64, 64], PrimusM: [32, 32, 32]}}
metrics:
  - {{name: dice}}
  - {{name: nsd, tolerance_mm: 1.0}}
time_limit_minutes: 30
"""

CLASSIFICATION_YAML = """\
name: {name}
type: classification
description: simulated classification task ({cases} test cases)
images: ../data/{name}/imagesTr
labels: ../data/{name}/labels.csv
classes: [{classes}]
test_cases: [{test_cases}]
folds: {{k: {num_folds}}}
target_spacing: [1.0, 1.0, 1.0]
patch_size: {{ResEncL: [64, 64, 64], PrimusM: [32, 32, 32]}}
metrics:
  - {{name: auroc}}
  - {{name: balanced_accuracy}}
time_limit_minutes: 30
"""


@dataclass(frozen=True)
class ChallengeSize:
    """How large the simulated challenge is; the defaults are issue 23's SSL3D-like size."""

    teams: int = 100
    tracks: tuple[str, ...] = ("ResEncL", "PrimusM")
    phases: int = 2
    segmentation_tasks: int = 5
    classification_tasks: int = 2
    cases: int = 200
    labels: int = 3
    folds: int = 5
    #: runs of each kind per phase (spread over entries, tasks and folds); never more than exist
    failed: int = 5
    stale: int = 3
    corrupt: int = 3
    pending: int = 5
    seed: int = 0


@dataclass
class Simulated:
    """What was written: the paths the harness commands take, and what each run was made."""

    root: Path
    challenge: Path
    results: Path
    registry: Path
    phases: list[str]
    #: (phase, entry, task, fold) -> "done" | "failed" | "stale" | "corrupt" | "pending"
    runs: dict[tuple[str, str, str, int], str] = field(default_factory=dict)
    #: (phase, upload name) -> rejection kind
    rejected: dict[tuple[str, str], str] = field(default_factory=dict)
    seconds: float = 0.0

    def count(self, state: str) -> int:
        return sum(1 for s in self.runs.values() if s == state)


def _task_names(size: ChallengeSize) -> tuple[list[str], list[str]]:
    return [f"SimSeg{n:02d}" for n in range(size.segmentation_tasks)], [
        f"SimCls{n:02d}" for n in range(size.classification_tasks)
    ]


def write_registry(registry: Path, size: ChallengeSize) -> None:
    """One real task YAML per simulated task, beside the folders its paths name (a registry
    checks they exist): empty, since no job is run and no data is read."""
    registry.mkdir(parents=True, exist_ok=True)
    data = registry.parent / "data"
    seg, cls = _task_names(size)
    folds = list(range(size.folds))
    for name in seg:
        text = SEGMENTATION_YAML.format(
            name=name, labels=size.labels, cases=size.cases, folds=folds, num_folds=max(size.folds, 2)
        )
        (registry / f"{name}.yaml").write_text(text)
        (data / name / "imagesTs").mkdir(parents=True, exist_ok=True)
        for folder in ("imagesTr", "labelsTr", "labelsTs"):
            (data / name / folder).mkdir(exist_ok=True)
        labels = {"background": 0, **{f"structure{k}": k for k in range(1, size.labels + 1)}}
        dataset = {"channel_names": {"0": "T1"}, "labels": labels, "numTraining": 0, "file_ending": ".nii.gz"}
        (data / name / "dataset.json").write_text(json.dumps(dataset, indent=2) + "\n")
    cases = ", ".join(f"case_{c:04d}" for c in range(size.cases))
    for name in cls:
        text = CLASSIFICATION_YAML.format(
            name=name, cases=size.cases, classes=", ".join(CLASSES), test_cases=cases, num_folds=max(size.folds, 2)
        )
        (registry / f"{name}.yaml").write_text(text)
        (data / name / "imagesTr").mkdir(parents=True, exist_ok=True)
        (data / name / "labels.csv").write_text("case_id,label\n")


def write_challenge_file(path: Path, registry: Path, size: ChallengeSize, phases: list[str]) -> None:
    lines = [
        f"name: {CHALLENGE}",
        "description: a simulated challenge at full size (bench/simulate_challenge.py)",
        f"tracks: [{', '.join(size.tracks)}]",
        f"recipe: {RECIPE}",
        "inbox: inbox",
        "phases:",
    ]
    for n, phase in enumerate(phases):
        lines += [
            f"  - name: {phase}",
            f"    tasks: {registry}",
            "    submission_limit: 2",
            "    opens: 2025-06-01T00:00:00Z",
            "    closes: 2099-01-01T00:00:00Z",
            f"    public: {'true' if n == 0 else 'false'}",
            "    counts: last-valid",
        ]
    path.write_text("\n".join(lines) + "\n")


def _sha(*parts: object) -> str:
    return hashlib.sha256("/".join(map(str, parts)).encode()).hexdigest()


def _stamp(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S+0000", time.gmtime(seconds))


def _upload(
    inbox: Path,
    phase: str,
    team: str,
    name: str,
    track: str,
    order: int,
    when: float,
    rejection: str | None,
    jobs: list[dict],
) -> tuple[UploadRecord, IntakeRecord]:
    """An upload's record and its intake verdict (a rejected one lists its would-be ``jobs``,
    which `harness status` counts); its file, under ``inbox``, holds a few bytes (planning asks
    that an accepted upload is still on disk; nothing here reads it)."""
    sha = _sha(phase, team, name)
    path = inbox / phase / team / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(f"simulated upload {sha}\n".encode())
    entry = f"{phase}-{team}-{sha[:12]}"
    reasons = {
        None: [],
        "invalid": ["the checkpoint has no 'network_weights' (simulated rejection)"],
        "quota": ["phase accepts 2 submission(s) per team and track (simulated rejection)"],
    }[rejection]
    upload = UploadRecord(
        entry=entry,
        team=team,
        name=f"{team}/{name}",
        file=str(path),
        sha256=sha,
        size_bytes=int(4e8 if track == "ResEncL" else 1.2e9),
        mtime_ns=int(when * 1e9),
        submitted_at=_stamp(when),
        track=track,
        order=order,
        status="rejected" if rejection else "accepted",
        rejection=rejection,
        reasons=reasons,
        checked=_stamp(when + 60),
        time_source="mtime",
    )
    record = IntakeRecord(
        entry=entry,
        file=upload.file,
        sha256=sha,
        valid=rejection is None,
        track=track,
        harness_version=__version__,
        checked=upload.checked,
        report={"errors": reasons, "warnings": []},
        team=team,
        rejection=rejection,
        jobs=jobs if rejection else None,
    )
    return upload, record


def _segmentation_cases(rng, quality: float, difficulty: np.ndarray, labels: int) -> pd.DataFrame:
    """Per case and label: Dice and NSD around the entry's quality, shifted by the case's
    difficulty (shared by all entries); a few labels missed entirely (Dice 0)."""
    n = difficulty.size
    dice = np.clip(quality + difficulty[:, None] + rng.normal(0, 0.05, (n, labels)), 0, 1)
    dice[rng.random((n, labels)) < 0.02] = 0.0
    nsd = np.clip(dice + rng.normal(0.03, 0.03, dice.shape), 0, 1)
    ref = rng.integers(200, 20000, (n, labels))
    pred = np.maximum(0, (ref * rng.normal(1, 0.15, ref.shape)).astype(int))
    case, label = np.indices((n, labels))
    return pd.DataFrame(
        {
            "case": [f"case_{c:04d}" for c in case.ravel()],
            "label": label.ravel() + 1,
            "dice": dice.ravel(),
            "nsd": nsd.ravel(),
            "ref_voxels": ref.ravel(),
            "pred_voxels": pred.ravel(),
        }
    )


def _classification_cases(rng, quality: float, truth: np.ndarray) -> pd.DataFrame:
    """Per case: the positive probability separates the classes the more, the better the entry."""
    margin = 4.0 * (quality - 0.45)
    logit = rng.normal(0, 1, truth.size) + np.where(truth == 1, margin, -margin)
    positive = 1 / (1 + np.exp(-logit))
    return pd.DataFrame(
        {
            "case": [f"case_{c:04d}" for c in range(truth.size)],
            "true_label": np.asarray(CLASSES)[truth],
            "pred_label": np.asarray(CLASSES)[(positive >= 0.5).astype(int)],
            prob_column(CLASSES[0]): 1 - positive,
            prob_column(CLASSES[1]): positive,
        }
    )


def simulate(root: Path, size: ChallengeSize = ChallengeSize()) -> Simulated:
    """Write the challenge of ``size`` under ``root`` (which must not hold one already)."""
    start = time.perf_counter()
    root = Path(root)
    if (root / "results").exists():
        raise FileExistsError(f"{root / 'results'} exists: simulate into a fresh folder")
    if size.phases > len(PHASE_NAMES):
        raise ValueError(f"at most {len(PHASE_NAMES)} phases, got {size.phases}")
    rng = np.random.default_rng(size.seed)
    registry, results = root / "task_registry", root / "results"
    phases = list(PHASE_NAMES[: size.phases])
    write_registry(registry, size)
    challenge = root / "challenge.yaml"
    write_challenge_file(challenge, registry, size, phases)
    tasks = load_registry(registry)
    sim = Simulated(root, challenge, results, registry, phases)
    layout = ResultsLayout(results)

    team_ids = [f"team{t:03d}" for t in range(size.teams)]
    teams = Teams(CHALLENGE)
    for t, team in enumerate(team_ids):
        teams.teams[team] = {
            "anonymous_id": f"team-{t + 1:03d}",
            "display_name": f"Team {t:03d}",
            "first_seen": _stamp(1_750_000_000),
        }
    teams.save(layout)

    skill = rng.normal(0.0, 0.06, size.teams)  # a team's quality, shared by its tasks and tracks
    task_shift = {name: rng.normal(0.0, 0.02, size.teams) for name in tasks}  # per team and task
    difficulty = {name: rng.normal(0.0, 0.08, size.cases) for name in tasks}
    truth = {name: rng.integers(0, 2, size.cases) for name in tasks}
    base_quality = {name: rng.uniform(0.6, 0.8) for name in tasks}

    would_be = [{"task": name, "fold": fold} for name in tasks for fold in range(size.folds)]
    for p, phase in enumerate(phases):
        phase_layout = layout.phase(CHALLENGE, phase)
        uploads: list[UploadRecord] = []
        entries: list[tuple[str, str, float]] = []  # (entry, track, quality offset)
        t0 = 1_750_000_000 + p * 30 * 86400
        for t, team in enumerate(team_ids):
            for k, track in enumerate(size.tracks):
                order = len(uploads)
                upload, record = _upload(
                    root / "inbox", phase, team, f"{track}_{p}.pth", track, order, t0 + 60 * order, None, would_be
                )
                uploads.append(upload)
                record.write(phase_layout, "valid (simulated intake)")
                entries.append((upload.entry, track, skill[t] - 0.02 * k))
            if t % 25 == 7 % min(size.teams, 25):  # one team in 25 has two rejections: garbage, over quota
                for name, rejection in (("broken.pth", "invalid"), ("third.pth", "quota")):
                    order = len(uploads)
                    upload, record = _upload(
                        root / "inbox", phase, team, name, size.tracks[0], order, t0 + 60 * order, rejection, would_be
                    )
                    uploads.append(upload)
                    record.write(phase_layout, f"REJECTED: {upload.reasons[0]}")
                    sim.rejected[(phase, upload.name)] = rejection
        PhaseRecord(CHALLENGE, phase, __version__, uploads, updated=_stamp(t0 + 86400)).write(phase_layout.phase_record)
        submission_of = {u.entry: u.file for u in uploads}
        entries += [(baseline_entry(track), track, -0.12) for track in size.tracks]

        jobs = [(e, tr, q, name, f) for e, tr, q in entries for name in tasks for f in range(size.folds)]
        team_of = {e: t for t, team in enumerate(team_ids) for e, *_ in entries if f"-{team}-" in e}
        checked: dict[str, tuple[str, ...]] = {}
        special = rng.permutation(len(jobs))
        kinds = ["failed"] * size.failed + ["stale"] * size.stale + ["corrupt"] * size.corrupt
        kinds += ["pending"] * size.pending
        state_of = {int(special[i]): kind for i, kind in enumerate(kinds[: len(jobs)])}
        for n, (entry, track, quality, name, fold) in enumerate(jobs):
            task = tasks[name]
            state = state_of.get(n, "done")
            job_id = _sha(phase, entry, name, fold)[:16]
            run = phase_layout.run(entry, name, RECIPE, fold)
            JobSpec(
                entry=entry,
                track=track,
                is_baseline=entry.startswith("baseline-"),
                task=name,
                task_type=task.type,
                fold=fold,
                submission=submission_of.get(entry),
                recipe=RECIPE,
                seed=fold,
                job_id=job_id,
            ).write(run)
            sim.runs[(phase, entry, name, fold)] = state
            if state == "pending":
                continue
            files = JobFiles(run)
            if state == "failed":
                files.mark_failed(job_id, "out of memory", "CUDA out of memory (simulated)")
                continue
            shift = task_shift[name][team_of[entry]] if entry in team_of else 0.0
            q = float(base_quality[name] + quality + shift + rng.normal(0, 0.01))
            if task.type == "segmentation":
                cases = _segmentation_cases(rng, q, difficulty[name], size.labels)
                metrics = RunMetrics.of_task(task, fields={"wall_seconds": float(rng.uniform(1800, 7200))})
            else:
                cases = _classification_cases(rng, q, truth[name])
                metrics = RunMetrics.of_task(task, CLASSES, fields={"wall_seconds": float(rng.uniform(600, 3600))})
            if name in checked:  # the schema's columns, as write_run_records writes them
                RunResult(metrics.as_dict(), cases.loc[:, list(checked[name])]).write(run)
            else:  # the first run of a task is read back too: the readers accept what is written
                write_run_records(run, task.type, metrics, cases)
                checked[name] = cases_schema(task.type).columns(metrics.classes)
            run.mark_done({"job_id": job_id if state != "stale" else f"{job_id}-before"})
            if state == "corrupt":  # a cases.csv cut off mid-line, as a full disk leaves it
                text = run.cases_csv.read_text()
                run.cases_csv.write_text(text[: len(text) // 2].rsplit(",", 1)[0])
    sim.seconds = time.perf_counter() - start
    return sim


def _parse(argv: list[str] | None = None) -> tuple[Path, ChallengeSize]:
    d = ChallengeSize()
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("out", type=Path, help="folder to write into (its results/ must not exist)")
    p.add_argument("--teams", type=int, default=d.teams)
    p.add_argument("--tracks", nargs="+", default=list(d.tracks), choices=["ResEncL", "PrimusM"])
    p.add_argument("--phases", type=int, default=d.phases)
    p.add_argument("--segmentation-tasks", type=int, default=d.segmentation_tasks)
    p.add_argument("--classification-tasks", type=int, default=d.classification_tasks)
    p.add_argument("--cases", type=int, default=d.cases, help="test cases per task")
    p.add_argument("--labels", type=int, default=d.labels, help="foreground labels per segmentation task")
    p.add_argument("--folds", type=int, default=d.folds)
    p.add_argument("--seed", type=int, default=d.seed)
    a = p.parse_args(argv)
    size = ChallengeSize(
        teams=a.teams,
        tracks=tuple(a.tracks),
        phases=a.phases,
        segmentation_tasks=a.segmentation_tasks,
        classification_tasks=a.classification_tasks,
        cases=a.cases,
        labels=a.labels,
        folds=a.folds,
        seed=a.seed,
    )
    return a.out, size


def main(argv: list[str] | None = None) -> None:
    out, size = _parse(argv)
    sim = simulate(out, size)
    states = {s: sim.count(s) for s in ("done", "failed", "stale", "corrupt", "pending")}
    print(f"wrote {len(sim.runs)} run folders {states} in {sim.seconds:.1f} s under {sim.results}")
    print(f"challenge file: {sim.challenge}")


if __name__ == "__main__":
    main()
