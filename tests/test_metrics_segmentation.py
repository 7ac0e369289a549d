"""Dice and NSD on hand-built volumes with known answers, agreement with DeepMind's
surface-distance, and ``harness score`` on small NIfTI folders."""

from __future__ import annotations

import argparse
import math

import numpy as np
import pandas as pd
import pytest
from scipy import ndimage

from harness.metrics import segmentation as seg
from harness.metrics import surface
from harness.metrics.segmentation import (
    ScoringInputError,
    dice,
    normalized_surface_dice,
    score_case,
    score_folders,
)

# surface-distance 0.1 uses names NumPy 2 removed.
np.NaN = np.nan  # type: ignore[attr-defined]
np.Inf = np.inf  # type: ignore[attr-defined]
import surface_distance  # noqa: E402
from surface_distance import lookup_tables  # noqa: E402

# surface-distance calls scipy.ndimage's deprecated sub-namespaces: not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:Please import:DeprecationWarning")

ONE_CORNER_AREA = math.sqrt(3) / 8  # one voxel's corner triangle at 1 mm


def box(shape=(12, 12, 12), lo=(4, 4, 4), size=(4, 4, 4)) -> np.ndarray:
    m = np.zeros(shape, dtype=bool)
    m[tuple(slice(a, a + s) for a, s in zip(lo, size))] = True
    return m


def voxel(shape, at) -> np.ndarray:
    m = np.zeros(shape, dtype=bool)
    m[at] = True
    return m


def reference_nsd(pred, ref, spacing, tol) -> float:
    with np.errstate(invalid="ignore"):
        return float(
            surface_distance.compute_surface_dice_at_tolerance(
                surface_distance.compute_surface_distances(ref, pred, spacing), tol
            )
        )


def blob(rng, shape) -> np.ndarray:
    field = ndimage.gaussian_filter(rng.normal(size=shape), rng.uniform(0.8, 2.0))
    return field > rng.uniform(0.0, 0.2)


# --------------------------------------------------------------------------- the area table


@pytest.mark.parametrize("spacing", [(1, 1, 1), (3.0, 0.8, 0.8), (0.5, 1.7, 2.9), (0.9, 0.9, 5.0)])
def test_area_table_equals_surface_distance(spacing):
    ours = surface.surfel_area_table(spacing)
    theirs = lookup_tables.create_table_neighbour_code_to_surface_area(spacing)
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-12)


def test_area_table_known_codes():
    table = surface.surfel_area_table((1.0, 1.0, 1.0))
    assert table[0] == 0 and table[255] == 0
    assert table[1] == pytest.approx(ONE_CORNER_AREA)  # a corner triangle
    assert table[0b00001111] == pytest.approx(1.0)  # half the neighbourhood in: a flat unit face
    assert (table[1:255] > 0).all()
    # anisotropic: the flat face normal to z scales with the in-plane spacing only
    assert surface.surfel_area_table((3.0, 0.5, 2.0))[0b00001111] == pytest.approx(0.5 * 2.0)


# --------------------------------------------------------------------------- Dice


def test_dice_empty_combinations():
    empty, full = np.zeros((5, 5, 5), bool), box((5, 5, 5), (1, 1, 1), (2, 2, 2))
    assert math.isnan(dice(empty, empty))
    assert dice(full, empty) == 0.0
    assert dice(empty, full) == 0.0
    assert dice(full, full) == 1.0


def test_dice_known_partial_overlap():
    a = box(lo=(4, 4, 4))
    b = box(lo=(4, 4, 5))  # shifted by one voxel: 48 of 64 voxels shared
    assert dice(a, b) == pytest.approx(2 * 48 / 128)
    assert dice(a.astype(np.uint8), b.astype(np.int16)) == pytest.approx(0.75)


def test_dice_rejects_label_maps_and_shape_mismatch():
    with pytest.raises(ScoringInputError, match="labels == k"):
        dice(np.full((3, 3, 3), 2), np.ones((3, 3, 3)))
    with pytest.raises(ScoringInputError, match="shape"):
        dice(np.ones((3, 3, 3), bool), np.ones((3, 3, 4), bool))
    with pytest.raises(ScoringInputError, match="3D"):
        dice(np.ones((3, 3), bool), np.ones((3, 3), bool))


# --------------------------------------------------------------------------- NSD, known answers


