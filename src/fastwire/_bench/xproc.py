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
  multiprocessing.connection, over TCP;
* arrays and buffers (array_rows): one 64 MiB float64 NumPy array, a dict of
  100 arrays of 64 KiB, a 64 MiB bytearray and read-only memoryview in a
  PickleBuffer, a 64 MiB pandas DataFrame, each per ``send``: fastwire.net
  with ``out_of_band=True`` and without, multiprocessing.connection, pyzmq
  zero-copy (a metadata frame, then each array sent without a copy and
  rebuilt with ``np.frombuffer``), and fastwire's
  ``send_bytes``/``recv_bytes_into`` a reused buffer as the ceiling; the
  receiver's peak memory over the payload; and small messages with
  ``out_of_band=True`` against the default. Here this process sends and the
  child receives: its peak memory is that of a process that did nothing else.

Streaming rates are CPU-time rates: messages (or bytes) divided by the CPU
seconds (user + system) of the busier end, from the receiver's first message
to its last. On an idle machine with a core per end the busier end sets the pace, so
this is the rate such a machine reaches; on a shared one it is the only figure
other processes do not move. Round trips are wall-clock time on the asking
side (a round trip's latency includes scheduling, which is the point). Each
figure is the median of ``runs`` fresh process pairs.
"""

from __future__ import annotations

import itertools
import math
import operator
import os
import pickle
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from typing import NamedTuple

MESSAGE = {"id": 12345, "name": "fastwire", "score": 3.25, "tags": ["a", "b"]}
BATCH = 100
_HEADER = struct.Struct("!i")


def _have(module):
    try:
        __import__(module)
    except ImportError:
        return False
    return True


# --- the two ends of each transport ------------------------------------------------------

OUT_OF_BAND = "fastwire out_of_band"


def out_of_band_available() -> bool:
    """Whether fastwire.net has the ``out_of_band`` sending option."""
    import inspect

    from fastwire import net
    return all("out_of_band" in inspect.signature(f).parameters for f in (net.Client, net.Listener))


def _listen(impl, family, address):
    if impl == "mp.connection":
        from multiprocessing import connection
        return connection.Listener(address, family)
    from fastwire import net
    if impl == OUT_OF_BAND:
        return net.Listener(address, family, out_of_band=True)
    return net.Listener(address, family)


def _connect(impl, family, address, trusted=False):
    if impl == "mp.connection":
        from multiprocessing import connection
        return connection.Client(address, family)
    from fastwire import net
    if impl == OUT_OF_BAND:
        return net.Client(address, family, trusted=trusted, out_of_band=True)
    return net.Client(address, family, trusted=trusted)


def _socket_family(family):
    return socket.AF_UNIX if family == "AF_UNIX" else socket.AF_INET


def _send(impl, family, address, count, mode):
    """The child's side of one row: connect, then send `count` messages (or answer
    them); prints the CPU seconds its loop took."""
    start = time.process_time()
    _send_loop(impl, family, address, count, mode)
    print(time.process_time() - start, flush=True)


def _send_loop(impl, family, address, count, mode):
    if impl in ("fastwire", OUT_OF_BAND, "mp.connection"):
        conn = _connect(impl, family, address)
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
        _wait_for_done()
        push.close(linger=-1)
        ctx.term()


def _wait_for_done():
    """Block until the receiver says it has every message (it closes our stdin).

    Closing a pyzmq socket while the receiver lags behind loses messages
    already sent, whatever the linger (libzmq #4660; seen over ipc: a few
    hundred of 100k when the receiver was slower): linger covers only this
    end's queue. So a pyzmq sender keeps its socket open until the receiver
    is done, as every other row's sender does."""
    sys.stdin.read()


def _fw_pickle():
    from fastwire import pickle as fw
    return fw


