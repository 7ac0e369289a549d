"""Slots: what one running job may use of the machine, and the environment that tells it so.

A machine with several GPUs runs one job per GPU (``CUDA_VISIBLE_DEVICES`` set to it, so the
job's ``cuda`` is that GPU and nothing else), and the CPU cores are divided among the jobs that
run at once: torch's threads and nnU-Net's augmentation worker processes
(``nnUNet_n_proc_DA``). At the challenge's schedule a GPU consumes about nine 160^3 patches a
second for ResEnc-L, so starving the augmentation of cores starves the GPU (``make bench``
measures patches per second per core). On Slurm a job's cores are its ``cpus_per_task``
(``SLURM_CPUS_PER_TASK``), divided the same way inside the job.

A variable the organizer set in the environment of ``harness evaluate`` is kept as given, except
the GPU variables: a GPU job always sees its slot's GPU, numbered as ``nvidia-smi`` numbers them
(``CUDA_DEVICE_ORDER=PCI_BUS_ID``; CUDA's own default order puts the fastest first).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

#: Environment variables a slot sets (unless already set by the organizer).
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")
DA_VARIABLE = "nnUNet_n_proc_DA"
GPU_VARIABLE = "CUDA_VISIBLE_DEVICES"
#: Set with the GPU: ``--gpus`` ids and ``CUDA_VISIBLE_DEVICES`` then mean what nvidia-smi shows.
ORDER_VARIABLE, ORDER = "CUDA_DEVICE_ORDER", "PCI_BUS_ID"
_UUID = r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
#: A GPU as ``nvidia-smi -L`` names it: its index, its UUID, or a MIG device's UUID (both forms).
GPU_ID = re.compile(rf"[0-9]+|GPU-{_UUID}|MIG-{_UUID}|MIG-GPU-{_UUID}/[0-9]+/[0-9]+")


class SlotError(ValueError):
    """A ``--gpus`` list or a job count that cannot be satisfied; the message says why."""


@dataclass(frozen=True)
class Slot:
    index: int
    #: the GPU this slot's job sees alone (a ``CUDA_VISIBLE_DEVICES`` entry); None: no GPU
    gpu: str | None
    #: CPU cores of this slot: torch's intra-op threads
    cpus: int

    @property
    def augmentation_workers(self) -> int:
        """nnU-Net's augmentation processes: the slot's cores but one (the training process); on a
        one-core slot none (0: augmentation in the training process, which a worker would only
        compete with for the core)."""
        return max(0, self.cpus - 1)

    def environment(self, base: Mapping[str, str] | None = None) -> dict[str, str]:
        """The variables this slot sets, leaving any that ``base`` (the organizer's environment,
        ``os.environ`` by default) already sets; the GPU is always the slot's own."""
        base = os.environ if base is None else base
        wanted = {name: str(self.cpus) for name in THREAD_VARIABLES}
        wanted[DA_VARIABLE] = str(self.augmentation_workers)
        out = {name: value for name, value in wanted.items() if not base.get(name)}
        if self.gpu is not None:
            out[GPU_VARIABLE] = self.gpu
            out[ORDER_VARIABLE] = ORDER
        return out

    def describe(self) -> str:
        where = f"GPU {self.gpu}" if self.gpu is not None else "CPU"
        return f"slot {self.index}: {where}, {self.cpus} core(s), {self.augmentation_workers} augmentation worker(s)"


def parse_gpus(text: str) -> list[str]:
    """``"0,1,3"`` -> ``["0", "1", "3"]``: non-negative indices or UUIDs as ``nvidia-smi -L`` prints
    them (``GPU-<uuid>``, ``MIG-<uuid>``). Anything else (``a``, ``0.5``, ``-1``: a job on no GPU)
    is a ``SlotError`` naming it; whether the GPUs exist is ``check_visible``'s."""
    gpus = [g.strip() for g in text.split(",")]
    if not text.strip() or any(not g for g in gpus):
        raise SlotError(f"--gpus {text!r}: expected a comma-separated list of GPU ids, e.g. 0,1,2")
    bad = [g for g in gpus if not GPU_ID.fullmatch(g)]
    if bad:
        raise SlotError(
            f"--gpus {text!r}: {', '.join(map(repr, bad))} is no GPU id: give indices 0, 1, ... or UUIDs "
            "as `nvidia-smi -L` prints them (GPU-..., MIG-...)"
        )
    gpus = [str(int(g)) if g.isdigit() else g for g in gpus]  # 01 is GPU 1
    if len(set(gpus)) != len(gpus):
        raise SlotError(f"--gpus {text!r}: a GPU is listed twice")
    return gpus


