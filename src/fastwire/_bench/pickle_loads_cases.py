"""Benchmark pairs for fastwire.pickle.loads (filled in with the pickle decoder)."""


def pairs():
    return []
