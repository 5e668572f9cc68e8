"""Containers that Dask moves as one object instead of element by element.

When Dask sends a value between processes (``get_data`` between workers, gather
to the client) it wraps it in ``Serialize``, and ``serialize`` then walks any value
whose type is *exactly* ``list``, ``tuple``, ``set`` or ``dict`` and serializes each
element on its own: a header, a family look-up and a frame per element. For
100,000 small records that bookkeeping costs more than a dozen times the pickling
itself. A subclass is not walked (Dask compares ``type(x)``, not ``isinstance``),
so these subclasses travel as one pickle while behaving exactly like the builtin
container in user code.
"""

from __future__ import annotations


class WholeList(list):
    """A ``list`` that Dask serializes in one piece (see :func:`whole`)."""

    __slots__ = ()


class WholeTuple(tuple):
    """A ``tuple`` that Dask serializes in one piece (see :func:`whole`)."""

    __slots__ = ()


class WholeDict(dict):
    """A ``dict`` that Dask serializes in one piece (see :func:`whole`)."""

    __slots__ = ()


class WholeSet(set):
    """A ``set`` that Dask serializes in one piece (see :func:`whole`)."""

    __slots__ = ()


_WRAPPERS = {list: WholeList, tuple: WholeTuple, dict: WholeDict, set: WholeSet}
WHOLE_TYPES = tuple(_WRAPPERS.values())


def whole(container):
    """Return ``container`` as a subclass Dask moves as one object, not per element.

    Use it on large lists, tuples, dicts or sets that a task returns or that you
    scatter: ``return fastwire.dask.whole(records)``. The result compares equal to
    the original and is an instance of the original type. Costs one shallow copy
    of the container. Raises :class:`TypeError` for anything other than a plain
    ``list``, ``tuple``, ``dict`` or ``set``.
    """
    kind = type(container)
    if kind in WHOLE_TYPES:
        return container
    wrapper = _WRAPPERS.get(kind)
    if wrapper is None:
        raise TypeError(f"whole() takes a list, tuple, dict or set, not {kind.__name__}")
    return wrapper(container)
