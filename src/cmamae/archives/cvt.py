"""CVT archive: cells are the Voronoi regions of centroids (pyribs 0.12 ``CVTArchive``)."""

from __future__ import annotations

import dataclasses
import hashlib
import math

import jax
import jax.numpy as jnp
import numpy as np

from cmamae import validate
from cmamae.archives.base import ArchiveBase, _check_ranges


def kmeans_centroids(
    cells: int,
    ranges,
    samples: int = 100_000,
    seed: int = 0,
    max_iter: int = 300,
    tol: float = 1e-4,
) -> np.ndarray:
    """Centroids ``(cells, m)`` float64 of a centroidal Voronoi tessellation of the box
    ``ranges``, by Lloyd's k-means over ``samples`` uniform points.

    Deterministic for a ``seed`` (NumPy's ``default_rng``). Like pyribs' default (scikit-learn
    ``k_means`` with ``init="random"``, ``n_init=1``, Lloyd): initial centroids are distinct
    random samples; iterations stop after ``max_iter`` or once the summed squared centroid
    shift is at most ``tol`` times the mean per-dimension variance of the samples. A cluster
    that loses all its samples keeps its previous centroid. Nearest centroids come from a
    ``scipy.spatial.cKDTree``, so one iteration costs O(samples log cells).
    """
    from scipy.spatial import cKDTree

    cells = validate.integer("cells", cells)
    samples = validate.integer("samples", samples)
    ranges = _check_ranges(ranges, None)
    if cells > samples:
        raise ValueError(f"samples ({samples}) must be at least cells ({cells})")
    lo = np.array([r[0] for r in ranges])
    hi = np.array([r[1] for r in ranges])
    m = len(ranges)
    rng = np.random.default_rng(seed)
    points = rng.uniform(lo, hi, size=(samples, m))
    centroids = points[rng.choice(samples, size=cells, replace=False)].copy()
    tol_abs = tol * float(np.mean(np.var(points, axis=0)))
    for _ in range(max_iter):
        _, label = cKDTree(centroids).query(points, workers=-1)
        counts = np.bincount(label, minlength=cells)
        sums = np.stack(
            [np.bincount(label, weights=points[:, j], minlength=cells) for j in range(m)], 1
        )
        new = np.where(counts[:, None] > 0, sums / np.maximum(counts, 1)[:, None], centroids)
        shift = float(np.sum((new - centroids) ** 2))
        centroids = new
        if shift <= tol_abs:
            break
    return centroids


