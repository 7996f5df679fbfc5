"""Frozen dataclasses registered as JAX pytrees (the state containers of every layer)."""

from __future__ import annotations

import dataclasses

import jax


def static_field(**kwargs):
    """A dataclass field that is pytree metadata (hashable, part of the jit cache key)."""
    return dataclasses.field(metadata={"static": True}, **kwargs)


def pytree_dataclass(cls):
    """Make ``cls`` a frozen dataclass whose fields are pytree leaves.

    Fields declared with :func:`static_field` are metadata instead. ``replace`` returns a copy
    with some fields changed, as :func:`dataclasses.replace` does.
    """
    cls = dataclasses.dataclass(frozen=True)(cls)
    cls.replace = _replace
    return jax.tree_util.register_dataclass(cls)


def _replace(self, **changes):
    """A copy with the fields named in ``changes`` set to their values (the others shared)."""
    return dataclasses.replace(self, **changes)
