"""State, insertion rule and statistics shared by every archive (MAP-Annealing, pyribs 0.12).

An archive object (:class:`ArchiveBase` subclass) is a frozen, hashable dataclass of static
settings; its methods are pure functions over an :class:`ArchiveState` pytree, jit-able, usable
inside ``lax.scan`` and ``vmap``-able over a batch of states.

Insertion of a batch (:meth:`ArchiveBase.add`) reproduces pyribs 0.12's ``GridArchive.add`` /
``CVTArchive.add`` exactly, with one deliberate difference: pyribs raises ``ValueError`` for
non-finite objectives or measures, while :meth:`ArchiveBase.add` rejects those solutions
(status 0, value 0, index -1), never stores them, and counts them in
``ArchiveState.num_invalid``, so that one bad rollout does not stop a long run.

Everything else is judged against the archive as it was before the batch, for solution i
landing in cell e_i with objective f_i:

* t_i = threshold of e_i when e_i is occupied, else ``threshold_min``;
* accepted_i = f_i > t_i; status 2 when accepted into an empty cell (several solutions
  opening one new cell all get 2), 1 when accepted into an occupied one, else 0;
* value_i = f_i - t_i, where for an accepted solution opening a new cell t_i is replaced by
  ``threshold_min`` (or by 0 when ``threshold_min = -inf``: CMA-ME's convention);
* a cell with c >= 1 accepted solutions of mean objective f̄ gets threshold
  (1 - α)^c t + (1 - (1 - α)^c) f̄, or, when ``threshold_min = -inf`` (which requires α = 1,
  as in pyribs), the largest accepted objective. With a finite ``threshold_min`` and α = 1 that
  is the *mean* of the accepted objectives, not their maximum (pyribs does the same);
* the elite of such a cell becomes its accepted solution with the highest objective, the
  first in the batch on ties.

Costs: finding the cells (grid O(batch); CVT O(batch · cells)), O(batch log batch) for grouping
the batch by cell, O(batch) gathers and scatters into the state; no pass over the whole
archive. The ``(cells, solution_dim)`` solutions array is only written at the winners' rows,
scattered straight from the batch (one pass over the accepted solutions, no intermediate
gather), so under ``jax.jit(..., donate_argnums=...)`` the update is in place: at
solution_dim = 20,000 a 10^4-cell archive (800 MB) takes about 1.5 ms per batch of 200 on the
2-core CPU, whatever its size (tests/test_scheduler.py checks the compiled program for copies).
"""

from __future__ import annotations

import abc
import dataclasses
import json
import math
import os
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from cmamae import rowsparse, validate
from cmamae._pytree import pytree_dataclass
from cmamae.registry import Registry

NOT_ADDED = 0
IMPROVE_EXISTING = 1
NEW = 2

#: Archive classes by class name (the ``"class"`` entry of a saved archive's config).
ARCHIVES: Registry[type[ArchiveBase]] = Registry("archive class")
_STATE_FIELDS = ("occupied", "solutions", "objectives", "measures", "thresholds", "num_invalid")
# Provenance fields: archives written before they existed load with every entry UNKNOWN.
_PROVENANCE_FIELDS = ("eval_iteration", "eval_row")
UNKNOWN = -1


@pytree_dataclass
class ArchiveState:
    """Contents of an archive with ``cells`` cells.

    Attributes:
        occupied: ``(cells,)`` bool, whether the cell holds an elite.
        solutions: ``(cells, solution_dim)`` elite solutions (zeros in empty cells).
        objectives: ``(cells,)`` elite objectives (zeros in empty cells).
        measures: ``(cells, measure_dim)`` elite measures (zeros in empty cells).
        thresholds: ``(cells,)`` acceptance thresholds (``threshold_min`` in empty cells).
        num_invalid: ``()`` int32, how many submitted solutions had a non-finite objective or
            measure and were rejected, over the archive's whole life.
        eval_iteration: ``(cells,)`` int32 provenance: the scheduler iteration whose evaluation
            scored the elite (-1 in empty cells, for solutions added outside a scheduler, and
            in archives written before provenance was recorded).
        eval_row: ``(cells,)`` int32 provenance: the elite's row in that iteration's
            evaluations, counting the gradient pre-phase batch first (rows ``[0, g)``) and the
            main batch after it (rows ``[g, g + batch)``); -1 where unknown. With the run's
            key and device layout this reproduces the scoring evaluation
            (:mod:`cmamae.provenance`).
    """

    occupied: jax.Array
    solutions: jax.Array
    objectives: jax.Array
    measures: jax.Array
    thresholds: jax.Array
    num_invalid: jax.Array
    eval_iteration: jax.Array | None = None
    eval_row: jax.Array | None = None


