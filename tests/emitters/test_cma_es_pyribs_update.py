"""``CMAES(update="pyribs")`` in the ES emitter against pyribs 0.12's CMA-ES emitter.

Both emitters get the same solutions every iteration: pyribs' ``ask`` runs (it decides when to
decompose C) and its solutions are then replaced by ours, whose noise pyribs' generator hands
out too. Both archives get the same batch. When our emitter restarts, pyribs' archive is made
to hand out the elite ours drew. After every ``tell`` the whole CMA-ES state (mean, σ, C, p_c,
p_σ) must equal pyribs' in float64, and after every ``ask`` the matrix each library last
decomposed (its B D² Bᵀ), so the decomposition schedule is pyribs' too. The cases: pyribs'
emitter defaults ("2imp", "filter", "no_improvement"), "filter" with iterations that accept
nothing and do not restart, and "mu" (pyribs' μ positive weights). The default
``update="tutorial"`` is checked to differ, so the test would notice if the option did nothing.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from cmamae.archives import GridArchive
from cmamae.emitters import EvaluatedBatch, EvolutionStrategyEmitter
from cmamae.es import CMAES
from cmamae.es.cma_es import cma_parameters
from cmamae.es.noise import standard_normal

ribs_archives = pytest.importorskip("ribs.archives")
ribs_emitters = pytest.importorskip("ribs.emitters")

# λ = 8 at n = 12: pyribs decomposes C every second tell, so the schedule is tested.
N, LAM, SIGMA0 = 12, 8, 0.3
ALPHA, THRESHOLD_MIN = 0.3, -4.0
DIMS, RANGES = (5, 5), ((-1.0, 1.0), (-1.0, 1.0))
ITERS = 45  # the first iteration that accepts nothing is the 40th


def _problem(x):
    """Objective peaking at 0.4 and measures from the first two coordinates (NumPy)."""
    return -np.sum((x - 0.4) ** 2, axis=1), np.tanh(x[:, :2])


class _Injected:
    """Stands in for pyribs' ES ``_rng``: ``normal(0, σ, shape)`` returns σ z for the z set."""

    z = None

    def normal(self, loc, scale, shape):
        assert loc == 0.0 and shape == self.z.shape
        return scale * self.z


def _no_restart_expected(n):
    raise AssertionError("pyribs restarted where our emitter did not")


def _first(states):
    """The first (only) emitter's ES state as NumPy arrays."""
    return jax.tree.map(lambda leaf: np.asarray(leaf[0]), states)


def _archives():
    kw = dict(solution_dim=N, dims=DIMS, ranges=RANGES, learning_rate=ALPHA)
    ours = GridArchive(**kw, threshold_min=THRESHOLD_MIN, dtype=np.float64)
    return ours, ribs_archives.GridArchive(**kw, threshold_min=THRESHOLD_MIN, dtype=np.float64)


def _run(update, ranker, selection_rule, restart_rule, x0):
    """Runs both emitters side by side; yields (iteration, our ES state, pyribs' optimizer,
    accepted count) after every tell."""
    emitter = EvolutionStrategyEmitter(
        CMAES(popsize=LAM, sigma0=SIGMA0, noise="normal", update=update),
        ranker=ranker,
        selection_rule=selection_rule,
        restart_rule=restart_rule,
        batching="vmap",
    )
    archive, ribs_archive = _archives()
    ask = jax.jit(emitter.ask)
    add = jax.jit(archive.add)
    tell = jax.jit(
        lambda k, s, a, x, f, m, i: emitter.tell(k, s, archive, a, EvaluatedBatch(x, f, m, i))
    )
    ribs_em = ribs_emitters.EvolutionStrategyEmitter(
        ribs_archive,
        x0=x0,
        sigma0=SIGMA0,
        ranker=ranker,
        es="cma_es",
        selection_rule=selection_rule,
        restart_rule=restart_rule,
        batch_size=LAM,
        seed=0,
    )
    ref = ribs_em._opt
    ref._rng = _Injected()
    state, astate = emitter.init(jax.random.key(0), jnp.asarray(x0)), archive.init()
    for i in range(ITERS):
        k_ask, k_tell = jax.random.split(jax.random.key(100 + i))
        x, state = ask(k_ask, state)
        key0 = jax.random.split(k_ask, 1)[0]  # the emitter's key for its one instance
        ref._rng.z = np.asarray(standard_normal(key0, state.es.noise[0], (LAM, N), jnp.float64))
        ribs_x = ribs_em.ask()
        es = _first(state.es)
        # The matrix each decomposed last; the solutions agree where the eigenbases do.
        decomposed = ref.cov.eigenbasis * ref.cov.eigenvalues @ ref.cov.eigenbasis.T
        np.testing.assert_allclose(es.B * es.D**2 @ es.B.T, decomposed, rtol=1e-9, atol=1e-12)
        x = np.asarray(x)
        if np.allclose(np.abs(es.B), np.abs(ref.cov.eigenbasis), rtol=0, atol=1e-9):
            np.testing.assert_allclose(np.abs(x - es.mean), np.abs(ribs_x - ref.mean), rtol=1e-9)
        ref._solutions = x.copy()

        f, meas = _problem(x)
        astate, info = add(astate, x, jnp.asarray(f), jnp.asarray(meas))
        add_info = ribs_archive.add(x, f, meas)
        np.testing.assert_array_equal(np.asarray(info.status), add_info["status"])

        before = int(state.restarts[0])
        state = tell(k_tell, state, astate, x, jnp.asarray(f), jnp.asarray(meas), info)
        if int(state.restarts[0]) > before:  # pyribs draws the elite our emitter drew
            elite = np.asarray(state.es.mean[0])
            assert np.any(np.all(np.isclose(ribs_archive.data("solution"), elite), axis=1))
            ribs_archive.sample_elites = lambda n, e=elite: {"solution": e[None]}
        else:
            ribs_archive.sample_elites = _no_restart_expected
        ribs_em.tell(x, f, meas, add_info)
        assert ribs_em.restarts == int(state.restarts[0]), i
        yield i, _first(state.es), ref, int(np.sum(add_info["status"] > 0))


