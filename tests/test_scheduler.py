"""Scheduler: batch insertion into both archives, emitter slices, host ask/tell, compiled run."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import cmamae
from cmamae import AskTell, Scheduler, algorithms, compiled_scan
from cmamae.archives import GridArchive
from cmamae.compiled_loop import run_chunk
from cmamae.emitters import EvolutionStrategyEmitter, GaussianEmitter
from cmamae.es import SepCMAES
from cmamae.tasks.base import Task

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
    state, metrics = compiled_scan(sched, jax.random.key(1), state, evaluate, 30)
    assert int(state.evaluations) == 30 * sched.batch_size
    np.testing.assert_array_equal(
        np.asarray(metrics["evaluations"]), np.arange(1, 31) * sched.batch_size
    )
    qd = np.asarray(metrics["qd_score"])
    assert qd[-1] > qd[0] > 0
    assert np.all(np.diff(qd) >= 0)  # result archive only improves


def test_host_ask_tell_checks_its_calls():
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


def _exact_evaluate(x, key):
    """Sums of two terms and clips only: XLA cannot reorder them, so the evaluation gives the
    same bits inside the compiled loop's fused program and in a jit of its own. (A sphere
    task's measures sum 5 terms per row; the loop's program vectorizes that sum, a jit of
    ``task.evaluate`` alone adds them in order: 1-ulp differences in the measures.)"""
    noise = jax.random.normal(key, x[:, 0].shape, x.dtype)  # uses the evaluation key
    objectives = -jnp.abs(x[:, 0]) - jnp.abs(x[:, 1]) + 0.01 * noise
    return objectives, jnp.clip(x[:, 2:4], -1.0, 1.0)


def _initial_solution(key):
    return 0.1 * jax.random.normal(key, (N,))


EXACT = Task(
    name="exact-test",
    solution_dim=N,
    measure_names=("a", "b"),
    measure_ranges=((-1.0, 1.0), (-1.0, 1.0)),
    archive_dims=(10, 10),
    min_f=-100.0,
    max_f=0.0,
    evaluate=_exact_evaluate,
    initial_solution=_initial_solution,
)


@pytest.mark.parametrize("restart_rule", ["basic", 5])
def test_ask_tell_on_a_jax_task_equals_cmamae_run_bit_for_bit(restart_rule):
    """AskTell, fed the task's own evaluate with its evaluation key, reproduces the compiled
    loop (one seed, the same seed and budget): every leaf of the final state, archives,
    result archive and emitter states, bit for bit; so does the runner's host mode
    (tests/experiment/test_advance.py)."""
    algo = algorithms.get(
        "sep-cma-mae", EXACT, num_emitters=3, popsize=8, restart_rule=restart_rule
    )
    iterations, seed = 20, 7
    result = cmamae.run(
        EXACT, algo, evals=iterations * algo.scheduler.batch_size, key=jax.random.key(seed)
    )
    loop = AskTell(algo.scheduler, EXACT.initial_solution, seed=seed)
    evaluate = jax.jit(EXACT.evaluate)
    for _ in range(iterations):
        x = loop.ask()
        f, m = evaluate(jnp.asarray(x), loop.eval_key)
        loop.tell(np.asarray(f), np.asarray(m))
    compiled = jax.tree_util.tree_map(lambda a: a[0], result.state)
    flat, _ = jax.tree_util.tree_flatten_with_path(compiled)
    on_host = jax.tree_util.tree_leaves(loop.state)
    assert len(flat) == len(on_host)
    for (path, a), b in zip(flat, on_host):
        if jnp.issubdtype(a.dtype, jax.dtypes.prng_key):
            a, b = jax.random.key_data(a), jax.random.key_data(b)
        np.testing.assert_array_equal(
            np.asarray(b), np.asarray(a), err_msg=jax.tree_util.keystr(path)
        )
    assert int(loop.state.iteration) == iterations
    assert 0 < loop.stats()["num_elites"] == result.final()["num_elites"][0]
    if restart_rule == 5:  # every 5th tell: 4 restarts per emitter
        np.testing.assert_array_equal(loop.state.emitters[0].restarts, 4)


def test_ask_tell_x0_array_or_function():
    """An array x0 and a function returning it start the same run."""
    sched = _scheduler(0.1)
    x0 = np.linspace(-1, 1, N).astype(np.float32)
    a = AskTell(sched, x0, seed=3)
    b = AskTell(sched, lambda key: jnp.asarray(x0), seed=3)
    np.testing.assert_array_equal(a.ask(), b.ask())


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
        compiled_scan.lower(sched, jax.random.key(1), state, evaluate, 3).compile().as_text(),
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
    state, _ = compiled_scan(sched, jax.random.key(2), state, evaluate, 3)
    assert pointers(state) == before
    assert int(state.archive.occupied.sum()) > 0
