"""One registry shape for everything looked up by name: tasks, evolution strategies, archives,
algorithms and replay renderers.

A :class:`Registry` maps names to objects (factories, classes, functions)::

    TASKS = Registry("task")

    @TASKS.register("sphere")
    def sphere_task(...): ...

    TASKS.get("sphere")  # the factory
    TASKS.get("shpere")  # ValueError: unknown task 'shpere'; expected one of ['sphere']
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """Names -> objects of one kind, filled by :meth:`register`.

    Args:
        kind: what the entries are, for messages ("task", "algorithm", ...).
    """

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str, obj: T | None = None) -> Callable[[T], T] | T:
        """Register ``obj`` as ``name``; without ``obj``, a decorator doing so (returning its
        argument unchanged). Re-registering the same object is allowed; another object under
        a taken name is a ValueError."""
        if not isinstance(name, str) or not name:
            raise ValueError(f"{self.kind} name must be a non-empty string, got {name!r}")

        def deco(entry: T) -> T:
            if name in self._entries and self._entries[name] is not entry:
                raise ValueError(f"{self.kind} name {name!r} is already registered")
            self._entries[name] = entry
            return entry

        return deco if obj is None else deco(obj)

    def get(self, name: str) -> T:
        """The entry registered as ``name``; a one-line ValueError listing the names if none."""
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            raise ValueError(
                f"unknown {self.kind} {name!r}; expected one of {self.names()}"
            ) from None

    def names(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._entries)

    def __contains__(self, name: Any) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)
