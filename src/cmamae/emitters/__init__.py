"""Emitters: evolution-strategy emitters (CMA-MAE family) and MAP-Elites mutation emitters."""

from cmamae.emitters.base import Emitter
from cmamae.emitters.evolution_strategy import ESEmitterState, EvolutionStrategyEmitter
from cmamae.emitters.gaussian import GaussianEmitter, IsoLineEmitter, MutationEmitterState

__all__ = [
    "Emitter",
    "ESEmitterState",
    "EvolutionStrategyEmitter",
    "GaussianEmitter",
    "IsoLineEmitter",
    "MutationEmitterState",
]
