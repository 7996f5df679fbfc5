"""ME-ES: novelty, the ES step, explore/exploit starts, and the me-es recipe end to end."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import cmamae
from cmamae import algorithms, tasks
from cmamae.archives import GridArchive
from cmamae.emitters import EvaluatedBatch, MEESEmitter
from cmamae.emitters.me_es import novelty

N = 6
ARCHIVE = GridArchive(solution_dim=N, dims=(10, 10), ranges=[(-1, 1)] * 2)


def test_novelty_is_mean_squared_distance_to_k_nearest():
    rng = np.random.default_rng(0)
    stored = rng.uniform(-1, 1, (12, 2)).astype(np.float32)
    queries = np.concatenate([rng.uniform(-1, 1, (3, 2)), stored[:1]]).astype(np.float32)
    buf = np.zeros((20, 2), np.float32)
    buf[:12] = stored
    got = np.asarray(novelty(jnp.asarray(queries), jnp.asarray(buf), jnp.asarray(12), 4))
    for q, g in zip(queries, got):
        d2 = np.sort(((stored - q) ** 2).sum(1))
        d2 = d2[d2 > 0][:4]  # a query's own entry (distance 0) is skipped, as Colas et al.
        np.testing.assert_allclose(g, d2.mean(), rtol=1e-5)
    # Fewer stored than k: the mean over those there are; none stored: 0.
    got = novelty(jnp.asarray(queries), jnp.asarray(buf), jnp.asarray(2), 4)
    np.testing.assert_allclose(got[0], ((stored[:2] - queries[0]) ** 2).sum(1).mean(), rtol=1e-5)
    np.testing.assert_array_equal(novelty(jnp.asarray(queries), jnp.asarray(buf), 0, 4), 0.0)
    # Scanning the stored rows in blocks (one partly filled) gives the same numbers.
    for count in (12, 7):
        whole = novelty(jnp.asarray(queries), jnp.asarray(buf), jnp.asarray(count), 4)
        blocks = novelty(jnp.asarray(queries), jnp.asarray(buf), jnp.asarray(count), 4, chunk=5)
        np.testing.assert_allclose(blocks, whole, rtol=1e-6)


def _evaluate(x):
    """A linear objective a·x and measures (x_0, x_1) clipped to the archive's range."""
    a = jnp.linspace(1.0, 2.0, N)
    return x @ a, jnp.clip(x[:, :2], -1, 1)


def test_es_step_exploit_climbs_and_nothing_is_inserted():
    em = MEESEmitter(measure_dim=2, es_samples=40, es_sigma=0.05, steps_per_start=3, noise="normal")
    state = em.init(jax.random.key(0), jnp.zeros(N))
    x, state = em.ask_grad(jax.random.key(1), state, ARCHIVE, ARCHIVE.init())
    assert x.shape == (40, N) and em.grad_batch_size == 40 and em.batch_size == 1
    f, m = _evaluate(x)
    batch = EvaluatedBatch(x, f, m)
    state2, insert = em.tell_grad(jax.random.key(2), state, ARCHIVE, ARCHIVE.init(), batch)
    assert not np.any(np.asarray(insert))
    assert not bool(state2.explore[0])  # the first phase exploits
    # Adam's first step moves every coordinate by lr in the sign of the ascent direction.
    np.testing.assert_allclose(np.asarray(state2.theta[0]), 0.01, rtol=1e-3)


@functools.cache
def _jitted_tell(em):
    return jax.jit(em.tell, static_argnums=(2,))


def _run_tells(em, state, astate, steps, key=0):
    tell = _jitted_tell(em)
    for i in range(steps):
        theta, state = em.ask(None, state)
        f, m = _evaluate(theta)
        astate, info = ARCHIVE.add(astate, theta, f, m)
        batch = EvaluatedBatch(theta, f, m, info)
        state = tell(jax.random.key(key + i), state, ARCHIVE, astate, batch)
    return state, astate


def test_phases_alternate_and_starts_come_from_elites():
    em = MEESEmitter(
        measure_dim=2, es_samples=4, steps_per_start=2, novelty_capacity=16, novelty_k=3
    )
    state = em.init(jax.random.key(0), jnp.full(N, 0.3))
    astate = ARCHIVE.init()
    elites = jnp.array([[-0.9, -0.9] + [0.0] * 4, [0.9, 0.9] + [0.0] * 4])
    f, m = _evaluate(elites)
    astate, _ = ARCHIVE.add(astate, elites, f, m)
    state, astate = _run_tells(em, state, astate, 1)
    assert int(state.steps[0]) == 1 and not bool(state.explore[0])
    assert int(state.novelty_count) == 1
    state, astate = _run_tells(em, state, astate, 1, key=5)
    # Second step: a new start, now exploring, from one of the archive's elites.
    assert int(state.steps[0]) == 0 and bool(state.explore[0])
    sols = np.asarray(astate.solutions[np.asarray(astate.occupied)])
    assert any(np.allclose(np.asarray(state.theta[0]), s) for s in sols)
    assert int(state.opt[0].count[0]) == 0  # fresh Adam
    state, astate = _run_tells(em, state, astate, 2, key=9)
    assert not bool(state.explore[0])


