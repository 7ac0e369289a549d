"""Submission intake on real, full-size example checkpoints and on hostile files.

Each test asserts the specific outcome: which check failed, and that the error names the
problem (key, global, field). Base examples come from session fixtures in conftest.py.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from harness.cli import main as cli_main
from harness.submission import (
    SubmissionError,
    UnreadableSubmissionError,
    load_submission,
    validate_submission,
)
from harness.submission.checkpoint import scan_pickle_globals
from harness.submission.validate import CHECK_NAMES

# dynamic-network-architectures' Primus imports timm, which uses a deprecated torch.jit API.
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.interface` is deprecated:FutureWarning")

REPO = Path(__file__).resolve().parents[1]
ENCODER_KEY = "encoder.stages.2.blocks.0.conv1.conv.weight"


def checks_by_name(report) -> dict:
    return {c.name: c for c in report.checks}


def assert_only_failure(report, failed: str) -> None:
    """``failed`` is the one check that failed; every later check that could not run is skipped."""
    checks = checks_by_name(report)
    assert list(checks) == list(CHECK_NAMES)
    assert not checks[failed].ok and not checks[failed].skipped
    for name in CHECK_NAMES[: CHECK_NAMES.index(failed)]:
        assert checks[name].ok, (name, checks[name].detail)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# -------------------------------------------------------------------------------- valid files


@pytest.fixture(scope="module")
def resencl_report(resencl_checkpoint):
    """The report of the ResEnc-L example, validated once (with its canary) for the tests that
    read it: the library's verdict here, the CLI's text rendering in ``test_cli_exit_codes_and_json``."""
    return validate_submission(resencl_checkpoint)


def test_valid_resencl(resencl_checkpoint, resencl_report):
    report = resencl_report
    assert report.valid and report.exit_code == 0
    assert report.track == "ResEncL"
    assert report.errors == [] and report.warnings == []
    assert [c.name for c in report.checks] == list(CHECK_NAMES)
    assert all(c.ok and not c.skipped for c in report.checks)
    assert report.sha256 == sha256(resencl_checkpoint)
    assert report.size_bytes == resencl_checkpoint.stat().st_size
    assert "64x64x64" in checks_by_name(report)["canary"].detail
    # torch.save kept the aliases (decoder.encoder.*, all_modules.N) shared: one copy of the data.
    assert report.size_bytes < 450e6
    as_json = json.loads(json.dumps(report.to_dict()))  # what `harness validate --json` prints
    assert as_json["valid"] is True and as_json["track"] == "ResEncL" and as_json["errors"] == []


def test_load_submission_resencl(resencl_checkpoint):
    sub = load_submission(resencl_checkpoint)
    assert sub.track == "ResEncL"
    assert sub.pretrain_patch_size == (160, 160, 160)
    assert len(sub.weights) == 956
    assert sub.weights[ENCODER_KEY].shape == (128, 64, 3, 3, 3)
    assert sub.sha256 == sha256(resencl_checkpoint) and sub.size_bytes == resencl_checkpoint.stat().st_size
    assert sub.plan["key_to_encoder"] == "encoder.stages"
    assert sub.warnings == []


def test_valid_primus(primus_checkpoint):
    report = validate_submission(primus_checkpoint)
    assert report.valid, report.errors
    assert report.track == "PrimusM"
    assert report.warnings == []
    assert "32x32x32" in checks_by_name(report)["canary"].detail
    sub = load_submission(primus_checkpoint)
    assert sub.weights["eva.pos_embed"].shape == (1, 8000, 864)


def test_valid_resencl_float16(resencl_fp16_checkpoint):
    report = validate_submission(resencl_fp16_checkpoint)
    assert report.valid, report.errors
    assert "dtype float16" in checks_by_name(report)["tensor_values"].detail


def test_valid_primus_bfloat16_pretrained_at_192x192x64(primus_bf16_192x192x64_checkpoint):
    report = validate_submission(primus_bf16_192x192x64_checkpoint)
    assert report.valid, report.errors
    assert "dtype bfloat16" in checks_by_name(report)["tensor_values"].detail
    assert "(192, 192, 64)" in checks_by_name(report)["weights_vs_reference"].detail
    sub = load_submission(primus_bf16_192x192x64_checkpoint)
    assert sub.pretrain_patch_size == (192, 192, 64)
    assert sub.weights["eva.pos_embed"].shape == (1, 24 * 24 * 8, 864)


def test_path_with_spaces_and_non_ascii(resencl_checkpoint, tmp_path, capsys):
    folder = tmp_path / "Einreichungen mit Leerzeichen"
    folder.mkdir()
    odd = folder / "équipe ü 測試 #1.pth"
    os.link(resencl_checkpoint, odd)
    assert cli_main(["validate", str(odd), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["file"] == str(odd) and out["valid"] is True


# ------------------------------------------------------------------ plan and structure errors


def set_arch(name):
    def edit(ckpt):
        ckpt["nnssl_adaptation_plan"]["architecture_plans"]["arch_class_name"] = name

    return edit


def test_wrong_arch_class_name_lists_accepted_tracks(resencl_checkpoint, derive_checkpoint):
    path = derive_checkpoint(resencl_checkpoint, "arch_PrimusB.pth", set_arch("PrimusB"))
    report = validate_submission(path)
    assert not report.valid and report.exit_code == 1
    assert_only_failure(report, "adaptation_plan")
    assert any("'PrimusB'" in e and "accepted tracks: ResEncL, PrimusM" in e for e in report.errors)
    assert checks_by_name(report)["weights_vs_reference"].skipped
    # Told the track, the intake still checks the weights: only the plan is wrong.
    report = validate_submission(path, track="ResEncL")
    assert checks_by_name(report)["weights_vs_reference"].ok
    assert checks_by_name(report)["canary"].ok
    assert len(report.errors) == 1


def test_plan_of_the_other_track(resencl_checkpoint, derive_checkpoint):
    path = derive_checkpoint(resencl_checkpoint, "arch_PrimusM.pth", set_arch("PrimusM"))
    report = validate_submission(path)
    assert not report.valid
    # The plan's keys are ResEncL's, the weights are ResEncL's: both disagree with PrimusM.
    assert any("key_to_encoder is 'encoder.stages'; the PrimusM reference expects 'eva'" in e for e in report.errors)
    assert any("stem/encoder keys of the PrimusM reference are missing" in e for e in report.errors)
    # (the canary is not what this asserts: test_wrong_arch_class_name_lists_accepted_tracks runs it)
    report = validate_submission(path, track="ResEncL", canary=False)
    assert any("is 'PrimusM' but the submission was validated for track 'ResEncL'" in e for e in report.errors)


def test_missing_plan(resencl_checkpoint, derive_checkpoint):
    path = derive_checkpoint(resencl_checkpoint, "no_plan.pth", lambda c: c.pop("nnssl_adaptation_plan"))
    report = validate_submission(path)
    assert_only_failure(report, "structure")
    assert report.errors == [
        "no 'nnssl_adaptation_plan' entry (the nnssl adaptation plan); top-level keys: "
        "'network_weights', 'trainer_name', 'current_epoch'"
    ]
    with pytest.raises(SubmissionError, match=r"no_plan\.pth: no 'nnssl_adaptation_plan' entry"):
        load_submission(path)


def test_missing_network_weights(resencl_checkpoint, derive_checkpoint):
    path = derive_checkpoint(resencl_checkpoint, "no_weights.pth", lambda c: c.pop("network_weights"))
    report = validate_submission(path)
    assert_only_failure(report, "structure")
    assert len(report.errors) == 1 and report.errors[0].startswith("no 'network_weights' entry")
    assert checks_by_name(report)["adaptation_plan"].ok  # the plan is still checked
    assert checks_by_name(report)["tensor_values"].skipped


def test_missing_encoder_key(resencl_checkpoint, derive_checkpoint):
    key = "encoder.stages.3.blocks.1.conv2.norm.bias"
    path = derive_checkpoint(resencl_checkpoint, "missing_key.pth", lambda c: c["network_weights"].pop(key))
    report = validate_submission(path)
    assert_only_failure(report, "weights_vs_reference")
    assert report.errors == [f"1 stem/encoder key of the ResEncL reference is missing from 'network_weights': {key}"]
    assert checks_by_name(report)["canary"].skipped
    with pytest.raises(SubmissionError, match="missing_key.pth: 1 stem/encoder key of"):
        load_submission(path)


def test_mismatched_encoder_shape(resencl_checkpoint, derive_checkpoint):
    key = "encoder.stages.1.blocks.0.conv1.conv.bias"

    def edit(c):
        c["network_weights"][key] = torch.zeros(65)

    report = validate_submission(derive_checkpoint(resencl_checkpoint, "bad_shape.pth", edit))
    assert_only_failure(report, "weights_vs_reference")
    assert report.errors == [f"wrong shape for 1 stem/encoder tensor: {key} [65] (reference [64])"]


def test_primus_pos_embed_checked_against_the_plans_patch(primus_checkpoint, derive_checkpoint):
    def edit(c):
        c["nnssl_adaptation_plan"]["pretrain_plan"]["configurations"]["onemmiso"]["patch_size"] = (192, 192, 64)

    report = validate_submission(derive_checkpoint(primus_checkpoint, "primus_wrong_patch.pth", edit))
    assert_only_failure(report, "weights_vs_reference")
    assert len(report.errors) == 1
    assert "eva.pos_embed [1, 8000, 864] (reference [1, 4608, 864])" in report.errors[0]
    assert "pre-training patch size (192, 192, 64)" in report.errors[0]


def test_mismatched_decoder_is_a_warning(resencl_checkpoint, derive_checkpoint):
    def edit(c):
        w = c["network_weights"]
        w["decoder.seg_layers.4.weight"] = torch.zeros(3, 32, 1, 1, 1)  # a 3-class head
        w["decoder.seg_layers.4.bias"] = torch.zeros(3)
        w["decoder.mae_head.weight"] = torch.zeros(4)  # a surplus key
        del w["decoder.seg_layers.0.bias"]

    report = validate_submission(derive_checkpoint(resencl_checkpoint, "other_head.pth", edit))
    assert report.valid, report.errors
    assert len(report.warnings) == 3
    mismatch, surplus, absent = report.warnings
    assert mismatch.startswith("shape differs from the reference for 2 keys outside the stem and encoder")
    assert "decoder.seg_layers.4.weight [3, 32, 1, 1, 1] (reference [1, 32, 1, 1, 1])" in mismatch
    assert "decoder.mae_head.weight" in surplus and "ignored" in surplus
    assert "decoder.seg_layers.0.bias" in absent


def test_module_prefix_is_stripped_with_a_warning(resencl_checkpoint, derive_checkpoint):
    def edit(c):
        c["network_weights"] = {f"module.{k}": v for k, v in c["network_weights"].items()}

    path = derive_checkpoint(resencl_checkpoint, "module_prefix.pth", edit)
    report = validate_submission(path)
    assert report.valid, report.errors
    assert len(report.warnings) == 1 and "'module.'" in report.warnings[0]
    sub = load_submission(path)
    assert ENCODER_KEY in sub.weights and not any(k.startswith("module.") for k in sub.weights)


# ------------------------------------------------------------------------------ tensor values


def test_non_finite_weights_name_the_tensor(resencl_checkpoint, derive_checkpoint):
    """A NaN in one encoder tensor and an Inf in another: one validation, each named with its counts."""
    inf_key = "encoder.stages.1.blocks.0.conv1.conv.bias"  # 64 values

    def edit(c):
        c["network_weights"][ENCODER_KEY].view(-1)[7] = float("nan")  # in place: every alias sees it
        c["network_weights"][inf_key].view(-1)[3] = float("inf")

    report = validate_submission(derive_checkpoint(resencl_checkpoint, "nonfinite.pth", edit))
    assert not report.valid
    checks = checks_by_name(report)
    assert not checks["tensor_values"].ok and not checks["canary"].ok
    assert checks["weights_vs_reference"].ok
    (values,) = [e for e in report.errors if e.startswith("non-finite values in")]
    assert values.startswith("non-finite values in 2 tensors: ")  # aliases (decoder.encoder.*) counted once
    assert f"{ENCODER_KEY} (1 NaN, 0 Inf of 221184 values)" in values
    assert f"{inf_key} (0 NaN, 1 Inf of 64 values)" in values
    assert any(e.startswith("canary: the ResEncL network") and "non-finite output" in e for e in report.errors)


def test_float64_weights_are_rejected(tmp_path, resencl_checkpoint, derive_checkpoint):
    def edit(c):
        w = c["network_weights"]
        w["decoder.seg_layers.4.bias"] = w["decoder.seg_layers.4.bias"].double()

    report = validate_submission(derive_checkpoint(resencl_checkpoint, "float64.pth", edit), canary=False)
    assert report.errors == [
        "1 floating tensor is not float32, float16 or bfloat16: decoder.seg_layers.4.bias (float64)"
    ]


# ------------------------------------------------------------------------- unreadable bytes


def test_truncated_file(resencl_checkpoint, tmp_path):
    path = tmp_path / "truncated.pth"
    with open(resencl_checkpoint, "rb") as src:
        path.write_bytes(src.read(resencl_checkpoint.stat().st_size // 2))
    report = validate_submission(path)
    assert_only_failure(report, "safe_load")
    assert len(report.errors) == 1 and report.errors[0].startswith("truncated or corrupted checkpoint")
    assert report.sha256 == sha256(path)
    with pytest.raises(SubmissionError, match="truncated.pth: truncated or corrupted"):
        load_submission(path)


def test_random_bytes(tmp_path):
    path = tmp_path / "random.pth"
    path.write_bytes(
        torch.randint(0, 256, (1 << 20,), generator=torch.Generator().manual_seed(3), dtype=torch.uint8)
        .numpy()
        .tobytes()
    )
    report = validate_submission(path)
    assert_only_failure(report, "safe_load")
    assert report.errors[0].startswith("not a PyTorch checkpoint")


def test_empty_file(tmp_path):
    path = tmp_path / "empty.pth"
    path.touch()
    report = validate_submission(path)
    assert_only_failure(report, "file")
    assert report.errors == ["the file is empty"]


def test_size_over_the_limit_is_not_read(resencl_checkpoint):
    report = validate_submission(resencl_checkpoint, max_size=1000)
    assert_only_failure(report, "file")
    assert report.exit_code == 1
    assert "over the limit of 1.0 kB (1000 bytes); it was not read" in report.errors[0]
    assert report.sha256 is None  # not even hashed
    assert all(c.skipped for c in report.checks[1:])


def test_unreadable_paths(tmp_path):
    for path, words in ((tmp_path / "nope.pth", "no such file"), (tmp_path, "a directory")):
        report = validate_submission(path)
        assert not report.readable and report.exit_code == 2
        assert words in report.errors[0]
        with pytest.raises(UnreadableSubmissionError, match=words):
            load_submission(path)


def test_not_a_dict(tmp_path):
    path = tmp_path / "list.pth"
    torch.save([torch.zeros(2)], path)
    report = validate_submission(path)
    assert_only_failure(report, "structure")
    assert report.errors == [
        "the checkpoint is a list, expected a dict with 'network_weights' and 'nnssl_adaptation_plan'"
    ]


def test_weights_must_be_tensors(tmp_path):
    from harness.submission import example_adaptation_plan

    path = tmp_path / "numbers.pth"
    torch.save(
        {
            "network_weights": {"encoder.stem.convs.0.conv.weight": 1.5, "b": [1], "c": torch.zeros(1)},
            "nnssl_adaptation_plan": example_adaptation_plan("ResEncL"),
        },
        path,
    )
    report = validate_submission(path)
    assert_only_failure(report, "structure")
    assert report.errors == [
        "'network_weights' must map names to tensors; 2 entries do not: "
        "'encoder.stem.convs.0.conv.weight' (float), 'b' (list)"
    ]


def test_legacy_torch_format_loads_with_a_warning(tmp_path):
    from harness.submission import example_adaptation_plan

    path = tmp_path / "legacy.pth"
    torch.save(
        {
            "network_weights": {"encoder.stem.convs.0.conv.weight": torch.zeros(32, 1, 3, 3, 3)},
            "nnssl_adaptation_plan": example_adaptation_plan("ResEncL"),
        },
        path,
        _use_new_zipfile_serialization=False,
    )
    report = validate_submission(path)
    checks = checks_by_name(report)
    assert checks["safe_load"].ok and checks["adaptation_plan"].ok
    assert any("legacy (non-zip) format" in w for w in report.warnings)
    assert not checks["weights_vs_reference"].ok  # one tensor is not a ResEnc-L


# ---------------------------------------------------------------------------- hostile pickles


class _RunsShell:
    """Unpickling this runs ``touch <marker>``: what a hostile checkpoint would do."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch '{self.marker}'",))


