"""What has arrived in a phase's inbox: one ``Upload`` per file, in the order intake takes them.

Uploads arrive either as files ``<inbox>/<phase>/<team>/<file>.pth`` (the team is the folder's
name; only ``*.pth`` files directly in a team folder count, so a half-copied ``*.part`` or a
README is never an upload), or as the rows of the phase's manifest CSV (columns ``team, file``
required; ``track, submitted_at, display_name, method_name`` optional; ``file`` relative to the
manifest's folder; UTF-8, with or without the byte-order mark a spreadsheet writes). A manifest
row whose file does not exist yet is left for a later intake (a warning says so); a manifest
without the required columns, or a row without team or file, or an unreadable ``submitted_at``,
is a ``ChallengeError`` naming the line.

Order: by upload time (the manifest's ``submitted_at``, else the file's mtime), ties by team and
file name, so the quota and duplicate decisions never depend on the file system's listing order.
"""

from __future__ import annotations

import csv
import datetime as dt
import re
from dataclasses import dataclass
from pathlib import Path

from harness.challenge.config import NAME_PATTERN, Challenge, ChallengeError, PhaseSpec

MANIFEST_REQUIRED = ("team", "file")
MANIFEST_OPTIONAL = ("track", "submitted_at", "display_name", "method_name")
UPLOAD_SUFFIX = ".pth"


@dataclass(frozen=True)
class Upload:
    """One uploaded file as it arrived. ``problem``: why it is refused before it is read (a team
    id that is not a name, a track the manifest gives that the challenge does not have)."""

    team: str
    path: Path
    #: How the upload is named in records and messages: ``<team>/<file name>``.
    name: str
    submitted_at: dt.datetime
    #: ``manifest`` or ``mtime``: where ``submitted_at`` comes from.
    time_source: str
    size: int
    mtime_ns: int
    track: str | None = None
    display_name: str | None = None
    method_name: str | None = None
    problem: str | None = None

    @property
    def order_key(self) -> tuple:
        return (self.submitted_at, self.team, self.name)


def discover(challenge: Challenge, phase: PhaseSpec, warn=print) -> list[Upload]:
    """Every upload of ``phase`` in intake order (see the module docstring)."""
    if phase.manifest is not None:
        uploads = _from_manifest(challenge, phase.manifest, warn)
    else:
        uploads = _from_folders(challenge, challenge.phase_inbox(phase))
    return sorted(uploads, key=lambda u: u.order_key)


def _stat_upload(team: str, path: Path, **kw) -> Upload:
    st = path.stat()
    when = kw.pop("submitted_at", None)
    source = "manifest" if when is not None else "mtime"
    if when is None:
        when = dt.datetime.fromtimestamp(st.st_mtime, tz=dt.timezone.utc)
    return Upload(
        team=team,
        path=path.resolve(),
        name=f"{team}/{path.name}",
        submitted_at=when,
        time_source=source,
        size=st.st_size,
        mtime_ns=st.st_mtime_ns,
        **kw,
    )


def team_problem(team: str) -> str | None:
    """Why ``team`` cannot be a team id, or None. A team id becomes a folder and part of entry ids,
    so it must be a whole plain name (``fullmatch``: ``$`` alone lets a trailing newline through)."""
    if re.fullmatch(NAME_PATTERN, team) and not team.lower().startswith("baseline"):
        return None
    return (
        f"team id {team!r} is not usable: letters, digits, '_' and '-' only, at most 64, not starting with 'baseline'"
    )


def _from_folders(challenge: Challenge, folder: Path) -> list[Upload]:
    if not folder.is_dir():
        return []
    out = []
    for team_dir in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for path in sorted(team_dir.iterdir()):
            if path.is_file() and path.suffix == UPLOAD_SUFFIX and not path.name.startswith("."):
                out.append(_stat_upload(team_dir.name, path, problem=team_problem(team_dir.name)))
    return out


def parse_time(text: str, where: str) -> dt.datetime:
    """An ISO 8601 upload time; without a zone it is UTC (manifests of upload platforms are)."""
    try:
        when = dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ChallengeError(f"{where}: submitted_at {text!r} is not an ISO 8601 time") from None
    return when if when.tzinfo is not None else when.replace(tzinfo=dt.timezone.utc)


def _from_manifest(challenge: Challenge, manifest: Path, warn) -> list[Upload]:
    try:
        # utf-8-sig: a spreadsheet's "CSV UTF-8" starts with a byte-order mark, else the first
        # column would be '\ufeffteam'
        with open(manifest, encoding="utf-8-sig", newline="") as f:
            reader = csv.DictReader(f)
            columns = [c.strip() for c in reader.fieldnames or []]
            rows = [{(k or "").strip(): v for k, v in row.items()} for row in reader]
    except OSError as e:
        raise ChallengeError(f"{manifest}: cannot read: {e.strerror or e}") from None
    except (ValueError, csv.Error) as e:
        raise ChallengeError(f"{manifest}: does not parse: {e}") from None
    known = ", ".join((*MANIFEST_REQUIRED, *MANIFEST_OPTIONAL))
    missing = [c for c in MANIFEST_REQUIRED if c not in columns]
    if missing:
        raise ChallengeError(
            f"{manifest}: missing column(s) {missing}; the header has {columns!r} (a character shown "
            f"escaped is one a spreadsheet or editor put there); columns: {known}"
        )
    unknown = [c for c in columns if c not in (*MANIFEST_REQUIRED, *MANIFEST_OPTIONAL)]
    if unknown:
        raise ChallengeError(f"{manifest}: unknown column(s) {unknown!r}; columns: {known}")
    out = []
    for line, row in enumerate(rows, start=2):
        where = f"{manifest}: line {line}"
        team, file = (row.get("team") or "").strip(), (row.get("file") or "").strip()
        if not team or not file:
            raise ChallengeError(f"{where}: 'team' and 'file' must not be empty")
        path = Path(file)
        path = path if path.is_absolute() else manifest.parent / path
        if not path.is_file():
            warn(f"{where}: {path} does not exist (yet): left for a later intake")
            continue
        track = (row.get("track") or "").strip() or None
        problem = team_problem(team)
        if problem is None and track is not None and track not in challenge.tracks:
            problem = f"track {track!r} is not a track of challenge {challenge.name!r} ({', '.join(challenge.tracks)})"
        when_text = (row.get("submitted_at") or "").strip()
        out.append(
            _stat_upload(
                team,
                path,
                submitted_at=parse_time(when_text, where) if when_text else None,
                track=track,
                display_name=(row.get("display_name") or "").strip() or None,
                method_name=(row.get("method_name") or "").strip() or None,
                problem=problem,
            )
        )
    return out
