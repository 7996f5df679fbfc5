"""cmamae.validate: every check's message ("NAME must be EXPECTED, got VALUE"), the error class
it raises, and the normalized value it returns; and that the converted public checks use it."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cmamae import validate
from cmamae.archives import GridArchive
from cmamae.experiment.config import ConfigError


def _message(check, *args, **kwargs) -> str:
    with pytest.raises(ValueError) as info:
        check(*args, **kwargs)
    return str(info.value)


def test_integer():
    assert validate.integer("n", np.int64(3)) == 3 and type(validate.integer("n", 3)) is int
    assert validate.integer("n", 0, 0) == 0 and validate.integer("n", 5, 1, 5) == 5
    assert _message(validate.integer, "n", 0) == "n must be an integer >= 1, got 0"
    assert _message(validate.integer, "n", 6, 1, 5) == "n must be an integer in [1, 5], got 6"
    for bad in (True, 2.0, "2", None):
        assert _message(validate.integer, "n", bad) == f"n must be an integer >= 1, got {bad!r}"
    msg = _message(validate.integer, "evals", 3, 10, expected="an integer >= one iteration")
    assert msg == "evals must be an integer >= one iteration, got 3"


def test_floats():
    assert validate.number("x", np.float32(1.5)) == 1.5 and validate.positive("x", 2) == 2.0
    assert validate.non_negative("x", 0) == 0.0
    assert _message(validate.number, "x", math.nan) == "x must be a finite number, got nan"
    assert _message(validate.positive, "x", 0.0) == "x must be a positive finite number, got 0.0"
    assert _message(validate.non_negative, "x", -1) == "x must be a finite number >= 0, got -1"
    # strings are not numbers, even where float() would read them
    assert _message(validate.number, "x", "1e3") == "x must be a finite number, got '1e3'"
    assert _message(validate.positive, "x", True) == "x must be a positive finite number, got True"
    msg = _message(validate.number, "t", math.inf, expected="-inf or a finite number")
    assert msg == "t must be -inf or a finite number, got inf"


def test_interval():
    assert validate.interval("p", 0, 0, 1) == 0.0 and validate.interval("p", 1, 0, 1) == 1.0
    assert _message(validate.interval, "p", 1.5, 0, 1) == "p must be a number in [0, 1], got 1.5"
    msg = _message(validate.interval, "tau", 0, 0, 1, open_low=True)
    assert msg == "tau must be a number in (0, 1], got 0"
    msg = _message(validate.interval, "fps", 1e4, 0, 1e4, open_low=True, open_high=True)
    assert msg == "fps must be a number in (0, 10000), got 10000.0"


def test_one_of_and_error_class():
    assert validate.one_of("r", "imp", ("imp", "2imp")) == "imp"
    assert _message(validate.one_of, "r", [1], {"imp"}) == "r must be one of ('imp',), got [1]"
    with pytest.raises(ConfigError, match="seeds must be an integer >= 1, got 0"):
        validate.integer("seeds", 0, error=ConfigError)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(learning_rate=1.5), "learning_rate must be a number in [0, 1], got 1.5"),
        (dict(threshold_min=math.nan), "threshold_min must be -inf or a finite number, got nan"),
        (dict(qd_score_offset=math.inf), "qd_score_offset must be a finite number, got inf"),
        (dict(epsilon=-1.0), "epsilon must be a finite number >= 0, got -1.0"),
        (dict(dims=(2, 0)), "dims[1] must be an integer >= 1, got 0"),
        (dict(ranges=[(0, 1), ("a", 1)]), "ranges[1][0] must be a finite number, got 'a'"),
    ],
)
def test_archive_messages(kwargs, message):
    base = dict(solution_dim=2, dims=(2, 3), ranges=[(0, 1), (0, 1)], threshold_min=0.0)
    with pytest.raises(ValueError) as info:
        GridArchive(**{**base, **kwargs})
    assert str(info.value) == message


def test_archive_keeps_minus_inf_and_normalizes():
    a = GridArchive(solution_dim=np.int64(2), dims=(2,), ranges=[(0, 1)], epsilon=0)
    assert a.threshold_min == -math.inf and type(a.solution_dim) is int
    assert type(a.epsilon) is float and a.epsilon == 0.0
