"""Neural-network policies whose parameters live as one flat vector for an evolution strategy.

An :class:`MLPPolicy` is static configuration (layer sizes, activation names): frozen and
hashable. Parameters are a pytree ``[{"w": (in, out), "b": (out,)}, ...]``, one dict per layer;
the flat vector is that pytree raveled by ``jax.flatten_util.ravel_pytree`` (per layer ``b``
then ``w``, row-major). ``apply`` takes either form, so under ``jax.vmap`` over a batch of flat
vectors each candidate's parameters are a slice-and-reshape of its row (no copy of a pytree
per candidate is built on the host).
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from cmamae import _random

ACTIVATIONS = {
    "identity": lambda x: x,
    "linear": lambda x: x,
    "relu": jax.nn.relu,
    "tanh": jnp.tanh,
    "sigmoid": jax.nn.sigmoid,
    "elu": jax.nn.elu,
    "gelu": jax.nn.gelu,
    "swish": jax.nn.swish,
}
INITS = ("glorot_uniform", "glorot_normal", "zeros")


@dataclasses.dataclass(frozen=True)
class MLPPolicy:
    """A fully connected network ``obs -> hidden ... -> action``.

    Attributes:
        layer_sizes: ``(obs_dim, hidden_1, ..., act_dim)``, at least two entries.
        activation: name of the nonlinearity after every hidden layer (a key of
            :data:`ACTIVATIONS`).
        output_activation: name of the nonlinearity after the last layer ("identity" for a
            linear output; "tanh" for the paper's locomotion policy).
        init: weight initialization of :meth:`init_params`. "glorot_uniform" (default) is
            Xavier/Glorot uniform, U(-a, a) with a = sqrt(6 / (fan_in + fan_out)), as
            PyTorch's ``xavier_uniform_``; "glorot_normal" is N(0, 2 / (fan_in + fan_out));
            "zeros" gives the all-zero vector. Biases start at zero in every case.
        dtype: parameter dtype.
    """

    layer_sizes: tuple[int, ...]
    activation: str = "tanh"
    output_activation: str = "tanh"
    init: str = "glorot_uniform"
    dtype: str = "float32"

    def __post_init__(self):
        sizes = tuple(self.layer_sizes)
        if len(sizes) < 2 or any(
            isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in sizes
        ):
            raise ValueError(
                f"layer_sizes must be at least two positive integers (obs, ..., act), got {sizes!r}"
            )
        object.__setattr__(self, "layer_sizes", sizes)
        for field in ("activation", "output_activation"):
            value = getattr(self, field)
            if value not in ACTIVATIONS:
                raise ValueError(f"{field} must be one of {sorted(ACTIVATIONS)}, got {value!r}")
        if self.init not in INITS:
            raise ValueError(f"init must be one of {INITS}, got {self.init!r}")

    # ------------------------------------------------------------------ sizes and layout
    @property
    def obs_dim(self) -> int:
        """Observation size, the input width (``layer_sizes[0]``)."""
        return self.layer_sizes[0]

    @property
    def act_dim(self) -> int:
        """Action size, the output width (``layer_sizes[-1]``)."""
        return self.layer_sizes[-1]

    @property
    def layer_shapes(self) -> list[tuple[int, int]]:
        """(fan_in, fan_out) of each layer."""
        return list(zip(self.layer_sizes[:-1], self.layer_sizes[1:], strict=True))

    @property
    def num_params(self) -> int:
        """Length of the flat parameter vector: Σ (fan_in + 1) · fan_out over layers."""
        return sum((a + 1) * b for a, b in self.layer_shapes)

    def _template(self):
        return [
            {"b": jnp.zeros((b,), self.dtype), "w": jnp.zeros((a, b), self.dtype)}
            for a, b in self.layer_shapes
        ]

    # ------------------------------------------------------------------ initialization
    def init_params(self, key: jax.Array) -> list[dict[str, jax.Array]]:
        """A parameter pytree: weights per ``init`` (one key per layer), zero biases."""
        pairs = self.layer_shapes
        keys = jax.random.split(key, len(pairs))
        params = []
        for k, (fan_in, fan_out) in zip(keys, pairs, strict=True):
            if self.init == "glorot_uniform":
                a = math.sqrt(6.0 / (fan_in + fan_out))
                w = _random.uniform(k, (fan_in, fan_out), self.dtype, -a, a)
            elif self.init == "glorot_normal":
                std = math.sqrt(2.0 / (fan_in + fan_out))
                w = std * _random.normal(k, (fan_in, fan_out), self.dtype)
            else:
                w = jnp.zeros((fan_in, fan_out), self.dtype)
            params.append({"b": jnp.zeros((fan_out,), self.dtype), "w": w})
        return params

    def init_flat(self, key: jax.Array) -> jax.Array:
        """:meth:`init_params` as a flat vector, shape ``(num_params,)``."""
        return self.flatten(self.init_params(key))

    # ------------------------------------------------------------------ flat <-> pytree
    def flatten(self, params) -> jax.Array:
        """Parameter pytree -> flat vector ``(num_params,)``."""
        flat, _ = ravel_pytree(params)
        return flat

    def unflatten(self, flat: jax.Array) -> list[dict[str, jax.Array]]:
        """Flat vector ``(num_params,)`` -> parameter pytree (inverse of :meth:`flatten`)."""
        flat = jnp.asarray(flat)
        if flat.shape != (self.num_params,):
            raise ValueError(
                f"flat must have shape ({self.num_params},) for layer_sizes {self.layer_sizes}, "
                f"got {flat.shape}"
            )
        _, unravel = ravel_pytree(self._template())
        return unravel(flat.astype(self.dtype))

    # ------------------------------------------------------------------ forward pass
    def apply(self, params, obs: jax.Array) -> jax.Array:
        """Action for ``obs`` ``(..., obs_dim)`` -> ``(..., act_dim)``.

        ``params`` is a parameter pytree or a flat vector ``(num_params,)``. For a batch of
        flat vectors use ``jax.vmap(policy.apply)``.
        """
        if not isinstance(params, (list, tuple)):
            params = self.unflatten(params)
        hidden = ACTIVATIONS[self.activation]
        out = ACTIVATIONS[self.output_activation]
        x = obs
        last = len(params) - 1
        for i, layer in enumerate(params):
            x = x @ layer["w"] + layer["b"]
            x = out(x) if i == last else hidden(x)
        return x
