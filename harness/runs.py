"""The results contract: the one place that names the files of a results folder and reads and
writes the run files.

A results folder (``ResultsLayout``) holds::

    runs/<entry>/<task>/<setup>/fold_<k>/   one run folder per job (``RunFolder``, below)
    runs/<entry>/<task>/<setup>/fold_<k>-repeat_<r>/   a seed repeat r >= 1 of that job (training
                                            noise, harness/leaderboard/noise.py; never ranked)
    submissions/<entry>/intake.json         the intake verdict of a submission (intake.txt: its report)
    provenance/evaluate-<time>.json         what one `harness evaluate` was asked and what came of it
    slurm/                                  submitit's files of Slurm jobs
    cache/nnunet/<task>-<key>/              nnU-Net's preprocessed dataset of a task
    cache/classification/<task>/<key>/      the preprocessed cases of a classification task
    cache/data-check.json                   the data check's facts of unchanged files
    leaderboard/<recipe>/                   `harness leaderboard`'s default output
    challenges/<challenge>/teams.json       a challenge's teams: display names, anonymous ids
    challenges/<challenge>/<phase>/         a phase: itself a results folder of this shape (runs/,
                                            submissions/, leaderboard/, ...), so phases never mix,
                                            plus inbox.json (the phase's intake record),
                                            feedback/<team>/ and public/ (harness/challenge)

Every (entry, task, recipe setup, fold) job owns ``<results>/runs/<entry>/<task>/<setup>/fold_<k>/``
(``<setup>``: the recipe the job's choices are named after, harness/recipes.py)::

    job.json      what the job is (``JobSpec``), written when the job is planned or started
    train.log     the training log
    cases.csv     per-case results (segmentation: case,label,dice,nsd,ref_voxels,pred_voxels;
                  classification: case,true_label,pred_label,prob_<class>...)
    metrics.json  aggregates, ``ranking_metrics`` ([{name, higher_is_better}]) and provenance
    DONE          completion marker, written last and atomically: a run without it is unfinished
    FAILED        written instead of DONE when the job failed: {error_class, message, log}

and the job matrix's own files beside them (harness/jobs/state.py says what they hold):

    RUNNING         the live worker (host, pid, start): removed when it ends
    SUBMITTED       the Slurm job the run was queued as
    worker.log      everything the worker printed
    attempts.jsonl  one line per worker start and end

job.json has one writer (``JobSpec.write``) and one reader (``JobSpec.read``); cases.csv and
metrics.json have one writer (``RunResult.write``) and one reader (``RunResult.read``) of their
files, on which their typed records stand (``harness.metrics.run_records``: ``RunMetrics``, the
cases.csv columns per task type, ``write_run_records`` and ``RunRecords.read``). Every
reader raises ``ResultsFileError`` (a ValueError) naming the file and the problem. cases.csv's
NaN policy: written as ``nan``; read back as NaN from ``nan`` or an empty field (older runs).
Nothing outside this module spells a results file or folder name.

Over 450 lines for a reason: it is the results contract: every file name under a results folder,
with its one reader and writer, is here on purpose, so that no other module spells a results path
(a test checks).
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

if TYPE_CHECKING:  # pandas is imported when a table is read or written, not with this module
    import pandas as pd

BASELINE_PREFIX = "baseline-"
_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")
_UMASK = os.umask(0)
os.umask(_UMASK)


def entry_name(name: str) -> str:
    """A file-system safe entry name (submission file stem or baseline name)."""
    cleaned = _SAFE_NAME.sub("_", name).strip("._")
    if not cleaned:
        raise ValueError(f"cannot derive an entry name from {name!r}")
    return cleaned


def baseline_entry(track: str) -> str:
    return f"{BASELINE_PREFIX}{track}"


#: One plain folder or file name: what a name a participant controls (team id, entry id) may
#: become under a results folder. No separator, nothing starting with '.' (so no '.' or '..').
_COMPONENT = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,254}")


class UnsafePathError(ValueError):
    """A name that would make a path outside its results folder (or no plain path at all): the
    message names the value and what it is."""


def path_component(value: str, what: str) -> str:
    """``value`` as one path component under a results folder, unchanged; anything but a plain
    name (letters, digits, '.', '_', '-', not starting with '.', at most 255) is an
    ``UnsafePathError`` naming it, so that no team id or entry id can write outside the folder."""
    if isinstance(value, str) and _COMPONENT.fullmatch(value):
        return value
    raise UnsafePathError(
        f"{what} {value!r} cannot name a folder under the results folder: letters, digits, '.', '_' "
        "and '-' only, not starting with '.'"
    )


def path_inside(root: Path, path: Path) -> Path:
    """``path``, when it lies under ``root`` once '..' and '.' are resolved as written (symlinks
    inside the results folder are the organizer's and stay allowed); else an ``UnsafePathError``."""
    base, target = os.path.normpath(os.path.abspath(root)), os.path.normpath(os.path.abspath(path))
    if os.path.commonpath([base, target]) != base:
        raise UnsafePathError(f"{path} is not inside the results folder {root}")
    return Path(path)


def write_atomic(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """Call ``write(f)`` on a temporary file beside ``path``, then move it into place: readers (and
    a kill at any moment) see either the old or the whole new file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp creates 0600; results are meant to be shared
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically (``write_atomic``)."""
    write_atomic(path, lambda f: f.write(text.encode("utf-8")))


def write_json_atomic(path: Path, data: Any) -> None:
    write_text_atomic(path, json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


def read_json(path: Path) -> Any:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


class ResultsFileError(ValueError):
    """A results file (or path) that cannot be used: ``path`` and ``problem`` say which and why;
    ``str()`` is ``"<path>: <problem>"``. The problem of an absent file is exactly ``missing``."""

    def __init__(self, path: str | Path, problem: str):
        super().__init__(str(path), problem)  # both in args: the error pickles (submitit, pools)

    @property
    def path(self) -> Path:
        return Path(self.args[0])

    @property
    def problem(self) -> str:
        return self.args[1]

    def __str__(self) -> str:
        return f"{self.args[0]}: {self.args[1]}"


# ----------------------------------------------------------------------------- layout
_FOLD = re.compile(r"^fold_(\d+)(?:-repeat_[1-9]\d*)?$")


@dataclass(frozen=True)
class RunFolder:
    """All paths of one (entry, task, setup, fold) run: ``<results>/runs/<entry>/<task>/<setup>/fold_<k>``."""

    path: Path

    @classmethod
    def of(cls, results: Path, entry: str, task: str, fold: int, setup: str) -> RunFolder:
        """The run folder under the results folder ``results`` (``ResultsLayout.run``; note the
        argument order, kept for its callers: fold before setup)."""
        return ResultsLayout(results).run(entry, task, setup, fold)

    @property
    def layout(self) -> ResultsLayout:
        """The results folder this run belongs to, from the path's shape (``ResultsLayout.of_run``:
        a path of another shape is a ``ResultsFileError`` naming it)."""
        return ResultsLayout.of_run(self.path)

    @property
    def results_root(self) -> Path:
        """The results folder this run belongs to."""
        return self.layout.root

    @property
    def entry(self) -> str:
        """The entry as the path names it (job.json says what the job is)."""
        return self.path.parts[-4]

    @property
    def task(self) -> str:
        return self.path.parts[-3]

    @property
    def setup(self) -> str:
        return self.path.parts[-2]

    @property
    def job_json(self) -> Path:
        return self.path / "job.json"

    @property
    def log(self) -> Path:
        return self.path / "train.log"

    @property
    def cases_csv(self) -> Path:
        return self.path / "cases.csv"

    @property
    def metrics_json(self) -> Path:
        return self.path / "metrics.json"

    @property
    def done_marker(self) -> Path:
        return self.path / "DONE"

    @property
    def failed_marker(self) -> Path:
        return self.path / "FAILED"

    @property
    def running_marker(self) -> Path:
        return self.path / "RUNNING"

    @property
    def submitted_marker(self) -> Path:
        return self.path / "SUBMITTED"

    @property
    def worker_log(self) -> Path:
        return self.path / "worker.log"

    @property
    def attempts_log(self) -> Path:
        return self.path / "attempts.jsonl"

    @property
    def work_dir(self) -> Path:
        """Scratch space of an unfinished run (nnU-Net output, checkpoints); removed when done."""
        return self.path / "work"

    @property
    def predictions_dir(self) -> Path:
        """The held-out predictions of a segmentation run (``<case>.nii.gz``, compressed), kept so
        that `harness rescore` scores them again without training. Organizer-side only, like
        everything under ``runs/``: nothing of it is ever published."""
        return self.path / "predictions"

    @property
    def checkpoints_dir(self) -> Path:
        """A finished run's scratch folder, checkpoints included, when evaluate ran with
        ``--keep-checkpoints`` (else it is removed)."""
        return self.path / "checkpoints"

    def is_done(self) -> bool:
        return self.done_marker.is_file()

    def is_failed(self) -> bool:
        return self.failed_marker.is_file() and not self.is_done()

    def mark_done(self, summary: dict | None = None) -> None:
        self.failed_marker.unlink(missing_ok=True)
        write_json_atomic(self.done_marker, summary or {})


@dataclass(frozen=True)
class ResultsLayout:
    """Every path under one results folder (the module docstring draws the tree). Only paths:
    nothing is created or read here, except by the iterators, which list what exists. Every name
    in a path that a participant or a file chooses (entry, team, task, ...) must be one plain name
    (``path_component``) and every path lie under the root (``path_inside``): else an
    ``UnsafePathError`` names the value."""

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    def _path(self, *parts: str) -> Path:
        """``<root>/<parts>``, checked to lie under the root: every name of it that a participant
        or a file can choose (entry, team, task, ...) has passed ``path_component`` first."""
        return path_inside(self.root, self.root.joinpath(*parts))

    @classmethod
    def of_run(cls, run_path: str | Path) -> ResultsLayout:
        """The layout a run folder ``<results>/runs/<entry>/<task>/<setup>/fold_<k>`` belongs to;
        a path of another shape is a ``ResultsFileError`` naming it."""
        path = Path(run_path)
        parts = path.parts
        if len(parts) < 5 or parts[-5] != "runs" or not _FOLD.match(parts[-1]):
            raise ResultsFileError(path, "not a run folder: expected <results>/runs/<entry>/<task>/<setup>/fold_<k>")
        return cls(path.parents[4])

    # -- runs ---------------------------------------------------------------------------------
    @property
    def runs_dir(self) -> Path:
        return self.root / "runs"

    def run(self, entry: str, task: str, setup: str, fold: int, repeat: int = 0) -> RunFolder:
        """The run folder of a job; ``repeat`` r >= 1 is its r-th seed repeat (``fold_<k>-repeat_<r>``),
        0 the ranked run (``fold_<k>``, as before repeats existed)."""
        names = (path_component(entry, "entry"), path_component(task, "task"), path_component(setup, "setup"))
        if int(repeat) < 0:
            raise ValueError(f"repeat must be >= 0, got {repeat}")
        fold_name = f"fold_{int(fold)}" + (f"-repeat_{int(repeat)}" if repeat else "")
        return RunFolder(self._path("runs", *names, fold_name))

    def run_folders(self) -> Iterator[RunFolder]:
        """Every run folder that has a job.json, in sorted path order."""
        if not self.runs_dir.is_dir():
            return
        for job in sorted(self.runs_dir.glob("*/*/*/fold_*/job.json")):
            yield RunFolder(job.parent)

    def all_run_folders(self) -> Iterator[RunFolder]:
        """Every folder shaped like a run folder, with or without a job.json, in sorted path order."""
        if not self.runs_dir.is_dir():
            return
        for path in sorted(self.runs_dir.glob("*/*/*/fold_*")):
            if path.is_dir() and _FOLD.match(path.name):
                yield RunFolder(path)

    # -- intake -------------------------------------------------------------------------------
    @property
    def submissions_dir(self) -> Path:
        return self.root / "submissions"

    def intake_record(self, entry: str) -> Path:
        """The intake verdict of ``entry`` (JSON, written by `harness evaluate`)."""
        return self._path("submissions", path_component(entry, "entry"), "intake.json")

    def intake_report(self, entry: str) -> Path:
        """The validation report of ``entry``, as text."""
        return self._path("submissions", path_component(entry, "entry"), "intake.txt")

    def intake_records(self) -> list[Path]:
        """Every recorded intake verdict, sorted by entry."""
        return sorted(self.submissions_dir.glob("*/intake.json"))

    # -- evaluate's own files -----------------------------------------------------------------
    @property
    def provenance_dir(self) -> Path:
        return self.root / "provenance"

    def new_provenance_path(self, when: float | None = None) -> Path:
        """``provenance/evaluate-<YYYYmmdd-HHMMSS>[-<n>].json``: a name no file has yet."""
        stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(when))
        path = self.provenance_dir / f"evaluate-{stamp}.json"
        n = 1
        while path.exists():
            n += 1
            path = self.provenance_dir / f"evaluate-{stamp}-{n}.json"
        return path

    @property
    def slurm_dir(self) -> Path:
        """submitit's folder of the Slurm executor."""
        return self.root / "slurm"

    # -- caches -------------------------------------------------------------------------------
    @property
    def cache_dir(self) -> Path:
        return self.root / "cache"

    def nnunet_cache(self, task: str, key: str) -> Path:
        """nnU-Net's raw and preprocessed dataset of ``task`` for the preprocessing ``key``."""
        return self._path("cache", "nnunet", path_component(f"{task}-{key}", "task"))

    def classification_cache(self, task: str, key: str) -> Path:
        """The preprocessed cases of classification ``task`` for the cache ``key``."""
        return self._path("cache", "classification", path_component(task, "task"), path_component(key, "cache key"))

    @property
    def data_check_cache(self) -> Path:
        """The data check's remembered facts of checked files (harness.tasks.preflight)."""
        return self.cache_dir / "data-check.json"

    # -- leaderboard --------------------------------------------------------------------------
    def leaderboard_dir(self, recipe: str) -> Path:
        """`harness leaderboard`'s default output folder for ``recipe``."""
        return self._path("leaderboard", path_component(recipe, "recipe"))

    # -- challenges (harness/challenge) -------------------------------------------------------
    def challenge_dir(self, challenge: str) -> Path:
        """Everything of one challenge: its teams file and one folder per phase."""
        return self._path("challenges", path_component(challenge, "challenge"))

    def challenge_teams(self, challenge: str) -> Path:
        """The challenge's teams (JSON): team id -> display name, anonymous id, first seen."""
        return self.challenge_dir(challenge) / "teams.json"

    def phase(self, challenge: str, phase: str) -> ResultsLayout:
        """The results folder of one phase (runs, per-entry intake records, caches, leaderboard):
        a phase's runs never meet another phase's."""
        return ResultsLayout(
            self._path("challenges", path_component(challenge, "challenge"), path_component(phase, "phase"))
        )

    def phase_intake(self, challenge: str, phase: str) -> Path:
        """The phase's intake record (JSON): every upload taken in, its entry id and verdict."""
        return self.phase(challenge, phase).phase_record

    @property
    def phase_record(self) -> Path:
        """In a phase's results folder (``phase()``): its intake record (``phase_intake``)."""
        return self.root / "inbox.json"

    def reference_fingerprints(self, challenge: str) -> Path:
        """The fingerprints of the challenge's ``reference_checkpoints`` (JSON), made once per
        file (path, size, mtime) and kept: every intake compares its uploads with them."""
        return self.challenge_dir(challenge) / "reference-fingerprints.json"

    def phase_feedback(self, challenge: str, phase: str, team: str) -> Path:
        """The folder of one team's feedback in a phase (feedback.json, feedback.html)."""
        folder = self.phase(challenge, phase).root / "feedback" / path_component(team, "team id")
        return path_inside(self.root, folder)

    def feedback_json(self, challenge: str, phase: str, team: str) -> Path:
        return self.phase_feedback(challenge, phase, team) / "feedback.json"

    def feedback_html(self, challenge: str, phase: str, team: str) -> Path:
        return self.phase_feedback(challenge, phase, team) / "feedback.html"

    def phase_public(self, challenge: str, phase: str) -> Path:
        """The phase's public export (leaderboard_<track>.csv/.json, index.html)."""
        return self.phase(challenge, phase).root / "public"

    def public_leaderboard(self, challenge: str, phase: str, track: str, suffix: str) -> Path:
        """``public/leaderboard_<track>.<suffix>`` (suffix ``csv`` or ``json``)."""
        name = path_component(f"leaderboard_{track}.{suffix}", "track")
        return path_inside(self.root, self.phase_public(challenge, phase) / name)

    def public_page(self, challenge: str, phase: str) -> Path:
        return self.phase_public(challenge, phase) / "index.html"

    @staticmethod
    def leaderboard_csv(out: Path, track: str) -> Path:
        """``leaderboard_<track>.csv`` in a leaderboard output folder (harness.leaderboard.build)."""
        return Path(out) / f"leaderboard_{track}.csv"

    @staticmethod
    def leaderboard_meta(out: Path) -> Path:
        """``leaderboard.json`` in a leaderboard output folder: scheme, bootstrap, recipe, notes."""
        return Path(out) / "leaderboard.json"


def iter_run_folders(results: Path) -> Iterator[RunFolder]:
    """Every run folder under ``results/runs`` that has a ``job.json``, in sorted order
    (``ResultsLayout(results).run_folders()``)."""
    return ResultsLayout(results).run_folders()


# ----------------------------------------------------------------------------- job.json
def _read_object(path: Path) -> dict:
    """The JSON object in ``path``; ``ResultsFileError`` when it is missing, unreadable, not JSON
    or not an object."""
    try:
        data = read_json(path)
    except FileNotFoundError:
        raise ResultsFileError(path, "missing") from None
    except ValueError as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise ResultsFileError(path, f"does not parse: {e}") from None
    except OSError as e:
        raise ResultsFileError(path, f"cannot read: {e.strerror or e}") from None
    if not isinstance(data, dict):
        raise ResultsFileError(path, f"does not parse: a JSON {type(data).__name__}, not an object")
    return data


def _kind(kind: type) -> Any:
    return field(default=None, metadata={"kind": kind})


@dataclass(frozen=True)
class JobSpec:
    """What a job is: the content of its job.json (``harness.finetune.job.FinetuneJob.spec`` builds
    it). A field the file lacks, or holds as null, is None; ``read`` demands the fields of its
    ``require``. Keys the file holds beyond these fields are kept, unchecked, in ``extra`` and
    written back by ``write`` (a newer harness's fields survive an older one's read)."""

    entry: str | None = _kind(str)
    track: str | None = _kind(str)
    is_baseline: bool | None = _kind(bool)
    task: str | None = _kind(str)
    task_type: str | None = _kind(str)
    task_file: str | None = _kind(str)
    fold: int | None = _kind(int)
    submission: str | None = _kind(str)
    submission_sha256: str | None = _kind(str)
    task_spec_hash: str | None = _kind(str)
    #: the spec's hash without its scoring fields (``TaskSpec.training_hash``): what `harness
    #: rescore` compares before it rescores instead of training again
    task_training_hash: str | None = _kind(str)
    recipe: str | None = _kind(str)
    recipe_version: int | None = _kind(int)
    recipe_values: dict | None = _kind(dict)
    recipe_values_hash: str | None = _kind(str)
    data_fingerprint: str | None = _kind(str)
    #: the data manifest: file name (relative to the task's data) -> sha256
    data_files: dict | None = _kind(dict)
    device: str | None = _kind(str)
    seed: int | None = _kind(int)
    #: the seed repeat: None or 0 the ranked run, r >= 1 a repeat that measures training noise
    repeat: int | None = _kind(int)
    job_id: str | None = _kind(str)
    extra: Mapping[str, Any] = field(default_factory=dict, compare=False)

    #: What every job.json ever written holds, and what ``read`` demands unless told otherwise.
    REQUIRED = ("entry", "track", "task", "fold")
    #: What a worker needs to rebuild and check the job (harness.jobs.worker).
    WORKER_FIELDS = ("entry", "track", "task", "task_file", "fold", "task_spec_hash", "recipe", "job_id")

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls) if f.name != "extra")

    @classmethod
    def read(cls, source: str | Path | RunFolder, *, require: Iterable[str] = REQUIRED) -> JobSpec:
        """The job.json of a run folder (a ``RunFolder`` or its path) or of that file's path.
        ``ResultsFileError`` names the file when it is missing, unreadable, not a JSON object, lacks
        a field of ``require`` (``()``: none), or holds a field of the wrong type."""
        if isinstance(source, RunFolder):
            path = source.job_json
        else:
            path = Path(source)
            if path.is_dir():
                path = RunFolder(path).job_json
        return cls.from_dict(_read_object(path), path, require=require)

    @classmethod
    def from_dict(
        cls, data: Mapping[str, Any], where: str | Path = "job.json", *, require: Iterable[str] = REQUIRED
    ) -> JobSpec:
        """The spec of a job.json's content; ``where`` names the file in errors."""
        names = cls.field_names()
        missing = [k for k in require if data.get(k) is None]
        if missing:
            listed = ", ".join(repr(k) for k in missing)
            raise ResultsFileError(where, f"missing field{'s' if len(missing) > 1 else ''} {listed}")
        values = {}
        for f in fields(cls):
            if f.name == "extra" or data.get(f.name) is None:
                continue
            value, kind = data[f.name], f.metadata["kind"]
            if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
                shown = repr(value) if len(repr(value)) <= 80 else repr(value)[:77] + "..."
                raise ResultsFileError(where, f"field {f.name!r} must be {_KIND_NAMES[kind]}, got {shown}")
            values[f.name] = value
        files = values.get("data_files")
        if files is not None and not all(isinstance(k, str) and isinstance(v, str) for k, v in files.items()):
            raise ResultsFileError(where, "field 'data_files' must map file names to sha256 strings")
        return cls(**values, extra={k: v for k, v in data.items() if k not in names})

    def as_dict(self) -> dict[str, Any]:
        """The job.json content: every field (None where unknown) and the ``extra`` keys."""
        return {**self.extra, **{name: getattr(self, name) for name in self.field_names()}}

    def write(self, run: RunFolder) -> None:
        """Write ``run``'s job.json atomically."""
        write_json_atomic(run.job_json, self.as_dict())


