"""``harness feedback``: per team of a phase, one JSON file and one self-contained HTML page that an
organizer can mail or upload as they are (``ResultsLayout.feedback_json`` / ``feedback_html``).

What a team gets: the phase's rules (window, quota, which upload counts) and how much of its quota
per track it has used; each of its uploads
with the intake verdict and its reasons, and whether it counts (or which later upload replaced
it); the state of each of its jobs (task, fold, state, error class: a job's error message and
log stay with the organizers, as they may name hidden cases); its own aggregate scores per task,
its rank and the rank's bootstrap interval (``rank_lo``-``rank_hi``, 2.5-97.5 %) from the phase's
leaderboard tables (`harness leaderboard --challenge --phase`), and the from-scratch baseline's
scores beside them. Nothing per case, and nothing of another team: a duplicate of another team's
upload is reported without naming that team; the only other numbers are how many entries the
track ranks.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from pathlib import Path

from harness.challenge.config import NAME_PATTERN, Challenge, ChallengeError, PhaseSpec
from harness.challenge.intake import ACCEPTED, require_phase_record, uses_quota
from harness.challenge.pages import esc, page, read_phase_leaderboard, table
from harness.challenge.phases import counted_uploads, phase_leaderboard_dir, superseded_by
from harness.challenge.teams import load_teams
from harness.jobs.intake import PhaseRecord, UploadRecord
from harness.recipes import get_recipe
from harness.runs import ResultsLayout, write_json_atomic, write_text_atomic

#: What a team is told of a rejection whose recorded reason names another team.
DUPLICATE_FOR_TEAM = (
    "the same bytes as an earlier upload by another team: the same weights count once, "
    "for the team that uploaded them first"
)
NOT_STARTED = "not started"


def team_reasons(upload: UploadRecord) -> list[str]:
    """The reasons a team may read (a duplicate's names the other team: replaced)."""
    if upload.rejection == "duplicate":
        return [DUPLICATE_FOR_TEAM]
    return list(upload.reasons or [])


def team_feedback(
    challenge: Challenge, phase: PhaseSpec, team: str, record: PhaseRecord, status, boards: dict, meta: dict, names
) -> dict:
    """The feedback of one team (the JSON file's content)."""
    mine = [u for u in record.uploads if u.team == team]
    counted = {u.entry for u in counted_uploads(phase, record)}
    replaced = superseded_by(phase, record)
    uploads = [
        {
            "entry": u.entry,
            "file": u.name.split("/", 1)[-1],
            "submitted_at": u.submitted_at,
            "track": u.track,
            "method_name": u.method_name,
            "status": u.status,
            "reasons": team_reasons(u),
            "warnings": list(u.warnings or []),
            "counts": u.entry in counted,
            "superseded_by": replaced.get(u.entry),
        }
        for u in mine
    ]
    tasks = phase.task_registry()
    task_types = {name: task.type for name, task in tasks.items()}
    expected = [(name, fold) for name in sorted(tasks) for fold in tasks[name].fold_ids]  # every job an entry runs
    recipe = get_recipe(challenge.recipe)
    jobs = []
    for u in mine:
        if u.status != ACCEPTED:
            continue

        def of_recipe(j, track=u.track) -> bool:
            # the run folder a job of the challenge's recipe has (a ResEnc-L job shared by two
            # recipes lives in the first one's)
            kind = task_types.get(j.task)
            return j.setup is None or (kind is not None and j.setup == recipe.setup_name(kind, track))

        ran = {(j.task, j.fold): j for j in status if j.entry == u.entry and of_recipe(j)}
        if u.entry not in counted and not ran:
            continue  # superseded before it ran: nothing to report
        for task, fold in expected if u.entry in counted else sorted(ran, key=str):
            j = ran.get((task, fold))
            jobs.append(
                {
                    "entry": u.entry,
                    "task": task,
                    "fold": fold,
                    "state": j.state if j is not None else NOT_STARTED,
                    "error_class": j.error_class if j is not None else None,
                }
            )
    results = []
    for u in mine:
        if u.entry not in counted or u.track not in boards:
            continue
        rows = boards[u.track]
        row = next((r for r in rows if r.entry == u.entry), None)
        baseline = next((r for r in rows if r.is_baseline), None)
        if row is None:
            continue
        results.append(
            {
                "entry": u.entry,
                "track": u.track,
                "rank": row.rank,
                "rank_lo": row.rank_lo,
                "rank_hi": row.rank_hi,
                "entries_ranked": len(rows),
                "mean_task_rank": row.mean_task_rank,
                "failed_jobs": row.failed_jobs,
                "pending_jobs": row.pending_jobs,
                "missing_cases": row.missing_cases,
                "scores": dict(row.scores),
                "baseline_scores": None if baseline is None else {c: baseline.scores.get(c) for c in row.scores},
            }
        )
    return {
        "challenge": challenge.name,
        "phase": phase.name,
        "team": team,
        "display_name": names.display_name(team),
        "generated": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "rules": {
            "submission_limit_per_track": phase.submission_limit,
            "counts": phase.counts,
            "opens": phase.opens.isoformat() if phase.opens else None,
            "closes": phase.closes.isoformat() if phase.closes else None,
            "tracks": list(challenge.tracks),
        },
        "quota": {
            track: {
                "used": (n := sum(uses_quota(u) and u.track == track for u in mine)),
                "limit": phase.submission_limit,
                "remaining": max(phase.submission_limit - n, 0),
            }
            for track in challenge.tracks
        },
        "uploads": uploads,
        "jobs": jobs,
        "results": results,
        "leaderboard": None
        if not meta
        else {k: meta.get(k) for k in ("created", "scheme", "n_bootstrap", "seed") if k in meta},
    }


def _rank(value) -> str:
    """A rank or rank bound: whole ranks without a decimal point."""
    return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)


