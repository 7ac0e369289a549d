"""``harness intake``: take in what is new in a phase's inbox, decide each upload once, record it.

Per phase one record, ``results/challenges/<challenge>/<phase>/inbox.json``
(``ResultsLayout.phase_intake``), written atomically after each verdict, holds every upload ever
taken in, in intake order, with its entry id and verdict. An upload is decided once and intake
never revises it: a second intake finds nothing new and writes nothing (the file is byte for byte
the same); an intake stopped halfway keeps the verdicts it reached. Only the organizers revise
one, by withdrawing an accepted upload (``withdraw``: `harness intake --withdraw ENTRY --reason`).
An upload is known by (team, file name, sha256); an unchanged file (same size and mtime) is not
hashed again. A new upload is hashed once (the validation takes that digest and only checks that
the file did not change meanwhile); one over the size limit, or empty, is never read: it is
rejected as ``invalid`` with ``sha256`` null and an entry id ending in ``unread``.

Each new upload, in upload-time order (harness/challenge/inbox.py), is checked in this order and
rejected at the first problem, with the reason recorded (``rejection``: the kind, ``reasons``:
the words):

1. ``unusable``   a team id that is no name, a track the manifest names that the challenge lacks;
2. ``window``     uploaded before the phase ``opens`` or after it ``closes``;
3. ``duplicate``  the same bytes as an earlier upload of another team, in any phase of the
                  challenge (both are recorded; this one names the other's entry);
4. ``resubmission`` the same bytes as the team's own earlier upload to this phase;
5. ``invalid``    the submission validation (harness.submission.validate_submission, for the
                  manifest's track when it names one) finds an error;
6. ``track``      a valid checkpoint of a track the challenge does not run;
7. ``tasks``      a valid checkpoint that lacks what some of the phase's task types need under the
                  challenge's recipe (a Primus without LayerScale against segmentation tasks): no
                  job is dispatched that is known to fail, and the reason names the missing
                  tensors and the task types it could run;
8. ``quota``      the team already has ``submission_limit`` accepted uploads of this track in this
                  phase (rejected uploads do not use the quota; withdrawn ones do: ``uses_quota``).

An accepted upload is also compared with every accepted upload of the other teams (in all phases)
and with the challenge's ``reference_checkpoints`` by the fingerprint its validation took
(harness/submission/fingerprint.py); the pairs above the thresholds are its ``similar`` list, in
the phase record and its own intake record, and `harness status` lists them. They are for the
organizers to judge: nothing is rejected for them and a team's feedback never shows them.

The entry id is ``<phase>-<team>-<first 12 hex digits of the sha256>`` (a second upload of the
same bytes by the same team gets ``-2``, ...; a team id that is no name, refused as ``unusable``,
is ``unusable`` in it, since the id becomes a folder), stable across runs; it names the entry's run
folders and its per-entry intake record (``submissions/<entry>/intake.json`` in the phase's
results folder: harness/jobs/intake.py's ``IntakeRecord``, as `harness evaluate` writes it, so
`harness status` lists the rejections).

Over 450 lines for a reason: one verdict per upload is made in one place: the phase record, the
quota, the similarity to other uploads and to reference checkpoints, and withdrawal all read and
write the same inbox record, whose rules (decided once, never revised) would be spread over several
files if it were split.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness import __version__
from harness.challenge.config import NAME_PATTERN, Challenge, ChallengeError, PhaseSpec
from harness.challenge.inbox import Upload, discover
from harness.challenge.teams import load_teams
from harness.jobs.intake import IntakeRecord, PhaseRecord, UploadRecord
from harness.recipes import get_recipe
from harness.results_lock import ResultsLock, ResultsLockedError
from harness.runs import ResultsFileError, ResultsLayout, read_json, write_json_atomic
from harness.submission import DEFAULT_MAX_SIZE
from harness.submission.checkpoint import SubmissionError, check_file, sha256_file

ACCEPTED, REJECTED = "accepted", "rejected"
REJECTIONS = ("unusable", "window", "duplicate", "resubmission", "invalid", "track", "tasks", "quota", "withdrawn")
#: The organizers' own verdict on an accepted upload (``withdraw``), never intake's.
WITHDRAWN = "withdrawn"


def uses_quota(upload: UploadRecord) -> bool:
    """Whether an upload takes one of its team's ``submission_limit`` slots: an accepted one, and
    one the organizers withdrew after accepting it (it was evaluated; withdrawing frees nothing)."""
    return upload.status == ACCEPTED or upload.rejection == WITHDRAWN


@dataclass
class PhaseIntake:
    """The outcome of one phase's intake: its record and what this run added."""

    phase: str
    record: PhaseRecord
    new: list[UploadRecord] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    path: Path | None = None

    @property
    def uploads(self) -> list[UploadRecord]:
        return self.record.uploads

    def summary(self) -> str:
        accepted = sum(u.status == ACCEPTED for u in self.new)
        return (
            f"phase {self.phase}: {len(self.new)} new upload(s) ({accepted} accepted, "
            f"{len(self.new) - accepted} rejected); {len(self.uploads)} recorded in {self.path}"
        )


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def empty_record(challenge: Challenge, phase: PhaseSpec) -> PhaseRecord:

    return PhaseRecord(challenge.name, phase.name, __version__)


