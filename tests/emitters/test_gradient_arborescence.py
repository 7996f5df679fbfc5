"""CMA-MEGA's gradient-arborescence emitter: pyribs 0.12 numbers given the same exact
gradients, the gradient sources, and the cma-mega / cma-mega-es recipes end to end."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import cmamae
from cmamae import algorithms, es, tasks
from cmamae.archives import AddInfo, GridArchive
from cmamae.emitters import (
    ESGradient,
    EvaluatedBatch,
    ExactGradient,
    GradientArborescenceEmitter,
)
from cmamae.emitters.gradient_arborescence import branch, parent_weights, theta_step
from cmamae.emitters.gradients import mirrored_gradient, mirrored_samples
from cmamae.emitters.rankers import ranking_fitness

N = 10
TASK = tasks.get("sphere", solution_dim=N, archive_dims=(20, 20))


def _jacobian(theta):
    return np.asarray(
        ExactGradient(TASK.evaluate).jacobian(
            jax.random.key(0), None, jnp.asarray(theta, jnp.float32), None
        )[0]
    )


@pytest.mark.parametrize("grad_opt", ["gradient_ascent", "adam"])
@pytest.mark.parametrize("ranker", ["2imp", "imp"])
def test_matches_pyribs_given_its_coefficients(grad_opt, ranker):
    """Six iterations of pyribs' emitter on LP sphere with exact gradients from jax: our
    normalized Jacobian, branches (from pyribs' coefficients) and θ step match its numbers."""
    from ribs.archives import GridArchive as RibsGrid
    from ribs.emitters import GradientArborescenceEmitter as RibsGAE

    lr = 1.0 if grad_opt == "gradient_ascent" else 0.05
    archive = RibsGrid(solution_dim=N, dims=(20, 20), ranges=TASK.measure_ranges, seed=0)
    ribs_em = RibsGAE(
        archive,
        x0=np.zeros(N),
        sigma0=0.5,
        lr=lr,
        grad_opt=grad_opt,
        ranker=ranker,
        selection_rule="mu",
        restart_rule="basic",
        batch_size=12,
        seed=3,
        grad_opt_kwargs={"epsilon": 1e-14} if grad_opt == "adam" else None,
    )
    ours = GradientArborescenceEmitter(
        source=ExactGradient(TASK.evaluate),
        strategy=es.CMAES(popsize=12, sigma0=0.5),
        measure_dim=2,
        ranker=ranker,
        restart_rule="basic",
        optimizer=grad_opt,
        learning_rate=lr,
    )
    opt = optax.adam(lr, eps=1e-14) if grad_opt == "adam" else optax.sgd(lr)
    theta = np.zeros(N, np.float32)
    opt_state = opt.init(jnp.asarray(theta))
    evaluate = jax.jit(TASK.evaluate)
    for _ in range(6):
        sol = ribs_em.ask_dqd()
        np.testing.assert_allclose(sol[0], theta, rtol=1e-4, atol=1e-5)
        f, m = (np.asarray(a, np.float64) for a in evaluate(sol.astype(np.float32), None))
        jac = _jacobian(sol)
        ribs_em.tell_dqd(sol, f, m, jac.astype(np.float64), archive.add(sol, f, m))
        state = ours.init(jax.random.key(0), jnp.asarray(theta)).replace(
            theta=jnp.asarray(theta)[None]
        )
        k = 1 + 2
        block = jnp.asarray(sol, jnp.float32)
        state, insert = ours.tell_grad(
            None,
            state,
            None,
            None,
            EvaluatedBatch(block, jnp.asarray(f, jnp.float32), jnp.asarray(m, jnp.float32)),
        )
        np.testing.assert_array_equal(np.asarray(insert), [True])
        np.testing.assert_allclose(
            np.asarray(state.jacobian), ribs_em._jacobian_batch, rtol=1e-5, atol=1e-6
        )

        x = ribs_em.ask()
        coeffs = np.asarray(ribs_em._opt._solutions)
        assert coeffs.shape == (12, k)
        mine = branch(state.theta, state.jacobian, jnp.asarray(coeffs, jnp.float32)[None])
        np.testing.assert_allclose(np.asarray(mine), x, rtol=1e-4, atol=1e-4)

        f, m = (np.asarray(a, np.float64) for a in evaluate(x.astype(np.float32), None))
        add_info = archive.add(x, f, m)
        info = AddInfo(
            status=jnp.asarray(add_info["status"], jnp.int32),
            value=jnp.asarray(add_info["value"], jnp.float32),
            index=jnp.zeros(12, jnp.int32),
        )
        ribs_em.tell(x, f, m, add_info)
        fitness = ranking_fitness(
            ranker, jnp.asarray(f, jnp.float32), info.status, info.value, jnp.ones(12, bool)
        )
        new_theta, opt_state = theta_step(
            opt, jnp.asarray(theta), opt_state, jnp.asarray(x, jnp.float32), fitness
        )
        np.testing.assert_allclose(
            np.asarray(new_theta), ribs_em._grad_opt.theta, rtol=1e-4, atol=1e-4
        )
        theta = np.asarray(ribs_em._grad_opt.theta, np.float32)
    assert ribs_em.restarts == 0
    assert np.linalg.norm(theta) > 0.1  # θ moved


def test_parent_weights_are_pyribs_mu_weights():
    w = parent_weights(35)
    mu = 17
    ref = np.log(mu + 0.5) - np.log(np.arange(1, mu + 1))
    np.testing.assert_allclose(w, ref / ref.sum())


def test_mirrored_estimator_on_a_linear_function():
    """Raw values of f(x) = a·x: ∇̂ = (2/h) Σ (a·ε_j) ε_j exactly (twice Salimans et al.'s
    normalization, as the dqd-rl code), and it points along a."""
    a = jnp.linspace(-1.0, 2.0, N)
    thetas = jnp.ones((2, N))
    x = mirrored_samples(jax.random.key(0), jnp.zeros((0,)), thetas, 400, 0.1)
    assert x.shape == (800, N)
    f = x @ a
    g = mirrored_gradient(x[:400], f[None, :400], 0.1)[0]
    eps = (x[:200] - x[200:400]) / 0.2
    np.testing.assert_allclose(g, (2 / 200) * ((eps @ a) @ eps), rtol=1e-4)
    cos = float(g @ a / jnp.linalg.norm(g) / jnp.linalg.norm(a))
    assert cos > 0.9
    src = ESGradient(samples=400, sigma=0.1, rank_norm=False, noise="normal")
    block = jnp.concatenate([thetas, x])
    values = jnp.concatenate([thetas @ a, f])
    batch = EvaluatedBatch(block, values, jnp.stack([values, -values], 1))
    jac, _ = src.jacobian(None, None, thetas, batch)
    assert jac.shape == (2, 3, N)
    np.testing.assert_allclose(jac[0, 0], g, rtol=1e-5)
    np.testing.assert_allclose(jac[0, 2], -g, rtol=1e-5)


def test_exact_source_matches_finite_differences():
    theta = np.linspace(-1.0, 6.0, N).astype(np.float64)  # some coordinates clipped
    jac = _jacobian(theta[None])
    assert jac.shape == (1, 3, N)
    h = 1e-2
    for i in (0, 3, 9):
        e = np.zeros(N)
        e[i] = h
        up = [np.asarray(a) for a in TASK.evaluate(jnp.asarray([theta + e], jnp.float32), None)]
        dn = [np.asarray(a) for a in TASK.evaluate(jnp.asarray([theta - e], jnp.float32), None)]
        fd = np.concatenate([(up[0] - dn[0]), (up[1] - dn[1])[0]]) / (2 * h)
        np.testing.assert_allclose(jac[0, :, i], fd, rtol=2e-2, atol=2e-3)


def test_bad_input():
    src = ESGradient(samples=4)
    cma = es.CMAES(popsize=4, sigma0=1.0)
    with pytest.raises(ValueError, match="samples"):
        ESGradient(samples=3)
    with pytest.raises(ValueError, match="source"):
        GradientArborescenceEmitter(source=None, strategy=cma, measure_dim=2)
    with pytest.raises(ValueError, match="measure_dim"):
        GradientArborescenceEmitter(source=src, strategy=cma, measure_dim=0)
    with pytest.raises(ValueError, match="optimizer"):
        GradientArborescenceEmitter(source=src, strategy=cma, measure_dim=2, optimizer="sgd")
    with pytest.raises(ValueError, match="ranker"):
        GradientArborescenceEmitter(source=src, strategy=cma, measure_dim=2, ranker="obj")
    with pytest.raises(ValueError, match="exact gradients"):
        algorithms.get("cma-mega", tasks.get("hopper", episode_length=5))


def test_restart_takes_an_elite_and_resets():
    archive = GridArchive(solution_dim=N, dims=(5, 5), ranges=TASK.measure_ranges)
    em = GradientArborescenceEmitter(
        source=ExactGradient(TASK.evaluate),
        strategy=es.CMAES(popsize=4, sigma0=1.0),
        measure_dim=2,
        num_emitters=2,
    )
    state = jax.jit(em.init)(jax.random.key(0), jnp.zeros(N))
    elite = jnp.full((1, N), 0.25)
    astate, _ = archive.add(archive.init(), elite, jnp.array([1.0]), jnp.array([[0.0, 0.0]]))
    x, state = jax.jit(em.ask)(jax.random.key(1), state)
    # No branch improves the archive (status 0): "no_improvement" restarts both instances.
    info = AddInfo(status=jnp.zeros(8, jnp.int32), value=jnp.zeros(8), index=jnp.zeros(8, int))
    state = jax.jit(em.tell, static_argnums=(2,))(
        jax.random.key(2),
        state,
        archive,
        astate,
        EvaluatedBatch(x, jnp.zeros(8), jnp.zeros((8, 2)), info),
    )
    np.testing.assert_array_equal(np.asarray(state.restarts), [1, 1])
    np.testing.assert_allclose(np.asarray(state.theta), np.broadcast_to(elite, (2, N)))
    np.testing.assert_allclose(np.asarray(state.es.mean), 0.0)


@pytest.mark.parametrize("name", ["cma-mega", "cma-mega-es"])
def test_recipe_improves_and_respects_budget_on_sphere(name):
    algo = algorithms.get(
        name,
        TASK,
        num_emitters=2,
        popsize=8,
        **({"es_samples": 10} if name == "cma-mega-es" else {}),
    )
    per = algo.scheduler.evaluations_per_iteration
    assert per == 2 * 8 + 2 * (1 + (10 if name == "cma-mega-es" else 0))
    result = cmamae.run(TASK, algo, evals=20 * per + 5, seeds=2, key=jax.random.key(0))
    np.testing.assert_array_equal(result.final()["evaluations"], [20 * per] * 2)
    qd = result.metrics["qd_score"]
    assert np.all(qd[:, -1] > qd[:, 0])


@pytest.mark.slow
def test_cma_mega_es_on_short_hopper():
    """One compilation on a 20-step hopper: the QD score grows, the budget is exact."""
    task = tasks.get("hopper", episode_length=20)
    algo = algorithms.get("cma-mega-es", task, popsize=11, es_samples=10)
    per = algo.scheduler.evaluations_per_iteration
    assert per == 11 + 1 + 10
    result = cmamae.run(task, algo, evals=8 * per + 3, seeds=1, key=jax.random.key(0))
    np.testing.assert_array_equal(result.final()["evaluations"], [8 * per])
    qd = result.metrics["qd_score"][0]
    assert qd[-1] > qd[0]
