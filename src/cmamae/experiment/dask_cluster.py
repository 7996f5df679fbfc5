"""Distributed evaluation of host tasks on a Dask cluster.

A :class:`DaskEvaluator` sends a batch of solutions to Dask workers in chunks and gathers
objectives and measures in the batch's order. Each worker process keeps one simulator per
task alive between chunks (:func:`cmamae.tasks.host.simulator_for`); a task that evaluates a
whole chunk at once (``task.evaluate_chunk``: the ``*-native`` MuJoCo tasks, one batched
simulation per solution, :mod:`cmamae.tasks.locomotion.host_tasks`) gets its chunks that way. Every
solution travels with its own episode argument (a reset seed or start state drawn from the
run's key on the host), so the result does not depend on which worker evaluates what:

* a worker that dies mid-batch: Dask reruns its chunks elsewhere (and a chunk that Dask gives
  up on, ``KilledWorker``, is submitted again here), with the same result;
* an evaluation that raises: retried once on the worker on a fresh simulator (a batched
  chunk: MuJoCo's error ends that simulation only), then NaN (rejected and counted by the
  archive), logged (logger ``cmamae.tasks.host``) and counted
  in :attr:`DaskEvaluator.num_failed`; the run goes on.

``connect(None, workers)`` starts an in-process ``LocalCluster`` of ``workers`` (default: one
per core) single-threaded worker processes; ``connect("tcp://host:8786")`` joins a running
scheduler and fails within ``timeout`` seconds when it cannot be reached.

Needs the ``dask`` extra: ``pip install 'cmamae[dask]'``.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import time
import urllib.parse
import warnings

import numpy as np

from cmamae import validate
from cmamae.experiment.config import ConfigError
from cmamae.tasks import host

EXTRA = "dask"
DEFAULT_TIMEOUT = 5.0
# Chunks per worker and batch: small enough to balance episodes of unequal length, large
# enough that Dask's per-task overhead (about a millisecond) stays small.
CHUNKS_PER_WORKER = 8
# The same for tasks that evaluate a chunk in one batch (``task.evaluate_chunk``, the
# ``*-native`` tasks): larger chunks batch the policies' forward pass over more simulations,
# and a chunk of many episodes balances itself.
BATCHED_CHUNKS_PER_WORKER = 2
# Times a chunk is submitted again after Dask gave up on it (KilledWorker).
RESUBMITS = 2
# Seconds between checks that the cluster still has workers while waiting for a result, and
# how long it may have none before the evaluation fails.
POLL_S = 10.0
NO_WORKER_TIMEOUT = 120.0

log = logging.getLogger(__name__)


class ClusterError(ConfigError):
    """The Dask cluster cannot be used (unreachable scheduler, missing extra, bad settings, no
    workers left); ``cmamae run`` reports it in one line with exit status 2."""


def require_dask():
    """The ``distributed`` module, or a ClusterError naming the extra to install."""
    try:
        import distributed
    except ImportError as err:
        raise ClusterError(
            f"distributed evaluation needs the '{EXTRA}' extra (pip install 'cmamae[{EXTRA}]'): "
            f"{err}"
        ) from None
    return distributed


def parse_address(address: str) -> tuple[str, int]:
    """``(host, port)`` of a scheduler address ``tcp://HOST:PORT`` (``HOST:PORT`` too)."""
    text = address if "://" in address else f"tcp://{address}"
    parsed = urllib.parse.urlsplit(text)
    try:
        port = parsed.port
    except ValueError:
        port = None
    if parsed.scheme != "tcp" or not parsed.hostname or port is None:
        raise ClusterError(f"cluster must be a scheduler address tcp://HOST:PORT, got {address!r}")
    return parsed.hostname, port


def check_reachable(address: str, timeout: float = DEFAULT_TIMEOUT) -> None:
    """Raise ClusterError unless a TCP connection to the scheduler opens within ``timeout``
    seconds (cheap: no Dask handshake)."""
    hostname, port = parse_address(address)
    try:
        with socket.create_connection((hostname, port), timeout=timeout):
            pass
    except OSError as err:
        raise ClusterError(
            f"cannot reach a Dask scheduler at {address!r} within {timeout:g} s ({err}); start "
            "one with `dask scheduler` and workers with `dask worker tcp://HOST:8786`"
        ) from None


def check_workers(workers) -> None:
    """ClusterError unless ``workers`` is None or an integer >= 1."""
    if workers is not None:
        validate.integer("workers", workers, error=ClusterError)


def connect(cluster: str | None = None, workers: int | None = None, timeout=DEFAULT_TIMEOUT):
    """A Dask ``Client``: to the scheduler at ``cluster``, or to a new in-process
    ``LocalCluster`` of ``workers`` single-threaded worker processes (default: one per core).

    The caller closes the client; closing a client of a LocalCluster made here also stops
    that cluster (``client.cluster``)."""
    check_workers(workers)
    distributed = require_dask()
    if cluster is not None:
        if workers is not None:
            raise ClusterError(
                "workers sizes the local cluster; with cluster= the scheduler's workers are used"
            )
        check_reachable(cluster, timeout)
        try:
            return distributed.Client(cluster, timeout=timeout)
        except (OSError, TimeoutError) as err:
            raise ClusterError(
                f"cannot connect to the Dask scheduler at {cluster!r}: {err}"
            ) from None
    local = distributed.LocalCluster(
        n_workers=workers or os.cpu_count() or 1,
        threads_per_worker=1,
        processes=True,
        dashboard_address=":0",  # any free port: never collides with another cluster
        silence_logs=logging.ERROR,
    )
    client = distributed.Client(local)
    client._cmamae_owns_cluster = True
    return client


