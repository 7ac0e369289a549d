"""Intake: each submission's verdict, recorded once in its intake record (``IntakeRecord``, the one
writer and reader of ``ResultsLayout.intake_record`` and ``intake_report``), for a plain
`harness evaluate` (``intake_files``: the files of the command line) and for a challenge phase
(harness/challenge/intake.py decides its inbox uploads and records each verdict here).

The record lives in jobs/ because both need it and challenge/ sits above jobs/: evaluate plans
from it and `harness status` counts its rejections. A reader that wants only what the matrix
needs of an accepted entry takes ``IntakeRecord.accepted_entry`` (a ``matrix.Entry``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from harness import __version__
from harness.jobs.errors import EvaluateError
from harness.jobs.matrix import Entry
from harness.runs import ResultsFileError, ResultsLayout, entry_name, read_json, write_json_atomic, write_text_atomic
from harness.submission.checkpoint import sha256_file


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def _check_fields(
    data: Any, kinds: dict[str, tuple[type, ...]], required: Sequence[str], where: str, what: str
) -> None:
    """``ResultsFileError`` (naming ``where``) unless ``data`` is an object with every ``required``
    field and each field of ``kinds`` of its type (``int`` is never a bool)."""
    if not isinstance(data, dict):
        raise ResultsFileError(where, f"not {what}: a JSON {type(data).__name__}, not an object")
    missing = [k for k in required if k not in data]
    if missing:
        raise ResultsFileError(where, f"not {what}: no {', '.join(repr(k) for k in missing)}")
    for name, allowed in kinds.items():
        value = data.get(name)
        if name in data and (not isinstance(value, allowed) or (isinstance(value, bool) and bool not in allowed)):
            wanted = " or ".join("null" if k is type(None) else k.__name__ for k in allowed)
            raise ResultsFileError(where, f"{what}: field {name!r} is {value!r}, not {wanted}")


#: field -> the JSON types it may hold (None: absent or null).
_KINDS: dict[str, tuple[type, ...]] = {
    "entry": (str,),
    "file": (str,),
    "sha256": (str, type(None)),
    "valid": (bool,),
    "track": (str, type(None)),
    "harness_version": (str,),
    "checked": (str,),
    "report": (dict,),
    "recipe": (str, type(None)),
    "task_types": (list, type(None)),
    "duplicate_of": (str, type(None)),
    "team": (str, type(None)),
    "rejection": (str, type(None)),
    "similar": (list, type(None)),
    "jobs": (list, type(None)),
}
_REQUIRED = ("entry", "file", "sha256", "valid", "track", "harness_version", "checked", "report")


@dataclass
class IntakeRecord:
    """One entry's intake verdict (``intake.json``). ``sha256`` is None for a file never read (over
    the size limit, empty); ``track`` for a file whose track was not found; ``report`` is the
    validation report (``ValidationReport.to_dict()``: ``errors``, ``warnings``, ...), its
    ``errors`` the reasons of a rejection."""

    entry: str
    file: str
    sha256: str | None
    valid: bool
    track: str | None
    harness_version: str
    checked: str
    report: dict[str, Any]
    #: plain intake: what the verdict was reached under; it is reused only for the same ones
    recipe: str | None = None
    task_types: list[str] | None = None
    #: the entry of the earlier, identical file this one is rejected for
    duplicate_of: str | None = None
    #: a challenge upload's: its team, the kind of its rejection, the uploads and reference
    #: checkpoints its weights look derived from (organizers only, never in a team's feedback)
    team: str | None = None
    rejection: str | None = None
    similar: list[dict] | None = None
    #: a rejected entry's would-be jobs (``task``, ``fold``), which `harness status` counts
    jobs: list[dict] | None = None
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def errors(self) -> list[str]:
        return list(self.report.get("errors") or [])

    def accepted_entry(self) -> Entry:
        """What the job matrix needs of an accepted entry."""
        assert self.valid and self.track is not None and self.sha256 is not None, self.entry
        return Entry(self.entry, Path(self.file), self.sha256, self.track)

    def to_dict(self) -> dict[str, Any]:
        """The record as written: every required field, the optional ones that are set."""
        data = {k: v for k, v in asdict(self).items() if k != "extra" and (k in _REQUIRED or v is not None)}
        return {**self.extra, **data}

    @classmethod
    def from_dict(cls, data: Any, where: str | Path) -> IntakeRecord:
        """The record of an intake.json's content; ``ResultsFileError`` names ``where`` and the
        field that is missing or of the wrong type."""
        _check_fields(data, _KINDS, _REQUIRED, str(where), "an intake record")
        known = {f.name for f in fields(cls)} - {"extra"}
        return cls(
            **{k: v for k, v in data.items() if k in known}, extra={k: v for k, v in data.items() if k not in known}
        )

    @classmethod
    def read(cls, path: Path) -> IntakeRecord:
        """The record in ``path`` (``ResultsLayout.intake_record``); ``ResultsFileError`` names the
        file when it is missing, does not parse or is no intake record."""
        try:
            data = read_json(path)
        except FileNotFoundError:
            raise ResultsFileError(path, "missing") from None
        except ValueError as e:
            raise ResultsFileError(path, f"does not parse: {e}") from None
        except OSError as e:
            raise ResultsFileError(path, f"cannot read: {e.strerror or e}") from None
        return cls.from_dict(data, path)

    def write(self, layout: ResultsLayout, text: str | None = None) -> None:
        """Record the verdict in ``layout`` (a results folder, or a challenge phase's), and its
        text report when ``text`` is given."""
        write_json_atomic(layout.intake_record(self.entry), self.to_dict())
        if text is not None:
            write_text_atomic(layout.intake_report(self.entry), text.rstrip("\n") + "\n")


def read_intake_records(layout: ResultsLayout) -> list[tuple[Path, IntakeRecord]]:
    """(path, record) of every intake record of ``layout`` that reads, by entry; one that does
    not is left out (the intake that wrote it, or evaluate, names it)."""
    out = []
    for path in layout.intake_records():
        try:
            out.append((path, IntakeRecord.read(path)))
        except ResultsFileError:
            continue
    return out


# ------------------------------------------------------------------------- plain submissions
@dataclass(frozen=True)
class Submitted:
    """One submission file of the command line. ``duplicate_of``: the entry of an earlier file
    with the same content (sha256), which this one is rejected for."""

    entry: str
    path: Path
    sha256: str
    duplicate_of: tuple[str, Path] | None = None


def resolve_submissions(paths: Sequence[Path]) -> list[Submitted]:
    """One ``Submitted`` per distinct file. A missing file, or two different files with the same
    entry name, is an error naming both; the same content under a second name is that entry's
    rejection (one set of weights, one entry: it is never trained twice, and a copy is noticed)."""

    if not paths:
        raise EvaluateError("no submission given")
    seen: dict[str, tuple[Path, str]] = {}
    by_digest: dict[str, tuple[str, Path]] = {}
    out = []
    for path in paths:
        path = Path(path)
        if not path.is_file():
            raise EvaluateError(f"{path}: no such submission file")
        name = entry_name(path.stem)
        digest = sha256_file(path)
        if name in seen:
            other, other_digest = seen[name]
            if other_digest != digest:
                raise EvaluateError(
                    f"entry name {name!r} is used by two different files: {other} "
                    f"(sha256 {other_digest[:12]}...) and {path} (sha256 {digest[:12]}...); rename one"
                )
            continue
        seen[name] = (path, digest)
        out.append(Submitted(name, path, digest, by_digest.get(digest)))
        by_digest.setdefault(digest, (name, path))
    return out


def duplicate_verdict(sub: Submitted) -> IntakeRecord:
    """The verdict on a file identical to an earlier one: rejected, naming both files."""

    assert sub.duplicate_of is not None  # intake_file calls it for a duplicate only
    entry, path = sub.duplicate_of
    error = (
        f"{sub.path} is identical to {path} (entry {entry!r}, sha256 {sub.sha256[:12]}...): "
        "the same weights are evaluated once, under the first name"
    )
    return IntakeRecord(
        entry=sub.entry,
        file=str(Path(sub.path).resolve()),
        sha256=sub.sha256,
        valid=False,
        track=None,
        harness_version=__version__,
        checked=_now(),
        report={"errors": [error], "warnings": []},
        duplicate_of=entry,
    )


def intake_file(
    sub: Submitted, layout: ResultsLayout, *, recipe, task_types: Sequence[str], write: bool, log: Callable[[str], None]
) -> IntakeRecord:
    """The verdict on one file of the command line: a duplicate's rejection, else its validation
    (or the verdict recorded for this very file, harness version, recipe and task types) and,
    unless ``write`` is False, its record. A valid file that lacks what some of the registry's
    ``task_types`` need under ``recipe`` (a ``Recipe``) is rejected: no job is dispatched that is
    known to fail."""

    if sub.duplicate_of is not None:
        record = duplicate_verdict(sub)
        log(f"intake {sub.entry}: REJECTED: {record.errors[0]}")
        if write:
            record.write(layout, record.errors[0])
        return record
    wanted = sorted(set(task_types))
    try:
        record = IntakeRecord.read(layout.intake_record(sub.entry))
        if (
            record.sha256 == sub.sha256
            and record.harness_version == __version__
            and record.recipe == recipe.name
            and record.task_types == wanted
            and not record.duplicate_of
        ):
            log(f"intake {sub.entry}: {'valid' if record.valid else 'REJECTED'} (recorded {record.checked})")
            return record
    except ResultsFileError:
        pass
    from harness.submission import unrunnable_problem, validate_submission

    log(f"intake {sub.entry}: validating {sub.path}")
    report = validate_submission(sub.path, sha256=sub.sha256)  # hashed once, by resolve_submissions
    record = IntakeRecord(
        entry=sub.entry,
        file=str(Path(sub.path).resolve()),
        sha256=report.sha256 or sub.sha256,
        valid=bool(report.valid),
        track=report.track,
        harness_version=__version__,
        checked=_now(),
        report=report.to_dict(),
        recipe=recipe.name,
        task_types=wanted,
    )
    text = report.format_text()
    problem = unrunnable_problem(record.report, report.track, recipe, wanted) if report.valid else None
    if problem:
        record.valid = False
        record.report["errors"] += [problem]
        text += f"\nREJECTED: {problem}"
    if write:
        record.write(layout, text)
    verdict = "valid" if record.valid else "REJECTED: " + "; ".join(record.errors)[:300]
    log(f"intake {sub.entry}: {verdict}")
    return record


def intake_files(
    subs: Sequence[Submitted],
    layout: ResultsLayout,
    *,
    recipe,
    task_types: Sequence[str],
    write: bool,
    log: Callable[[str], None],
) -> list[IntakeRecord]:
    """``intake_file`` of each file, in command-line order."""
    return [intake_file(s, layout, recipe=recipe, task_types=task_types, write=write, log=log) for s in subs]


# ------------------------------------------------------------------------- challenge uploads
_TEXT, _MAYBE_TEXT, _LIST = (str,), (str, type(None)), (list,)
_UPLOAD_KINDS: dict[str, tuple[type, ...]] = {
    **dict.fromkeys(("entry", "team", "name", "file", "submitted_at", "status", "checked"), _TEXT),
    **dict.fromkeys(("sha256", "track", "rejection", "duplicate_of", "time_source"), _MAYBE_TEXT),
    **dict.fromkeys(("declared_track", "display_name", "method_name", "withdrawn"), _MAYBE_TEXT),
    "size_bytes": (int,),
    "mtime_ns": (int,),
    "order": (int,),
    "reasons": _LIST,
    "warnings": _LIST,
    "similar": (list, type(None)),
}
_UPLOAD_REQUIRED = (
    "entry",
    "team",
    "name",
    "file",
    "sha256",
    "size_bytes",
    "mtime_ns",
    "submitted_at",
    "track",
    "order",
    "status",
    "rejection",
    "reasons",
    "checked",
)


@dataclass
class UploadRecord:
    """One upload of a challenge phase as its intake decided it (an item of the phase record's
    ``uploads``; harness/challenge/intake.py decides it). ``status`` is ``accepted`` or
    ``rejected``, ``rejection`` the kind and ``reasons`` the words; ``sha256`` is None for a file
    never read; ``track`` the one validation found (else the manifest's, else None)."""

    entry: str
    team: str
    name: str
    file: str
    sha256: str | None
    size_bytes: int
    mtime_ns: int
    submitted_at: str
    track: str | None
    order: int
    status: str
    rejection: str | None
    reasons: list[str]
    checked: str
    time_source: str | None = None
    declared_track: str | None = None
    display_name: str | None = None
    method_name: str | None = None
    warnings: list[str] = field(default_factory=list)
    duplicate_of: str | None = None
    #: accepted uploads: the uploads and reference checkpoints its weights look derived from
    similar: list[dict] | None = None
    #: when the organizers withdrew it (``rejection`` is then ``withdrawn``)
    withdrawn: str | None = None
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    def to_dict(self) -> dict[str, Any]:
        data = {k: v for k, v in asdict(self).items() if k != "extra"}
        for optional in ("similar", "withdrawn"):  # written only where they apply
            if data[optional] is None:
                del data[optional]
        return {**self.extra, **data}

    @classmethod
    def from_dict(cls, data: Any, where: str) -> UploadRecord:
        _check_fields(data, _UPLOAD_KINDS, _UPLOAD_REQUIRED, where, "an upload record")
        known = {f.name for f in fields(cls)} - {"extra"}
        return cls(
            **{k: v for k, v in data.items() if k in known}, extra={k: v for k, v in data.items() if k not in known}
        )


@dataclass
class PhaseRecord:
    """A challenge phase's intake record (``ResultsLayout.phase_intake``: its ``inbox.json``):
    every upload ever taken in, in intake order. One reader (``read``), one writer (``write``)."""

    challenge: str
    phase: str
    harness_version: str
    uploads: list[UploadRecord] = field(default_factory=list)
    updated: str | None = None
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "challenge": self.challenge,
            "phase": self.phase,
            "harness_version": self.harness_version,
            "uploads": [u.to_dict() for u in self.uploads],
        }
        if self.updated is not None:
            data["updated"] = self.updated
        return {**self.extra, **data}

    @classmethod
    def read(cls, path: Path) -> PhaseRecord:
        """The record in ``path``; ``ResultsFileError`` names the file, and the upload (its index)
        and field when one is missing or of the wrong type."""
        try:
            data = read_json(path)
        except FileNotFoundError:
            raise ResultsFileError(path, "missing") from None
        except ValueError as e:
            raise ResultsFileError(path, f"does not parse: {e}") from None
        except OSError as e:
            raise ResultsFileError(path, f"cannot read: {e.strerror or e}") from None
        kinds = {"challenge": _TEXT, "phase": _TEXT, "harness_version": _TEXT, "uploads": _LIST, "updated": _MAYBE_TEXT}
        _check_fields(data, kinds, ("challenge", "phase", "harness_version", "uploads"), str(path), "an intake record")
        uploads = [UploadRecord.from_dict(u, f"{path}: uploads[{i}]") for i, u in enumerate(data["uploads"])]
        return cls(
            data["challenge"],
            data["phase"],
            data["harness_version"],
            uploads,
            data.get("updated"),
            extra={k: v for k, v in data.items() if k not in kinds},
        )

    def write(self, path: Path) -> None:
        write_json_atomic(path, self.to_dict())
