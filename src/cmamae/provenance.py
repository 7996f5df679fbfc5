"""Where each elite came from, and its scoring evaluation run again.

Every archive entry records its provenance (:class:`cmamae.archives.ArchiveState`'s
``eval_iteration`` and ``eval_row``): the scheduler iteration whose evaluation scored it and its
row among that iteration's evaluations (the gradient pre-phase batch first). With what the run
itself records (its per-seed run keys, the number of seeds and the device :class:`Layout`) that
fixes the evaluation exactly:

* the iteration's key is ``fold_in(run_key, iteration)``, split by
  :func:`cmamae.scheduler.phase_keys` into (ask, evaluate, tell) keys; the pre-phase uses
  ``fold_in(that key, 1)`` the same way (:meth:`cmamae.scheduler.Scheduler.step`);
* the batch was the phase's whole batch (``scheduler.batch_size`` or ``grad_batch_size``).

On a CPU an MJX rollout's numbers depend on the batch size and the row a policy sits in, and on
how seeds were batched (``vmap``) or sharded, but not on the other rows' contents (measured:
../shared/REFERENCE.md, "Reproducing one evaluation of a batch"). :func:`reproduce` therefore
re-runs each elite at its row of a batch of its batch size (the other rows hold the other
elites of the same evaluation, or zeros), for every seed at once with the run's seed layout, and
through the same sharded program where the run was sharded: on the same machine and versions it
gives the stored objective and measures bit for bit. Host-evaluated tasks (QDGym, native MuJoCo)
draw their episodes' arguments (reset seeds, start states) from the same key, one per row, so
their elites replay from ``episode_args(key, batch)[row]``.
"""

from __future__ import annotations

import dataclasses
import functools
import platform
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from cmamae import device_mesh
from cmamae.scheduler import phase_keys

FORMAT = 1


# --------------------------------------------------------------------------- the run's layout
@dataclasses.dataclass(frozen=True)
class Layout:
    """How a run laid out its evaluations (what, besides keys and rows, changes the numbers).

    Attributes:
        seeds: seeds advanced together (one ``vmap`` axis, or one program per seed group).
        seed_groups: devices along the mesh's "seeds" axis (1: no seed sharding).
        solution_shards: devices along its "solutions" axis (1: batches not split).
        host: the iterations ran host-side (a host-evaluated task, on Dask or in process).
    """

    seeds: int
    seed_groups: int = 1
    solution_shards: int = 1
    host: bool = False

    @classmethod
    def of(cls, seeds: int, mesh=None, host: bool = False) -> Layout:
        """The layout of a run of ``seeds`` seeds on ``mesh`` (None: one device)."""
        if mesh is None:
            return cls(seeds=seeds, host=host)
        shape = mesh.shape
        return cls(seeds, shape[device_mesh.SEEDS], shape[device_mesh.SOLUTIONS], host)

    @property
    def devices(self) -> int:
        """Devices the layout spans: seed groups × solution shards."""
        return self.seed_groups * self.solution_shards

    def mesh(self, scheduler):
        """The mesh to re-run this layout on: None for one device; ValueError when this
        process has fewer devices than the run used."""
        if self.devices == 1:
            return None
        available = jax.devices()
        if len(available) < self.devices:
            raise ValueError(
                f"the run was sharded over {self.devices} devices (seeds {self.seed_groups} x "
                f"solutions {self.solution_shards}); this process has {len(available)}"
            )
        mesh = device_mesh.batch_mesh(
            available[: self.devices], self.seeds, device_mesh.evaluation_batches(scheduler)
        )
        if mesh is None or Layout.of(self.seeds, mesh, self.host) != self:
            raise ValueError(f"cannot rebuild the device layout {self} from {self.devices} devices")
        return mesh

    def describe(self) -> str:
        """The layout in words, e.g. "2 seeds on one device, the compiled loop"."""
        where = "host-side ask/tell" if self.host else "the compiled loop"
        seeds = f"{self.seeds} seed{'s' * (self.seeds != 1)}"
        if self.devices == 1:
            return f"{seeds} on one device, {where}"
        return (
            f"{seeds} over {self.devices} devices (seeds {self.seed_groups} x solutions "
            f"{self.solution_shards}), {where}"
        )

    def to_json(self) -> dict:
        """The fields as a JSON-ready dict (what a run's provenance records)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> Layout:
        """The layout :meth:`to_json` wrote (keys it does not know are ignored)."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


def environment() -> dict[str, str]:
    """The versions and machine that a bit-for-bit replay depends on."""
    import importlib.metadata as md

    out = {}
    for dist in ("jax", "jaxlib", "mujoco", "mujoco-mjx", "numpy"):
        try:
            out[dist] = md.version(dist)
        except md.PackageNotFoundError:
            continue
    out["platform"] = jax.default_backend()
    out["device"] = str(jax.devices()[0].device_kind)
    out["machine"] = f"{platform.machine()} {_cpu_model()}".strip()
    return out


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def environment_differences(recorded: dict, current: dict | None = None) -> list[str]:
    """What differs between the recorded environment and this one, in words (empty when
    nothing recorded differs)."""
    current = environment() if current is None else current
    out = []
    for name, then in recorded.items():
        now = current.get(name)
        if now is not None and now != then:
            out.append(f"{name} {then} then, {now} now")
    return out


