"""Deprecated alias of :mod:`cmamae.experiment.dask_cluster`, the module's new name."""

import sys
import warnings

import cmamae.experiment.dask_cluster as _module

warnings.warn(
    "cmamae.experiment.distributed is now cmamae.experiment.dask_cluster",
    DeprecationWarning,
    stacklevel=2,
)
sys.modules[__name__] = _module
