"""Evolution strategies as pure functions over explicit state pytrees (maximization).

Each strategy is a small frozen object of static settings that hands out
``init(key, x0) -> state``, ``ask(key, state) -> (solutions, state)``,
``tell(state, solutions, fitness) -> state`` and ``converged(state) -> bool``. Its float
hyperparameters (σ₀, learning rates) are also data: ``default_params()`` returns them as a
pytree (:class:`ESParams` or a subclass) that ``init``, ``ask`` and ``tell`` take as ``params``,
so they can change without recompiling and be ``vmap``-ed over.
"""

from cmamae.es._common import resolve_noise as resolve_noise
from cmamae.es.base import ESParams as ESParams
from cmamae.es.base import EvolutionStrategy as EvolutionStrategy
from cmamae.es.base import get as get
from cmamae.es.base import names as names
from cmamae.es.cma_es import CMAES as CMAES
from cmamae.es.cma_es import CMAESParams as CMAESParams
from cmamae.es.lm_ma_es import LMMAES as LMMAES
from cmamae.es.openai_es import OpenAIES as OpenAIES
from cmamae.es.openai_es import OpenAIESParams as OpenAIESParams
from cmamae.es.sep_cma_es import SepCMAES as SepCMAES
