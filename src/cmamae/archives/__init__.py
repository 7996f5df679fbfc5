"""Archives for quality-diversity search with MAP-Annealing thresholds (CMA-MAE).

Archive objects (:class:`GridArchive`, :class:`CVTArchive`) are frozen, hashable settings with
pure, jit-able methods ``init``, ``add``, ``stats``, ``sample_elites``; the contents live in an
:class:`ArchiveState` pytree. Batch insertion matches pyribs 0.12 except that non-finite
objectives or measures are rejected and counted instead of raising (see
:mod:`cmamae.archives.base`).
"""

from cmamae.archives.base import (
    ARCHIVES,
    IMPROVE_EXISTING,
    NEW,
    NOT_ADDED,
    UNKNOWN,
    AddInfo,
    ArchiveBase,
    ArchiveState,
    ArchiveStats,
    load_archive_npz,
    load_npz,
    with_provenance,
    without_provenance,
)
from cmamae.archives.cvt import CVTArchive, kmeans_centroids
from cmamae.archives.grid import GridArchive

__all__ = [
    "ARCHIVES",
    "IMPROVE_EXISTING",
    "NEW",
    "NOT_ADDED",
    "UNKNOWN",
    "AddInfo",
    "ArchiveBase",
    "ArchiveState",
    "ArchiveStats",
    "CVTArchive",
    "GridArchive",
    "kmeans_centroids",
    "load_archive_npz",
    "load_npz",
    "with_provenance",
    "without_provenance",
]