def _child_env(mode):
    """The environment a bench child runs in. A receiving child of an arrays
    row imports NumPy, whose OpenBLAS starts a thread per core that spins
    for a while after the import, inside the measured window: on this 2-core
    machine that thread's CPU seconds were counted as the receiver's (the
    out-of-band dict row's receiver measured 5-6 GB/s with it, 12 GB/s
    without). The receiver does no linear algebra, so its BLAS gets one
    thread."""
    env = dict(os.environ)
    if mode.startswith("receive "):
        env["OPENBLAS_NUM_THREADS"] = "1"
    return env


# The CPU a bench child runs on, when the row chooses one (array_rate's `cpus`):
# set by the child itself before it starts any thread.
_CPU_VARIABLE = "FASTWIRE_BENCH_CPU"


def _pin_from_env():
    """Run this process on the one CPU _CPU_VARIABLE names, if it names one."""
    cpu = os.environ.get(_CPU_VARIABLE)
    if cpu:
        os.sched_setaffinity(0, {int(cpu)})


def _spawn(impl, family, address, count, mode, cpu=None):
    env = _child_env(mode)
    if cpu is not None:
        env[_CPU_VARIABLE] = str(cpu)
    return subprocess.Popen([sys.executable, "-m", "fastwire._bench.xproc", impl, family, repr(address),
                             str(count), mode], env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)


def _finish(child, own_cpu):
    """The larger of the two ends' CPU seconds: on an idle pair of cores the
    slower end sets the pace; other processes' time slices are not counted.
    Closing the child's stdin is the receiver's "done" (see _wait_for_done)."""
    return max(own_cpu, float(_child_output(child)[0]))


def _child_output(child):
    """The fields of the child's last line, once it has exited successfully."""
    out, _ = child.communicate(timeout=120)
    if child.returncode != 0:
        raise RuntimeError(f"the bench child exited with status {child.returncode}")
    return out.strip().splitlines()[-1].split()


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
        if impl in ("fastwire", OUT_OF_BAND, "mp.connection"):
            listener = _listen(impl, family, address)
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


def _zmq_bind(sock, family, directory):
    """Bind `sock` where a fresh child can reach it; its endpoint."""
    if family == "AF_UNIX":
        endpoint = f"ipc://{directory}/z"
        sock.bind(endpoint)
        return endpoint
    return f"tcp://127.0.0.1:{sock.bind_to_random_port('tcp://127.0.0.1')}"


def _zmq_receive(sock, receive, count, child):
    """Call `receive` (a method of pyzmq socket `sock`, whose peer is `child`)
    `count` times, at full speed; raise, not hang, if the child dies first or
    nothing comes for _ZMQ_PATIENCE_SECONDS: pyzmq has no end of stream to
    tell a dead peer from a slow one."""
    import zmq
    sock.setsockopt(zmq.RCVTIMEO, 1000)
    due = iter(range(count))
    pending, waits, last = due, 0, count
    while True:
        try:
            for _ in pending:
                receive()
            return
        except zmq.Again:
            if child.poll() is not None:
                raise RuntimeError(f"the pyzmq peer exited (status {child.returncode}) "
                                   "before every message arrived") from None
            left = operator.length_hint(due)
            waits = waits + 1 if left == last else 1
            last = left
            if waits >= _ZMQ_PATIENCE_SECONDS:
                raise TimeoutError(f"no pyzmq message for {_ZMQ_PATIENCE_SECONDS} s") from None
            pending = itertools.chain((None,), due)    # the message that timed out is still due


_ZMQ_PATIENCE_SECONDS = 60


def _zmq_rate(family, directory, count):
    import zmq
    ctx = zmq.Context()
    pull = ctx.socket(zmq.PULL)
    try:
        child = _spawn("pyzmq", family, _zmq_bind(pull, family, directory), count, "single")
        try:
            _zmq_receive(pull, pull.recv_pyobj, 1, child)
            start = time.process_time()
            _zmq_receive(pull, pull.recv_pyobj, count - 1, child)
            elapsed = time.process_time() - start
            # pyzmq's I/O thread works in both processes: its time is in process_time.
            return (count - 1) / _finish(child, elapsed)
        finally:
            if child.poll() is None:
                child.kill()
                child.communicate()
    finally:
        pull.close(linger=0)
        ctx.term()


