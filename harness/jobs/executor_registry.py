"""The executors `harness evaluate --executor NAME` offers, keyed by name. Each entry declares its
own command-line options (as submitit's plugins do), turns them into evaluate's settings and
builds its executor; the CLI and evaluate only look an entry up (``get_executor_kind``), so adding
an executor is one entry here (docs/extending.md).
"""

from __future__ import annotations

import argparse
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from harness.jobs.errors import EvaluateError
from harness.jobs.executors import Executor, LocalExecutor, SlurmConfig, SlurmConfigError, SlurmExecutor
from harness.jobs.slots import Slot, SlotError, check_visible, parse_gpus, plan_slots, visible_gpus
from harness.runs import ResultsLayout


class ExecutorSettings(Protocol):
    """What an executor is built from (``harness.jobs.evaluate.EvaluateOptions``)."""

    executor: str
    device: str | None
    jobs: int | None
    gpus: Sequence[str] | None
    slurm: SlurmConfig | None


class ExecutorKind(ABC):
    """One executor of the registry: its name, its options and how it is built."""

    name: str = ""
    #: the ``ExecutorSettings`` fields its options fill: set for another executor, an error
    settings_fields: tuple[str, ...] = ()

    @abstractmethod
    def add_options(self, parser: argparse.ArgumentParser) -> None:
        """Add this executor's own options to `harness evaluate`'s parser."""

    @abstractmethod
    def given(self, args: argparse.Namespace) -> list[str]:
        """The options of this executor the command line set (an error with another executor)."""

    @abstractmethod
    def settings(self, args: argparse.Namespace) -> dict[str, Any]:
        """The ``ExecutorSettings`` fields this executor's options give (the parsed ``args``)."""

    @abstractmethod
    def build(self, settings: ExecutorSettings, layout: ResultsLayout) -> Executor:
        """The executor for one evaluate of ``layout``."""

    def misuse(self, chosen: str) -> str:
        """The error when this executor's settings are given with the ``chosen`` one."""
        return f"{self.name} executor options given with --executor {chosen}: give --executor {self.name}"


# ------------------------------------------------------------------------------------ local
def _gpu_list(text: str) -> list[str]:
    try:
        return parse_gpus(text)
    except SlotError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not at least 1")
    return value


def local_slots(settings: ExecutorSettings) -> list[Slot]:
    """Where the local executor runs jobs: one per GPU (``--gpus``, else every visible one
    unless ``--device cpu``), else ``--jobs`` on the CPU; the cores divided among them."""
    if settings.gpus is not None and settings.device == "cpu":
        raise EvaluateError("--gpus with --device cpu: give one or the other")
    gpus = list(settings.gpus) if settings.gpus is not None else ([] if settings.device == "cpu" else visible_gpus())
    if settings.device == "cuda" and not gpus:
        raise EvaluateError("--device cuda, but no GPU is visible (CUDA_VISIBLE_DEVICES, nvidia-smi)")
    try:
        if settings.gpus is not None:
            check_visible(gpus)  # a GPU the node lacks: said now, not by every job that lands on it
        return plan_slots(settings.jobs, gpus)
    except SlotError as e:
        raise EvaluateError(str(e)) from None


class LocalKind(ExecutorKind):
    """Subprocesses on this machine, one per slot (a GPU each, or ``--jobs`` on the CPU)."""

    name = "local"
    settings_fields = ("gpus",)  # --jobs on another executor is ignored, as it always was

    def add_options(self, parser: argparse.ArgumentParser) -> None:
        g = parser.add_argument_group("local executor")
        g.add_argument(
            "--jobs",
            type=_positive_int,
            default=None,
            metavar="N",
            help="local executor: jobs in parallel (default: one per GPU, else 1)",
        )
        g.add_argument(
            "--gpus",
            type=_gpu_list,
            default=None,
            metavar="0,1,...",
            help="local executor: run one job per listed GPU, each seeing only its own (CUDA_VISIBLE_DEVICES), "
            "the CPU cores divided among them (default: every visible GPU unless --device cpu)",
        )

    def given(self, args: argparse.Namespace) -> list[str]:
        return ["--gpus"] if args.gpus is not None else []

    def settings(self, args: argparse.Namespace) -> dict[str, Any]:
        return {"jobs": args.jobs, "gpus": args.gpus}

    def build(self, settings: ExecutorSettings, layout: ResultsLayout) -> Executor:
        return LocalExecutor(slots=local_slots(settings))

    def misuse(self, chosen: str) -> str:
        return f"--gpus is the local executor's; with --executor {chosen} give its own options (--gpus-per-job)"


