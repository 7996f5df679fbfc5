"""Row-sparse storage of mostly empty arrays (archives) in ``.npz`` files, restored bitwise.

An archive's solution array ``(cells, n)`` is mostly all-zero rows (empty cells): an ant run's
archive of 1,296 cells × 21,128 parameters is 110 MB dense for 74 elites. A row-sparse array
is stored as its rows (along the last axis) that hold any non-zero byte plus a bit mask of
them; restoring writes those rows back into zero bytes, so the result equals the original byte
for byte (-0.0 and NaN payloads included).

Two users: checkpoints (:mod:`cmamae.experiment.checkpoint`, which keeps the shape in its
JSON header) and archive files (:meth:`cmamae.archives.ArchiveBase.save_npz`), which call
:func:`pack` / :func:`unpack` on their dict of arrays: ``NAME`` then holds the stored rows,
``NAME__rows`` the packed mask and ``NAME__shape`` the full shape. Files written dense read
back unchanged through :func:`unpack`.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

ROWS_SUFFIX = "__rows"
SHAPE_SUFFIX = "__shape"
#: smallest array (bytes) considered for row-sparse storage
MIN_BYTES = 4096


def nonzero_rows(a: np.ndarray, min_bytes: int = MIN_BYTES) -> np.ndarray | None:
    """The mask ``(rows,)`` of the rows of ``a`` (rows along the last axis, every leading axis
    flattened) that hold a non-zero byte, when storing ``a`` row-sparse is smaller: ``a`` is at
    least 2-D and ``min_bytes`` large and its all-zero rows outweigh the mask; else None."""
    if a.ndim < 2 or a.nbytes < max(min_bytes, 1) or a.shape[-1] == 0:
        return None
    rows = np.ascontiguousarray(a).reshape(-1, a.shape[-1])
    mask = np.any(rows.view(np.uint8).reshape(rows.shape[0], -1) != 0, axis=1)
    saved = (mask.size - int(mask.sum())) * rows.itemsize * rows.shape[1]
    return mask if saved > mask.size // 8 + 64 else None


def take_rows(a: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The rows of ``a`` selected by ``mask`` (from :func:`nonzero_rows`), ``(stored, last)``."""
    return np.ascontiguousarray(a).reshape(-1, a.shape[-1])[mask]


def dense(stored: np.ndarray, packed_mask: np.ndarray, shape, dtype) -> np.ndarray:
    """The full array ``shape`` of a row-sparse one: zero bytes, then the stored rows in place.

    Raises ValueError when the mask and the stored rows disagree (a damaged file)."""
    shape = tuple(int(s) for s in shape)
    full = np.zeros(shape, dtype)
    rows = full.reshape(-1, shape[-1])
    mask = np.unpackbits(np.asarray(packed_mask, np.uint8), count=rows.shape[0]).astype(bool)
    if int(mask.sum()) != stored.shape[0] or stored.shape[1:] != rows.shape[1:]:
        raise ValueError(
            f"{stored.shape[0]} stored rows of shape {stored.shape[1:]} for a mask of "
            f"{int(mask.sum())} rows of shape {rows.shape[1:]}"
        )
    rows[mask] = stored
    return full


def pack(arrays: Mapping[str, np.ndarray], min_bytes: int = MIN_BYTES) -> dict[str, np.ndarray]:
    """The entries to pass to ``np.savez`` for ``arrays``: each array as is, or row-sparse
    (``NAME``, ``NAME__rows``, ``NAME__shape``) where that is smaller."""
    out: dict[str, np.ndarray] = {}
    for name, a in arrays.items():
        if name.endswith((ROWS_SUFFIX, SHAPE_SUFFIX)):
            raise ValueError(f"arrays: name {name!r} ends in a reserved suffix")
        a = np.asarray(a)
        mask = nonzero_rows(a, min_bytes)
        if mask is None:
            out[name] = a
            continue
        out[name] = take_rows(a, mask)
        out[name + ROWS_SUFFIX] = np.packbits(mask)
        out[name + SHAPE_SUFFIX] = np.asarray(a.shape, np.int64)
    return out


def unpack(data: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The full arrays of an ``np.load`` result (or any mapping) written by :func:`pack`:
    ``{name: array}`` without the mask and shape entries. Dense files pass through.

    Raises ValueError naming the array when a mask does not fit its rows."""
    names = data.files if hasattr(data, "files") else list(data)
    out = {}
    for name in names:
        if name.endswith((ROWS_SUFFIX, SHAPE_SUFFIX)):
            continue
        stored = np.asarray(data[name])
        if name + ROWS_SUFFIX not in names:
            out[name] = stored
            continue
        shape = tuple(np.asarray(data[name + SHAPE_SUFFIX]).tolist())
        try:
            out[name] = dense(stored, data[name + ROWS_SUFFIX], shape, stored.dtype)
        except ValueError as err:
            raise ValueError(f"array {name!r} is damaged: {err}") from None
    return out