@pytree_dataclass
class AddInfo:
    """What happened to each solution of a batch passed to :meth:`ArchiveBase.add`.

    Attributes:
        status: ``(batch,)`` int32: 0 not added, 1 improved an occupied cell, 2 opened a new cell.
        value: ``(batch,)`` improvement value f - t (module docstring); 0 for rejected
            non-finite solutions.
        index: ``(batch,)`` int32 cell index; -1 for rejected non-finite solutions.
    """

    status: jax.Array
    value: jax.Array
    index: jax.Array


@pytree_dataclass
class ArchiveStats:
    """Summary of an archive's current elites (all scalars).

    Attributes:
        num_elites: int32, occupied cells.
        coverage: num_elites / cells.
        qd_score: Σ (f_e - qd_score_offset) over the elites.
        norm_qd_score: qd_score / cells.
        obj_max: largest elite objective; NaN when the archive is empty.
        obj_mean: mean elite objective; NaN when the archive is empty.
        num_invalid: int32, rejected non-finite submissions so far.
    """

    num_elites: jax.Array
    coverage: jax.Array
    qd_score: jax.Array
    norm_qd_score: jax.Array
    obj_max: jax.Array
    obj_mean: jax.Array
    num_invalid: jax.Array


_JITTED: dict = {}


def _jit_method(name: str, *static: int):
    """``jax.jit`` of ``ArchiveBase.<name>`` with the archive (and ``static`` positions) static.

    Eager calls then compile once per archive and shapes instead of dispatching op by op;
    inside an enclosing jit, scan or vmap the inner jit is simply inlined.
    """
    key = (name, static)
    if key not in _JITTED:
        _JITTED[key] = jax.jit(
            lambda archive, *args: getattr(archive, name)(*args), static_argnums=(0, *static)
        )
    return _JITTED[key]


# --------------------------------------------------------------------------- argument checks
def _check_ranges(ranges, measure_dim: int | None) -> tuple[tuple[float, float], ...]:
    """``ranges`` as a tuple of ``(lower, upper)`` float pairs, finite with lower < upper."""
    try:
        pairs = [tuple(r) for r in ranges]
    except TypeError:
        raise ValueError(
            f"ranges must be a sequence of (lower, upper) pairs, got {ranges!r}"
        ) from None
    if not pairs:
        raise ValueError("ranges must not be empty")
    if measure_dim is not None and len(pairs) != measure_dim:
        raise ValueError(
            f"ranges must have one (lower, upper) pair per measure dimension "
            f"({measure_dim}), got {len(pairs)}: {ranges!r}"
        )
    out = []
    for i, pair in enumerate(pairs):
        if len(pair) != 2:
            raise ValueError(f"ranges[{i}] must be a (lower, upper) pair, got {pair!r}")
        lo = validate.number(f"ranges[{i}][0]", pair[0])
        hi = validate.number(f"ranges[{i}][1]", pair[1])
        if not lo < hi:
            raise ValueError(
                f"ranges[{i}] must be finite with lower < upper, got ({pair[0]!r}, {pair[1]!r})"
            )
        out.append((lo, hi))
    return tuple(out)


def _dtype_name(dtype) -> str:
    return np.dtype(dtype).name


