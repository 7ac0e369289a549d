"""The data check on 200 synthetic segmentation cases at 160^3, cold and warm, beside a plain read.

Data: one nnU-Net raw dataset in a temporary folder, 200 training cases of one float32 MRI-like
channel (smooth structure plus noise) and a uint8 label map, each 160^3 and gzip-compressed, and
one test case. The three measurements run in this process, one after the other, on the same
files (all of them in the page cache by then, as after any copy of a dataset):

* ``plain_read`` (the reference): ``sitk.GetArrayFromImage(sitk.ReadImage(f))`` of every file,
  one after the other: merely reading the voxels, with no check at all;
* ``cold``: ``check_tasks`` with an empty cache: every file decoded in full (gzip, nibabel),
  hashed, its header read and its voxels checked, then the task's structure and geometry;
* ``warm``: ``check_tasks`` again with the cache the cold check wrote (nothing changed).

Goal (issue 10): cold <= 1.5x the plain read, warm <= 5 s. Writes ``results/bench/preflight.json``.
Run from the repository root: ``.venv/bin/python bench/bench_preflight.py [--cases N] [--size S]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from harness.tasks.preflight import check_tasks
from harness.tasks.registry import parse_task

OUT = Path("results/bench/preflight.json")


def write_dataset(root: Path, cases: int, size: int) -> list[Path]:
    """The dataset (and its task spec); returns every image and label file."""
    rng = np.random.default_rng(0)
    z, y, x = np.mgrid[:size, :size, :size].astype(np.float32) / size - 0.5
    head = (x**2 + y**2 + z**2 < 0.16).astype(np.float32)
    files = []
    for sub in ("imagesTr", "labelsTr", "imagesTs", "labelsTs"):
        (root / sub).mkdir(parents=True)
    for i in range(cases + 1):
        split, name = ("Ts", f"test_{i:03d}") if i == cases else ("Tr", f"case_{i:03d}")
        centre = rng.uniform(-0.15, 0.15, 3)
        lesion = ((x - centre[0]) ** 2 + (y - centre[1]) ** 2 + (z - centre[2]) ** 2) < 0.005
        image = (400 * head + 300 * lesion + rng.normal(0, 20, head.shape)).astype(np.float32)
        for array, path in (
            (image, root / f"images{split}" / f"{name}_0000.nii.gz"),
            (lesion.astype(np.uint8), root / f"labels{split}" / f"{name}.nii.gz"),
        ):
            sitk.WriteImage(sitk.GetImageFromArray(array), str(path), True)
            files.append(path)
    (root / "dataset.json").write_text(
        json.dumps(
            {
                "channel_names": {"0": "T1"},
                "labels": {"background": 0, "lesion": 1},
                "numTraining": cases,
                "file_ending": ".nii.gz",
            }
        )
    )
    return files


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=200)
    parser.add_argument("--size", type=int, default=160)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-preflight-") as tmp:
        root = Path(tmp) / "Dataset"
        t0 = time.perf_counter()
        files = write_dataset(root, args.cases, args.size)
        written = time.perf_counter() - t0
        task = parse_task(
            {"name": "Bench", "type": "segmentation", "dataset": str(root), "num_folds": 5}, Path(tmp) / "bench.yaml"
        )
        cache = Path(tmp) / "cache.json"

        t0 = time.perf_counter()
        for f in files:
            sitk.GetArrayFromImage(sitk.ReadImage(str(f)))
        plain = time.perf_counter() - t0

        t0 = time.perf_counter()
        cold_report = check_tasks([task], cache=cache)
        cold = time.perf_counter() - t0
        t0 = time.perf_counter()
        warm_report = check_tasks([task], cache=cache)
        warm = time.perf_counter() - t0
        assert cold_report.ok and warm_report.ok, cold_report.format_text()
        assert cold_report.stats.read == len(files) and warm_report.stats.read == 0
        assert warm_report.data == cold_report.data
        size_gb = sum(f.stat().st_size for f in files) / 1e9

    result = {
        "benchmark": "data check (harness tasks --check) vs a plain SimpleITK read of the same files",
        "cases": args.cases,
        "shape": [args.size] * 3,
        "files": len(files),
        "compressed_gb": round(size_gb, 2),
        "seconds": {
            "write_dataset": round(written, 1),
            "plain_read": round(plain, 2),
            "cold": round(cold, 2),
            "warm": round(warm, 3),
        },
        "cold_over_plain_read": round(cold / plain, 2),
        "goals": {"cold_over_plain_read_at_most": 1.5, "warm_seconds_at_most": 5.0},
        "met": {"cold": cold / plain <= 1.5, "warm": warm <= 5.0},
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
