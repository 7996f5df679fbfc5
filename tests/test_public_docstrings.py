"""Every public name of the documented modules has a docstring: the modules the API reference
renders (the ``::: module`` lines of docs/api/*.md, with their ``members`` options), each
module itself, every public class and function in it (``__all__``, else the names it defines),
and every public method and property of those classes (own or inherited docstring); every field
of a public dataclass is named in its docstring (or a base class's)."""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import re
from pathlib import Path

import cmamae

API_DOCS = Path(__file__).resolve().parents[1] / "docs" / "api"


def documented_modules() -> list[tuple[str, list[str] | None]]:
    """``(module, members)`` per ``::: module`` directive of docs/api/*.md: ``members`` the
    listed names, ``[]`` for ``members: false``, None for the module's public names."""
    out = []
    for page in sorted(API_DOCS.glob("*.md")):
        pattern = r"^::: (\S+)((?:\n {4}.*)*)"
        for match in re.finditer(pattern, page.read_text(encoding="utf-8"), re.M):
            options = match.group(2)
            if re.search(r"members:\s*false", options):
                members = []
            else:
                members = re.findall(r"^\s+- (\w+)\s*$", options, re.M) or None
            out.append((match.group(1), members))
    return out


def _public_names(module) -> list[str]:
    if hasattr(module, "__all__"):
        return list(module.__all__)
    return [
        name
        for name, obj in vars(module).items()
        if not name.startswith("_") and getattr(obj, "__module__", None) == module.__name__
    ]


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


def missing_docstrings() -> tuple[list[str], int]:
    """The public names without a docstring, and how many classes and functions were read."""
    missing, seen = [], set()
    modules = documented_modules()
    modules.append(("cmamae", list(cmamae.__all__)))
    for module_name, members in modules:
        module = importlib.import_module(module_name)
        if not (module.__doc__ or "").strip():
            missing.append(f"{module_name} (module)")
        for name in _public_names(module) if members is None else members:
            obj = getattr(module, name)
            origin = getattr(obj, "__module__", None) or ""
            if inspect.ismodule(obj) or not origin.startswith("cmamae"):
                continue
            if not (inspect.isclass(obj) or callable(obj)):
                continue  # constants and registries: documented by a comment or the module
            qual = f"{origin}.{getattr(obj, '__qualname__', name)}"
            if qual in seen:
                continue
            seen.add(qual)
            if not (obj.__doc__ or "").strip():
                missing.append(qual)
            if inspect.isclass(obj):
                missing += _missing_in_class(qual, obj)
    return missing, len(seen)


def test_documented_modules_are_found():
    modules = dict(documented_modules())
    assert {"cmamae", "cmamae.algorithms", "cmamae.emitters", "cmamae.validate"} <= set(modules)
    assert modules["cmamae.viz"] == [] and "CMAES" in modules["cmamae.es"]


def test_public_names_have_docstrings():
    missing, read = missing_docstrings()
    assert read > 150  # every documented module was walked
    assert not missing, "without a docstring:\n" + "\n".join(sorted(missing))