# --------------------------------------------------------------------------- the archive
@dataclasses.dataclass(frozen=True)
class ArchiveBase(abc.ABC):
    """Static settings of an archive; its methods are pure and jit-able.

    Subclasses define the tessellation: the number of cells ``cells``, ``measure_dim`` and
    :meth:`index_of`. Instances are frozen and hashable, so they (and their bound methods) can
    be static arguments of ``jax.jit``.

    Attributes:
        solution_dim: n, length of a solution vector.
        learning_rate: α in [0, 1], the threshold learning rate (1: plain MAP-Elites thresholds;
            0: thresholds stay at ``threshold_min``). With ``threshold_min = -inf`` it must be 1
            (pyribs' rule; an annealed threshold has to start somewhere finite).
        threshold_min: initial threshold of every cell; ``-inf`` (default) or a finite number
            (the task's min_f for CMA-MAE).
        qd_score_offset: subtracted from every elite objective in the QD score.
        dtype: floating dtype of solutions, objectives, measures and thresholds (float32 by
            default; float64 needs ``jax_enable_x64``).
    """

    solution_dim: int
    _: dataclasses.KW_ONLY
    learning_rate: float = 1.0
    threshold_min: float = -math.inf
    qd_score_offset: float = 0.0
    dtype: Any = np.float32

    # Dataclass fields saved by ``save_npz`` as arrays rather than in the JSON config.
    _array_fields: ClassVar[tuple[str, ...]] = ()

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        ARCHIVES.register(cls.__name__, cls)

    def __post_init__(self):
        set_ = lambda name, value: object.__setattr__(self, name, value)
        set_("solution_dim", validate.integer("solution_dim", self.solution_dim))
        lr = validate.interval("learning_rate", self.learning_rate, 0, 1)
        set_("learning_rate", lr)
        tmin = self.threshold_min
        if not (isinstance(tmin, (float, np.floating)) and tmin == -math.inf):
            tmin = validate.number("threshold_min", tmin, expected="-inf or a finite number")
        if tmin == -math.inf and lr != 1.0:
            raise ValueError(
                f"threshold_min = -inf requires learning_rate = 1.0 (as in pyribs), got "
                f"learning_rate={self.learning_rate!r}; set a finite threshold_min for "
                "annealing (CMA-MAE)"
            )
        set_("threshold_min", float(tmin))
        set_("qd_score_offset", validate.number("qd_score_offset", self.qd_score_offset))
        try:
            dtype = np.dtype(self.dtype)
        except TypeError:
            raise ValueError(f"dtype must be a floating dtype, got {self.dtype!r}") from None
        if not np.issubdtype(dtype, np.floating):
            raise ValueError(f"dtype must be a floating dtype, got {self.dtype!r}")
        set_("dtype", dtype)

    # ------------------------------------------------------------------ geometry
    @property
    @abc.abstractmethod
    def measure_dim(self) -> int:
        """m, the number of measures."""

    @property
    def lower_bounds(self) -> np.ndarray:
        """``(measure_dim,)`` lower bounds of ``ranges``, in ``dtype``."""
        return np.array([r[0] for r in self.ranges], dtype=self.dtype)

    @property
    def upper_bounds(self) -> np.ndarray:
        """``(measure_dim,)`` upper bounds of ``ranges``, in ``dtype``."""
        return np.array([r[1] for r in self.ranges], dtype=self.dtype)

    # ``cells`` (the number of cells) is a property (grid) or a field (CVT) of each subclass;
    # declaring it here would give the CVT field a default.

    @abc.abstractmethod
    def index_of(self, measures: jax.Array) -> jax.Array:
        """Cell indices ``(batch,)`` int32 of measures ``(batch, measure_dim)``.

        Measures must be finite; non-finite ones give an unspecified index in range.
        """

    # ------------------------------------------------------------------ construction
    def init(self) -> ArchiveState:
        """An empty archive: nothing occupied, every threshold at ``threshold_min``."""
        c, dt = self.cells, self.dtype
        return ArchiveState(
            occupied=jnp.zeros((c,), bool),
            solutions=jnp.zeros((c, self.solution_dim), dt),
            objectives=jnp.zeros((c,), dt),
            measures=jnp.zeros((c, self.measure_dim), dt),
            thresholds=jnp.full((c,), self.threshold_min, dt),
            num_invalid=jnp.zeros((), jnp.int32),
            eval_iteration=jnp.full((c,), UNKNOWN, jnp.int32),
            eval_row=jnp.full((c,), UNKNOWN, jnp.int32),
        )

    def result_archive(self) -> ArchiveBase:
        """Same cells, α = 1, ``threshold_min = -inf``: keeps the best solution ever seen per
        cell (pyribs' Scheduler result archive for α < 1)."""
        return dataclasses.replace(self, learning_rate=1.0, threshold_min=-math.inf)

    # ------------------------------------------------------------------ insertion
    def _check_batch(self, solutions, objectives, measures):
        solutions = jnp.asarray(solutions)
        objectives = jnp.asarray(objectives)
        measures = jnp.asarray(measures)
        if objectives.ndim != 1:
            raise ValueError(f"objectives must have shape (batch,), got {objectives.shape}")
        b = objectives.shape[0]
        if solutions.shape != (b, self.solution_dim):
            raise ValueError(
                f"solutions must have shape (batch, solution_dim) = ({b}, {self.solution_dim}),"
                f" got {solutions.shape}"
            )
        if measures.shape != (b, self.measure_dim):
            raise ValueError(
                f"measures must have shape (batch, measure_dim) = ({b}, {self.measure_dim}),"
                f" got {measures.shape}"
            )
        return solutions, objectives, measures

    def add(
        self,
        state: ArchiveState,
        solutions: jax.Array,
        objectives: jax.Array,
        measures: jax.Array,
        mask: jax.Array | None = None,
        iteration: jax.Array | int | None = None,
        first_row: int = 0,
    ) -> tuple[ArchiveState, AddInfo]:
        """Insert a batch; pyribs 0.12's batch rule (module docstring).

        Args:
            state: the archive before the batch.
            solutions: ``(batch, solution_dim)``.
            objectives: ``(batch,)``, higher is better.
            measures: ``(batch, measure_dim)``.
            mask: optional ``(batch,)`` bool; rows where it is False are skipped as if absent
                from the batch (status 0, value 0, index -1, not counted as invalid).
            iteration: provenance: the scheduler iteration that evaluated the batch (an int32
                scalar, traced or not), stored with each new elite as ``eval_iteration``;
                None stores -1 (unknown).
            first_row: provenance: the row of the batch's first solution among the
                iteration's evaluations; solution i is stored with ``eval_row = first_row +
                i``.

        Returns:
            The new state and an :class:`AddInfo` of ``(batch,)`` arrays. Non-finite objectives
            or measures are rejected (status 0, value 0, index -1) and counted in
            ``num_invalid`` instead of raising as pyribs does.
        """
        solutions, objectives, measures = self._check_batch(solutions, objectives, measures)
        if mask is not None:
            mask = jnp.asarray(mask)
            if mask.shape != objectives.shape or mask.dtype != jnp.bool_:
                raise ValueError(
                    f"mask must be a bool array of shape {objectives.shape}, "
                    f"got {mask.dtype} {mask.shape}"
                )
        first_row = validate.integer("first_row", first_row, 0)
        iteration = jnp.asarray(UNKNOWN if iteration is None else iteration, jnp.int32)
        if iteration.shape != ():
            raise ValueError(f"iteration must be a scalar, got shape {iteration.shape}")
        return _jit_method("_add", 6)(
            self, state, solutions, objectives, measures, mask, first_row, iteration
        )

    def _add(
        self, state, solutions, objectives, measures, mask=None, first_row=0, iteration=UNKNOWN
    ):
        dt = state.objectives.dtype
        solutions = solutions.astype(state.solutions.dtype)
        objectives = objectives.astype(dt)
        measures = measures.astype(state.measures.dtype)
        b = objectives.shape[0]
        cells = state.occupied.shape[0]
        if b == 0:
            empty = jnp.zeros((0,), jnp.int32)
            return state, AddInfo(status=empty, value=jnp.zeros((0,), dt), index=empty)
        minus_inf = self.threshold_min == -math.inf
        tmin = jnp.asarray(self.threshold_min, dt)

        # Per solution, against the archive before the batch.
        finite = jnp.isfinite(objectives) & jnp.all(jnp.isfinite(measures), axis=1)
        submitted = jnp.ones_like(finite) if mask is None else mask
        valid = finite & submitted
        index = self.index_of(jnp.where(valid[:, None], measures, 0))
        occ = state.occupied[index]
        cur_t = jnp.where(occ, state.thresholds[index], tmin)
        accepted = valid & (objectives > cur_t)
        is_new = accepted & ~occ
        status = jnp.where(accepted, jnp.where(occ, IMPROVE_EXISTING, NEW), NOT_ADDED)
        new_cell_t = jnp.asarray(0.0 if minus_inf else self.threshold_min, dt)
        value = jnp.where(valid, objectives - jnp.where(is_new, new_cell_t, cur_t), 0)
        info = AddInfo(
            status=status.astype(jnp.int32),
            value=value.astype(dt),
            index=jnp.where(valid, index, -1).astype(jnp.int32),
        )

        # Group the accepted solutions by cell: a stable sort puts each cell's solutions
        # together in batch order (rejected ones last, under the key ``cells``); segment s is
        # the s-th distinct key, so segment ids are sorted and at most ``b``.
        key = jnp.where(accepted, index, cells)
        order = jnp.argsort(key, stable=True)
        skey = key[order]
        s_f = objectives[order]
        s_acc = accepted[order]
        starts = jnp.concatenate([jnp.ones((1,), bool), skey[1:] != skey[:-1]])
        seg = jnp.cumsum(starts.astype(jnp.int32)) - 1
        segment = lambda op, x: op(x, seg, num_segments=b, indices_are_sorted=True)
        count = segment(jax.ops.segment_sum, s_acc.astype(jnp.int32))
        f_max = segment(jax.ops.segment_max, jnp.where(s_acc, s_f, -jnp.inf))
        # First (in batch order) accepted solution reaching the segment's maximum.
        pos = jnp.arange(b, dtype=jnp.int32)
        first_max = segment(jax.ops.segment_min, jnp.where(s_acc & (s_f == f_max[seg]), pos, b))
        winner = order[jnp.clip(first_max, 0, b - 1)]
        has = count > 0
        cell = segment(jax.ops.segment_min, skey)
        # Rows to write: the segment's cell, or distinct out-of-bounds rows (dropped) for
        # segments without accepted solutions. Strictly increasing, hence unique and sorted.
        rows = jnp.where(has, cell, cells + pos)

        if minus_inf:
            new_t = f_max
        else:
            f_sum = segment(jax.ops.segment_sum, jnp.where(s_acc, s_f, 0))
            safe_rows = jnp.clip(rows, 0, cells - 1)
            old_t = jnp.where(state.occupied[safe_rows], state.thresholds[safe_rows], tmin)
            n = jnp.maximum(count, 1).astype(dt)
            ratio = jnp.power(jnp.asarray(1.0 - self.learning_rate, dt), n)
            new_t = ratio * old_t + (1 - ratio) * (f_sum / n)

        scatter = dict(mode="drop", unique_indices=True, indices_are_sorted=True)
        # The elites' rows are scattered straight from the batch: ``target[i]`` is the cell
        # of solution i when it is its cell's winner, else a distinct out-of-bounds row
        # (dropped). Gathering ``solutions[winner]`` first would cost one more pass over a
        # (batch, solution_dim) array, which is most of the insertion's cost at large n.
        target = (cells + pos).at[jnp.where(has, winner, b)].set(cell, mode="drop")
        by_row = dict(mode="drop", unique_indices=True)
        new_state = ArchiveState(
            occupied=state.occupied.at[rows].set(True, **scatter),
            solutions=state.solutions.at[target].set(solutions, **by_row),
            objectives=state.objectives.at[target].set(objectives, **by_row),
            measures=state.measures.at[target].set(measures, **by_row),
            thresholds=state.thresholds.at[rows].set(new_t.astype(dt), **scatter),
            num_invalid=state.num_invalid + jnp.sum(submitted & ~finite, dtype=jnp.int32),
            eval_iteration=state.eval_iteration.at[target].set(
                jnp.broadcast_to(jnp.asarray(iteration, jnp.int32), (b,)), **by_row
            ),
            eval_row=state.eval_row.at[target].set(first_row + pos, **by_row),
        )
        return new_state, info

    # ------------------------------------------------------------------ reading
    def stats(self, state: ArchiveState) -> ArchiveStats:
        """Statistics of the current elites (:class:`ArchiveStats`). O(cells).

        Unlike pyribs, whose ``obj_max`` is the best objective ever inserted, ``obj_max`` here
        is the best *current* elite; the two agree on a result archive (α = 1,
        ``threshold_min = -inf``), whose elites only ever improve.
        """
        return _jit_method("_stats")(self, state)

    def _stats(self, state: ArchiveState) -> ArchiveStats:
        occ = state.occupied
        dt = state.objectives.dtype
        cells = occ.shape[0]
        num = jnp.sum(occ, dtype=jnp.int32)
        total = jnp.sum(jnp.where(occ, state.objectives, 0))
        qd = jnp.sum(jnp.where(occ, state.objectives - jnp.asarray(self.qd_score_offset, dt), 0))
        nonempty = num > 0
        return ArchiveStats(
            num_elites=num,
            coverage=(num / cells).astype(dt),
            qd_score=qd.astype(dt),
            norm_qd_score=(qd / cells).astype(dt),
            obj_max=jnp.where(
                nonempty, jnp.max(jnp.where(occ, state.objectives, -jnp.inf)), jnp.nan
            ).astype(dt),
            obj_mean=jnp.where(nonempty, total / jnp.maximum(num, 1), jnp.nan).astype(dt),
            num_invalid=state.num_invalid,
        )

    def sample_elites(
        self, key: jax.Array, state: ArchiveState, num: int
    ) -> tuple[jax.Array, jax.Array, jax.Array]:
        """``num`` elites drawn uniformly, with replacement, among the occupied cells.

        Returns ``(solutions (num, solution_dim), objectives (num,), measures (num,
        measure_dim))``. The caller must make sure the archive is not empty (e.g.
        ``stats(state).num_elites > 0``): on an empty archive every returned array is zeros.
        O(cells + num log cells).
        """
        return _jit_method("_sample_elites", 3)(self, key, state, num)

    def _sample_elites(self, key, state, num):
        occ = state.occupied
        cells = occ.shape[0]
        count = jnp.sum(occ, dtype=jnp.int32)
        k = jax.random.randint(key, (num,), 0, jnp.maximum(count, 1), dtype=jnp.int32)
        # The (k+1)-th occupied cell: the first where the running count of occupied cells
        # reaches k + 1.
        running = jnp.cumsum(occ.astype(jnp.int32))
        idx = jnp.minimum(jnp.searchsorted(running, k + 1, side="left"), cells - 1)
        ok = count > 0
        return (
            jnp.where(ok, state.solutions[idx], 0),
            jnp.where(ok, state.objectives[idx], 0),
            jnp.where(ok, state.measures[idx], 0),
        )

    # ------------------------------------------------------------------ host-side I/O
    def to_dataframe(self, state: ArchiveState):
        """The elites as a :class:`pandas.DataFrame`, one row per occupied cell, by index.

        Columns: ``index``, ``objective``, ``measures_0..``, ``solution_0..``, ``threshold``,
        ``eval_iteration``, ``eval_row`` (provenance; -1 where unknown).
        """
        import pandas as pd

        occ = np.asarray(state.occupied)
        idx = np.flatnonzero(occ)
        frames = [
            pd.DataFrame(
                {"index": idx.astype(np.int32), "objective": np.asarray(state.objectives)[idx]}
            ),
            pd.DataFrame(
                np.asarray(state.measures)[idx],
                columns=[f"measures_{i}" for i in range(self.measure_dim)],
            ),
            pd.DataFrame(
                np.asarray(state.solutions)[idx],
                columns=[f"solution_{i}" for i in range(self.solution_dim)],
            ),
            pd.DataFrame(
                {
                    "threshold": np.asarray(state.thresholds)[idx],
                    **{f: np.asarray(getattr(state, f))[idx] for f in _PROVENANCE_FIELDS},
                }
            ),
        ]
        return pd.concat(frames, axis=1)

    def config(self) -> dict:
        """The archive's settings as a JSON-friendly dict (array fields left out)."""
        out = {"class": type(self).__name__}
        for f in dataclasses.fields(self):
            if f.name in self._array_fields or not f.init:
                continue
            v = getattr(self, f.name)
            out[f.name] = _dtype_name(v) if f.name == "dtype" else v
        return out

    def save_npz(self, state: ArchiveState, path: str | os.PathLike) -> None:
        """Write ``state`` and this archive's settings to an ``.npz`` file (arrays + JSON only,
        no pickle). ``np.savez`` appends ``.npz`` to a path without it."""
        names = _STATE_FIELDS + _PROVENANCE_FIELDS
        arrays = {n: np.asarray(getattr(state, n)) for n in names if getattr(state, n) is not None}
        arrays = rowsparse.pack(arrays)  # empty cells' rows are not stored
        for name in self._array_fields:
            arrays[name] = np.asarray(getattr(self, name))
        arrays["config"] = np.asarray(json.dumps(self.config()))
        np.savez(path, **arrays)


