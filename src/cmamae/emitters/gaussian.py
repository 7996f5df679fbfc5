"""Mutation emitters of MAP-Elites: Gaussian (isotropic) and iso+line (Vassiliades & Mouret 2018).

Both sample parents uniformly from the archive's elites (``x0`` while it is empty, as pyribs
does) and perturb them; they do not learn from feedback.
"""

from __future__ import annotations

import dataclasses

import jax

from cmamae import validate
from cmamae._pytree import pytree_dataclass
from cmamae.emitters.base import Emitter, sample_parents
from cmamae.es.noise import check_noise, init_noise, standard_normal


@pytree_dataclass
class MutationEmitterState:
    """``x0`` ``(n,)`` and the noise generator (:mod:`cmamae.es.noise`)."""

    x0: jax.Array
    noise: jax.Array


@dataclasses.dataclass(frozen=True)
class _MutationEmitter(Emitter):
    def init(self, key, x0) -> MutationEmitterState:
        x0 = validate.vector("x0", x0)
        return MutationEmitterState(x0=x0, noise=init_noise(key, self.noise, x0.shape[0], x0.dtype))


@dataclasses.dataclass(frozen=True)
class GaussianEmitter(_MutationEmitter):
    """x = parent + σ N(0, I) for a uniformly sampled elite (pyribs' ``GaussianEmitter``).

    Attributes:
        sigma: σ, the same for every coordinate.
        num_solutions: solutions per ``ask`` (the batch size).
        noise: "table" or "normal", the Gaussian generator (:mod:`cmamae.es.noise`).
    """

    sigma: float = 0.02
    num_solutions: int = 100
    noise: str = "table"

    def __post_init__(self):
        validate.positive("sigma", self.sigma)
        validate.integer("num_solutions", self.num_solutions)
        check_noise(self.noise)

    @property
    def batch_size(self) -> int:
        return self.num_solutions

    def ask(self, key, state, archive, archive_state):
        k_parent, k_noise = jax.random.split(key)
        parents = sample_parents(k_parent, archive, archive_state, state.x0, self.num_solutions)
        z = standard_normal(k_noise, state.noise, parents.shape, parents.dtype)
        return parents + self.sigma * z, state


@dataclasses.dataclass(frozen=True)
class IsoLineEmitter(_MutationEmitter):
    """x = x_i + σ_iso N(0, I) + σ_line N(0, 1) (x_j − x_i) for two uniformly sampled elites
    (pyribs' ``IsoLineEmitter``).

    Attributes:
        iso_sigma: σ_iso, the isotropic part.
        line_sigma: σ_line, the step along the line through the two elites (>= 0).
        num_solutions: solutions per ``ask`` (the batch size).
        noise: "table" or "normal", the generator of the isotropic part.
    """

    iso_sigma: float = 0.01
    line_sigma: float = 0.2
    num_solutions: int = 100
    noise: str = "table"

    def __post_init__(self):
        validate.positive("iso_sigma", self.iso_sigma)
        validate.non_negative("line_sigma", self.line_sigma)
        validate.integer("num_solutions", self.num_solutions)
        check_noise(self.noise)

    @property
    def batch_size(self) -> int:
        return self.num_solutions

    def ask(self, key, state, archive, archive_state):
        k_parent, k_iso, k_line = jax.random.split(key, 3)
        m = self.num_solutions
        parents = sample_parents(k_parent, archive, archive_state, state.x0, 2 * m)
        elites, directions = parents[:m], parents[m:] - parents[:m]
        iso = standard_normal(k_iso, state.noise, elites.shape, elites.dtype)
        line = jax.random.normal(k_line, (m, 1), elites.dtype)
        return elites + self.iso_sigma * iso + self.line_sigma * line * directions, state