def test_nsd_empty_combinations():
    empty, full = np.zeros((6, 6, 6), bool), box((6, 6, 6), (1, 1, 1), (3, 3, 3))
    assert math.isnan(normalized_surface_dice(empty, empty, (1, 1, 1), 1.0))
    assert normalized_surface_dice(full, empty, (1, 1, 1), 1.0) == 0.0
    assert normalized_surface_dice(empty, full, (1, 1, 1), 1.0) == 0.0
    assert normalized_surface_dice(full, full, (1, 1, 1), 0.0) == 1.0


def test_nsd_two_adjacent_voxels():
    """Each single voxel has 8 corner triangles of equal area; 4 corners are shared, the other
    4 lie one voxel away: NSD is 1/2 below that distance and 1 from it on."""
    a, b = voxel((5, 5, 5), (2, 2, 2)), voxel((5, 5, 5), (2, 2, 3))
    assert normalized_surface_dice(a, b, (1, 1, 1), 0.5) == pytest.approx(0.5)
    assert normalized_surface_dice(a, b, (1, 1, 1), 1.0) == pytest.approx(1.0)
    far = voxel((5, 5, 9), (2, 2, 8))
    assert normalized_surface_dice(voxel((5, 5, 9), (2, 2, 2)), far, (1, 1, 1), 1.0) == 0.0


def test_nsd_anisotropic_spacing_follows_zyx_axes():
    """Voxels adjacent along z (axis 0) are 2 mm apart at spacing (2, 1, 1), along x 1 mm."""
    shape = (5, 5, 5)
    a = voxel(shape, (2, 2, 2))
    along_z, along_x = voxel(shape, (3, 2, 2)), voxel(shape, (2, 2, 3))
    spacing = (2.0, 1.0, 1.0)
    assert normalized_surface_dice(a, along_z, spacing, 1.5) == pytest.approx(0.5)
    assert normalized_surface_dice(a, along_z, spacing, 2.0) == pytest.approx(1.0)
    assert normalized_surface_dice(a, along_x, spacing, 1.0) == pytest.approx(1.0)


def test_nsd_shift_within_and_beyond_tolerance():
    a = box((16, 16, 16), (5, 5, 5), (5, 5, 5))
    by1, by3 = box((16, 16, 16), (5, 5, 6), (5, 5, 5)), box((16, 16, 16), (5, 5, 8), (5, 5, 5))
    assert normalized_surface_dice(by1, a, (1, 1, 1), 1.0) == pytest.approx(1.0)
    assert normalized_surface_dice(by1, a, (1, 1, 1), 0.5) < 1.0
    beyond = normalized_surface_dice(by3, a, (1, 1, 1), 1.0)
    assert 0.0 < beyond < 0.9
    assert beyond == pytest.approx(reference_nsd(by3, a, (1, 1, 1), 1.0), abs=1e-12)
    # the same 1-voxel shift is 0.5 mm along a 0.5 mm axis and 3 mm along a 3 mm axis
    assert normalized_surface_dice(by1, a, (1, 1, 0.5), 0.5) == pytest.approx(1.0)
    assert normalized_surface_dice(by1, a, (1, 1, 3.0), 1.0) < 1.0


def test_nsd_is_symmetric_and_crop_invariant():
    rng = np.random.default_rng(3)
    a, b = blob(rng, (20, 18, 16)), blob(rng, (20, 18, 16))
    value = normalized_surface_dice(a, b, (1.2, 0.7, 2.0), 1.5)
    assert value == pytest.approx(normalized_surface_dice(b, a, (1.2, 0.7, 2.0), 1.5), abs=1e-12)
    pad = [(3, 1), (0, 5), (2, 2)]
    assert value == pytest.approx(
        normalized_surface_dice(np.pad(a, pad), np.pad(b, pad), (1.2, 0.7, 2.0), 1.5), abs=1e-12
    )


def test_nsd_rejects_bad_spacing_and_tolerance():
    a = box()
    with pytest.raises(ScoringInputError, match="spacing"):
        normalized_surface_dice(a, a, (1, 1), 1.0)
    with pytest.raises(ScoringInputError, match="spacing"):
        normalized_surface_dice(a, a, (1, 0, 1), 1.0)
    with pytest.raises(ScoringInputError, match="tolerance"):
        normalized_surface_dice(a, a, (1, 1, 1), -1.0)


# --------------------------------------------------------------------------- agreement


