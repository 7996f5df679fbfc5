"""MLP policies: parameter counts, flat <-> pytree, forward pass, initialization."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cmamae.tasks import MLPPolicy


@pytest.mark.parametrize(
    "obs, act, expected",
    # REFERENCE.md: the paper's 2 x 128 tanh policies on the PyBullet QDGym tasks.
    [(28, 8, 21_256), (26, 6, 20_742), (15, 3, 18_947), (22, 6, 20_230)],
)
def test_param_counts_match_the_paper(obs, act, expected):
    policy = MLPPolicy((obs, 128, 128, act))
    assert policy.num_params == expected
    assert policy.init_flat(jax.random.key(0)).shape == (expected,)


def test_pendulum_policy_size():
    assert MLPPolicy((3, 48, 1)).num_params == 3 * 48 + 48 + 48 + 1


def test_flat_round_trip():
    policy = MLPPolicy((5, 7, 3))
    flat = jax.random.normal(jax.random.key(1), (policy.num_params,))
    params = policy.unflatten(flat)
    assert [p["w"].shape for p in params] == [(5, 7), (7, 3)]
    assert [p["b"].shape for p in params] == [(7,), (3,)]
    np.testing.assert_array_equal(policy.flatten(params), flat)
    again = policy.unflatten(policy.flatten(params))
    for p, q in zip(params, again, strict=True):
        np.testing.assert_array_equal(p["w"], q["w"])
        np.testing.assert_array_equal(p["b"], q["b"])


def test_unflatten_rejects_wrong_length():
    policy = MLPPolicy((5, 7, 3))
    with pytest.raises(ValueError, match="flat must have shape"):
        policy.unflatten(jnp.zeros(policy.num_params + 1))


def test_forward_matches_numpy():
    policy = MLPPolicy((4, 6, 2), activation="relu", output_activation="tanh")
    flat = jax.random.normal(jax.random.key(2), (policy.num_params,))
    obs = jax.random.normal(jax.random.key(3), (10, 4))
    params = [
        {k: np.asarray(v, np.float64) for k, v in layer.items()} for layer in policy.unflatten(flat)
    ]
    h = np.maximum(np.asarray(obs, np.float64) @ params[0]["w"] + params[0]["b"], 0.0)
    expected = np.tanh(h @ params[1]["w"] + params[1]["b"])
    np.testing.assert_allclose(policy.apply(flat, obs), expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        policy.apply(policy.unflatten(flat), obs), expected, rtol=1e-5, atol=1e-6
    )


def test_vmap_over_a_batch_of_flat_vectors():
    policy = MLPPolicy((3, 16, 16, 2))
    flats = jax.random.normal(jax.random.key(4), (8, policy.num_params))
    obs = jax.random.normal(jax.random.key(5), (8, 3))
    batched = jax.jit(jax.vmap(policy.apply))(flats, obs)
    assert batched.shape == (8, 2)
    for i in range(8):
        np.testing.assert_allclose(batched[i], policy.apply(flats[i], obs[i]), rtol=1e-5, atol=1e-6)
    assert np.all(np.abs(batched) <= 1.0)  # tanh output


def test_glorot_uniform_init():
    policy = MLPPolicy((300, 200, 100))
    params = policy.init_params(jax.random.key(6))
    for layer, (fan_in, fan_out) in zip(params, [(300, 200), (200, 100)], strict=True):
        a = math.sqrt(6.0 / (fan_in + fan_out))
        w = np.asarray(layer["w"])
        assert np.all(np.abs(w) <= a)
        assert abs(w.std() - a / math.sqrt(3.0)) < 0.03 * a
        assert abs(w.mean()) < 0.02 * a
        np.testing.assert_array_equal(layer["b"], 0.0)


def test_glorot_normal_and_zeros_init():
    policy = MLPPolicy((300, 200), init="glorot_normal")
    w = np.asarray(policy.init_params(jax.random.key(7))[0]["w"])
    assert abs(w.std() - math.sqrt(2.0 / 500)) < 0.03 * math.sqrt(2.0 / 500)
    zeros = MLPPolicy((3, 4, 2), init="zeros").init_flat(jax.random.key(0))
    np.testing.assert_array_equal(zeros, 0.0)


def test_bad_settings_raise():
    with pytest.raises(ValueError, match="layer_sizes"):
        MLPPolicy((3,))
    with pytest.raises(ValueError, match="activation"):
        MLPPolicy((3, 2), activation="softsign")
    with pytest.raises(ValueError, match="init"):
        MLPPolicy((3, 2), init="he")


def test_policy_is_hashable_and_compares_by_value():
    assert MLPPolicy((3, 48, 1)) == MLPPolicy((3, 48, 1))
    assert hash(MLPPolicy([3, 48, 1])) == hash(MLPPolicy((3, 48, 1)))
