"""The CMA-MAE paper's benchmark domains against a NumPy transcription of its definitions.

The reference functions below transcribe the paper's experiment code (icaros-usc/cma_mae,
experiments/lin_proj/lin_proj.py and experiments/arm/arm.py): pyribs does not ship these
functions in an importable module (its examples/sphere.py is not installed).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from cmamae import tasks
from cmamae.tasks import functions

SHIFT = 5.12 * 0.4


# ----------------------------------------------------------------- NumPy reference (float64)
def ref_sphere(sol):
    dim = sol.shape[1]
    best, worst = 0.0, (-5.12 - SHIFT) ** 2 * dim
    raw = np.sum(np.square(sol - SHIFT), axis=1)
    return (raw - worst) / (best - worst) * 100


def ref_rastrigin(sol):
    a, dim = 10.0, sol.shape[1]
    disp = -5.12 * np.ones(sol.shape) - SHIFT
    worst = 10 * dim + np.sum(np.square(disp) - a * np.cos(2 * np.pi * disp), axis=1)
    disp = sol - SHIFT
    raw = 10 * dim + np.sum(np.square(disp) - a * np.cos(2 * np.pi * disp), axis=1)
    return (raw - worst) / (0.0 - worst) * 100


def ref_plateau(sol):
    raw = np.zeros(sol.shape)
    idx = np.where((sol > 5.12) | (sol < -5.12))
    raw[idx] = np.square(np.abs(sol[idx]) - 5.12)
    raw = np.average(raw, axis=1)
    return (raw - 100.0) / (0.0 - 100.0) * 100


def ref_measures(sol):
    dim = sol.shape[1]
    clipped = sol.copy()
    idx = np.where((clipped > 5.12) | (clipped < -5.12))
    clipped[idx] = 5.12 / clipped[idx]
    return np.stack([clipped[:, : dim // 2].sum(1), clipped[:, dim // 2 :].sum(1)], axis=1)


def ref_arm(theta):
    objs = (1.0 - np.var(theta, axis=1)) * 100.0
    cum = np.cumsum(theta, axis=1)
    return objs, np.stack([np.cos(cum).sum(1), np.sin(cum).sum(1)], axis=1)


REFS = {"sphere": ref_sphere, "rastrigin": ref_rastrigin, "plateau": ref_plateau}


@functools.cache
def _jitted(task):
    return jax.jit(task.evaluate)


def evaluate(name, x, **kw):
    obj, meas = _jitted(tasks.get(name, **kw))(jnp.asarray(x, jnp.float32), jax.random.key(0))
    return np.asarray(obj), np.asarray(meas)


# ----------------------------------------------------------------- linear projection
@pytest.mark.parametrize("name", ["sphere", "rastrigin"])
def test_optimum_is_100_and_corner_is_0(name):
    obj, _ = evaluate(name, np.stack([np.full(100, SHIFT), np.full(100, -5.12)]))
    np.testing.assert_allclose(obj, [100.0, 0.0], atol=1e-3)


def test_plateau_is_100_inside_the_box_and_penalized_outside():
    n = 100
    x = np.stack(
        [
            np.zeros(n),
            np.full(n, SHIFT),
            np.full(n, -5.12),
            np.full(n, 5.12),
            np.r_[np.full(10, 7.12), np.zeros(n - 10)],
        ]
    )
    obj, _ = evaluate("plateau", x)
    np.testing.assert_allclose(obj, [100, 100, 100, 100, 100 - 10 * 4.0 / n], atol=1e-4)


def test_measures_clip_outside_the_box():
    n = 4
    x = np.array([[10.0, -10.0, 5.12, -5.12], [1.0, 2.0, 3.0, 4.0], [0.0, 0.0, 100.0, 6.0]])
    _, meas = evaluate("sphere", x, solution_dim=n)
    expected = [[0.512 - 0.512, 5.12 - 5.12], [3.0, 7.0], [0.0, 0.0512 + 5.12 / 6.0]]
    np.testing.assert_allclose(meas, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["sphere", "rastrigin", "plateau"])
@pytest.mark.parametrize("n", [100, 7])
def test_matches_numpy_reference_on_random_inputs(name, n):
    rng = np.random.default_rng(0)
    # Mix of in-box and far-out components, so both clipping branches are exercised.
    x = rng.normal(0.0, 4.0, size=(256, n)) * rng.choice([1.0, 3.0], size=(256, n))
    x = x.astype(np.float32).astype(np.float64)
    obj, meas = evaluate(name, x, solution_dim=n)
    np.testing.assert_allclose(obj, REFS[name](x), rtol=2e-5, atol=2e-3)
    np.testing.assert_allclose(meas, ref_measures(x), rtol=2e-5, atol=2e-4)


@pytest.mark.parametrize("name", ["sphere", "rastrigin", "plateau"])
def test_metadata_matches_the_paper(name):
    task = tasks.get(name)
    assert task.solution_dim == 100
    assert task.archive_dims == (100, 100)
    assert task.measure_ranges == ((-256.0, 256.0), (-256.0, 256.0))  # ±(n/2)·5.12
    assert (task.min_f, task.max_f) == (0.0, 100.0)
    np.testing.assert_array_equal(task.initial_solution(jax.random.key(0)), np.zeros(100))


@settings(max_examples=40, deadline=None)
@given(hnp.arrays(np.float64, (3, 10), elements=st.floats(-1e4, 1e4, width=32)))
def test_objectives_at_most_100_and_measures_in_range(x):
    for name in ["sphere", "rastrigin", "plateau"]:
        obj, meas = evaluate(name, x, solution_dim=10)
        assert np.all(obj <= 100.0 + 1e-3)
        # Each clipped component lies in [-5.12, 5.12]; each half has 5 of them.
        assert np.all(np.abs(meas) <= 5 * 5.12 + 1e-3)


def test_evaluate_ignores_key_and_batches():
    task = tasks.get("rastrigin", solution_dim=6)
    x = jax.random.uniform(jax.random.key(1), (5, 6), minval=-8, maxval=8)
    a = task.evaluate(x, jax.random.key(0))
    b = task.evaluate(x, jax.random.key(1))
    np.testing.assert_array_equal(a[0], b[0])
    single = [task.evaluate(x[i : i + 1], None)[0][0] for i in range(5)]
    np.testing.assert_allclose(a[0], single, rtol=1e-6)


# ----------------------------------------------------------------- arm
def test_arm_known_configurations():
    n = 100
    half_turn = np.zeros(n)
    half_turn[0] = np.pi
    up = np.zeros(n)
    up[0] = np.pi / 2
    x = np.stack([np.zeros(n), np.full(n, 0.3), half_turn, up])
    obj, meas = evaluate("arm", x)
    np.testing.assert_allclose(meas[0], [n, 0.0], atol=1e-4)  # straight along +x
    np.testing.assert_allclose(obj[0], 100.0)
    np.testing.assert_allclose(obj[1], 100.0, atol=1e-4)  # constant angles: zero variance
    np.testing.assert_allclose(meas[2], [-n, 0.0], atol=1e-3)  # turned around at the base
    np.testing.assert_allclose(obj[2], 100.0 * (1 - np.pi**2 * (n - 1) / n**2), rtol=1e-5)
    np.testing.assert_allclose(meas[3], [0.0, n], atol=1e-3)


def test_arm_small_by_hand():
    # Two unit links at 90° then a further 90°: (cos 90° + cos 180°, sin 90° + sin 180°).
    obj, meas = evaluate("arm", np.array([[np.pi / 2, np.pi / 2]]), solution_dim=2)
    np.testing.assert_allclose(meas, [[-1.0, 1.0]], atol=1e-6)
    np.testing.assert_allclose(obj, [100.0], atol=1e-4)


def test_arm_matches_numpy_reference():
    rng = np.random.default_rng(1)
    x = rng.uniform(-np.pi, np.pi, size=(128, 100)).astype(np.float32).astype(np.float64)
    obj, meas = evaluate("arm", x)
    ref_obj, ref_meas = ref_arm(x)
    np.testing.assert_allclose(obj, ref_obj, rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(meas, ref_meas, rtol=1e-4, atol=2e-3)


def test_arm_metadata():
    task = tasks.get("arm")
    assert task.solution_dim == 100 and task.archive_dims == (100, 100)
    assert task.measure_ranges == ((-100.0, 100.0), (-100.0, 100.0))
    assert (task.min_f, task.max_f) == (0.0, 100.0)
    assert tasks.get("arm", solution_dim=10).measure_ranges == ((-10.0, 10.0), (-10.0, 10.0))


def test_module_functions_work_on_unbatched_vectors():
    x = jnp.full((100,), SHIFT)
    assert float(functions.sphere_objective(x)) == pytest.approx(100.0)
    assert functions.linear_projection_measures(x).shape == (2,)
    assert functions.arm_measures(jnp.zeros(5)).shape == (2,)
