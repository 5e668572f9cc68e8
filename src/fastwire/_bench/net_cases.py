"""Benchmark pairs for fastwire.net messaging (filled in with fastwire.net)."""


def pairs():
    return []