def read_phase_record(layout: ResultsLayout, challenge: Challenge, phase: PhaseSpec) -> PhaseRecord | None:
    """The phase's intake record, or None when intake has not run on it; a record that does not
    read is a ``ChallengeError`` naming it (and the upload and field at fault)."""
    path = layout.phase_intake(challenge.name, phase.name)
    if not path.is_file():
        return None
    try:
        return PhaseRecord.read(path)
    except ResultsFileError as e:
        raise ChallengeError(f"cannot read the intake record: {e}") from None


def require_phase_record(layout: ResultsLayout, challenge: Challenge, phase: PhaseSpec) -> PhaseRecord:
    record = read_phase_record(layout, challenge, phase)
    if record is None:
        raise ChallengeError(
            f"phase {phase.name!r} has no intake record ({layout.phase_intake(challenge.name, phase.name)}): "
            f"run `harness intake --challenge {challenge.source} --phase {phase.name}` first"
        )
    return record


def intake_phase(
    challenge: Challenge, phase: PhaseSpec, results: Path, *, log: Callable[[str], None] = print
) -> PhaseIntake:
    """Take in the new uploads of ``phase`` (see the module docstring) and record them."""

    layout = ResultsLayout(results)
    try:
        with ResultsLock(layout.challenge_dir(challenge.name), "harness intake"):
            return _intake_phase(challenge, phase, layout, log)
    except ResultsLockedError:
        raise ChallengeError(
            f"another `harness intake` is running on challenge {challenge.name!r} "
            f"({layout.challenge_dir(challenge.name)}); try again when it has finished"
        ) from None


