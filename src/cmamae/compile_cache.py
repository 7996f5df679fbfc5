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

JAX's cache still traces and lowers every program before it can look it up (its key is a hash
of the lowered module): with it alone a second default run still spent 1.2-2.5 s compiling
(against 5-7 s the first time). So the runner also keeps its programs whole
(:func:`load_or_compile`, in the ``programs`` subfolder; ``CMAMAE_WHOLE_PROGRAMS=off`` turns
that off): each as JAX exports it (StableHLO), looked up *before* tracing under a key that
names everything a program can depend on: the entry format, Python, the host CPU, every
installed distribution's version, a hash of the cmamae package's files, the JAX backend and
devices, JAX's settings and ``XLA_*``/``JAX_*`` environment variables, the caller's context (a
run's resolved configuration, only for registered cmamae tasks and algorithms), the program's
static settings and its arguments' shapes, dtypes, shardings and tree structure. Its compile
then hits JAX's cache. A process never reads a half-written entry (written to a temporary
file, then renamed); an entry that does not load (damaged, checksum wrong, from another JAX)
is traced and written anew.
"""

from __future__ import annotations

import collections
import hashlib
import json
import os
import pickle
import platform
import sys
import tempfile
import time
import zlib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import jax
import numpy as np

ENV = "CMAMAE_COMPILE_CACHE"
_OFF = ("off", "0", "false", "no", "none")
#: smallest compile time (s) worth an entry: the compiles of eager single operations (ms)
#: stay out, every chunk of the compiled loop goes in
MIN_COMPILE_S = 0.1
#: the cache folder's size bound (bytes); least recently used entries go first
MAX_BYTES = 2 << 30
#: the bound of the whole-program subfolder (bytes), on top of :data:`MAX_BYTES`
MAX_PROGRAM_BYTES = 1 << 30
PROGRAMS = "programs"  # the subfolder of whole programs
WHOLE_PROGRAMS_ENV = "CMAMAE_WHOLE_PROGRAMS"  # "off": no whole programs
_FORMAT = 2  # of an entry (2: exported StableHLO); a new format gives new keys
_MAGIC = b"cmamae-exported-program\n"

#: what :func:`load_or_compile` did in this process: "loaded" (a hit), "compiled" (a miss or no
#: cache), "written", "unusable" (an entry that did not load), "unserializable" (a program JAX
#: cannot export)
stats: collections.Counter = collections.Counter()

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


# --------------------------------------------------------------------------- whole programs
# JAX settings that change where programs are cached or what is logged, not the programs.
_NOT_PROGRAM_SETTINGS = ("cache", "log", "explain", "dump", "traceback", "pprint", "debug_log")


def programs_dir() -> Path | None:
    """The folder of whole programs: a subfolder of the cache folder :func:`enable` set
    (None: no cache, a JAX cache folder configured by the user, or
    ``CMAMAE_WHOLE_PROGRAMS=off``)."""
    if os.environ.get(WHOLE_PROGRAMS_ENV, "").strip().lower() in _OFF:
        return None
    return None if _ours is None else Path(_ours) / PROGRAMS


def load_or_compile(
    name: str,
    fn: Callable,
    args: tuple,
    context: Mapping[str, Any] | None,
    static: Any = None,
    donate_argnums: tuple[int, ...] = (),
) -> tuple[Callable, bool]:
    """``fn`` compiled for ``args`` (``jax.jit(fn, donate_argnums=...)``, called like ``fn``),
    its traced program loaded from the whole-program cache when it holds one under the same
    key, else traced, stored and compiled. Returns ``(program, loaded)``.

    An entry is the program as JAX exports it (StableHLO, :mod:`jax.export`), not an
    executable: a second process skips tracing and lowering, and the compile goes through
    JAX's persistent cache as every other compile does. (Executables serialized by XLA's CPU
    backend (jaxlib 0.10) could lack kernels shared with an earlier compile of the process,
    and another process then failed running them: "Function ... not found".)

    ``fn``: a function of ``args`` alone (its static settings bound), named ``name`` in JAX's
    cache. ``args``: a tuple of pytrees of arrays (shapes, dtypes, shardings and structure are
    part of the key). ``context``: a JSON-able description that, with cmamae's source and the
    environment, fixes what ``fn`` traces (e.g. a run's resolved configuration); None for
    programs that depend on something the key cannot name (user-defined functions): then only
    JAX's own cache is used. ``static``: the program's other static settings (JSON-able or
    with a stable ``repr``), e.g. a chunk length. Programs JAX cannot export (host callbacks)
    or placed on several devices are compiled without an entry."""
    folder = programs_dir()
    leaves, in_tree = jax.tree_util.tree_flatten(args)
    if folder is None or context is None or not _one_device(leaves):
        stats["compiled"] += 1
        return _compile(name, fn, args, donate_argnums), False
    donated = _donated_leaves(args, donate_argnums)
    key_text = _key_text(name, args, context, static)
    path = folder / f"{name}-{hashlib.sha256(key_text.encode()).hexdigest()}.stablehlo"
    found = _read(path, key_text)
    if found is not None:
        exported, out_tree = found
        stats["loaded"] += 1
        return _compile_exported(name, exported, out_tree, leaves, donated), True
    box = {}

    def flat(*flat_args):
        out = fn(*jax.tree_util.tree_unflatten(in_tree, flat_args))
        out_leaves, box["out_tree"] = jax.tree_util.tree_flatten(out)
        return out_leaves

    stats["compiled"] += 1
    try:
        exported = jax.export.export(jax.jit(_named(name, flat)))(*leaves)
        blob = exported.serialize()
    except Exception:  # noqa: BLE001 - e.g. a host callback: compiled without an entry
        stats["unserializable"] += 1
        return _compile(name, fn, args, donate_argnums), False
    _write(path, key_text, (bytes(blob), box["out_tree"]))
    # compiled from the export, as the next process will: the same module, a JAX cache hit there
    return _compile_exported(name, exported, box["out_tree"], leaves, donated), False


def _compile(name: str, fn: Callable, args: tuple, donate_argnums: tuple[int, ...]):
    """``fn`` compiled for ``args`` without an entry (JAX's persistent cache only)."""
    return jax.jit(_named(name, fn), donate_argnums=donate_argnums).lower(*args).compile()


def _named(name: str, fn: Callable) -> Callable:
    """``fn`` under the name JAX gives its program (``jit_<name>``)."""

    def program(*args):
        return fn(*args)

    program.__name__ = program.__qualname__ = name
    return program


def _one_device(leaves) -> bool:
    sharding = [getattr(a, "sharding", None) for a in leaves]
    return all(s is None or len(s.device_set) == 1 for s in sharding)


def _donated_leaves(args: tuple, donate_argnums: tuple[int, ...]) -> tuple[int, ...]:
    """The flat-leaf positions of the arguments ``donate_argnums`` of ``args``."""
    donated, offset = [], 0
    for i, arg in enumerate(args):
        count = len(jax.tree_util.tree_leaves(arg))
        if i in donate_argnums:
            donated += range(offset, offset + count)
        offset += count
    return tuple(donated)


def _compile_exported(name, exported, out_tree, leaves, donated: tuple[int, ...]) -> Callable:
    """The exported program compiled (through JAX's persistent cache) for ``leaves``, called
    with the original argument pytrees and returning the original output pytree."""
    program = jax.jit(_named(name, exported.call), donate_argnums=donated)
    compiled = program.lower(*leaves).compile()

    def call(*args):
        out = compiled(*jax.tree_util.tree_leaves(args))
        return jax.tree_util.tree_unflatten(out_tree, out)

    return call


def _key_text(name: str, args: tuple, context: Mapping[str, Any], static: Any) -> str:
    leaves, treedef = jax.tree_util.tree_flatten(args)
    avals = [
        [
            list(np.shape(a)),
            str(a.dtype),
            bool(getattr(a, "weak_type", False)),
            repr(getattr(a, "sharding", None)),
        ]
        for a in leaves
    ]
    return json.dumps(
        {
            "format": _FORMAT,
            "program": name,
            "environment": _environment(),
            "context": context,
            "static": repr(static),
            "tree": str(treedef),
            "args": avals,
        },
        sort_keys=True,
        default=repr,
    )


_environment_memo: dict[str, Any] = {}


def _environment() -> dict[str, Any]:
    """What every program of this process depends on besides its own inputs (computed once
    per process, but JAX's settings each time: they may change)."""
    if not _environment_memo:
        _environment_memo.update(
            python=sys.version,
            machine=platform.machine(),
            cpu=_cpu_description(),
            distributions=_distributions(),
            cmamae_files=_package_hash(),
        )
    devices = jax.devices()
    settings = {
        k: repr(v)
        for k, v in jax.config.values.items()
        if not any(word in k for word in _NOT_PROGRAM_SETTINGS)
    }
    env = {k: v for k, v in os.environ.items() if k.startswith(("XLA_", "JAX_", "LIBTPU"))}
    env.pop("JAX_COMPILATION_CACHE_DIR", None)
    return {
        **_environment_memo,
        "backend": [jax.default_backend(), devices[0].client.platform_version],
        "devices": [[d.id, d.platform, d.device_kind, d.process_index] for d in devices],
        "process_count": jax.process_count(),
        "jax_settings": settings,
        "environment_variables": env,
    }


def _cpu_description() -> str:
    """The host CPU's model and instruction-set flags (Linux), so that a cache folder shared
    between machines never hands one machine code built for another's CPU."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor()
    first = text.split("\n\n", 1)[0]
    keep = ("vendor_id", "model name", "flags", "Features", "CPU implementer", "CPU part")
    lines = [ln for ln in first.splitlines() if ln.split(":", 1)[0].strip() in keep]
    return "\n".join(lines) or platform.processor()


def _distributions() -> list[str]:
    """Every installed distribution with its version, from the metadata folders' names on
    ``sys.path`` (``jax-0.4.38.dist-info``; a listing per folder, milliseconds)."""
    found = set()
    for entry in sys.path:
        try:
            names = os.listdir(entry or ".")
        except OSError:
            continue
        found.update(n for n in names if n.endswith((".dist-info", ".egg-info")))
    return sorted(found)


def _package_hash() -> str:
    """A hash of every file of the cmamae package (sources and data, not bytecode)."""
    root = Path(__file__).resolve().parent
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        if path.is_dir() or "__pycache__" in path.parts or path.suffix in (".pyc", ".pyo"):
            continue
        digest.update(str(path.relative_to(root)).encode() + b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def _read(path: Path, key_text: str):
    """``(exported, out_tree)`` stored at ``path`` under ``key_text``; None when there is
    none or it does not load (damaged, another key, another JAX): then it is written anew."""
    try:
        data = path.read_bytes()
    except OSError:
        return None
    try:
        header = len(_MAGIC) + 32
        if data[: len(_MAGIC)] != _MAGIC or hashlib.sha256(data[header:]).digest() != bytes(
            data[len(_MAGIC) : header]
        ):
            raise ValueError("damaged (checksum)")
        stored_key, blob, out_tree = pickle.loads(zlib.decompress(data[header:]))
        if stored_key != key_text:
            raise ValueError("another program's key")
        exported = jax.export.deserialize(bytearray(blob))
    except Exception as err:  # noqa: BLE001 - any unusable entry is recompiled, never fatal
        import warnings

        stats["unusable"] += 1
        warnings.warn(f"compile cache: ignoring {path}: {err}; compiling anew", stacklevel=3)
        return None
    try:
        os.utime(path)  # recently used: evicted last
    except OSError:
        pass
    return exported, out_tree


def _write(path: Path, key_text: str, entry: tuple) -> None:
    """Store ``entry`` (the serialized export and the output tree) at ``path``: a temporary
    file renamed into place, so that readers see the whole entry or none."""
    payload = zlib.compress(pickle.dumps((key_text, *entry)), 1)
    try:
        path.parent.mkdir(mode=0o700, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(_MAGIC + hashlib.sha256(payload).digest() + payload)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError:
        return  # a full or read-only disk: the run goes on without the entry
    stats["written"] += 1
    _evict(path.parent)


def _evict(folder: Path) -> None:
    """Hold ``folder`` to :data:`MAX_PROGRAM_BYTES`, least recently used entries first;
    temporary files of processes that died mid-write (older than an hour) go too."""
    entries = []
    for path in folder.iterdir():
        try:
            st = path.stat()
        except OSError:
            continue
        if path.name.startswith(".tmp-"):
            if st.st_mtime < time.time() - 3600:
                path.unlink(missing_ok=True)
            continue
        entries.append((st.st_mtime, st.st_size, path))
    total = sum(size for _, size, _ in entries)
    for _, size, path in sorted(entries, key=lambda e: e[0]):
        if total <= MAX_PROGRAM_BYTES:
            break
        path.unlink(missing_ok=True)
        total -= size