_KIND_NAMES = {str: "a string", int: "an integer", bool: "true or false", dict: "an object"}


# ----------------------------------------------------------------------------- CSV for people
#: What a spreadsheet takes for the start of a formula (OWASP, "CSV injection"); "'" too, so that
#: ``read_people_csv`` gives back exactly the text that was written.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r", "'")


def spreadsheet_text(value: Any) -> Any:
    """A text cell a spreadsheet opens as text: one starting with ``_FORMULA_START`` gets a leading
    "'" (a display name ``=HYPERLINK(...)`` is never a formula); anything but a string, a negative
    number included, is returned as it is."""
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


def _unquote(value: Any) -> Any:
    if isinstance(value, str) and len(value) > 1 and value[0] == "'" and value[1] in _FORMULA_START:
        return value[1:]
    return value


def people_csv_text(table: pd.DataFrame) -> str:
    """The CSV text of a table meant for people (leaderboards, stability, significance, the
    private case table, the public export): every text cell and column name through
    ``spreadsheet_text``, numbers as numbers; no index. ``read_people_csv`` reads it back."""
    safe = table.copy()
    safe.columns = [spreadsheet_text(c) for c in safe.columns]
    for n in range(safe.shape[1]):
        if not _is_numeric(safe.iloc[:, n]):
            safe.iloc[:, n] = safe.iloc[:, n].map(spreadsheet_text)
    return safe.to_csv(index=False)


