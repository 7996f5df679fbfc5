"""JAX's persistent compilation cache for cmamae's compiled programs: compile once per machine.

Every run, resume, replay and report used to compile its programs anew (3-8 s for sphere and
arm, 20-200 s for locomotion on a 2-core CPU). :func:`enable` points JAX's persistent cache
at a per-user folder, so a second process with the same program loads the executable instead:

* the folder: ``$CMAMAE_COMPILE_CACHE`` if set, else ``$XDG_CACHE_HOME/cmamae/jax`` (by
  default ``~/.cache/cmamae/jax``), created mode 0700 (JAX runs what it finds there, so the
  folder must not be writable by others);
* ``CMAMAE_COMPILE_CACHE=off`` (or ``0``, ``false``, ``no``, ``none``) or ``cmamae
  --no-compile-cache``: no cache;
* a cache folder the user set for JAX itself (``JAX_COMPILATION_CACHE_DIR`` or
  ``jax.config``) is left as it is.

Programs that compile in at least :data:`MIN_COMPILE_S` are cached (JAX's default, 1 s, left
out the chunks of small problems, which compile in 0.2-1 s here); entries of any size are kept.
JAX's least-recently-used eviction holds the folder to :data:`MAX_BYTES`, and with it JAX locks
the folder (``filelock``, a dependency) around every read and write. Without that lock JAX
writes entries in place, unlocked, and another process reading an entry half written
crashed (a segmentation fault in the executable's deserialization, seen with several cmamae
processes at once), so the cache stays off where ``filelock`` cannot be imported.
"""

from __future__ import annotations

import os
from pathlib import Path

import jax

ENV = "CMAMAE_COMPILE_CACHE"
_OFF = ("off", "0", "false", "no", "none")
#: smallest compile time (s) worth an entry: the compiles of eager single operations (ms)
#: stay out, every chunk of the compiled loop goes in
MIN_COMPILE_S = 0.1
#: the cache folder's size bound (bytes); least recently used entries go first
MAX_BYTES = 2 << 30

_ours: str | None = None  # the folder this module set, None when it set none
_turned_off = False  # disable() was called: enable("default") does nothing from then on


def default_dir() -> Path | None:
    """The folder :func:`enable` uses: from ``$CMAMAE_COMPILE_CACHE`` (None when that says
    off), else ``$XDG_CACHE_HOME/cmamae/jax`` or ``~/.cache/cmamae/jax``."""
    value = os.environ.get(ENV, "").strip()
    if value.lower() in _OFF:
        return None
    if value:
        return Path(value).expanduser()
    base = os.environ.get("XDG_CACHE_HOME", "").strip() or Path.home() / ".cache"
    return Path(base) / "cmamae" / "jax"


def enable(path: str | os.PathLike | None = "default") -> Path | None:
    """Use JAX's persistent compilation cache in ``path`` (``"default"``: :func:`default_dir`,
    or nothing after :func:`disable`; None: turn off a cache this module turned on).
    Idempotent and cheap; call it before the first compile. Returns the folder in use, or None
    when there is none.

    A cache folder configured for JAX by the user is kept. A folder that cannot be created
    leaves the cache off (a warning says why)."""
    global _ours
    configured = jax.config.jax_compilation_cache_dir
    if configured and configured != _ours:
        return Path(configured)  # the user's own JAX setting wins
    if path == "default":
        folder = None if _turned_off else default_dir()
    else:
        folder = path
    if folder is None:
        if _ours is not None:
            _set(None)
        return None
    folder = Path(folder).expanduser().absolute()
    if _ours == str(folder):
        return folder
    if not _have_filelock():
        import warnings

        warnings.warn(
            "compilation cache off: it needs the filelock package (pip install filelock) to "
            "be safe with several processes",
            stacklevel=2,
        )
        return None
    try:
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as err:
        import warnings

        warnings.warn(f"compilation cache off: cannot create {folder}: {err}", stacklevel=2)
        return None
    _give_entries_access_times(folder)
    _set(str(folder))
    return folder


def _give_entries_access_times(folder: Path) -> None:
    """Give every cache entry without one an access-time file (written now), as JAX's
    size-bounded cache keeps them: entries written without the bound (cmamae before it set
    one) have none, and JAX's eviction then warned on every write (FileNotFoundError)."""
    import time

    stamp = time.time_ns().to_bytes(8, "little")
    for entry in folder.glob("*-cache"):
        atime = entry.with_name(entry.name[: -len("-cache")] + "-atime")
        if not atime.exists():
            try:
                atime.write_bytes(stamp)
            except OSError:
                return


def disable() -> None:
    """Turn off a cache that :func:`enable` turned on and keep ``enable()`` from turning it
    on again in this process (``--no-compile-cache``); a user's own JAX setting stays."""
    global _turned_off
    _turned_off = True
    enable(None)


def _have_filelock() -> bool:
    # JAX's size-bounded cache locks the folder with the optional ``filelock`` package.
    import importlib.util

    return importlib.util.find_spec("filelock") is not None


def _set(folder: str | None) -> None:
    global _ours
    from jax.experimental.compilation_cache import compilation_cache

    jax.config.update("jax_compilation_cache_dir", folder)
    if folder is not None:
        jax.config.update("jax_persistent_cache_min_compile_time_secs", MIN_COMPILE_S)
        jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
        if jax.config.jax_compilation_cache_max_size == -1:  # -1: no eviction, no locking
            jax.config.update("jax_compilation_cache_max_size", MAX_BYTES)
    # JAX decides once per process, at the first compile, whether a cache is in use.
    compilation_cache.reset_cache()
    _ours = folder
