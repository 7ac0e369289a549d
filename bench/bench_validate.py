"""Wall time and peak memory of ``harness validate`` against a naive load, per track.

For a ResEnc-L and a Primus-M example checkpoint (pre-trained at 160^3, float32, written into a
temporary folder), each measurement runs in its own process and is read back with ``os.wait4``,
which gives that one child's peak RSS:

* ``harness``: ``python -m harness validate PATH --json`` (all checks, canary included);
* ``naive`` (the reference): ``torch.load(weights_only=False)`` of the whole file, the reference
  network instantiated at the pre-training patch and ``load_state_dict``;
* ``baseline``: a process that only imports what both need (torch, dynamic-network-architectures,
  the harness), so that memory can also be compared above the interpreter's own footprint.

Writes ``results/bench/validate.json``. Run from the repository root:
``.venv/bin/python bench/bench_validate.py [--repeats N]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "results" / "bench" / "validate.json"
TRACKS = ("ResEncL", "PrimusM")

IMPORTS = (
    "import warnings; warnings.simplefilter('ignore'); import torch; "
    "import dynamic_network_architectures.architectures.primus, dynamic_network_architectures.architectures.unet; "
    "import harness.models, harness.submission.validate"
)
NAIVE = (
    IMPORTS
    + """
import sys
from harness.models import build_network
path, track = sys.argv[1], sys.argv[2]
checkpoint = torch.load(path, map_location="cpu", weights_only=False)
network = build_network(track, patch_size=(160, 160, 160), initialize=False)
network.load_state_dict(checkpoint["network_weights"])
"""
)


def run_child(cmd: list[str]) -> dict:
    """Run ``cmd``; its wall time (s), peak RSS (bytes, ``ru_maxrss`` of this child alone via
    ``os.wait4``), exit status and stdout."""
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=out, stderr=err, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(), err.read().decode()
    rss = usage.ru_maxrss * (1 if sys.platform == "darwin" else 1024)
    return {"wall_s": wall, "peak_rss_bytes": rss, "returncode": proc.returncode, "stdout": stdout, "stderr": stderr}


def summarise(runs: list[dict]) -> dict:
    return {
        "wall_s_median": statistics.median(r["wall_s"] for r in runs),
        "wall_s": [round(r["wall_s"], 3) for r in runs],
        "peak_rss_bytes": max(r["peak_rss_bytes"] for r in runs),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2, help="runs per measurement (default 2)")
    args = parser.parse_args()
    python = sys.executable
    result: dict = {
        "benchmark": "validate",
        "reference": "naive: torch.load(weights_only=False) + build_network at 160^3 + load_state_dict",
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "repeats": args.repeats,
        "notes": "wall times include interpreter start-up and imports (the baseline row); peak RSS includes "
        "file-backed pages of the memory-mapped checkpoint",
        "tracks": {},
    }
    baseline = summarise([run_child([python, "-c", IMPORTS]) for _ in range(args.repeats)])
    result["baseline_imports"] = baseline
    print(f"baseline (imports only): {baseline['wall_s_median']:.1f} s, {baseline['peak_rss_bytes'] / 2**20:.0f} MiB")

    with tempfile.TemporaryDirectory(prefix="bench_validate_") as tmp:
        for track in TRACKS:
            path = Path(tmp) / f"{track}.pth"
            made = run_child([python, "-m", "harness", "example-submission", "--track", track, "--out", str(path)])
            if made["returncode"] != 0:
                print(made["stderr"], file=sys.stderr)
                return 1
            size = path.stat().st_size
            harness_runs, naive_runs = [], []
            for _ in range(args.repeats):  # interleaved, so both see the same page-cache state
                run = run_child([python, "-m", "harness", "validate", str(path), "--json"])
                if run["returncode"] != 0 or not json.loads(run["stdout"])["valid"]:
                    print(run["stdout"], run["stderr"], file=sys.stderr)
                    return 1
                harness_runs.append(run)
                run = run_child([python, "-c", NAIVE, str(path), track])
                if run["returncode"] != 0:
                    print(run["stderr"], file=sys.stderr)
                    return 1
                naive_runs.append(run)
            h, n = summarise(harness_runs), summarise(naive_runs)
            base = baseline["peak_rss_bytes"]
            result["tracks"][track] = {
                "file_size_bytes": size,
                "harness": h,
                "naive": n,
                "ratios": {
                    "wall_time_harness_over_naive": h["wall_s_median"] / n["wall_s_median"],
                    "peak_rss_harness_over_naive": h["peak_rss_bytes"] / n["peak_rss_bytes"],
                    "harness_peak_rss_over_file_size": h["peak_rss_bytes"] / size,
                    "naive_peak_rss_over_file_size": n["peak_rss_bytes"] / size,
                    "harness_peak_rss_above_baseline_over_file_size": (h["peak_rss_bytes"] - base) / size,
                    "naive_peak_rss_above_baseline_over_file_size": (n["peak_rss_bytes"] - base) / size,
                },
            }
            r = result["tracks"][track]["ratios"]
            print(
                f"{track}: file {size / 1e6:.0f} MB | harness {h['wall_s_median']:.1f} s, "
                f"{h['peak_rss_bytes'] / 2**20:.0f} MiB | naive {n['wall_s_median']:.1f} s, "
                f"{n['peak_rss_bytes'] / 2**20:.0f} MiB | time x{r['wall_time_harness_over_naive']:.2f}, "
                f"RSS x{r['peak_rss_harness_over_naive']:.2f}, above-baseline RSS / file "
                f"{r['harness_peak_rss_above_baseline_over_file_size']:.2f} (naive "
                f"{r['naive_peak_rss_above_baseline_over_file_size']:.2f})"
            )
            path.unlink()

    OUT.parent.mkdir(parents=True, exist_ok=True)
    tmp_out = OUT.with_suffix(".json.tmp")
    tmp_out.write_text(json.dumps(result, indent=2) + "\n")
    os.replace(tmp_out, OUT)
    print(f"wrote {OUT.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
