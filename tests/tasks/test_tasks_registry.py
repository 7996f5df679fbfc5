"""The Task dataclass and the task registry."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import pytest

from cmamae import tasks
from cmamae.registry import Registry
from cmamae.tasks import Task, bind


def test_builtin_names():
    assert {"sphere", "rastrigin", "plateau", "arm", "pendulum"} <= set(tasks.names())
    assert tasks.names() == sorted(tasks.names())


def test_unknown_name_lists_valid_names():
    with pytest.raises(ValueError) as err:
        tasks.get("sphear")
    msg = str(err.value)
    assert "'sphear'" in msg
    for name in tasks.names():
        assert name in msg


def test_unknown_override_lists_valid_overrides():
    with pytest.raises(ValueError, match="solution_dim") as err:
        tasks.get("sphere", dims=3)
    assert "'dims'" in str(err.value) or "dims" in str(err.value)


@pytest.mark.parametrize("name", ["sphere", "rastrigin", "plateau", "arm"])
def test_solution_dim_override(name):
    task = tasks.get(name, solution_dim=20)
    assert task.solution_dim == 20
    assert task.initial_solution(jax.random.key(0)).shape == (20,)
    obj, meas = task.evaluate(jnp.zeros((3, 20)), jax.random.key(0))
    assert obj.shape == (3,) and meas.shape == (3, 2)


def test_field_overrides_replace_after_building():
    task = tasks.get("pendulum", min_f=-5000.0, max_f=1.0)
    assert task.min_f == -5000.0 and task.max_f == 1.0
    task = tasks.get("sphere", archive_dims=(50, 50))
    assert task.archive_dims == (50, 50) and task.num_cells == 2500


def test_tasks_equal_and_hash_by_value():
    a, b = tasks.get("sphere"), tasks.get("sphere")
    assert a == b and hash(a) == hash(b)
    assert tasks.get("sphere") != tasks.get("rastrigin")
    assert tasks.get("pendulum") == tasks.get("pendulum")
    assert tasks.get("pendulum", num_episodes=5) != tasks.get("pendulum")


def test_task_is_a_static_jit_argument_without_recompiling():
    traces = []

    def f(task, x):
        traces.append(task.name)
        return task.evaluate(x, jax.random.key(0))[0]

    jf = jax.jit(f, static_argnums=0)
    x = jnp.zeros((2, 100))
    jf(tasks.get("sphere"), x)
    jf(tasks.get("sphere"), x)
    assert traces == ["sphere"]


def test_task_validation():
    good = tasks.get("sphere")
    with pytest.raises(ValueError, match="archive_dims"):
        dataclasses.replace(good, archive_dims=(100,))
    with pytest.raises(ValueError, match="measure_ranges"):
        dataclasses.replace(good, measure_ranges=((1.0, -1.0), (0.0, 1.0)))
    with pytest.raises(ValueError, match="max_f"):
        dataclasses.replace(good, max_f=-1.0)
    with pytest.raises(ValueError, match="solution_dim"):
        tasks.get("sphere", solution_dim=0)
    with pytest.raises(ValueError, match="num_episodes"):
        tasks.get("pendulum", num_episodes=0)


def test_register_is_one_line_and_rejects_duplicates(monkeypatch):
    monkeypatch.setattr(tasks.base, "TASKS", Registry("task"))  # the toy leaves no trace

    def _toy_eval(x, key):
        return -jnp.sum(x**2, axis=-1), x[:, :1]

    def _toy_init(key):
        return jnp.ones((3,))

    @tasks.register("_toy_for_test")
    def toy(scale: float = 1.0) -> Task:
        return Task(
            name="_toy_for_test",
            solution_dim=3,
            measure_names=("x0",),
            measure_ranges=((-scale, scale),),
            archive_dims=(10,),
            min_f=-100.0,
            max_f=0.0,
            evaluate=_toy_eval,
            initial_solution=_toy_init,
        )

    assert tasks.names() == ["_toy_for_test"]
    assert tasks.get("_toy_for_test", scale=2.0).measure_ranges == ((-2.0, 2.0),)
    with pytest.raises(ValueError, match="already registered"):
        tasks.register("_toy_for_test")(lambda: None)


def test_bind_compares_by_value():
    def f(x, *, a):
        return x + a

    assert bind(f, a=1) == bind(f, a=1)
    assert hash(bind(f, a=1)) == hash(bind(f, a=1))
    assert bind(f, a=1) != bind(f, a=2)
    assert bind(f, a=2)(1) == 3


def test_domain_is_task_metadata():
    """Which published algorithm settings fit a task is its ``domain`` field (not its name):
    the benchmark functions say "benchmark" and are differentiable, other tasks default to
    "scaling"; ``get`` overrides it like the other metadata fields."""
    for name in ("sphere", "rastrigin", "plateau", "arm"):
        task = tasks.get(name, solution_dim=4)
        assert task.domain == "benchmark" and task.differentiable, name
    pendulum = tasks.get("pendulum")
    assert pendulum.domain == "scaling" and not pendulum.differentiable
    assert tasks.get("pendulum", domain="benchmark").domain == "benchmark"
    with pytest.raises(ValueError, match=r"domain must be one of \('benchmark', 'scaling'\)"):
        tasks.get("sphere", domain="locomotion")
