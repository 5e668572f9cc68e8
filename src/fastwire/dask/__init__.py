"""fastwire inside Dask distributed (optional extra: ``pip install fastwire[dask]``).

Importing this module registers the ``"fastwire"`` serialization family with
Dask in the importing process. Two lines turn it on for a local cluster::

    client = Client(LocalCluster(), serializers=fastwire.dask.SERIALIZERS,
                    deserializers=fastwire.dask.SERIALIZERS)
    fastwire.dask.install(client)      # scheduler + every worker, now and later

and for ``dask worker`` processes on several machines::

    dask scheduler --preload fastwire.dask
    dask worker tcp://scheduler:8786 --preload fastwire.dask

See ``docs/dask.md`` for which hops each way reaches and what is accelerated.
``import fastwire`` never imports Dask; this module requires ``distributed``.
"""

from __future__ import annotations

try:
    import distributed  # noqa: F401
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "fastwire.dask needs Dask distributed: python -m pip install 'fastwire[dask]'"
    ) from exc

from ._deploy import (
    SERIALIZERS,
    FastwireSchedulerPlugin,
    FastwireWorkerPlugin,
    Options,
    dask_setup,
    install,
    setup_process,
    setup_worker,
)
from ._family import FAMILY, allowed, decodes as _decodes, dumps, loads, register
from ._pickle_path import (
    DASK_PICKLE_PATH,
    TESTED_DISTRIBUTED,
    fastwire_pickle_in_use,
    use_fastwire_pickle,
)
from ._whole import WholeDict, WholeList, WholeSet, WholeTuple, whole


def track_decodes() -> dict[str, int]:
    """Count decodes of every registered Dask family in this process, from now on.

    The ``"fastwire"`` family and the :func:`use_fastwire_pickle` path always
    count; this wraps the other families' decoders too (idempotent) so that
    :func:`decode_counts` shows which family decoded what arrived here: the way
    to check a deployment. Returns the current counts.
    """
    from distributed.protocol.serialize import families

    for name, (encode, decode, wants_context) in list(families.items()):
        if name == FAMILY or getattr(decode, "_fastwire_counted", False) or decode is None:
            continue

        def counted(header, frames, _decode=decode, _name=name):
            _decodes[_name] += 1
            return _decode(header, frames)

        counted._fastwire_counted = True
        families[name] = (encode, counted, wants_context)
    return decode_counts()


def decode_counts() -> dict[str, int]:
    """Decodes done in this process so far, by family name (and ``DASK_PICKLE_PATH``)."""
    return dict(_decodes)


register()

__all__ = [
    "DASK_PICKLE_PATH",
    "FAMILY",
    "SERIALIZERS",
    "TESTED_DISTRIBUTED",
    "FastwireSchedulerPlugin",
    "FastwireWorkerPlugin",
    "Options",
    "WholeDict",
    "WholeList",
    "WholeSet",
    "WholeTuple",
    "allowed",
    "dask_setup",
    "decode_counts",
    "dumps",
    "fastwire_pickle_in_use",
    "install",
    "loads",
    "register",
    "setup_process",
    "setup_worker",
    "track_decodes",
    "use_fastwire_pickle",
    "whole",
]
