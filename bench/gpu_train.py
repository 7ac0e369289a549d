"""GPU training throughput: the harness trainer beside nnunetv2's own trainer of the same network
(`make bench-gpu`).

The anchors are nnU-Net training the challenge's networks itself, on the same preprocessed data
(the toy segmentation task, ToySegOneChannel), at the challenge patch (160^3) and batch size 2,
in the same run on the same device, through nnU-Net's own data loading and augmentation:

* ResEnc-L: ``nnUNetTrainer`` with the residual-encoder L network nnunetv2's ``nnUNetPlannerResEncL``
  plans at a 160^3 patch (6 stages, 32..320 features, (1, 3, 4, 6, 6, 6) blocks: the challenge's
  ResEnc-L), with nnU-Net's deep supervision, loss, SGD and float16 autocast, as it ships;
* Primus-M: nnunetv2's ``nnUNet_Primus_M_Trainer``, when the installed nnunetv2 has it.

Each harness trainer runs with ``torch.compile`` off and on (nnU-Net's ``nnUNet_compile``) and in
float16 and bfloat16 autocast; each anchor with compile off and on, in its own precision.
Reported per run: iterations per second, peak GPU memory, and the ratio to its anchor at the same
compile setting (the goal: >= 1.0; >= 1.3 with the best settings). Writes
``results/bench/gpu_train.json`` (the dry run's cost plan reads its rates). ``--device cpu
--patch 64 --iterations 1 --compile off --precision fp16`` runs the same code as a smoke test.
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

#: nnUNetPlannerResEncL's 3d_fullres network at a 160^3 patch of 1 mm data (plans format).
RESENC_L_ARCHITECTURE = {
    "network_class_name": "dynamic_network_architectures.architectures.unet.ResidualEncoderUNet",
    "arch_kwargs": {
        "n_stages": 6,
        "features_per_stage": [32, 64, 128, 256, 320, 320],
        "conv_op": "torch.nn.modules.conv.Conv3d",
        "kernel_sizes": [[3, 3, 3]] * 6,
        "strides": [[1, 1, 1]] + [[2, 2, 2]] * 5,
        "n_blocks_per_stage": [1, 3, 4, 6, 6, 6],
        "n_conv_per_stage_decoder": [1, 1, 1, 1, 1],
        "conv_bias": True,
        "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d",
        "norm_op_kwargs": {"eps": 1e-05, "affine": True},
        "dropout_op": None,
        "dropout_op_kwargs": None,
        "nonlin": "torch.nn.LeakyReLU",
        "nonlin_kwargs": {"inplace": True},
    },
    "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"],
}


def _time_trainer(trainer, iterations: int, warmup: int, device) -> dict:
    import torch

    trainer.on_train_start()
    trainer.on_train_epoch_start()
    try:
        for _ in range(warmup):  # compilation happens here
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
        "peak_gpu_memory_gib": None if peak is None else round(peak, 2),
    }


def _anchors() -> dict:
    """Track -> (name, nnU-Net trainer class, plans architecture or None) of what nnunetv2 ships."""
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    out = {"ResEncL": ("nnUNetTrainer (ResEnc-L plans)", nnUNetTrainer, RESENC_L_ARCHITECTURE)}
    try:
        from nnunetv2.training.nnUNetTrainer.primus.primus_trainers import nnUNet_Primus_M_Trainer

        out["PrimusM"] = ("nnUNet_Primus_M_Trainer", nnUNet_Primus_M_Trainer, None)
    except ImportError:  # an nnunetv2 without Primus trainers: the harness Primus-M has no anchor
        pass
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--patch", type=int, default=160)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--iterations", type=int, default=15)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--tracks", default="ResEncL,PrimusM")
    parser.add_argument("--compile", default="off,on", help="torch.compile settings to run: off, on or both")
    parser.add_argument("--precision", default="fp16,bf16", help="harness trainer autocast dtypes: fp16, bf16")
    parser.add_argument("--out", type=Path, default=REPO / "results" / "bench" / "gpu_train.json")
    args = parser.parse_args(argv)
    compiles = [c.strip() for c in args.compile.split(",") if c.strip()]
    precisions = [p.strip() for p in args.precision.split(",") if p.strip()]
    tracks = [t.strip() for t in args.tracks.split(",") if t.strip()]

    import torch
    from toy_task import prepared_toy_segmentation

    from harness.finetune.job import collect_provenance
    from harness.finetune.nnunet_trainer import SSL3DFinetuneTrainer
    from harness.finetune.segmentation import CONFIGURATION, nnunet_paths, run_plans
    from harness.recipes import SSL3D_2025

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("error: no CUDA device; pass --device cpu for a smoke test", file=sys.stderr)
        return 2
    anchors = _anchors()
    runs: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        task, prepared = prepared_toy_segmentation(root)
        patch = (args.patch,) * 3

        def run(name: str, track: str, compiled: str, precision: str, make) -> None:
            os.environ["nnUNet_compile"] = "t" if compiled == "on" else "f"
            plans = run_plans(prepared, patch, args.batch)
            plans["continue_training"] = False
            out = root / "out" / f"{name}-{compiled}-{precision}".replace(" ", "_")
            with nnunet_paths(raw=prepared.raw, preprocessed=prepared.preprocessed, results=out):
                trainer = make(plans)
                figures = _time_trainer(trainer, args.iterations, args.warmup, device)
            record = {"trainer": name, "track": track, "compile": compiled, "precision": precision, **figures}
            runs.append(record)
            print(json.dumps(record), flush=True)
            del trainer
            if device.type == "cuda":
                torch.cuda.empty_cache()

        for track in tracks:
            anchor = anchors.get(track)
            for compiled in compiles:
                if anchor is not None:
                    name, cls, architecture = anchor

                    def make_anchor(plans, cls=cls, architecture=architecture):
                        if architecture is not None:
                            plans["configurations"][CONFIGURATION]["architecture"] = architecture
                        return cls(plans, CONFIGURATION, 0, prepared.dataset_json, device)

                    run(name, track, compiled, "fp16 (nnU-Net's)", make_anchor)
                for precision in precisions:

                    def make_harness(plans, track=track, precision=precision):
                        trainer = SSL3DFinetuneTrainer(plans, CONFIGURATION, 0, prepared.dataset_json, device)
                        trainer.configure_finetuning(
                            track=track, schedule=task.schedule_for(track), recipe=SSL3D_2025.part("segmentation")
                        )
                        if precision == "bf16":
                            trainer.use_bfloat16()
                        return trainer

                    run(f"harness {track}", track, compiled, precision, make_harness)

    def ratio(record: dict) -> float | None:
        anchor = anchors.get(record["track"], ("",))[0]
        ref = [r for r in runs if r["trainer"] == anchor and r["compile"] == record["compile"]]
        return round(record["iterations_per_second"] / ref[0]["iterations_per_second"], 3) if ref else None

    for record in runs:
        if record["trainer"].startswith("harness "):
            record["ratio_vs_anchor"] = ratio(record)
    # the best harness rate per track (the cost plan reads "runs" instead: the rate at the
    # precision and compile setting the jobs train with, harness.jobs.cost.job_settings)
    results = {}
    for track in tracks:
        mine = [r for r in runs if r["trainer"] == f"harness {track}"]
        if mine:
            best = max(mine, key=lambda r: r["iterations_per_second"])
            fields = ("iterations_per_second", "peak_gpu_memory_gib", "compile", "precision")
            results[track] = {k: best[k] for k in fields}
    report = {
        "reference": "nnunetv2's own trainer of the same network (ResEnc-L plans / nnUNet_Primus_M_Trainer), same data",
        "patch": list(patch),
        "batch_size": args.batch,
        "device": str(device),
        "runs": runs,
        "results": results,
        "provenance": collect_provenance(str(device)),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    for record in runs:
        print(
            f"{record['trainer']:<32} compile {record['compile']:<3} {record['precision']:<16} "
            f"{record['iterations_per_second']:7.3f} it/s  peak {record['peak_gpu_memory_gib']} GiB"
            + (f"  ratio {record['ratio_vs_anchor']}" if record.get("ratio_vs_anchor") is not None else "")
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
