"""Evolution strategies as pure functions over explicit state pytrees (maximization).

Each strategy is a small frozen object of static settings that hands out
``init(key, x0) -> state``, ``ask(key, state) -> (solutions, state)``,
``tell(state, solutions, fitness) -> state`` and ``converged(state) -> bool``.
"""
