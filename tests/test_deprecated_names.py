"""The names issue 17 replaced still work for old code, and say what they are now."""

import importlib
import sys

import jax
import numpy as np
import pytest

import cmamae
from cmamae import algorithms, tasks


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("cmamae.loop", "cmamae.compiled_loop"),
        ("cmamae.sharding", "cmamae.device_mesh"),
        ("cmamae.experiment.execution", "cmamae.experiment.advance"),
        ("cmamae.experiment.distributed", "cmamae.experiment.dask_cluster"),
    ],
)
def test_old_module_names_are_the_new_modules(old, new):
    sys.modules.pop(old, None)
    with pytest.warns(DeprecationWarning, match=f"{old} is now {new}"):
        module = importlib.import_module(old)
    assert module is importlib.import_module(new)


def test_scheduler_run_and_compiled_run_are_scan_and_compiled_scan():
    task = tasks.get("sphere", solution_dim=4, archive_dims=(4, 4))
    scheduler = algorithms.get("cma-me", task, num_emitters=1, popsize=4).scheduler
    init = lambda: scheduler.init(jax.random.key(0), jax.numpy.zeros(4))  # noqa: E731
    key = jax.random.key(1)
    expected, _ = cmamae.compiled_scan(scheduler, key, init(), task.evaluate, 2)
    with pytest.warns(DeprecationWarning, match="compiled_run is now compiled_scan"):
        old, _ = cmamae.compiled_run(scheduler, key, init(), task.evaluate, 2)
    with pytest.warns(DeprecationWarning, match="Scheduler.run is now Scheduler.scan"):
        eager, _ = scheduler.run(key, init(), task.evaluate, 2)
    for a, b in zip(jax.tree_util.tree_leaves(expected), jax.tree_util.tree_leaves(old)):
        np.testing.assert_array_equal(a, b)
    assert int(eager.evaluations) == int(expected.evaluations) == 8