def test_agrees_with_surface_distance_on_random_shapes():
    rng = np.random.default_rng(0)
    spacings = [(1.0, 1.0, 1.0), (3.0, 0.8, 0.8), (0.5, 0.5, 2.0), (1.3, 0.6, 0.9)]
    for i in range(40):
        shape = tuple(int(s) for s in rng.integers(6, 22, 3))
        ref = blob(rng, shape)
        pred = np.roll(ref, int(rng.integers(-2, 3)), axis=int(rng.integers(0, 3))) if i % 2 else blob(rng, shape)
        spacing = spacings[i % len(spacings)]
        tol = float(rng.choice([0.0, 0.5, 1.0, 2.0, 3.5]))
        expected = reference_nsd(pred, ref, spacing, tol)
        got = normalized_surface_dice(pred, ref, spacing, tol)
        assert (math.isnan(got) and math.isnan(expected)) or abs(got - expected) <= 1e-9, (i, shape, spacing, tol)
        theirs = surface_distance.compute_dice_coefficient(ref, pred)
        assert dice(pred, ref) == pytest.approx(theirs, abs=1e-12, nan_ok=True)


@pytest.mark.parametrize("max_offsets", [0, 10**9])
def test_distance_transform_and_offset_paths_agree(monkeypatch, max_offsets):
    """Both within-tolerance tests (offset probes, one EDT of the crop) give the reference value."""
    monkeypatch.setattr(surface, "MAX_BALL_OFFSETS", max_offsets)
    rng = np.random.default_rng(7)
    for spacing, tol in [((1, 1, 1), 1.0), ((2.0, 0.7, 0.7), 1.4), ((0.5, 0.5, 0.5), 2.0)]:
        ref, pred = blob(rng, (18, 18, 18)), blob(rng, (18, 18, 18))
        assert normalized_surface_dice(pred, ref, spacing, tol) == pytest.approx(
            reference_nsd(pred, ref, spacing, tol), abs=1e-9
        )


def test_masks_touching_the_volume_border():
    ref = np.zeros((8, 9, 10), bool)
    ref[:, :4, :] = True  # touches five of six faces of the volume
    pred = np.zeros_like(ref)
    pred[:, :5, 2:] = True
    for spacing in [(1, 1, 1), (2.0, 0.5, 1.0)]:
        assert normalized_surface_dice(pred, ref, spacing, 1.0) == pytest.approx(
            reference_nsd(pred, ref, spacing, 1.0), abs=1e-12
        )


def test_large_tolerance_uses_distance_transform_and_agrees():
    rng = np.random.default_rng(11)
    ref, pred = blob(rng, (16, 16, 16)), blob(rng, (16, 16, 16))
    assert len(surface.ball_offsets((0.5, 0.5, 0.5), 6.0)) > surface.MAX_BALL_OFFSETS
    assert normalized_surface_dice(pred, ref, (0.5, 0.5, 0.5), 6.0) == pytest.approx(
        reference_nsd(pred, ref, (0.5, 0.5, 0.5), 6.0), abs=1e-9
    )


# --------------------------------------------------------------------------- score_case


def two_label_case():
    ref = np.zeros((10, 10, 10), np.uint8)
    ref[2:6, 2:6, 2:6] = 1
    ref[7:9, 7:9, 7:9] = 2
    pred = np.zeros_like(ref)
    pred[2:6, 2:6, 3:7] = 1  # shifted by one voxel
    pred[0, 0, 0] = 3  # a label the reference lacks
    return pred, ref


def test_score_case_rows():
    pred, ref = two_label_case()
    rows = score_case(pred, ref, (1, 1, 1), [1, 2, 3, 4], tolerance_mm=1.0)
    assert [r["label"] for r in rows] == [1, 2, 3, 4]
    assert set(rows[0]) == {"label", "dice", "nsd", "ref_voxels", "pred_voxels"}
    one, two, three, four = rows
    assert (one["dice"], one["nsd"], one["ref_voxels"], one["pred_voxels"]) == (0.75, pytest.approx(1.0), 64, 64)
    assert (two["dice"], two["nsd"], two["ref_voxels"], two["pred_voxels"]) == (0.0, 0.0, 8, 0)
    assert (three["dice"], three["nsd"], three["ref_voxels"], three["pred_voxels"]) == (0.0, 0.0, 0, 1)
    assert math.isnan(four["dice"]) and math.isnan(four["nsd"]) and four["ref_voxels"] == four["pred_voxels"] == 0


