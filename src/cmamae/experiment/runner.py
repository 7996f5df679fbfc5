"""The experiment runner: a run folder, the compiled loop in chunks, metrics, checkpoints, resume.

``start(config, out_root)`` makes ``out_root/<name>/``, writes ``config.json`` and runs;
``resume(run_dir)`` continues a run from its newest valid checkpoint. Either way all seeds advance
together in one compiled ``jit(vmap(lax.scan))`` call per chunk (:mod:`cmamae.compiled_loop`);
between chunks the host appends metrics rows, draws progress and, every ``checkpoint_every``
iterations, writes a checkpoint. Iteration ``i`` of a seed always uses the same key
(``fold_in``), so a run that was killed and resumed ends bitwise equal, on the same machine, to
one that never stopped.

Ctrl-C (SIGINT) or SIGTERM: the current chunk finishes, a checkpoint and the archives are
written and the run stops with status "interrupted"; a second signal aborts at once. A full
disk stops the run with :class:`~cmamae.experiment.checkpoint.DiskFullError` (one line: the
file and how to resume); every file written before is intact, so ``--resume`` continues from
the last checkpoint once there is space.

Compiled programs go to JAX's persistent compilation cache (:mod:`cmamae.compile_cache`), so
a second run, a resume or a replay of the same setup loads them instead of compiling them.
The state init, the chunks and the host ask/tell are also kept whole (exported programs, keyed
by the run's resolved configuration: :func:`program_context`), which skips their tracing and
lowering too (``CMAMAE_WHOLE_PROGRAMS=off``: only JAX's cache).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import io
import json
import shutil
import signal
import threading
import time
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from cmamae import compile_cache, provenance, rundir
from cmamae.archives import ArchiveState, with_provenance, without_provenance
from cmamae.compiled_loop import evaluate_fn, init_states, seed_keys
from cmamae.es.lm_ma_es import LMMAESState
from cmamae.experiment import checkpoint
from cmamae.experiment import progress as progress_lib
from cmamae.experiment.advance import Execution
from cmamae.experiment.config import ConfigError, ResolvedRun, RunConfig
from cmamae.provenance import Layout

_STAT_COLUMNS = [c for c in rundir.METRIC_COLUMNS if c not in ("seed", "iteration", "evals_per_s")]


class RunExistsError(ConfigError):
    """The run folder exists and neither ``force`` nor ``resume`` was given."""


@dataclasses.dataclass
class RunOutcome:
    """What a finished (or interrupted) run left behind.

    Attributes:
        run_dir: the run folder.
        status: "finished" or "interrupted".
        iterations_done: iterations completed and saved.
        resumed_from: the iteration a resumed run started from (None: a fresh start).
    """

    run_dir: Path
    status: str  # "finished" or "interrupted"
    iterations_done: int
    resumed_from: int | None


def start(
    config: RunConfig,
    out_root: str | Path = "runs",
    *,
    force: bool = False,
    quiet: bool = False,
    tensorboard: bool = False,
    plots: bool = True,
    execution: Execution | None = None,
) -> RunOutcome:
    """Validate ``config``, create its run folder under ``out_root`` and run it.

    Raises ConfigError (before touching the disk) for a bad config, RunExistsError when the
    folder exists and ``force`` is False (with ``force`` it is emptied first). ``execution``:
    where iterations run (devices, Dask cluster; :mod:`cmamae.experiment.advance`)."""
    resolved = config.build()
    execution = execution or Execution()
    execution.validate(resolved.task, resolved.algorithm.scheduler)
    run_dir = Path(out_root) / resolved.name
    if run_dir.exists() and any(run_dir.iterdir()):
        if not force:
            raise RunExistsError(
                f"run folder {str(run_dir)!r} exists; pass --force to overwrite it, --resume "
                "to continue it, or --name to pick another"
            )
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    text = json.dumps(resolved.to_json(), indent=2)
    checkpoint.atomic_write(run_dir / rundir.CONFIG, lambda f: f.write(text.encode()))
    return _execute(
        resolved, run_dir, quiet=quiet, tensorboard=tensorboard, plots=plots, execution=execution
    )


def resume(
    run_dir: str | Path,
    *,
    quiet: bool = False,
    tensorboard: bool = False,
    plots: bool = True,
    execution: Execution | None = None,
) -> RunOutcome:
    """Continue the run in ``run_dir`` from its newest valid checkpoint (from the start if
    none is valid). Raises NotARunError if ``run_dir`` is not a run folder."""
    run_dir = Path(run_dir)
    resolved = ResolvedRun.from_json(rundir.read_config(run_dir))
    execution = execution or Execution()
    execution.validate(resolved.task, resolved.algorithm.scheduler)
    return _execute(
        resolved, run_dir, quiet=quiet, tensorboard=tensorboard, plots=plots, execution=execution
    )


@contextlib.contextmanager
def stop_on_signals():
    """Yields an Event that the first SIGINT/SIGTERM sets (the second aborts at once)."""
    stop = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return

    def handler(signum, frame):
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()

    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def _tensorboard_writer(run_dir: Path):
    for module in ("tensorboardX", "torch.utils.tensorboard"):
        try:
            mod = __import__(module, fromlist=["SummaryWriter"])
        except ImportError:
            continue
        return mod.SummaryWriter(str(run_dir / "tensorboard"))
    raise ConfigError("--tensorboard needs tensorboardX (pip install tensorboardX) or torch")


def _metric_rows(metrics: dict, first_iteration: int, resolved: ResolvedRun, rate: float):
    """Rows of metrics.csv for the logged iterations of one chunk (``metrics``: name ->
    ``(seeds, length)``; iteration numbers count iterations done, from ``first_iteration``)."""
    length = metrics["evaluations"].shape[1]
    rows = []
    for j in range(length):
        it = first_iteration + j
        if it % resolved.log_every and it != resolved.iterations:
            continue
        for s in range(resolved.seeds):
            row = {"seed": s, "iteration": it}
            row.update({c: metrics[c][s, j].item() for c in _STAT_COLUMNS})
            row["evals_per_s"] = rate
            rows.append(row)
    return rows


def _write_metrics(run_dir: Path, rows: list[dict]) -> None:
    buf = io.StringIO()
    buf.write(",".join(rundir.METRIC_COLUMNS) + "\n")
    for r in rows:
        buf.write(",".join(repr(r[c]) for c in rundir.METRIC_COLUMNS) + "\n")
    data = buf.getvalue().encode()
    checkpoint.atomic_write(run_dir / rundir.METRICS, lambda f: f.write(data))


def _read_metric_rows(run_dir: Path, up_to: int) -> list[dict]:
    frame = rundir.read_metrics(run_dir)
    frame = frame[frame["iteration"] <= up_to]
    return [
        {
            c: (
                int(v)
                if c in ("seed", "iteration", "evaluations", "num_elites", "num_invalid")
                else float(v)
            )
            for c, v in row.items()
        }
        for row in frame.to_dict("records")
    ]


def _save_archives(run_dir: Path, resolved: ResolvedRun, states) -> None:
    scheduler = resolved.algorithm.scheduler
    best = scheduler.best_state(states)
    (run_dir / rundir.ARCHIVE_DIR).mkdir(exist_ok=True)
    for s in range(resolved.seeds):
        # indexed in NumPy: JAX would compile an indexing program per leaf shape in every run
        one = jax.tree_util.tree_map(lambda a, s=s: np.asarray(a)[s], best)
        path = rundir.archive_path(run_dir, s)
        checkpoint.atomic_write(path, lambda f, one=one: scheduler.best_archive.save_npz(one, f))


def _seed_mean(metrics: dict) -> dict[str, float]:
    return {k: float(np.mean(v[:, -1])) for k, v in metrics.items()}


def _execute(resolved: ResolvedRun, run_dir: Path, **kw) -> RunOutcome:
    # OpenBLAS threads (behind JAX's CPU eigh) fight XLA's own threads; one BLAS thread is
    # 10-100x faster for CMA-ES's eigendecomposition here (see cmamae.es.cma_es).
    from threadpoolctl import threadpool_limits

    compile_cache.enable()
    with threadpool_limits(1, user_api="blas"):
        try:
            return _execute_run(resolved, run_dir, **kw)
        except checkpoint.DiskFullError as err:
            raise checkpoint.DiskFullError(
                err.errno,
                f"{err.strerror}; free some space, then continue with: "
                f"cmamae run --resume {run_dir}",
            ) from err


def _execute_run(resolved: ResolvedRun, run_dir: Path, *, quiet, tensorboard, plots, execution):
    task, scheduler = resolved.task, resolved.algorithm.scheduler
    batch = scheduler.evaluations_per_iteration
    evaluate = evaluate_fn(scheduler, task, repr(resolved.config.algo))
    context = program_context(resolved)
    init_keys, run_keys = _seed_keys(resolved, context)
    ckpt_dir = run_dir / rundir.CHECKPOINT_DIR
    writer = _tensorboard_writer(run_dir) if tensorboard else None

    init, _ = compile_cache.load_or_compile(
        "init_states", functools.partial(init_states, scheduler, task), (init_keys,), context
    )
    # Checkpoints leave out what equals the initial state (noise tables): rebuilt from the key.
    initial = init(init_keys)
    template = jax.tree_util.tree_map(
        lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, weak_type=getattr(a, "weak_type", False)),
        initial,
    )
    initial_leaves = checkpoint.InitialLeaves(initial)
    found = _load_checkpoint(ckpt_dir, template, initial)
    if found is None:
        if checkpoint.list_checkpoints(ckpt_dir):
            warnings.warn("no valid checkpoint; starting the run over", stacklevel=2)
        done, states, rows = 0, initial, []
        resumed_from = None
    else:
        done, states = found
        rows = _read_metric_rows(run_dir, done)
        resumed_from = done
    del initial

    status = "finished"
    with (
        execution.open(scheduler, task, run_keys, evaluate, context) as advance,
        progress_lib.make(resolved.evals, quiet) as progress,
        stop_on_signals() as stop,
    ):
        states = advance.place(states)
        mesh = getattr(advance, "mesh", None)  # host-side advances have none
        _record_layout(run_dir, done, Layout.of(resolved.seeds, mesh, task.host_evaluated))
        if resumed_from is not None:
            progress.message(f"resuming {run_dir} from iteration {done:,}")
        elif resolved.rounding_note():
            progress.message(resolved.rounding_note())
        while done < resolved.iterations:
            next_ckpt = (done // resolved.checkpoint_every + 1) * resolved.checkpoint_every
            length = min(resolved.chunk, next_ckpt - done, resolved.iterations - done)
            advance.prepare(states, length, progress)  # compiles a new chunk length
            t0 = time.perf_counter()
            states, metrics = advance(states, length)
            rate = resolved.seeds * batch * length / max(time.perf_counter() - t0, 1e-9)
            new_rows = _metric_rows(metrics, done + 1, resolved, rate)
            rows.extend(new_rows)
            done += length
            latest = _seed_mean(metrics)
            progress.update(done * batch, latest, rate)
            if writer is not None:
                for key in ("qd_score", "norm_qd_score", "coverage", "obj_max", "obj_mean"):
                    writer.add_scalar(key, latest[key], done * batch)
            _write_metrics(run_dir, rows)
            at_end = done == resolved.iterations
            if at_end or done % resolved.checkpoint_every == 0 or stop.is_set():
                checkpoint.save(ckpt_dir, done, states, initial=initial_leaves)
            if stop.is_set() and not at_end:
                status = "interrupted"
                progress.message(
                    f"interrupted: checkpoint at iteration {done:,} in {ckpt_dir}; "
                    f"continue with: cmamae run --resume {run_dir}"
                )
                break
    if writer is not None:
        writer.close()
    if done > 0:
        _save_archives(run_dir, resolved, states)
    if plots and status == "finished":
        _write_plots(run_dir)
    return RunOutcome(run_dir, status, done, resumed_from)


@functools.partial(jax.jit, static_argnums=1)
def _keys_of_seed(seed, seeds: int):
    return seed_keys(jax.random.key(seed), seeds)


def _seed_keys(resolved: ResolvedRun, context) -> tuple[jax.Array, jax.Array]:
    """``seed_keys(jax.random.key(seed), seeds)`` of the run (``(init_keys, run_keys)``, each
    ``(seeds,)``) as one program from the compile cache; done eagerly, its four small
    operations compiled anew in every process (0.3 s). Bitwise the eager keys (the test)."""
    seed = resolved.config.seed
    if seed >= 2**31:  # beyond int32: the eager path, which takes any seed JAX takes
        return seed_keys(jax.random.key(seed), resolved.seeds)
    seed = np.int32(seed)
    program, _ = compile_cache.load_or_compile(
        "seed_keys",
        lambda s: _keys_of_seed(s, resolved.seeds),
        (seed,),
        context,
        static=resolved.seeds,
    )
    return program(seed)


# config.json entries that act on the host only (the run folder's name, logging and checkpoint
# intervals) or restate resolved values (the overrides as given, the budget before rounding)
_HOST_ONLY = ("name", "setting_overrides", "evals_requested", "log_every", "checkpoint_every")


def program_context(resolved: ResolvedRun) -> dict | None:
    """What, besides cmamae's source and the environment, fixes the run's compiled programs:
    the resolved configuration (:meth:`ResolvedRun.to_json` without :data:`_HOST_ONLY`), for
    :func:`cmamae.compile_cache.load_or_compile`. None when the task or the algorithm was
    registered from outside the cmamae package (its code is not in the key)."""
    from cmamae import algorithms
    from cmamae.tasks.base import TASKS

    defined_in = (
        TASKS.get(resolved.config.task).__module__,
        algorithms.ALGORITHMS.get(resolved.config.algo).__module__,
    )
    if not all(m == "cmamae" or m.startswith("cmamae.") for m in defined_in):
        return None
    return {k: v for k, v in resolved.to_json().items() if k not in _HOST_ONLY}


def _load_checkpoint(ckpt_dir: Path, template, initial):
    """The newest valid checkpoint (warning about each file skipped), also from runs written
    by earlier versions (:func:`_without_provenance`: their elites' provenance is then
    unknown, -1)."""
    with warnings.catch_warnings(record=True) as skipped:
        warnings.simplefilter("always")
        found = checkpoint.load_latest(ckpt_dir, template, initial=initial)
    if found is None and skipped:  # perhaps written before provenance: the old structure
        with warnings.catch_warnings(record=True) as skipped_old:
            warnings.simplefilter("always")
            found = checkpoint.load_latest(ckpt_dir, _without_provenance(template))
        if found is not None:
            skipped = skipped_old
            found = (found[0], _with_provenance(found[1]))
    for w in skipped:
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return found


def _legacy_nodes(x) -> bool:
    return isinstance(x, (ArchiveState, LMMAESState))


def _without_provenance(states):
    """The tree structure of states written by earlier versions: archives without provenance
    (``eval_iteration``, ``eval_row``), LM-MA-ES without its Gram matrix."""

    def old(node):
        if isinstance(node, ArchiveState):
            return without_provenance(node)
        if isinstance(node, LMMAESState):
            return node.replace(gram=None)
        return node

    return jax.tree_util.tree_map(old, states, is_leaf=_legacy_nodes)


def _with_provenance(states):
    """States of the old structure brought up to date: unknown provenance (-1), the Gram
    matrix of the LM-MA-ES direction vectors recomputed (M Mᵀ, as ``tell`` keeps it)."""

    def new(node):
        if isinstance(node, ArchiveState):
            return with_provenance(node)
        if isinstance(node, LMMAESState) and node.gram is None:
            m = node.vectors
            return node.replace(gram=jnp.einsum("...kn,...jn->...kj", m, m))
        return node

    return jax.tree_util.tree_map(new, states, is_leaf=_legacy_nodes)


def _record_layout(run_dir: Path, iteration: int, layout: Layout) -> None:
    """Add the device layout and environment from ``iteration`` on to the run's provenance
    file (a new segment only when they changed, e.g. a resume on another machine)."""
    record = rundir.read_provenance(run_dir) or {"format": provenance.FORMAT, "segments": []}
    segment = {"layout": layout.to_json(), "environment": provenance.environment()}
    last = record["segments"][-1] if record["segments"] else None
    if last is not None and {k: last[k] for k in segment} == segment:
        return
    record["segments"] = [s for s in record["segments"] if s["from_iteration"] < iteration]
    record["segments"].append({"from_iteration": int(iteration), **segment})
    text = json.dumps(record, indent=2)
    checkpoint.atomic_write(run_dir / rundir.PROVENANCE, lambda f: f.write(text.encode()))


def _write_plots(run_dir: Path) -> None:
    from cmamae.viz import archive_plot, report

    out = run_dir / rundir.PLOT_DIR
    archive_plot.plot_archive(run_dir, out, seed=0)
    report.plot_curves([run_dir], out / "qd_curves.png")