def render_feedback(data: dict) -> str:
    """The feedback page of one team (``team_feedback``'s content) as self-contained HTML."""
    rules = data["rules"]
    window = ", ".join(f"{k} {rules[k]}" for k in ("opens", "closes") if rules[k]) or "no opening or closing time"
    counts = {
        "last-valid": "your last accepted upload per track counts; an earlier one is replaced",
        "each": "every accepted upload is ranked on its own",
    }[rules["counts"]]
    body = [
        f"<p>Team <b>{esc(data['display_name'])}</b> ({esc(data['team'])}), phase <b>{esc(data['phase'])}</b> "
        f"of {esc(data['challenge'])}; generated {esc(data['generated'])}.</p>",
        f"<p class='note'>Rules: at most {rules['submission_limit_per_track']} accepted upload(s) per track; "
        f"{esc(counts)}; {esc(window)}. Tracks: {esc(', '.join(rules['tracks']))}.</p>",
        "<p>Your quota: "
        + esc(
            "; ".join(f"{t} {q['used']} of {q['limit']} used ({q['remaining']} left)" for t, q in data["quota"].items())
        )
        + ". An accepted upload uses a slot (one the organizers withdrew too); a rejected one does not.</p>",
        "<h2>Your uploads</h2>",
    ]
    if not data["uploads"]:
        body.append("<p>No upload of yours has been taken in for this phase.</p>")
    else:
        rows = []
        for u in data["uploads"]:
            counts_text = (
                "counts" if u["counts"] else (f"replaced by {u['superseded_by']}" if u["superseded_by"] else "")
            )
            why = "; ".join(u["reasons"] + [f"warning: {w}" for w in u["warnings"]])
            rows.append((u["file"], u["submitted_at"], u["track"] or "", u["entry"], u["status"], counts_text, why))
        body.append(
            table(
                ("file", "uploaded", "track", "entry", "verdict", "ranking", "reasons"),
                rows,
                cls={"accepted": "accepted", "rejected": "rejected"},
            )
        )
    body.append("<h2>Your jobs</h2>")
    if data["jobs"]:
        body.append(
            table(
                ("entry", "task", "fold", "state", "error"),
                [(j["entry"], j["task"], j["fold"], j["state"], j["error_class"] or "") for j in data["jobs"]],
            )
        )
        body.append("<p class='note'>A failed job's details stay with the organizers; ask them.</p>")
    else:
        body.append("<p>No job: no accepted upload counts yet.</p>")
    body.append("<h2>Your results</h2>")
    if not data["results"]:
        body.append("<p>No leaderboard of this phase ranks an entry of yours yet.</p>")
    for r in data["results"]:
        interval = (
            f"{_rank(r['rank_lo'])}\u2013{_rank(r['rank_hi'])}" if r["rank_lo"] is not None else "not bootstrapped"
        )
        body.append(
            f"<p><b>{esc(r['entry'])}</b> ({esc(r['track'])}): rank <b>{esc(r['rank'])}</b> of "
            f"{esc(r['entries_ranked'])} (baseline included); 95% bootstrap interval of the rank: "
            f"{esc(interval)}; mean task rank {esc(r['mean_task_rank'])}; failed jobs {esc(r['failed_jobs'])}.</p>"
        )
        base = r["baseline_scores"] or {}
        body.append(
            table(
                ("column", "yours", "from-scratch baseline"),
                [(c, v, base.get(c)) for c, v in r["scores"].items()],
            )
        )
    if data["leaderboard"]:
        lb = data["leaderboard"]
        body.append(
            f"<p class='note'>Leaderboard of {esc(lb.get('created'))}: scheme {esc(lb.get('scheme'))}, "
            f"{esc(lb.get('n_bootstrap'))} bootstrap resamples.</p>"
        )
    return page(
        f"{data['challenge']} \u00b7 {data['phase']} \u00b7 feedback for {data['display_name']}", "\n".join(body)
    )


