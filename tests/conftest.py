"""Session-wide example submissions and toy data.

Full-size checkpoints are 200-600 MB, so each base example is written once per test session into
a temporary folder, and the bad variants are derived from it by loading it memory-mapped,
changing the few entries a test needs and saving the copy into the test's own folder. Session
fixtures are shared by several modules: treat them as read-only (copy or hard-link them to change or rename them).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest


@pytest.fixture(scope="module")
def module_dir(tmp_path_factory, request) -> Iterator[Callable[[str], Path]]:
    """``module_dir(name)``: a new folder for files one test module shares (a toy registry, a
    results tree, an inbox of checkpoints), removed when the module ends, unless a test failed
    meanwhile (then kept for a look, like a failed test's ``tmp_path``). A whole session's
    module folders would otherwise stay on disk to its end: several GB."""
    failed_before = request.session.testsfailed
    made: list[Path] = []

    def make(name: str) -> Path:
        made.append(tmp_path_factory.mktemp(name))
        return made[-1]

    yield make
    if request.session.testsfailed == failed_before:
        for path in made:
            shutil.rmtree(path, ignore_errors=True)


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
def primus64_checkpoint(submissions_dir) -> Path:
    """Primus-M example, float32, pre-trained at 64^3 (its positional embedding an 8^3 grid)."""
    return _example(submissions_dir, "PrimusM_64.pth", "PrimusM", seed=4, pretrain_patch=(64, 64, 64))


@pytest.fixture(scope="session")
def toy_data(tmp_path_factory) -> Path:
    """A ``make-toy-data`` folder (what the toy registry's ``../../data/toy`` points at), written
    once per session. Read-only: copy it (``shutil.copytree``) to put it under a registry or to
    break it."""
    from harness.tasks.toy import write_toy_data

    out = tmp_path_factory.mktemp("toy_data") / "toy"
    write_toy_data(out)
    return out


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


@pytest.fixture
def derive_checkpoint(tmp_path) -> Callable[[Path, str, Callable[[dict], Any]], Path]:
    """``derive(base, name, edit)``: a copy of ``base`` with ``edit(checkpoint_dict)`` applied,
    written under the test's own ``tmp_path`` (so it is deleted when the test passes: a few
    hundred MB each).

    The base is loaded memory-mapped; ``edit`` may change tensors in place (the mapping is
    private copy-on-write, so the base file is untouched and every alias of the tensor sees the
    change).
    """
    import torch

    def derive(base: Path, name: str, edit: Callable[[dict], Any]) -> Path:
        checkpoint = torch.load(base, map_location="cpu", weights_only=True, mmap=True)
        edit(checkpoint)
        out = tmp_path / "derived" / name
        out.parent.mkdir(exist_ok=True)
        torch.save(checkpoint, out)
        return out

    return derive
