"""Checkpoints: a state pytree to one ``.npz`` file and back, atomically and checksummed.

A checkpoint holds the leaves of the state (PRNG keys as their raw key data), a JSON header
(iteration, leaf shapes and dtypes) and a SHA-256 over the header and every stored leaf's
bytes. It is written to a temporary file in the same folder, flushed and fsynced, then renamed
into place, so a reader sees either the old set of checkpoints or the new one, never half a
file. On reading, a file that does not parse or whose checksum differs is reported and skipped
for the previous one. Nothing is unpickled: the files are arrays plus JSON.

Only what cannot be recomputed is stored:

* Leaves equal to the run's initial state (:class:`InitialLeaves`): the evolution strategies'
  noise tables, drawn once from the run's key at ``init`` and never changed (126 of the 143 MB
  of a default-run checkpoint). The header keeps each one's SHA-256; loading rebuilds the
  initial state from the run's key (``initial``) and checks the hash, so a resumed run stays
  bitwise equal to one that never stopped (or is refused, should the code draw other tables).
* Archives row-sparse (:mod:`cmamae.rowsparse`): a leaf whose all-zero rows (along the last
  axis) outweigh a bit mask of them is stored as its non-zero rows plus the mask, and restored
  bitwise.

Formats 1 (every leaf dense) and 2 (row-sparse from 1 MiB on, at least half the rows empty)
still read. Files are created with the user's umask (``tempfile.mkstemp`` alone makes them
0600, unreadable to the others sharing a run folder). A full disk (``ENOSPC``/``EDQUOT``)
raises :class:`DiskFullError` naming the file, with the temporary file removed and the
previous checkpoints intact.
"""

from __future__ import annotations

import errno
import functools
import hashlib
import json
import os
import re
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import numpy as np

from cmamae import rowsparse, validate

_NAME = re.compile(r"^ckpt-(\d{9})\.npz$")
# 3: leaves of the initial state by hash, row-sparse whenever smaller; 2: row-sparse leaves;
# 1: every leaf dense. All three read.
_FORMAT = 3
_SPARSE_MIN_BYTES = rowsparse.MIN_BYTES
# Leaves smaller than this are always stored (hashing them would save nothing).
_INITIAL_MIN_BYTES = 1 << 16
_FULL_DISK = (errno.ENOSPC, errno.EDQUOT)


class CheckpointError(ValueError):
    """No valid checkpoint could be read."""


class DiskFullError(OSError):
    """A run file could not be written: no space left on its device (or over quota)."""

    def __str__(self) -> str:
        return self.strerror or super().__str__()


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


def _sha256(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a).data).hexdigest()


def _leaf_array(leaf) -> tuple[np.ndarray, dict]:
    """A leaf as a NumPy array plus its header entry (PRNG keys as their raw key data)."""
    if _is_key(leaf):
        a = np.asarray(jax.random.key_data(leaf))
        spec = {"key_impl": str(jax.random.key_impl(leaf))}
    else:
        a = np.asarray(leaf)
        spec = {}
    spec.update(shape=list(a.shape), dtype=a.dtype.str)
    return a, spec


class InitialLeaves:
    """The large leaves of a run's initial state, by SHA-256: what :func:`save` leaves out.

    Built once per run from the freshly initialized state (before it is donated to the
    compiled loop); holds only hashes and a 4 KiB probe per leaf, not the arrays.
    """

    _PROBE = 4096

    def __init__(self, initial: Any):
        self._known: dict[tuple, dict[bytes, str]] = {}
        for leaf in jax.tree_util.tree_leaves(initial):
            if _is_key(leaf):
                continue
            a = np.asarray(leaf)
            if a.nbytes >= _INITIAL_MIN_BYTES:
                self._known.setdefault(self._kind(a), {})[self._probe(a)] = _sha256(a)

    @staticmethod
    def _kind(a: np.ndarray) -> tuple:
        return a.shape, a.dtype.str

    def _probe(self, a: np.ndarray) -> bytes:
        flat = np.ascontiguousarray(a).reshape(-1).view(np.uint8)
        return bytes(flat[: self._PROBE]) + bytes(flat[-self._PROBE :])

    def match(self, a: np.ndarray) -> str | None:
        """The SHA-256 of ``a`` when it equals a leaf of the initial state, else None."""
        by_probe = self._known.get(self._kind(a))
        if not by_probe:
            return None
        expected = by_probe.get(self._probe(a))
        if expected is None:
            return None
        return expected if _sha256(a) == expected else None


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


