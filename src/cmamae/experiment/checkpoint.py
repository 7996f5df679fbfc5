"""Checkpoints: a state pytree to one ``.npz`` file and back, atomically and checksummed.

A checkpoint holds the leaves of the state (PRNG keys as their raw key data), a JSON header
(iteration, leaf shapes and dtypes) and a SHA-256 over the header and every leaf's bytes. It is
written to a temporary file in the same folder, flushed and fsynced, then renamed into place, so
a reader sees either the old set of checkpoints or the new one, never half a file. On reading, a
file that does not parse or whose checksum differs is reported and skipped for the previous one.
Nothing is unpickled: the files are arrays plus JSON.

Archives are mostly empty rows: an ant run's two archives per seed hold 1,296 × 21,128 float32
each, of which a few percent are occupied. A large leaf (>= 1 MiB, 2-D or more) whose rows (along
the last axis) are at least half all-zero bytes is stored as its non-zero rows plus a bit mask of
them, and restored bitwise (the empty rows are exactly zero bytes again).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
import warnings
from pathlib import Path
from typing import Any

import jax
import numpy as np

_NAME = re.compile(r"^ckpt-(\d{9})\.npz$")
_FORMAT = 2  # 2: row-sparse leaves; format-1 files (every leaf dense) still read
_SPARSE_MIN_BYTES = 1 << 20


class CheckpointError(ValueError):
    """No valid checkpoint could be read."""


def path_for(folder: str | os.PathLike, iteration: int) -> Path:
    """The file name of the checkpoint after ``iteration`` iterations."""
    return Path(folder) / f"ckpt-{int(iteration):09d}.npz"


def list_checkpoints(folder: str | os.PathLike) -> list[tuple[int, Path]]:
    """``(iteration, path)`` of every checkpoint file in ``folder``, oldest first."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = []
    for p in folder.iterdir():
        m = _NAME.match(p.name)
        if m:
            found.append((int(m.group(1)), p))
    return sorted(found)


def _is_key(x) -> bool:
    return jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


def _digest(header: str, arrays: list[np.ndarray]) -> str:
    h = hashlib.sha256(header.encode())
    for a in arrays:
        h.update(np.ascontiguousarray(a).data)
    return h.hexdigest()


def _nonzero_rows(a: np.ndarray) -> np.ndarray | None:
    """The mask ``(rows,)`` of rows (along the last axis) with any non-zero byte, when ``a`` is
    worth storing row-sparse (large, at least half its rows all-zero bytes); else None."""
    if a.ndim < 2 or a.nbytes < _SPARSE_MIN_BYTES:
        return None
    rows = np.ascontiguousarray(a).reshape(-1, a.shape[-1])
    mask = np.any(rows.view(np.uint8).reshape(rows.shape[0], -1) != 0, axis=1)
    return mask if 2 * int(mask.sum()) <= mask.size else None


def _dense(stored: np.ndarray, packed_mask: np.ndarray, shape, dtype) -> np.ndarray:
    """The full array of a row-sparse leaf: zero bytes, then the stored rows in place."""
    full = np.zeros(shape, dtype)
    rows = full.reshape(-1, shape[-1])
    mask = np.unpackbits(packed_mask, count=rows.shape[0]).astype(bool)
    if int(mask.sum()) != stored.shape[0]:
        raise ValueError(f"{stored.shape[0]} stored rows for a mask of {int(mask.sum())}")
    rows[mask] = stored
    return full