# --------------------------------------------------------------------------- one evaluation
@dataclasses.dataclass(frozen=True)
class Scoring:
    """The evaluation that scored one elite.

    Attributes:
        iteration: the scheduler iteration.
        phase: ``"main"`` or ``"pre-phase"`` (the gradient samples' batch).
        row: the elite's row in that phase's batch.
        batch_size: that batch's size.
    """

    iteration: int
    phase: str
    row: int
    batch_size: int


def scoring(scheduler, iteration: int, eval_row: int) -> Scoring:
    """The :class:`Scoring` of an elite stored with ``(eval_iteration, eval_row)``.

    Raises:
        ValueError: the provenance is unknown (-1) or does not fit ``scheduler``'s batches.
    """
    g, b = scheduler.grad_batch_size, scheduler.batch_size
    if iteration < 0 or eval_row < 0:
        raise ValueError("the elite has no recorded provenance")
    if eval_row >= g + b:
        raise ValueError(f"row {eval_row} is outside an iteration's {g + b} evaluations")
    if eval_row < g:
        return Scoring(int(iteration), "pre-phase", int(eval_row), g)
    return Scoring(int(iteration), "main", int(eval_row - g), b)


def evaluation_key(run_key: jax.Array, s: Scoring) -> jax.Array:
    """The key the run passed to ``evaluate`` for ``s`` (as :meth:`Scheduler.step`)."""
    key = jax.random.fold_in(run_key, s.iteration)
    if s.phase == "pre-phase":
        key = jax.random.fold_in(key, 1)
    return phase_keys(key)[1]


@functools.partial(jax.jit, static_argnums=(0, 3))
def _evaluate_seeds(evaluate: Callable, keys, solutions, mesh=None):
    """``evaluate`` on ``solutions`` ``(seeds, batch, n)`` with ``keys`` ``(seeds,)`` laid
    out as :func:`cmamae.compiled_loop.run_chunk` lays out a chunk's evaluations (one seed
    without the seed ``vmap``, seed groups on the mesh's "seeds" axis, batches split along
    "solutions")."""
    evaluate = device_mesh.sharded_evaluate(evaluate, mesh)

    def run_seeds(keys, solutions):
        if keys.shape[0] == 1:
            out = evaluate(solutions[0], keys[0])
            out = jax.tree_util.tree_map(lambda a: a[None], out)
        else:
            out = jax.vmap(evaluate)(solutions, keys)
        return out, jnp.zeros(keys.shape, jnp.int32)  # per_seed_group maps two outputs

    out, _ = device_mesh.per_seed_group(run_seeds, mesh)(keys, solutions)
    return out


def evaluate_like_run(
    evaluate: Callable, run_keys, solutions, layout: Layout, mesh=None
) -> tuple[Any, ...]:
    """``evaluate(solutions (seeds, batch, n), keys (seeds,))`` in the run's layout; returns
    ``evaluate``'s outputs with a leading seed axis (NumPy)."""
    if mesh is not None:
        run_keys, solutions = device_mesh.place((run_keys, solutions), mesh)
    out = _evaluate_seeds(evaluate, run_keys, solutions, mesh)
    return jax.tree_util.tree_map(np.asarray, out)


@dataclasses.dataclass
class Reproduction:
    """One elite's scoring evaluation, re-run.

    Attributes:
        cell: the elite's cell.
        scoring: which evaluation scored it.
        stored_objective, stored_measures ``(m,)``: as stored.
        objective, measures ``(m,)``: from the re-run.
    """

    cell: int
    scoring: Scoring
    stored_objective: float
    stored_measures: np.ndarray
    objective: float
    measures: np.ndarray

    @property
    def exact(self) -> bool:
        """Bit for bit (in the archive's dtype)."""
        dt = np.asarray(self.stored_measures).dtype
        same_f = np.asarray(self.objective, dt) == np.asarray(self.stored_objective, dt)
        return bool(same_f and np.array_equal(np.asarray(self.measures, dt), self.stored_measures))

    @property
    def ulps(self) -> float:
        """The largest gap of objective and measures in units in the last place of the
        stored values (0 when bit for bit)."""
        return rounding_ulps(
            self.objective, self.measures, self.stored_objective, self.stored_measures
        )

    @property
    def objective_gap(self) -> float:
        """Objective minus the stored objective (0 when bit for bit)."""
        return float(self.objective - self.stored_objective)

    @property
    def measures_gap(self) -> float:
        """Largest absolute difference of a measure."""
        return float(np.max(np.abs(self.measures - self.stored_measures), initial=0.0))


#: Replays within this many units in the last place count as float rounding of the same
#: evaluation (a sum compiled inside the run's fused loop may be ordered differently).
ROUNDING_ULPS = 8


