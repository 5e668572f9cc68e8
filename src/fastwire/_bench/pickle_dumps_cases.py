"""Benchmark pairs for fastwire.pickle.dumps (filled in with the pickle encoder)."""


def pairs():
    return []
