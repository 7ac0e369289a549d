"""The intake checks of an uploaded checkpoint and the report they produce.

The work is ordered so that no second full copy of the weights ever exists: the file is hashed
streaming, loaded memory-mapped (no tensor data read), keys and shapes are compared from metadata
against shapes derived on the ``meta`` device, the canary network takes the mapped encoder tensors
by assignment (``load_state_dict(assign=True)``; float32 tensors are used in place, float16 and
bfloat16 ones are necessarily cast, i.e. copied, to float32), and only then every tensor is read
once for the finite / dtype check. Peak memory is therefore about the interpreter plus one file
size (file-backed pages) plus the canary network's decoder.

Over 450 lines for a reason: the intake checks are ordered so that no second copy of the weights
ever exists (above); in one module that order reads as one sequence.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from harness.recipes import LAYERSCALE, RECIPES
from harness.submission.checkpoint import (
    DEFAULT_MAX_SIZE,
    SubmissionError,
    UnreadableSubmissionError,
    check_file,
    format_bytes,
    load_checkpoint_safely,
    sha256_file,
)
from harness.submission.fingerprint import distinct_tensors, fingerprint
from harness.submission.plan import PLAN_KEY, check_adaptation_plan

WEIGHTS_KEY = "network_weights"
#: The checks in report order (the canary runs before the value scan, see the module docstring).
CHECK_NAMES: tuple[str, ...] = (
    "file",
    "safe_load",
    "structure",
    "adaptation_plan",
    "weights_vs_reference",
    "tensor_values",
    "canary",
)
ACCEPTED_DTYPES: tuple[torch.dtype, ...] = (torch.float32, torch.float16, torch.bfloat16)
#: How many keys each missing / unexpected / mismatched list shows.
MAX_LISTED_KEYS = 20
#: Seed of the canary input, so that a canary result is reproducible.
CANARY_SEED = 0


@dataclass
class Check:
    """One intake check. ``skipped`` checks could not run because an earlier one failed."""

    name: str
    ok: bool
    detail: str
    skipped: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "ok": self.ok, "detail": self.detail, "skipped": self.skipped}


@dataclass
class ValidationReport:
    """Outcome of ``validate_submission``. ``valid`` is True when the path was readable and no
    check produced an error; warnings never make a submission invalid."""

    file: str
    sha256: str | None = None
    size_bytes: int | None = None
    track: str | None = None
    checks: list[Check] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    readable: bool = True
    #: Parts some jobs need that the checkpoint lacks (``harness.recipes.LAYERSCALE``: a Primus
    #: without LayerScale and inner attention norm); ``lacking_keys`` names the absent tensors.
    lacks: list[str] = field(default_factory=list)
    lacking_keys: list[str] = field(default_factory=list)
    #: The stem and encoder's fingerprint (harness/submission/fingerprint.py) of a file whose
    #: values passed; intake compares it with the other uploads' to find derived weights.
    fingerprint: dict[str, Any] | None = None

    def runnable(self) -> dict[str, list[str]]:
        """Per shipped recipe, the task types it can run this checkpoint for (none when invalid)."""

        if not self.valid or self.track is None:
            return {name: [] for name in RECIPES}
        return {name: recipe.runnable_task_types(self.track, self.lacks) for name, recipe in RECIPES.items()}

    @property
    def valid(self) -> bool:
        return self.readable and not self.errors

    @property
    def exit_code(self) -> int:
        """0 valid, 1 invalid, 2 the path itself is unreadable (as ``harness validate`` exits)."""
        return 0 if self.valid else (1 if self.readable else 2)

    def to_dict(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "sha256": self.sha256,
            "size_bytes": self.size_bytes,
            "valid": self.valid,
            "track": self.track,
            "checks": [c.to_dict() for c in self.checks],
            "errors": list(self.errors),
            "warnings": list(self.warnings),
            "lacks": list(self.lacks),
            "lacking_keys": list(self.lacking_keys),
            "runnable": self.runnable(),
            "fingerprint": self.fingerprint,
        }

    def format_text(self) -> str:
        size = "-" if self.size_bytes is None else f"{format_bytes(self.size_bytes)} ({self.size_bytes} bytes)"
        lines = [
            f"file:    {self.file}",
            f"size:    {size}",
            f"sha256:  {self.sha256 or '-'}",
            f"track:   {self.track or '-'}",
            "checks:",
        ]
        width = max(len(n) for n in CHECK_NAMES)
        for check in self.checks:
            status = "SKIP" if check.skipped else ("OK" if check.ok else "FAIL")
            lines.append(f"  {status:<4}  {check.name:<{width}}  {check.detail}")
        if self.valid:
            lines.append("runs:")
            lines += [f"  {name}: {', '.join(types) or 'no task type'}" for name, types in self.runnable().items()]
        for title, items in (("errors", self.errors), ("warnings", self.warnings)):
            if items:
                lines.append(f"{title} ({len(items)}):")
                lines += [f"  - {item}" for item in items]
        n_err, n_warn = len(self.errors), len(self.warnings)
        verdict = "VALID" if self.valid else "INVALID"
        lines.append(f"{verdict}: {n_err} error{'s' * (n_err != 1)}, {n_warn} warning{'s' * (n_warn != 1)}")
        return "\n".join(lines)


@dataclass(frozen=True)
class Submission:
    """A checkpoint that passed the structural intake checks, ready for fine-tuning.

    ``weights`` is the full state dict with wrapper prefixes stripped; its tensors are
    memory-mapped from ``path`` (and share storage where the file does, e.g. ResEnc-L's
    ``decoder.encoder.*`` aliases). ``pretrain_patch_size`` is in array order, as nnssl plans
    store it and as the network sees it.
    """

    path: Path
    sha256: str
    size_bytes: int
    track: str
    plan: dict
    weights: dict[str, torch.Tensor]
    pretrain_patch_size: tuple[int, int, int]
    warnings: list[str]


def validate_submission(
    path: str | Path,
    track: str | None = None,
    max_size: int = DEFAULT_MAX_SIZE,
    canary: bool = True,
    *,
    sha256: str | None = None,
) -> ValidationReport:
    """Run every intake check on ``path`` and report; never raises for a bad file.

    ``track`` (ResEncL / PrimusM) validates for that track; by default the plan's
    ``arch_class_name`` decides. ``canary=False`` skips the forward pass. ``sha256``: the digest
    the caller has just computed (an intake hashes each upload once, to know whether it is new):
    the file is not hashed again, and a file whose size or modification time changes during the
    checks is an error ("the file changed during intake").
    """
    if track is not None:
        from harness.models import get_track

        track = get_track(track).name
    intake = _Intake(Path(path), track, max_size, known_sha256=sha256)
    intake.run(structural_only=False, canary=canary)
    return intake.report


def unrunnable_problem(report: Mapping[str, Any], track: str | None, recipe, task_types) -> str | None:
    """Why a valid checkpoint cannot be taken in for ``task_types`` under ``recipe`` (a
    ``harness.recipes.Recipe``), or None when every one of them can run it. ``report`` is a
    ``ValidationReport.to_dict()`` (as intake records keep it)."""
    lacks = list(report.get("lacks") or [])
    wanted = sorted(set(task_types))
    if track is None or not lacks or not wanted:
        return None
    can = recipe.runnable_task_types(track, lacks, wanted)
    cannot = [t for t in wanted if t not in can]
    if not cannot:
        return None
    keys = list(report.get("lacking_keys") or [])
    shown = f"{len(keys)} tensors, e.g. {keys[0]}" if keys else "tensors"
    others = {name: types for name, types in (report.get("runnable") or {}).items() if types}
    elsewhere = "; ".join(f"{', '.join(types)} under recipe {name}" for name, types in others.items())
    return (
        f"the {track} checkpoint lacks {', '.join(lacks)} ({shown}), which the {', '.join(cannot)} jobs of "
        f"recipe {recipe.name} need; of these tasks it could run {', '.join(can) or 'none'}"
        + (f" (in all: {elsewhere})" if elsewhere else "")
    )


def load_submission(path: str | Path, max_size: int = DEFAULT_MAX_SIZE, track: str | None = None) -> Submission:
    """Load a submission for use after the cheap structural checks (file, safe load, structure,
    plan, keys and shapes; no value scan, no canary). Raises ``SubmissionError`` naming the file
    and every problem found."""
    if track is not None:
        from harness.models import get_track

        track = get_track(track).name
    intake = _Intake(Path(path), track, max_size)
    intake.run(structural_only=True, canary=False)
    report = intake.report
    if report.errors:
        cls = SubmissionError if report.readable else UnreadableSubmissionError
        raise cls(f"{path}: " + "; ".join(report.errors))
    if intake.track is None or intake.pretrain_patch_size is None or intake.weights is None:
        raise SubmissionError(f"{path}: the track or the pre-training patch size cannot be determined")
    # no errors: the file check ran (sha256, size) and the plan was read (it gave the patch size)
    assert report.sha256 is not None and report.size_bytes is not None and intake.plan is not None
    return Submission(
        path=Path(path),
        sha256=report.sha256,
        size_bytes=report.size_bytes,
        track=intake.track,
        plan=dict(intake.plan),
        weights=intake.weights,
        pretrain_patch_size=intake.pretrain_patch_size,
        warnings=list(report.warnings),
    )


class _Intake:
    """Runs the checks in order, keeping what later checks need (weights, plan, track, patch)."""

    def __init__(self, path: Path, requested_track: str | None, max_size: int, known_sha256: str | None = None):
        self.path = path
        self.known_sha256 = known_sha256
        self.stat_before: tuple[int, int] | None = None
        self.requested_track = requested_track
        self.max_size = int(max_size)
        self.report = ValidationReport(file=str(path))
        self.checks: dict[str, Check] = {}
        # Kept per check so that the report lists them in check order, whatever the run order.
        self.errors_by_check: dict[str, list[str]] = {}
        self.warnings_by_check: dict[str, list[str]] = {}
        self.checkpoint: Any = None
        self.weights: dict[str, torch.Tensor] | None = None
        self.plan: Mapping[str, Any] | None = None
        self.track: str | None = None
        self.pretrain_patch_size: tuple[int, int, int] | None = None
        self.shapes_ok = False
        #: False for a Primus without LayerScale and inner attention norm (see weights_vs_reference).
        self.layerscale = True

    # -- bookkeeping -------------------------------------------------------------------------
    def _record(self, name: str, errors: list[str], warnings: list[str], detail: str) -> bool:
        ok = not errors
        # The report names the file once; its errors say the problem (SubmissionError texts
        # from the loader start with the path, which is dropped here).
        errors = [e.removeprefix(f"{self.path}: ") for e in errors]
        self.errors_by_check[name] = errors
        self.warnings_by_check[name] = list(warnings)
        self.checks[name] = Check(
            name, ok, detail if ok else errors[0] if len(errors) == 1 else f"{len(errors)} problems (see errors)"
        )
        return ok

    def _skip(self, name: str, reason: str) -> None:
        self.checks.setdefault(name, Check(name, False, f"skipped: {reason}", skipped=True))

    def run(self, *, structural_only: bool, canary: bool) -> None:
        try:
            self._run(structural_only=structural_only, canary=canary)
            self._check_unchanged()
        finally:
            wanted = CHECK_NAMES[:5] if structural_only else CHECK_NAMES
            for name in wanted:
                self._skip(name, "an earlier check failed")
            self.report.checks = [self.checks[n] for n in wanted]
            self.report.errors = [e for n in wanted for e in self.errors_by_check.get(n, [])]
            self.report.warnings = [w for n in wanted for w in self.warnings_by_check.get(n, [])]
            self.report.track = self.track

    def _run(self, *, structural_only: bool, canary: bool) -> None:
        if not self._check_file():
            return
        if not self._check_safe_load():
            return
        self._check_structure()
        self._check_plan()
        self._check_weights_vs_reference()
        if structural_only:
            return
        if not canary:
            self.checks["canary"] = Check("canary", True, "not run (disabled)", skipped=True)
        elif self.shapes_ok:
            self._check_canary()
        self._check_tensor_values()
        if self.shapes_ok and self.track is not None and not any(self.errors_by_check.values()):
            # from the mapped weights the checks have just read: the pages are in the page cache
            self.report.fingerprint = fingerprint(self.weights or {}, self.track)

    # -- 1. file -----------------------------------------------------------------------------
    def _check_file(self) -> bool:
        try:
            size = check_file(self.path, self.max_size)
        except UnreadableSubmissionError as exc:
            self.report.readable = False
            return self._record("file", [str(exc)], [], "")
        except SubmissionError as exc:
            return self._record("file", [str(exc)], [], "")
        self.report.size_bytes = size
        try:
            if self.known_sha256 is not None:  # hashed by the caller: the file is read once
                info = os.stat(self.path)
                self.stat_before = (info.st_size, info.st_mtime_ns)
                self.report.sha256 = self.known_sha256
            else:
                self.report.sha256 = sha256_file(self.path)
        except OSError as exc:
            self.report.readable = False
            return self._record("file", [f"{self.path}: cannot read the file ({exc.strerror or exc})"], [], "")
        return self._record("file", [], [], f"regular file, {format_bytes(size)} (limit {format_bytes(self.max_size)})")

    def _check_unchanged(self) -> None:
        """With a digest from the caller: the file still has the size and time it was hashed with."""
        if self.stat_before is None:
            return
        try:
            info = os.stat(self.path)
            now: tuple[int, int] | None = (info.st_size, info.st_mtime_ns)
        except OSError:
            now = None
        if now != self.stat_before:
            self.errors_by_check.setdefault("file", []).append("the file changed during intake")
            self.checks["file"] = Check("file", False, "the file changed during intake")

    # -- 2. safe load ------------------------------------------------------------------------
    def _check_safe_load(self) -> bool:
        try:
            self.checkpoint, notes = load_checkpoint_safely(self.path)
        except SubmissionError as exc:
            return self._record("safe_load", [str(exc)], [], "")
        return self._record("safe_load", [], notes, "loaded with torch.load(weights_only=True); no code executed")

    # -- 3. structure ------------------------------------------------------------------------
    def _check_structure(self) -> None:
        from harness.models import strip_wrapper_prefixes

        ckpt, errors, warnings = self.checkpoint, [], []
        self.checkpoint = None  # the weights and plan are kept; the rest (optimizer state ...) is dropped
        if not isinstance(ckpt, Mapping):
            self._record(
                "structure",
                [f"the checkpoint is a {type(ckpt).__name__}, expected a dict with '{WEIGHTS_KEY}' and '{PLAN_KEY}'"],
                [],
                "",
            )
            return
        top_keys = ", ".join(map(repr, list(ckpt)[:12])) or "none"
        weights = ckpt.get(WEIGHTS_KEY)
        if weights is None:
            errors.append(f"no '{WEIGHTS_KEY}' entry (the model state dict); top-level keys: {top_keys}")
        elif not isinstance(weights, Mapping):
            errors.append(f"'{WEIGHTS_KEY}' is a {type(weights).__name__}, expected a dict of name -> tensor")
        elif not weights:
            errors.append(f"'{WEIGHTS_KEY}' is empty")
        else:
            bad = [k for k, v in weights.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
            if bad:
                shown = ", ".join(f"{k!r} ({type(weights[k]).__name__})" for k in bad[:5])
                errors.append(
                    f"'{WEIGHTS_KEY}' must map names to tensors; {_count(bad, 'entry')} "
                    f"{'does' if len(bad) == 1 else 'do'} not: {shown}"
                )
            else:
                stripped, prefixes = strip_wrapper_prefixes(weights)
                for prefix in prefixes:
                    warnings.append(
                        f"every key in '{WEIGHTS_KEY}' carried the wrapper prefix {prefix!r} "
                        "(DDP / torch.compile); it was stripped"
                    )
                self.weights = stripped
        plan = ckpt.get(PLAN_KEY)
        if plan is None:
            errors.append(f"no '{PLAN_KEY}' entry (the nnssl adaptation plan); top-level keys: {top_keys}")
        elif not isinstance(plan, Mapping):
            errors.append(f"'{PLAN_KEY}' is a {type(plan).__name__}, expected a dict")
        else:
            self.plan = plan
        detail = ""
        if self.weights is not None:
            distinct = distinct_tensors(self.weights)
            data = sum(t.untyped_storage().nbytes() for t in _distinct_storages(self.weights))
            others = [k for k in ckpt if k not in (WEIGHTS_KEY, PLAN_KEY)]
            detail = (
                f"{len(self.weights)} weight keys ({len(distinct)} distinct tensors, {format_bytes(data)}); "
                f"plan present; other entries ignored: {', '.join(map(str, others)) or 'none'}"
            )
        self._record("structure", errors, warnings, detail)

    # -- 4. adaptation plan ------------------------------------------------------------------
    def _check_plan(self) -> None:
        if self.plan is None:
            self.track = self.requested_track
            self._skip("adaptation_plan", f"no usable '{PLAN_KEY}'")
            return
        found = check_adaptation_plan(self.plan, self.requested_track)
        self.track = self.requested_track or found.track
        self.pretrain_patch_size = found.pretrain_patch_size
        config = f" (configuration {found.configuration!r})" if found.configuration else ""
        detail = (
            f"track {self.track}, pre-training patch size {self.pretrain_patch_size}{config}, "
            "1 input channel, keys agree with the reference"
        )
        self._record("adaptation_plan", found.errors, found.warnings, detail)

    # -- 5. keys and shapes ------------------------------------------------------------------
    def _check_weights_vs_reference(self) -> None:
        from harness.models import get_track, reference_state_shapes

        name = "weights_vs_reference"
        if self.weights is None:
            return self._skip(name, f"no usable '{WEIGHTS_KEY}'")
        if self.track is None:
            return self._skip(name, "no track: the plan names none (pass --track)")
        if self.pretrain_patch_size is None:
            if get_track(self.track).key_to_lpe is not None:
                return self._skip(name, "the pre-training patch size is unknown (its positional embedding needs it)")
            patch = (160, 160, 160)  # without a positional embedding, shapes do not depend on it
        else:
            patch = self.pretrain_patch_size
        spec = get_track(self.track)
        reference = reference_state_shapes(spec.name, patch)
        submitted = {k: tuple(v.shape) for k, v in self.weights.items()}
        errors, warnings = [], []

        ref_in = [k for k in reference if spec.is_transferred(k)]
        missing = [k for k in ref_in if k not in submitted]
        unexpected = [k for k in submitted if spec.is_transferred(k) and k not in reference]
        mismatched = [k for k in ref_in if k in submitted and submitted[k] != reference[k]]
        prefixes = " / ".join(spec.transferred_prefixes)
        from harness.models.transfer import LAYERSCALE_KEY

        layerscale_keys = [k for k in ref_in if LAYERSCALE_KEY.match(k)]
        if layerscale_keys and missing == layerscale_keys:
            # seen in the wild: a Primus built without LayerScale (gamma_1, gamma_2) and inner
            # attention norm. It fits the organizers' classification Eva, not PrimusM.
            self.layerscale = False
            self.report.lacks, self.report.lacking_keys = [LAYERSCALE], layerscale_keys
            missing = []
            warnings.append(
                f"the Primus has no LayerScale (gamma_1, gamma_2) or inner attention norm (attn.norm): "
                f"{len(layerscale_keys)} PrimusM tensors absent. It fits the organizers' classification Eva "
                "(recipe ssl3d-2025) only; an intake whose tasks need PrimusM's Eva (segmentation, "
                "ssl3d-2025-lossless classification) rejects it"
            )
        if missing:
            errors.append(
                f"{_count(missing, 'stem/encoder key')} of the {spec.name} reference {_be(missing)} missing from "
                f"'{WEIGHTS_KEY}'{_first(missing)}: {', '.join(missing[:MAX_LISTED_KEYS])}"
            )
        if unexpected:
            errors.append(
                f"{_count(unexpected, 'key')} under {prefixes} {_be(unexpected)} not in the {spec.name} reference"
                f"{_first(unexpected)}: {', '.join(unexpected[:MAX_LISTED_KEYS])}"
            )
        if mismatched:
            shown = ", ".join(
                f"{k} {list(submitted[k])} (reference {list(reference[k])})" for k in mismatched[:MAX_LISTED_KEYS]
            )
            hint = ""
            if spec.key_to_lpe in mismatched:
                hint = f" ({spec.key_to_lpe} is checked against the plan's pre-training patch size {patch})"
            errors.append(
                f"wrong shape for {_count(mismatched, 'stem/encoder tensor')}{_first(mismatched)}: {shown}{hint}"
            )

        ref_out = [k for k in reference if not spec.is_transferred(k)]
        out_missing = [k for k in ref_out if k not in submitted]
        out_extra = [k for k in submitted if not spec.is_transferred(k) and k not in reference]
        out_mismatched = [k for k in ref_out if k in submitted and submitted[k] != reference[k]]
        if out_mismatched:
            shown = ", ".join(f"{k} {list(submitted[k])} (reference {list(reference[k])})" for k in out_mismatched[:5])
            warnings.append(
                f"shape differs from the reference for {_count(out_mismatched, 'key')} outside the stem "
                f"and encoder (not transferred, ignored): {shown}{', ...' if len(out_mismatched) > 5 else ''}"
            )
        if out_extra:
            warnings.append(
                f"{_count(out_extra, 'key')} outside the stem and encoder {_be(out_extra)} not in the "
                f"reference (not transferred, ignored): {_few(out_extra)}"
            )
        if out_missing:
            warnings.append(
                f"{_count(out_missing, 'reference key')} outside the stem and encoder {_be(out_missing)} "
                f"absent (decoder "
                f"and head are trained from scratch anyway): {_few(out_missing)}"
            )
        self.shapes_ok = not errors
        self._record(
            name,
            errors,
            warnings,
            f"all {len(ref_in)} stem/encoder tensors present with the {spec.name} reference shapes "
            f"(pre-training patch {patch})",
        )

    # -- 6. values ---------------------------------------------------------------------------
    def _check_tensor_values(self) -> None:
        name = "tensor_values"
        if self.weights is None:
            return self._skip(name, f"no usable '{WEIGHTS_KEY}'")
        bad_dtype, non_finite, unusable = [], [], []
        distinct = distinct_tensors(self.weights)
        n_float = 0
        for key, tensor in distinct.items():
            if tensor.device.type != "cpu" or tensor.layout != torch.strided or tensor.is_quantized:
                unusable.append(f"{key} ({tensor.device.type}, {tensor.layout}, {tensor.dtype})")
                continue
            if not (tensor.is_floating_point() or tensor.is_complex()):
                continue
            n_float += 1
            if tensor.dtype not in ACCEPTED_DTYPES:
                bad_dtype.append(f"{key} ({str(tensor.dtype).removeprefix('torch.')})")
                continue
            if not _all_finite(tensor):
                n_nan = int(torch.isnan(tensor).sum())
                n_inf = int(torch.isinf(tensor).sum())
                non_finite.append(f"{key} ({n_nan} NaN, {n_inf} Inf of {tensor.numel()} values)")
        errors = []
        if unusable:
            errors.append(
                f"{_count(unusable, 'tensor')} without dense CPU data{_first(unusable)}: "
                f"{', '.join(unusable[:MAX_LISTED_KEYS])}"
            )
        if bad_dtype:
            errors.append(
                f"{_count(bad_dtype, 'floating tensor')} {_be(bad_dtype)} not float32, float16 or bfloat16"
                f"{_first(bad_dtype)}: {', '.join(bad_dtype[:MAX_LISTED_KEYS])}"
            )
        if non_finite:
            errors.append(
                f"non-finite values in {_count(non_finite, 'tensor')}{_first(non_finite)}: "
                f"{', '.join(non_finite[:MAX_LISTED_KEYS])}"
            )
        dtypes = sorted({str(t.dtype).removeprefix("torch.") for t in distinct.values() if t.is_floating_point()})
        self._record(
            name, errors, [], f"{n_float} distinct floating tensors, all finite, dtype {', '.join(dtypes) or '-'}"
        )

    # -- 7. canary ---------------------------------------------------------------------------
    def _check_canary(self) -> None:
        from harness.models import TransferError, build_network, get_track, load_pretrained_encoder

        assert self.track is not None and self.weights is not None  # shapes_ok: both were checked
        spec = get_track(self.track)
        edge = spec.canary_patch
        patch = (edge, edge, edge)
        what = f"{spec.name} network" if self.layerscale else "Primus-M encoder without LayerScale"
        network: torch.nn.Module | None = None
        try:
            if self.layerscale:
                # the canary only needs a forward pass: nnU-Net's initialisation would be wasted work
                network = build_network(spec.name, input_channels=1, num_classes=1, patch_size=patch, initialize=False)
            else:
                network = _EvaWithoutLayerScale(patch)
            # assign=True: the network takes the mapped tensors instead of copying them, and the
            # freshly initialised encoder it was built with is freed.
            load_pretrained_encoder(
                network,
                self.weights,
                spec.name,
                pretrain_patch_size=self.pretrain_patch_size or patch,
                target_patch_size=patch,
                assign=True,
            )
            network.eval()
            generator = torch.Generator().manual_seed(CANARY_SEED)
            x = torch.randn((1, 1, *patch), generator=generator)
            with torch.no_grad():
                y = network(x)
        except TransferError as exc:
            self._record("canary", [f"canary: the weights cannot be loaded into the {what}: {exc}"], [], "")
            return
        except Exception as exc:  # noqa: BLE001 - a canary must report, never crash the intake
            self._record("canary", [f"canary: the forward pass at {patch} failed: {type(exc).__name__}: {exc}"], [], "")
            return
        finally:
            network = None  # noqa: F841 - release the decoder before the value scan
        if isinstance(y, (list, tuple)):
            y = y[0]
        errors = []
        if not bool(torch.isfinite(y).all()):
            errors.append(
                f"canary: the {what} with the submitted stem and encoder gives "
                f"non-finite output on a {patch} input ({int(torch.isnan(y).sum())} NaN, "
                f"{int(torch.isinf(y).sum())} Inf of {y.numel()} values)"
            )
        self._record(
            "canary",
            errors,
            [],
            f"the {what} with the submitted stem and encoder, one forward pass on a random "
            f"{'x'.join(map(str, patch))} input: output {list(y.shape)}, finite",
        )


class _EvaWithoutLayerScale(torch.nn.Module):
    """The canary of a Primus without LayerScale: patch embedding and Eva as the organizers'
    classification builds them; the output is Eva's tokens."""

    def __init__(self, patch):
        from harness.models.primus import build_primus_encoder

        super().__init__()
        self.down_projection, self.eva = build_primus_encoder(1, patch, layerscale=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from harness.models.primus import to_tokens

        return self.eva(to_tokens(self.down_projection(x), "nnssl"))[0]


def _all_finite(tensor: torch.Tensor) -> bool:
    """True when every value is finite. A NaN or Inf always makes the sum non-finite, so one
    allocation-free reduction settles the common case; only a non-finite sum (bad values, or an
    overflow of large finite ones) pays for the exact element-wise test."""
    if bool(torch.isfinite(tensor.sum())):
        return True
    return bool(torch.isfinite(tensor).all())


def _distinct_storages(weights: Mapping[str, torch.Tensor]) -> list[torch.Tensor]:
    seen, out = set(), []
    for t in weights.values():
        if t.device.type != "cpu" or t.layout != torch.strided:
            continue
        ptr = t.untyped_storage().data_ptr()
        if ptr not in seen:
            seen.add(ptr)
            out.append(t)
    return out


def _count(items: list, noun: str) -> str:
    if len(items) == 1:
        return f"1 {noun}"
    consonant_y = noun.endswith("y") and noun[-2:-1] not in ("a", "e", "i", "o", "u")
    return f"{len(items)} {noun[:-1] + 'ies' if consonant_y else noun + 's'}"


def _be(items: list) -> str:
    return "is" if len(items) == 1 else "are"


def _first(items: list) -> str:
    return f" (first {MAX_LISTED_KEYS})" if len(items) > MAX_LISTED_KEYS else ""


def _few(keys: list[str], n: int = 5) -> str:
    return ", ".join(keys[:n]) + (", ..." if len(keys) > n else "")
