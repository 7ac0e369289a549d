"""A phase's matrix and leaderboard: which entries count, where their runs live, what is ranked.

Every phase is its own results folder (``ResultsLayout.phase``: ``results/challenges/<challenge>/
<phase>/``), so a team's validation runs can never enter the test ranking, and the phase's task
registry, caches, provenance and leaderboard stay with it. Which accepted uploads count:

* ``counts: last-valid``: per team and track, the last accepted upload (in upload order): an
  earlier one is *superseded* and neither trained nor ranked (runs it has from before stay on
  disk, out of the ranking);
* ``counts: each``: every accepted upload, each ranked on its own.

The phase's leaderboard ranks the phase's runs of the counted entries and of the baselines
(``ranked_entries``, given to ``build_leaderboard(entries=...)``), worked out from the intake
record each time it is built.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from harness.challenge.config import Challenge, ChallengeError, PhaseSpec
from harness.challenge.intake import ACCEPTED, require_phase_record
from harness.jobs.intake import PhaseRecord, UploadRecord
from harness.jobs.matrix import Entry
from harness.runs import ResultsLayout


def counted_uploads(phase: PhaseSpec, record: PhaseRecord) -> list[UploadRecord]:
    """The accepted uploads of ``record`` that count for ``phase``'s ranking, in upload order."""
    accepted = [u for u in record.uploads if u.status == ACCEPTED]
    if phase.counts == "each":
        return accepted
    last: dict[tuple[str, str | None], UploadRecord] = {}
    for upload in accepted:  # in intake (= upload) order: the later replaces the earlier
        last[(upload.team, upload.track)] = upload
    keep = {id(u) for u in last.values()}
    return [u for u in accepted if id(u) in keep]


def superseded_by(phase: PhaseSpec, record: PhaseRecord) -> dict[str, str]:
    """entry -> the entry that replaced it (``counts: last-valid`` only)."""
    if phase.counts != "last-valid":
        return {}
    counted = {(u.team, u.track): u.entry for u in counted_uploads(phase, record)}
    return {
        u.entry: counted[(u.team, u.track)]
        for u in record.uploads
        if u.status == ACCEPTED and counted[(u.team, u.track)] != u.entry
    }


def upload_entry(upload: UploadRecord) -> Entry:
    """What the job matrix needs of an accepted upload (validated: it has its digest and track)."""
    assert upload.status == ACCEPTED and upload.sha256 is not None and upload.track is not None, upload.entry
    return Entry(upload.entry, Path(upload.file), upload.sha256, upload.track)


@dataclass(frozen=True)
class PhasePlan:
    """What `harness evaluate --challenge --phase` runs: the phase, its results folder, and the
    counted entries (``EvaluateOptions.entries``)."""

    challenge: Challenge
    phase: PhaseSpec
    results: Path
    entries: list[Entry]


def plan_phase(challenge: Challenge, phase_name: str, results: Path) -> PhasePlan:
    """The counted entries of a phase, from its intake record (``ChallengeError`` when intake has
    not run on it)."""
    phase = challenge.get_phase(phase_name)
    layout = ResultsLayout(results)
    record = require_phase_record(layout, challenge, phase)
    entries = [upload_entry(u) for u in counted_uploads(phase, record)]
    missing = [str(e.path) for e in entries if not e.path.is_file()]
    if missing:
        raise ChallengeError(f"phase {phase.name!r}: accepted upload(s) no longer on disk: {', '.join(missing)}")
    return PhasePlan(challenge, phase, layout.phase(challenge.name, phase.name).root, entries)


def ranked_entries(challenge: Challenge, phase: PhaseSpec, results: Path) -> dict[str, str]:
    """The entries a phase's leaderboard ranks (besides the baselines), those that count now, with
    their tracks: one without runs yet (an earlier upload that counts again after a withdrawal)
    is listed with every job pending, never left out."""
    record = require_phase_record(ResultsLayout(results), challenge, phase)
    return {u.entry: u.track for u in counted_uploads(phase, record) if u.track is not None}


def phase_leaderboard_dir(challenge: Challenge, phase: PhaseSpec, results: Path) -> Path:
    """Where a phase's leaderboard goes: ``<phase>/leaderboard/<recipe>/``."""
    return ResultsLayout(results).phase(challenge.name, phase.name).leaderboard_dir(challenge.recipe)
