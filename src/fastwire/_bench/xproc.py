"""Across processes: two fresh interpreters, one streaming to the other.

``python -m fastwire bench --xproc`` runs each row in a new pair of
processes: this one receives (or asks, for round trips) and a child started
with ``python -m fastwire._bench.xproc`` sends (or answers). Rows:

* one-way streaming of one small dict per ``send`` (and per ``send_many``
  batch of 100), TCP loopback and AF_UNIX, for fastwire.net,
  multiprocessing.connection, a raw socket with pickle behind a 4-byte length
  (read through a ``BufferedReader``), and pyzmq's ``send_pyobj`` (PUSH/PULL)
  when pyzmq is installed;
* the stdlib's ``socket.makefile`` program: ``pickle.dump`` + ``flush`` per
  message, ``pickle.load`` on the other end, with ``pickle`` and with
  ``fastwire.pickle``;
* request/response round trips (latency) for fastwire.net and
  multiprocessing.connection, over TCP.

Streaming rates are CPU-time rates: messages divided by the CPU seconds
(user + system) of the busier end, from the receiver's first message to its
last. On an idle machine with a core per end the busier end sets the pace, so
this is the rate such a machine reaches; on a shared one it is the only figure
other processes do not move. Round trips are wall-clock time on the asking
side (a round trip's latency includes scheduling, which is the point). Each
figure is the median of ``runs`` fresh process pairs.
"""

from __future__ import annotations

import os
import pickle
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time

MESSAGE = {"id": 12345, "name": "fastwire", "score": 3.25, "tags": ["a", "b"]}
BATCH = 100
_HEADER = struct.Struct("!i")


def _have_zmq() -> bool:
    try:
        import zmq  # noqa: F401
    except ImportError:
        return False
    return True


# --- the two ends of each transport ------------------------------------------------------


def _fw_listen(family, address):
    from fastwire import net
    return net.Listener(address, family)


def _mp_listen(family, address):
    from multiprocessing import connection
    return connection.Listener(address, family)


def _fw_connect(family, address):
    from fastwire import net
    return net.Client(address, family)


def _mp_connect(family, address):
    from multiprocessing import connection
    return connection.Client(address, family)


def _socket_family(family):
    return socket.AF_UNIX if family == "AF_UNIX" else socket.AF_INET


def _send(impl, family, address, count, mode):
    """The child's side of one row: connect, then send `count` messages (or answer
    them); prints the CPU seconds its loop took."""
    start = time.process_time()
    _send_loop(impl, family, address, count, mode)
    print(time.process_time() - start, flush=True)


