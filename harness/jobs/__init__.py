"""The evaluation job matrix: which (entry, task, fold) jobs exist, what state each is in, and
how they run (a local subprocess each, or a Slurm array through submitit).

Data flows one way: ``matrix`` (what should exist) -> ``state`` (what the run folders say) ->
``executors`` (run ``harness.jobs.worker`` on a job folder) -> the run folder's DONE / FAILED.
``evaluate`` orchestrates, ``status`` reads, ``commands`` is the CLI.
"""

#: The executors ``harness evaluate --executor`` offers (``harness.jobs.evaluate.make_executor``).
EXECUTORS: tuple[str, ...] = ("local", "slurm")
