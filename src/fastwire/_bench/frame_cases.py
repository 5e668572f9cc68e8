"""Benchmark pairs for fastwire frame scanning (filled in with the frame scanner)."""


def pairs():
    return []