def test_score_case_matches_per_mask_functions():
    rng = np.random.default_rng(5)
    ref = (blob(rng, (20, 20, 20)).astype(np.int16) + 2 * blob(rng, (20, 20, 20))).astype(np.int16)
    pred = (blob(rng, (20, 20, 20)).astype(np.int16) + 2 * blob(rng, (20, 20, 20))).astype(np.int16)
    spacing = (2.0, 0.9, 0.9)
    for row in score_case(pred, ref, spacing, [1, 2, 3], 1.0):
        p, r = pred == row["label"], ref == row["label"]
        assert row["dice"] == pytest.approx(dice(p, r), nan_ok=True)
        assert row["nsd"] == pytest.approx(reference_nsd(p, r, spacing, 1.0), abs=1e-9, nan_ok=True)


def test_score_case_rejects_bad_input():
    pred, ref = two_label_case()
    with pytest.raises(ScoringInputError, match="shape"):
        score_case(pred[:-1], ref, (1, 1, 1), [1])
    with pytest.raises(ScoringInputError, match="negative"):
        score_case(pred.astype(np.int8) - 1, ref, (1, 1, 1), [1])
    with pytest.raises(ScoringInputError, match="whole numbers"):
        score_case(pred + 0.5, ref, (1, 1, 1), [1])
    with pytest.raises(ScoringInputError, match="background"):
        score_case(pred, ref, (1, 1, 1), [0, 1])
    with pytest.raises(ScoringInputError, match="no labels"):
        score_case(pred, ref, (1, 1, 1), [])
    with pytest.raises(ScoringInputError, match="duplicate"):
        score_case(pred, ref, (1, 1, 1), [1, 1])
    # whole-number floats (as some NIfTI writers store labels) are fine
    assert score_case(pred.astype(np.float32), ref, (1, 1, 1), [1])[0]["dice"] == 0.75


# --------------------------------------------------------------------------- folders and CLI

sitk = pytest.importorskip("SimpleITK")


def write_nifti(path, array, spacing_xyz=(1.0, 1.0, 2.0)):
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing_xyz)
    sitk.WriteImage(image, str(path))


@pytest.fixture
def folders(tmp_path):
    """Three cases at spacing (x, y, z) = (1, 1, 2) mm: A two adjacent voxels along z (NSD at
    1.5 mm is 1/2 only if the z spacing is read as 2 mm), B label 2 only, C an empty prediction
    (written as .nii: either ending matches)."""
    ref_dir, pred_dir = tmp_path / "ref", tmp_path / "pred"
    ref_dir.mkdir()
    pred_dir.mkdir()
    shape = (6, 7, 8)
    a_ref, a_pred = np.zeros(shape, np.uint8), np.zeros(shape, np.uint8)
    a_ref[2, 3, 3], a_pred[3, 3, 3] = 1, 1
    b_ref = np.zeros(shape, np.uint8)
    b_ref[1:4, 1:4, 1:4] = 2
    c_ref = np.zeros(shape, np.uint8)
    c_ref[0:2, 0:2, 0:2] = 1
    write_nifti(ref_dir / "A.nii.gz", a_ref)
    write_nifti(pred_dir / "A.nii.gz", a_pred)
    write_nifti(ref_dir / "B.nii.gz", b_ref)
    write_nifti(pred_dir / "B.nii.gz", b_ref)
    write_nifti(ref_dir / "C.nii.gz", c_ref)
    write_nifti(pred_dir / "C.nii", np.zeros(shape, np.uint8))
    return pred_dir, ref_dir


def test_score_folders(folders):
    pred_dir, ref_dir = folders
    df = score_folders(pred_dir, ref_dir, tolerance_mm=1.5)
    assert list(df.columns) == list(seg.CASE_COLUMNS)
    assert list(zip(df["case"], df["label"])) == [("A", 1), ("A", 2), ("B", 1), ("B", 2), ("C", 1), ("C", 2)]
    row = df.set_index(["case", "label"])
    assert row.loc[("A", 1), "dice"] == 0.0
    assert row.loc[("A", 1), "nsd"] == pytest.approx(0.5)  # z spacing 2 mm > 1.5 mm tolerance
    assert math.isnan(row.loc[("A", 2), "dice"]) and math.isnan(row.loc[("B", 1), "nsd"])
    assert row.loc[("B", 2), "dice"] == 1.0 and row.loc[("B", 2), "nsd"] == 1.0
    # the empty prediction is a scored failure where the reference has the label
    assert (row.loc[("C", 1), "dice"], row.loc[("C", 1), "nsd"], row.loc[("C", 1), "pred_voxels"]) == (0.0, 0.0, 0)
    assert row.loc[("C", 1), "ref_voxels"] == 8
    assert math.isnan(row.loc[("C", 2), "dice"])
    assert df.attrs["tolerance_mm"] == 1.5
    explicit = score_folders(pred_dir, ref_dir, labels=[2, 1, 5], tolerance_mm=1.5)
    assert list(explicit["label"].unique()) == [1, 2, 5]
    assert explicit.loc[explicit["label"] == 5, "dice"].isna().all()
    assert score_folders(pred_dir, ref_dir, tolerance_mm=2.0).set_index(["case", "label"]).loc[
        ("A", 1), "nsd"
    ] == pytest.approx(1.0)