def _intake_phase(challenge: Challenge, phase: PhaseSpec, layout: ResultsLayout, log) -> PhaseIntake:
    record = read_phase_record(layout, challenge, phase) or empty_record(challenge, phase)
    outcome = PhaseIntake(phase.name, record, path=layout.phase_intake(challenge.name, phase.name))
    uploads = record.uploads
    by_stat = {(u.team, u.name, u.size_bytes, u.mtime_ns): u for u in uploads}
    known = {(u.team, u.name, u.sha256) for u in uploads}
    others = _other_phase_uploads(layout, challenge, phase)
    teams = load_teams(layout, challenge.name)
    teams_changed = False
    similar = _Similarity(layout, challenge)

    @functools.cache
    def task_types() -> list[str]:  # read only for a file that lacks something (its data may not exist yet)
        return sorted({task.type for task in phase.task_registry().values()})

    for upload in discover(challenge, phase, warn=outcome.warnings.append):
        if (upload.team, upload.name, upload.size, upload.mtime_ns) in by_stat:
            continue
        # the size limit before any byte is read: an oversized upload is rejected unhashed
        digest = sha256_file(upload.path) if 0 < upload.size <= DEFAULT_MAX_SIZE else None
        if (upload.team, upload.name, digest) in known and digest is not None:
            continue  # touched, not changed
        if upload.problem is None:
            teams_changed |= teams.meet(challenge, upload.team, upload.display_name, upload.submitted_at)
        entry, report = decide(challenge, phase, upload, digest, uploads, others, log, task_types=task_types)
        if entry.status == ACCEPTED:
            entry.similar = similar.check(phase.name, entry, report, log)
        write_entry_record(layout.phase(challenge.name, phase.name), entry, report)  # the whole report
        uploads.append(entry)
        known.add((upload.team, upload.name, digest))
        outcome.new.append(entry)
        # recorded at once: an intake stopped halfway (a hundred validations take a while) keeps
        # every verdict it reached, and the next one goes on from there
        record.updated = _now()
        record.write(layout.phase_intake(challenge.name, phase.name))
        if teams_changed:
            teams.save(layout)
            teams_changed = False
    for warning in outcome.warnings:
        log(f"warning: {warning}")
    return outcome


def _other_phase_uploads(layout: ResultsLayout, challenge: Challenge, phase: PhaseSpec) -> list[UploadRecord]:
    out = []
    for other in challenge.phases:
        if other.name != phase.name:
            recorded = read_phase_record(layout, challenge, other)
            out += recorded.uploads if recorded is not None else []
    return out


class _Similarity:
    """Compares each newly accepted upload's fingerprint (in its validation report) with every
    accepted upload of the other teams, in all phases, and with the challenge's
    ``reference_checkpoints``; the flagged pairs go to the organizers only (the entry's
    ``similar`` list, its intake record, `harness status`), never to a team's feedback, and
    nothing is rejected for them. Everything is read when the first accepted upload needs it."""

    def __init__(self, layout: ResultsLayout, challenge: Challenge):
        self.layout, self.challenge = layout, challenge
        self.known: list[tuple[str, UploadRecord, Any]] | None = None  # (phase, upload, decoded print)
        self.references: list[tuple[str, Any]] | None = None

    def _entry_print(self, phase: str, upload: UploadRecord) -> Any:
        from harness.submission.fingerprint import decode

        path = self.layout.phase(self.challenge.name, phase).intake_record(upload.entry)
        try:
            fp = IntakeRecord.read(path).report.get("fingerprint")
        except ResultsFileError:
            return None  # an unreadable record: `harness status` reports it; nothing to compare
        return decode(fp) if isinstance(fp, dict) and fp.get("tensors") else None

    def _load(self) -> None:
        from harness.submission.fingerprint import decode

        self.known = []
        for phase in self.challenge.phases:
            recorded = read_phase_record(self.layout, self.challenge, phase)
            for upload in recorded.uploads if recorded is not None else []:
                if upload.status == ACCEPTED:
                    decoded = self._entry_print(phase.name, upload)
                    if decoded is not None:
                        self.known.append((phase.name, upload, decoded))
        prints = reference_fingerprints(self.layout, self.challenge)
        self.references = [(str(p), decode(fp)) for p, fp in prints.items()]

    def check(self, phase: str, entry: UploadRecord, report: dict | None, log: Callable[[str], None]) -> list[dict]:
        """The flagged pairs of a newly accepted ``entry`` (``report``: its validation report)."""
        from harness.submission.fingerprint import compare, decode

        fp = (report or {}).get("fingerprint")
        if not isinstance(fp, dict) or not fp.get("tensors"):
            return []
        if self.known is None or self.references is None:
            self._load()
        assert self.known is not None and self.references is not None
        mine = decode(fp)
        found = []
        for other_phase, other, theirs in self.known:
            if other.team == entry.team or other.track != entry.track:
                continue
            figures = compare(mine, theirs)
            if figures.pop("similar"):
                found.append(
                    {"entry": other.entry, "team": other.team, "phase": other_phase, "file": other.file, **figures}
                )
        for path, theirs in self.references:
            figures = compare(mine, theirs)
            if figures.pop("similar"):
                found.append({"reference": path, "file": path, **figures})
        for pair in found:
            what = (
                f"reference checkpoint {pair['file']}"
                if "reference" in pair
                else f"entry {pair['entry']} of team {pair['team']!r}"
            )
            log(
                f"intake {phase}: {entry.entry} is similar to {what}: {pair['share']:.0%} of {pair['compared']} "
                f"stem/encoder tensors alike (median r {pair['median']}); for the organizers to judge, not rejected"
            )
        self.known.append((phase, entry, mine))
        return found