class _RunsExec:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').close()",))


def _hostile_checkpoint(path: Path, payload) -> Path:
    from harness.submission import example_adaptation_plan

    torch.save(
        {
            "network_weights": {"encoder.stem.convs.0.conv.weight": torch.zeros(32, 1, 3, 3, 3)},
            "nnssl_adaptation_plan": example_adaptation_plan("ResEncL"),
            "init_args": payload,
        },
        path,
    )
    return path


@pytest.mark.parametrize(
    "payload_cls,global_name", [(_RunsShell, "posix.system (os.system)"), (_RunsExec, "builtins.exec")]
)
def test_malicious_pickle_in_a_torch_checkpoint_is_rejected(tmp_path, payload_cls, global_name):
    marker = tmp_path / "marker_created_by_unpickling"
    path = _hostile_checkpoint(tmp_path / "hostile.pth", payload_cls(marker))
    # The payload works: a plain unpickle of the same object creates the marker.
    pickle.loads(pickle.dumps(payload_cls(tmp_path / "control")))
    assert (tmp_path / "control").exists()

    report = validate_submission(path)
    assert_only_failure(report, "safe_load")
    assert len(report.errors) == 1
    assert f"references the global {global_name}" in report.errors[0]
    assert "nothing from the file was executed" in report.errors[0]
    with pytest.raises(SubmissionError, match="hostile.pth: rejected unsafe checkpoint"):
        load_submission(path)
    assert not marker.exists()


