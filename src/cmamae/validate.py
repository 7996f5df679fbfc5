"""Argument checks at the public boundary, with one message format.

Every check raises ``error`` (``ValueError`` unless the caller passes a subclass, e.g. the
runner's ``ConfigError``) with the message ``"NAME must be EXPECTED, got VALUE"`` (VALUE as
``repr``), and returns the value in its checked form, so a setting is checked and normalized in
one line::

    num_emitters = validate.integer("num_emitters", num_emitters)          # int >= 1
    sigma = validate.positive("sigma", sigma)                              # finite float > 0
    ranker = validate.one_of("ranker", ranker, ("imp", "2imp", "obj"))
"""

from __future__ import annotations

import math
from collections.abc import Collection

import jax
import jax.numpy as jnp
import numpy as np


def _fail(error: type[ValueError], name: str, expected: str, value) -> None:
    raise error(f"{name} must be {expected}, got {value!r}")


def integer(
    name: str,
    value,
    minimum: int = 1,
    maximum: int | None = None,
    *,
    expected: str | None = None,
    error: type[ValueError] = ValueError,
) -> int:
    """``value`` as an ``int`` when it is an integer (Python or NumPy, not a bool) in
    ``[minimum, maximum]`` (``maximum`` None: no upper bound); else ``error``:
    "NAME must be an integer >= MINIMUM, got VALUE" (or "an integer in [MINIMUM, MAXIMUM]";
    ``expected`` replaces that phrase where the bound needs words, e.g. "an integer >= one
    iteration (100 evaluations)")."""
    if expected is None:
        expected = (
            f"an integer >= {minimum}"
            if maximum is None
            else f"an integer in [{minimum}, {maximum}]"
        )
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        _fail(error, name, expected, value)
    if value < minimum or (maximum is not None and value > maximum):
        _fail(error, name, expected, value)
    return int(value)


def number(
    name: str, value, *, expected: str | None = None, error: type[ValueError] = ValueError
) -> float:
    """``value`` as a finite ``float``; else "NAME must be a finite number, got VALUE"
    (``expected`` replaces "a finite number" where the caller accepts more, e.g. "-inf or a
    finite number" around a check of its own)."""
    return _bounded(name, value, expected or "a finite number", lambda v: True, error)


def positive(name: str, value, *, error: type[ValueError] = ValueError) -> float:
    """``value`` as a finite ``float`` > 0; else "NAME must be a positive finite number, got
    VALUE"."""
    return _bounded(name, value, "a positive finite number", lambda v: v > 0, error)


def non_negative(name: str, value, *, error: type[ValueError] = ValueError) -> float:
    """``value`` as a finite ``float`` >= 0; else "NAME must be a finite number >= 0, got
    VALUE"."""
    return _bounded(name, value, "a finite number >= 0", lambda v: v >= 0, error)


def interval(
    name: str,
    value,
    low: float,
    high: float,
    *,
    open_low: bool = False,
    open_high: bool = False,
    error: type[ValueError] = ValueError,
) -> float:
    """``value`` as a ``float`` in the interval from ``low`` to ``high`` (closed unless
    ``open_low``/``open_high``); else "NAME must be a number in [LOW, HIGH], got VALUE" (with
    ``(`` or ``)`` for an open end)."""
    text = f"{'(' if open_low else '['}{low:g}, {high:g}{')' if open_high else ']'}"

    def ok(v):
        above = v > low if open_low else v >= low
        below = v < high if open_high else v <= high
        return above and below

    return _bounded(name, value, f"a number in {text}", ok, error)


def _bounded(name, value, expected: str, ok, error) -> float:
    if isinstance(value, (bool, str, bytes)):  # float("1e3") would pass a string through
        _fail(error, name, expected, value)
    try:
        v = float(value)
    except (TypeError, ValueError):
        _fail(error, name, expected, value)
    if not (math.isfinite(v) and ok(v)):
        _fail(error, name, expected, value)
    return v


def one_of(name: str, value, choices: Collection, *, error: type[ValueError] = ValueError):
    """``value`` when it is one of ``choices``; else "NAME must be one of CHOICES, got
    VALUE"."""
    try:
        known = value in choices
    except TypeError:  # an unhashable value asked of a set
        known = False
    if not known:
        _fail(error, name, f"one of {tuple(choices)}", value)
    return value


def vector(name: str, value) -> jax.Array:
    """``value`` as a floating array of shape ``(n,)``, n >= 1 (integers become the default
    float dtype); else ValueError. Finiteness is checked only for concrete arrays (under
    ``jit``/``vmap`` the values are unknown; public entry points call this outside traces
    first)."""
    x = jnp.asarray(value)
    if x.ndim != 1 or x.shape[0] < 1:
        raise ValueError(f"{name} must be a 1-D array of shape (n,), got shape {x.shape}")
    if not jnp.issubdtype(x.dtype, jnp.floating):
        x = x.astype(jnp.result_type(float))
    if not isinstance(x, jax.core.Tracer) and not np.all(np.isfinite(np.asarray(x))):
        raise ValueError(f"{name} must be finite, got NaN or inf entries")
    return x
