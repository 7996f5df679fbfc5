"""The scheduler's gradient pre-phase, masked insertion and transitions plumbing."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import cmamae
from cmamae import AskTell, Scheduler
from cmamae._pytree import pytree_dataclass
from cmamae.algorithms import Algorithm
from cmamae.archives import GridArchive
from cmamae.emitters import GaussianEmitter, PrePhaseEmitter
from cmamae.tasks import Task, Transitions, bind

N, PRE, MAIN, STEPS = 4, 3, 2, 5


@pytree_dataclass
class ProbeState:
    x: jax.Array  # (N,) the point the probe explores around
    pre_seen: jax.Array  # () sum of the pre-phase objectives it was told
    transition_rows: jax.Array  # () rows of the last transitions it was told (-1: none)


@dataclasses.dataclass(frozen=True)
class Probe(PrePhaseEmitter):
    """Pre-phase of PRE points (the first inserted), then MAIN points from the centre."""

    wants_transitions: bool = False

    @property
    def batch_size(self):
        return MAIN

    @property
    def grad_batch_size(self):
        return PRE

    @property
    def needs_transitions(self):
        return self.wants_transitions

    def init(self, key, x0):
        return ProbeState(x=x0, pre_seen=jnp.zeros(()), transition_rows=-jnp.ones((), jnp.int32))

    def ask_grad(self, key, state, archive, archive_state):
        return state.x + 0.1 * jax.random.normal(key, (PRE, N)), state

    def tell_grad(self, key, state, archive, archive_state, batch):
        insert = jnp.arange(PRE) == 0
        return state.replace(pre_seen=state.pre_seen + jnp.sum(batch.objectives)), insert

    def ask(self, key, state, archive, archive_state):
        return state.x + 0.5 * jax.random.normal(key, (MAIN, N)), state

    def tell(self, key, state, archive, archive_state, batch):
        if batch.transitions is not None:
            rows = batch.transitions.rewards.shape[0]
            state = state.replace(transition_rows=jnp.int32(rows))
        return state


def evaluate(x, key):
    del key
    return -jnp.sum(x**2, axis=1), x[:, :2]


def evaluate_transitions(x, key):
    f, m = evaluate(x, key)
    b = x.shape[0]
    zeros = jnp.zeros((b, STEPS, 1))
    tr = Transitions(
        obs=zeros,
        actions=zeros,
        rewards=jnp.zeros((b, STEPS)),
        next_obs=zeros,
        dones=jnp.zeros((b, STEPS)),
        valid=jnp.ones((b, STEPS), bool),
    )
    return f, m, tr


def initial_solution(key):
    return jnp.full((N,), 0.3)


def _task(with_transitions):
    return Task(
        name="probe-task",
        solution_dim=N,
        measure_names=("m0", "m1"),
        measure_ranges=((-1, 1), (-1, 1)),
        archive_dims=(10, 10),
        min_f=-10.0,
        max_f=None,
        evaluate=bind(evaluate),
        initial_solution=bind(initial_solution),
        evaluate_transitions=bind(evaluate_transitions) if with_transitions else None,
    )


def _archive(alpha=0.5):
    return GridArchive(
        solution_dim=N,
        dims=(10, 10),
        ranges=[(-1, 1)] * 2,
        learning_rate=alpha,
        threshold_min=-10.0,
        qd_score_offset=-10.0,
    )


def _algo(emitters):
    return Algorithm(name="probe", settings=(), scheduler=Scheduler(_archive(), emitters))


def test_masked_add_equals_adding_the_kept_rows():
    archive = _archive(0.3)
    x = jax.random.normal(jax.random.key(0), (8, N)) * 0.5
    f, m = evaluate(x, None)
    f = f.at[5].set(jnp.nan)  # invalid and masked out: not counted
    f = f.at[2].set(jnp.nan)  # invalid and kept: counted
    mask = jnp.array([True, False, True, True, False, False, True, True])
    state, info = archive.add(archive.init(), x, f, m, mask)
    expected, expected_info = archive.add(archive.init(), x[mask], f[mask], m[mask])
    # provenance rows count the whole batch, masked rows included
    kept_rows = np.flatnonzero(np.asarray(mask))
    occ = np.asarray(state.occupied)
    np.testing.assert_array_equal(
        np.asarray(state.eval_row)[occ], kept_rows[np.asarray(expected.eval_row)[occ]]
    )
    state_, expected_ = (s.replace(eval_row=None) for s in (state, expected))
    for a, b in zip(jax.tree_util.tree_leaves(state_), jax.tree_util.tree_leaves(expected_)):
        np.testing.assert_array_equal(a, b)
    assert int(state.num_invalid) == 1
    np.testing.assert_array_equal(info.status[mask], expected_info.status)
    np.testing.assert_array_equal(info.value[mask], expected_info.value)
    np.testing.assert_array_equal(info.index[~mask], -1)
    np.testing.assert_array_equal(info.status[~mask], 0)
    with pytest.raises(ValueError, match="mask must be a bool array of shape"):
        archive.add(archive.init(), x, f, m, jnp.ones(3, bool))


def test_pre_phase_counts_in_budget_and_inserts_chosen_rows():
    algo = _algo((Probe(), GaussianEmitter(sigma=0.2, num_solutions=3)))
    sched = algo.scheduler
    assert (sched.batch_size, sched.grad_batch_size) == (MAIN + 3, PRE)
    assert sched.evaluations_per_iteration == MAIN + 3 + PRE
    evals = 4 * sched.evaluations_per_iteration + 3  # the remainder is not spent
    result = cmamae.run(_task(False), algo, evals=evals, seeds=2)
    np.testing.assert_array_equal(
        result.metrics["evaluations"][:, -1], 4 * sched.evaluations_per_iteration
    )
    state = result.state
    np.testing.assert_array_equal(state.iteration, 4)
    assert np.all(np.asarray(state.emitters[0].pre_seen) < 0)  # told its objectives

    # One step by hand: the pre-phase's first row is in both archives, the others are not.
    one = sched.init(jax.random.key(3), jnp.full((N,), 0.3))
    x, one_ = sched.ask_grad(jax.random.key(4), one)
    f, m = evaluate(x, None)
    after, info = sched.tell_grad(jax.random.key(5), one_, x, f, m)
    np.testing.assert_array_equal(info.status, [2, 0, 0])
    assert int(after.evaluations) == PRE and int(after.iteration) == 0
    for archive_state in (after.archive, after.result):
        assert int(jnp.sum(archive_state.occupied)) == 1
        assert int(archive_state.occupied[info.index[0]]) == 1


def test_transitions_reach_only_the_emitters_that_ask_and_cover_the_whole_batch():
    emitters = (Probe(wants_transitions=True), Probe())
    algo = _algo(emitters)
    assert algo.scheduler.needs_transitions
    result = cmamae.run(_task(True), algo, evals=2 * algo.scheduler.evaluations_per_iteration)
    rows = [int(s.transition_rows[0]) for s in result.state.emitters]
    assert rows == [2 * MAIN, -1]


def test_transitions_required_from_the_task():
    algo = _algo((Probe(wants_transitions=True),))
    with pytest.raises(ValueError, match="needs transitions from the task's rollouts"):
        cmamae.run(_task(False), algo, evals=100)
    sched = algo.scheduler
    state = sched.init(jax.random.key(0), jnp.zeros(N))
    x, state = sched.ask(jax.random.key(1), state)
    with pytest.raises(ValueError, match="transitions are required"):
        sched.tell(jax.random.key(2), state, x, *evaluate(x, None))


def test_host_ask_tell_refuses_pre_phase():
    with pytest.raises(ValueError, match="scheduler: host-side ask/tell"):
        AskTell(_algo((Probe(),)).scheduler, np.zeros(N))


def test_budget_error_names_the_iteration_cost():
    algo = _algo((Probe(),))
    with pytest.raises(ValueError, match=r"evaluations of one iteration 5"):
        cmamae.run(_task(False), algo, evals=4)


def test_a_pre_phase_needs_a_pre_phase_emitter():
    @dataclasses.dataclass(frozen=True)
    class Claims(GaussianEmitter):
        @property
        def grad_batch_size(self):
            return 2

    with pytest.raises(ValueError, match="is not a PrePhaseEmitter"):
        Scheduler(_archive(), (Claims(sigma=0.1, num_solutions=2),))
