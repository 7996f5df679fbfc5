"""cmamae._random: flat draws are jax.random's draws of the same shape, bit for bit."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cmamae import _random

SHAPES = [(8, 10), (27, 4), (2, 3, 5)]


@pytest.fixture(params=[True, False], ids=["partitionable", "classic"])
def threefry_layout(request):
    before = jax.config.jax_threefry_partitionable
    jax.config.update("jax_threefry_partitionable", request.param)
    yield
    jax.config.update("jax_threefry_partitionable", before)


@pytest.mark.parametrize("shape", SHAPES)
def test_flat_draws_are_the_shaped_draws(threefry_layout, shape):
    @jax.jit  # one compile for the four draws
    def draws(key):
        return (
            (_random.normal(key, shape, jnp.float32), jax.random.normal(key, shape)),
            (
                _random.uniform(key, shape, jnp.float32, -2.0, 3.0),
                jax.random.uniform(key, shape, jnp.float32, -2.0, 3.0),
            ),
        )

    for flat, shaped in draws(jax.random.key(11)):
        np.testing.assert_array_equal(flat, shaped)


def test_flat_draws_under_vmap_are_the_shaped_draws():
    keys = jax.random.split(jax.random.key(2), 2)
    flat = jax.vmap(lambda k: _random.normal(k, (3, 5), jnp.float32))(keys)
    shaped = jax.vmap(lambda k: jax.random.normal(k, (3, 5), jnp.float32))(keys)
    np.testing.assert_array_equal(flat, shaped)
