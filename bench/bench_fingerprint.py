"""Calibration and cost of the derived-weights fingerprints (harness/submission/fingerprint.py).

Builds the real cases from example submissions, per track (ResEnc-L at 160^3, Primus-M at 64^3 to
keep it fast) in a temporary folder:

* ``independent``: two examples of different seeds;
* ``further_trained``: a checkpoint against a copy trained 3 more AdamW steps (lr 1e-3, a real
  backward pass) on other data (random volumes);
* ``noise_<s>``: a checkpoint against itself plus Gaussian noise of ``s`` times each tensor's
  standard deviation, s = 1e-4 ... 1;
* ``same_init``: two "pre-trainings" from one initialisation (one seed), each trained 3 steps on
  different random data.

Each is compared with ``fingerprint.compare`` (and the full-tensor Pearson correlation of the
same pairs, for reference). Cost: fingerprinting a file against its sha256 (both from the page
cache, the file read once before), and all 4950 pairs of 100 fingerprints against a full-tensor
comparison, measured on the pairs above and extrapolated to 4950 (said so in the JSON).

Writes ``results/bench/fingerprint.json``. Run from the repository root:
``.venv/bin/python bench/bench_fingerprint.py``.
"""

from __future__ import annotations

import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
OUT = REPO / "results" / "bench" / "fingerprint.json"
CASES = {"ResEncL": (160, 160, 160), "PrimusM": (64, 64, 64)}
NOISE = (1e-4, 1e-3, 1e-2, 1e-1, 1.0)
STEPS, LR = 3, 1e-3


def load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True, mmap=True)


