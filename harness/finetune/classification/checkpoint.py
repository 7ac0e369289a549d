"""Classification checkpoints: the whole training state of a job after an epoch, as plain data.

``<run>/work/classification/checkpoint_latest.pt`` holds the model, optimizer and gradient scaler
state dicts, the batch order's generator and pool, numpy's, Python's and torch's global
generators, and the epochs and steps done; it is written atomically and read back with
``torch.load(weights_only=True)``, never unpickling objects. A checkpoint is resumed only when it
is this job's (same job id, epochs, training cases and model tensors); any other is logged and
ignored. ``ClassifierTrainer`` (``train``) saves and resumes through these.
"""

from __future__ import annotations

import copy
import random
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from harness.recipes import ClassificationSchedule
from harness.runs import write_atomic

#: Where a classification job keeps its training state, inside the run's scratch folder.
CHECKPOINT_FILE = Path("classification") / "checkpoint_latest.pt"
CHECKPOINT_FORMAT = "ssl3d-harness classification checkpoint"
CHECKPOINT_VERSION = 1


def checkpoint_path(work_dir: Path) -> Path:
    """The latest-epoch checkpoint of a run whose scratch folder is ``work_dir``."""
    return Path(work_dir) / CHECKPOINT_FILE


def global_rng_states() -> dict:
    """Python's, numpy's global (the augmentation draws from it) and torch's generators, as plain
    data that ``torch.load(weights_only=True)`` reads back (numpy's key array becomes a list)."""
    import torch

    name, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss = random.getstate()
    cuda = None
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        cuda = torch.cuda.get_rng_state_all()
    return {
        "numpy": {
            "name": str(name),
            "keys": [int(k) for k in keys],
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "python": {"version": int(version), "internal": [int(i) for i in internal], "gauss": gauss},
        "torch": torch.get_rng_state(),
        "torch_cuda": cuda,
    }


def _checked_rng_states(saved: dict) -> dict:
    """``saved`` (from ``global_rng_states``) turned back into what the setters take, each tried
    on a scratch generator first so that a bad value raises here, before anything is changed."""
    import torch

    n = saved["numpy"]
    numpy_state = (
        n["name"],
        np.array(n["keys"], dtype=np.uint32),
        int(n["pos"]),
        int(n["has_gauss"]),
        float(n["cached_gaussian"]),
    )
    np.random.RandomState().set_state(numpy_state)
    p = saved["python"]
    python_state = (int(p["version"]), tuple(int(i) for i in p["internal"]), p["gauss"])
    random.Random().setstate(python_state)
    torch_state = saved["torch"]
    torch.Generator().set_state(torch_state)
    cuda = saved.get("torch_cuda")
    if cuda is not None and not (torch.cuda.is_available() and len(cuda) == torch.cuda.device_count()):
        cuda = None  # saved on another machine: the CUDA generators start from the seed
    return {"numpy": numpy_state, "python": python_state, "torch": torch_state, "torch_cuda": cuda}


def _set_rng_states(states: dict) -> None:
    import torch

    np.random.set_state(states["numpy"])
    random.setstate(states["python"])
    torch.set_rng_state(states["torch"])
    if states["torch_cuda"] is not None:
        torch.cuda.set_rng_state_all(states["torch_cuda"])


def save_checkpoint(path: Path, state: dict) -> None:
    """``torch.save`` through ``write_atomic``: a kill while writing leaves the previous checkpoint
    whole."""
    import torch

    write_atomic(path, lambda f: torch.save(state, f))


def read_checkpoint(
    path: Path,
    job_id: str | None,
    schedule: ClassificationSchedule,
    train_ids: Sequence[str],
    model,
    log: Callable[[str], None],
) -> dict | None:
    """The checkpoint at ``path`` if it is readable and this job's (same job id, epochs, training
    cases and model tensors), else None with a log line saying why. Never unpickles objects."""
    import torch

    if not path.is_file():
        return None
    why_not = None
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated, not a checkpoint, or holding objects weights_only refuses
        log(f"ignoring the checkpoint {path}: unreadable ({type(e).__name__}: {e}); training from the start")
        return None
    try:
        if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
            why_not = "not a classification checkpoint of this harness"
        elif ckpt.get("version") != CHECKPOINT_VERSION:
            why_not = f"format version {ckpt.get('version')!r}, this harness writes {CHECKPOINT_VERSION}"
        elif ckpt.get("job_id") != job_id:
            why_not = f"it belongs to job {ckpt.get('job_id')}, this is job {job_id}"
        elif ckpt.get("epochs") != schedule.epochs or not 1 <= int(ckpt.get("epoch", 0)) <= schedule.epochs:
            why_not = f"{ckpt.get('epoch')!r} of {ckpt.get('epochs')!r} epochs done, the schedule has {schedule.epochs}"
        elif list(ckpt.get("train_ids", ())) != list(train_ids):
            why_not = "it was trained on other cases"
        else:
            mine = {k: (tuple(v.shape), v.dtype) for k, v in model.state_dict().items()}
            theirs = {k: (tuple(v.shape), v.dtype) for k, v in ckpt["model"].items()}
            if mine != theirs:
                why_not = f"its model tensors differ ({len(set(mine) ^ set(theirs))} names not in both)"
    except Exception as e:
        why_not = f"malformed ({type(e).__name__}: {e})"
    if why_not:
        log(f"ignoring the checkpoint {path}: {why_not}; training from the start")
        return None
    return ckpt


def restore_checkpoint(
    ckpt: dict, path: Path, model, optimizer, scaler, rng, log: Callable[[str], None]
) -> dict | None:
    """Load ``ckpt`` into the model, optimizer, scaler and generators and return the progress
    (epoch, steps, lrs, epoch_loss, train_seconds, pool); None (nothing changed, a log line)
    when some part of it does not fit."""
    fresh_optimizer = copy.deepcopy(optimizer.state_dict())  # before the first step: no tensors
    try:
        states = _checked_rng_states(ckpt["rng"])
        np.random.PCG64().state = ckpt["rng"]["batches"]  # try it before setting the real one
        pool = [str(c) for c in ckpt["rng"]["pool"]]
        progress = {
            "epoch": int(ckpt["epoch"]),
            "steps": int(ckpt["optimizer_steps"]),
            "lrs": [float(x) for x in ckpt["lr_per_epoch"]],
            "epoch_loss": float(ckpt["epoch_loss"]),
            "train_seconds": float(ckpt["train_seconds"]),
            "pool": pool,
        }
        optimizer.load_state_dict(ckpt["optimizer"])
        if scaler is not None and ckpt.get("grad_scaler"):
            scaler.load_state_dict(ckpt["grad_scaler"])
        elif scaler is not None:
            log("the checkpoint has no gradient scaler state (saved without fp16): the scaler starts afresh")
    except Exception as e:
        optimizer.load_state_dict(fresh_optimizer)
        log(f"ignoring the checkpoint {path}: malformed ({type(e).__name__}: {e}); training from the start")
        return None
    # checked above: names, shapes and dtypes match, the generator states are valid
    model.load_state_dict(ckpt["model"])
    rng.bit_generator.state = ckpt["rng"]["batches"]
    _set_rng_states(states)
    return progress