# ------------------------------------------------------------------------------------ slurm
class SlurmKind(ExecutorKind):
    """A submitit array per batch on a Slurm cluster (``SlurmExecutor``)."""

    name = "slurm"
    settings_fields = ("slurm",)

    def add_options(self, parser: argparse.ArgumentParser) -> None:
        g = parser.add_argument_group("slurm executor (flags override the --slurm-config file)")
        g.add_argument(
            "--slurm-config",
            type=Path,
            default=None,
            metavar="FILE",
            help="YAML or JSON: partition, mem_gb, gpus_per_node, cpus_per_task, account, qos, "
            "constraint, signal_delay_s, max_requeues, array_parallelism, setup, extra (sbatch options)",
        )
        g.add_argument("--partition", default=None)
        g.add_argument("--mem-gb", type=float, default=None)
        g.add_argument("--gpus-per-job", type=int, default=None, dest="gpus_per_node", help="GPUs per job")
        g.add_argument("--cpus", type=int, default=None, dest="cpus_per_task", help="CPUs per job")
        g.add_argument(
            "--sbatch",
            action="append",
            default=[],
            metavar="KEY=VALUE",
            help="extra sbatch option, e.g. --sbatch exclude=node7 (repeatable)",
        )

    def given(self, args: argparse.Namespace) -> list[str]:
        flags = {"slurm_config": "--slurm-config", "partition": "--partition", "sbatch": "--sbatch"}
        return [flag for dest, flag in flags.items() if getattr(args, dest)]

    def settings(self, args: argparse.Namespace) -> dict[str, Any]:
        extra = {}
        for item in args.sbatch:
            key, sep, value = item.partition("=")
            if not sep or not key:
                raise SlurmConfigError(f"--sbatch {item!r}: expected KEY=VALUE, e.g. exclude=node7")
            extra[key] = value
        overrides = {
            "partition": args.partition,
            "mem_gb": args.mem_gb,
            "gpus_per_node": args.gpus_per_node,
            "cpus_per_task": args.cpus_per_task,
        }
        if args.slurm_config is not None:
            config = SlurmConfig.from_file(args.slurm_config, **overrides)
        else:
            config = SlurmConfig.from_mapping({k: v for k, v in overrides.items() if v is not None}, "command line")
        config.extra.update(extra)
        return {"slurm": config}

    def build(self, settings: ExecutorSettings, layout: ResultsLayout) -> Executor:
        return SlurmExecutor(layout.slurm_dir.resolve(), settings.slurm or SlurmConfig())

    def misuse(self, chosen: str) -> str:
        return "Slurm options given without --executor slurm"


#: name -> entry, in the order `--executor` lists them (the first is the default).
EXECUTOR_KINDS: dict[str, ExecutorKind] = {kind.name: kind for kind in (LocalKind(), SlurmKind())}


def get_executor_kind(name: str) -> ExecutorKind:
    try:
        return EXECUTOR_KINDS[name]
    except KeyError:
        raise EvaluateError(f"unknown executor {name!r}; choose one of {', '.join(EXECUTOR_KINDS)}") from None


def check_executor_options(args: argparse.Namespace) -> None:
    """Options of an executor other than ``args.executor`` on the command line: an error."""
    for kind in EXECUTOR_KINDS.values():
        if kind.name != args.executor and kind.given(args):
            raise EvaluateError(kind.misuse(args.executor))


def make_executor(settings: ExecutorSettings, layout: ResultsLayout) -> Executor:
    """The executor ``settings.executor`` names, built from its settings; another executor's
    settings are an error naming them."""
    chosen = get_executor_kind(settings.executor)
    for kind in EXECUTOR_KINDS.values():
        if kind is not chosen and any(getattr(settings, f, None) is not None for f in kind.settings_fields):
            raise EvaluateError(kind.misuse(chosen.name))
    return chosen.build(settings, layout)
