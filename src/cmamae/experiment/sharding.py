"""The compiled loop across devices: the seed axis of a run sharded over a device mesh.

Every leaf of the scheduler states and the per-seed keys has a leading seed axis; placing them
with ``NamedSharding(Mesh(devices, ("seeds",)), P("seeds"))`` makes the one
``jit(vmap(lax.scan))`` chunk run each device's seeds on that device (computation follows the
data; XLA's partitioner splits the ``vmap``). Seeds never talk to each other, so the result is
the one of the unsharded run. With one device nothing changes.

Multi-host JAX (``jax.distributed.initialize()``) is not supported yet: placing host-local
states on a mesh that spans processes needs ``jax.make_array_from_process_local_data``.
"""

from __future__ import annotations

import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

AXIS = "seeds"


def resolve_devices(devices: int | str | None) -> list:
    """The devices ``--devices`` asks for: ``None`` -> the default device only, ``"all"`` ->
    ``jax.devices()``, ``N`` -> the first N. Raises ValueError for more than exist."""
    available = jax.devices()
    if devices is None:
        return available[:1]
    if devices == "all":
        return list(available)
    if isinstance(devices, str) and devices.isdigit():
        devices = int(devices)
    if isinstance(devices, bool) or not isinstance(devices, int) or devices < 1:
        raise ValueError(f"devices must be a positive integer or 'all', got {devices!r}")
    if devices > len(available):
        raise ValueError(
            f"devices: {devices} requested but only {len(available)} "
            f"{available[0].platform} device(s) exist"
        )
    return list(available[:devices])


def seed_mesh(devices: list, seeds: int) -> Mesh | None:
    """A 1-D mesh over as many of ``devices`` as evenly divide ``seeds`` (the largest such
    count); None when that is one device (nothing to shard)."""
    count = max(d for d in range(1, len(devices) + 1) if seeds % d == 0)
    return None if count == 1 else Mesh(devices[:count], (AXIS,))


def shard_seeds(tree, mesh: Mesh | None):
    """Every leaf of ``tree`` (leading seed axis) placed on ``mesh``, split along the seeds;
    ``tree`` unchanged when ``mesh`` is None."""
    if mesh is None:
        return tree
    sharding = NamedSharding(mesh, PartitionSpec(AXIS))
    return jax.tree_util.tree_map(lambda a: jax.device_put(a, sharding), tree)