def reference_fingerprints(layout: ResultsLayout, challenge: Challenge) -> dict[Path, dict]:
    """path -> fingerprint of each of the challenge's ``reference_checkpoints``, made once per
    file (its size and mtime) and kept in ``ResultsLayout.reference_fingerprints``; a reference
    that does not load is a ``ChallengeError`` naming it."""
    if not challenge.reference_checkpoints:
        return {}
    import os

    from harness.submission import SubmissionError, load_submission
    from harness.submission.fingerprint import VERSION, fingerprint

    cache_path = layout.reference_fingerprints(challenge.name)
    try:
        cache = read_json(cache_path) if cache_path.is_file() else {}
    except (OSError, ValueError):
        cache = {}  # a cache: made again
    out, changed = {}, False
    for path in challenge.reference_checkpoints:
        info = os.stat(path)
        stamp = [info.st_size, info.st_mtime_ns, VERSION]
        kept = cache.get(str(path)) if isinstance(cache, dict) else None
        if not (isinstance(kept, dict) and kept.get("stamp") == stamp and isinstance(kept.get("fingerprint"), dict)):
            try:
                sub = load_submission(path)
            except SubmissionError as e:
                raise ChallengeError(f"{challenge.source}: reference_checkpoints: {e}") from None
            kept = {"stamp": stamp, "track": sub.track, "fingerprint": fingerprint(sub.weights, sub.track)}
            cache[str(path)], changed = kept, True
        out[path] = kept["fingerprint"]
    if changed:
        write_json_atomic(cache_path, cache)
    return out


#: What stands for the team in the entry id of an upload whose team id is not usable: the id
#: names folders, and such a team id (``../../x``, an absolute path) must never become one.
UNUSABLE_TEAM = "unusable"


def entry_id(phase: str, team: str, sha256: str | None, taken: set[str]) -> str:
    """``<phase>-<team>-<sha256[:12]>``, with ``-2``, ``-3``, ... when that id is ``taken``; a team
    id that is no name is ``UNUSABLE_TEAM`` in it (the record keeps the id as it came)."""
    shown = team if re.fullmatch(NAME_PATTERN, team) else UNUSABLE_TEAM
    base = f"{phase}-{shown}-{sha256[:12] if sha256 else 'unread'}"
    name, n = base, 1
    while name in taken:
        n += 1
        name = f"{base}-{n}"
    return name


