"""Data sets shared by the pickle benchmarks (dumps and loads time the same objects)."""

from __future__ import annotations


class Point:
    """A small class instance; module-level so every pickler can find it by name."""

    def __init__(self, x, y, label):
        self.x = x
        self.y = y
        self.label = label

    def __eq__(self, other):
        return type(other) is Point and self.__dict__ == other.__dict__


def pickle_datasets() -> dict[str, object]:
    """The objects named in the pickle issue, built deterministically."""
    return {
        "2-item list": [1, "two"],
        "1000 records": [
            {"id": i, "name": f"user{i}", "score": i * 1.5, "tags": ["a", f"t{i % 7}"], "active": i % 2 == 0}
            for i in range(1000)
        ],
        "10000 ints": list(range(-5000, 5000)),
        "10000 floats": [i * 0.25 for i in range(10000)],
        "10000 short strings": [f"s{i}" for i in range(10000)],
        "1 MiB bytes": bytes(range(256)) * 4096,
        "1000 instances": [Point(i, -i, f"p{i}") for i in range(1000)],
    }