@dataclasses.dataclass(frozen=True)
class CVTArchive(ArchiveBase):
    """``cells`` Voronoi cells of centroids in the measure space; a measure vector belongs
    to its nearest centroid (Euclidean; the first centroid on exact ties, as in pyribs'
    ``nearest_neighbors="brute_force"``). Measures are not clipped.

    ``CVTArchive(solution_dim, cells, ranges, *, centroids=None, samples=100_000, seed=0,
    learning_rate=1.0, threshold_min=-inf, qd_score_offset=0.0, dtype=float32)``.

    Centroids are either given (``centroids``, shape ``(cells, measure_dim)``; ``cells`` may
    then be None) or computed once at construction by :func:`kmeans_centroids` from
    ``samples`` uniform points of ``ranges`` with ``seed``. The default of 100,000 samples, as in
    pyribs, takes seconds for 10^3 cells (4 s here on 2 busy cores) and up to minutes for 10^4;
    compute them once (:func:`kmeans_centroids`) and pass them to skip it.

    Hashing: the centroids are kept as a read-only NumPy array that takes no part in ``==`` or
    ``hash``; ``centroid_digest`` (SHA-256 of their bytes, shape and dtype) does. Two archives
    with equal settings and equal centroids are therefore equal and share jit caches, and
    hashing stays O(1) however many cells there are. The centroids enter compiled code as a
    constant.
    """

    cells: int | None
    ranges: tuple[tuple[float, float], ...]
    _: dataclasses.KW_ONLY
    centroids: np.ndarray | None = dataclasses.field(default=None, compare=False, repr=False)
    samples: int = dataclasses.field(default=100_000, compare=False)
    seed: int = dataclasses.field(default=0, compare=False)
    centroid_digest: str = dataclasses.field(default="", init=False)

    _array_fields = ("centroids",)

    def __post_init__(self):
        super().__post_init__()
        ranges = _check_ranges(self.ranges, None)
        object.__setattr__(self, "ranges", ranges)
        m = len(ranges)
        if self.centroids is None:
            if self.cells is None:
                raise ValueError("cells must be a positive integer when centroids is None")
            cells = validate.integer("cells", self.cells)
            samples = validate.integer("samples", self.samples)
            seed = validate.integer("seed", self.seed, 0)
            centroids = kmeans_centroids(cells, ranges, samples, seed)
        else:
            centroids = np.asarray(self.centroids)
            if centroids.ndim != 2 or centroids.shape[1] != m or centroids.shape[0] < 1:
                raise ValueError(
                    f"centroids must have shape (cells, measure_dim) = (cells, {m}), "
                    f"got {centroids.shape}"
                )
            if not np.all(np.isfinite(centroids)):
                raise ValueError("centroids must be finite")
            if self.cells is not None and (
                validate.integer("cells", self.cells) != centroids.shape[0]
            ):
                raise ValueError(
                    f"cells ({self.cells!r}) must equal the number of centroids "
                    f"({centroids.shape[0]}), or be None"
                )
        centroids = np.array(centroids, dtype=self.dtype)  # a private copy
        centroids.setflags(write=False)
        digest = hashlib.sha256()
        digest.update(repr((centroids.shape, centroids.dtype.str)).encode())
        digest.update(centroids.tobytes())
        object.__setattr__(self, "centroids", centroids)
        object.__setattr__(self, "cells", int(centroids.shape[0]))
        object.__setattr__(self, "samples", int(self.samples))
        object.__setattr__(self, "seed", int(self.seed))
        object.__setattr__(self, "centroid_digest", digest.hexdigest())

    @property
    def measure_dim(self) -> int:
        return len(self.ranges)

    def index_of(self, measures: jax.Array) -> jax.Array:
        """Index ``(batch,)`` int32 of the nearest centroid to each row of ``measures``
        ``(batch, measure_dim)``. O(batch · cells · measure_dim) time, O(batch · cells) memory.
        """
        measures = jnp.asarray(measures)
        if measures.ndim != 2 or measures.shape[1] != self.measure_dim:
            raise ValueError(
                f"measures must have shape (batch, {self.measure_dim}), got {measures.shape}"
            )
        measures = measures.astype(self.dtype)
        c = self.centroids
        # Squared distances (cells, batch), summed dimension by dimension in order (what NumPy
        # does for a short last axis), so ties and near-ties resolve as in pyribs' brute force.
        dist = None
        for j in range(self.measure_dim):
            d = jnp.square(c[:, j, None] - measures[None, :, j])
            dist = d if dist is None else dist + d
        return _first_argmin(dist)


def _first_argmin(dist: jax.Array) -> jax.Array:
    """Row index of the minimum of each column of ``dist`` ``(cells, batch)``, the first on ties.

    XLA's CPU argmin (a variadic reduction) is several times slower than a plain min, so for
    many cells we take the min of each block of about sqrt(cells) rows, the first block holding
    the overall min, and the first row reaching it inside that block: the same index.
    """
    cells, b = dist.shape
    if cells <= 256:
        return jnp.argmin(dist, axis=0).astype(jnp.int32)
    size = math.isqrt(cells - 1) + 1
    blocks = -(-cells // size)
    d = jnp.pad(dist, ((0, blocks * size - cells), (0, 0)), constant_values=jnp.inf)
    d = d.reshape(blocks, size, b)
    block = jnp.argmin(d.min(axis=1), axis=0)  # (batch,)
    inner = jnp.take_along_axis(d, block[None, None, :], axis=0)[0]  # (size, batch)
    return (block * size + jnp.argmin(inner, axis=0)).astype(jnp.int32)
