"""Turning the family on across a deployment: preload hook, plugins, client helper.

The family registry is per process, and each hop is serialized with a list of
family names chosen by the *sending* side of the connection that asked:

* client -> worker (``scatter``) and worker -> client (``gather``) use the
  client's ``serializers`` / ``deserializers`` (its connection pool's lists; a
  request carries the reader's list and the server answers with it);
* worker -> worker transfers use the requesting worker's connection pool lists,
  which ``dask worker`` cannot set: :func:`setup_worker` sets them;
* the task graph (client -> scheduler) is always serialized with Dask's default
  families, and task specifications (scheduler -> worker) are always ``ToPickle``:
  no family reaches them; :func:`~fastwire.dask.use_fastwire_pickle` does.

Every process that may *decode* the family must have registered it (importing
:mod:`fastwire.dask` does), or Dask fails with ``KeyError: 'fastwire'``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from distributed.diagnostics.plugin import SchedulerPlugin, WorkerPlugin

from ._family import FAMILY, register
from ._pickle_path import use_fastwire_pickle

#: Family lists for ``Client(serializers=..., deserializers=...)`` and worker
#: transfers: fastwire first, then Dask's defaults for what it declines.
SERIALIZERS = (FAMILY, "dask", "pickle")


@dataclass(frozen=True)
class Options:
    """What :func:`setup_process` / :func:`setup_worker` turn on.

    ``worker_transfers``: workers request data from each other with
    :data:`SERIALIZERS` (default True). ``dask_pickle``: route Dask's own pickle
    path through fastwire.pickle (default False; see use_fastwire_pickle).
    ``allowed``: restricted decoding for the family (default None: unrestricted).
    ``pause_gc``: rebuild large pickles with the cyclic garbage collector paused
    (default True; see register).
    """

    worker_transfers: bool = True
    dask_pickle: bool = False
    allowed: tuple | None = None
    pause_gc: bool = True

    @classmethod
    def from_config(cls) -> Options:
        """Read the ``fastwire.*`` keys of Dask's configuration (YAML, ``DASK_FASTWIRE__*`` env)."""
        import dask

        allowed = dask.config.get("fastwire.allowed", None)
        return cls(
            worker_transfers=bool(dask.config.get("fastwire.worker-transfers", True)),
            dask_pickle=bool(dask.config.get("fastwire.dask-pickle", False)),
            allowed=None if allowed is None else tuple(allowed),
            pause_gc=bool(dask.config.get("fastwire.pause-gc", True)),
        )


def setup_process(options: Options = Options()) -> None:
    """Register the family in this process (and the pickle-path opt-in if asked)."""
    register(allowed=options.allowed, pause_gc=options.pause_gc)
    if options.dask_pickle:
        use_fastwire_pickle()


def setup_worker(worker: Any, options: Options = Options()) -> None:
    """Prepare one worker: register the family and, if asked, use it for transfers
    this worker requests from other workers (``worker.rpc`` lists). Lists the
    worker was given explicitly (``Worker(serializers=...)``) are left as they are:
    they are the user's choice, which may name a family of their own."""
    setup_process(options)
    if options.worker_transfers:
        if worker.rpc.serializers is None:
            worker.rpc.serializers = list(SERIALIZERS)
        if worker.rpc.deserializers is None:
            worker.rpc.deserializers = list(SERIALIZERS)


class FastwireWorkerPlugin(WorkerPlugin):
    """Runs :func:`setup_worker` on every current and future worker of a cluster."""

    name = "fastwire"
    idempotent = True

    def __init__(self, options: Options = Options()):
        self.options = options

    def setup(self, worker):
        setup_worker(worker, self.options)


class FastwireSchedulerPlugin(SchedulerPlugin):
    """Runs :func:`setup_process` in the scheduler."""

    name = "fastwire-scheduler"
    idempotent = True

    def __init__(self, options: Options = Options()):
        self.options = options

    async def start(self, scheduler):
        setup_process(self.options)


def install(client: Any, *, worker_transfers: bool = True, dask_pickle: bool = False,
            allowed=None, pause_gc: bool = True) -> None:
    """Turn fastwire on for a running cluster from its client.

    Registers the family here, in the scheduler and on every worker (including
    workers that join later, through plugins). For the client's own hops to use
    the family, create it with ``serializers=SERIALIZERS, deserializers=SERIALIZERS``
    and call this before it sends or fetches any data (workers without the family
    answer such a client with ``KeyError: 'fastwire'``). The keywords are the
    fields of :class:`Options`. Raises whatever ``client.register_plugin`` raises
    (for example if a worker cannot import fastwire).
    """
    options = Options(worker_transfers, dask_pickle, None if allowed is None else tuple(allowed), pause_gc)
    setup_process(options)
    client.register_plugin(FastwireSchedulerPlugin(options))
    client.register_plugin(FastwireWorkerPlugin(options))


def dask_setup(server: Any) -> None:
    """Preload hook: ``dask worker --preload fastwire.dask``, ``dask scheduler --preload
    fastwire.dask`` or the ``distributed.{worker,scheduler,nanny}.preload`` config.

    Options come from Dask's configuration: ``fastwire.worker-transfers``,
    ``fastwire.dask-pickle``, ``fastwire.allowed``, ``fastwire.pause-gc``.
    """
    from distributed import Worker

    options = Options.from_config()
    if isinstance(server, Worker):
        setup_worker(server, options)
    else:
        setup_process(options)
