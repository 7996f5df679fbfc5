"""Deprecated alias of :mod:`cmamae.compiled_loop`, the module's new name."""

import sys
import warnings

import cmamae.compiled_loop as _module

warnings.warn(
    "cmamae.loop is now cmamae.compiled_loop",
    DeprecationWarning,
    stacklevel=2,
)
sys.modules[__name__] = _module