def test_score_folders_spacing_mismatch_names_the_case(folders):
    pred_dir, ref_dir = folders
    write_nifti(pred_dir / "B.nii.gz", np.zeros((6, 7, 8), np.uint8), spacing_xyz=(1.0, 1.0, 2.5))
    with pytest.raises(ScoringInputError, match=r"case B: .*spacing"):
        score_folders(pred_dir, ref_dir)
    # within the 1e-4 relative tolerance is the same spacing
    write_nifti(pred_dir / "B.nii.gz", np.zeros((6, 7, 8), np.uint8), spacing_xyz=(1.0, 1.0, 2.00001))
    score_folders(pred_dir, ref_dir)


def test_score_folders_size_mismatch_names_the_case(folders):
    pred_dir, ref_dir = folders
    write_nifti(pred_dir / "A.nii.gz", np.zeros((6, 7, 9), np.uint8))
    with pytest.raises(ScoringInputError, match=r"case A: .*size"):
        score_folders(pred_dir, ref_dir)


def test_score_folders_bad_folders(tmp_path, folders):
    pred_dir, ref_dir = folders
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ScoringInputError, match="no .nii.gz or .nii files"):
        score_folders(pred_dir, empty)
    with pytest.raises(ScoringInputError, match="does not exist"):
        score_folders(tmp_path / "nope", ref_dir)
    with pytest.raises(ScoringInputError, match="does not exist"):
        score_folders(pred_dir, tmp_path / "nope")
    (pred_dir / "A.nii.gz").write_bytes(b"not a nifti")
    with pytest.raises(ScoringInputError, match="A.nii.gz"):
        score_folders(pred_dir, ref_dir)


def test_score_folders_without_foreground_needs_labels(tmp_path):
    ref_dir, pred_dir = tmp_path / "ref", tmp_path / "pred"
    ref_dir.mkdir()
    pred_dir.mkdir()
    write_nifti(ref_dir / "A.nii.gz", np.zeros((3, 3, 3), np.uint8))
    write_nifti(pred_dir / "A.nii.gz", np.zeros((3, 3, 3), np.uint8))
    with pytest.raises(ScoringInputError, match="no foreground"):
        score_folders(pred_dir, ref_dir)
    df = score_folders(pred_dir, ref_dir, labels=[1])
    assert len(df) == 1 and math.isnan(df["dice"].iloc[0])


def run_cli(argv: list[str]) -> int:
    from harness.metrics.commands import register

    parser = argparse.ArgumentParser(prog="harness")
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return args.func(args)


def test_cli_writes_cases_csv_and_summary(folders, tmp_path, capsys):
    pred_dir, ref_dir = folders
    out = tmp_path / "scores" / "cases.csv"
    assert run_cli(["score", str(pred_dir), str(ref_dir), "--tolerance-mm", "1.5", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "3 case(s)" in printed and "NSD tolerance 1.5 mm" in printed
    table = pd.read_csv(out)
    assert list(table.columns) == list(seg.CASE_COLUMNS)
    assert len(table) == 6
    assert table.set_index(["case", "label"]).loc[("A", 1), "nsd"] == pytest.approx(0.5)
    assert table["dice"].isna().sum() == 3


def test_cli_default_out_and_labels(folders):
    pred_dir, ref_dir = folders
    assert run_cli(["score", str(pred_dir), str(ref_dir), "--labels", "1,2,3"]) == 0
    table = pd.read_csv(pred_dir / "cases.csv")
    assert set(table["label"]) == {1, 2, 3}


def test_cli_error_exit_code(folders, capsys):
    pred_dir, ref_dir = folders
    write_nifti(pred_dir / "B.nii.gz", np.zeros((6, 7, 8), np.uint8), spacing_xyz=(2.0, 1.0, 2.0))
    assert run_cli(["score", str(pred_dir), str(ref_dir)]) == 2
    assert "case B" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        run_cli(["score", str(pred_dir), str(ref_dir), "--labels", "1,x"])


def test_score_is_registered_in_the_cli():
    from harness import cli

    assert "harness.metrics.commands" in cli.COMMAND_MODULES
