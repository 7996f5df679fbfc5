"""The locomotion tasks on native MuJoCo, many episodes at once (``backend="native"``).

``mujoco.batch.Batch`` (MuJoCo >= 4.0) holds one simulation per solution and steps them,
bit-identical to a loop over one ``MjData`` each (its documentation), so an episode depends
neither on its neighbours in the batch nor on the thread count. Around it the rest is
vectorized NumPy over the simulations (float64), with the definitions of the per-episode twin
(:mod:`cmamae.tasks.locomotion.native`): the policies' forward pass
(:func:`~cmamae.tasks.locomotion.native.apply`, one BLAS call per row, the twin's own), and
Gymnasium's observation, reward and termination from env.py. A call's simulations are dealt
to as many shards as it has threads, each a ``Batch`` with one C thread driven by a Python
thread of its own (one shard's NumPy work overlaps the others' physics); a policy step is one
``Batch.rollout`` of ``frame_skip`` physics steps. Terminated episodes are no longer stepped,
and the policies of the running ones are computed on a compacted copy of their weights once
enough have ended.

Foot contacts follow the task's rule: a foot touches the floor on a physics step when an
active contact (``dist < includemargin``) pairs it with the floor. ``Batch`` cannot bind the
contact list, so :class:`FootGeometry` recomputes the two contacts MuJoCo's plane-capsule
collision makes from what it can bind (each foot capsule's pose, ``geom_xpos`` and
``geom_xmat``, recorded after every physics step, as the contacts are): per capsule end,
``dist = (end − floor) · normal − radius``, kept when ``dist <= margin`` and active when
``dist < margin − gap``, with the arithmetic of MuJoCo's ``mjc_PlaneCapsule``. The tests check
the measures equal the twin's, which reads MuJoCo's contact list, for every robot and model.

Two entry points:

* :func:`run_episodes`: NumPy in, NumPy out (per-simulation start states); Dask workers
  evaluate their chunks with it (:mod:`cmamae.tasks.locomotion.host_tasks`);
* :func:`evaluate` / :func:`evaluate_transitions`: the JAX task functions, one
  ``jax.pure_callback`` that hands the key's bits to the host, which draws the start state
  from it (:func:`~cmamae.tasks.locomotion.native.reset_state`: the MJX task's draw, by a
  standalone compiled program, so the same bits every time) and runs the episodes; under
  ``vmap`` (the runner's seeds) the callback gets the leading axes in one call
  (``vmap_method="expand_dims"``) and runs seeds × batch simulations in one call.

``Batch`` objects are cached in the process per (model, simulations), never in the task,
which stays a frozen, hashable value.
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import dataclasses
import functools
import importlib
import os
import re
import threading

import jax
import jax.numpy as jnp
import mujoco
import numpy as np

from cmamae import validate
from cmamae.tasks.base import Transitions
from cmamae.tasks.locomotion import env
from cmamae.tasks.locomotion.model import Adaptation, geom_ids, load_model
from cmamae.tasks.locomotion.robots import Robot
from cmamae.tasks.policies import MLPPolicy

MIN_MUJOCO = (4, 0)


def mujoco_version(version: str | None = None) -> tuple[int, int]:
    """``(major, minor)`` of ``version`` (default: the installed mujoco's)."""
    numbers = re.findall(r"\d+", version or mujoco.__version__)
    return int(numbers[0]), int(numbers[1]) if len(numbers) > 1 else 0


def require_batch(version: str | None = None):
    """The ``mujoco.batch`` module, or a ValueError saying which mujoco the native backend
    needs (``version``: the installed one by default; a parameter for the tests)."""
    found = version or mujoco.__version__
    if mujoco_version(found) < MIN_MUJOCO:
        raise ValueError(
            f"backend='native' needs mujoco >= {'.'.join(map(str, MIN_MUJOCO))} "
            f"(mujoco.batch), found mujoco {found}; pip install -U 'mujoco>=4.0', or use "
            "backend='mjx'"
        )
    return importlib.import_module("mujoco.batch")


def default_threads() -> int:
    """The cores this process may use (``os.sched_getaffinity``; ``os.cpu_count`` where the
    platform has no affinity)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def check_threads(threads) -> int | None:
    """None (the cores this process may use), or ``threads`` as an ``int`` when it is an
    integer >= 1 (:func:`cmamae.validate.integer`: "threads must be an integer >= 1, got
    VALUE" otherwise)."""
    return None if threads is None else validate.integer("threads", threads)


# ----------------------------------------------------------------------------- foot contacts
_ENDS = np.array([1.0, -1.0])[:, None, None]


@dataclasses.dataclass(frozen=True, eq=False)
class FootGeometry:
    """What MuJoCo's plane-capsule collision needs of each foot, and the floor's pose.

    Attributes:
        feet: ``(F,)`` foot geom ids, in measure order.
        radius, half_length: ``(F,)`` capsule sizes.
        margin, includemargin: ``(F,)`` the foot-floor pair's margin (the sum of the two
            geoms' margins) and ``margin − gap`` (gaps summed likewise).
        floor_pos, floor_normal: ``(3,)`` the floor plane's point and normal (world frame;
            the floor is a static geom of the world body).
    """

    feet: np.ndarray
    radius: np.ndarray
    half_length: np.ndarray
    margin: np.ndarray
    includemargin: np.ndarray
    floor_pos: np.ndarray
    floor_normal: np.ndarray

    def contacts(self, geom_xpos: np.ndarray, geom_xmat: np.ndarray) -> np.ndarray:
        """Per simulation and foot, whether an active contact pairs it with the floor.

        ``geom_xpos`` ``(..., F, 3)`` and ``geom_xmat`` ``(..., F, 9)`` are the feet's poses
        (rows of :attr:`feet`; leading axes e.g. simulations) -> ``(..., F)`` bool.
        """
        lead, f = geom_xpos.shape[:-2], len(self.feet)
        pos = np.moveaxis(geom_xpos, (-1, -2), (0, 1)).reshape(3, f, -1)
        axis = np.moveaxis(geom_xmat[..., 2::3], (-1, -2), (0, 1)).reshape(3, f, -1)
        return self._active(pos, axis).any(axis=0).T.reshape(*lead, f)

    def touched(self, geom_xpos: np.ndarray, geom_xmat: np.ndarray) -> np.ndarray:
        """Per simulation and foot, whether the foot touched the floor at any of the steps
        ``Batch.rollout`` recorded: ``geom_xpos`` ``(N, S, ngeom, 3)`` and ``geom_xmat``
        ``(N, S, ngeom, 9)`` (every geom, S physics steps) -> ``(N, F)`` bool."""
        n, steps, f = *geom_xpos.shape[:2], len(self.feet)
        pos = geom_xpos.reshape(n * steps, -1).T[self._rows[0]].reshape(3, f, -1)
        axis = geom_xmat.reshape(n * steps, -1).T[self._rows[1]].reshape(3, f, -1)
        return self._active(pos, axis).reshape(2, f, n, steps).any(axis=(0, 3)).T

    def _active(self, pos: np.ndarray, axis: np.ndarray) -> np.ndarray:
        """``pos``, ``axis`` ``(3, F, K)``: per coordinate and foot, K capsule centres and
        axes (``geom_xmat``'s third column) -> ``(2, F, K)`` active contact of each end with
        the floor. Same operations, in the same order, as MuJoCo's ``mjc_PlaneCapsule`` /
        ``mjraw_PlaneSphere``; the long axis K last, so that NumPy's loops run along it."""
        segment = self.half_length[:, None] * axis
        # the capsule's two ends, (3, 2, F, K): p + segment and p − segment (p + (−s) is p − s)
        ends = pos[:, None] + _ENDS * segment[:, None]
        if self.floor_pos.any():  # x − 0 is x: skipped for a floor through the origin
            ends -= self.floor_pos[:, None, None, None]
        n = self.floor_normal
        cdist = ends[0] * n[0] + ends[1] * n[1] + ends[2] * n[2]
        # kept (dist <= margin) and active; `<=` is MuJoCo's `!(dist > margin)` except for
        # NaN, which the second test rejects anyway
        return (cdist <= self._bound) & (cdist - self.radius[:, None] < self.includemargin[:, None])

    @functools.cached_property
    def _bound(self) -> np.ndarray:
        return (self.margin + self.radius)[:, None]

    @functools.cached_property
    def _rows(self) -> tuple[np.ndarray, np.ndarray]:
        """Indices into a step's flattened ``geom_xpos`` and ``geom_xmat``: the feet's
        coordinates and axes, coordinate-major ``(3 · F,)``."""
        pos = np.arange(3)[:, None] + 3 * self.feet[None, :]
        axis = np.array([2, 5, 8])[:, None] + 9 * self.feet[None, :]
        return pos.ravel(), axis.ravel()


@functools.lru_cache(maxsize=32)
def foot_geometry(robot: Robot, adaptation: Adaptation) -> FootGeometry:
    """:class:`FootGeometry` of ``robot``'s model; a ValueError if the model is outside what
    the derivation covers (feet that are not capsules, a floor that is not a static plane,
    explicit contact pairs or exclusions, contacts disabled, margins overridden)."""
    model = load_model(robot, adaptation)
    feet = np.array(geom_ids(model, robot.feet))
    (floor,) = geom_ids(model, ("floor",))
    problems = []
    if model.geom_type[floor] != mujoco.mjtGeom.mjGEOM_PLANE or model.geom_bodyid[floor] != 0:
        problems.append("the floor must be a plane of the world body")
    for name, g in zip(robot.feet, feet):
        if model.geom_type[g] != mujoco.mjtGeom.mjGEOM_CAPSULE:
            problems.append(f"foot {name!r} must be a capsule")
        if not (
            model.geom_contype[g] & model.geom_conaffinity[floor]
            or model.geom_contype[floor] & model.geom_conaffinity[g]
        ):
            problems.append(f"foot {name!r} does not collide with the floor")
    if model.npair or model.nexclude:
        problems.append("explicit contact pairs or exclusions are not covered")
    off = mujoco.mjtDisableBit
    if model.opt.disableflags & (off.mjDSBL_CONTACT | off.mjDSBL_CONSTRAINT):
        problems.append("contacts are disabled")
    if model.opt.enableflags & mujoco.mjtEnableBit.mjENBL_OVERRIDE:
        problems.append("contact parameters are overridden")
    if problems:
        raise ValueError(
            f"the native backend cannot derive {robot.name}'s foot contacts: " + "; ".join(problems)
        )
    data = mujoco.MjData(model)
    mujoco.mj_kinematics(model, data)
    # MuJoCo's automatic contacts: the pair's margin and gap are the sums of the geoms'.
    margin = model.geom_margin[floor] + model.geom_margin[feet]
    gap = model.geom_gap[floor] + model.geom_gap[feet]
    return FootGeometry(
        feet=feet,
        radius=model.geom_size[feet, 0].copy(),
        half_length=model.geom_size[feet, 1].copy(),
        margin=margin,
        includemargin=margin - gap,
        floor_pos=data.geom_xpos[floor].copy(),
        floor_normal=data.geom_xmat[floor].reshape(9)[[2, 5, 8]].copy(),
    )


# ----------------------------------------------------------------------------- batches
class _Sims:
    """One ``mujoco.batch.Batch`` and the fields the episodes read and write.

    Attributes:
        batch: the ``Batch``.
        qpos, qvel, ctrl: its state fields (live views).
        xpos: its bound ``xpos`` (robots whose forward position is a body's), else None.
        records: per name of ``_RECORD``, a ``(nsim, frame_skip, ...)`` buffer for
            ``Batch.rollout``'s records (its first rows are used when fewer simulations step).
        warned, warned_total: ``(nsim,)`` each simulation's warning count when last noted,
            and their sum.
    """

    def __init__(self, robot: Robot, model: mujoco.MjModel, nsim: int, nthread: int):
        batch = require_batch().Batch(model, nsim, nthread)
        self.batch = batch
        for name in ("qpos", "qvel", "ctrl"):
            setattr(self, name, batch.bind(name))
        # bound outputs are copied out after every call: only what every step reads
        self.xpos = batch.bind("xpos") if robot.x_from_body else None
        self.records = {
            name: np.empty((nsim, robot.frame_skip, model.ngeom, size))
            for name, size in _RECORD.items()
        }
        self.note_warnings()

    def note_warnings(self) -> None:
        """Keeps each simulation's warning count (:attr:`warned`) and their sum."""
        self.warned = self.batch.warning[:, :, 1].sum(axis=1)
        self.warned_total = int(self.warned.sum())

    def warned_since(self) -> np.ndarray | None:
        """``(nsim,)`` which simulations raised a warning since :meth:`note_warnings`, or
        None if none did."""
        if int(self.batch.warning[:, :, 1].sum()) == self.warned_total:
            return None
        return self.batch.warning[:, :, 1].sum(axis=1) != self.warned


# Idle batches by (robot, adaptation, nsim, nthread), least recently used first. A batch is
# taken out while one evaluation uses it (a Batch must not be used by two threads at once).
_IDLE: collections.OrderedDict[tuple, list[_Sims]] = collections.OrderedDict()
_IDLE_LOCK = threading.Lock()
MAX_IDLE = 8


@contextlib.contextmanager
def _batch(robot: Robot, adaptation: Adaptation, nsim: int, nthread: int):
    slot = (robot, adaptation, nsim, nthread)
    with _IDLE_LOCK:
        free = _IDLE.get(slot)
        sims = free.pop() if free else None
    if sims is None:
        sims = _Sims(robot, load_model(robot, adaptation), nsim, nthread)
    yield sims
    with _IDLE_LOCK:
        _IDLE.setdefault(slot, []).append(sims)
        _IDLE.move_to_end(slot)
        while sum(len(v) for v in _IDLE.values()) > MAX_IDLE:
            oldest = next(iter(_IDLE))
            _IDLE[oldest].pop(0)
            if not _IDLE[oldest]:
                del _IDLE[oldest]


# ----------------------------------------------------------------------------- episodes
def layer_views(policy: MLPPolicy, solutions: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """``[(w (N, in, out), b (N, out)), ...]``: views into ``solutions`` ``(N, num_params)``
    in :class:`MLPPolicy`'s layout (per layer ``b`` then ``w`` row-major)."""
    layers, i = [], 0
    for fan_in, fan_out in policy.layer_shapes:
        b = solutions[:, i : i + fan_out]
        i += fan_out
        w = solutions[:, i : i + fan_in * fan_out].reshape(-1, fan_in, fan_out)
        i += fan_in * fan_out
        layers.append((w, b))
    return layers


@dataclasses.dataclass
class Episodes:
    """Results of :func:`run_episodes`, one row per simulation (float64 NumPy).

    Attributes:
        total: ``(N,)`` episode returns; NaN where MuJoCo raised an error.
        measures: ``(N, F)`` fraction of executed steps each foot touched the floor; NaN
            where MuJoCo raised an error.
        steps: ``(N,)`` executed (counted) policy steps.
        failed: ``(N,)`` bool, MuJoCo raised an error in that simulation.
        errors: MuJoCo's message per failed simulation, ``{row: text}``.
        transitions: with ``transitions=True``, a dict of :class:`Transitions`' fields with
            leading axes ``(N, episode_length)`` (``dtype`` as asked); else None.
    """

    total: np.ndarray
    measures: np.ndarray
    steps: np.ndarray
    failed: np.ndarray
    errors: dict[int, str]
    transitions: dict[str, np.ndarray] | None = None


# Recompute the running episodes' policies on a compacted copy of their weights once fewer
# than this fraction of the rows they are computed for are still running.
COMPACT_BELOW = 0.75
# Fewest simulations per shard: below it a call runs in fewer shards than it has threads.
MIN_ROWS_PER_SHARD = 4
# What Batch.rollout records after each physics step for the foot contacts: field, numbers
# per geom.
_RECORD = {"geom_xpos": 3, "geom_xmat": 9}


def run_episodes(
    robot: Robot,
    adaptation: Adaptation,
    policy: MLPPolicy,
    solutions,
    qpos0,
    qvel0,
    episode_length: int,
    threads: int | None = None,
    transitions: bool = False,
    dtype=np.float32,
) -> Episodes:
    """One episode per row of ``solutions`` ``(N, num_params)``, from ``qpos0`` ``(N, nq)`` /
    ``qvel0`` ``(N, nv)`` (the task's reset state per simulation), with ``threads`` threads
    (None: :func:`default_threads`).

    The rows are dealt to ``threads`` shards (row ``i`` to shard ``i mod threads``, so that
    each shard gets a share of every emitter's samples); each shard runs its episodes on a
    ``Batch`` of its own with one C thread, in a Python thread of its own, policy and
    bookkeeping included: one shard's NumPy work then overlaps another's physics (both
    release the GIL) instead of leaving the C threads idle. The same numbers as the twin's
    :meth:`NativeEnv.episode <cmamae.tasks.locomotion.native.NativeEnv.episode>` row by row,
    whatever the shards: an episode ends after its first unhealthy step (that step counts);
    an episode in which MuJoCo raises an error gets NaN. With ``transitions`` also the steps'
    :class:`Transitions` fields (after the end: zeros, ``valid`` False; MJX's values there
    are those of the masked-out steps it keeps simulating, which no learner reads).
    """
    threads = check_threads(threads) or default_threads()
    model = load_model(robot, adaptation)
    solutions = np.asarray(solutions)
    n = len(solutions)
    qpos0 = np.broadcast_to(np.asarray(qpos0, np.float64), (n, model.nq))
    qvel0 = np.broadcast_to(np.asarray(qvel0, np.float64), (n, model.nv))
    n_feet = len(robot.feet)
    total = np.zeros(n)
    contact_steps = np.zeros((n, n_feet), np.int64)
    steps = np.zeros(n, np.int64)
    failed = np.zeros(n, bool)
    record = (
        _Recorder.empty(n, episode_length, policy, robot.terminate, dtype) if transitions else None
    )
    shards = max(1, min(threads, n // MIN_ROWS_PER_SHARD))
    errors = [{} for _ in range(shards)]
    jobs = []
    for k in range(shards):
        rows = slice(k, None, shards)
        jobs.append(
            functools.partial(
                _shard,
                robot,
                adaptation,
                policy,
                solutions[rows],
                qpos0[rows],
                qvel0[rows],
                episode_length,
                _Outcome(total[rows], contact_steps[rows], steps[rows], failed[rows], errors[k]),
                record.rows(rows) if record is not None else None,
            )
        )
    if n:
        _run_all(jobs)
    merged = {k + i * shards: text for k, shard in enumerate(errors) for i, text in shard.items()}
    return _finish(total, contact_steps, steps, failed, dict(sorted(merged.items())), record)


@dataclasses.dataclass
class _Outcome:
    """A shard's views of :func:`run_episodes`' per-row results (``errors``: its own dict,
    keyed by the shard's rows)."""

    total: np.ndarray
    contact_steps: np.ndarray
    steps: np.ndarray
    failed: np.ndarray
    errors: dict[int, str]


def _shard(robot, adaptation, policy, solutions, qpos0, qvel0, episode_length, out, record):
    """The episodes of one shard (``solutions`` ``(m, num_params)``, ``qpos0``, ``qvel0``) on
    a ``Batch`` of ``m`` simulations with one C thread, results into ``out`` / ``record``."""
    from cmamae.tasks.locomotion.native import apply

    m = len(solutions)
    feet = foot_geometry(robot, adaptation)
    dt = float(load_model(robot, adaptation).opt.timestep) * robot.frame_skip
    layers = layer_views(policy, np.array(solutions, np.float64))
    with _batch(robot, adaptation, m, 1) as sims:
        sims.batch.reset(stage=mujoco.mjtStage.mjSTAGE_NONE)
        sims.qpos[:] = qpos0
        sims.qvel[:] = qvel0
        sims.note_warnings()
        x_before = qpos0[:, 0].copy()  # the ant's torso xpos is its free joint's position
        running = np.arange(m, dtype=np.int32)  # simulations still stepped, ascending
        rows = running  # the simulations the policy is computed for (a superset)
        for t in range(episode_length):
            if len(running) < COMPACT_BELOW * len(rows):
                keep = np.searchsorted(rows, running)
                layers = [(w[keep], b[keep]) for w, b in layers]
                rows = running
            obs = env.observe(robot, sims.qpos[rows], sims.qvel[rows], xp=np)
            action = apply(policy, layers, obs)
            if len(rows) != len(running):  # the running simulations among rows
                at = np.searchsorted(rows, running)
                action, obs = action[at], obs[at]
            sims.ctrl[running] = action
            ok, touched = _physics(sims, feet, robot.frame_skip, running, out)
            if not ok.all():  # MuJoCo raised in some: they end here, with NaN
                running, action, obs = running[ok], action[ok], obs[ok]
                if not len(running):
                    break
            qpos, qvel = sims.qpos[running], sims.qvel[running]
            x_after = sims.xpos[running, 1, 0] if robot.x_from_body else qpos[:, 0]
            healthy = env.is_healthy(robot, qpos, qvel, xp=np)
            r = env.reward(robot, x_before[running], x_after, action, healthy, dt, xp=np)
            r = np.where(np.isfinite(r), r, 0.0)
            out.total[running] += r
            out.contact_steps[running] += touched
            out.steps[running] += 1
            x_before[running] = x_after
            if record is not None:
                record(t, running, obs, action, r, env.observe(robot, qpos, qvel, xp=np),
                       healthy)  # fmt: skip
            if robot.terminate:
                running = running[healthy]
            if not len(running):
                break


def _physics(sims, feet: FootGeometry, nstep: int, running: np.ndarray, out: _Outcome):
    """``nstep`` physics steps of the ``running`` simulations in one ``Batch.rollout`` ->
    ``(ok, touched)``: ``ok`` ``(n,)`` which of them stepped (those in which MuJoCo raised are
    marked failed in ``out``), ``touched`` ``(ok.sum(), F)`` whether each foot touched the
    floor at any of the steps.

    ``rollout`` stops a simulation whose warning counters rise (``mj_step`` resets the state
    on a bad ``qpos``/``qvel``/``qacc`` and goes on): such a simulation is put back to its
    state before the call and stepped again one ``Batch.step`` at a time, as ``mj_step``
    (and the twin) does."""
    batch, n = sims.batch, len(running)
    ids = None if n == batch.nsim else running
    saved = batch.state[running]
    records = {name: buffer[:n] for name, buffer in sims.records.items()}
    ok = np.ones(n, bool)
    try:
        batch.rollout(nstep, record=tuple(_RECORD), ids=ids, out=records)
    except require_batch().SimulationError as err:
        ok = _failed(batch, running, err.ids, out)
    warned = sims.warned_since()
    if warned is not None:  # rare
        redo = np.flatnonzero(warned[running] & ok)
        batch.state[running[redo]] = saved[redo]
        outputs = {name: batch.bind(name) for name in _RECORD}  # filled by the calls below
        for k in range(nstep):
            try:
                batch.step(ids=running[redo])
            except require_batch().SimulationError as err:
                stepped = _failed(batch, running[redo], err.ids, out)
                ok[redo[~stepped]] = False
                redo = redo[stepped]
            for name, output in outputs.items():
                records[name][redo, k] = output[running[redo]]
        sims.note_warnings()
    touched = feet.touched(records["geom_xpos"], records["geom_xmat"])
    return ok, touched[ok]


def _failed(batch, running: np.ndarray, bad, out: _Outcome) -> np.ndarray:
    """Marks the simulations ``bad`` (MuJoCo raised in them) as failed in ``out``, with
    MuJoCo's message; returns which of ``running`` did not fail."""
    bad = np.asarray(bad)
    out.failed[bad] = True
    out.errors.update({int(i): f"MuJoCo error: {batch.error(int(i))}" for i in bad})
    return ~np.isin(running, bad)


_POOLS: dict[int, concurrent.futures.ThreadPoolExecutor] = {}
_POOLS_LOCK = threading.Lock()


def _run_all(jobs) -> None:
    """Calls every job, the first in this thread, the others in a pool of ``len(jobs) - 1``
    threads kept for the process; re-raises the first error."""
    if len(jobs) == 1:
        return jobs[0]()
    with _POOLS_LOCK:
        pool = _POOLS.get(len(jobs) - 1)
        if pool is None:
            pool = _POOLS[len(jobs) - 1] = concurrent.futures.ThreadPoolExecutor(
                len(jobs) - 1, thread_name_prefix="cmamae-native"
            )
    futures = [pool.submit(job) for job in jobs[1:]]
    try:
        jobs[0]()
    finally:
        concurrent.futures.wait(futures)
    for future in futures:
        future.result()


def _finish(total, contact_steps, steps, failed, errors, record) -> Episodes:
    measures = contact_steps / np.maximum(steps, 1)[:, None]
    total = np.where(failed, np.nan, total)
    measures = np.where(failed[:, None], np.nan, measures)
    return Episodes(total, measures, steps, failed, errors, record.out if record else None)


class _Recorder:
    """Collects the steps' transitions (the fields of :class:`Transitions`), as MJX does
    (rollout.py's ``_transition``): non-finite observations become zeros and their step
    invalid."""

    def __init__(self, out: dict[str, np.ndarray], terminate: bool):
        self.out = out
        self.terminate = terminate

    @classmethod
    def empty(cls, n: int, length: int, policy: MLPPolicy, terminate: bool, dtype):
        """Zeros for ``n`` episodes of ``length`` steps."""
        shape = (n, length)
        out = dict(
            obs=np.zeros((*shape, policy.obs_dim), dtype),
            actions=np.zeros((*shape, policy.act_dim), dtype),
            rewards=np.zeros(shape, dtype),
            next_obs=np.zeros((*shape, policy.obs_dim), dtype),
            dones=np.zeros(shape, dtype),
            valid=np.zeros(shape, bool),
        )
        return cls(out, terminate)

    def rows(self, rows: slice) -> _Recorder:
        """A recorder into ``rows`` of this one's arrays (views)."""
        return _Recorder({k: v[rows] for k, v in self.out.items()}, self.terminate)

    def __call__(self, t, running, obs, action, r, next_obs, healthy):
        o = self.out
        finite = np.all(np.isfinite(obs), axis=-1) & np.all(np.isfinite(next_obs), axis=-1)
        o["obs"][running, t] = np.nan_to_num(obs, nan=0.0, posinf=0.0, neginf=0.0)
        o["actions"][running, t] = np.nan_to_num(action, nan=0.0)
        o["rewards"][running, t] = r
        o["next_obs"][running, t] = np.nan_to_num(next_obs, nan=0.0, posinf=0.0, neginf=0.0)
        o["dones"][running, t] = ~healthy if self.terminate else False
        o["valid"][running, t] = finite


# ----------------------------------------------------------------------------- JAX functions
def _host(solutions, key_data, *, rows, robot, adaptation, noise_scale, key_impl):
    """The callback: ``solutions`` ``(*lead, batch, n)`` and the keys' data ``(*lead',
    key_size)``, ``lead'`` broadcastable to ``lead`` (``vmap_method="expand_dims"`` gives
    unbatched arguments size-1 axes) -> every output of ``rows`` with leading axes ``(*lead,
    batch)``. ``rows(solutions (N, n), qpos (N, nq), qvel (N, nv))`` gets all ``N = prod(lead)
    · batch`` episodes at once, each with its key's
    :func:`~cmamae.tasks.locomotion.native.reset_state`."""
    from cmamae.tasks.locomotion.native import reset_state_of_data

    solutions, key_data = np.asarray(solutions), np.asarray(key_data)
    key_lead = key_data.shape[:-1]
    starts = [
        reset_state_of_data(robot, adaptation, noise_scale, key_impl, key_data[i])
        for i in np.ndindex(key_lead)
    ]
    qpos = np.stack([q for q, _ in starts]).reshape(*key_lead, -1)
    qvel = np.stack([v for _, v in starts]).reshape(*key_lead, -1)
    lead = np.broadcast_shapes(solutions.shape[:-2], key_lead)
    batch, dim = solutions.shape[-2:]
    flat = lambda a, tail: np.broadcast_to(a, (*lead, batch, tail)).reshape(-1, tail)
    out = rows(
        flat(solutions, dim),
        flat(qpos[..., None, :], qpos.shape[-1]),
        flat(qvel[..., None, :], qvel.shape[-1]),
    )
    return jax.tree_util.tree_map(lambda a: a.reshape(*lead, batch, *a.shape[1:]), out)


def host_rows(rows, shapes, solutions, key, *, robot, adaptation, noise_scale):
    """Per-episode work on the host from JAX: ``rows(solutions (N, n), qpos (N, nq), qvel (N,
    nv)) -> outputs`` (NumPy, each ``(N, ...)``) for every row of ``solutions`` ``(batch, n)``
    from the reset state of ``key``, as one ``jax.pure_callback``; ``shapes``: the outputs'
    ``jax.ShapeDtypeStruct`` for one call, leading axis ``batch``. Under ``vmap`` the callback
    is called once with the mapped axes in front and ``rows`` gets every episode of them.

    The callback receives the key's bits and runs the reset draw's program, compiled here
    (at trace time, on the tracing thread): no JAX compilation happens inside the callback."""
    from cmamae.tasks.locomotion.native import draw_program, key_parts

    key_impl, key_data = key_parts(key)
    draw_program(robot, adaptation, float(noise_scale), key_impl, key_data.shape[-1])
    host = functools.partial(
        _host,
        rows=rows,
        robot=robot,
        adaptation=adaptation,
        noise_scale=noise_scale,
        key_impl=key_impl,
    )
    return jax.pure_callback(host, shapes, solutions, key_data, vmap_method="expand_dims")


def _episode_rows(solutions, qpos, qvel, *, robot, adaptation, policy, episode_length,
                  threads, record, dtype):  # fmt: skip
    episodes = run_episodes(
        robot,
        adaptation,
        policy,
        solutions,
        qpos,
        qvel,
        episode_length,
        threads,
        transitions=record,
        dtype=dtype,
    )
    out = [episodes.total.astype(dtype), episodes.measures.astype(dtype)]
    if record:
        out += [episodes.transitions[f.name] for f in dataclasses.fields(Transitions)]
    return tuple(out)


def _call(solutions, key, record, *, robot, adaptation, policy, episode_length, noise_scale,
          threads):  # fmt: skip
    from cmamae.tasks.locomotion import check_solutions

    check_solutions(solutions, policy)
    batch, dtype = solutions.shape[0], solutions.dtype
    shape = lambda *s, dt=dtype: jax.ShapeDtypeStruct((batch, *s), dt)
    shapes = [shape(), shape(len(robot.feet))]
    if record:
        t = episode_length
        shapes += [shape(t, policy.obs_dim), shape(t, policy.act_dim), shape(t)]
        shapes += [shape(t, policy.obs_dim), shape(t), shape(t, dt=jnp.bool_)]
    rows = functools.partial(
        _episode_rows,
        robot=robot,
        adaptation=adaptation,
        policy=policy,
        episode_length=episode_length,
        threads=threads,
        record=record,
        dtype=np.dtype(dtype),
    )
    return host_rows(
        rows,
        tuple(shapes),
        solutions,
        key,
        robot=robot,
        adaptation=adaptation,
        noise_scale=noise_scale,
    )


def evaluate(solutions: jax.Array, key: jax.Array, **task) -> tuple[jax.Array, jax.Array]:
    """The native task's ``evaluate``: :func:`cmamae.tasks.locomotion.rollout.evaluate`'s
    contract (``solutions`` ``(batch, num_params)`` -> objectives ``(batch,)``, measures
    ``(batch, feet)``, in ``solutions``' dtype), the episodes run by :func:`run_episodes` in
    float64 from the reset state drawn from ``key`` (:func:`~cmamae.tasks.locomotion.native.
    reset_state`). JAX-callable (jit, vmap, scan); ``task``: the bound settings (robot,
    adaptation, policy, episode_length, noise_scale, threads)."""
    return _call(solutions, key, False, **task)


def evaluate_transitions(
    solutions: jax.Array, key: jax.Array, **task
) -> tuple[jax.Array, jax.Array, Transitions]:
    """:func:`evaluate` plus the episodes' :class:`Transitions` (leaves ``(batch,
    episode_length, ...)``; see :func:`run_episodes` for the steps after an episode's end)."""
    objectives, measures, *fields = _call(solutions, key, True, **task)
    return objectives, measures, Transitions(*fields)


def evaluate_seeds(solutions: np.ndarray, keys: jax.Array, **task) -> tuple[np.ndarray, np.ndarray]:
    """:func:`evaluate` of every seed's batch on the host, without tracing: ``solutions``
    ``(seeds, batch, num_params)`` (NumPy) and one evaluation key per seed ``(seeds,)`` ->
    objectives ``(seeds, batch)`` and measures ``(seeds, batch, feet)`` (NumPy, in
    ``solutions``' dtype). The host-side runner path's evaluation (:class:`cmamae.experiment.
    advance.HostAdvance`): the very function ``jax.vmap(evaluate)`` calls back, so the
    same numbers bit for bit, and no program with a host callback to compile (JAX's
    persistent cache keeps none of those)."""
    from cmamae.tasks.locomotion import check_solutions
    from cmamae.tasks.locomotion.native import draw_program, key_parts

    solutions = np.asarray(solutions)
    if solutions.ndim != 3:
        raise ValueError(
            f"solutions must be (seeds, batch, num_params), got shape {solutions.shape}"
        )
    check_solutions(solutions[0], task["policy"])
    impl, data = key_parts(keys)
    data = np.asarray(data)
    robot, adaptation, noise_scale = task["robot"], task["adaptation"], task["noise_scale"]
    draw_program(robot, adaptation, float(noise_scale), impl, data.shape[-1])
    rows = functools.partial(
        _episode_rows,
        robot=robot,
        adaptation=adaptation,
        policy=task["policy"],
        episode_length=task["episode_length"],
        threads=task["threads"],
        record=False,
        dtype=solutions.dtype,
    )
    objectives, measures = _host(
        solutions,
        data,
        rows=rows,
        robot=robot,
        adaptation=adaptation,
        noise_scale=noise_scale,
        key_impl=impl,
    )
    return objectives, measures
