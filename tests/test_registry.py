"""The one registry shape (cmamae.registry.Registry) and its users."""

from __future__ import annotations

import pytest

from cmamae import algorithms, archives, es, tasks
from cmamae.registry import Registry
from cmamae.viz import replay


def test_register_get_names():
    reg = Registry("widget")

    @reg.register("b")
    def b():
        return 2

    assert reg.register("a", len) is len  # without decorator syntax
    assert reg.names() == ["a", "b"] and list(reg) == ["a", "b"] and len(reg) == 2
    assert reg.get("b") is b and "a" in reg and "c" not in reg
    assert reg.register("b", b) is b  # the same object again is fine
    with pytest.raises(ValueError, match="widget name 'b' is already registered"):
        reg.register("b", len)
    with pytest.raises(ValueError, match="widget name must be a non-empty string"):
        reg.register("")


def test_unknown_name_is_one_line_listing_the_names():
    reg = Registry("widget")
    reg.register("x", 1)
    reg.register("y", 2)
    for bad in ("z", None, ["x"]):
        with pytest.raises(ValueError) as err:
            reg.get(bad)
        assert str(err.value) == f"unknown widget {bad!r}; expected one of ['x', 'y']"


def test_every_named_kind_uses_it():
    assert isinstance(tasks.base.TASKS, Registry) and tasks.names() == tasks.base.TASKS.names()
    assert isinstance(algorithms.ALGORITHMS, Registry)
    assert algorithms.names() == algorithms.ALGORITHMS.names()
    assert archives.ARCHIVES.get("GridArchive") is archives.GridArchive
    assert archives.ARCHIVES.get("CVTArchive") is archives.CVTArchive
    assert isinstance(replay.RENDERERS, Registry) and "arm" in replay.RENDERERS
    assert isinstance(es.base.STRATEGIES, Registry)
    assert es.names() == es.base.STRATEGIES.names() and "sep-cma-es" in es.names()