@pytest.mark.parametrize(
    ("ranker", "selection_rule", "restart_rule"),
    [("2imp", "filter", "no_improvement"), ("2imp", "filter", "basic"), ("imp", "mu", "basic")],
)
def test_pyribs_update_equals_pyribs_emitter(ranker, selection_rule, restart_rule):
    x0 = np.random.default_rng(0).uniform(-0.5, 0.5, N)
    accepted = []
    with jax.enable_x64(True), threadpool_limits(1):
        for i, es, ref, m in _run("pyribs", ranker, selection_rule, restart_rule, x0):
            accepted.append(m)
            np.testing.assert_allclose(es.mean, ref.mean, rtol=1e-9, err_msg=str(i))
            assert float(es.sigma) == pytest.approx(ref.sigma, rel=1e-9), i
            np.testing.assert_allclose(es.C, ref.cov.cov, rtol=1e-9, atol=1e-12, err_msg=str(i))
            np.testing.assert_allclose(es.pc, ref.pc, rtol=1e-8, atol=1e-12, err_msg=str(i))
            np.testing.assert_allclose(es.ps, ref.ps, rtol=1e-8, atol=1e-12, err_msg=str(i))
            assert int(es.generation) == ref.current_eval // LAM, i
    # The runs went through what matters: many new cells (more than λ/2 parents) and, for
    # "filter", iterations that accepted nothing.
    assert max(accepted) > LAM // 2, accepted
    if selection_rule == "filter":
        assert 0 in accepted, accepted


def test_tutorial_update_differs_from_pyribs():
    """The default update is not pyribs' (c₁ rank-one term, Eq. 58's c_μ, ‖p_σ‖ step size):
    the first tell with parents already moves C elsewhere."""
    x0 = np.random.default_rng(0).uniform(-0.5, 0.5, N)
    with jax.enable_x64(True), threadpool_limits(1):
        for _, es, ref, m in _run("tutorial", "2imp", "filter", "basic", x0):
            if m > 0:
                assert not np.allclose(es.C, ref.cov.cov, rtol=1e-6)
                break


def test_pyribs_parameters():
    """μ positive weights (pyribs' for ⌊λ/2⌋ parents), pyribs' c_μ and decomposition interval."""
    ribs_opt = pytest.importorskip("ribs.emitters.opt")
    p = cma_parameters(LAM, N, "pyribs")
    ref = ribs_opt.CMAEvolutionStrategy(sigma0=SIGMA0, solution_dim=N, batch_size=LAM)
    weights, mueff, cc, cs, c1, cmu = ref._calc_strat_params(LAM // 2)
    np.testing.assert_allclose(p.weights[: LAM // 2], weights, rtol=1e-14)
    assert np.all(p.weights[LAM // 2 :] == 0)
    np.testing.assert_allclose([p.mueff, p.cc, p.cs, p.c1, p.cmu], [mueff, cc, cs, c1, cmu])
    assert p.eigen_gap == int(ref.lazy_gap_evals // LAM) + 1 == 2


def test_bad_update_is_rejected():
    with pytest.raises(ValueError, match="update"):
        CMAES(update="pycma")
