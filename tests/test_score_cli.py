"""``harness score`` through the real command line (``harness.cli.main`` and one subprocess) on
small NIfTI folders: every input it must refuse with exit 2 and a message naming the files, and a
clean folder it must score, so that no check passes by refusing everything."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from harness import cli

sitk = pytest.importorskip("SimpleITK")

SHAPE = (8, 8, 8)


def write(path: Path, array: np.ndarray, spacing_xyz=(1.0, 1.0, 1.0)) -> None:
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing_xyz)
    sitk.WriteImage(image, str(path))


def label_map(*labels: int) -> np.ndarray:
    """An 8^3 map with a 2x2x2 cube of each label, cube k at offset 2k along z."""
    array = np.zeros(SHAPE, np.uint8)
    for k, label in enumerate(labels):
        array[2 * k : 2 * k + 2, 2:4, 2:4] = label
    return array


@pytest.fixture
def dirs(tmp_path):
    """Clean pair: cases A (labels 1, 2) and B (label 1), predictions equal to the references."""
    pred, ref = tmp_path / "pred", tmp_path / "ref"
    pred.mkdir()
    ref.mkdir()
    for case, labels in (("A", (1, 2)), ("B", (1,))):
        write(ref / f"{case}.nii.gz", label_map(*labels))
        write(pred / f"{case}.nii.gz", label_map(*labels))
    return pred, ref


def score(capsys, pred, ref, *extra: str) -> tuple[int, str, str]:
    try:
        code = cli.main(["score", str(pred), str(ref), *extra])
    except SystemExit as exc:  # argparse errors
        code = exc.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_clean_folders_exit_0_and_write_the_table(dirs, tmp_path, capsys):
    pred, ref = dirs
    out = tmp_path / "cases.csv"
    code, printed, err = score(capsys, pred, ref, "--out", str(out))
    assert (code, err) == (0, "")
    assert "2 case(s)" in printed and f"wrote {out}" in printed
    table = pd.read_csv(out)
    assert list(zip(table["case"], table["label"])) == [("A", 1), ("A", 2), ("B", 1), ("B", 2)]
    assert list(table["dice"].fillna(-1)) == [1.0, 1.0, 1.0, -1]  # B label 2: absent from both


def test_nii_and_nii_gz_match_either_way(dirs, tmp_path, capsys):
    pred, ref = dirs
    (pred / "A.nii.gz").unlink()
    write(pred / "A.nii", label_map(1, 2))
    (ref / "B.nii.gz").unlink()
    write(ref / "B.nii", label_map(1))
    out = tmp_path / "cases.csv"
    code, _, err = score(capsys, pred, ref, "--out", str(out))
    assert (code, err) == (0, "")
    assert pd.read_csv(out).dropna()["dice"].tolist() == [1.0, 1.0, 1.0]


def test_empty_prediction_folder(dirs, tmp_path, capsys):
    _, ref = dirs
    empty = tmp_path / "empty"
    empty.mkdir()
    code, _, err = score(capsys, empty, ref)
    assert code == 2
    assert err.startswith("error: ") and "holds no predictions" in err and str(empty) in err
    (empty / "A.mha").write_bytes(b"")
    code, _, err = score(capsys, empty, ref)
    assert code == 2 and "holds no predictions" in err and "A.mha" in err
    assert not (empty / "cases.csv").exists()


def test_names_that_do_not_match_are_listed_on_both_sides(dirs, capsys):
    pred, ref = dirs
    (pred / "B.nii.gz").unlink()  # a reference without a prediction: an error, not an empty prediction
    for k in range(7):
        write(pred / f"extra{k}.nii.gz", label_map(1))
    code, _, err = score(capsys, pred, ref)
    assert code == 2
    assert "do not match" in err
    assert "1 reference(s)" in err and "without a prediction: B.nii.gz" in err
    assert "7 prediction(s)" in err and "extra0.nii.gz" in err and "extra4.nii.gz" in err
    assert "extra5" not in err and "and 2 more" in err


def test_two_files_for_one_case(dirs, capsys):
    pred, ref = dirs
    write(pred / "A.nii", label_map(1, 2))
    code, _, err = score(capsys, pred, ref)
    assert code == 2 and "two files for one case" in err and "A.nii and A.nii.gz" in err
    (pred / "A.nii").unlink()
    write(ref / "B.nii", label_map(1))
    code, _, err = score(capsys, pred, ref)
    assert code == 2 and "reference folder" in err and "B.nii and B.nii.gz" in err


def test_prediction_values_outside_the_labels_found_in_the_references(dirs, capsys):
    pred, ref = dirs
    write(pred / "B.nii.gz", label_map(1, 3, 7))
    code, _, err = score(capsys, pred, ref)
    assert code == 2
    assert "found in the references (1, 2)" in err and "B.nii.gz (3, 7)" in err and "A.nii.gz" not in err


def test_prediction_values_outside_labels(dirs, capsys):
    pred, ref = dirs
    code, _, err = score(capsys, pred, ref, "--labels", "1")
    assert code == 2
    assert "labels to score (1)" in err and "A.nii.gz (2)" in err and "B.nii.gz" not in err
    # labels absent from every map are allowed, and scored as NaN
    assert score(capsys, pred, ref, "--labels", "1,2,9")[0] == 0


@pytest.mark.parametrize("value", ["0", "-1", "nan", "inf", "one"])
def test_tolerance_must_be_positive(dirs, capsys, value):
    pred, ref = dirs
    code, _, err = score(capsys, pred, ref, f"--tolerance-mm={value}")
    assert code == 2 and "--tolerance-mm" in err


def test_size_and_spacing_mismatch_stay_errors(dirs, capsys):
    pred, ref = dirs
    write(pred / "B.nii.gz", label_map(1), spacing_xyz=(1.0, 1.0, 2.0))
    code, _, err = score(capsys, pred, ref)
    assert code == 2 and "case B" in err and "spacing" in err
    write(pred / "B.nii.gz", np.zeros((8, 8, 9), np.uint8))
    code, _, err = score(capsys, pred, ref)
    assert code == 2 and "case B" in err and "size" in err


def test_python_m_harness_score_exit_codes(dirs, tmp_path):
    pred, ref = dirs
    run = lambda *args: subprocess.run(  # noqa: E731
        [sys.executable, "-m", "harness", "score", *map(str, args)], capture_output=True, text=True
    )
    done = run(pred, ref, "--out", tmp_path / "out.csv")
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "out.csv").is_file()
    (pred / "B.nii.gz").unlink()
    failed = run(pred, ref)
    assert failed.returncode == 2 and "error: " in failed.stderr and "B.nii.gz" in failed.stderr
