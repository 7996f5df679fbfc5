"""The experiment tests' small run, written once: a 10-D sphere on a 10 x 10 grid, sep-CMA-MAE
with 3 emitters x 8 (batch 24), 2 seeds, checkpoints every 10 iterations.

The runner, CLI, provenance, sweep and device-mesh tests run it in chunks of 10 iterations, so
its compiled chunk is built once per session and loaded from the session's compilation cache
by the others (tests/conftest.py)."""

from cmamae import algorithms, tasks

BATCH = 24  # evaluations per iteration: 3 emitters x 8
#: ``cmamae run`` arguments of the small run, to which a test adds ``--evals`` and ``--out``
ARGV = [
    "--task", "sphere", "--set", "task.solution_dim=10", "--set", "task.archive_dims=(10, 10)",
    "--set", "num_emitters=3", "--set", "popsize=8", "--seeds", "2", "--checkpoint-every", "10",
    "--quiet", "--no-plots",
]  # fmt: skip


def task_and_algorithm():
    """The small run's task and sep-CMA-MAE algorithm (its ``.scheduler``: batch 24)."""
    task = tasks.get("sphere", solution_dim=10, archive_dims=(10, 10))
    return task, algorithms.get("sep-cma-mae", task, num_emitters=3, popsize=8)
