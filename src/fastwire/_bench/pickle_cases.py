"""Benchmark pairs for fastwire.pickle (filled in with the pickle codec)."""


def pairs():
    return []