def fsync_dir(folder: Path) -> None:
    """Make a rename inside ``folder`` durable (no-op where directories cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike, write) -> None:
    """Call ``write(fileobj)`` on a temporary file next to ``path``, fsync, rename over it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def save(folder: str | os.PathLike, iteration: int, state: Any, keep: int = 2) -> Path:
    """Write ``state`` (any pytree of arrays) as the checkpoint after ``iteration`` iterations;
    then delete all but the newest ``keep`` checkpoints (large mostly-zero leaves stored
    row-sparse, see the module docstring). Returns the file's path."""
    leaves = jax.tree_util.tree_leaves(state)
    entries, specs = {}, []
    for i, leaf in enumerate(leaves):
        if _is_key(leaf):
            a = np.asarray(jax.random.key_data(leaf))
            spec = {"key_impl": str(jax.random.key_impl(leaf))}
        else:
            a = np.asarray(leaf)
            spec = {}
        spec.update(shape=list(a.shape), dtype=a.dtype.str)
        mask = _nonzero_rows(a)
        if mask is not None:
            spec["rows"] = int(mask.sum())
            entries[f"rows_{i:05d}"] = np.packbits(mask)
            a = np.ascontiguousarray(a).reshape(-1, a.shape[-1])[mask]
        entries[f"leaf_{i:05d}"] = a
        specs.append(spec)
    header = json.dumps({"format": _FORMAT, "iteration": int(iteration), "leaves": specs})
    entries["checksum"] = np.asarray(_digest(header, list(entries.values())))
    entries["header"] = np.asarray(header)
    path = path_for(folder, iteration)
    atomic_write(path, lambda f: np.savez(f, **entries))
    for _, old in list_checkpoints(folder)[:-keep] if keep > 0 else []:
        old.unlink(missing_ok=True)
    return path


def load(path: str | os.PathLike, template: Any) -> tuple[int, Any]:
    """``(iteration, state)`` from one checkpoint file, with ``template``'s tree structure
    (a pytree of arrays or ``jax.ShapeDtypeStruct``, e.g. from ``jax.eval_shape``).

    Raises CheckpointError if the file is unreadable, torn, corrupt or does not fit the
    template."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            header = str(data["header"])
            checksum = str(data["checksum"])
            meta = json.loads(header)
            stored = []  # in the order they were written (and checksummed)
            for i, spec in enumerate(meta["leaves"]):
                if "rows" in spec:
                    stored.append(np.asarray(data[f"rows_{i:05d}"]))
                stored.append(np.asarray(data[f"leaf_{i:05d}"]))
    except Exception as err:  # a torn zip raises many different errors
        raise CheckpointError(f"checkpoint {path} is unreadable: {err}") from None
    if meta.get("format") not in (1, _FORMAT):
        raise CheckpointError(f"checkpoint {path} has unknown format {meta.get('format')!r}")
    if _digest(header, stored) != checksum:
        raise CheckpointError(f"checkpoint {path} is corrupt (checksum mismatch)")
    arrays, it = [], iter(stored)
    for spec in meta["leaves"]:
        if "rows" in spec:
            packed, rows = next(it), next(it)
            try:
                arrays.append(_dense(rows, packed, tuple(spec["shape"]), np.dtype(spec["dtype"])))
            except ValueError as err:
                raise CheckpointError(f"checkpoint {path} is corrupt: {err}") from None
        else:
            arrays.append(next(it))
    leaves, treedef = jax.tree_util.tree_flatten(template)
    if len(leaves) != len(arrays):
        raise CheckpointError(
            f"checkpoint {path} holds {len(arrays)} arrays, the run's state has {len(leaves)}"
        )
    restored = []
    for i, (like, a, spec) in enumerate(zip(leaves, arrays, meta["leaves"])):
        if "key_impl" in spec:
            a = jax.random.wrap_key_data(a, impl=spec["key_impl"])
        if tuple(a.shape) != tuple(like.shape) or a.dtype != like.dtype:
            raise CheckpointError(
                f"checkpoint {path}: array {i} has shape {a.shape} {a.dtype}, the run expects "
                f"{tuple(like.shape)} {like.dtype}"
            )
        restored.append(jax.numpy.asarray(a) if not isinstance(a, jax.Array) else a)
    return int(meta["iteration"]), jax.tree_util.tree_unflatten(treedef, restored)


def load_latest(folder: str | os.PathLike, template: Any) -> tuple[int, Any] | None:
    """The newest checkpoint in ``folder`` that reads back intact, or None when there is none.

    Each newer file that fails its checks is skipped with a warning naming it and why."""
    for _, path in reversed(list_checkpoints(folder)):
        try:
            return load(path, template)
        except CheckpointError as err:
            warnings.warn(f"{err}; falling back to the previous checkpoint", stacklevel=2)
    return None
