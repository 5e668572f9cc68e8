"""Regenerate the seed corpora in fuzz/corpus/ (deterministic; commit the result).

    python fuzz/make_corpus.py

Seeds are real data made by the standard library (pickles of every protocol,
struct records) and real frame streams made by an independent reference
encoder, each laid out the way its target decodes its input (see each
target's test_one_input). A few dozen small files per target.
"""

import collections
import datetime
import decimal
import hashlib
import os
import pickle
import random
import shutil
import struct

import _harness  # noqa: F401 (puts the repository root on sys.path)

from tests.support import frames as ref

HERE = os.path.dirname(os.path.abspath(__file__))
CORPUS = os.path.join(HERE, "corpus")


def write(target, seeds):
    folder = os.path.join(CORPUS, target)
    shutil.rmtree(folder, ignore_errors=True)
    os.makedirs(folder)
    for data in dict.fromkeys(seeds):  # de-duplicated, order kept
        name = hashlib.sha1(data).hexdigest()[:16]
        with open(os.path.join(folder, name), "wb") as f:
            f.write(data)
    print(f"{target}: {len(os.listdir(folder))} seeds")


# --- struct: control, len(fmt), fmt, offset, 8 value picks, buffer -----------------

STRUCT_FORMATS = [
    b">ii", b"<HHI", b"!IhB", b"<qd", b"10s", b"@bhilqnNP?efd", b"=bhilq", b"3x2s5p",
    b"0s0x0i", b"c?", b"<e", b"b i h q", b"<5p", b"255p", b">Q", b"@P", b"=?", b"<3f",
    b"2d", b"<0p", b"@ci", b"<\th\n i", b"999999999999s", b"<ixxxxi", b"!q",
]


def struct_seeds(rng):
    for fmt in STRUCT_FORMATS:
        size = struct.calcsize(fmt)
        buffer = bytes(rng.randrange(256) for _ in range(min(size, 4096)))
        control = 0b100 * rng.randrange(2)  # raw bytes format, bytes or str argument
        picks = bytes(rng.randrange(256) for _ in range(8))
        yield bytes([control, len(fmt)]) + fmt + bytes([0]) + picks + buffer
        # Wrong sizes and a negative offset.
        yield bytes([control | 2, len(fmt)]) + fmt + (65530).to_bytes(2, "little") + picks + buffer[:-1]


# --- pickle ------------------------------------------------------------------

class Point:
    """Reaches REDUCE/BUILD/NEWOBJ paths; not in any allow-list, so rejected."""

    def __init__(self, x, y):
        self.x, self.y = x, y


def pickle_values():
    shared = [1, 2]
    cyclic = [0]
    cyclic.append(cyclic)
    return [
        None, True, False, 0, 1, -1, 255, 65536, -2**31, 2**31, 2**63, -2**64, 2**1000,
        0.0, -0.0, 1.5, float("inf"), float("nan"), 1e-310, 3 - 4j,
        b"", b"bytes", bytes(range(256)), bytearray(b"ba"), "", "text", "\u20ac\U0001f600", "x" * 300,
        (), (1,), (1, 2), (1, 2, 3), (1, 2, 3, 4), [], [1, [2, [3]]], {}, {"a": 1, 2: b"b"},
        {1, 2, 3}, frozenset({"f"}), [shared, shared], cyclic, {"k": (shared, shared)},
        collections.OrderedDict(a=1, b=2), datetime.datetime(2026, 11, 28, 17, 0, 1, 123),
        datetime.date(1999, 12, 31), datetime.timedelta(days=-3, seconds=7), decimal.Decimal("-1.25e-7"),
        Point(1, 2), range(3), slice(1, 2, 3), list(range(300)),
    ]


def pickles():
    for value in pickle_values():
        for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
            try:
                yield protocol, pickle.dumps(value, protocol=protocol)
            except Exception:
                continue


def pickle_loads_seeds():
    for i, (protocol, data) in enumerate(pickles()):
        if i % 6 == 0 or (i % 6 == 3 and protocol in (0, 5)):
            yield bytes([i % 3]) + data  # mode byte: restricted / allow-list / find_class


def pickle_unpickler_seeds(rng):
    streams = [data for _, data in pickles()]
    for i in range(30):
        picked = rng.sample(streams, rng.randrange(1, 4))
        yield bytes([i % 6]) + b"".join(picked)


# --- pickle_structure: mode, k, k callback actions, recipe steps -----------------
# The step encoding mirrors Recipe.step in fuzz_pickle_structure.py: first byte
# of a step is the operation (mod 13), then its parameters.

def atom_int(value):
    return bytes([0, 2]) + value.to_bytes(4, "little")


def atom_word(index, as_bytes=False):
    return bytes([0, 4 if as_bytes else 3, index])


ATOM_NONE = bytes([0, 0])
EMPTY_LIST, EMPTY_DICT, EMPTY_TUPLE, EMPTY_SET = (bytes([3, i]) for i in range(4))
APPEND, SETITEM = bytes([4]), bytes([5])
PUT_NEXT, GET_FIRST, POP = bytes([7, 2]), bytes([8, 0]), bytes([12, 1])


def tuple_of(n):
    return bytes([6, n - 1])


def put_at(boundary):
    return bytes([7, 1, boundary])     # 255, 256, 65535, 65536, 2**20


