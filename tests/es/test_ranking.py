"""The one centered-rank transform (:func:`cmamae.es.ranking.centered_ranks`) against the
reference, pyribs 0.12's OpenAI-ES: fed by pyribs' own ranker on distinct values, and fed our
ranking order (:func:`cmamae.es.ranking.rank_order`) on values with ties."""

import jax.numpy as jnp
import numpy as np
import pytest

pytest.importorskip("ribs")
from ribs.emitters.opt import OpenAIEvolutionStrategy  # noqa: E402
from ribs.emitters.rankers import TwoStageImprovementRanker  # noqa: E402

from cmamae.es.ranking import centered_ranks, rank_order  # noqa: E402


def _pyribs_utilities(values: np.ndarray, indices=None) -> np.ndarray:
    """The centered ranks pyribs' OpenAI-ES gives ``values`` ranked in the order ``indices``
    (best first; default: pyribs' two-stage improvement ranker, statuses equal so that it
    orders by value alone): with identity noise, no mirroring and σ₀ = 1 its gradient is
    ranks / N, read off the Adam step it would take."""
    n = values.shape[0]
    es = OpenAIEvolutionStrategy(sigma0=1.0, solution_dim=n, batch_size=n, mirror_sampling=False)
    es.reset(np.zeros(n))
    es.noise = np.eye(n)
    seen = {}
    es.adam_opt.step = lambda gradient: seen.setdefault("g", gradient)
    info = {"status": np.ones(n, np.int32), "value": values}
    ranked, ranking_values = TwoStageImprovementRanker().rank(None, None, {}, info)
    es.tell(ranked if indices is None else indices, ranking_values, n)
    return seen["g"] * n


@pytest.mark.filterwarnings("ignore:invalid value encountered")  # pyribs: θ stays 0
@pytest.mark.parametrize("levels", [None, 2, 5])
@pytest.mark.parametrize("n", [2, 7, 40, 200])
def test_centered_ranks_equal_pyribs_openai_es_ties_included(n, levels):
    rng = np.random.default_rng(n)
    values = rng.normal(size=n) if levels is None else rng.integers(0, levels, n).astype(float)
    ours = np.asarray(centered_ranks(jnp.asarray(values, jnp.float32)))
    order = np.asarray(rank_order(jnp.asarray(values, jnp.float32)))
    # Ties are not averaged: every entry has its own rank, its place in the ranking order.
    np.testing.assert_allclose(ours, _pyribs_utilities(values, order), rtol=0, atol=1e-6)
    assert len(np.unique(ours)) == n
    if levels is None:  # no ties: pyribs' own ranker gives the same order and utilities
        np.testing.assert_allclose(ours, _pyribs_utilities(values), rtol=0, atol=1e-6)


def test_centered_ranks_nan_lowest_batched_and_dtype():
    u = np.asarray(centered_ranks(jnp.array([3.0, 1.0, 2.0, jnp.nan])))
    np.testing.assert_allclose(u, [0.5, -1 / 6, 1 / 6, -0.5], atol=1e-7)
    # all tied: evenly spaced in batch order (the earlier ranks higher), not zeros
    u = np.asarray(centered_ranks(jnp.ones(4)))
    np.testing.assert_allclose(u, [0.5, 1 / 6, -1 / 6, -0.5], atol=1e-7)
    rows = jnp.array([[0.0, 5.0, 5.0, 7.0], [1.0, 0.0, 3.0, 2.0]])
    u = np.asarray(centered_ranks(rows))  # along the last axis
    np.testing.assert_allclose(u[0], [-0.5, 1 / 6, -1 / 6, 0.5], atol=1e-7)
    np.testing.assert_allclose(u[1], [-1 / 6, -0.5, 0.5, 1 / 6], atol=1e-7)
    assert centered_ranks(jnp.arange(4)).dtype == jnp.result_type(float)
    assert centered_ranks(jnp.ones(3, jnp.float32), jnp.float16).dtype == jnp.float16
    with pytest.raises(ValueError, match="at least 2"):
        centered_ranks(jnp.ones(1))
