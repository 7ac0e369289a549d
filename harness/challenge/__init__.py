"""Running a challenge: teams, phases, quotas, per-team feedback and publishable leaderboards.

A challenge file (``config``: challenge name, tracks, recipe, phases) drives the stages the
harness already has, per phase:

* ``inbox``     what has arrived (``<inbox>/<phase>/<team>/<file>.pth`` or a manifest CSV);
* ``intake``    `harness intake`: each new upload decided once (validation, window, duplicate
                across teams, quota), a stable entry id, one record per phase;
* ``teams``     team ids, display names and anonymous ids, apart;
* ``phases``    which entries count (``last-valid`` or ``each``), each phase its own results
                folder, what its leaderboard ranks (`harness evaluate/leaderboard --challenge`);
* ``feedback``  `harness feedback`: one JSON and one HTML page per team;
* ``public``    `harness publish`: the phase's public leaderboard.

Every path is ``harness.runs.ResultsLayout``'s (``challenges/<challenge>/...``). docs/challenge.md
is the organizer's guide.
"""
