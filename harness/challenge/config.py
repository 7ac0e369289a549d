"""``challenge.yaml``: what a challenge is (its tracks, recipe and phases), validated on load.

Like a task file (harness/tasks/spec.py) the model is frozen and refuses unknown keys; every
problem is a ``ChallengeError`` naming the file and the field (``phases.1.counts``). Relative
paths (a phase's task registry, the inbox, a manifest) are resolved against the file's folder.

Dates (``opens``, ``closes``) are ISO 8601 times with a zone (``2025-06-01T00:00:00Z``); a bare
date means 00:00 UTC of that day; a time without a zone is refused (it would mean another instant
on every organizer's machine).
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator

from harness.config_files import describe_validation, read_yaml_mapping
from harness.recipes import DEFAULT_RECIPE, RecipeError, get_recipe
from harness.tasks import TaskSpecError, load_registry
from harness.tracks import TRACKS

#: A challenge, phase or team name: it becomes a folder and part of entry ids.
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"
#: Which of a team's accepted uploads the ranking takes: its last one (per track), or each one.
COUNTS = ("last-valid", "each")
#: How the public export names an entry: the team's display name, or its anonymous id.
PUBLIC_NAMES = ("display", "anonymous")


class ChallengeError(ValueError):
    """A challenge file (or what it points at) cannot be used; the message names the file and the
    field, or the phase and the problem."""


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _base(info: Any) -> Path:
    context = getattr(info, "context", None) or {}
    return Path(context.get("base", "."))


def _resolve(value: Any, info: Any) -> Any:
    if value is None or not isinstance(value, str | Path):
        return value
    path = Path(value).expanduser()
    return path if path.is_absolute() else (_base(info) / path).resolve()


def _instant(value: Any) -> Any:
    """A zone-aware datetime from a YAML date or time (or an ISO string); a naive time is refused."""
    if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
        return dt.datetime(value.year, value.month, value.day, tzinfo=dt.timezone.utc)
    if isinstance(value, str):
        try:
            value = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(f"{value!r} is not an ISO 8601 time (e.g. 2025-06-01T00:00:00Z)") from None
    if isinstance(value, dt.datetime) and value.tzinfo is None:
        raise ValueError(f"{value.isoformat()} has no time zone: write e.g. {value.isoformat()}Z for UTC")
    return value


class TeamSpec(_Frozen):
    """What the organizers know of a team beyond its id (its folder name in the inbox)."""

    #: The name shown on a public leaderboard that is not anonymous (default: the team id).
    display_name: str = Field(min_length=1, max_length=120)


class PhaseSpec(_Frozen):
    """One phase (e.g. validation, test): its tasks, quota, window and ranking rule."""

    name: str = Field(pattern=NAME_PATTERN)
    description: str = ""
    #: The task registry folder this phase evaluates on (harness/tasks).
    tasks: Path
    #: Accepted uploads per team and track; an upload beyond it is rejected, naming the limit.
    submission_limit: int = Field(ge=1)
    #: Uploads before ``opens`` or after ``closes`` are rejected, with the time and the window.
    opens: dt.datetime | None = None
    closes: dt.datetime | None = None
    #: Whether the results may be published (`harness publish` exports nothing otherwise,
    #: unless given --publish).
    public: bool = False
    counts: Literal["last-valid", "each"] = "last-valid"
    #: A CSV of uploads (team, track, file, submitted_at, display_name, method_name), files
    #: relative to its folder; without one, uploads are ``<inbox>/<phase>/<team>/*.pth``.
    manifest: Path | None = None
    #: Seed repeats of the baselines' jobs (and of ``noise_entries``, entry ids) per task and
    #: fold: the leaderboard's noise floor (docs/metrics.md); never ranked.
    noise_repeats: int = Field(0, ge=0)
    noise_entries: tuple[str, ...] = ()

    @field_validator("name")
    @classmethod
    def _not_baseline(cls, value: str) -> str:
        if value.lower().startswith("baseline"):
            raise ValueError("a phase name may not start with 'baseline' (entry ids start with it)")
        return value

    @field_validator("tasks", "manifest", mode="before")
    @classmethod
    def _paths(cls, value: Any, info: Any) -> Any:
        return _resolve(value, info)

    @field_validator("tasks")
    @classmethod
    def _registry_exists(cls, value: Path) -> Path:
        if not value.is_dir():
            raise ValueError(f"task registry folder {value} does not exist")
        return value

    @field_validator("manifest")
    @classmethod
    def _manifest_exists(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError(f"manifest {value} does not exist")
        return value

    @field_validator("opens", "closes", mode="before")
    @classmethod
    def _dates(cls, value: Any) -> Any:
        return _instant(value)

    @model_validator(mode="after")
    def _window(self) -> PhaseSpec:
        if self.opens is not None and self.closes is not None and self.closes <= self.opens:
            raise ValueError(f"closes ({self.closes.isoformat()}) must be after opens ({self.opens.isoformat()})")
        return self

    def task_registry(self) -> dict:
        """The phase's tasks (name -> TaskSpec), from its task registry; a registry that cannot
        be loaded is a ``ChallengeError`` naming the phase and the file."""

        try:
            return load_registry(self.tasks)
        except TaskSpecError as e:
            raise ChallengeError(f"phase {self.name!r}: {e}") from None

    def window_problem(self, when: dt.datetime) -> str | None:
        """Why an upload at ``when`` is outside the phase's window, or None."""
        shown = when.isoformat(timespec="seconds")
        if self.opens is not None and when < self.opens:
            return f"uploaded at {shown}, before phase {self.name!r} opens ({self.opens.isoformat()})"
        if self.closes is not None and when > self.closes:
            return f"uploaded at {shown}, after phase {self.name!r} closed ({self.closes.isoformat()})"
        return None


