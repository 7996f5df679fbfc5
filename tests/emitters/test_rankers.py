"""Our scalar ranking fitness orders solutions exactly as pyribs' rankers do."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from ribs.emitters.rankers import ImprovementRanker, ObjectiveRanker, TwoStageImprovementRanker

from cmamae.emitters.rankers import check_ranker, ranking_fitness

RIBS = {"imp": ImprovementRanker, "2imp": TwoStageImprovementRanker, "obj": ObjectiveRanker}


def _order(fitness):
    return np.argsort(-np.where(np.isnan(fitness), -np.inf, fitness), kind="stable")


@settings(max_examples=60, deadline=None)
@given(
    ranker=st.sampled_from(sorted(RIBS)),
    status=st.lists(st.integers(0, 2), min_size=8, max_size=8),
    seed=st.integers(0, 10_000),
)
def test_order_matches_pyribs(ranker, status, seed):
    rng = np.random.default_rng(seed)
    status = np.array(status, np.int32)
    # Values consistent with the archive: accepted ones positive, rejected ones <= 0, and
    # distinct so that the order is unique (pyribs breaks ties by reversed batch order).
    value = np.where(status > 0, rng.uniform(0.1, 5, 8), -rng.uniform(0.1, 5, 8))
    objective = rng.normal(size=8)
    valid = np.ones(8, bool)
    ours = np.asarray(ranking_fitness(ranker, objective, status, value, valid))
    add_info = {"status": status, "value": value}
    data = {"objective": objective}
    ribs_order, _ = RIBS[ranker]().rank(None, None, data, add_info)
    np.testing.assert_array_equal(_order(ours), ribs_order)


def test_2imp_new_cells_with_negative_values_still_first():
    # With threshold_min = -inf a new cell's value is its objective, which can be negative and
    # below a rejected solution's value: the status still decides.
    status = np.array([0, 2, 1, 2])
    value = np.array([-0.5, -3.0, 0.2, 1.0])
    fit = np.asarray(ranking_fitness("2imp", value, status, value, np.ones(4, bool)))
    np.testing.assert_array_equal(_order(fit), [3, 1, 2, 0])


def test_invalid_solutions_get_nan():
    fit = ranking_fitness(
        "imp", np.zeros(3), np.zeros(3, int), np.zeros(3), np.array([True, False, True])
    )
    assert np.isnan(np.asarray(fit)[1]) and np.isfinite(np.asarray(fit)[[0, 2]]).all()


def test_unknown_ranker_is_rejected():
    with pytest.raises(ValueError, match="ranker"):
        check_ranker("rd")
