"""``harness publish``: a phase's public leaderboard (``ResultsLayout.phase_public``).

Per track ``leaderboard_<track>.csv`` and ``leaderboard_<track>.json`` and one static
``index.html``, made from the phase's leaderboard tables (`harness leaderboard --challenge
--phase`, aggregates only): the ``entry`` column (entry ids hold the team id) is replaced by
``name`` (the team's display name, or its anonymous id with ``public_names: anonymous`` /
``--names anonymous``; a team with several ranked entries gets ``#1``, ``#2`` in upload order)
and ``method`` (the manifest's method name, shown with display names only). A phase with
``public: false`` exports nothing unless --publish is given; nothing of private/ is ever read.
Tables older than the phase's entries (built before a withdrawal or a new accepted upload: their
ranks were computed with another field) are refused, naming what changed.
In the CSV a text cell a spreadsheet would take for a formula (``=``, ``+``, ``-``, ``@``, ...)
starts with a "'" (``harness.runs.people_csv_text``); the JSON holds the text as it is.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from harness.challenge.config import Challenge, ChallengeError
from harness.challenge.intake import require_phase_record
from harness.challenge.pages import esc, page, read_phase_leaderboard, table
from harness.challenge.phases import counted_uploads, phase_leaderboard_dir, ranked_entries
from harness.challenge.teams import load_teams
from harness.jobs.intake import PhaseRecord, UploadRecord
from harness.leaderboard.rows import WITHIN_NOISE_SEPARATOR, LeaderboardRow
from harness.runs import BASELINE_PREFIX, ResultsLayout, people_csv_text, write_json_atomic, write_text_atomic

BASELINE_NAME = "from-scratch baseline"


class NotPublicError(ChallengeError):
    """The phase's results are not public (``public: false``) and --publish was not given."""


def public_name(entry: str, labels: dict[str, tuple[str, str | None]]) -> str | None:
    """The public name of an entry id (None: not counted for the phase)."""
    if entry.startswith(BASELINE_PREFIX):
        return BASELINE_NAME
    return labels[entry][0] if entry in labels else None


def public_rows(rows: list[LeaderboardRow], labels: dict[str, tuple[str, str | None]]) -> list[dict]:
    """A leaderboard table's rows (plain values) with ``entry`` replaced by ``name`` and
    ``method``; an entry without a label (not counted for the phase) is left out.
    ``within_noise_of`` (entry ids, which hold the team id) names the entries by their public
    names too."""
    out = []
    for row in rows:
        if row.is_baseline:
            name, method = BASELINE_NAME, None
        elif row.entry in labels:
            name, method = labels[row.entry]
        else:
            continue
        values = {k: v for k, v in row.as_dict().items() if k != "entry"}
        if row.within_noise_of is not None:
            others = [public_name(e, labels) for e in row.within_noise_of]
            values["within_noise_of"] = WITHIN_NOISE_SEPARATOR.join(n for n in others if n is not None)
        out.append({"rank": row.rank, "name": name, "method": method, **values})
    return out


def entry_labels(
    challenge: Challenge, phase, record: PhaseRecord, names, mode: str
) -> dict[str, tuple[str, str | None]]:
    """entry -> (public name, method) of every counted entry of the phase."""
    counted = counted_uploads(phase, record)
    per_team: dict[tuple[str, str | None], list[UploadRecord]] = {}
    for u in counted:
        per_team.setdefault((u.team, u.track), []).append(u)
    labels = {}
    for (team, _track), ups in per_team.items():
        base = names.anonymous_id(team) if mode == "anonymous" else names.display_name(team)
        for n, u in enumerate(ups, start=1):
            label = base if len(ups) == 1 else f"{base} #{n}"
            labels[u.entry] = (label, None if mode == "anonymous" else u.method_name)
    return labels


