"""Correctly formatted example submissions with randomly initialised weights.

They are what the README's evaluate command and the smoke tests use: a checkpoint laid out as
nnssl's trainers write it (shared/reference/SSL3D.md section 1), made on demand and never
committed (ResEnc-L about 410 MB, Primus-M at 160^3 about 608 MB in float32).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
RECOMMENDED_DOWNSTREAM_PATCH = (160, 160, 160)


def example_adaptation_plan(track: str, pretrain_patch: Sequence[int] = (160, 160, 160)) -> dict[str, Any]:
    """The ``nnssl_adaptation_plan`` nnssl writes for ``track`` pre-trained at ``pretrain_patch``
    (voxels, 1 mm isotropic); sequences are tuples, as nnssl leaves them."""
    from harness.models import get_track

    spec = get_track(track)
    return {
        "architecture_plans": {"arch_class_name": spec.name, "arch_kwargs": None, "arch_kwargs_requiring_import": None},
        "pretrain_plan": {
            "dataset_name": "Dataset000_HarnessExample",
            "plans_name": "nnsslPlans",
            "configurations": {
                "onemmiso": {
                    "spacing": (1.0, 1.0, 1.0),
                    "patch_size": tuple(int(p) for p in pretrain_patch),
                    "normalization_schemes": ["ZScoreNormalization"],
                    "spacing_style": "onemmiso",
                }
            },
        },
        "pretrain_num_input_channels": 1,
        "recommended_downstream_patchsize": RECOMMENDED_DOWNSTREAM_PATCH,
        "key_to_encoder": spec.key_to_encoder,
        "key_to_stem": spec.key_to_stem,
        "keys_to_in_proj": tuple(spec.keys_to_in_proj),
        "key_to_lpe": spec.key_to_lpe,
    }


def write_example_submission(
    out: str | Path,
    track: str,
    seed: int = 0,
    pretrain_patch: Sequence[int] = (160, 160, 160),
    dtype: torch.dtype = torch.float32,
) -> Path:
    """Write an nnssl-style checkpoint of the ``track`` reference network (1 output class, built
    at ``pretrain_patch``) with weights drawn from ``seed``; returns the path.

    The whole network is cast before its state dict is taken, so aliased keys (ResEnc-L's
    ``decoder.encoder.*``, ``all_modules.N``) keep sharing storage in the file. The file is
    written to a temporary name beside ``out`` and renamed, so ``out`` is never half-written.
    """
    from harness.models import build_network, get_track

    spec = get_track(track)
    if dtype not in DTYPES.values():
        raise ValueError(f"dtype {dtype} is not one of {', '.join(DTYPES)}")
    patch = tuple(int(p) for p in pretrain_patch)
    if len(patch) != 3 or min(patch) <= 0:
        raise ValueError(f"pre-training patch size {patch} is not 3 positive integers")
    out = Path(out)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        network = build_network(spec.name, input_channels=1, num_classes=1, patch_size=patch)
    network.to(dtype)
    checkpoint = {
        "network_weights": dict(network.state_dict()),
        "nnssl_adaptation_plan": example_adaptation_plan(spec.name, patch),
        "trainer_name": "harness.example_submission",
        "current_epoch": 0,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        torch.save(checkpoint, tmp)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return out