def round_trip_seconds(impl, family, count) -> float:
    """Median-free mean seconds per request/response with a fresh echoing child."""
    with tempfile.TemporaryDirectory() as directory:
        address = _address(family, directory)
        listener = _listen(impl, family, address)
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


# --- arrays and buffers -----------------------------------------------------------------
#
# The parent sends and a fresh child receives, so the receiver's peak memory is
# that of a process that did nothing else. Each stream: a small message of the
# same kind (not measured), then `count` messages, the first of them checked (a
# row that delivers something else fails).

CEILING = "fastwire send_bytes/recv_bytes_into"
ZERO_COPY = "pyzmq zero-copy"
ARRAY_BYTES = 64 << 20
DICT_ARRAYS = 100
DICT_ARRAY_BYTES = 64 << 10
_FLOAT64 = 8

# kind: (what the rows call it, payload bytes, peers beyond fastwire's two and mp.connection)
KINDS = {
    "array": ("one 64 MiB float64 array", ARRAY_BYTES, (ZERO_COPY, CEILING)),
    "dict": (f"dict of {DICT_ARRAYS} float64 arrays of 64 KiB", DICT_ARRAYS * DICT_ARRAY_BYTES, (ZERO_COPY, CEILING)),
    "bytearray": ("64 MiB PickleBuffer(bytearray)", ARRAY_BYTES, ()),
    "memoryview": ("64 MiB read-only memoryview PickleBuffer", ARRAY_BYTES, ()),
    "dataframe": ("64 MiB pandas DataFrame (8 float64 columns)", ARRAY_BYTES, ()),
}


WARM_UP_SCALE = 4096


