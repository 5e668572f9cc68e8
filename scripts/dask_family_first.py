"""pytest plugin: run Dask distributed's own tests with fastwire switched on.

Loaded by ``scripts/dask-own-tests`` (``-p dask_family_first``) into Dask's test
suite. It does what a deployment does, in the test process:

* the ``"fastwire"`` family goes first in Dask's default serializer list: every
  ``serialize(x)`` call that names no serializers uses ``("fastwire", "dask",
  "pickle")`` instead of Dask's ``("dask", "pickle")``;
* Dask's own pickle path runs on :mod:`fastwire.pickle`
  (``fastwire.dask.use_fastwire_pickle``);
* worker processes the tests start (``Nanny``) preload ``fastwire.dask`` with the
  pickle-path opt-in, through the environment they inherit, as a deployment
  configures ``dask worker``: every process that may decode the family has it.

Tests that assert *which family name* Dask chose (not a behaviour) are skipped
with the reason, listed in :data:`SKIPS`.
"""

from __future__ import annotations

import os
import sys

import dask
import pytest

import fastwire.dask

# The package attribute ``serialize`` is the function, which shadows the module.
_serialize_module = sys.modules["distributed.protocol.serialize"]
FAMILIES = tuple(fastwire.dask.SERIALIZERS)
_dask_serialize = _serialize_module.serialize

#: test node id suffix -> why it is skipped with the family on.
SKIPS: dict[str, str] = {
    "test_serialize.py::test_dumps_serialize":
        "asserts header['serializer'] == 'pickle' for 123 and a list: the name of Dask's "
        "own family, which the fastwire family first in the list replaces by design",
}


def serialize(x, serializers=None, *args, **kwargs):
    """Dask's serialize, with the fastwire family first when the caller names none."""
    return _dask_serialize(x, FAMILIES if serializers is None else serializers, *args, **kwargs)


serialize.__wrapped__ = _dask_serialize


PRELOAD = {"distributed.worker.preload": ["fastwire.dask"], "fastwire.dask-pickle": True}


def _switch_on() -> None:
    os.environ["DASK_DISTRIBUTED__WORKER__PRELOAD"] = '["fastwire.dask"]'
    os.environ["DASK_FASTWIRE__DASK_PICKLE"] = "True"
    dask.config.set(PRELOAD)
    # Dask imports the function by name in several modules (and the package
    # attribute shadows the submodule): rebind every reference to it.
    for module in list(sys.modules.values()):
        if getattr(module, "__name__", "").startswith("distributed") and \
                getattr(module, "serialize", None) is _dask_serialize:
            module.serialize = serialize
    fastwire.dask.use_fastwire_pickle()
    fastwire.dask.track_decodes()


_switch_on()


def pytest_report_header(config):
    return (f"fastwire family first in Dask's default serializers {FAMILIES}; "
            f"Dask's pickle path on fastwire.pickle: {fastwire.dask.fastwire_pickle_in_use()}")


def pytest_collection_modifyitems(config, items):
    for item in items:
        for suffix, reason in SKIPS.items():
            if item.nodeid.endswith(suffix):
                item.add_marker(pytest.mark.skip(reason=f"with the fastwire family on: {reason}"))


def pytest_terminal_summary(terminalreporter):
    # Proof that the family was on: what this process decoded, by family.
    counts = dict(sorted(fastwire.dask.decode_counts().items()))
    terminalreporter.write_line(f"fastwire.dask decodes in the test process: {counts}")
