"""Session-wide example submissions.

Full-size checkpoints are 200-600 MB, so each base example is written once per test session into
a temporary folder, and the bad variants are derived from it by loading it memory-mapped,
changing the few entries a test needs and saving again.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest


@pytest.fixture(scope="session")
def submissions_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("submissions")


def _example(directory: Path, name: str, track: str, **kwargs) -> Path:
    from harness.submission import write_example_submission

    return write_example_submission(directory / name, track, **kwargs)


@pytest.fixture(scope="session")
def resencl_checkpoint(submissions_dir) -> Path:
    """ResEnc-L example, float32, pre-trained at 160^3 (about 410 MB)."""
    return _example(submissions_dir, "ResEncL.pth", "ResEncL")


@pytest.fixture(scope="session")
def primus_checkpoint(submissions_dir) -> Path:
    """Primus-M example, float32, pre-trained at 160^3 (about 607 MB)."""
    return _example(submissions_dir, "PrimusM.pth", "PrimusM")


@pytest.fixture(scope="session")
def resencl_fp16_checkpoint(submissions_dir) -> Path:
    import torch

    return _example(submissions_dir, "ResEncL_fp16.pth", "ResEncL", seed=1, dtype=torch.float16)


@pytest.fixture(scope="session")
def primus_bf16_192x192x64_checkpoint(submissions_dir) -> Path:
    """Primus-M pre-trained at 192x192x64 (a patch seen in a released plan), bfloat16."""
    import torch

    return _example(
        submissions_dir,
        "PrimusM_bf16_192x192x64.pth",
        "PrimusM",
        seed=2,
        pretrain_patch=(192, 192, 64),
        dtype=torch.bfloat16,
    )


@pytest.fixture(scope="session")
def derive_checkpoint(submissions_dir) -> Callable[[Path, str, Callable[[dict], Any]], Path]:
    """``derive(base, name, edit)``: a copy of ``base`` with ``edit(checkpoint_dict)`` applied.

    The base is loaded memory-mapped; ``edit`` may change tensors in place (the mapping is
    private copy-on-write, so the base file is untouched and every alias of the tensor sees the
    change). Results are cached by ``name`` for the session.
    """
    import torch

    made: dict[str, Path] = {}

    def derive(base: Path, name: str, edit: Callable[[dict], Any]) -> Path:
        if name not in made:
            checkpoint = torch.load(base, map_location="cpu", weights_only=True, mmap=True)
            edit(checkpoint)
            out = submissions_dir / name
            torch.save(checkpoint, out)
            made[name] = out
        return made[name]

    return derive