def _umask() -> int:
    """The process's umask, read without changing it where Linux allows (``/proc``)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write(path: str | os.PathLike, write) -> None:
    """Call ``write(fileobj)`` on a temporary file next to ``path``, fsync, rename over it.

    The file gets the permissions of any new file (0666 less the umask). Raises
    DiskFullError naming ``path`` when the device is full; the temporary file is removed and
    an existing ``path`` is left as it was."""
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), 0o666 & ~_umask())
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        if isinstance(err, OSError) and err.errno in _FULL_DISK:
            raise DiskFullError(err.errno, f"no space left on the device to write {path}") from err
        raise
    fsync_dir(path.parent)


def _prune(folder, keep: int, before: int) -> None:
    """Delete all but the newest ``keep`` checkpoints of iterations below ``before``."""
    older = [path for it, path in list_checkpoints(folder) if it < before]
    for path in older[: max(0, len(older) - keep)]:
        path.unlink(missing_ok=True)


def save(
    folder: str | os.PathLike,
    iteration: int,
    state: Any,
    keep: int = 2,
    initial: InitialLeaves | None = None,
) -> Path:
    """Write ``state`` (any pytree of arrays) as the checkpoint after ``iteration`` iterations
    and keep the newest ``keep`` checkpoints (at most ``keep`` exist at any time for
    ``keep >= 2``: the oldest goes before the new one is written). Checkpoints of later
    iterations (a run resumed from an earlier one because they did not load) are deleted once
    the new file is in place. Leaves equal to ``initial``'s are left out and large mostly-zero
    leaves stored row-sparse (module docstring). Returns the file's path; DiskFullError when
    the device is full (the earlier checkpoints are then intact)."""
    validate.integer("keep", keep)
    entries, specs = {}, []
    for i, leaf in enumerate(jax.tree_util.tree_leaves(state)):
        a, spec = _leaf_array(leaf)
        sha = None if initial is None or "key_impl" in spec else initial.match(a)
        if sha is not None:
            spec["initial"] = sha
            specs.append(spec)
            continue
        mask = rowsparse.nonzero_rows(a, _SPARSE_MIN_BYTES)
        if mask is not None:
            spec["rows"] = int(mask.sum())
            entries[f"rows_{i:05d}"] = np.packbits(mask)
            a = rowsparse.take_rows(a, mask)
        entries[f"leaf_{i:05d}"] = a
        specs.append(spec)
    header = json.dumps({"format": _FORMAT, "iteration": int(iteration), "leaves": specs})
    entries["checksum"] = np.asarray(_digest(header, list(entries.values())))
    entries["header"] = np.asarray(header)
    path = path_for(folder, iteration)
    if keep >= 2:  # room for the new file among the kept ones, freed before it is written
        _prune(folder, keep - 1, before=iteration)
    atomic_write(path, lambda f: np.savez(f, **entries))
    for it, stale in list_checkpoints(folder):
        if it > iteration:
            stale.unlink(missing_ok=True)
    _prune(folder, keep - 1, before=iteration)
    return path


def load(
    path: str | os.PathLike, template: Any, initial: Any | Callable[[], Any] | None = None
) -> tuple[int, Any]:
    """``(iteration, state)`` from one checkpoint file, with ``template``'s tree structure
    (a pytree of arrays or ``jax.ShapeDtypeStruct``, e.g. from ``jax.eval_shape``).

    ``initial``: the run's initial state (or a function returning it, called only when
    needed), whose leaves replace those the file left out (checked by SHA-256); it must have
    the file's leaves in the file's order.

    Raises CheckpointError if the file is unreadable, torn, corrupt, does not fit the
    template, or leaves out leaves that ``initial`` does not reproduce."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            header = str(data["header"])
            checksum = str(data["checksum"])
            meta = json.loads(header)
            stored = []  # in the order they were written (and checksummed)
            for i, spec in enumerate(meta["leaves"]):
                if "initial" in spec:
                    continue
                if "rows" in spec:
                    stored.append(np.asarray(data[f"rows_{i:05d}"]))
                stored.append(np.asarray(data[f"leaf_{i:05d}"]))
    except Exception as err:  # a torn zip raises many different errors
        raise CheckpointError(f"checkpoint {path} is unreadable: {err}") from None
    if meta.get("format") not in (1, 2, _FORMAT):
        raise CheckpointError(f"checkpoint {path} has unknown format {meta.get('format')!r}")
    if _digest(header, stored) != checksum:
        raise CheckpointError(f"checkpoint {path} is corrupt (checksum mismatch)")
    arrays = _restore(path, meta["leaves"], stored, initial)
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


def _restore(path: Path, specs: list[dict], stored: list[np.ndarray], initial) -> list:
    """The full arrays of every leaf: stored (dense or row-sparse) or from ``initial``."""
    initial_leaves = None
    arrays, it = [], iter(stored)
    for i, spec in enumerate(specs):
        if "initial" in spec:
            if initial_leaves is None:
                initial_leaves = _initial_leaves(path, initial, len(specs))
            a, _ = _leaf_array(initial_leaves[i])
            if _sha256(a) != spec["initial"]:
                raise CheckpointError(
                    f"checkpoint {path}: array {i} of the initial state (a noise table) "
                    "rebuilt from the run's key differs from the one the checkpoint was "
                    "written with (was the code that draws it changed?)"
                )
            arrays.append(a)
        elif "rows" in spec:
            packed, rows = next(it), next(it)
            try:
                shape, dtype = tuple(spec["shape"]), np.dtype(spec["dtype"])
                arrays.append(rowsparse.dense(rows, packed, shape, dtype))
            except ValueError as err:
                raise CheckpointError(f"checkpoint {path} is corrupt: {err}") from None
        else:
            arrays.append(next(it))
    return arrays


def _initial_leaves(path: Path, initial, count: int) -> list:
    if initial is None:
        raise CheckpointError(
            f"checkpoint {path} leaves out arrays of the run's initial state (noise tables); "
            "loading it needs that state (initial=)"
        )
    leaves = jax.tree_util.tree_leaves(initial() if callable(initial) else initial)
    if len(leaves) != count:
        raise CheckpointError(
            f"checkpoint {path} holds {count} arrays, the initial state given has {len(leaves)}"
        )
    return leaves


def load_latest(
    folder: str | os.PathLike, template: Any, initial: Any | Callable[[], Any] | None = None
) -> tuple[int, Any] | None:
    """The newest checkpoint in ``folder`` that reads back intact (:func:`load`), or None when
    there is none.

    Each newer file that fails its checks is skipped with a warning naming it and why."""
    if callable(initial):  # built at most once over all the files tried
        initial = functools.cache(initial)
    for _, path in reversed(list_checkpoints(folder)):
        try:
            return load(path, template, initial)
        except CheckpointError as err:
            warnings.warn(f"{err}; falling back to the previous checkpoint", stacklevel=2)
    return None
