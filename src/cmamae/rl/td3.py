"""TD3 (Fujimoto, van Hoof & Meger 2018) in JAX over plain pytrees and optax, for QD-RL.

A :class:`TD3` object holds static settings; :class:`TD3State` holds the twin critic, the
greedy actor, their target copies, their Adam states and the step count. Functions:

* :meth:`TD3.train` — ``steps`` critic updates on minibatches of a replay buffer, with the
  delayed greedy-actor update and soft target updates every ``policy_delay`` steps
  (Algorithm 1 of the TD3 paper, as in the PGA-ME and DQD-RL implementations);
* :meth:`TD3.improve` — PGA-ME's policy-gradient variation: Adam steps of a given policy
  vector on ``−Q₁(s, π_θ(s))`` over replay states (Nilsson & Cully 2021, Algorithm 3);
* :meth:`TD3.objective_gradient` — ``∇_θ mean_s Q₁(s, π_θ(s))`` of a policy vector, the
  objective gradient of CMA-MEGA (TD3, ES) (Tjanaka et al. 2022, section 4).

The actor is the task's :class:`~cmamae.tasks.policies.MLPPolicy`, so policy vectors of the
archive and the greedy actor share one layout. Defaults are the PGA-ME paper's TD3 settings
(docs/algorithms.md): critic (256, 256) ReLU, Adam 3e-4 for critic and greedy actor,
γ = 0.99, τ = 0.005, target policy noise 0.2 clipped at 0.5, policy delay 2, minibatch 256.
All functions are pure and jit-able, and ``vmap`` over seeds works on every state.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import optax

from cmamae import _random, validate
from cmamae._pytree import pytree_dataclass
from cmamae.rl.replay_buffer import Batch, BufferState, ReplayBuffer
from cmamae.tasks.policies import MLPPolicy


@pytree_dataclass
class TD3State:
    """Everything TD3 learns.

    Attributes:
        critic, critic_target: twin critics, a pair of MLP parameter pytrees each.
        critic_opt: Adam state of ``critic``.
        actor, actor_target: the greedy actor's parameter pytree (the task's policy layout).
        actor_opt: Adam state of ``actor``.
        steps: int32 critic updates done.
    """

    critic: tuple
    critic_target: tuple
    critic_opt: optax.OptState
    actor: list
    actor_target: list
    actor_opt: optax.OptState
    steps: jax.Array


@dataclasses.dataclass(frozen=True, kw_only=True)
class TD3Settings:
    """TD3's learning settings, keyword-only, with the PGA-ME paper's values (Nilsson & Cully
    2021, table of hyperparameters; dqd-rl ``td3.gin``). :class:`TD3` extends them with the
    networks, and the TD3-based recipes of :mod:`cmamae.algorithms` take them under the same
    names. :class:`TD3` checks them.

    Attributes:
        critic_lr, actor_lr: Adam learning rates of the critics and the greedy actor (3e-4).
        discount: γ in [0, 1] (0.99).
        tau: soft target update rate τ in (0, 1] (0.005).
        policy_noise, noise_clip: target policy smoothing, std and clip >= 0, in action units
            (0.2, 0.5).
        policy_delay: critic updates per actor and target update (2).
    """

    critic_lr: float = 3e-4
    actor_lr: float = 3e-4
    discount: float = 0.99
    tau: float = 0.005
    policy_noise: float = 0.2
    noise_clip: float = 0.5
    policy_delay: int = 2


@dataclasses.dataclass(frozen=True)
class TD3(TD3Settings):
    """Static TD3 settings: the networks, the minibatch and the learning settings of
    :class:`TD3Settings` (keyword-only).

    Attributes:
        policy: the actor architecture (the task's ``policy``); its output must lie in
            ``[-max_action, max_action]`` (the paper's tanh output does for 1).
        critic_hidden: hidden widths of each critic, ReLU ((256, 256)).
        batch_size: transitions per critic update (256).
        max_action: actions are clipped to ``±max_action`` (1).
    """

    policy: MLPPolicy
    critic_hidden: tuple[int, ...] = (256, 256)
    batch_size: int = 256
    max_action: float = 1.0

    def __post_init__(self):
        if not isinstance(self.policy, MLPPolicy):
            raise ValueError(f"policy must be an MLPPolicy, got {type(self.policy).__name__}")
        validate.positive("critic_lr", self.critic_lr)
        validate.positive("actor_lr", self.actor_lr)
        validate.interval("discount", self.discount, 0, 1)
        validate.interval("tau", self.tau, 0, 1, open_low=True)
        validate.non_negative("policy_noise", self.policy_noise)
        validate.non_negative("noise_clip", self.noise_clip)
        validate.integer("policy_delay", self.policy_delay)
        object.__setattr__(self, "critic_hidden", tuple(self.critic_hidden))
        for i, h in enumerate(self.critic_hidden):
            validate.integer(f"critic_hidden[{i}]", h)
        validate.integer("batch_size", self.batch_size)
        validate.positive("max_action", self.max_action)

    # ------------------------------------------------------------------ networks
    @property
    def critic_net(self) -> MLPPolicy:
        """One critic: ``[obs, action] -> hidden (ReLU) ... -> Q`` (linear output)."""
        sizes = (self.policy.obs_dim + self.policy.act_dim, *self.critic_hidden, 1)
        return MLPPolicy(sizes, activation="relu", output_activation="identity")

    def replay_buffer(self, capacity: int) -> ReplayBuffer:
        """A buffer of ``capacity`` transitions shaped for this policy."""
        return ReplayBuffer(capacity, self.policy.obs_dim, self.policy.act_dim)

    def _init_critic(self, key):
        # PyTorch's nn.Linear default (the reference implementations' critic): weights and
        # biases U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
        params = []
        for k, (fan_in, fan_out) in zip(
            jax.random.split(key, len(self.critic_net.layer_shapes)),
            self.critic_net.layer_shapes,
            strict=True,
        ):
            kw, kb = jax.random.split(k)
            bound = 1.0 / math.sqrt(fan_in)
            params.append(
                {
                    "b": jax.random.uniform(kb, (fan_out,), jnp.float32, -bound, bound),
                    "w": _random.uniform(kw, (fan_in, fan_out), jnp.float32, -bound, bound),
                }
            )
        return params

    def q_values(self, critic, obs, actions):
        """``(Q₁, Q₂)``, each ``(...,)``, of ``obs (..., obs_dim)``, ``actions (..., act_dim)``."""
        sa = jnp.concatenate([obs, actions], axis=-1)
        return tuple(self.critic_net.apply(p, sa)[..., 0] for p in critic)

    def _act(self, actor, obs):
        return self.policy.apply(actor, obs)

    @property
    def _critic_opt(self):
        return optax.adam(self.critic_lr)

    @property
    def _actor_opt(self):
        return optax.adam(self.actor_lr)

    def init(self, key: jax.Array) -> TD3State:
        """Fresh critics (PyTorch's default init) and a Xavier-initialized greedy actor."""
        k1, k2, ka = jax.random.split(key, 3)
        critic = (self._init_critic(k1), self._init_critic(k2))
        actor = self.policy.init_params(ka)
        copy = lambda tree: jax.tree_util.tree_map(jnp.array, tree)
        return TD3State(
            critic=critic,
            critic_target=copy(critic),
            critic_opt=self._critic_opt.init(critic),
            actor=actor,
            actor_target=copy(actor),
            actor_opt=self._actor_opt.init(actor),
            steps=jnp.zeros((), jnp.int32),
        )

    def greedy_actor(self, state: TD3State) -> jax.Array:
        """The greedy actor as a flat policy vector ``(num_params,)``."""
        return self.policy.flatten(state.actor)

    # ------------------------------------------------------------------ training
    def critic_loss(self, critic, state: TD3State, batch: Batch, key: jax.Array) -> jax.Array:
        """``mean (Q₁ − y)² + mean (Q₂ − y)²`` with the clipped double-Q target
        ``y = r + γ (1 − done) min_i Q'_i(s', clip(π'(s') + ε))``, ε = clip(N(0, σ̃²), ±c)
        (TD3 paper, eqs. 10 and 15)."""
        noise = self.policy_noise * _random.normal(key, batch.actions.shape, float)
        noise = jnp.clip(noise, -self.noise_clip, self.noise_clip)
        next_actions = self._act(state.actor_target, batch.next_obs) + noise
        next_actions = jnp.clip(next_actions, -self.max_action, self.max_action)
        t1, t2 = self.q_values(state.critic_target, batch.next_obs, next_actions)
        target = batch.rewards + self.discount * (1.0 - batch.dones) * jnp.minimum(t1, t2)
        target = jax.lax.stop_gradient(target)
        q1, q2 = self.q_values(critic, batch.obs, batch.actions)
        return jnp.mean((q1 - target) ** 2) + jnp.mean((q2 - target) ** 2)

    def _actor_loss(self, actor, critic, obs):
        q1, _ = self.q_values(critic, obs, self._act(actor, obs))
        return -jnp.mean(q1)

    def train_step(
        self, key: jax.Array, state: TD3State, buffer: ReplayBuffer, buffer_state: BufferState
    ) -> tuple[TD3State, jax.Array]:
        """One critic update; every ``policy_delay``-th step also the greedy actor's update
        and the soft target updates θ' ← τ θ + (1 − τ) θ'. Returns the state and the loss
        before the update."""
        k_batch, k_noise = jax.random.split(key)
        batch = buffer.sample(k_batch, buffer_state, self.batch_size)
        loss, grads = jax.value_and_grad(self.critic_loss)(state.critic, state, batch, k_noise)
        updates, critic_opt = self._critic_opt.update(grads, state.critic_opt, state.critic)
        critic = optax.apply_updates(state.critic, updates)
        steps = state.steps + 1
        state = state.replace(critic=critic, critic_opt=critic_opt, steps=steps)

        def delayed(state):
            grads = jax.grad(self._actor_loss)(state.actor, state.critic, batch.obs)
            updates, actor_opt = self._actor_opt.update(grads, state.actor_opt, state.actor)
            actor = optax.apply_updates(state.actor, updates)
            soft = lambda new, old: optax.incremental_update(new, old, self.tau)
            return state.replace(
                actor=actor,
                actor_opt=actor_opt,
                actor_target=soft(actor, state.actor_target),
                critic_target=soft(state.critic, state.critic_target),
            )

        state = jax.lax.cond(steps % self.policy_delay == 0, delayed, lambda s: s, state)
        return state, loss

    def train(
        self,
        key: jax.Array,
        state: TD3State,
        buffer: ReplayBuffer,
        buffer_state: BufferState,
        steps: int,
    ) -> tuple[TD3State, jax.Array]:
        """``steps`` :meth:`train_step` calls in one ``lax.scan``; returns the state and the
        critic losses ``(steps,)``. On an empty buffer the state is returned unchanged."""

        def body(state, k):
            return self.train_step(k, state, buffer, buffer_state)

        trained, losses = jax.lax.scan(body, state, jax.random.split(key, steps))
        empty = buffer_state.size == 0
        state = jax.tree_util.tree_map(lambda a, b: jnp.where(empty, a, b), state, trained)
        return state, jnp.where(empty, jnp.nan, losses)

    # ------------------------------------------------------------------ uses of the critic
    def q_objective(self, state: TD3State, flat: jax.Array, obs: jax.Array) -> jax.Array:
        """``mean_s Q₁(s, π_θ(s))`` of the policy vector ``flat`` over ``obs (N, obs_dim)``."""
        return -self._actor_loss(self.policy.unflatten(flat), state.critic, obs)

    def objective_gradient(
        self,
        key: jax.Array,
        state: TD3State,
        buffer: ReplayBuffer,
        buffer_state: BufferState,
        flat: jax.Array,
        num_states: int,
    ) -> jax.Array:
        """``∇_θ mean_s Q₁(s, π_θ(s))`` ``(num_params,)`` over ``num_states`` replay states.
        With an empty buffer: a standard normal direction (as the DQD-RL code does)."""
        k_batch, k_random = jax.random.split(key)
        obs = buffer.sample(k_batch, buffer_state, num_states).obs
        grad = jax.grad(self.q_objective, argnums=1)(state, flat, obs)
        random = jax.random.normal(k_random, flat.shape, flat.dtype)
        return jnp.where(buffer_state.size > 0, grad, random)

    def improve(
        self,
        key: jax.Array,
        state: TD3State,
        buffer: ReplayBuffer,
        buffer_state: BufferState,
        flat: jax.Array,
        steps: int,
        learning_rate: float,
        batch_size: int,
    ) -> jax.Array:
        """PGA-ME's policy-gradient variation of the policy vector ``flat``: ``steps`` Adam
        steps (learning rate ``learning_rate``, a fresh optimizer) on ``−mean Q₁(s, π_θ(s))``,
        each over ``batch_size`` fresh replay states. Returns the new vector."""
        opt = optax.adam(learning_rate)
        obs = buffer.sample(key, buffer_state, steps * batch_size).obs
        obs = obs.reshape(steps, batch_size, -1)

        def body(carry, o):
            theta, opt_state = carry
            grads = jax.grad(lambda t: -self.q_objective(state, t, o))(theta)
            updates, opt_state = opt.update(grads, opt_state, theta)
            return (optax.apply_updates(theta, updates), opt_state), None

        (theta, _), _ = jax.lax.scan(body, (flat, opt.init(flat)), obs)
        return theta