def decide(
    challenge: Challenge,
    phase: PhaseSpec,
    upload: Upload,
    digest: str | None,
    uploads: list[UploadRecord],
    others: list[UploadRecord],
    log: Callable[[str], None],
    *,
    task_types: Callable[[], Sequence[str]] = tuple,
) -> tuple[UploadRecord, dict | None]:
    """The verdict on one new upload, given the uploads already recorded (``uploads``: this
    phase's, ``others``: the other phases') and the task types of the phase's registry
    (``task_types()``, asked only of a valid file that lacks a part some jobs need: it is rejected
    when one of the phase's task types needs it); with the validation report, None when the file
    was not validated."""
    entry = UploadRecord(
        entry=entry_id(phase.name, upload.team, digest, {u.entry for u in uploads}),
        team=upload.team,
        name=upload.name,
        file=str(upload.path),
        sha256=digest,
        size_bytes=upload.size,
        mtime_ns=upload.mtime_ns,
        submitted_at=upload.submitted_at.isoformat(timespec="seconds"),
        time_source=upload.time_source,
        declared_track=upload.track,
        track=upload.track,
        display_name=upload.display_name,
        method_name=upload.method_name,
        order=len(uploads) + 1,
        status=REJECTED,
        rejection=None,
        reasons=[],
        checked=_now(),
    )
    report: dict | None = None

    def reject(kind: str, reason: str) -> tuple[UploadRecord, dict | None]:
        entry.rejection, entry.reasons = kind, entry.reasons or [reason]
        log(f"intake {phase.name}: {upload.name} -> {entry.entry}: REJECTED ({kind}): {reason}")
        return entry, report

    if upload.problem is not None:
        return reject("unusable", upload.problem)
    window = phase.window_problem(upload.submitted_at)
    if window is not None:
        return reject("window", window)
    if digest is None:  # over the size limit or empty (see _intake_phase): never read
        try:
            check_file(upload.path, DEFAULT_MAX_SIZE)
        except SubmissionError as e:
            return reject("invalid", str(e).removeprefix(f"{upload.path}: "))
        return reject("invalid", "the file changed during intake: upload it again")
    same = [u for u in uploads + others if u.sha256 == digest]
    theirs = [u for u in same if u.team != upload.team]
    if theirs:
        first = theirs[0]
        entry.duplicate_of = first.entry
        return reject(
            "duplicate",
            f"the same bytes (sha256 {digest[:12]}...) as entry {first.entry} of team {first.team!r} "
            f"({first.name}, uploaded {first.submitted_at}): the same weights count once, "
            "for the team that uploaded them first",
        )
    mine = [u for u in uploads if u.sha256 == digest and u.team == upload.team]
    if mine:
        entry.duplicate_of = mine[0].entry
        return reject(
            "resubmission",
            f"the same bytes as your earlier upload {mine[0].name} (entry {mine[0].entry}, "
            f"{mine[0].status}): it does not count again",
        )
    from harness.submission import validate_submission

    log(f"intake {phase.name}: validating {upload.name}")
    validated = validate_submission(
        upload.path, track=upload.track, max_size=DEFAULT_MAX_SIZE, sha256=digest
    )  # hashed once, above
    validation = validated
    entry.track = validation.track or upload.track
    entry.warnings = list(validation.warnings)
    report = validation.to_dict()
    if not validation.valid:
        entry.reasons = list(validation.errors) or ["the file could not be read"]
        return reject("invalid", validation.errors[0] if validation.errors else "the file could not be read")
    track = entry.track
    if track not in challenge.tracks:
        return reject("track", f"a valid {track} checkpoint, but this challenge runs {', '.join(challenge.tracks)}")
    from harness.submission import unrunnable_problem

    lacks = report.get("lacks")
    problem = unrunnable_problem(report, track, get_recipe(challenge.recipe), task_types()) if lacks else None
    if problem is not None:
        return reject("tasks", problem)
    used = [u for u in uploads if u.team == upload.team and u.track == track and uses_quota(u)]
    if len(used) >= phase.submission_limit:
        listed = ", ".join(f"{u.entry} ({u.name})" for u in used)
        return reject(
            "quota",
            f"over the limit: phase {phase.name!r} accepts {phase.submission_limit} submission(s) per team "
            f"and track, and team {upload.team!r} has used {len(used)} in {track}: {listed}",
        )
    entry.status = ACCEPTED
    log(
        f"intake {phase.name}: {upload.name} -> {entry.entry}: accepted ({track}, "
        f"{len(used) + 1} of {phase.submission_limit})"
    )
    return entry, report


