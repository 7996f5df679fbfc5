"""Deprecated alias of :mod:`cmamae.experiment.advance`, the module's new name."""

import sys
import warnings

import cmamae.experiment.advance as _module

warnings.warn(
    "cmamae.experiment.execution is now cmamae.experiment.advance",
    DeprecationWarning,
    stacklevel=2,
)
sys.modules[__name__] = _module