def unusable_team(team: str) -> str | None:
    """Why no feedback folder can be named after ``team`` (an id intake rejected as unusable:
    ``../../x``, an absolute path), or None."""
    if re.fullmatch(NAME_PATTERN, team):
        return None
    return (
        f"team id {team!r} is no name (letters, digits, '_' and '-'), so it cannot name a feedback folder: "
        "its uploads were rejected as unusable; no feedback is written for it"
    )


def write_feedback(
    challenge: Challenge,
    phase_name: str,
    results: Path,
    teams: list[str] | None = None,
    *,
    warn: Callable[[str], None] = print,
) -> dict[str, tuple[Path, Path]]:
    """Write the feedback of every team of the phase (or of ``teams``); team -> (json, html). A
    team id that is no name gets none (``warn`` says so; asked for by ``teams``: an error)."""
    from harness.jobs.status import collect_status

    phase = challenge.get_phase(phase_name)
    layout = ResultsLayout(results)
    record = require_phase_record(layout, challenge, phase)
    known = sorted({u.team for u in record.uploads})
    chosen = known if not teams else list(dict.fromkeys(teams))
    unknown = [t for t in chosen if t not in known]
    if unknown:
        raise ChallengeError(f"phase {phase.name!r} has no upload of team(s) {unknown}; teams: {', '.join(known)}")
    refused = [problem for problem in map(unusable_team, chosen) if problem is not None]
    if refused and teams:
        raise ChallengeError(f"phase {phase.name!r}: {'; '.join(refused)}")
    for problem in refused:
        warn(f"warning: phase {phase.name!r}: {problem}")
    chosen = [t for t in chosen if unusable_team(t) is None]
    phase_root = layout.phase(challenge.name, phase.name).root
    status = collect_status(phase_root).jobs if phase_root.is_dir() else []
    boards, meta = read_phase_leaderboard(phase_leaderboard_dir(challenge, phase, results), challenge.tracks)
    names = load_teams(layout, challenge.name)
    written = {}
    for team in chosen:
        data = team_feedback(challenge, phase, team, record, status, boards, meta, names)
        json_path = layout.feedback_json(challenge.name, phase.name, team)
        html_path = layout.feedback_html(challenge.name, phase.name, team)
        write_json_atomic(json_path, data)
        write_text_atomic(html_path, render_feedback(data))
        written[team] = (json_path, html_path)
    return written