def trained_copy(path: Path, out: Path, track: str, data_seed: int) -> Path:
    """``path`` trained ``STEPS`` more AdamW steps on random volumes of ``data_seed``."""
    from harness.models import build_network

    checkpoint = load(path)
    network = build_network(track, input_channels=1, num_classes=1, patch_size=(64, 64, 64), initialize=False)
    weights = checkpoint["network_weights"]
    own = network.state_dict()
    network.load_state_dict({k: v for k, v in weights.items() if k in own and v.shape == own[k].shape}, strict=False)
    optimizer = torch.optim.AdamW(network.parameters(), lr=LR)
    generator = torch.Generator().manual_seed(data_seed)
    network.train()
    for _ in range(STEPS):
        x = torch.randn((1, 1, 64, 64, 64), generator=generator)
        y = network(x)
        y = y[0] if isinstance(y, list | tuple) else y
        loss = ((y - torch.randn(y.shape, generator=generator)) ** 2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    state = network.state_dict()
    # in place into the (private, copy-on-write) mapping: aliases keep sharing their storage, and
    # a Primus pos_embed, which the network at 64^3 has in another shape, stays the file's
    with torch.no_grad():
        for k, v in _distinct(weights).items():
            if k in state and state[k].shape == v.shape:
                v.copy_(state[k])
    torch.save(checkpoint, out)
    return out


def _distinct(weights: dict) -> dict:
    from harness.submission.fingerprint import distinct_tensors

    return distinct_tensors(weights)


def noisy_copy(path: Path, out: Path, scale: float, seed: int = 7) -> Path:
    checkpoint = load(path)
    generator = torch.Generator().manual_seed(seed)
    for v in _distinct(checkpoint["network_weights"]).values():
        if v.is_floating_point() and v.numel() > 1:
            v.add_(scale * (float(v.float().std()) or 1.0) * torch.randn(v.shape, generator=generator))
    torch.save(checkpoint, out)
    return out


def full_compare(a: dict, b: dict, track: str) -> dict:
    """Pearson correlation of every transferred tensor (2+ dimensions) in full: what sampling saves."""
    from harness.submission.fingerprint import TENSOR_THRESHOLD
    from harness.tracks import get_track

    spec = get_track(track)
    r = []
    for k, va in _distinct(a).items():
        vb = b.get(k)
        if not spec.is_transferred(k) or vb is None or vb.shape != va.shape or va.dim() < 2:
            continue
        x, y = va.double().reshape(-1), vb.double().reshape(-1)
        x, y = x - x.mean(), y - y.mean()
        n = float(x.norm() * y.norm())
        if n > 1e-24:
            r.append(float(x @ y) / n)
    share = sum(v > TENSOR_THRESHOLD for v in r) / len(r) if r else 0.0
    return {"compared": len(r), "share": round(share, 4), "median": round(statistics.median(r), 4) if r else None}


def main() -> int:
    from harness.submission import write_example_submission
    from harness.submission.checkpoint import sha256_file
    from harness.submission.fingerprint import SHARE_THRESHOLD, TENSOR_THRESHOLD, compare, decode, fingerprint

    results: dict = {
        "machine": {"python": platform.python_version(), "torch": torch.__version__, "cpu": platform.processor()},
        "thresholds": {"tensor": TENSOR_THRESHOLD, "share": SHARE_THRESHOLD},
        "tracks": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        for track, patch in CASES.items():
            base = write_example_submission(d / f"{track}_a.pth", track, seed=0, pretrain_patch=patch)
            pairs = {
                "independent": (
                    base,
                    write_example_submission(d / f"{track}_b.pth", track, seed=1, pretrain_patch=patch),
                )
            }
            pairs["further_trained"] = (base, trained_copy(base, d / f"{track}_ft.pth", track, data_seed=11))
            for s in NOISE:
                pairs[f"noise_{s:g}"] = (base, noisy_copy(base, d / f"{track}_noise_{s:g}.pth", s))
            pairs["same_init"] = (
                trained_copy(base, d / f"{track}_init_1.pth", track, data_seed=21),
                trained_copy(base, d / f"{track}_init_2.pth", track, data_seed=22),
            )
            figures, fp_times, sha_times, cmp_fp, cmp_full = {}, [], [], [], []
            prints: dict[Path, dict] = {}
            for path in {p for pair in pairs.values() for p in pair}:
                sha256_file(path)  # into the page cache: both timings below read it from there
                t0 = time.perf_counter()
                sha256_file(path)
                sha_times.append(time.perf_counter() - t0)
                weights = load(path)["network_weights"]
                t0 = time.perf_counter()
                prints[path] = fingerprint(weights, track)
                fp_times.append(time.perf_counter() - t0)
            decoded = {p: decode(fp) for p, fp in prints.items()}
            for name, (a, b) in pairs.items():
                t0 = time.perf_counter()
                sampled = compare(decoded[a], decoded[b])
                cmp_fp.append(time.perf_counter() - t0)
                wa, wb = load(a)["network_weights"], load(b)["network_weights"]
                t0 = time.perf_counter()
                full = full_compare(wa, wb, track)
                cmp_full.append(time.perf_counter() - t0)
                figures[name] = {"fingerprint": sampled, "full_tensors": full}
                print(f"{track:8} {name:16} sampled {sampled}  full {full}", flush=True)
            n_pairs = 100 * 99 // 2
            t0 = time.perf_counter()
            decode(next(iter(prints.values())))
            decode_s = time.perf_counter() - t0
            results["tracks"][track] = {
                "pretrain_patch": list(patch),
                "tensors": len(next(iter(prints.values()))["tensors"]),
                "fingerprint_json_bytes": len(json.dumps(next(iter(prints.values())))),
                "figures": figures,
                "cost": {
                    "sha256_s": round(statistics.median(sha_times), 4),
                    "fingerprint_s": round(statistics.median(fp_times), 4),
                    "fingerprint_vs_sha256": round(statistics.median(fp_times) / statistics.median(sha_times), 3),
                    "compare_pair_s": round(statistics.median(cmp_fp), 5),
                    "full_compare_pair_s": round(statistics.median(cmp_full), 4),
                    "pairs_100_uploads": n_pairs,
                    "note": f"pairwise times extrapolated from {len(pairs)} measured pairs to {n_pairs}; "
                    "100 fingerprints are decoded once each",
                    "pairwise_100_s": round(100 * decode_s + n_pairs * statistics.median(cmp_fp), 2),
                    "full_pairwise_100_s": round(n_pairs * statistics.median(cmp_full), 1),
                },
            }
            print(f"{track:8} cost {results['tracks'][track]['cost']}", flush=True)
            for path in list(prints):
                path.unlink()
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
