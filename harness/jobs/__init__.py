"""The evaluation job matrix: which (entry, task, fold) jobs exist, what state each is in, and
how they run (a local subprocess each, or a Slurm array through submitit).

Data flows one way: ``matrix`` (what should exist) -> ``state`` (what the run folders say) ->
``executors`` (run ``harness.jobs.worker`` on a job folder) -> the run folder's DONE / FAILED.
``intake`` records each submission's verdict, ``planning`` decides what each job of the matrix
needs, ``executor_registry`` offers the executors by name, ``evaluate`` orchestrates, ``status``
reads, ``commands`` is the CLI.
"""