def publish_phase(
    challenge: Challenge, phase_name: str, results: Path, *, force: bool = False, names: str | None = None
) -> list[Path]:
    """Write the phase's public export; returns the files written (see the module docstring)."""
    phase = challenge.get_phase(phase_name)
    if not phase.public and not force:
        raise NotPublicError(
            f"phase {phase.name!r} is not public (public: false in {challenge.source}): nothing exported; "
            "--publish exports it anyway"
        )
    mode = names or challenge.public_names
    layout = ResultsLayout(results)
    record = require_phase_record(layout, challenge, phase)
    board_dir = phase_leaderboard_dir(challenge, phase, results)
    boards, meta = read_phase_leaderboard(board_dir, challenge.tracks)
    if not boards:
        raise ChallengeError(
            f"phase {phase.name!r} has no leaderboard in {board_dir}: run `harness leaderboard --challenge "
            f"{challenge.source} --phase {phase.name}` first"
        )
    ranked, counted = meta.get("entries_filter"), sorted(ranked_entries(challenge, phase, results))
    if ranked != counted:
        gone = sorted(set(ranked or []) - set(counted))
        new = sorted(set(counted) - set(ranked or []))
        changes = (
            "; ".join(
                part
                for part in (
                    f"no longer counted: {', '.join(gone)}" if gone else "",
                    f"counted now, not ranked: {', '.join(new)}" if new else "",
                )
                if part
            )
            or "it was not built for this phase's entries"
        )
        raise ChallengeError(
            f"phase {phase.name!r}: the leaderboard in {board_dir} ({meta.get('created', 'no date')}) is older than "
            f"the phase's entries ({changes}): its ranks were computed with another field. Rebuild it with "
            f"`harness leaderboard --challenge {challenge.source} --phase {phase.name}`, then publish"
        )
    labels = entry_labels(challenge, phase, record, load_teams(layout, challenge.name), mode)
    created = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    about = {
        "challenge": challenge.name,
        "phase": phase.name,
        "names": mode,
        "published": created,
        "leaderboard_created": meta.get("created"),
        "scheme": meta.get("scheme"),
        "n_bootstrap": meta.get("n_bootstrap"),
        "recipe": (meta.get("recipe") or {}).get("name", challenge.recipe),
    }
    written: list[Path] = []
    sections = []
    for track, rows in boards.items():
        public = public_rows(rows, labels)
        csv_path = layout.public_leaderboard(challenge.name, phase.name, track, "csv")
        json_path = layout.public_leaderboard(challenge.name, phase.name, track, "json")
        import pandas as pd

        # display and method names are the teams' words: never a formula in a spreadsheet
        write_text_atomic(csv_path, people_csv_text(pd.DataFrame(public)))
        write_json_atomic(json_path, {**about, "track": track, "rows": public})
        written += [csv_path, json_path]
        columns = list(public[0]) if public else ["name"]
        if mode == "anonymous":
            columns = [c for c in columns if c != "method"]
        sections.append(
            f"<h2>{esc(track)}</h2>"
            + table(columns, [[r.get(c) for c in columns] for r in public])
            + f"<p class='note'>Files: {esc(csv_path.name)}, {esc(json_path.name)}.</p>"
        )
    intro = (
        f"<p>{esc(challenge.description or challenge.name)}. Phase <b>{esc(phase.name)}</b>"
        f"{': ' + esc(phase.description) if phase.description else ''}.</p>"
        f"<p class='note'>Ranking scheme {esc(about['scheme'])}; rank_lo\u2013rank_hi: the 2.5\u201397.5 % "
        f"interval of the rank over {esc(about['n_bootstrap'])} bootstrap resamples of the cases; "
        f"recipe {esc(about['recipe'])}; published {esc(created)}.</p>"
    )
    index = layout.public_page(challenge.name, phase.name)
    write_text_atomic(index, page(f"{challenge.name} \u00b7 {phase.name} leaderboard", intro + "\n".join(sections)))
    written.append(index)
    return written
