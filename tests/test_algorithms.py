"""Named algorithms and the compiled multi-seed loop on a benchmark task."""

import dataclasses

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
        sphere["archive_learning_rate"],
    ) == (15, 36, 0.5, 0.01)
    me = algorithms.defaults("cma-me", tasks.get("sphere"))
    assert me["archive_learning_rate"] == 1.0 and me["ranker"] == "2imp"
    assert me["threshold_min"] == -np.inf
    assert algorithms.defaults("cma-es", tasks.get("sphere"))["archive_learning_rate"] == 0.0
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
        task, algo, evals=25 * batch + 3, seeds=2, key=jax.random.key(0), chunk_iterations=5
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
    # 6 iterations in chunks of 4 and 2 (a short last chunk), and in chunks of 2: the same
    a = cmamae.run(task, algo, evals=96, key=jax.random.key(3), chunk_iterations=4)
    b = cmamae.run(task, algo, evals=96, key=jax.random.key(3), chunk_iterations=2)
    assert a.metrics["qd_score"].shape == (1, 6)
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


def test_recipes_are_frozen_dataclasses_of_their_settings():
    task = tasks.get("sphere", solution_dim=10)
    for name in algorithms.names():
        cls = algorithms.ALGORITHMS.get(name)
        assert cls.name == name and issubclass(cls, algorithms.Recipe)
        recipe = algorithms.recipe(name, task)
        assert sorted(dataclasses.asdict(recipe)) == cls.setting_names()
        with pytest.raises(dataclasses.FrozenInstanceError):
            recipe.threshold_min = 1.0
    built = algorithms.get("lm-ma-mae", task, popsize=8, k=8)
    assert built.recipe == algorithms.recipe("lm-ma-mae", task, popsize=8, k=8, noise="normal")
    assert built.config == dataclasses.asdict(built.recipe)


def test_one_name_per_meaning():
    """The archive's α, an ES's Adam step, CMA-MEGA's η and PGA-ME's first-iteration σ each
    have their own name, in every recipe that has them."""
    task = tasks.get("sphere", solution_dim=10)
    settings = {n: algorithms.ALGORITHMS.get(n).setting_names() for n in algorithms.names()}
    for name, names in settings.items():
        assert "archive_learning_rate" in names and "learning_rate" not in names, name
    assert "es_learning_rate" in settings["openai-mae"] and "es_learning_rate" in settings["me-es"]
    assert "optimizer_learning_rate" in settings["cma-mega-es"]
    assert "first_iteration_sigma" in settings["pga-me"] and "sigma0" not in settings["pga-me"]
    algo = algorithms.get(
        "openai-mae", task, popsize=8, archive_learning_rate=0.2, es_learning_rate=0.03
    )
    assert algo.scheduler.archive.learning_rate == pytest.approx(0.2)
    assert algo.scheduler.emitters[0].strategy.learning_rate == pytest.approx(0.03)
    mega = algorithms.get("cma-mega-es", task, popsize=4, optimizer_learning_rate=0.5)
    assert mega.scheduler.emitters[0].learning_rate == 0.5


def test_unknown_setting_names_the_recipe_and_lists_its_settings():
    task = tasks.get("sphere", solution_dim=10)
    with pytest.raises(ValueError) as err:
        algorithms.get("openai-mae", task, learning_rate=0.1, sigma00=1.0)
    msg = str(err.value)
    assert "\n" not in msg
    assert "'openai-mae'" in msg and "['learning_rate', 'sigma00']" in msg
    assert "learning_rate is now archive_learning_rate" in msg
    assert str(algorithms.ALGORITHMS.get("openai-mae").setting_names()) in msg