def rounding_ulps(objective, measures, stored_objective, stored_measures) -> float:
    """The largest gap between replayed and stored values in units in the last place of the
    stored dtype: the objective's own, the measures' at their largest magnitude (a sum's
    rounding error scales with its terms, not with a result near zero)."""
    stored_measures = np.asarray(stored_measures)
    dt = stored_measures.dtype if np.issubdtype(stored_measures.dtype, np.floating) else np.float32
    f0 = np.asarray(stored_objective, dt)
    ulps = abs(float(objective) - float(f0)) / float(np.spacing(np.abs(f0)))
    if stored_measures.size:
        scale = np.spacing(np.max(np.abs(stored_measures)).astype(dt))
        gap = np.max(np.abs(np.asarray(measures, np.float64) - stored_measures.astype(np.float64)))
        ulps = max(ulps, float(gap / float(scale)))
    return ulps


def reproduce(
    task,
    scheduler,
    run_keys: jax.Array,
    layout: Layout,
    states: Sequence,
    cells: Sequence[Sequence[int]],
    evaluate: Callable | None = None,
) -> list[list[Reproduction]]:
    """Re-run the scoring evaluations of elites of every seed.

    Args:
        task: the run's task.
        scheduler: the run's scheduler (batch sizes).
        run_keys: ``(seeds,)`` the run's per-seed keys (:func:`cmamae.compiled_loop.seed_keys`).
        layout: how the run laid out its evaluations.
        states: one archive state per seed (the result archive) with provenance.
        cells: per seed, the cells to reproduce (occupied, with known provenance).
        evaluate: the task function the run called (default
            :func:`cmamae.compiled_loop.evaluate_fn`).

    Returns:
        Per seed, one :class:`Reproduction` per cell, in the order given. Elites scored in the
        same evaluation (iteration and phase, across seeds) share one re-run batch, at their
        rows; rows of no elite hold zeros.
    """
    from cmamae.compiled_loop import evaluate_fn

    seeds = len(states)
    if seeds != layout.seeds or len(run_keys) != seeds or len(cells) != seeds:
        raise ValueError(
            f"states, run_keys and cells must have one entry per seed of the layout "
            f"({layout.seeds}), got {len(states)}, {len(run_keys)} and {len(cells)}"
        )
    evaluate = evaluate or evaluate_fn(scheduler, task)
    groups: dict[tuple[int, str], list[tuple[int, int, Scoring]]] = {}
    for s, (state, seed_cells) in enumerate(zip(states, cells)):
        its, rows = np.asarray(state.eval_iteration), np.asarray(state.eval_row)
        for c in seed_cells:
            sc = scoring(scheduler, int(its[c]), int(rows[c]))
            groups.setdefault((sc.iteration, sc.phase), []).append((s, int(c), sc))
    results: dict[tuple[int, int], Reproduction] = {}
    mesh = None if layout.host else layout.mesh(scheduler)
    for members in groups.values():
        first = members[0][2]
        keys = jnp.stack([evaluation_key(k, first) for k in run_keys])
        placed = [(s, sc.row, np.asarray(states[s].solutions)[c]) for s, c, sc in members]
        outs = evaluate_at_rows(task, evaluate, keys, first.batch_size, placed, layout, mesh)
        for (s, c, sc), (f, m) in zip(members, outs):
            results[(s, c)] = Reproduction(
                cell=c,
                scoring=sc,
                stored_objective=np.asarray(states[s].objectives)[c].item(),
                stored_measures=np.asarray(states[s].measures)[c],
                objective=f,
                measures=m,
            )
    return [[results[(s, int(c))] for c in seed_cells] for s, seed_cells in enumerate(cells)]


def evaluate_at_rows(
    task, evaluate: Callable, keys, batch_size: int, placed, layout: Layout, mesh=None
) -> list[tuple[float, np.ndarray]]:
    """One evaluation of the run's layout with solutions at given rows: ``placed`` holds
    ``(seed, row, solution (n,))``; every other row is zeros (a row's numbers do not depend
    on the others'). ``keys`` ``(seeds,)``: the evaluation's key per seed. Host tasks run
    each placed solution alone from ``episode_args(key, batch_size)[row]``. Returns
    ``(objective, measures (m,) float64)`` per placed solution."""
    if layout.host:
        from cmamae.tasks import host

        out = []
        for s, row, solution in placed:
            arg = task.episode_args(keys[s], batch_size)[row]
            f, m, failures = host.run_episodes(
                task.simulator, task.episode, solution[None], [arg], len(task.measure_names)
            )
            host.log_failures(task.name, failures)
            out.append((float(f[0]), np.asarray(m[0], np.float64)))
        return out
    dtype = np.asarray(placed[0][2]).dtype
    batch = np.zeros((layout.seeds, batch_size, len(placed[0][2])), dtype)
    for s, row, solution in placed:
        batch[s, row] = solution
    objectives, measures = evaluate_like_run(evaluate, keys, batch, layout, mesh)[:2]
    return [
        (float(objectives[s, row]), np.asarray(measures[s, row], np.float64))
        for s, row, _ in placed
    ]