def check_visible(gpus: Sequence[str], environ: Mapping[str, str] | None = None) -> None:
    """A ``SlotError`` naming the GPUs of ``gpus`` that this process cannot see, when what it can see
    is known (``known_gpus``): a list that names a GPU the node lacks would otherwise fail job by job."""
    environ = os.environ if environ is None else environ
    known = known_gpus(environ)
    if known is None:
        return
    missing = [g for g in gpus if g not in known]
    if missing:
        given = environ.get(GPU_VARIABLE)
        source = "nvidia-smi -L" if given is None else f"{GPU_VARIABLE}={given!r}"
        shown = ", ".join(known) if known else "none"
        raise SlotError(
            f"--gpus {','.join(gpus)}: GPU(s) {', '.join(missing)} not visible; visible ({source}): {shown}"
        )


def known_gpus(environ: Mapping[str, str] | None = None) -> list[str] | None:
    """Every id a visible GPU goes by: ``CUDA_VISIBLE_DEVICES``'s entries when set, else each GPU's
    index and UUID (and its MIG devices' UUIDs) from ``nvidia-smi -L``; None when neither says."""
    environ = os.environ if environ is None else environ
    given = environ.get(GPU_VARIABLE)
    if given is not None:
        return visible_gpus(environ)
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return None
    try:
        out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:
        return None
    ids = []
    for line in out.stdout.splitlines():
        index = re.match(r"\s*GPU (\d+):", line)
        if index:
            ids.append(index.group(1))
        ids += re.findall(r"UUID: ((?:GPU|MIG)-[^)\s]+)", line)
    return ids


def visible_gpus(environ: Mapping[str, str] | None = None) -> list[str]:
    """The GPUs this process may use: ``CUDA_VISIBLE_DEVICES`` when set, else those
    ``nvidia-smi`` lists (no torch import: evaluate plans before anything heavy loads); none on a
    machine without either."""
    environ = os.environ if environ is None else environ
    given = environ.get(GPU_VARIABLE)
    if given is not None:
        return [g.strip() for g in given.split(",") if g.strip() and g.strip() != "-1"]
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return []
    try:
        out = subprocess.run([smi, "--query-gpu=index", "--format=csv,noheader"], capture_output=True, text=True)
    except OSError:
        return []
    return [line.strip() for line in out.stdout.splitlines() if line.strip()] if out.returncode == 0 else []


def machine_cpus() -> int:
    """Cores this process may run on (its affinity mask: what a container or Slurm allows)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def plan_slots(jobs: int | None, gpus: Sequence[str] | None, cpus: int | None = None) -> list[Slot]:
    """The slots of a local run: one per GPU when ``gpus`` are given (``jobs``, if given, may
    only lower that), else ``jobs`` CPU slots; the cores divided evenly among them, each at
    least one."""
    cpus = machine_cpus() if cpus is None else cpus
    if gpus:
        if jobs is not None and jobs > len(gpus):
            raise SlotError(f"--jobs {jobs} with --gpus {','.join(gpus)}: at most one job per GPU ({len(gpus)} GPU(s))")
        chosen: list[str | None] = list(gpus[: jobs or len(gpus)])
    else:
        chosen = [None] * (jobs or 1)
    share = max(1, cpus // len(chosen))
    return [Slot(i, gpu, share) for i, gpu in enumerate(chosen)]


def oversubscribed(slots: Sequence[Slot], cpus: int | None = None) -> str | None:
    """The warning for more jobs at once than cores (each then gets one core it shares), or None:
    said with the plan, before anything runs, not found out from a slow run."""
    cpus = machine_cpus() if cpus is None else cpus
    if len(slots) <= cpus:
        return None
    return (
        f"warning: {len(slots)} jobs at once on {cpus} CPU core(s): more jobs than cores, they compete "
        f"for them (each job's augmentation runs in its training process); at most {cpus} at once is faster"
    )


def slurm_slot(environ: Mapping[str, str] | None = None) -> Slot | None:
    """Inside a Slurm job with ``--cpus-per-task``: its cores as one slot (the GPU is Slurm's to
    set); None elsewhere."""
    environ = os.environ if environ is None else environ
    value = environ.get("SLURM_CPUS_PER_TASK", "")
    if not value.isdigit() or int(value) < 1:
        return None
    return Slot(0, None, int(value))
