"""CMA-MEGA (TD3, ES) (Tjanaka et al. 2022, "Approximating Gradients for Differentiable Quality
Diversity in Reinforcement Learning", section 4): the gradient-arborescence emitter
(:mod:`cmamae.emitters.gradient_arborescence`) with

* the objective gradient from a TD3 critic, ``∇_θ mean_s Q₁(s, π_θ(s))`` over
  ``gradient_states`` replay states (:meth:`cmamae.rl.TD3.objective_gradient`);
* the measure gradients from OpenAI-ES (:class:`~cmamae.emitters.gradients.ESGradient`;
  its objective estimate is discarded, dqd-rl's ``gradient_source="td3_sample"``);
* the greedy TD3 actor evaluated and inserted every iteration (dqd-rl ``greedy_eval`` and
  ``greedy_insert``): one extra pre-phase row after the ES samples. The actor only changes
  when the critic trains, at the end of an iteration, so evaluating it in the pre-phase
  rather than beside the branches (as dqd-rl does) evaluates the same policy.

Every rollout's valid transitions go to the replay buffer; after the main batch TD3 trains
for ``critic_steps`` steps. Per iteration and instance: 1 (θ) + ``samples`` + 1 (greedy, per
group) + λ evaluations.

Sign: dqd-rl's ``TD3.jacobian_batch`` returns the gradient of the actor loss −Q (a descent
direction); the paper describes ∇f, the ascent direction, which we return. CMA-MEGA samples
the coefficient of ∇f symmetrically around a mean it adapts, so either sign is learnable.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from cmamae import validate
from cmamae._pytree import pytree_dataclass
from cmamae.emitters.base import EvaluatedBatch
from cmamae.emitters.gradient_arborescence import GradientArborescenceEmitter
from cmamae.emitters.gradients import ESGradient, GradientSource, NoiseState
from cmamae.rl import TD3, BufferState, TD3State


@pytree_dataclass
class TD3SourceState:
    """The ES noise generator, the TD3 learner and its replay buffer."""

    es: NoiseState
    td3: TD3State
    buffer: BufferState


@dataclasses.dataclass(frozen=True)
class TD3ESGradient(GradientSource):
    """∇f from a TD3 critic, ∇m_j from OpenAI-ES (module docstring).

    Attributes:
        td3: the TD3 learner (its ``policy`` is the task's).
        es: the ES estimator of the measure gradients (100 mirrored samples, σ = 0.02,
            centered ranks in the paper).
        gradient_states: replay states averaged in ∇f (dqd-rl ``pg_batch_size`` 65,536).
        critic_steps: TD3 training steps per iteration (600 in dqd-rl: twice PGA-ME's 300,
            for twice the evaluations per iteration).
        buffer_size: replay capacity in transitions (1,000,000).
    """

    td3: TD3
    es: ESGradient = ESGradient()
    gradient_states: int = 65_536
    critic_steps: int = 600
    buffer_size: int = 1_000_000

    def __post_init__(self):
        if not isinstance(self.td3, TD3):
            raise ValueError(f"td3 must be a cmamae.rl.TD3, got {type(self.td3).__name__}")
        if not isinstance(self.es, ESGradient):
            raise ValueError(f"es must be an ESGradient, got {type(self.es).__name__}")
        for name in ("gradient_states", "critic_steps", "buffer_size"):
            validate.integer(name, getattr(self, name))

    @property
    def num_samples(self) -> int:
        return self.es.num_samples

    @property
    def needs_transitions(self) -> bool:
        return True

    @property
    def buffer(self):
        """The :class:`cmamae.rl.ReplayBuffer` of ``buffer_size`` transitions (static)."""
        return self.td3.replay_buffer(self.buffer_size)

    def init(self, key, x0) -> TD3SourceState:
        k_es, k_td3 = jax.random.split(key)
        return TD3SourceState(
            es=self.es.init(k_es, x0), td3=self.td3.init(k_td3), buffer=self.buffer.init()
        )

    def ask(self, key, state, thetas):
        samples, es = self.es.ask(key, state.es, thetas)
        return samples, state.replace(es=es)

    def jacobian(self, key, state, thetas, batch: EvaluatedBatch):
        """ES Jacobians with row 0 replaced by the critic's ∇f at each θ (computed before
        the pre-phase's transitions join the buffer)."""
        k_es, k_td3 = jax.random.split(key)
        jac, es = self.es.jacobian(k_es, state.es, thetas, batch)

        def grad(k, theta):
            return self.td3.objective_gradient(
                k, state.td3, self.buffer, state.buffer, theta, self.gradient_states
            )

        keys = jax.random.split(k_td3, thetas.shape[0])
        jac = jac.at[:, 0].set(jax.vmap(grad)(keys, thetas).astype(jac.dtype))
        return jac, state.replace(es=es, buffer=self._store(state.buffer, batch.transitions))

    def observe(self, key, state, batch: EvaluatedBatch):
        """Store the main batch's transitions and train TD3 for ``critic_steps`` steps."""
        buffer = self._store(state.buffer, batch.transitions)
        td3, _ = self.td3.train(key, state.td3, self.buffer, buffer, self.critic_steps)
        return state.replace(td3=td3, buffer=buffer)

    def _store(self, buffer_state, transitions):
        if transitions is None:
            raise ValueError(
                "transitions must be given: CMA-MEGA (TD3, ES) trains its critic on the "
                "rollouts' transitions (evaluate with task.evaluate_transitions)"
            )
        return self.buffer.insert(buffer_state, transitions)


@dataclasses.dataclass(frozen=True)
class TD3ArborescenceEmitter(GradientArborescenceEmitter):
    """The arborescence emitter with a :class:`TD3ESGradient` source and, when ``greedy``,
    the greedy TD3 actor as one more pre-phase row (evaluated, inserted, its transitions
    stored)."""

    greedy: bool = True

    def __post_init__(self):
        super().__post_init__()
        if not isinstance(self.source, TD3ESGradient):
            raise ValueError(f"source must be a TD3ESGradient, got {self.source!r}")

    @property
    def _base_grad_batch(self) -> int:
        return self.num_emitters * (1 + self.source.num_samples)

    @property
    def grad_batch_size(self) -> int:
        return self._base_grad_batch + int(self.greedy)

    def ask_grad(self, key, state, archive=None, archive_state=None):
        """θ rows, the ES samples, then the greedy actor."""
        solutions, state = super().ask_grad(key, state, archive, archive_state)
        if self.greedy:
            greedy = self.source.td3.greedy_actor(state.source.td3).astype(solutions.dtype)
            solutions = jnp.concatenate([solutions, greedy[None]])
        return solutions, state

    def tell_grad(self, key, state, archive, archive_state, batch: EvaluatedBatch):
        """The arborescence's pre-phase on the θ and sample rows; the greedy actor's row is
        inserted and its transitions stored."""
        n = self._base_grad_batch
        state, insert = super().tell_grad(
            key, state, archive, archive_state, batch.rows(slice(None, n))
        )
        insert = insert[:n]
        if self.greedy:
            tail = batch.rows(slice(n, None)).transitions
            source = state.source.replace(buffer=self.source._store(state.source.buffer, tail))
            state = state.replace(source=source)
            insert = jnp.concatenate([insert, jnp.ones((1,), bool)])
        return state, insert
