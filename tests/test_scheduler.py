"""Scheduler: batch insertion into both archives, emitter slices, host ask/tell, compiled run."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cmamae import AskTell, Scheduler, compiled_run
from cmamae.archives import GridArchive
from cmamae.emitters import EvolutionStrategyEmitter, GaussianEmitter
from cmamae.es import SepCMAES
from cmamae.loop import run_chunk

N = 8


def _archive(alpha):
    return GridArchive(
        solution_dim=N,
        dims=(10, 10),
        ranges=[(-2, 2)] * 2,
        learning_rate=alpha,
        threshold_min=-100.0,
        qd_score_offset=-100.0,
    )


def _scheduler(alpha=0.1):
    return Scheduler(
        _archive(alpha),
        (
            EvolutionStrategyEmitter(SepCMAES(popsize=6, sigma0=0.3), num_emitters=2),
            GaussianEmitter(sigma=0.3, num_solutions=5),
        ),
    )


def evaluate(x, key):
    del key
    return -jnp.sum(x**2, axis=1), x[:, :2]


def test_result_archive_exists_exactly_when_alpha_below_one():
    assert _scheduler(0.1).result_archive is not None
    assert _scheduler(1.0).result_archive is None
    assert _scheduler(0.1).result_archive.learning_rate == 1.0


def test_tell_inserts_whole_batch_into_both_archives():
    sched = _scheduler(0.1)
    state = sched.init(jax.random.key(0), jnp.zeros(N))
    x, state = sched.ask(jax.random.key(1), state)
    assert x.shape == (sched.batch_size, N) == (17, N)
    f, m = evaluate(x, None)
    new_state, info = sched.tell(jax.random.key(2), state, x, f, m)
    # provenance: iteration 0, rows from 0 (no pre-phase)
    expected, expected_info = sched.archive.add(sched.archive.init(), x, f, m, iteration=0)
    for a, b in zip(
        jax.tree_util.tree_leaves(new_state.archive), jax.tree_util.tree_leaves(expected)
    ):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    np.testing.assert_array_equal(np.asarray(info.status), np.asarray(expected_info.status))
    assert int(new_state.evaluations) == 17 and int(new_state.iteration) == 1


def test_result_archive_keeps_best_ever():
    sched = _scheduler(0.5)
    state = sched.init(jax.random.key(0), jnp.zeros(N))
    m = jnp.zeros((sched.batch_size, 2))
    x = jnp.zeros((sched.batch_size, N))
    # First batch: best objective -1 in the single cell; then a worse but still accepted one.
    f1 = jnp.full(sched.batch_size, -50.0).at[0].set(-1.0)
    state, _ = sched.tell(jax.random.key(1), state, x, f1, m)
    f2 = jnp.full(sched.batch_size, -60.0).at[3].set(-20.0)
    state, info = sched.tell(jax.random.key(2), state, x, f2, m)
    assert int(info.status[3]) == 1  # accepted by the annealed archive (threshold fell below)
    assert float(sched.stats(state).obj_max) == -1.0


def test_tell_rejects_wrong_batch():
    sched = _scheduler()
    state = sched.init(jax.random.key(0), jnp.zeros(N))
    with pytest.raises(ValueError, match="solutions"):
        sched.tell(jax.random.key(1), state, jnp.zeros((3, N)), jnp.zeros(3), jnp.zeros((3, 2)))
    with pytest.raises(ValueError, match="x0"):
        sched.init(jax.random.key(0), jnp.zeros(N + 1))


def test_compiled_run_counts_evaluations_and_improves():
    sched = _scheduler(0.1)
    state = sched.init(jax.random.key(0), jnp.zeros(N))
    state, metrics = compiled_run(sched, jax.random.key(1), state, evaluate, 30)
    assert int(state.evaluations) == 30 * sched.batch_size
    np.testing.assert_array_equal(
        np.asarray(metrics["evaluations"]), np.arange(1, 31) * sched.batch_size
    )
    qd = np.asarray(metrics["qd_score"])
    assert qd[-1] > qd[0] > 0
    assert np.all(np.diff(qd) >= 0)  # result archive only improves


def test_host_ask_tell_matches_compiled_semantics():
    sched = _scheduler(0.1)
    loop = AskTell(sched, np.zeros(N), seed=0)
    with pytest.raises(ValueError, match="ask"):
        loop.tell(np.zeros(sched.batch_size), np.zeros((sched.batch_size, 2)))
    for _ in range(10):
        x = loop.ask()
        assert isinstance(x, np.ndarray) and x.shape == (sched.batch_size, N)
        loop.tell(-np.sum(x**2, axis=1), x[:, :2])
    stats = loop.stats()
    assert stats["num_elites"] > 0 and stats["obj_max"] <= 0
    x = loop.ask()
    with pytest.raises(ValueError, match="objectives"):
        loop.tell(np.zeros(3), x[:, :2])
    with pytest.raises(ValueError, match="measures"):
        loop.tell(np.zeros(sched.batch_size), x[:, :3])


@pytest.mark.parametrize("batching", ["vmap", "map"])
def test_archives_are_updated_in_place(batching):
    """Both archives' (cells, n) solution arrays are donated and scattered into, never copied:
    the compiled step and the compiled scan keep their buffers, and the HLO has no other
    instruction producing that shape than parameters, tuple elements and scatters."""
    n = 257  # a shape nothing else in the program has
    sched = Scheduler(
        GridArchive(
            solution_dim=n,
            dims=(10, 10),
            ranges=[(-2, 2)] * 2,
            learning_rate=0.1,
            threshold_min=-100.0,
        ),
        (
            EvolutionStrategyEmitter(
                SepCMAES(popsize=6, sigma0=0.3), num_emitters=3, batching=batching
            ),
        ),
    )
    state = sched.init(jax.random.key(0), jnp.zeros(n))
    step = jax.jit(lambda k, s: sched.step(k, s, evaluate), donate_argnums=(1,))
    seeds = jax.vmap(lambda k: sched.init(k, jnp.zeros(n)))(jax.random.split(jax.random.key(0), 2))
    one_seed = jax.tree_util.tree_map(lambda a: a[:1], seeds)
    texts = [
        step.lower(jax.random.key(1), state).compile().as_text(),
        compiled_run.lower(sched, jax.random.key(1), state, evaluate, 3).compile().as_text(),
        # cmamae.run's chunk: every seed's archives in one (seeds, cells, n) buffer.
        run_chunk.lower(sched, jax.random.split(jax.random.key(1), 2), seeds, evaluate, 3)
        .compile()
        .as_text(),
        # one seed runs without the seed vmap
        run_chunk.lower(sched, jax.random.split(jax.random.key(1), 1), one_seed, evaluate, 3)
        .compile()
        .as_text(),
    ]
    for text in texts:
        for line in text.splitlines():
            m = re.search(r"= f32\[([12],)?100,257\]\{[\d,]*\} ([\w\-]+)\(", line)
            if m is None:
                continue
            # a bitcast reinterprets a buffer (the one-seed chunk drops the seed axis): no copy
            allowed = ("parameter", "get-tuple-element", "scatter", "fusion", "bitcast")
            assert m.group(2) in allowed, line
            if m.group(2) == "fusion":
                assert "scatter" in line.split("=")[0], line

    pointers = lambda s: (
        s.archive.solutions.unsafe_buffer_pointer(),
        s.result.solutions.unsafe_buffer_pointer(),
    )
    before = pointers(state)
    state = step(jax.random.key(1), state)
    state, _ = compiled_run(sched, jax.random.key(2), state, evaluate, 3)
    assert pointers(state) == before
    assert int(state.archive.occupied.sum()) > 0
