"""Named algorithms and the compiled multi-seed loop on a benchmark task."""

import jax
import numpy as np
import pytest

import cmamae
from cmamae import algorithms, tasks

SMALL = dict(num_emitters=2, popsize=8)


def test_names_are_the_recipes():
    assert set(algorithms.names()) == {
        "cma-mae",
        "sep-cma-mae",
        "lm-ma-mae",
        "openai-mae",
        "cma-me",
        "cma-es",
        "map-elites",
        "map-elites-line",
        "cma-mega",
        "cma-mega-es",
        "me-es",
        "pga-me",
        "cma-mega-td3-es",
    }


def test_paper_defaults_by_domain():
    sphere = algorithms.defaults("cma-mae", tasks.get("sphere"))
    assert (
        sphere["num_emitters"],
        sphere["popsize"],
        sphere["sigma0"],
        sphere["learning_rate"],
    ) == (15, 36, 0.5, 0.01)
    me = algorithms.defaults("cma-me", tasks.get("sphere"))
    assert me["learning_rate"] == 1.0 and me["ranker"] == "2imp"
    assert me["threshold_min"] == -np.inf
    assert algorithms.defaults("cma-es", tasks.get("sphere"))["learning_rate"] == 0.0
    lm = algorithms.get("lm-ma-mae", tasks.get("sphere", solution_dim=10), popsize=8, k=8)
    assert lm.scheduler.emitters[0].strategy.k == 8


def test_bad_names_and_settings():
    task = tasks.get("sphere", solution_dim=10)
    with pytest.raises(ValueError, match="sep-cma-mae"):
        algorithms.get("sep-cma-mea", task)
    with pytest.raises(ValueError, match="sigma00"):
        algorithms.get("sep-cma-mae", task, sigma00=1.0)


@pytest.mark.parametrize(
    "name",
    [
        "sep-cma-mae",
        "lm-ma-mae",
        "openai-mae",
        "cma-mae",
        "cma-me",
        "cma-es",
        "map-elites",
        "map-elites-line",
    ],
)
def test_every_algorithm_improves_and_respects_budget(name):
    task = tasks.get("sphere", solution_dim=10, archive_dims=(20, 20))
    overrides = SMALL if "map-elites" not in name else dict(batch_size=16)
    algo = algorithms.get(name, task, **overrides)
    batch = algo.scheduler.batch_size
    result = cmamae.run(
        task, algo, evals=25 * batch + 3, seeds=2, key=jax.random.key(0), chunk_iterations=10
    )
    assert result.metrics["qd_score"].shape == (2, 25)
    np.testing.assert_array_equal(result.final()["evaluations"], [25 * batch] * 2)
    qd = result.metrics["qd_score"]
    assert np.all(qd[:, -1] > qd[:, 0])
    # Seeds are independent streams.
    assert not np.array_equal(qd[0], qd[1])


def test_run_is_deterministic_and_validates():
    task = tasks.get("sphere", solution_dim=10, archive_dims=(20, 20))
    algo = algorithms.get("sep-cma-mae", task, **SMALL)
    a = cmamae.run(task, algo, evals=160, key=jax.random.key(3))
    b = cmamae.run(task, algo, evals=160, key=jax.random.key(3), chunk_iterations=4)
    np.testing.assert_array_equal(a.metrics["qd_score"], b.metrics["qd_score"])
    with pytest.raises(ValueError, match="evals"):
        cmamae.run(task, algo, evals=0)
    with pytest.raises(ValueError, match="seeds"):
        cmamae.run(task, algo, evals=160, seeds=-1)


def test_es_recipes_pick_batching_by_size():
    """ES recipes default to batching "auto": vmap on the n = 100 benchmark domains, the
    sequential loop at locomotion-like sizes; an explicit setting overrides it."""
    for name in ("cma-mae", "sep-cma-mae", "lm-ma-mae", "openai-mae", "cma-me", "cma-es"):
        for n, expected in ((100, "vmap"), (20000, "map")):
            task = tasks.get("sphere", solution_dim=n)
            algo = algorithms.get(name, task)
            assert algo.config["batching"] == "auto"
            emitter = algo.scheduler.emitters[0]
            assert emitter.resolved_batching(task.solution_dim) == expected, (name, n)
        forced = algorithms.get(name, tasks.get("sphere"), batching="map")
        assert forced.scheduler.emitters[0].resolved_batching(100) == "map"