def test_domain_defaults_come_from_task_metadata_not_its_name():
    sphere = tasks.get("sphere", solution_dim=50)
    assert sphere.domain == "benchmark"
    renamed = dataclasses.replace(sphere, name="my-sphere")  # a user's copy: same defaults
    assert algorithms.defaults("cma-mae", renamed) == algorithms.defaults("cma-mae", sphere)
    scaling = tasks.get("sphere", solution_dim=50, domain="scaling")
    d = algorithms.defaults("cma-mae", scaling)
    assert (d["num_emitters"], d["popsize"], d["sigma0"], d["archive_learning_rate"]) == (
        5,
        40,
        0.02,
        0.001,
    )
    assert algorithms.defaults("lm-ma-mae", scaling)["k"] == 40
    assert algorithms.defaults("lm-ma-mae", sphere)["k"] == 36
    assert algorithms.defaults("cma-me", sphere)["archive_learning_rate"] == 1.0
    assert algorithms.defaults("map-elites", scaling)["batch_size"] == 100
    # exact gradients follow Task.differentiable, not the name
    assert algorithms.get("cma-mega", renamed, num_emitters=1, popsize=4).scheduler
    with pytest.raises(ValueError, match="differentiable"):
        algorithms.get("cma-mega", dataclasses.replace(sphere, differentiable=False))


def test_old_setting_names_are_upgraded_in_one_place():
    old = {"learning_rate": 0.5, "adam_lr": 0.1, "popsize": 8}
    assert algorithms.upgrade_settings("openai-mae", old) == {
        "archive_learning_rate": 0.5,
        "es_learning_rate": 0.1,
        "popsize": 8,
    }
    assert algorithms.upgrade_settings("pga-me", {"sigma0": 0.1}) == {"first_iteration_sigma": 0.1}
    assert algorithms.upgrade_settings("cma-mae", {"sigma0": 0.1}) == {"sigma0": 0.1}
    assert algorithms.upgrade_settings("cma-mega", {"step_size": 2.0}) == {
        "optimizer_learning_rate": 2.0
    }
    # older map-elites recipes listed the other mutation's settings, unused
    assert algorithms.upgrade_settings("map-elites", {"iso_sigma": 0.1, "sigma": 0.3}) == {
        "sigma": 0.3
    }


def test_td3_recipes_take_the_constructors_settings():
    """The TD3-based recipes' settings are the constructors' (rl.TD3Settings,
    emitters.PGAMESettings, same names) and reach the emitter they build unchanged."""
    from cmamae.emitters import PGAMESettings
    from cmamae.rl import TD3Settings
    from cmamae.tasks import MLPPolicy

    policy = MLPPolicy((3, 4, 2))
    task = tasks.Task(
        name="policy-task",
        solution_dim=policy.num_params,
        evaluate=lambda x, key: (x[:, 0], x[:, :1]),
        measure_names=("m",),
        measure_ranges=((0.0, 1.0),),
        archive_dims=(4,),
        min_f=0.0,
        max_f=None,
        initial_solution=lambda key: jax.numpy.zeros(policy.num_params),
        policy=policy,
        evaluate_transitions=lambda x, key: None,
    )
    td3 = {f.name for f in dataclasses.fields(TD3Settings)}
    pga = {f.name for f in dataclasses.fields(PGAMESettings)}
    assert td3 <= set(algorithms.ALGORITHMS.get("cma-mega-td3-es").setting_names())
    assert td3 | pga <= set(algorithms.ALGORITHMS.get("pga-me").setting_names())
    over = dict(critic_lr=1e-3, discount=0.9, policy_delay=3, td3_batch_size=32, buffer_size=64)
    emitter = algorithms.get(
        "pga-me", task, noise="normal", pg_lr=2e-3, first_iteration_sigma=0.1, **over
    ).scheduler.emitters[0]
    td3_built = emitter.td3
    assert (td3_built.critic_lr, td3_built.discount, td3_built.policy_delay) == (1e-3, 0.9, 3)
    assert (emitter.td3.batch_size, emitter.buffer_size, emitter.pg_lr) == (32, 64, 2e-3)
    assert emitter.first_iteration_sigma == 0.1 and emitter.noise == "normal"
    source = (
        algorithms.get("cma-mega-td3-es", task, noise="normal", **over).scheduler.emitters[0].source
    )
    assert (source.td3.critic_lr, source.td3.batch_size, source.buffer_size) == (1e-3, 32, 64)
    with pytest.raises(ValueError, match=r"discount must be a number in \[0, 1\], got 1.5"):
        algorithms.get("pga-me", task, noise="normal", discount=1.5)