def _payload(kind, impl, scale=1):
    """The object a row sends (as each send takes it: _outgoing), or with
    `scale` one that many times smaller. In-band peers get the plain object:
    mp.connection pickles at protocol 4 on 3.11-3.13, where a PickleBuffer
    cannot go."""
    import numpy as np
    if kind == "array":
        return np.arange(ARRAY_BYTES // _FLOAT64 // scale, dtype=np.float64)
    if kind == "dict":
        n = DICT_ARRAY_BYTES // _FLOAT64 // scale
        return {f"a{i}": np.arange(i * n, (i + 1) * n, dtype=np.float64) for i in range(DICT_ARRAYS)}
    if kind == "dataframe":
        import pandas as pd
        n = ARRAY_BYTES // _FLOAT64 // 8 // scale
        return pd.DataFrame({f"c{i}": np.arange(i * n, (i + 1) * n, dtype=np.float64) for i in range(8)})
    data = bytearray(range(256)) * (ARRAY_BYTES // 256 // scale)
    if kind == "bytearray":
        return data
    return memoryview(bytes(data)) if impl == OUT_OF_BAND else bytes(data)


def _outgoing(kind, impl, obj):
    """What one message of `obj` takes, as a list of what each send gets: the
    ceiling sends a dict's arrays one by one; out of band, a bytes-like goes in
    a PickleBuffer (pickle sets only those aside), made per send as a caller
    holding the data, not the wrapper, would."""
    if impl == CEILING and kind == "dict":
        return list(obj.values())
    if impl == OUT_OF_BAND and kind in ("bytearray", "memoryview"):
        return [pickle.PickleBuffer(obj)]
    return [obj]


def _check(kind, obj):
    """Raise unless `obj` is what _payload(kind) sent (read at a few places:
    the check must not cost a payload's memory)."""
    import numpy as np
    if kind == "array":
        ok = obj.dtype == np.float64 and obj.shape == (ARRAY_BYTES // _FLOAT64,) and obj[-1] == obj.shape[0] - 1
    elif kind == "dict":
        n = DICT_ARRAY_BYTES // _FLOAT64
        ok = len(obj) == DICT_ARRAYS and all(obj[f"a{i}"][-1] == (i + 1) * n - 1 for i in range(DICT_ARRAYS))
    elif kind == "dataframe":
        ok = obj.shape == (ARRAY_BYTES // _FLOAT64 // 8, 8) and obj["c7"].iloc[-1] == ARRAY_BYTES // _FLOAT64 - 1
    else:
        view = memoryview(obj)
        ok = view.nbytes == ARRAY_BYTES and view[255] == 255 and view[-1] == 255
        ok = ok and view.readonly == (kind == "memoryview")
    if not ok:
        raise AssertionError(f"the receiver got something else than the {kind} sent: {type(obj)!r}")


def _zmq_parts(obj):
    """A metadata frame describing the arrays of `obj`, then the arrays."""
    if isinstance(obj, dict):
        arrays = list(obj.values())
        layout = [(key, a.dtype.str, a.shape) for key, a in obj.items()]
    else:
        arrays = [obj]
        layout = [(None, obj.dtype.str, obj.shape)]
    return [pickle.dumps(layout)], arrays


def _zmq_rebuild(frames):
    """The inverse of _zmq_parts over frames received without a copy."""
    import numpy as np
    layout = pickle.loads(frames[0].bytes)
    arrays = [np.frombuffer(frame, dtype).reshape(shape) for (_, dtype, shape), frame in zip(layout, frames[1:])]
    return arrays[0] if layout[0][0] is None else {key: a for (key, _, _), a in zip(layout, arrays)}


def _peak_reset():
    """Reset this process's peak resident size; (resident bytes, of which
    file-backed) now, or None where /proc cannot do it."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return _status_bytes("VmRSS"), _status_bytes("RssFile")
    except OSError:
        return None


def _status_bytes(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise OSError(f"no {field} in /proc/self/status")


def _receive_stream(impl, family, address, count, kind):
    """The child's side of an arrays row: receive `count` messages of `kind`;
    prints its CPU seconds for all but the first and the peak resident bytes
    it added while receiving ("none" where not measurable)."""
    if impl == ZERO_COPY:
        import zmq
        ctx = zmq.Context()
        pull = ctx.socket(zmq.PULL)
        pull.setsockopt(zmq.RCVTIMEO, _ZMQ_PATIENCE_SECONDS * 1000)  # the sender gone: exit, not linger
        pull.connect(address)

        def receive():
            return _zmq_rebuild(pull.recv_multipart(copy=False))
    else:
        # Every fastwire end receives out-of-band messages: the receiver is a plain
        # Client, trusted (it rebuilds NumPy and pandas objects, as mp.connection does).
        conn = _connect("mp.connection" if impl == "mp.connection" else "fastwire", family, address, trusted=True)
        if impl != CEILING:
            receive = conn.recv
        else:
            target = bytearray(KINDS[kind][1])
            parts = DICT_ARRAYS if kind == "dict" else 1

            def receive():
                offset = 0
                for _ in range(parts):
                    offset += conn.recv_bytes_into(target, offset)
                return target
    # A small message of the same kind first: the code and state every message
    # needs (imports, caches, library pages) are not the payload's memory. The
    # sender waits for "ready": pyzmq's I/O thread would otherwise take in
    # messages before the peak is reset.
    receive()
    baseline = _peak_reset()
    print("ready", flush=True)
    first = receive()
    if impl != CEILING:
        _check(kind, first)
    del first
    start = time.process_time()
    for _ in range(count - 1):
        receive()
    cpu = time.process_time() - start
    peak = "none"
    if baseline is not None:
        rss, file_pages = baseline
        # Library code first run while receiving (pages of numpy's, of the
        # extension's) is resident too: not the receiver's memory for data.
        peak = _status_bytes("VmHWM") - rss - (_status_bytes("RssFile") - file_pages)
    print(cpu, peak, flush=True)


def _wait_for_ready(child):
    if child.stdout.readline().strip() != "ready":
        child.kill()
        child.communicate()
        raise RuntimeError(f"the receiving child failed before the stream (status {child.returncode})")


def array_rate(impl, family, kind, count, cpus=None):
    """(bytes per second, peak receiver memory / payload or None) for one fresh
    pair: this process sends `count` messages of `kind`, the child receives.
    The rate is that of the busier end, each over its own CPU seconds.

    With `cpus`, (sender's CPU, receiver's CPU) (Linux), each end runs on that
    CPU alone: the two placements a scheduler chooses between, measured
    apart. Each end's copy into or out of the socket costs more when the
    other end runs on another core (the data crosses between the cores'
    caches) than on the same one, so a row that is mostly such copies moves
    with the placement."""
    if cpus is None:
        return _array_rate(impl, family, kind, count, None)
    own = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {cpus[0]})
    try:
        return _array_rate(impl, family, kind, count, cpus[1])
    finally:
        os.sched_setaffinity(0, own)


def _array_rate(impl, family, kind, count, receiver_cpu):
    size = KINDS[kind][1]
    with tempfile.TemporaryDirectory() as directory:
        obj = _payload(kind, impl)
        if impl == ZERO_COPY:
            import zmq
            ctx = zmq.Context()
            push = ctx.socket(zmq.PUSH)
            push.setsockopt(zmq.SNDTIMEO, _ZMQ_PATIENCE_SECONDS * 1000)  # a dead child: an error, not a hang
            try:
                child = _spawn(impl, family, _zmq_bind(push, family, directory), count, "receive " + kind,
                               receiver_cpu)
                push.send_multipart(sum(_zmq_parts(_payload(kind, impl, WARM_UP_SCALE)), []), copy=False)
                _wait_for_ready(child)
                meta, arrays = _zmq_parts(obj)
                start = time.process_time()
                for _ in range(count):
                    push.send_multipart(meta + arrays, copy=False)
                # The child exits once it has every message: until then this end stays open.
                fields = _child_output(child)
                own = time.process_time() - start
            finally:
                push.close(linger=0)
                ctx.term()
        else:
            listener = _listen("fastwire" if impl == CEILING else impl, family, _address(family, directory))
            try:
                child = _spawn(impl, family, listener.address, count, "receive " + kind, receiver_cpu)
                conn = listener.accept()
                send = conn.send_bytes if impl == CEILING else conn.send
                for part in _outgoing(kind, impl, _payload(kind, impl, WARM_UP_SCALE)):
                    send(part)
                _wait_for_ready(child)
                start = time.process_time()
                for _ in range(count):
                    for part in _outgoing(kind, impl, obj):
                        send(part)
                fields = _child_output(child)
                own = time.process_time() - start
                conn.close()
            finally:
                listener.close()
                if child.poll() is None:
                    child.kill()
                    child.communicate()
    receiver_cpu, peak = float(fields[0]), fields[1]
    rate = min(count * size / own, (count - 1) * size / receiver_cpu)
    return rate, (None if peak == "none" else int(peak) / size)


def array_rows(count=6, dict_count=40, messages=100_000, runs=3, families=("AF_UNIX", "AF_INET")):
    """The arrays part: (name, figure, unit) rows, medians of `runs` fresh pairs;
    a figure of None with the reason as its unit where a row cannot run."""
    oob = out_of_band_available()
    out = []
    for family in families:
        label = "TCP" if family == "AF_INET" else "AF_UNIX"
        kinds = ["array", "dict"] + (["bytearray", "memoryview", "dataframe"] if family == "AF_UNIX" else [])
        for kind in kinds:
            what, size, extra = KINDS[kind]
            name = f"{label} one-way, {what} per send"
            if not _have("numpy") or (kind == "dataframe" and not _have("pandas")):
                missing = "numpy" if not _have("numpy") else "pandas"
                out.append((name, None, f"n/a ({missing} is not installed)"))
                continue
            peers = [OUT_OF_BAND, "fastwire", "mp.connection"]
            peers += [p for p in extra if p != ZERO_COPY or _have("zmq")]
            for impl in peers:
                if impl == OUT_OF_BAND and not oob:
                    out.append((f"{name}: {impl}", None, "n/a (out_of_band unavailable)"))
                    continue
                measured = [array_rate(impl, family, kind, count if size == ARRAY_BYTES else dict_count)
                            for _ in range(runs)]
                out.append((f"{name}: {impl}", statistics.median(r for r, _ in measured), "GB/s"))
                peaks = [p for _, p in measured if p is not None]
                if size == ARRAY_BYTES and impl != CEILING and peaks:
                    out.append((f"{name}: {impl}: peak receiver memory", statistics.median(peaks), "x payload"))
        # Small messages, no buffers: the two settings alternate, so both see the same machine.
        name = f"{label} one-way, one message per send (no buffers)"
        if not oob:
            out.append((f"{name}: {OUT_OF_BAND}", None, "n/a (out_of_band unavailable)"))
            continue
        rates = {OUT_OF_BAND: [], "fastwire": []}
        for _ in range(runs):
            for impl in rates:
                rates[impl].append(stream_rate(impl, family, messages))
        out += [(f"{name}: {impl}", statistics.median(r), "msg/s") for impl, r in rates.items()]
    return out


def rows(count=100_000, runs=3, families=("AF_INET", "AF_UNIX"), arrays=True):
    """(name, figure, unit) rows: medians of `runs` fresh process pairs each;
    with `arrays`, array_rows() too."""
    impls = ["fastwire", "mp.connection", "raw"] + (["pyzmq"] if _have("zmq") else [])
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
    if arrays:
        out += array_rows(messages=count, runs=runs, families=families)
    return out


class Target(NamedTuple):
    """A promise across processes: the figure of row `top` divided by that of
    row `bottom` (for round trips the inverse ratio of latencies; "ahead of"
    is a ratio of at least 1.0), or with no `bottom` row `top`'s own figure,
    compared with `bound` in `unit` (at most `bound` where `at_most`)."""
    what: str
    top: str
    bottom: str | None
    bound: float
    unit: str = "x"
    at_most: bool = False


class Verdict(NamedTuple):
    what: str
    figure: float | None    # None: a row the target needs could not run
    bound: float
    met: bool | None
    unit: str
    at_most: bool


_ARRAY_U = "AF_UNIX one-way, one 64 MiB float64 array per send"
_DICT = "one-way, dict of 100 float64 arrays of 64 KiB per send"
_SMALL = "one-way, one message per send (no buffers)"

TARGETS = [
    Target("TCP single messages: fastwire / mp.connection", "TCP one-way, one message per send: fastwire",
           "TCP one-way, one message per send: mp.connection", 2.0),
    Target("TCP single messages: fastwire / pyzmq send_pyobj", "TCP one-way, one message per send: fastwire",
           "TCP one-way, one message per send: pyzmq", 1.0),
    Target("AF_UNIX single messages: fastwire / mp.connection", "AF_UNIX one-way, one message per send: fastwire",
           "AF_UNIX one-way, one message per send: mp.connection", 3.0),
    Target("makefile program: fastwire.pickle / pickle", "TCP makefile program (dump+flush / load): fastwire.pickle",
           "TCP makefile program (dump+flush / load): pickle", 1.2),
    Target("TCP round trip: mp.connection latency / fastwire latency", "TCP request/response round trip: mp.connection",
           "TCP request/response round trip: fastwire", 1.0),
    Target("AF_UNIX 64 MiB float64 array: out_of_band, send to usable array", f"{_ARRAY_U}: {OUT_OF_BAND}", None,
           2.5e9, "GB/s"),
    Target("AF_UNIX 64 MiB float64 array: out_of_band peak receiver memory / payload",
           f"{_ARRAY_U}: {OUT_OF_BAND}: peak receiver memory", None, 1.1, "x", at_most=True),
    *(Target(f"{label} dict of 100 arrays: out_of_band / in-band", f"{label} {_DICT}: {OUT_OF_BAND}",
             f"{label} {_DICT}: fastwire", 3.0) for label in ("AF_UNIX", "TCP")),
    *(Target(f"{label} small messages: out_of_band / default", f"{label} {_SMALL}: {OUT_OF_BAND}",
             f"{label} {_SMALL}: fastwire", 0.95) for label in ("AF_UNIX", "TCP")),
]


def verdicts(rows):
    """A Verdict for each target whose rows are in `rows` (figure and met None
    where one of them could not run)."""
    figures = {name: value for name, value, _ in rows}
    out = []
    for t in TARGETS:
        if t.top not in figures or (t.bottom is not None and t.bottom not in figures):
            continue
        top = figures[t.top]
        bottom = 1.0 if t.bottom is None else figures[t.bottom]
        if top is None or bottom is None:
            out.append(Verdict(t.what, None, t.bound, None, t.unit, t.at_most))
            continue
        figure = top / bottom
        met = figure <= t.bound if t.at_most else figure >= t.bound
        out.append(Verdict(t.what, figure, t.bound, met, t.unit, t.at_most))
    return out


def format_figure(value, unit):
    if value is None:
        return unit
    if unit == "msg/s":
        return f"{value / 1000:.0f}k {unit}"
    if unit == "GB/s":
        return f"{value / 1e9:.2f} GB/s"
    if unit == "x payload":
        return f"{value:.2f}x payload"
    if unit == "x":
        return f"{value:.2f}x"
    return f"{value:.1f} {unit}"


def format_verdict(v):
    """The figure of Verdict `v`; a ratio that misses is rounded away from its
    bound, so that it never reads as the bound (1.1996x against 1.2x: 1.19x)."""
    if v.unit != "x" or v.met is not False:
        return format_figure(v.figure, v.unit)
    hundredths = v.figure * 100
    hundredths = math.ceil(hundredths - 1e-9) if v.at_most else math.floor(hundredths + 1e-9)
    return f"{hundredths / 100:.2f}x"


def format_bound(v):
    if v.unit == "GB/s":
        bound = f"{v.bound / 1e9:.1f} GB/s"
    else:
        digits = f"{v.bound:.2f}".rstrip("0")
        bound = (digits + "0" if digits.endswith(".") else digits) + "x"
    return f"at most {bound}" if v.at_most else bound


def markdown(rows):
    """The rows, then the targets, as Markdown table lines."""
    lines = ["| transfer | figure |", "| --- | --- |"]
    lines += [f"| {name} | {format_figure(value, unit)} |" for name, value, unit in rows]
    lines += ["", "| target | this run | target | met |", "| --- | --- | --- | --- |"]
    for v in verdicts(rows):
        if v.figure is None:
            lines.append(f"| {v.what} | n/a | {format_bound(v)} | not measured |")
        else:
            lines.append(f"| {v.what} | **{format_verdict(v)}** | {format_bound(v)} | "
                         f"{'yes' if v.met else '**no**'} |")
    return lines


def main(argv):
    impl, family, address, count, mode = argv
    _pin_from_env()
    import ast
    address = ast.literal_eval(address)
    if mode.startswith("receive "):
        _receive_stream(impl, family, address, int(count), mode.split(" ", 1)[1])
    else:
        _send(impl, family, address, int(count), mode)


if __name__ == "__main__":
    main(sys.argv[1:])