def write_entry_record(phase_layout: ResultsLayout, entry: UploadRecord, report: dict | None) -> None:
    """The per-entry intake record in the phase's results folder, in `harness evaluate`'s format
    (``valid`` is True for an accepted upload only), and its text report."""

    report = report or {"errors": list(entry.reasons), "warnings": list(entry.warnings)}
    if entry.status == REJECTED and entry.rejection != "invalid":
        report = {**report, "errors": [*report.get("errors", []), *entry.reasons]}
    record = IntakeRecord(
        entry=entry.entry,
        file=entry.file,
        sha256=entry.sha256,
        valid=entry.status == ACCEPTED,
        track=entry.track,
        harness_version=__version__,
        checked=entry.checked,
        report=report,
        team=entry.team,
        rejection=entry.rejection,
        duplicate_of=entry.duplicate_of,
        # organizers only: uploads and reference checkpoints its weights look derived from
        similar=list(entry.similar or []),
    )
    lines = [f"{entry.entry} ({entry.name}): {entry.status.upper()}"]
    lines += [f"  error: {r}" for r in record.errors]
    lines += [f"  warning: {w}" for w in record.report.get("warnings", [])]
    record.write(phase_layout, "\n".join(lines))


def withdraw(
    challenge: Challenge,
    phase: PhaseSpec,
    results: Path,
    entry: str,
    reason: str,
    *,
    log: Callable[[str], None] = print,
) -> UploadRecord:
    """The organizers withdraw an accepted upload (a broken rule, the team's own request): it is
    recorded as rejected (``withdrawn``, with the reason and the time) and leaves the phase's
    matrix and ranking (under ``last-valid`` the team's previous accepted upload counts again); its
    runs stay on disk; it keeps its quota slot. The only verdict that is ever revised."""

    if not reason.strip():
        raise ChallengeError("--withdraw needs a --reason: the team reads it in its feedback")
    layout = ResultsLayout(results)
    try:
        with ResultsLock(layout.challenge_dir(challenge.name), "harness intake --withdraw"):
            record = require_phase_record(layout, challenge, phase)
            upload = next((u for u in record.uploads if u.entry == entry), None)
            if upload is None:
                raise ChallengeError(f"phase {phase.name!r} has no upload with entry id {entry!r}")
            if upload.status != ACCEPTED:
                raise ChallengeError(
                    f"entry {entry} was not accepted ({upload.rejection}): there is nothing to withdraw"
                )
            when = _now()
            upload.status, upload.rejection, upload.withdrawn = REJECTED, WITHDRAWN, when
            upload.reasons = [f"withdrawn by the organizers on {when}: {reason.strip()}"]
            record.updated = when
            record.write(layout.phase_intake(challenge.name, phase.name))  # what counts
            phase_layout = layout.phase(challenge.name, phase.name)
            path = phase_layout.intake_record(entry)
            try:
                previous = IntakeRecord.read(path).report if path.is_file() else None
            except ResultsFileError as e:
                raise ChallengeError(f"cannot withdraw {entry}: {e}") from None
            write_entry_record(phase_layout, dataclasses.replace(upload, checked=when), previous)
    except ResultsLockedError:
        raise ChallengeError(
            f"another `harness intake` is running on challenge {challenge.name!r}; try again when it has finished"
        ) from None
    log(f"intake {phase.name}: {upload.name} -> {entry}: WITHDRAWN: {reason.strip()}")
    return upload


def intake_phases(
    challenge: Challenge, results: Path, phase: str | None = None, *, log: Callable[[str], None] = print
) -> list[PhaseIntake]:
    """``intake_phase`` of the phase ``phase``, or of every phase in the file's order."""
    return [intake_phase(challenge, p, results, log=log) for p in challenge.select_phases(phase)]
