"""The PGA-ME emitter: MAP-Elites with genetic and policy-gradient variation (Nilsson & Cully
2021, "Policy Gradient Assisted MAP-Elites", GECCO; Algorithms 1-3).

Each iteration's batch of ``num_solutions`` policies is split in two:

* ``round(proportion_ga · num_solutions)`` by the iso+line operator (Vassiliades & Mouret
  2018) on uniformly sampled elites: :class:`~cmamae.emitters.gaussian.IsoLineEmitter`;
* the rest by policy-gradient variation: uniformly sampled elites, each improved by
  ``pg_steps`` Adam steps (learning rate ``pg_lr``) on ``−Q₁(s, π_θ(s))`` over replay states
  (:meth:`cmamae.rl.TD3.improve`), plus the greedy TD3 actor itself (``greedy=True``),
  evaluated and inserted like any offspring (the paper's Algorithm 1, line "add actor").
  While the archive is empty this half is ``x0 + first_iteration_sigma · N(0, I)`` (dqd-rl's
  PGAEmitter's ``sigma0``).

``tell`` stores the valid transitions of every rollout of the iteration in the replay buffer
and trains the critics (and, every ``policy_delay`` steps, the greedy actor) for
``critic_steps`` TD3 steps. Defaults are the paper's (docs/algorithms.md).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from cmamae import _random, validate
from cmamae._pytree import pytree_dataclass
from cmamae.emitters.base import Emitter, EvaluatedBatch, sample_parents
from cmamae.emitters.gaussian import IsoLineEmitter, MutationEmitterState
from cmamae.rl import TD3, BufferState, TD3State


@pytree_dataclass
class PGAMEState:
    """The iso+line operator's state, the TD3 learner and its replay buffer.

    Attributes:
        ga: the iso+line operator's state (:class:`cmamae.emitters.MutationEmitterState`).
        td3: the TD3 learner (critics, greedy actor, optimizer states).
        buffer: the replay buffer's contents.
    """

    ga: MutationEmitterState
    td3: TD3State
    buffer: BufferState


@dataclasses.dataclass(frozen=True, kw_only=True)
class PGAMESettings:
    """PGA-ME's variation settings, keyword-only, with the paper's values (Nilsson & Cully
    2021; dqd-rl ``pga_me.gin``). :class:`PGAMEEmitter` extends them with the TD3 learner, the
    batch, the replay capacity and the noise, and the "pga-me" recipe of
    :mod:`cmamae.algorithms` takes them under the same names. :class:`PGAMEEmitter` checks
    them.

    Attributes:
        proportion_ga: share of the batch made by iso+line, in [0, 1] (0.5).
        iso_sigma, line_sigma: σ₁ = 0.005 and σ₂ = 0.05 of the iso+line operator.
        pg_steps: Adam steps per policy-gradient offspring (10).
        pg_lr: their learning rate (1e-3).
        pg_batch_size: replay states per policy-gradient step (256).
        critic_steps: TD3 training steps per iteration (300).
        greedy: evaluate and insert the greedy actor every iteration (True).
        first_iteration_sigma: σ of the policy-gradient half while the archive is empty, the
            first iteration: ``x0 + first_iteration_sigma · N(0, I)`` (0.02).
    """

    proportion_ga: float = 0.5
    iso_sigma: float = 0.005
    line_sigma: float = 0.05
    pg_steps: int = 10
    pg_lr: float = 1e-3
    pg_batch_size: int = 256
    critic_steps: int = 300
    greedy: bool = True
    first_iteration_sigma: float = 0.02


@dataclasses.dataclass(frozen=True)
class PGAMEEmitter(Emitter, PGAMESettings):
    """PGA-ME's variation (module docstring): the settings of :class:`PGAMESettings`
    (keyword-only) and

    Attributes:
        td3: the TD3 learner (:class:`cmamae.rl.TD3`, its ``policy`` the task's policy).
        num_solutions: batch per iteration (100).
        buffer_size: replay capacity in transitions (1,000,000).
        noise: "table" or "normal", the iso+line operator's noise (:mod:`cmamae.es.noise`).
    """

    td3: TD3
    num_solutions: int = 100
    buffer_size: int = 1_000_000
    noise: str = "table"

    def __post_init__(self):
        if not isinstance(self.td3, TD3):
            raise ValueError(f"td3 must be a cmamae.rl.TD3, got {type(self.td3).__name__}")
        validate.integer("num_solutions", self.num_solutions, 2)
        validate.interval("proportion_ga", self.proportion_ga, 0, 1)
        for name in ("pg_steps", "pg_batch_size", "critic_steps", "buffer_size"):
            validate.integer(name, getattr(self, name))
        validate.positive("pg_lr", self.pg_lr)
        validate.positive("first_iteration_sigma", self.first_iteration_sigma)
        if self.num_pg < int(self.greedy):
            raise ValueError(
                f"proportion_ga={self.proportion_ga} leaves no room in a batch of "
                f"{self.num_solutions} for the greedy actor; lower it or set greedy=False"
            )
        _ = self.ga_emitter  # validates iso_sigma, line_sigma and noise

    @property
    def batch_size(self) -> int:
        return self.num_solutions

    @property
    def needs_transitions(self) -> bool:
        return True

    @property
    def num_ga(self) -> int:
        """Iso+line offspring per iteration."""
        return int(round(self.proportion_ga * self.num_solutions))

    @property
    def num_pg(self) -> int:
        """Policy-gradient offspring per iteration (the greedy actor included)."""
        return self.num_solutions - self.num_ga

    @property
    def ga_emitter(self) -> IsoLineEmitter | None:
        """The iso+line operator making the genetic half (None when that half is empty)."""
        if self.num_ga == 0:
            return None
        return IsoLineEmitter(
            iso_sigma=self.iso_sigma,
            line_sigma=self.line_sigma,
            num_solutions=self.num_ga,
            noise=self.noise,
        )

    @property
    def buffer(self):
        """The :class:`cmamae.rl.ReplayBuffer` of ``buffer_size`` transitions (static)."""
        return self.td3.replay_buffer(self.buffer_size)

    def init(self, key, x0) -> PGAMEState:
        x0 = validate.vector("x0", x0)
        if x0.shape[0] != self.td3.policy.num_params:
            raise ValueError(
                f"x0 must have shape ({self.td3.policy.num_params},) for the policy "
                f"{self.td3.policy.layer_sizes}, got {x0.shape}"
            )
        k_ga, k_td3 = jax.random.split(key)
        ga = IsoLineEmitter(noise=self.noise).init(k_ga, x0)
        return PGAMEState(ga=ga, td3=self.td3.init(k_td3), buffer=self.buffer.init())

    def ask(self, key, state, archive, archive_state):
        """``(num_solutions, n)``: the iso+line offspring, then (greedy actor first) the
        policy-gradient offspring."""
        k_ga, k_pg = jax.random.split(key)
        parts = []
        if self.ga_emitter is not None:
            x, _ = self.ga_emitter.ask(k_ga, state.ga, archive, archive_state)
            parts.append(x)
        if self.num_pg:
            empty = ~jnp.any(archive_state.occupied)
            parts.append(
                jax.lax.cond(
                    empty,
                    lambda: self._gaussian(k_pg, state),
                    lambda: self._policy_gradient(k_pg, state, archive, archive_state),
                )
            )
        return jnp.concatenate(parts).astype(state.ga.x0.dtype), state

    def _gaussian(self, key, state):
        x0 = state.ga.x0
        noise = _random.normal(key, (self.num_pg, x0.shape[0]), x0.dtype)
        return x0 + self.first_iteration_sigma * noise

    def _policy_gradient(self, key, state, archive, archive_state):
        k_parents, k_pg = jax.random.split(key)
        num = self.num_pg - int(self.greedy)
        parents = sample_parents(k_parents, archive, archive_state, state.ga.x0, num)

        def improve(k, theta):
            return self.td3.improve(
                k,
                state.td3,
                self.buffer,
                state.buffer,
                theta,
                self.pg_steps,
                self.pg_lr,
                self.pg_batch_size,
            )

        offspring = jax.vmap(improve)(jax.random.split(k_pg, num), parents)
        if self.greedy:
            greedy = self.td3.greedy_actor(state.td3).astype(offspring.dtype)
            offspring = jnp.concatenate([greedy[None], offspring])
        return offspring

    def tell(self, key, state, archive, archive_state, batch: EvaluatedBatch):
        """Store the batch's valid transitions (the whole iteration's) and train TD3 for
        ``critic_steps`` steps."""
        transitions = batch.transitions
        if transitions is None:
            raise ValueError(
                "transitions must be given: PGA-ME trains its critic on the rollouts' "
                "transitions (evaluate with task.evaluate_transitions)"
            )
        buffer = self.buffer.insert(state.buffer, transitions)
        td3, _ = self.td3.train(key, state.td3, self.buffer, buffer, self.critic_steps)
        return state.replace(td3=td3, buffer=buffer)
