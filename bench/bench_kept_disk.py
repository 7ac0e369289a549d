"""The disk a finished segmentation job keeps, against what its checkpoints would take.

One real job (the toy segmentation task's Primus-M baseline, `harness finetune`, with
``HARNESS_KEEP_CHECKPOINTS`` so that both can be measured in the same run): the bytes of its run
folder as evaluate leaves it (result files, logs, the held-out predictions `harness rescore`
scores again) beside the bytes of the checkpoints it removes by default (the reference), and the
kept predictions per held-out case. The toy volumes are small (about 64^3 voxels), a real case at
1 mm a few MB compressed; the checkpoints are the same size on any data.

Writes ``results/bench/kept_disk.json``. ``.venv/bin/python bench/bench_kept_disk.py``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
OUT = REPO / "results" / "bench" / "kept_disk.json"


def _bytes(paths) -> int:
    return sum(p.stat().st_size for p in paths if p.is_file())


def main() -> int:
    from harness.runs import ResultsLayout

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        shutil.copytree(REPO / "task_registry" / "toy", root / "task_registry" / "toy")
        env = {
            **os.environ,
            "HARNESS_KEEP_CHECKPOINTS": "1",
            "nnUNet_n_proc_DA": "0",
            "nnUNet_def_n_proc": "1",
            "PYTHONPATH": str(REPO),
        }
        python = [sys.executable, "-m", "harness"]
        subprocess.run([*python, "make-toy-data", "--out", str(root / "data" / "toy")], check=True, env=env)
        command = ["finetune", "--baseline", "PrimusM", "--task", "ToySegOneChannel", "--device", "cpu"]
        where = ["--tasks", str(root / "task_registry" / "toy"), "--results", str(root / "results")]
        subprocess.run([*python, *command, *where], check=True, env=env, stdout=subprocess.DEVNULL)
        run = ResultsLayout(root / "results").run("baseline-PrimusM", "ToySegOneChannel", "ssl3d-2025", 0)
        everything = list(run.path.rglob("*"))
        checkpoints = [p for p in everything if run.checkpoints_dir in p.parents]
        kept = [p for p in everything if run.checkpoints_dir not in p.parents]
        predictions = list(run.predictions_dir.glob("*.nii.gz"))
        report = {
            "reference": "the job's checkpoints (removed unless evaluate --keep-checkpoints)",
            "job": "baseline-PrimusM on ToySegOneChannel, fold 0 (toy data)",
            "kept_bytes": _bytes(kept),
            "predictions_bytes": _bytes(predictions),
            "predictions_per_case_bytes": _bytes(predictions) // max(1, len(predictions)),
            "held_out_cases": len(predictions),
            "checkpoint_bytes": _bytes(checkpoints),
            "kept_vs_checkpoints": round(_bytes(kept) / max(1, _bytes(checkpoints)), 5),
        }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(report, indent=2) + "\n")
    print(
        f"a finished job keeps {report['kept_bytes'] / 1e6:.2f} MB ({report['held_out_cases']} predicted case(s), "
        f"{report['predictions_per_case_bytes'] / 1e3:.0f} kB each); its checkpoints would take "
        f"{report['checkpoint_bytes'] / 1e6:.0f} MB (ratio {report['kept_vs_checkpoints']})"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