def load_npz(path: str | os.PathLike, archive: ArchiveBase | None = None) -> ArchiveState:
    """Read an :class:`ArchiveState` written by :meth:`ArchiveBase.save_npz` (never unpickles).

    With ``archive``, the arrays are checked against its shapes (``ValueError`` on a mismatch)
    and cast to its dtype. Files written before provenance was recorded load with
    ``eval_iteration`` and ``eval_row`` all -1 (unknown).
    """
    with np.load(path, allow_pickle=False) as raw:
        data = rowsparse.unpack(raw)  # row-sparse arrays back to full ones, bitwise
        missing = [n for n in _STATE_FIELDS if n not in data]
        if missing:
            raise ValueError(f"path {os.fspath(path)!r} is not an archive file: lacks {missing}")
        arrays = {n: np.asarray(data[n]) for n in _STATE_FIELDS}
        cells = arrays["occupied"].shape[0]
        for n in _PROVENANCE_FIELDS:
            stored = n in data
            arrays[n] = np.asarray(data[n]) if stored else np.full(cells, UNKNOWN, np.int32)
    if archive is not None:
        expected = archive.init()
        for n in _STATE_FIELDS + _PROVENANCE_FIELDS:
            want = getattr(expected, n)
            if arrays[n].shape != want.shape:
                raise ValueError(
                    f"{n} in {os.fspath(path)!r} has shape {arrays[n].shape}, but the archive "
                    f"expects {want.shape}"
                )
            arrays[n] = arrays[n].astype(want.dtype)
    return ArchiveState(**{n: jnp.asarray(a) for n, a in arrays.items()})