def deep(shape, n):
    # n = uint3 % (1 << shift) + 1: shift 19 keeps any n below 2**19
    return bytes([9, shape]) + (n - 1).to_bytes(3, "little") + bytes([18])


def doublings(levels, as_list):
    return bytes([10, levels, as_list]) + b"\x02" * levels   # each level PUTs at the next index


def use_top(how):
    return bytes([11, 1, how, 2])


def call(global_index, newobj=False):
    return bytes([11, 0, global_index, 2, int(newobj)])


def global_value(index):
    return bytes([12, 2, index])


def persistent(pid):
    return bytes([12, 0, pid])


def structure_seeds():
    plain = [
        atom_int(7) + atom_word(1) + tuple_of(2),
        EMPTY_LIST + atom_int(1) + APPEND + PUT_NEXT + GET_FIRST + tuple_of(2),
        EMPTY_DICT + atom_word(2) + atom_int(3) + SETITEM,
        EMPTY_SET + atom_int(5) + tuple_of(1) + tuple_of(1) + call(3),  # frozenset((5,))
        atom_int(1) + atom_int(2) + tuple_of(2) + call(9),         # Pair(1, 2)
        atom_int(1) + atom_int(2) + tuple_of(2) + call(5, newobj=True),
        atom_int(1) + PUT_NEXT + put_at(0) + put_at(1) + put_at(2) + put_at(3) + GET_FIRST,
        atom_word(3, as_bytes=True) + atom_word(2) + tuple_of(2) + call(0),  # str(b, "latin1")
    ]
    shaped = [
        atom_int(1) + doublings(4, 0),
        atom_int(1) + doublings(4, 1) + use_top(0),
        atom_int(1) + doublings(3, 0) + use_top(3),
        deep(0, 50) + use_top(0),
        deep(1, 50),
        deep(2, 50),
        deep(3, 50) + use_top(1),
        atom_word(1, as_bytes=True) + atom_word(2) + tuple_of(2) + call(9) + call(0),  # str(*Pair)
        # bytes(*p) through NEWOBJ, p a one-item Pair from copyreg._reconstructor
        global_value(9) + global_value(6) + atom_int(70000) + tuple_of(1) + tuple_of(3)
        + call(11) + call(1, newobj=True),
    ]
    for i, recipe in enumerate(plain + shaped):
        for mode in range(4):
            yield bytes([mode, 0, i & 1]) + recipe           # proto byte: 2 or 4
    # Re-entrant callbacks: each action once, from persistent_load, find_class and read.
    for action in range(9):
        recipe = persistent(action) + atom_int(1) + atom_int(2) + tuple_of(2) + call(9)
        for mode in (1, 3):
            yield bytes([mode, 2, action, action]) + b"\x01" + recipe


# --- frames and varints ----------------------------------------------------------

def frame_stream_seeds(rng):
    for prefix_index, prefix in enumerate(ref.PREFIXES):
        for case in range(4):
            payloads = [bytes(rng.randrange(256) for _ in range(rng.choice([0, 1, 5, 70, 300])))
                        for _ in range(rng.randrange(1, 5))]
            if ref.prefix_limit(prefix) < 300:
                payloads = [p[:ref.prefix_limit(prefix)] for p in payloads]
            stream = b"".join(ref.encode_frame(prefix, p) for p in payloads)
            if case == 3:
                stream = stream[:-1]  # a partial frame at the end
            splits = bytes(rng.randrange(256) for _ in range(3))
            control = bytes([prefix_index, case, len(splits)])
            yield control + splits + stream
    # Hostile headers: huge declared lengths, negative ones, overlong varints.
    yield bytes([ref.PREFIXES.index(">I"), 0, 0]) + b"\xff\xff\xff\xff" + b"x" * 8
    yield bytes([ref.PREFIXES.index(">q"), 1, 0]) + b"\x80" + b"\0" * 7
    yield bytes([ref.PREFIXES.index("multiprocessing"), 0, 0]) + b"\xff\xff\xff\xff" + b"\x7f" + b"\xff" * 7
    yield bytes([ref.PREFIXES.index("varint"), 0, 0]) + b"\xff" * 9 + b"\x02"
    yield bytes([ref.PREFIXES.index("varint"), 0, 0]) + b"\x80" * 12


def varint_seeds():
    for value in [0, 1, 127, 128, 255, 300, 16383, 16384, 2**31, 2**32 - 1, 2**35, 2**56, 2**63, 2**64 - 1]:
        yield b"\0" + ref.encode_varint(value) + b"tail"
        yield b"\1" + value.to_bytes(8, "little")
    yield b"\0" + b"\xff" * 9 + b"\x01"
    yield b"\0" + b"\xff" * 9 + b"\x02"
    yield b"\0" + b"\x80" * 10
    yield b"\0" + b"\x81\x80\x80\x00"  # non-minimal (padded) encoding of 1


def main():
    rng = random.Random(6)  # fixed seed: the corpus is reproducible
    write("struct", struct_seeds(rng))
    write("pickle_loads", pickle_loads_seeds())
    write("pickle_unpickler", pickle_unpickler_seeds(rng))
    write("pickle_structure", structure_seeds())
    write("frames", frame_stream_seeds(rng))
    write("varint", varint_seeds())


if __name__ == "__main__":
    main()