def _is_numeric(column: pd.Series) -> bool:
    import pandas as pd

    return pd.api.types.is_numeric_dtype(column) or pd.api.types.is_bool_dtype(column)


def read_people_csv(path: Path) -> pd.DataFrame:
    """A table ``people_csv_text`` wrote, with the text it was given (the "'" taken off again)."""
    import pandas as pd

    frame = pd.read_csv(path)
    frame.columns = [_unquote(c) for c in frame.columns]
    for n in range(frame.shape[1]):
        if not _is_numeric(frame.iloc[:, n]):
            frame.iloc[:, n] = frame.iloc[:, n].map(_unquote)
    return frame


# ----------------------------------------------------------------------------- cases.csv, metrics.json
#: cases.csv columns that hold text (ids and class names); every other column holds numbers.
TEXT_COLUMNS = ("case", "true_label", "pred_label")
#: How cases.csv writes NaN; the reader takes it and an empty field (older runs) as NaN.
NAN_TEXT = "nan"
_NAN_READ = ("", "nan")  # compared case-insensitively, after stripping blanks


def cases_csv_text(cases: pd.DataFrame) -> str:
    """The cases.csv text of a per-case table: no index, NaN (and None) written as ``nan``;
    floats are written in their shortest form that reads back to the same value."""
    return cases.to_csv(index=False, na_rep=NAN_TEXT)


