"""TD3: the critic learns on a fixed replay buffer, the update rules, the critic's uses."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cmamae.rl import TD3
from cmamae.tasks import MLPPolicy, Transitions

POLICY = MLPPolicy((5, 16, 16, 2))  # obs 5, actions 2, tanh output like the task policies
B, T = 8, 64


def _fixed_transitions(key, dones_prob=0.05):
    """(B, T) random transitions; reward = obs_0 − Σ a² (a smooth, learnable function)."""
    k = jax.random.split(key, 4)
    obs = jax.random.normal(k[0], (B, T, 5))
    actions = jax.random.uniform(k[1], (B, T, 2), minval=-1, maxval=1)
    next_obs = obs + 0.1 * jax.random.normal(k[2], (B, T, 5))
    dones = (jax.random.uniform(k[3], (B, T)) < dones_prob).astype(jnp.float32)
    rewards = obs[..., 0] - jnp.sum(actions**2, -1)
    valid = jnp.ones((B, T), bool).at[:, -5:].set(False)  # some steps never happened
    return Transitions(obs, actions, rewards, next_obs, dones, valid)


def _buffer(td3, transitions):
    buffer = td3.replay_buffer(1024)
    return buffer, buffer.insert(buffer.init(), transitions)


PAPER = TD3(POLICY)  # the paper's critic: (256, 256), Adam 3e-4, batch 256
# One compiled training call (200 steps) shared by the tests that train PAPER.
TRAIN = jax.jit(TD3.train, static_argnums=(0, 3, 5))


@pytest.fixture(scope="module")
def trained():
    buffer, state_b = _buffer(PAPER, _fixed_transitions(jax.random.key(0)))
    state, losses = TRAIN(
        PAPER, jax.random.key(1), PAPER.init(jax.random.key(2)), buffer, state_b, 200
    )
    return PAPER, buffer, state_b, state, np.asarray(losses)


def test_critic_loss_falls_on_a_fixed_buffer(trained):
    *_, state, losses = trained
    assert int(state.steps) == 200 and np.all(np.isfinite(losses))
    assert losses[-20:].mean() < 0.25 * losses[:20].mean(), losses[::20]


def test_terminal_targets_are_the_rewards_and_the_critic_fits_them():
    # Every step terminal: y = r whatever γ, so Q₁ and Q₂ regress the reward function.
    transitions = _fixed_transitions(jax.random.key(3), dones_prob=1.0)
    buffer, state_b = _buffer(PAPER, transitions)
    state = PAPER.init(jax.random.key(5))
    for k in jax.random.split(jax.random.key(4), 5):  # 1,000 steps
        state, _ = TRAIN(PAPER, k, state, buffer, state_b, 200)
    n = int(state_b.size)
    q1, q2 = PAPER.q_values(state.critic, state_b.obs[:n], state_b.actions[:n])
    r = np.asarray(state_b.rewards[:n])
    for q in (q1, q2):
        assert np.mean((np.asarray(q) - r) ** 2) < 0.1 * np.var(r)


def test_loss_uses_the_clipped_double_q_target():
    td3 = TD3(POLICY, critic_hidden=(8,), policy_noise=0.0, discount=0.9)
    state = td3.init(jax.random.key(6))
    # Make the target critics differ from the critics (and each other).
    target = jax.tree_util.tree_map(lambda a: 1.3 * a + 0.01, state.critic)
    state = state.replace(critic_target=(target[0], state.critic_target[1]))
    _, state_b = _buffer(td3, _fixed_transitions(jax.random.key(7)))
    batch = td3.replay_buffer(1024).sample(jax.random.key(8), state_b, 32)
    loss = td3.critic_loss(state.critic, state, batch, jax.random.key(9))
    next_a = POLICY.apply(state.actor_target, batch.next_obs)
    t1, t2 = td3.q_values(state.critic_target, batch.next_obs, next_a)
    y = batch.rewards + 0.9 * (1 - batch.dones) * np.minimum(t1, t2)
    q1, q2 = td3.q_values(state.critic, batch.obs, batch.actions)
    expected = np.mean((q1 - y) ** 2) + np.mean((q2 - y) ** 2)
    np.testing.assert_allclose(float(loss), expected, rtol=1e-5)


def test_actor_and_targets_update_every_policy_delay_steps():
    td3 = TD3(POLICY, critic_hidden=(8,), tau=0.25)
    buffer, state_b = _buffer(td3, _fixed_transitions(jax.random.key(10)))
    step = jax.jit(td3.train_step, static_argnums=2)
    s0 = td3.init(jax.random.key(11))
    s1, _ = step(jax.random.key(12), s0, buffer, state_b)
    flat = lambda tree: jax.flatten_util.ravel_pytree(tree)[0]
    # Step 1: only the critics move.
    assert not np.allclose(flat(s1.critic), flat(s0.critic))
    np.testing.assert_array_equal(flat(s1.actor), flat(s0.actor))
    np.testing.assert_array_equal(flat(s1.critic_target), flat(s0.critic_target))
    # Step 2 (policy_delay 2): the actor moves and both targets take τ of the new networks.
    s2, _ = step(jax.random.key(13), s1, buffer, state_b)
    assert not np.allclose(flat(s2.actor), flat(s1.actor))
    np.testing.assert_allclose(
        flat(s2.critic_target), 0.25 * flat(s2.critic) + 0.75 * flat(s1.critic_target), rtol=1e-5
    )
    np.testing.assert_allclose(
        flat(s2.actor_target), 0.25 * flat(s2.actor) + 0.75 * flat(s1.actor_target), rtol=1e-5
    )
    np.testing.assert_array_equal(td3.greedy_actor(s2), POLICY.flatten(s2.actor))


def test_objective_gradient_is_the_q_gradient(trained):
    td3, buffer, state_b, state, _ = trained
    theta = POLICY.init_flat(jax.random.key(17))
    gradient = jax.jit(td3.objective_gradient, static_argnums=(2, 5))  # (eagerly: 3x compiling)
    grad = gradient(jax.random.key(18), state, buffer, state_b, theta, 4096)
    # Directional derivative along the gradient, by central differences on all states.
    obs = state_b.obs[: int(state_b.size)]
    u = grad / jnp.linalg.norm(grad)
    h = 1e-2
    q = jax.jit(td3.q_objective)
    fd = q(state, theta + h * u, obs) - q(state, theta - h * u, obs)
    assert float(fd / (2 * h)) == pytest.approx(float(jnp.linalg.norm(grad)), rel=0.1)
    # An empty buffer gives a random (standard normal) direction instead.
    empty = buffer.init()
    rnd = gradient(jax.random.key(18), state, buffer, empty, theta, 64)
    assert rnd.shape == theta.shape and 0.8 < float(jnp.std(rnd)) < 1.2


def test_policy_gradient_variation_raises_q(trained):
    td3, buffer, state_b, state, _ = trained
    obs = state_b.obs[: int(state_b.size)]
    thetas = jax.vmap(POLICY.init_flat)(jax.random.split(jax.random.key(19), 4))
    improve = jax.vmap(lambda k, t: td3.improve(k, state, buffer, state_b, t, 10, 1e-3, 256))
    new = improve(jax.random.split(jax.random.key(20), 4), thetas)
    before = jax.vmap(lambda t: td3.q_objective(state, t, obs))(thetas)
    after = jax.vmap(lambda t: td3.q_objective(state, t, obs))(new)
    assert np.all(np.asarray(after) > np.asarray(before))


def test_empty_buffer_leaves_the_state_and_bad_settings_raise():
    td3 = TD3(POLICY, critic_hidden=(8,))
    buffer = td3.replay_buffer(16)
    s0 = td3.init(jax.random.key(22))
    s1, losses = jax.jit(td3.train, static_argnums=(2, 4))(
        jax.random.key(23), s0, buffer, buffer.init(), 2
    )
    assert int(s1.steps) == 0 and np.all(np.isnan(np.asarray(losses)))
    with pytest.raises(ValueError, match="policy"):
        TD3("mlp")
    with pytest.raises(ValueError, match="discount"):
        TD3(POLICY, discount=1.5)
    with pytest.raises(ValueError, match="policy_delay"):
        TD3(POLICY, policy_delay=0)
    with pytest.raises(ValueError, match="critic_hidden"):
        TD3(POLICY, critic_hidden=(0,))
