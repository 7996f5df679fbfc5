"""A griffe extension for the API reference: Sphinx roles in the docstrings
(``:func:`cmamae.run```, ``:class:`~x.Y```) become inline code (``cmamae.run``, ``Y``), so
they read as Markdown instead of showing the role. Loaded by mkdocs.yml; not part of the
package."""

from __future__ import annotations

import re

import griffe

_ROLE = re.compile(r":(?:py:)?(?:func|class|mod|meth|data|attr|exc|obj|const):`(~?)([^`]+)`")


def _code(match: re.Match) -> str:
    target = match.group(2)
    return f"`{target.rsplit('.', 1)[-1] if match.group(1) else target}`"


class SphinxRoles(griffe.Extension):
    """Rewrites the roles of every docstring as it is loaded."""

    def on_instance(self, *, obj: griffe.Object, **kwargs) -> None:
        if obj.docstring is not None:
            obj.docstring.value = _ROLE.sub(_code, obj.docstring.value)