def test_torch_itself_refuses_what_the_scan_lets_through(tmp_path, monkeypatch):
    """With the static scan disabled, torch's weights-only unpickler still rejects the file and
    the error still names the global."""
    from harness.submission import checkpoint

    marker = tmp_path / "marker"
    path = _hostile_checkpoint(tmp_path / "hostile.pth", _RunsShell(marker))
    monkeypatch.setattr(checkpoint, "_allowed_globals", lambda: None)
    report = validate_submission(path)
    assert_only_failure(report, "safe_load")
    assert "references the global posix.system (os.system)" in report.errors[0]
    assert not marker.exists()


def test_a_class_from_some_module_is_rejected(tmp_path):
    import argparse

    path = _hostile_checkpoint(tmp_path / "namespace.pth", argparse.Namespace(lr=0.1))
    report = validate_submission(path)
    assert "references the global argparse.Namespace" in report.errors[0]


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_malicious_plain_pickle_is_rejected(tmp_path, protocol):
    marker = tmp_path / "marker"
    path = tmp_path / "plain.pkl"
    path.write_bytes(pickle.dumps({"network_weights": {}, "x": _RunsShell(marker)}, protocol=protocol))
    report = validate_submission(path)
    assert_only_failure(report, "safe_load")
    assert "references the global posix.system (os.system)" in report.errors[0]
    assert not marker.exists()