def test_exploit_start_is_the_best_elite_early_and_explore_prefers_novel_cells():
    em = MEESEmitter(measure_dim=2, es_samples=4, novelty_capacity=8, novelty_k=1)
    state = em.init(jax.random.key(0), jnp.zeros(N))
    astate = ARCHIVE.init()
    pts = jnp.zeros((8, N)).at[:, 0].set(jnp.linspace(-0.95, 0.95, 8))
    f = jnp.arange(8.0)
    astate, info = ARCHIVE.add(astate, pts, f, pts[:, :2])
    # The novelty archive holds only the first point's measures: the far cells are novel.
    state = state.replace(
        novelty_measures=state.novelty_measures.at[0].set(pts[0, :2]),
        novelty_count=jnp.asarray(1),
    )
    pick = jax.jit(lambda k, e: em._start_cell(k, e, state.last_cells[0], astate, state))
    best = int(jnp.argmax(jnp.where(astate.occupied, astate.objectives, -jnp.inf)))
    assert {int(pick(jax.random.key(i), False)) for i in range(10)} == {best}
    counts = {}
    for i in range(300):
        c = int(pick(jax.random.key(i), True))
        counts[c] = counts.get(c, 0) + 1
    top5 = set(np.asarray(info.index)[3:].tolist())  # the 5 farthest from pts[0]
    assert sum(v for c, v in counts.items() if c in top5) / 300 > 0.85


def test_bad_input():
    with pytest.raises(ValueError, match="es_samples must be even"):
        MEESEmitter(measure_dim=2, es_samples=5)
    with pytest.raises(ValueError, match="measure_dim"):
        MEESEmitter(measure_dim=0)
    with pytest.raises(ValueError, match="es_sigma"):
        MEESEmitter(measure_dim=2, es_sigma=-1.0)
    with pytest.raises(ValueError, match="novelty_k"):
        MEESEmitter(measure_dim=2, novelty_k=0)


def test_recipe_defaults_and_budget_on_sphere():
    task = tasks.get("sphere", solution_dim=N, archive_dims=(20, 20))
    d = algorithms.defaults("me-es", task)
    assert (d["es_samples"], d["es_sigma"], d["es_learning_rate"], d["l2_coeff"]) == (
        200,
        0.02,
        0.01,
        0.005,
    )
    assert (d["novelty_k"], d["steps_per_start"], d["archive_learning_rate"]) == (10, 10, 1.0)
    algo = algorithms.get(
        "me-es", task, es_samples=20, es_sigma=0.2, es_learning_rate=0.1, novelty_capacity=64
    )
    assert algo.scheduler.evaluations_per_iteration == 21
    result = cmamae.run(task, algo, evals=30 * 21 + 7, seeds=2, key=jax.random.key(0))
    np.testing.assert_array_equal(result.final()["evaluations"], [30 * 21] * 2)
    qd = result.metrics["qd_score"]
    assert np.all(qd[:, -1] > qd[:, 0])


def test_recipe_takes_the_emitters_settings():
    """The me-es recipe's settings are MEESSettings' (same names, same defaults) and reach the
    emitter it builds unchanged; the emitter's own defaults are the recipe's."""
    import dataclasses

    from cmamae.emitters import MEESSettings

    task = tasks.get("sphere", solution_dim=N, archive_dims=(20, 20))
    names = {f.name for f in dataclasses.fields(MEESSettings)}
    assert names <= set(algorithms.ALGORITHMS.get("me-es").setting_names())
    d = algorithms.defaults("me-es", task)
    em_default = MEESEmitter(measure_dim=2)
    assert {n: d[n] for n in names} == {n: getattr(em_default, n) for n in names}
    over = dict(
        num_emitters=2,
        es_samples=8,
        es_sigma=0.3,
        es_learning_rate=0.2,
        l2_coeff=0.0,
        novelty_k=4,
        steps_per_start=5,
        novelty_capacity=32,
    )
    (em,) = algorithms.get("me-es", task, noise="normal", **over).scheduler.emitters
    assert {n: getattr(em, n) for n in names} == over
    assert (em.measure_dim, em.noise) == (2, "normal")
    with pytest.raises(ValueError, match="es_samples must be even"):
        algorithms.get("me-es", task, noise="normal", es_samples=7)


@pytest.mark.slow
def test_me_es_on_short_hopper():
    """One compilation on a 20-step hopper: the QD score grows, the budget is exact."""
    task = tasks.get("hopper", episode_length=20)
    algo = algorithms.get("me-es", task, es_samples=10, novelty_capacity=64, steps_per_start=3)
    per = algo.scheduler.evaluations_per_iteration
    assert per == 11
    result = cmamae.run(task, algo, evals=8 * per + 3, seeds=1, key=jax.random.key(0))
    np.testing.assert_array_equal(result.final()["evaluations"], [8 * per])
    qd = result.metrics["qd_score"][0]
    assert qd[-1] > qd[0]
