"""Benchmark: per-label Dice + NSD of harness.metrics against DeepMind ``surface-distance``.

Same label maps, same run: 160^3 and 256^3 volumes with three smooth structures plus
scattered noise voxels, tolerance 1 mm, isotropic 1 mm and one anisotropic spacing. Values must
agree to 1e-6 (the bench aborts otherwise). Writes results/bench/metrics.json.

    .venv/bin/python bench/bench_metrics.py
"""

from __future__ import annotations

import math
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

# surface-distance 0.1 still uses names NumPy 2 removed.
np.NaN = np.nan  # type: ignore[attr-defined]
np.Inf = np.inf  # type: ignore[attr-defined]
import surface_distance  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from harness.metrics.segmentation import score_case  # noqa: E402
from harness.runs import write_json_atomic  # noqa: E402

TOLERANCE_MM = 1.0
AGREEMENT = 1e-6
LABELS = (1, 2, 3)


def _structures(n: int, rng: np.random.Generator, jitter: float) -> np.ndarray:
    """Three smooth structures on an n^3 grid: a large wavy ellipsoid (1), a smaller blob inside
    it (2) and a curved tube (3). ``jitter`` (voxels) perturbs centres and radii, so that a
    prediction drawn with another jitter overlaps the reference only partly."""
    z, y, x = np.ogrid[:n, :n, :n]
    z, y, x = (z / n).astype(np.float32), (y / n).astype(np.float32), (x / n).astype(np.float32)
    j = lambda: rng.normal(0, jitter / n)  # noqa: E731
    out = np.zeros((n, n, n), dtype=np.uint8)
    r1 = ((z - 0.5 - j()) / 0.36) ** 2 + ((y - 0.5 - j()) / 0.40) ** 2 + ((x - 0.5 - j()) / 0.33) ** 2
    wave = 0.08 * np.sin(9 * x + 2 * j() * n) * np.cos(7 * y) + 0.05 * np.sin(11 * z)
    out[r1 < 1 + wave] = 1
    r2 = ((z - 0.42 - j()) / 0.12) ** 2 + ((y - 0.55 - j()) / 0.16) ** 2 + ((x - 0.45 - j()) / 0.10) ** 2
    out[r2 < 1 + 0.1 * np.sin(20 * x)] = 2
    centre_y = 0.3 + 0.1 * np.sin(6 * z + j() * n / 10)
    tube = (y - centre_y) ** 2 + (x - 0.7 - j()) ** 2 < (0.03 + j() / 10) ** 2
    out[tube & (z > 0.15) & (z < 0.85)] = 3
    return out


def _with_noise(labels: np.ndarray, rng: np.random.Generator, fraction: float) -> np.ndarray:
    """Scatter isolated voxels of random labels (0 included) over the whole volume."""
    noisy = labels.copy()
    flat = noisy.reshape(-1)
    idx = rng.choice(flat.size, size=int(fraction * flat.size), replace=False)
    flat[idx] = rng.integers(0, len(LABELS) + 1, size=idx.size)
    return noisy


def _reference(pred: np.ndarray, ref: np.ndarray, spacing) -> list[tuple[float, float]]:
    out = []
    for label in LABELS:
        p, r = pred == label, ref == label
        d = surface_distance.compute_dice_coefficient(r, p)
        dists = surface_distance.compute_surface_distances(r, p, spacing)
        with np.errstate(invalid="ignore"):
            nsd = surface_distance.compute_surface_dice_at_tolerance(dists, TOLERANCE_MM)
        out.append((float(d), float(nsd)))
    return out


def _agree(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or abs(a - b) <= AGREEMENT


def _case(name: str, n: int, spacing: tuple[float, float, float], seed: int, repeats: int) -> dict:
    rng = np.random.default_rng(seed)
    ref = _with_noise(_structures(n, rng, jitter=0.0), rng, 2e-5)
    pred = _with_noise(_structures(n, rng, jitter=1.5), rng, 2e-4)

    t0 = time.perf_counter()
    expected = _reference(pred, ref, spacing)
    t_ref = time.perf_counter() - t0

    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        rows = score_case(pred, ref, spacing, LABELS, TOLERANCE_MM)
        times.append(time.perf_counter() - t0)
    t_ours = min(times)

    max_diff = 0.0
    for row, (d, nsd) in zip(rows, expected):
        for ours, theirs, what in ((row["dice"], d, "dice"), (row["nsd"], nsd, "nsd")):
            if not _agree(ours, theirs):
                raise SystemExit(f"ABORT {name} label {row['label']}: {what} {ours!r} != surface-distance {theirs!r}")
            if not math.isnan(ours):
                max_diff = max(max_diff, abs(ours - theirs))
    result = {
        "shape": [n, n, n],
        "spacing_mm": list(spacing),
        "tolerance_mm": TOLERANCE_MM,
        "labels": list(LABELS),
        "ref_voxels": [int(r["ref_voxels"]) for r in rows],
        "pred_voxels": [int(r["pred_voxels"]) for r in rows],
        "dice": [r["dice"] for r in rows],
        "nsd": [r["nsd"] for r in rows],
        "max_abs_difference": max_diff,
        "surface_distance_s": round(t_ref, 4),
        "harness_s": round(t_ours, 4),
        "harness_repeats": repeats,
        "speedup": round(t_ref / t_ours, 2),
    }
    print(
        f"{name:>18}: surface-distance {t_ref:7.2f} s  harness {t_ours:6.3f} s  "
        f"x{t_ref / t_ours:6.1f}  max |diff| {max_diff:.1e}",
        flush=True,
    )
    return result


def main() -> int:
    cases = {
        "160_iso_1mm": (160, (1.0, 1.0, 1.0), 1, 3),
        "256_iso_1mm": (256, (1.0, 1.0, 1.0), 2, 3),
        "256_aniso_3x0.8x0.8": (256, (3.0, 0.8, 0.8), 3, 3),
    }
    results = {name: _case(name, *spec) for name, spec in cases.items()}
    out = {
        "benchmark": "metrics",
        "what": "per-label Dice + NSD (3 labels) per case, harness.metrics.score_case vs "
        "surface-distance compute_dice_coefficient + compute_surface_distances + "
        "compute_surface_dice_at_tolerance, same inputs, same run",
        "reference": "surface-distance 0.1 (DeepMind)",
        "agreement_tolerance": AGREEMENT,
        "timing": "harness: best of repeats; surface-distance: one run",
        "machine": {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count()},
        "cases": results,
    }
    path = ROOT / "results" / "bench" / "metrics.json"
    write_json_atomic(path, out)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