def test_benign_plain_pickle_is_not_a_checkpoint(tmp_path):
    path = tmp_path / "plain.pkl"
    path.write_bytes(pickle.dumps({"network_weights": {}}, protocol=4))
    report = validate_submission(path)
    assert report.errors == [
        "not a PyTorch checkpoint: a plain pickle file, not one written by torch.save; "
        "save the checkpoint dict with torch.save"
    ]


@pytest.mark.parametrize("protocol", [0, 2, 4, 5])
def test_scan_names_globals_in_every_protocol(protocol):
    import collections
    import io

    data = pickle.dumps([("x", "x"), _RunsShell(Path("/nonexistent")), collections.OrderedDict(a=1)], protocol=protocol)
    found, _, _ = scan_pickle_globals(io.BytesIO(data))
    assert found == ["posix.system", "collections.OrderedDict"]


# ------------------------------------------------------------------------------------- CLI


def test_cli_exit_codes_and_json(resencl_checkpoint, resencl_report, derive_checkpoint, tmp_path, capsys):
    # the text `harness validate` prints for a readable file (the CLI runs on a valid file, exit 0,
    # in test_path_with_spaces_and_non_ascii; on an invalid one, text and JSON, below)
    text = resencl_report.format_text()
    assert f"file:    {resencl_checkpoint}" in text
    assert "  OK    canary" in text and text.rstrip().endswith("VALID: 0 errors, 0 warnings")

    bad = derive_checkpoint(resencl_checkpoint, "arch_PrimusB.pth", set_arch("PrimusB"))
    assert cli_main(["validate", str(bad), "--json"]) == 1
    out = json.loads(capsys.readouterr().out)
    assert set(out) == {
        *("file", "sha256", "size_bytes", "valid", "track", "checks", "errors", "warnings"),
        *("lacks", "lacking_keys", "runnable", "fingerprint"),
    }
    assert out["valid"] is False and out["track"] is None and out["file"] == str(bad)
    assert out["fingerprint"] is None  # only a file whose values passed has one
    assert out["runnable"] == {"ssl3d-2025": [], "ssl3d-2025-lossless": []}  # an invalid file runs nothing
    assert out["sha256"] == sha256(bad) and out["size_bytes"] == bad.stat().st_size
    assert [c["name"] for c in out["checks"]] == list(CHECK_NAMES)
    assert all({"name", "ok", "detail"} <= set(c) for c in out["checks"])
    assert "accepted tracks" in out["errors"][0]
    assert cli_main(["validate", str(bad)]) == 1
    assert capsys.readouterr().out.rstrip().endswith("INVALID: 1 error, 0 warnings")

    assert cli_main(["validate", str(tmp_path / "missing.pth")]) == 2
    assert "no such file" in capsys.readouterr().err
    assert cli_main(["validate", str(tmp_path / "missing.pth"), "--json"]) == 2
    assert json.loads(capsys.readouterr().out)["valid"] is False
    for usage_error in (
        ["validate", str(bad), "--track", "PrimusB"],
        ["validate", str(bad), "--max-size", "0"],
        ["validate"],
    ):
        with pytest.raises(SystemExit) as exit_info:
            cli_main(usage_error)
        assert exit_info.value.code == 2


