"""GPU training throughput: the harness trainer beside nnunetv2's own trainer (`make bench-gpu`).

Both train on the same preprocessed toy data (ToySegOneChannel) at the challenge patch (160^3)
and batch size 2, in the same run on the same device, through nnU-Net's own data loading and
augmentation. Reported: iterations per second, the harness/nnU-Net ratio and peak GPU memory.
nnU-Net's trainer trains the network nnU-Net plans for the toy data (with deep supervision), so
the ratio says what the challenge networks cost relative to nnU-Net's default, not a regression
bound. `--device cpu --patch 64 --iterations 1` runs the same code path as a quick smoke test.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _time_trainer(trainer, iterations: int, warmup: int, device) -> dict:
    import torch

    trainer.on_train_start()
    trainer.on_train_epoch_start()
    try:
        for _ in range(warmup):
            trainer.train_step(next(trainer.dataloader_train))
        if device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        for _ in range(iterations):
            trainer.train_step(next(trainer.dataloader_train))
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
    finally:
        for loader in (trainer.dataloader_train, trainer.dataloader_val):
            if hasattr(loader, "_finish"):
                loader._finish()
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None
    return {
        "iterations": iterations,
        "seconds": round(seconds, 3),
        "iterations_per_second": round(iterations / seconds, 4),
        "peak_gpu_memory_gib": peak,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--patch", type=int, default=160)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--iterations", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--out", type=Path, default=REPO / "results" / "bench" / "gpu_train.json")
    args = parser.parse_args(argv)

    import shutil

    import torch
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    from harness.finetune.job import collect_provenance
    from harness.finetune.nnunet_trainer import SSL3DFinetuneTrainer
    from harness.finetune.segmentation import CONFIGURATION, nnunet_paths, prepare_dataset, run_plans
    from harness.recipes import SSL3D_2025
    from harness.tasks import load_registry
    from harness.tasks.toy import write_toy_data

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("error: no CUDA device; pass --device cpu for a smoke test", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        shutil.copytree(REPO / "task_registry" / "toy", root / "task_registry" / "toy")
        write_toy_data(root / "data" / "toy")
        task = load_registry(root / "task_registry" / "toy")["ToySegOneChannel"]
        prepared = prepare_dataset(task, root / "results")
        patch = (args.patch,) * 3
        results = {}
        for name in ("nnUNetTrainer", "ResEncL", "PrimusM"):
            plans = run_plans(prepared, patch, args.batch)
            plans["continue_training"] = False
            with nnunet_paths(raw=prepared.raw, preprocessed=prepared.preprocessed, results=root / "out" / name):
                if name == "nnUNetTrainer":
                    trainer = nnUNetTrainer(plans, CONFIGURATION, 0, prepared.dataset_json, device)
                else:
                    trainer = SSL3DFinetuneTrainer(plans, CONFIGURATION, 0, prepared.dataset_json, device)
                    trainer.configure_finetuning(
                        track=name, schedule=task.schedule_for(name), recipe=SSL3D_2025.segmentation
                    )
                results[name] = _time_trainer(trainer, args.iterations, args.warmup, device)
            print(name, results[name], flush=True)
            del trainer
            if device.type == "cuda":
                torch.cuda.empty_cache()
    ref = results["nnUNetTrainer"]["iterations_per_second"]
    report = {
        "reference": "nnunetv2 nnUNetTrainer (its own planned network, deep supervision) on the same data",
        "patch": list(patch),
        "batch_size": args.batch,
        "device": str(device),
        "results": results,
        "ratio_vs_nnunet_trainer": {
            k: round(v["iterations_per_second"] / ref, 3) for k, v in results.items() if k != "nnUNetTrainer"
        },
        "provenance": collect_provenance(str(device)),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report["ratio_vs_nnunet_trainer"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
