"""Receive memory for out-of-band buffers: which allocation is fastest here.

Receives SIZE-byte buffers (64 MiB by default) with receive_buffer() over an
AF_UNIX socketpair from a sender process, each allocation strategy of
blocks.h with the pool off, the chosen one with the pool on (the previous
buffer dropped, as a caller that keeps one array at a time does), and
recv_into a preallocated bytearray (the upper bound: memory already paged in).
Variants are interleaved round by round; the median per variant is printed.

    PYTHONPATH=src python bench/oob_alloc.py [--rounds N] [--size MiB]
"""

from __future__ import annotations

import argparse
import os
import random
import socket
import statistics
import subprocess
import sys
import time

from fastwire._fastwire import _receive_buffer_strategy, receive_buffer, receive_buffer_pool

STRATEGIES = ["heap", "remap", "reserve", "huge", "populate", "huge_populate"]
SENDER = """
import os, socket, sys
sock = socket.socket(fileno=int(sys.argv[1]))
payload = os.urandom(int(sys.argv[2]))
for _ in range(int(sys.argv[3])):
    sock.sendall(payload)
"""


def variants(size: int):
    """name -> (prepare, receive): prepare(recv_into) runs untimed before
    receive(recv_into), which receives one buffer of `size` bytes."""
    def strategy(index: int, pooled: bool):
        def prepare(recv_into):
            _receive_buffer_strategy(index)
            receive_buffer_pool(max_blocks=0)  # the last variant's blocks out
            if pooled:
                # A buffer received and dropped, as by a caller done with
                # the previous array: its block is in the pool.
                receive_buffer_pool(max_blocks=4)
                receive_buffer(recv_into, size, b"", False)

        def receive(recv_into):
            return receive_buffer(recv_into, size, b"", False)
        return prepare, receive

    table = {name: strategy(i, False) for i, name in enumerate(STRATEGIES)}
    table.update({f"{name}+pool": strategy(i, True) for i, name in enumerate(STRATEGIES)
                  if name in ("heap", "reserve", "huge")})
    spare = bytearray(size)

    def preallocated(recv_into):
        view = memoryview(spare)
        filled = 0
        while filled < size:
            filled += recv_into(view[filled:])
        return spare

    table["bytearray reused"] = (lambda recv_into: None, preallocated)
    return table


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--size", type=int, default=64, help="MiB per buffer")
    args = parser.parse_args()
    size = args.size * 1024 * 1024
    table = variants(size)
    names = list(table)
    pooled = sum(name.endswith("+pool") for name in names)
    here, there = socket.socketpair(socket.AF_UNIX)
    sender = subprocess.Popen([sys.executable, "-c", SENDER, str(there.fileno()), str(size),
                               str(args.rounds * (len(names) + pooled) + 1)], pass_fds=[there.fileno()])
    there.close()
    times: dict[str, list[float]] = {name: [] for name in names}
    try:
        receive_buffer(here.recv_into, size, b"", False)  # warm-up: the sender is running
        for _ in range(args.rounds):
            random.shuffle(names)
            for name in names:
                prepare, receive = table[name]
                prepare(here.recv_into)
                start = time.perf_counter()
                result = receive(here.recv_into)
                times[name].append(time.perf_counter() - start)
                del result
    finally:
        here.close()
        sender.wait(timeout=60)
    print(f"{args.size} MiB per buffer, {args.rounds} interleaved rounds, median (min-max) GB/s, "
          f"Python {sys.version.split()[0]}, pid {os.getpid()}")
    for name in table:
        rates = [size / t / 1e9 for t in times[name]]
        print(f"  {name:18s} {statistics.median(rates):5.2f}  ({min(rates):.2f}-{max(rates):.2f})")


if __name__ == "__main__":
    main()
