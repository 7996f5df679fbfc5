"""Emitters: evolution-strategy emitters (CMA-MAE family), MAP-Elites mutation emitters and the
gradient-based ones (CMA-MEGA's gradient arborescence, ME-ES) with their gradient sources, and
the TD3-based ones (PGA-ME, CMA-MEGA (TD3, ES))."""

from cmamae.emitters.base import Emitter, EvaluatedBatch, PrePhaseEmitter
from cmamae.emitters.cma_mega_td3 import TD3ArborescenceEmitter, TD3ESGradient
from cmamae.emitters.evolution_strategy import ESEmitterState, EvolutionStrategyEmitter
from cmamae.emitters.gaussian import GaussianEmitter, IsoLineEmitter, MutationEmitterState
from cmamae.emitters.gradient_arborescence import (
    ArborescenceState,
    GradientArborescenceEmitter,
)
from cmamae.emitters.gradients import ESGradient, ExactGradient, GradientSource
from cmamae.emitters.me_es import MEESEmitter, MEESSettings, MEESState
from cmamae.emitters.pga_me import PGAMEEmitter, PGAMESettings, PGAMEState

__all__ = [
    "ArborescenceState",
    "ESGradient",
    "EvaluatedBatch",
    "ExactGradient",
    "GradientArborescenceEmitter",
    "GradientSource",
    "MEESEmitter",
    "MEESSettings",
    "MEESState",
    "PrePhaseEmitter",
    "Emitter",
    "ESEmitterState",
    "EvolutionStrategyEmitter",
    "GaussianEmitter",
    "IsoLineEmitter",
    "MutationEmitterState",
    "PGAMEEmitter",
    "PGAMESettings",
    "PGAMEState",
    "TD3ArborescenceEmitter",
    "TD3ESGradient",
]