def _send_loop(impl, family, address, count, mode):
    if impl in ("fastwire", "mp.connection"):
        conn = (_fw_connect if impl == "fastwire" else _mp_connect)(family, address)
        if mode == "echo":
            for _ in range(count):
                conn.send(conn.recv())
        elif mode == "many":
            for _ in range(count // BATCH):
                conn.send_many([MESSAGE] * BATCH)
        else:
            for _ in range(count):
                conn.send(MESSAGE)
        conn.recv()                       # the receiver's "done": keeps the socket open until then
        conn.close()
    elif impl in ("raw", "makefile pickle", "makefile fastwire.pickle"):
        sock = socket.socket(_socket_family(family))
        sock.connect(address)
        if impl == "raw":
            for _ in range(count):
                body = pickle.dumps(MESSAGE, 5)
                sock.sendall(_HEADER.pack(len(body)) + body)
        else:
            dump = pickle.dump if impl == "makefile pickle" else _fw_pickle().dump
            f = sock.makefile("wb")
            for _ in range(count):
                dump(MESSAGE, f, 5)
                f.flush()
            f.close()
        sock.recv(1)
        sock.close()
    elif impl == "pyzmq":
        import zmq
        ctx = zmq.Context()
        push = ctx.socket(zmq.PUSH)
        push.connect(address)
        for _ in range(count):
            push.send_pyobj(MESSAGE)
        push.close(linger=-1)
        ctx.term()


def _fw_pickle():
    from fastwire import pickle as fw
    return fw


def _spawn(impl, family, address, count, mode):
    env = dict(os.environ)
    return subprocess.Popen([sys.executable, "-m", "fastwire._bench.xproc", impl, family, repr(address),
                             str(count), mode], env=env, stdout=subprocess.PIPE, text=True)


def _finish(child, own_cpu):
    """The larger of the two ends' CPU seconds: on an idle pair of cores the
    slower end sets the pace; other processes' time slices are not counted."""
    out, _ = child.communicate(timeout=120)
    return max(own_cpu, float(out.strip().splitlines()[-1]))


def _address(family, directory):
    if family == "AF_UNIX":
        return os.path.join(directory, "s")
    return ("127.0.0.1", 0)


def stream_rate(impl, family, count, mode="single") -> float:
    """Messages per second received by this process from a fresh child."""
    with tempfile.TemporaryDirectory() as directory:
        address = _address(family, directory)
        if impl == "pyzmq":
            return _zmq_rate(family, directory, count)
        if impl in ("fastwire", "mp.connection"):
            listener = (_fw_listen if impl == "fastwire" else _mp_listen)(family, address)
            child = _spawn(impl, family, listener.address, count, mode)
            try:
                conn = listener.accept()
                conn.recv()
                start = time.process_time()
                for _ in range(count - 1):
                    conn.recv()
                elapsed = time.process_time() - start
                conn.send(None)
                conn.close()
            finally:
                listener.close()
            return (count - 1) / _finish(child, elapsed)
        server = socket.socket(_socket_family(family))
        server.bind(address)
        server.listen(1)
        child = _spawn(impl, family, server.getsockname(), count, mode)
        try:
            sock, _ = server.accept()
            f = sock.makefile("rb")
            if impl == "raw":
                def receive():
                    (n,) = _HEADER.unpack(f.read(4))
                    return pickle.loads(f.read(n))
            else:
                load = pickle.load if impl == "makefile pickle" else _fw_pickle().load
                def receive():
                    return load(f)
            receive()
            start = time.process_time()
            for _ in range(count - 1):
                receive()
            elapsed = time.process_time() - start
            sock.sendall(b"x")
            f.close()
            sock.close()
        finally:
            server.close()
        return (count - 1) / _finish(child, elapsed)


def _zmq_rate(family, directory, count):
    import zmq
    ctx = zmq.Context()
    pull = ctx.socket(zmq.PULL)
    # The only row whose sender may exit before the receiver is done: a lost
    # message must end the row with an error, not hang it.
    pull.setsockopt(zmq.RCVTIMEO, 60_000)
    if family == "AF_UNIX":
        endpoint = f"ipc://{directory}/z"
        pull.bind(endpoint)
    else:
        port = pull.bind_to_random_port("tcp://127.0.0.1")
        endpoint = f"tcp://127.0.0.1:{port}"
    child = _spawn("pyzmq", family, endpoint, count, "single")
    try:
        pull.recv_pyobj()
        start = time.process_time()
        for _ in range(count - 1):
            pull.recv_pyobj()
        elapsed = time.process_time() - start
    finally:
        pull.close(linger=0)
        ctx.term()
        if child.poll() is None and sys.exc_info()[0] is not None:
            child.kill()
    # pyzmq's I/O thread works in both processes: its time is in process_time.
    return (count - 1) / _finish(child, elapsed)


def round_trip_seconds(impl, family, count) -> float:
    """Median-free mean seconds per request/response with a fresh echoing child."""
    with tempfile.TemporaryDirectory() as directory:
        address = _address(family, directory)
        listener = (_fw_listen if impl == "fastwire" else _mp_listen)(family, address)
        child = _spawn(impl, family, listener.address, count, "echo")
        try:
            conn = listener.accept()
            conn.send(MESSAGE)
            conn.recv()
            start = time.perf_counter()
            for _ in range(count - 1):
                conn.send(MESSAGE)
                conn.recv()
            elapsed = time.perf_counter() - start
            conn.send(None)
            conn.close()
        finally:
            listener.close()
            child.communicate(timeout=120)
        return elapsed / (count - 1)


def rows(count=100_000, runs=3, families=("AF_INET", "AF_UNIX")):
    """(name, figure, unit) rows: medians of `runs` fresh process pairs each."""
    impls = ["fastwire", "mp.connection", "raw"] + (["pyzmq"] if _have_zmq() else [])
    out = []
    for family in families:
        label = "TCP" if family == "AF_INET" else "AF_UNIX"
        for impl in impls:
            rate = statistics.median(stream_rate(impl, family, count) for _ in range(runs))
            out.append((f"{label} one-way, one message per send: {impl}", rate, "msg/s"))
        rate = statistics.median(stream_rate("fastwire", family, count, "many") for _ in range(runs))
        out.append((f"{label} one-way, send_many of {BATCH}: fastwire", rate, "msg/s"))
    for impl in ("makefile pickle", "makefile fastwire.pickle"):
        rate = statistics.median(stream_rate(impl, "AF_INET", count) for _ in range(runs))
        out.append((f"TCP makefile program (dump+flush / load): {impl.split(' ', 1)[1]}", rate, "msg/s"))
    for impl in ("fastwire", "mp.connection"):
        seconds = statistics.median(round_trip_seconds(impl, "AF_INET", count // 10) for _ in range(runs))
        out.append((f"TCP request/response round trip: {impl}", seconds * 1e6, "us"))
    return out


# The promises across processes, as (what, numerator row, denominator row,
# at least): a rate ratio of two rows of rows(), or for round trips the
# inverse ratio of latencies. "ahead of" is a ratio of at least 1.0.
TARGETS = [
    ("TCP single messages: fastwire / mp.connection", "TCP one-way, one message per send: fastwire",
     "TCP one-way, one message per send: mp.connection", 2.0),
    ("TCP single messages: fastwire / pyzmq send_pyobj", "TCP one-way, one message per send: fastwire",
     "TCP one-way, one message per send: pyzmq", 1.0),
    ("AF_UNIX single messages: fastwire / mp.connection", "AF_UNIX one-way, one message per send: fastwire",
     "AF_UNIX one-way, one message per send: mp.connection", 3.0),
    ("makefile program: fastwire.pickle / pickle", "TCP makefile program (dump+flush / load): fastwire.pickle",
     "TCP makefile program (dump+flush / load): pickle", 1.2),
    ("TCP round trip: mp.connection latency / fastwire latency", "TCP request/response round trip: mp.connection",
     "TCP request/response round trip: fastwire", 1.0),
]


def verdicts(rows):
    """(what, ratio, at least, met) for each target whose rows were measured."""
    figures = {name: value for name, value, _ in rows}
    out = []
    for what, top, bottom, least in TARGETS:
        if top in figures and bottom in figures:
            ratio = figures[top] / figures[bottom]
            out.append((what, ratio, least, ratio >= least))
    return out


def markdown(rows):
    """The rows, then the targets, as Markdown table lines."""
    lines = ["| transfer | figure |", "| --- | --- |"]
    for name, value, unit in rows:
        figure = f"{value / 1000:.0f}k {unit}" if unit == "msg/s" else f"{value:.1f} {unit}"
        lines.append(f"| {name} | {figure} |")
    lines += ["", "| target | this run | at least | met |", "| --- | --- | --- | --- |"]
    for what, ratio, least, met in verdicts(rows):
        lines.append(f"| {what} | **{ratio:.2f}x** | {least:.1f}x | {'yes' if met else '**no**'} |")
    return lines


def main(argv):
    impl, family, address, count, mode = argv
    import ast
    address = ast.literal_eval(address)
    _send(impl, family, address, int(count), mode)


if __name__ == "__main__":
    main(sys.argv[1:])
