"""The compiled loop across devices: the batch axes of a run (seeds, solutions) sharded over a
2-D device mesh ``("seeds", "solutions")``.

One process and its N local devices (``--devices N|all``, ``cmamae.run(..., devices=N)``;
several GPUs of one machine, or ``XLA_FLAGS=--xla_force_host_platform_device_count=N`` on a
CPU), or several processes with ``cmamae.run`` (below). :func:`batch_mesh` splits the devices
used into

* a **seeds** axis: the largest device count that divides the seed count. Every leaf of the
  scheduler states and the per-seed keys has a leading seed axis and is placed with
  ``NamedSharding(mesh, P("seeds"))`` (replicated over "solutions"); the chunk runs as a
  ``jax.shard_map`` manual over "seeds" (:func:`per_seed_group`), so each group of devices
  advances its own seeds, one seed without the seed ``vmap``. Seeds never talk to each other:
  no communication.
* a **solutions** axis: the remaining device factor, as far as it divides the evaluation batches
  (the main batch and any gradient pre-phase batch). Inside the compiled chunk
  (:func:`cmamae.compiled_loop.run_chunk`) the solutions of every evaluation, and the
  objectives, measures and transitions it returns, are constrained to be split along "solutions"
  (:class:`ShardedEvaluate`, ``jax.lax.with_sharding_constraint``; "solutions" stays an
  automatic axis of the ``shard_map``): XLA's partitioner runs each device's share
  of the rollouts, then the results are all-gathered and the archive insert and the emitters'
  tell run on every device of a seed group, as in the unsharded program (cheap next to
  rollouts; a few all-gathers of batch-sized arrays per iteration). The chunk returns its states
  placed as they came (:func:`keep_placed`).

Devices that fit neither axis stay unused, with a warning. The evaluation sees the whole batch
and the same key as unsharded (random numbers do not depend on the sharding: JAX's threefry is
partitionable), so results are the unsharded ones up to float rounding: each device runs a
compiled program for its share, a smaller batch, and XLA's code for another shape may round
differently: on the CPU, 100 Ant policies rolled out alone and the same 100 inside a batch of
200 differ by float32 rounding after 2 steps (no sharding involved), which 50 steps of contact
physics amplify into different episodes, so a sharded MJX run is another sample of the run,
not a bit-for-bit copy; benchmark functions agree to float32 rounding. With one device, or
when nothing can be split, there is no mesh and the program is the unsharded one.

Several processes (multi-host JAX): after ``jax.distributed.initialize()`` (on CPUs also
``jax.config.update("jax_cpu_collectives_implementation", "gloo")``), every process runs the
same ``cmamae.run(..., devices="all")``: :func:`resolve_devices` hands out ``jax.devices()``,
every process's; each builds the same initial states and :func:`place` keeps its own devices'
shards (``jax.make_array_from_process_local_data``); the chunk's metrics come back replicated on
every device so every process reads them; the final states are global arrays
(``jax.experimental.multihost_utils.process_allgather`` brings them to a host). The tests run it
with two local CPU processes. The experiment runner (``cmamae run``: run folders, checkpoints,
resume) is one process's and refuses several.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from cmamae import validate

SEEDS = "seeds"
SOLUTIONS = "solutions"


def resolve_devices(devices: int | str | None) -> list:
    """The devices ``--devices`` asks for: ``None`` -> the default device only, ``"all"`` ->
    ``jax.devices()`` (with ``jax.distributed.initialize()``: every process's), ``N`` -> the
    first N. Raises ValueError for more than exist."""
    available = jax.devices()
    if devices is None:
        return jax.local_devices()[:1]
    if devices == "all":
        return list(available)
    if isinstance(devices, str) and devices.isdigit():
        devices = int(devices)
    devices = validate.integer("devices", devices, expected="a positive integer or 'all'")
    if devices > len(available):
        raise ValueError(
            f"devices: {devices} requested but only {len(available)} "
            f"{available[0].platform} device(s) exist"
        )
    return list(available[:devices])


def evaluation_batches(scheduler) -> tuple[int, ...]:
    """The batch sizes ``scheduler`` evaluates per iteration: the main batch and the gradient
    pre-phase batch when there is one."""
    return tuple(b for b in (scheduler.batch_size, scheduler.grad_batch_size) if b > 0)


def mesh_shape(count: int, seeds: int, batches: Sequence[int] = ()) -> tuple[int, int]:
    """``(s, k)``: the seeds get ``s``, the largest device count up to ``count`` that divides
    ``seeds``; the solutions get ``k``, the largest factor up to ``count // s`` that divides
    every evaluation batch size in ``batches`` (1 when ``batches`` is empty)."""
    s = max(d for d in range(1, count + 1) if seeds % d == 0)
    splits = range(1, count // s + 1) if batches else (1,)
    return s, max(f for f in splits if all(b % f == 0 for b in batches))


def batch_mesh(devices: Sequence, seeds: int, batches: Sequence[int] = ()) -> Mesh | None:
    """The ``("seeds", "solutions")`` mesh of :func:`mesh_shape` over the first ``s * k`` of
    ``devices``; None when that is one device (nothing to shard)."""
    s, k = mesh_shape(len(devices), seeds, batches)
    if s * k == 1:
        return None
    return Mesh(np.asarray(devices[: s * k], dtype=object).reshape(s, k), (SEEDS, SOLUTIONS))


def plan(devices: int | str | None, seeds: int, scheduler) -> Mesh | None:
    """The mesh a run of ``seeds`` seeds of ``scheduler`` uses on ``devices`` (``--devices``),
    warning when some of those devices stay unused. Raises ValueError for bad ``devices``."""
    available = resolve_devices(devices)
    batches = evaluation_batches(scheduler)
    mesh = batch_mesh(available, seeds, batches)
    used = 1 if mesh is None else mesh.size
    if used < len(available):
        sizes = " and ".join(str(b) for b in batches)
        warnings.warn(
            f"devices: {used} of {len(available)} used (the seeds, {seeds}, get the largest "
            "device count that divides them; the solutions the largest remaining factor that "
            f"divides the evaluation batch, {sizes})",
            stacklevel=3,
        )
    return mesh


def describe(mesh: Mesh | None) -> str:
    """``"over 4 devices (seeds 2 x solutions 2)"``, or ``""`` without a mesh."""
    if mesh is None:
        return ""
    return (
        f"over {mesh.size} devices (seeds {mesh.shape[SEEDS]} x solutions {mesh.shape[SOLUTIONS]})"
    )


def place(tree, mesh: Mesh | None):
    """Every leaf of ``tree`` (leading seed axis) placed on ``mesh``: split along "seeds",
    replicated over "solutions"; ``tree`` unchanged when ``mesh`` is None. On a mesh that
    spans processes every process passes the same whole ``tree`` and keeps the shards of its
    own devices (``jax.make_array_from_process_local_data``)."""
    if mesh is None:
        return tree
    put = jax.device_put if not mesh.is_multi_process else _global
    return jax.tree_util.tree_map(lambda a: put(a, _seed_sharding(mesh, a)), tree)


def _seed_sharding(mesh: Mesh, a) -> NamedSharding:
    """Split along "seeds"; an empty leaf (e.g. the ``(seeds, ψ, 0)`` noise state of
    ``noise="normal"``) replicated, the placement XLA gives it back anyway."""
    empty = 0 in getattr(a, "shape", ())
    return NamedSharding(mesh, PartitionSpec() if empty else PartitionSpec(SEEDS))


def _global(a, sharding):
    if jax.dtypes.issubdtype(a.dtype, jax.dtypes.prng_key):
        data = _global(jax.random.key_data(a), sharding)
        return jax.random.wrap_key_data(data, impl=jax.random.key_impl(a))
    return jax.make_array_from_process_local_data(sharding, np.asarray(a), a.shape)


def replicate(tree, mesh: Mesh | None):
    """Inside a jitted function: every leaf of ``tree`` replicated on every device of
    ``mesh`` (the chunk's metrics, small, so that every process can read them)."""
    return tree if mesh is None else _constrain(tree, NamedSharding(mesh, PartitionSpec()))


def keep_placed(tree, mesh: Mesh | None):
    """Inside a jitted function: every leaf of ``tree`` (leading seed axis) constrained to
    :func:`place`'s sharding, so a compiled chunk returns its states as it takes them (XLA
    would otherwise choose, e.g. split an emitter's stored batch over "solutions", and an
    ahead-of-time compiled chunk refuses states placed differently)."""
    if mesh is None:
        return tree
    return jax.tree_util.tree_map(
        lambda a: jax.lax.with_sharding_constraint(a, _seed_sharding(mesh, a)), tree
    )


def _constrain(tree, sharding):
    """Inside a jitted function: every leaf of ``tree`` constrained to ``sharding``."""
    return jax.tree_util.tree_map(lambda a: jax.lax.with_sharding_constraint(a, sharding), tree)


def shards_solutions(mesh: Mesh | None) -> bool:
    """Whether ``mesh`` splits the evaluations' solutions over more than one device."""
    return mesh is not None and mesh.shape[SOLUTIONS] > 1


def per_seed_group(run_seeds: Callable, mesh: Mesh | None) -> Callable:
    """``run_seeds(keys, states) -> (states, metrics)`` (every leaf with a leading seed axis)
    run by each group of devices on its own seeds: a ``jax.shard_map`` manual over "seeds"
    (automatic over "solutions"), so that each group sees its local seeds only (one seed per
    group then runs without the seed ``vmap``, which on the CPU made MJX rollouts 1.3-1.5x
    slower); ``run_seeds`` itself when the seeds are not split."""
    if mesh is None or mesh.shape[SEEDS] == 1:
        return run_seeds

    def whole(tree):  # replicated over "solutions" (the automatic axis), as placed
        return _constrain(tree, NamedSharding(jax.sharding.get_abstract_mesh(), PartitionSpec()))

    def local(keys, states):
        # pinned at both ends, so the partitioner does not split the states over "solutions"
        return whole(run_seeds(keys, whole(states)))

    spec = PartitionSpec(SEEDS)
    return jax.shard_map(
        local,
        mesh=mesh,
        in_specs=(spec, spec),
        out_specs=(spec, spec),
        axis_names=frozenset({SEEDS}),
        check_vma=False,
    )


def sharded_evaluate(evaluate: Callable, mesh: Mesh | None) -> Callable:
    """``evaluate`` with its batch split over the mesh's "solutions" axis (inside the compiled
    chunk); ``evaluate`` itself when nothing is split. Hashable and equal for equal arguments,
    so it is a stable static argument of a jitted function."""
    return ShardedEvaluate(evaluate, mesh) if shards_solutions(mesh) else evaluate


@dataclasses.dataclass(frozen=True)
class ShardedEvaluate:
    """``evaluate(solutions (batch, n), key)`` run split along "solutions": the solutions and
    every returned leaf with the leading batch axis are constrained to be split, then the
    results are gathered (replicated over "solutions") for the rest of the iteration, which
    every device of a seed group then computes as the unsharded program does. One seed's view
    (a seed ``vmap`` around it leaves the seed axis to :func:`per_seed_group`)."""

    evaluate: Callable
    mesh: Mesh

    def __call__(self, solutions, key):
        rows = solutions.shape[0]
        # inside per_seed_group's shard_map the mesh in context has "seeds" manual
        mesh = jax.sharding.get_abstract_mesh()
        mesh = mesh if SOLUTIONS in mesh.axis_names else self.mesh

        def rowwise(spec):  # constrain every leaf with the leading batch axis to ``spec``
            sharding = NamedSharding(mesh, spec)
            one = lambda a: (
                jax.lax.with_sharding_constraint(a, sharding)
                if getattr(a, "ndim", 0) >= 1 and a.shape[0] == rows
                else a
            )
            return lambda tree: jax.tree_util.tree_map(one, tree)

        split, whole = rowwise(PartitionSpec(SOLUTIONS)), rowwise(PartitionSpec())
        return whole(split(self.evaluate(split(solutions), key)))  # computed split, gathered