def write_cases_csv(path: Path, cases: pd.DataFrame) -> None:
    """Write ``cases`` to ``path`` atomically (``cases_csv_text``): `harness score`'s table and
    a run's cases.csv alike."""
    write_text_atomic(Path(path), cases_csv_text(cases))


def read_cases_csv(path: Path) -> pd.DataFrame:
    """A cases.csv table: the ``TEXT_COLUMNS`` as text (an empty field stays ""), every other
    column as numbers (int64 when all are integers and none is NaN, else float64), ``nan`` and an
    empty field read as NaN. ``ResultsFileError`` names the file when it is missing, unreadable,
    empty, has no ``case`` column or a column twice, a line with another number of fields than
    the header (a file cut short), no case, or a value that is no number in a number column."""
    import pandas as pd

    path = Path(path)
    try:
        with open(path, encoding="utf-8", newline="") as f:
            text = f.read()
        rows = [(n, row) for n, row in enumerate(csv.reader(io.StringIO(text)), start=1) if row]
    except FileNotFoundError:
        raise ResultsFileError(path, "missing") from None
    except (ValueError, csv.Error) as e:  # UnicodeDecodeError is a ValueError
        raise ResultsFileError(path, f"does not parse: {e}") from None
    except OSError as e:
        raise ResultsFileError(path, f"cannot read: {e.strerror or e}") from None
    if not rows:  # blank lines are no rows
        raise ResultsFileError(path, "does not parse: the file is empty")
    header = rows[0][1]
    if "case" not in header:
        raise ResultsFileError(path, f"does not parse: no 'case' column in the header ({','.join(header)[:200]})")
    twice = sorted({c for c in header if header.count(c) > 1})
    if twice:
        raise ResultsFileError(path, f"does not parse: column(s) {twice} appear more than once in the header")
    for line, row in rows[1:]:
        if len(row) != len(header):  # a cut-off last line, most often
            raise ResultsFileError(path, f"does not parse: line {line} has {len(row)} fields, the header {len(header)}")
    if len(rows) == 1:
        raise ResultsFileError(path, "does not parse: a header and no cases")
    lines = [line for line, _ in rows[1:]]
    frame = pd.DataFrame([row for _, row in rows[1:]], columns=header, dtype=object)
    for column in header:
        if column in TEXT_COLUMNS:
            frame[column] = frame[column].astype(str)
            continue
        raw = frame[column].str.strip()
        nan = raw.str.lower().isin(_NAN_READ)
        numbers = pd.to_numeric(raw.mask(nan), errors="coerce")
        bad = (numbers.isna() & ~nan).to_numpy()
        if bad.any():
            where = ", ".join(str(line) for line, b in zip(lines, bad) if b)
            raise ResultsFileError(path, f"does not parse: column {column!r} is not a number on line(s) {where}")
        frame[column] = numbers
    return frame


def read_metrics_json(path: Path) -> dict:
    """A metrics.json: a JSON object (``ResultsFileError`` when it is missing, unreadable, not JSON
    or not an object). What the leaderboard needs of it (``ranking_metrics``, ``classes``) is
    the leaderboard's check."""
    return _read_object(Path(path))


@dataclass(frozen=True, eq=False)
class RunResult:
    """What a finished run computed: metrics.json (``metrics``) and cases.csv (``cases``).

    ``write`` writes both atomically, cases.csv first; DONE is the caller's, after them
    (``RunFolder.mark_done``). ``read`` reads metrics.json, then cases.csv, and raises the
    ``ResultsFileError`` of the first that cannot be used: a done run is corrupt exactly when
    ``read`` fails (harness.jobs.state)."""

    metrics: dict
    cases: pd.DataFrame

    def write(self, run: RunFolder) -> None:
        write_cases_csv(run.cases_csv, self.cases)
        write_json_atomic(run.metrics_json, self.metrics)

    @classmethod
    def read(cls, run: RunFolder) -> RunResult:
        return cls(read_metrics_json(run.metrics_json), read_cases_csv(run.cases_csv))
