"""A pyribs user's CMA-MAE script and its cmamae translation give the same QD score.

The two scripts are the code blocks of docs/coming_from_pyribs.md, executed as they stand:
the sphere of pyribs' examples (n = 20), CMA-MAE with 5 CMA-ES emitters of 20 solutions,
100 iterations, host-side ask/tell with a NumPy objective, for the same seeds in both
libraries. The rule: the mean final QD scores differ by less than 3 standard errors of the
difference, √(s₁²/k + s₂²/k) over k seeds each, with pyribs' CMA-MAE settings and with
pyribs' emitter defaults ("2imp", "filter", "no_improvement") when our CMA-ES takes pyribs'
update (``update="pyribs"``). With those emitter defaults and our default (the tutorial's)
update cmamae scores higher (z ≈ +3.9 over 12 seeds, a documented difference of the update:
the page's table), so there cmamae must not be lower by 3 standard errors. The standard error
must be below 5 % of pyribs' mean (so that "within noise" cannot hide a real gap). Run with
``-s`` to print the numbers that docs/coming_from_pyribs.md quotes.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

pytest.importorskip("ribs")

DOC = Path(__file__).resolve().parents[2] / "docs" / "coming_from_pyribs.md"
SEEDS = 12
ITERATIONS = 100
RULE_SE = 3.0
MAX_RELATIVE_SE = 0.05
CMA_MAE = dict(ranker="imp", selection_rule="mu", restart_rule="basic")
EMITTER_DEFAULTS = dict(ranker="2imp", selection_rule="filter", restart_rule="no_improvement")


@pytest.fixture(scope="module")
def scripts():
    """The page's Python code blocks, executed in order in one namespace."""
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    assert len(blocks) == 3, f"expected the problem and the two scripts in {DOC}"
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, str(DOC), "exec"), namespace)
    return namespace


@pytest.fixture(scope="module")
def ribs_runs(scripts):
    """pyribs' final QD scores and elites per rule set (tuple of items), run once per module."""
    runs: dict = {}

    def get(rules):
        key = tuple(sorted(rules.items()))
        if key not in runs:
            with threadpool_limits(1):  # pyribs' eigh and JAX's: one BLAS thread is faster
                runs[key] = [scripts["run_pyribs"](s, ITERATIONS, **rules) for s in range(SEEDS)]
        return runs[key]

    return get


def _summary(scores):
    scores = np.asarray(scores, np.float64)
    return scores.mean(), scores.std(ddof=1) / np.sqrt(len(scores))


@pytest.mark.parametrize(
    "rules, update, two_sided",
    [
        (CMA_MAE, "tutorial", True),
        (EMITTER_DEFAULTS, "pyribs", True),
        (EMITTER_DEFAULTS, "tutorial", False),  # the documented difference of the update
    ],
    ids=["cma-mae-settings", "pyribs-emitter-defaults", "pyribs-emitter-defaults-our-update"],
)
def test_same_qd_score_as_pyribs(scripts, ribs_runs, rules, update, two_sided):
    theirs = ribs_runs(rules)
    with threadpool_limits(1):
        ours = [scripts["run_cmamae"](s, ITERATIONS, **rules, update=update) for s in range(SEEDS)]
    ribs_mean, ribs_se = _summary([q for q, _ in theirs])
    our_mean, our_se = _summary([q for q, _ in ours])
    se = float(np.hypot(ribs_se, our_se))
    z = (our_mean - ribs_mean) / se
    print(
        f"\n{rules}, update {update!r}: pyribs {ribs_mean:.0f} ± {ribs_se:.0f}, cmamae "
        f"{our_mean:.0f} ± {our_se:.0f}, difference {our_mean - ribs_mean:+.0f} = {z:+.2f} "
        "standard errors"
    )
    assert se < MAX_RELATIVE_SE * ribs_mean, (se, ribs_mean)
    assert (abs(z) if two_sided else -z) < RULE_SE, (ribs_mean, our_mean, se)

    # The elites read into pandas add up to the QD score on both sides (offset 0).
    for score, elites in (theirs[0], ours[0]):
        assert len(elites) > 100
        assert elites["objective"].sum() == pytest.approx(score, rel=1e-5)
        assert {"objective", "measures_0", "measures_1", "solution_0", "index"} <= set(elites)
