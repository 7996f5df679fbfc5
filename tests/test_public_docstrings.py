"""Every public name of the user-facing modules has a docstring (own or inherited), and every
field of a public dataclass is named in its docstring (or a base class's)."""

from __future__ import annotations

import dataclasses
import importlib
import inspect

MODULES = ["cmamae", "cmamae.scheduler", "cmamae.emitters", "cmamae.archives", "cmamae.es"]


def _documented(cls, name) -> bool:
    for klass in cls.__mro__:
        if name in vars(klass):
            attr = vars(klass)[name]
            attr = getattr(attr, "__func__", attr)  # staticmethod, classmethod
            if (getattr(attr, "__doc__", None) or "").strip():
                return True
    return False


def _missing_in_class(qual: str, cls) -> list[str]:
    missing = []
    for name, attr in vars(cls).items():
        attr = getattr(attr, "__func__", attr)
        if name.startswith("_") or not (isinstance(attr, property) or inspect.isfunction(attr)):
            continue
        if not _documented(cls, name):
            missing.append(f"{qual}.{name}")
    if dataclasses.is_dataclass(cls):
        docs = " ".join(inspect.getdoc(c) or "" for c in cls.__mro__ if c is not object)
        for field in dataclasses.fields(cls):
            if not field.name.startswith("_") and field.name not in docs:
                missing.append(f"{qual}.{field.name} (field)")
    return missing


def test_public_names_have_docstrings():
    missing, seen = [], set()
    for module_name in MODULES:
        module = importlib.import_module(module_name)
        for name in getattr(module, "__all__", [n for n in dir(module) if n[0] != "_"]):
            obj = getattr(module, name)
            origin = getattr(obj, "__module__", None) or ""
            if inspect.ismodule(obj) or not origin.startswith("cmamae"):
                continue
            qual = f"{origin}.{getattr(obj, '__qualname__', name)}"
            if qual in seen:
                continue
            seen.add(qual)
            if callable(obj) and not (obj.__doc__ or "").strip():
                missing.append(qual)
            if inspect.isclass(obj):
                missing += _missing_in_class(qual, obj)
    assert not missing, "without a docstring:\n" + "\n".join(sorted(missing))
