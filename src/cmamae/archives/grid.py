"""Grid archive: equal-width bins per measure dimension (pyribs 0.12 ``GridArchive``)."""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np

from cmamae import validate
from cmamae.archives.base import ArchiveBase, _check_ranges


@dataclasses.dataclass(frozen=True)
class GridArchive(ArchiveBase):
    """A grid of ``prod(dims)`` cells over the box ``ranges``.

    ``GridArchive(solution_dim, dims, ranges, *, learning_rate=1.0, threshold_min=-inf,
    qd_score_offset=0.0, epsilon=1e-6, dtype=float32)``.

    Cell coordinate along dimension i: ``int((dims_i * (x_i - lower_i) + epsilon) /
    (upper_i - lower_i))`` clipped into ``[0, dims_i - 1]``, so measures outside the range land
    in the edge cells and a value on an inner boundary (up to the ``epsilon`` slack for
    rounding) belongs to the upper cell; the cell index is the row-major
    (``np.ravel_multi_index``) combination of the coordinates. This is pyribs'
    ``GridArchive.index_of``, except that we clip before converting to integers, so far
    out-of-range measures (beyond the int32 range after scaling, where pyribs' cast overflows
    and sends them to cell 0) still land in the nearest edge cell.

    It has the attributes of :class:`~cmamae.archives.base.ArchiveBase` and these:

    Attributes:
        dims: cells per measure dimension, positive ints.
        ranges: ``(lower, upper)`` per measure dimension, lower < upper.
        epsilon: the rounding slack above, >= 0 (pyribs' default 1e-6).
    """

    dims: tuple[int, ...]
    ranges: tuple[tuple[float, float], ...]
    _: dataclasses.KW_ONLY
    epsilon: float = 1e-6

    def __post_init__(self):
        super().__post_init__()
        try:
            dims = tuple(self.dims)
        except TypeError:
            raise ValueError(
                f"dims must be a sequence of positive integers, got {self.dims!r}"
            ) from None
        if not dims:
            raise ValueError("dims must not be empty")
        dims = tuple(validate.integer(f"dims[{i}]", d) for i, d in enumerate(dims))
        object.__setattr__(self, "dims", dims)
        object.__setattr__(self, "ranges", _check_ranges(self.ranges, len(dims)))
        object.__setattr__(self, "epsilon", validate.non_negative("epsilon", self.epsilon))

    @property
    def cells(self) -> int:
        """Total number of cells, ``prod(dims)``."""
        return math.prod(self.dims)

    @property
    def measure_dim(self) -> int:
        return len(self.dims)

    @property
    def boundaries(self) -> tuple[np.ndarray, ...]:
        """Per dimension i, the ``dims[i] + 1`` cell edges: cell j spans
        ``[boundaries[i][j], boundaries[i][j + 1]]``."""
        return tuple(
            np.linspace(lo, hi, d + 1)
            for d, lo, hi in zip(self.dims, self.lower_bounds, self.upper_bounds, strict=True)
        )

    def grid_index(self, measures: jax.Array) -> jax.Array:
        """Per-dimension cell coordinates ``(batch, measure_dim)`` int32 of ``measures``."""
        measures = jnp.asarray(measures)
        if measures.ndim != 2 or measures.shape[1] != self.measure_dim:
            raise ValueError(
                f"measures must have shape (batch, {self.measure_dim}), got {measures.shape}"
            )
        dt = self.dtype
        measures = measures.astype(dt)
        lower = self.lower_bounds.astype(dt)
        interval = (self.upper_bounds - self.lower_bounds).astype(dt)
        dims = np.asarray(self.dims, dtype=dt)
        scaled = (dims * (measures - lower) + np.asarray(self.epsilon, dt)) / interval
        # Clip before the cast (no int overflow); trunc == floor on [0, dims - 1]. The second
        # clip only matters for NaN.
        coords = jnp.clip(scaled, 0, dims - 1).astype(jnp.int32)
        return jnp.clip(coords, 0, np.asarray(self.dims, np.int32) - 1)

    def index_of(self, measures: jax.Array) -> jax.Array:
        """Cell indices ``(batch,)`` int32 of ``measures`` ``(batch, measure_dim)``."""
        coords = self.grid_index(measures)
        strides = np.cumprod((self.dims[1:] + (1,))[::-1])[::-1].astype(np.int32)
        return jnp.sum(coords * strides, axis=1, dtype=jnp.int32)
