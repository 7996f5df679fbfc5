"""Random draws of several axes made as one flat draw, then reshaped.

The numbers are those of ``jax.random.normal`` / ``jax.random.uniform`` with the same shape
(threefry's counters are the flattened indices, in either ``jax_threefry_partitionable``
layout; tests/test_random.py). What changes is the compiled program: drawn with a short last
axis under ``vmap``s (the emitters' and the seeds'), XLA's CPU backend emitted the whole
per-number threefry loop once per element of that axis, and LLVM spent seconds on it. A
sep-CMA-MAE chunk of 3 emitters x 8 at n = 10, 2 seeds, compiled in 11 s against 3.6 s
drawn flat (n = 12: 16.5 s; n = 8 or 16: 3-5 s either way).
"""

from __future__ import annotations

import math

import jax


def normal(key: jax.Array, shape: tuple[int, ...], dtype) -> jax.Array:
    """``jax.random.normal(key, shape, dtype)``, drawn flat."""
    return jax.random.normal(key, (math.prod(shape),), dtype).reshape(shape)


def uniform(key: jax.Array, shape: tuple[int, ...], dtype, minval, maxval) -> jax.Array:
    """``jax.random.uniform(key, shape, dtype, minval, maxval)``, drawn flat."""
    return jax.random.uniform(key, (math.prod(shape),), dtype, minval, maxval).reshape(shape)
