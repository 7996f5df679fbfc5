"""Deprecated alias of :mod:`cmamae.device_mesh`, the module's new name."""

import sys
import warnings

import cmamae.device_mesh as _module

warnings.warn(
    "cmamae.sharding is now cmamae.device_mesh",
    DeprecationWarning,
    stacklevel=2,
)
sys.modules[__name__] = _module