def test_cli_entry_point_in_a_subprocess(tmp_path):
    path = tmp_path / "random bytes.pth"
    path.write_bytes(b"\x80\x02not a checkpoint" * 100)
    proc = subprocess.run(
        [sys.executable, "-m", "harness", "validate", str(path), "--json"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1, proc.stderr
    out = json.loads(proc.stdout)
    assert out["valid"] is False and out["errors"][0].startswith("not a PyTorch checkpoint")
    assert "Traceback" not in proc.stderr


def test_cli_example_submission_rejects_a_bad_primus_patch(tmp_path, capsys):
    out = tmp_path / "x.pth"
    assert (
        cli_main(
            ["example-submission", "--track", "PrimusM", "--out", str(out), "--pretrain-patch", "100", "100", "100"]
        )
        == 2
    )
    assert "not three positive multiples of the patch embedding (8, 8, 8)" in capsys.readouterr().err
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_the_cli_offers_every_track_and_nothing_else(tmp_path, capsys):
    from harness.tracks import TRACKS

    with pytest.raises(SystemExit) as e:
        cli_main(["example-submission", "--track", "UNETR", "--out", str(tmp_path / "x.pth")])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "invalid choice: 'UNETR'" in err and all(repr(t) in err for t in TRACKS)


def test_primus_without_layerscale_is_valid_for_the_organizers_eva_only(primus_checkpoint, derive_checkpoint):
    """Seen in the wild: a Primus pre-trained without LayerScale and inner attention norm."""
    from harness.finetune.classification import build_classifier
    from harness.models import TransferError, build_network, load_pretrained_encoder
    from harness.models.transfer import LAYERSCALE_KEY
    from harness.recipes import SSL3D_2025, SSL3D_2025_LOSSLESS

    def edit(c):
        for key in [k for k in c["network_weights"] if LAYERSCALE_KEY.match(k)]:
            del c["network_weights"][key]

    path = derive_checkpoint(primus_checkpoint, "primus_no_layerscale.pth", edit)
    report = validate_submission(path)
    assert report.valid, report.errors
    assert any(
        "no LayerScale (gamma_1, gamma_2) or inner attention norm" in w and "64 PrimusM tensors" in w
        for w in report.warnings
    )
    assert "Primus-M encoder without LayerScale" in checks_by_name(report)["canary"].detail
    sub = load_submission(path)
    kwargs = dict(
        input_channels=1,
        num_classes=2,
        patch_size=(32, 32, 32),
        dropout=0.0,
        weights=sub.weights,
        pretrain_patch_size=sub.pretrain_patch_size,
    )
    model, transfer = build_classifier("PrimusM", recipe=SSL3D_2025.part("classification"), **kwargs)
    assert transfer.loaded_keys == len([k for k in sub.weights if k.startswith(("eva.", "down_projection."))])
    for recipe_needs_layerscale in (
        lambda: build_classifier("PrimusM", recipe=SSL3D_2025_LOSSLESS.part("classification"), **kwargs),
        lambda: load_pretrained_encoder(
            # the refusal is decided from the keys: a network on the meta device (no init) suffices
            build_network("PrimusM", patch_size=(32, 32, 32), device="meta"),
            sub.weights,
            "PrimusM",
            pretrain_patch_size=sub.pretrain_patch_size,
            target_patch_size=(32, 32, 32),
        ),
    ):
        with pytest.raises(TransferError, match=r"has no LayerScale \(gamma_1, gamma_2\) or inner attention norm"):
            recipe_needs_layerscale()


def test_a_partly_missing_layerscale_is_still_an_error(primus_checkpoint, derive_checkpoint):
    path = derive_checkpoint(
        primus_checkpoint, "primus_one_gamma_missing.pth", lambda c: c["network_weights"].pop("eva.blocks.3.gamma_1")
    )
    report = validate_submission(path)
    assert_only_failure(report, "weights_vs_reference")
    assert report.errors == [
        "1 stem/encoder key of the PrimusM reference is missing from 'network_weights': eva.blocks.3.gamma_1"
    ]
