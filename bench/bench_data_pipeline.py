"""Patches per second per CPU core of the training data pipeline, and what a GPU needs of it.

nnU-Net's own data loading and augmentation (what the harness trainer trains from: its
``get_dataloaders``, the recipe's transforms) at the challenge patch (160^3) and batch size 2, on
the preprocessed toy segmentation data, in the main process by default (``nnUNet_n_proc_DA=0``:
one core, no prefetch queue to flatter the figure). Reported: patches per second, per core, and
the reference: the patches one
GPU consumes at its measured training rate, ``GPU_PATCHES_PER_S`` (9.3 per second: ResEnc-L at
4.67 iterations per second on an H200, batch 2, from `make bench-gpu`, issue 13). Their ratio is
how many cores' worth of augmentation one GPU needs.

Writes ``results/bench/data_pipeline.json``. ``.venv/bin/python bench/bench_data_pipeline.py
[--workers 1] [--batches 6] [--patch 160]``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
OUT = REPO / "results" / "bench" / "data_pipeline.json"
#: ResEnc-L on an H200 (bench/gpu_train.py, 160^3, batch 2): 4.67 it/s x 2 patches.
GPU_PATCHES_PER_S = 4.67 * 2


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--workers",
        type=int,
        default=0,
        help="nnUNet_n_proc_DA (default 0: in the main process, one core, nothing prefetched: the per-core "
        "rate; with workers, time many more batches than their queue holds)",
    )
    parser.add_argument("--batches", type=int, default=6)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--patch", type=int, default=160)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    os.environ["nnUNet_n_proc_DA"] = str(args.workers)
    os.environ.setdefault("nnUNet_def_n_proc", "1")

    import torch
    from toy_task import prepared_toy_segmentation

    from harness.finetune.job import collect_provenance
    from harness.finetune.nnunet_trainer import SSL3DFinetuneTrainer
    from harness.finetune.segmentation import CONFIGURATION, nnunet_paths, run_plans
    from harness.recipes import SSL3D_2025

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        task, prepared = prepared_toy_segmentation(root)
        plans = run_plans(prepared, (args.patch,) * 3, args.batch)
        plans["continue_training"] = False
        with nnunet_paths(raw=prepared.raw, preprocessed=prepared.preprocessed, results=root / "out"):
            trainer = SSL3DFinetuneTrainer(plans, CONFIGURATION, 0, prepared.dataset_json, torch.device("cpu"))
            trainer.configure_finetuning(
                track="ResEncL", schedule=task.schedule_for("ResEncL"), recipe=SSL3D_2025.part("segmentation")
            )
            trainer.initialize()  # what the job does before training: batch size, network, loss
            train, val = trainer.get_dataloaders()
            try:
                for _ in range(args.warmup):
                    next(train)
                start = time.perf_counter()
                for _ in range(args.batches):
                    batch = next(train)
                seconds = time.perf_counter() - start
            finally:
                for loader in (train, val):
                    if hasattr(loader, "_finish"):
                        loader._finish()
    shape = list(batch["data"].shape)
    patches_per_s = args.batches * args.batch / seconds
    cores = max(1, args.workers)
    per_core = patches_per_s / cores
    report = {
        "reference": f"patches one GPU consumes: {GPU_PATCHES_PER_S:.1f}/s (ResEnc-L, H200, 160^3, batch 2)",
        "patch": [args.patch] * 3,
        "batch_size": args.batch,
        "batch_shape": shape,
        "augmentation_workers": args.workers,
        "batches": args.batches,
        "seconds": round(seconds, 2),
        "patches_per_second": round(patches_per_s, 3),
        "patches_per_second_per_core": round(per_core, 3),
        "cores_per_gpu": round(GPU_PATCHES_PER_S / per_core, 1),
        "provenance": collect_provenance("cpu"),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(
        f"{patches_per_s:.2f} patches/s with {args.workers} worker(s): {per_core:.2f} per core; "
        f"one GPU at {GPU_PATCHES_PER_S:.1f} patches/s needs about {report['cores_per_gpu']} cores"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