def with_provenance(state: ArchiveState) -> ArchiveState:
    """``state`` with unknown provenance (-1) filled in where its provenance fields are None
    (a state restored from a checkpoint written before provenance was recorded)."""
    fill = {
        n: jnp.full(state.occupied.shape, UNKNOWN, jnp.int32)
        for n in _PROVENANCE_FIELDS
        if getattr(state, n) is None
    }
    return state.replace(**fill) if fill else state


def without_provenance(state: ArchiveState) -> ArchiveState:
    """``state`` with its provenance fields set to None: the tree structure of archive states
    written before provenance was recorded (a template for reading old checkpoints)."""
    return state.replace(**{n: None for n in _PROVENANCE_FIELDS})


def load_archive_npz(path: str | os.PathLike) -> ArchiveBase:
    """Rebuild the archive object (settings, CVT centroids) saved with a state by
    :meth:`ArchiveBase.save_npz`."""
    with np.load(path, allow_pickle=False) as data:
        if "config" not in data.files:
            raise ValueError(f"path {os.fspath(path)!r} holds no archive config")
        config = json.loads(str(data["config"]))
        cls_name = config.pop("class", None)
        try:
            cls = ARCHIVES.get(cls_name)
        except ValueError as err:
            raise ValueError(f"path {os.fspath(path)!r}: {err}") from None
        for name in cls._array_fields:
            config[name] = np.asarray(data[name])
    return cls(**config)
