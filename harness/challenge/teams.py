"""The teams of a challenge: team id (the inbox folder or manifest name), display name and
anonymous id, kept apart so that a public leaderboard can show either.

``results/challenges/<challenge>/teams.json`` (``ResultsLayout.challenge_teams``) holds, per team
id, ``anonymous_id`` (``team-001``, ``team-002``, ... in the order intake first met the team,
over all phases; never reassigned), ``display_name`` and ``first_seen``. The display name is the
challenge file's (``teams: {<id>: {display_name: ...}}``), else the latest manifest's, else the id.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from harness.challenge.config import Challenge
from harness.runs import ResultsLayout, read_json, write_json_atomic


@dataclass
class Teams:
    """The team table of one challenge (``load_teams``, ``save``)."""

    challenge: str
    teams: dict[str, dict] = field(default_factory=dict)

    def anonymous_id(self, team: str) -> str:
        return self.teams[team]["anonymous_id"]

    def display_name(self, team: str) -> str:
        return self.teams.get(team, {}).get("display_name") or team

    def meet(self, challenge: Challenge, team: str, manifest_name: str | None, when: dt.datetime) -> bool:
        """Record ``team`` (a new one gets the next anonymous id) and its display name; True when
        the table changed."""
        configured = challenge.teams.get(team)
        name = configured.display_name if configured is not None else manifest_name
        entry = self.teams.get(team)
        if entry is None:
            used = {t["anonymous_id"] for t in self.teams.values()}
            n = len(self.teams) + 1
            while f"team-{n:03d}" in used:
                n += 1
            self.teams[team] = {
                "anonymous_id": f"team-{n:03d}",
                "display_name": name or team,
                "first_seen": when.isoformat(timespec="seconds"),
            }
            return True
        if name and entry.get("display_name") != name:
            entry["display_name"] = name
            return True
        return False

    def as_dict(self) -> dict:
        return {"challenge": self.challenge, "teams": self.teams}

    def save(self, layout: ResultsLayout) -> None:
        write_json_atomic(layout.challenge_teams(self.challenge), self.as_dict())


def load_teams(layout: ResultsLayout, challenge: str) -> Teams:
    """The recorded team table of ``challenge`` (empty when none is recorded yet)."""
    path = layout.challenge_teams(challenge)
    if not path.is_file():
        return Teams(challenge)
    data = read_json(path)
    return Teams(challenge, dict(data.get("teams") or {}))