class Challenge(_Frozen):
    """A challenge file: ``load_challenge`` reads one."""

    name: str = Field(pattern=NAME_PATTERN)
    description: str = ""
    #: The tracks a submission may be of: a subset of harness.tracks.TRACKS.
    tracks: tuple[str, ...] = Field(min_length=1)
    #: The fine-tuning recipe every phase runs (harness/recipes.py).
    recipe: str = DEFAULT_RECIPE
    #: The folder uploads arrive in, as ``<inbox>/<phase>/<team>/<file>.pth`` (default: the folder
    #: ``submissions`` beside this file).
    inbox: Path = Field(default=Path("submissions"), validate_default=True)
    #: How the public export names a team: its display name or its anonymous id.
    public_names: Literal["display", "anonymous"] = "display"
    teams: dict[str, TeamSpec] = Field(default_factory=dict)
    phases: tuple[PhaseSpec, ...] = Field(min_length=1)
    #: Checkpoints every accepted upload is compared with (public pre-trained weights, say): an
    #: upload derived from one is listed for the organizers (harness/submission/fingerprint.py).
    reference_checkpoints: tuple[Path, ...] = ()
    _source: Path | None = PrivateAttr(default=None)

    @field_validator("tracks")
    @classmethod
    def _tracks(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [t for t in value if t not in TRACKS]
        if unknown:
            raise ValueError(f"unknown track(s) {unknown}; tracks: {', '.join(TRACKS)}")
        if len(set(value)) != len(value):
            raise ValueError(f"a track is listed twice: {list(value)}")
        return value

    @field_validator("recipe")
    @classmethod
    def _recipe(cls, value: str) -> str:
        try:
            get_recipe(value, where="recipe")
        except RecipeError as e:
            raise ValueError(str(e).removeprefix("recipe: ")) from None
        return value

    @field_validator("inbox", mode="before")
    @classmethod
    def _inbox(cls, value: Any, info: Any) -> Any:
        return _resolve(value, info)

    @field_validator("reference_checkpoints", mode="before")
    @classmethod
    def _references(cls, value: Any, info: Any) -> Any:
        if isinstance(value, list | tuple):
            return tuple(_resolve(v, info) for v in value)
        return value

    @field_validator("reference_checkpoints")
    @classmethod
    def _references_exist(cls, value: tuple[Path, ...]) -> tuple[Path, ...]:
        missing = [str(p) for p in value if not p.is_file()]
        if missing:
            raise ValueError(f"reference checkpoint(s) {', '.join(missing)} do not exist")
        return value

    @field_validator("teams")
    @classmethod
    def _team_ids(cls, value: dict[str, TeamSpec]) -> dict[str, TeamSpec]:
        import re

        bad = [t for t in value if not re.fullmatch(NAME_PATTERN, t)]
        if bad:
            raise ValueError(f"team id(s) {bad} are not names of letters, digits, '_' and '-'")
        return value

    @model_validator(mode="after")
    def _unique_phases(self) -> Challenge:
        names = [p.name for p in self.phases]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"phase name(s) {twice} appear more than once")
        return self

    @property
    def source(self) -> Path | None:
        """The file this challenge was read from."""
        return self._source

    def get_phase(self, name: str) -> PhaseSpec:
        """The phase ``name``; an unknown name is a ``ChallengeError`` listing the phases."""
        for phase in self.phases:
            if phase.name == name:
                return phase
        raise ChallengeError(
            f"{self.source or self.name}: no phase {name!r}; phases: {', '.join(p.name for p in self.phases)}"
        )

    def select_phases(self, name: str | None) -> list[PhaseSpec]:
        """The phase ``name``, or every phase when it is None."""
        return list(self.phases) if name is None else [self.get_phase(name)]

    def phase_inbox(self, phase: PhaseSpec) -> Path:
        """``<inbox>/<phase>``: the folder of a phase's uploads (``<team>/<file>.pth``)."""
        return Path(self.inbox) / phase.name


def load_challenge(path: str | Path) -> Challenge:
    """Read and validate a challenge file; every problem is a ``ChallengeError`` naming the file
    and the field."""
    path = Path(path)
    data = read_yaml_mapping(path, "a challenge file", ChallengeError)
    try:
        challenge = Challenge.model_validate(data, context={"base": path.resolve().parent})
    except ValidationError as e:
        raise ChallengeError(f"{path}: {describe_validation(e)}") from None
    challenge._source = path
    return challenge