def close(client) -> None:
    """Close ``client``, and its LocalCluster when :func:`connect` started it."""
    cluster = client.cluster if getattr(client, "_cmamae_owns_cluster", False) else None
    client.close()
    if cluster is not None:
        cluster.close()


class DaskEvaluator:
    """Evaluates batches of a :class:`~cmamae.tasks.host.HostTask` on a Dask cluster.

    >>> with DaskEvaluator(task, workers=2) as evaluator:
    ...     objectives, measures = evaluator(solutions, key)   # like task.evaluate

    Args:
        task: a host task (``task.host_evaluated``).
        client: a ``distributed.Client`` to use (not closed here); else one from
            :func:`connect` with ``cluster``, ``workers`` and ``timeout`` (closed by
            :meth:`close`).
        chunk_size: solutions per Dask task; default ``ceil(batch / (8 · workers))``, or
            ``ceil(batch / (2 · workers))`` for a task that evaluates a chunk in one batch
            (``task.evaluate_chunk``: a worker then runs the batched native engine).
    """

    def __init__(
        self,
        task,
        client=None,
        *,
        cluster: str | None = None,
        workers: int | None = None,
        chunk_size: int | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ):
        if not getattr(task, "host_evaluated", False):
            raise ValueError(
                f"task must be a host task (cmamae.tasks.host.HostTask), got {task.name!r}; "
                "JAX tasks run in the compiled loop"
            )
        if chunk_size is not None:
            validate.integer("chunk_size", chunk_size)
        self.task = task
        self.chunk_size = chunk_size
        self._owns_client = client is None
        self.client = connect(cluster, workers, timeout) if client is None else client
        self.num_failed = 0

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def close(self) -> None:
        if self._owns_client and self.client is not None:
            close(self.client)
        self.client = None

    @property
    def num_workers(self) -> int:
        return max(1, len(self.client.scheduler_info(n_workers=-1)["workers"]))

    def __call__(self, solutions, key) -> tuple[np.ndarray, np.ndarray]:
        """``task.evaluate(solutions, key)`` on the cluster: objectives ``(batch,)`` and
        measures ``(batch, m)``, float64."""
        solutions = np.asarray(solutions)
        return self.evaluate(solutions, self.task.episode_args(key, len(solutions)))

    def evaluate(self, solutions, args) -> tuple[np.ndarray, np.ndarray]:
        """Episodes of ``solutions`` ``(batch, n)`` with per-solution ``args`` (``batch``
        entries, e.g. from ``task.episode_args``), in order."""
        solutions = np.asarray(solutions)
        batch = len(solutions)
        if len(args) != batch:
            raise ValueError(f"args must have one entry per solution ({batch}), got {len(args)}")
        per_worker = BATCHED_CHUNKS_PER_WORKER if self._batched else CHUNKS_PER_WORKER
        size = self.chunk_size or math.ceil(batch / (per_worker * self.num_workers))
        starts = list(range(0, batch, max(1, size)))
        pieces = [(s, solutions[s : s + size], list(args[s : s + size])) for s in starts]
        results = self._run(pieces)
        objectives = np.concatenate([r[0] for r in results])
        measures = np.concatenate([r[1] for r in results])
        failures = [(s + row, text) for s, r in zip(starts, results) for row, text in r[2]]
        if failures:
            self.num_failed += len(failures)
            host.log_failures(self.task.name, failures)
        return objectives, measures

    @property
    def _batched(self) -> bool:
        return getattr(self.task, "evaluate_chunk", None) is not None

    def _submit(self, piece):
        _, x, args = piece
        t = self.task
        if self._batched:  # the whole chunk in one batched call on the worker
            return self.client.submit(t.evaluate_chunk, x, args, pure=False)
        return self.client.submit(
            host.run_episodes, t.simulator, t.episode, x, args, t.measure_dim, pure=False
        )

    def _run(self, pieces):
        distributed = require_dask()
        with warnings.catch_warnings():
            # The solutions are the payload: a batch of policies is megabytes by nature.
            warnings.filterwarnings("ignore", "Sending large graph", UserWarning)
            futures = [self._submit(p) for p in pieces]
        results = []
        for piece, future in zip(pieces, futures):
            for attempt in range(RESUBMITS + 1):
                try:
                    results.append(self._result(future))
                    break
                except distributed.KilledWorker:
                    if attempt == RESUBMITS:
                        raise
                    log.warning("a chunk's workers died repeatedly; submitting it again")
                    future = self._submit(piece)
        return results

    def _result(self, future):
        """``future.result()``, but a ClusterError once the cluster has had no worker for
        ``NO_WORKER_TIMEOUT`` seconds (Dask would wait for one forever)."""
        distributed = require_dask()
        idle_since = None
        while True:
            try:
                return future.result(timeout=POLL_S)
            except distributed.TimeoutError:
                if self.client.scheduler_info(n_workers=-1)["workers"]:
                    idle_since = None
                    continue
                idle_since = idle_since or time.monotonic()
                if time.monotonic() - idle_since > NO_WORKER_TIMEOUT:
                    raise ClusterError(
                        f"the Dask cluster has had no worker for {NO_WORKER_TIMEOUT:g} s; "
                        "start workers (dask worker tcp://HOST:8786) and continue the run "
                        "with --resume"
                    ) from None
