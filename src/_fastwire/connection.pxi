# The compiled connection: fastwire.net.Connection's state, its per-message
# send(), and the one receive loop every receive runs.
#
# A small message costs two system calls on the wire; everything else a
# Connection written in Python does around them (state checks, a lock, the
# socket methods' argument parsing, a memoryview, the GIL round trip of a
# blocking call) cost as much again. Here a message is pickled behind its frame
# header into a stack buffer and written from there with one send() on the
# descriptor (sockio.h), and received frames are read with one recv() straight
# into the FrameScanner's buffer and decoded without leaving C.
#
# Receiving has one loop (ConnectionCore._next_frame) over one read step
# (_read), which picks the read primitive the socket allows: recv() on the
# descriptor (a blocking socket without timeout, on POSIX), the socket's
# recv_into (its own timeout, Windows), or recv_into without blocking after
# waiting for a deadline or for poll(). The core never calls a method it does
# not define, except the hooks it declares (_send_slowly, _send_out_of_band,
# _load_streamed): the Python subclass (fastwire/net.py) provides those, and
# everything else that must be Python (large bytes sent without a copy, large
# frames decoded while they arrive, the handshake).
#
# An out-of-band message (PEP 574: a manifest frame, then one frame per
# buffer; the format is fastwire/_protocol.py's) is recognised by the same
# loop: recv() checks the first bytes of each frame it gets, and a manifest
# makes it take the buffer frames that follow before anything is decoded. The
# manifest tells where every following byte goes (_FrameLayout): what the
# scanner holds is copied into place, and the rest is read with scatter-gather
# recvmsg() straight into the message's block (message_buffers), many frames'
# headers and payloads per system call, the headers into a side array checked
# against the manifest.

# Shared declarations this part uses.
# From frames.pxi (declared in src/fastwire/_fastwire.pxd: FramePrefix,
# FrameScanner), by inclusion: DEFAULT_COPY_THRESHOLD, DEFAULT_MAX_FRAME_SIZE,
# EOF_IN_MESSAGE, FrameError, _receive_payload, decode_header, header_error.
# From pickle_write.pxi, by inclusion: pw_append_frame, pw_header_guess.
# From buffers.pxi, by inclusion: MessageBuffers, message_buffers.
# From pickle_read.pxi, by inclusion: loads, unp_loads_default.
from libc.stdint cimport uint32_t, uint64_t
from cpython.buffer cimport PyBUF_FULL_RO, PyBuffer_IsContiguous, PyBuffer_Release, PyObject_GetBuffer
from libc.string cimport memcmp, memcpy
from framing cimport Partial
from cpython.mem cimport PyMem_Free, PyMem_Malloc
from cpython.object cimport PyObject
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_CheckExact, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.memoryview cimport PyMemoryView_Check, PyMemoryView_GET_BUFFER
from capi cimport c_incref, c_refcnt
from wire cimport FW_FREE_THREADED, FW_HOST_LITTLE, fw_store_u32, fw_store_u64
from encoder cimport PwCall, PwEnc, pw_call_begin, pw_call_end

cimport cython
from cpython.pythread cimport (
    NOWAIT_LOCK, WAIT_LOCK, PyThread_acquire_lock, PyThread_allocate_lock, PyThread_free_lock,
    PyThread_get_thread_ident, PyThread_release_lock, PyThread_type_lock,
)
from operator import index as _conn_index
from time import monotonic as _conn_monotonic

cdef extern from "sockio.h":
    int FW_FAST_SOCKETS
    int FW_MSG_DONTWAIT
    int fw_fd_load(const int* fdp) noexcept
    void fw_fd_store(int* fdp, int fd) noexcept
    int fw_fd_send_all(const int* fdp, const char* buf, Py_ssize_t n, Py_ssize_t* sent) except -1
    Py_ssize_t fw_fd_recv(const int* fdp, char* buf, Py_ssize_t n) except -1
    ctypedef struct fw_iovec:
        void* iov_base
        size_t iov_len
    enum: FW_IOV_BATCH
    Py_ssize_t fw_fd_recv_vector(const int* fdp, fw_iovec* iov, int count) except -1
    int fw_fd_send_vector(const int* fdp, fw_iovec* iov, Py_ssize_t count, Py_ssize_t* sent) except -1
    void fw_tcp_nodelay(const int* fdp, int on) noexcept

cdef FramePrefix _conn_prefix = FramePrefix("multiprocessing")
cdef Py_ssize_t _conn_header_guess = pw_header_guess(&_conn_prefix.spec)
# A bytes/bytearray at least this large is sent without being copied (_send_slowly),
# and a frame at least this large is read straight into its final place.
cdef Py_ssize_t _CONN_STREAMED = 1024 * 1024
# A TCP connection sends with Nagle's algorithm from this many sends in a row
# with no receive between them (see ConnectionCore._before_send).
cdef int _NAGLE_AFTER_SENDS = 16
STREAM_THRESHOLD = _CONN_STREAMED

FAST_SOCKETS = bool(FW_FAST_SOCKETS)

# The out-of-band manifest's first bytes (_protocol.OOB_MAGIC, which starts
# with 0xF5, no pickle opcode): checked in C on every frame recv() gets. With
# the version and the read-only flag (_protocol.OOB_VERSION, OOB_READONLY),
# what send() writes a manifest with when it writes from C; a test holds the
# bytes to _protocol.manifest()'s.
cdef const char* _OOB_MAGIC = b"\xf5FWB"
cdef enum:
    _OOB_VERSION = 1
    _OOB_READONLY = 0x01
    _OOB_HEAD = 9        # magic, version, count
    _OOB_ENTRY = 9       # flags, size
cdef object _oob_protocol_module = None


cdef object _oob_protocol():
    """fastwire._protocol, which imports this module (so not at import time):
    the manifest's one reader and writer, and its default bounds."""
    global _oob_protocol_module
    if _oob_protocol_module is None:
        from fastwire import _protocol
        _oob_protocol_module = _protocol
    return _oob_protocol_module


cdef inline bint _is_manifest(object frame) noexcept:
    """Whether the frame payload `frame` (bytes or a byte memoryview, as the
    scanner hands them out) starts with the out-of-band manifest's magic."""
    cdef const char* data
    cdef Py_ssize_t n
    if PyBytes_CheckExact(frame):
        data = PyBytes_AS_STRING(frame)
        n = PyBytes_GET_SIZE(frame)
    elif PyMemoryView_Check(frame):
        data = <const char*>PyMemoryView_GET_BUFFER(frame).buf
        n = PyMemoryView_GET_BUFFER(frame).len
    else:
        return False
    return n >= 4 and memcmp(data, _OOB_MAGIC, 4) == 0


cdef object _buffer_frame_mismatch(uint64_t length, uint64_t size):
    return FrameError(f"out-of-band buffer frame of {length} bytes, the manifest announced {size}")


cdef struct _FrameLayout:
    # The buffer frames of an out-of-band message still to arrive, as its
    # manifest lays them out: per buffer, a header (kept in `heads`, 12 bytes
    # a buffer, and checked against the manifest once complete), then its
    # payload (appended to the message's block, right after the one before).
    Py_ssize_t count
    Py_ssize_t index     # the buffer whose header or payload comes next
    Py_ssize_t got       # bytes of that header, or of that payload, arrived
    bint in_payload
    # That header began with -1: the 12-byte form, which multiprocessing's
    # reader takes for any size (the layout assumed the shortest).
    bint long_header
    uint64_t* sizes
    char* heads


cdef inline Py_ssize_t _header_size(const _FrameLayout* f, Py_ssize_t index) noexcept:
    """The size of buffer `index`'s header: the form multiprocessing writes
    for its size, unless it turned out to be the 12-byte one."""
    if index == f.index and f.long_header:
        return 12
    return 4 if f.sizes[index] <= 0x7FFFFFFF else 12


cdef int _layout_vector(_FrameLayout* f, MessageBuffers parts, fw_iovec* iov, int capacity) except -1:
    """Point up to `capacity` pieces of `iov` at where the next bytes of the
    frames `f` expects go, in stream order, up to the room the block has now;
    how many. The addresses hold until `parts` is next called."""
    cdef Py_ssize_t index = f.index, got = f.got, want, room = 0, k
    cdef bint in_payload = f.in_payload
    cdef char* at = NULL
    cdef int n = 0
    while index < f.count and n < capacity:
        if not in_payload:
            k = _header_size(f, index)
            iov[n].iov_base = f.heads + 12 * index + got
            iov[n].iov_len = <size_t>(k - got)
            n += 1
            in_payload = True
            got = 0
            if n == capacity:
                break
        want = <Py_ssize_t>f.sizes[index] - got
        if want:
            if at == NULL:
                at = parts.room(&room)  # once: it may move the block
            if room == 0:
                break
            k = want if want < room else room
            iov[n].iov_base = at
            iov[n].iov_len = <size_t>k
            n += 1
            at += k
            room -= k
            if k < want:
                break
        index += 1
        in_payload = False
        got = 0
    return n


cdef Py_ssize_t _layout_advance(_FrameLayout* f, Py_ssize_t n, object max_frame_size,
                                Py_ssize_t* misplaced) except -1:
    """Account for `n` bytes that arrived where _layout_vector() pointed,
    checking each header they complete; how many of them were payload. If a
    header turns out to be in the 12-byte form, the bytes after its first 4
    went where the shorter form would have put them: *misplaced says how many
    (the last ones of the `n`), to be placed again (_layout_copy())."""
    cdef Py_ssize_t payload = 0, k, want
    cdef const char* head
    misplaced[0] = 0
    while f.index < f.count:
        if not f.in_payload:
            if n == 0:
                break
            want = _header_size(f, f.index) - f.got
            k = n if n < want else want
            f.got += k
            n -= k
            if k < want:
                break
            head = f.heads + 12 * f.index
            if f.got == 4 and memcmp(head, b"\xff\xff\xff\xff", 4) == 0:
                f.long_header = True
                misplaced[0] = n
                break
            _check_buffer_header(head, f.got, f.sizes[f.index], max_frame_size)
            f.in_payload = True
            f.got = 0
        want = <Py_ssize_t>f.sizes[f.index] - f.got
        k = n if n < want else want
        f.got += k
        n -= k
        payload += k
        if k < want:
            break
        f.index += 1  # a payload of 0 bytes is complete with its header
        f.in_payload = f.long_header = False
        f.got = 0
    return payload


cdef int _check_buffer_header(const char* head, Py_ssize_t n, uint64_t size,
                              object max_frame_size) except -1:
    """FrameError (FrameTooLarge beyond `max_frame_size`) unless the `n`-byte
    frame header `head` announces `size` bytes."""
    cdef uint64_t length = 0
    cdef Partial partial
    n = decode_header(&_conn_prefix.spec, <const unsigned char*>head, n, &length)
    if n > 0 and length == size:
        return 0
    if n < 0 or length > max_frame_size:
        partial.error = n if n < 0 else 1
        partial.error_length = length
        raise header_error(&partial, max_frame_size)
    raise _buffer_frame_mismatch(length, size)


cdef Py_ssize_t _layout_copy(_FrameLayout* f, MessageBuffers parts, const char* data, Py_ssize_t n,
                             fw_iovec* iov, object max_frame_size) except -1:
    """Copy into place what of the `n` bytes at `data` (already received)
    belongs to the frames `f` expects; how many bytes that was."""
    cdef Py_ssize_t taken = 0, copied, k, misplaced
    cdef int pieces, j
    while taken < n and f.index < f.count:
        pieces = _layout_vector(f, parts, iov, FW_IOV_BATCH)
        copied = 0
        for j in range(pieces):
            k = <Py_ssize_t>iov[j].iov_len
            if k > n - taken - copied:
                k = n - taken - copied
            memcpy(iov[j].iov_base, data + taken + copied, k)
            copied += k
            if taken + copied == n:
                break
        parts.advance(_layout_advance(f, copied, max_frame_size, &misplaced))
        taken += copied - misplaced  # those are still at data + taken: copied again
    return taken


cdef int _layout_replace(_FrameLayout* f, MessageBuffers parts, fw_iovec* iov, int pieces,
                         Py_ssize_t n, Py_ssize_t misplaced, object max_frame_size) except -1:
    """Place again the last `misplaced` of the `n` bytes a read scattered over
    `iov` (_layout_advance() found a longer header than the layout assumed)."""
    cdef Py_ssize_t skip = n - misplaced, k, at = 0
    cdef int j
    moved = bytearray(misplaced)  # a copy: the block and the headers are written again from it
    cdef char* out = moved
    for j in range(pieces):
        k = <Py_ssize_t>iov[j].iov_len
        if skip >= k:
            skip -= k
            continue
        k = k - skip if k - skip < misplaced - at else misplaced - at
        memcpy(out + at, <char*>iov[j].iov_base + skip, k)
        at += k
        skip = 0
        if at == misplaced:
            break
    if _layout_copy(f, parts, out, misplaced, iov, max_frame_size) != misplaced:
        raise AssertionError("bytes read past the out-of-band message")  # pragma: no cover
    return 0


cdef int _layout_receive_piece(_FrameLayout* f, MessageBuffers parts, object recv_into,
                               object max_frame_size) except -1:
    """Receive the rest of the current header (one call), or of the current
    payload, with ``recv_into(view) -> int``: the path for a deadline, a
    socket timeout, or no descriptor I/O."""
    cdef Py_ssize_t want, n, misplaced
    if f.in_payload:
        want = <Py_ssize_t>f.sizes[f.index] - f.got
        parts.receive(recv_into, want)
        _layout_advance(f, want, max_frame_size, &misplaced)
        return 0
    want = _header_size(f, f.index) - f.got
    head = bytearray(want)
    n = recv_into(head)
    if n == 0:
        raise EOFError(EOF_IN_MESSAGE)
    if n < 0 or n > want:
        raise ValueError("recv_into reported more bytes than the buffer holds")
    memcpy(f.heads + 12 * f.index + f.got, <char*>head, n)
    _layout_advance(f, n, max_frame_size, &misplaced)  # header bytes only: none misplaced
    return 0


cdef object _conn_bound(object value, str name):
    """`value` as a non-negative int (a bound on what a peer may claim)."""
    bound = _conn_index(value)
    if bound < 0:
        raise ValueError(f"{name} must be >= 0")
    return bound


cdef class MessageLock:
    """A mutex with :class:`threading.Lock`'s ``with`` / ``acquire()`` /
    ``release()`` / ``locked()``, that compiled code takes without a method call
    (calling ``threading.Lock.acquire`` parses arguments: a tenth of a message).
    A thread waiting for it cannot be interrupted by a signal."""

    cdef PyThread_type_lock lock
    cdef bint held
    # The holder's thread, 0 while free: written only by the holder, so the
    # holding thread always reads its own value (take_unless_held).
    cdef unsigned long owner

    def __cinit__(self):
        self.lock = PyThread_allocate_lock()
        if self.lock == NULL:
            raise MemoryError()

    def __dealloc__(self):
        if self.lock != NULL:
            PyThread_free_lock(self.lock)

    cdef int take(self) except -1:
        if not PyThread_acquire_lock(self.lock, NOWAIT_LOCK):
            with nogil:
                PyThread_acquire_lock(self.lock, WAIT_LOCK)
        self.owner = PyThread_get_thread_ident()
        self.held = True
        return 0

    cdef int take_unless_held(self) except -1:
        """take(), but RuntimeError instead of waiting forever if this thread
        holds the lock already (a callout run under it calls back in)."""
        if self.held and self.owner == PyThread_get_thread_ident():
            raise RuntimeError("a receive was re-entered by the thread running it")
        return self.take()

    cdef void give(self) noexcept:
        self.held = False
        self.owner = 0
        PyThread_release_lock(self.lock)

    def acquire(self, bint blocking=True):
        """Take the lock (waiting for it unless `blocking` is false); True if taken."""
        if not blocking:
            if not PyThread_acquire_lock(self.lock, NOWAIT_LOCK):
                return False
            self.owner = PyThread_get_thread_ident()
            self.held = True
            return True
        self.take()
        return True

    def release(self):
        """Give the lock back; RuntimeError if it is not held."""
        if not self.held:
            raise RuntimeError("release unlocked lock")
        self.give()

    def locked(self):
        """True while some thread holds the lock."""
        return self.held

    def __enter__(self):
        self.take()
        return True

    def __exit__(self, *exc_info):
        self.give()


def deadline_of(timeout):
    """The ``time.monotonic()`` by which a call given `timeout` seconds must
    finish (None: never). ValueError unless `timeout` is None or > 0."""
    if timeout is None:
        return None
    if not timeout > 0:
        raise ValueError("timeout must be None or > 0")
    return _conn_monotonic() + timeout


def recv_exactly(recv_into, view):
    """Fill the writable byte view `view` by calling ``recv_into(part) -> int``
    (a socket's, or the one a Connection hands its hooks). EOFError if it
    returns 0 first: the peer closed in the middle of a message."""
    cdef Py_ssize_t got = 0
    cdef Py_ssize_t n = len(view)
    while got < n:
        k = recv_into(view[got:])
        if k == 0:
            raise EOFError(EOF_IN_MESSAGE)
        got += k


cdef bint _conn_readable(object sock, object timeout) except -1:
    """Whether `sock` becomes readable within `timeout` seconds (None: forever)."""
    import select
    if hasattr(select, "poll"):
        poller = select.poll()
        poller.register(sock, select.POLLIN)
        return bool(poller.poll(None if timeout is None else timeout * 1000))
    return bool(select.select([sock], [], [], timeout)[0])  # pragma: no cover


cdef int _conn_wait_readable(object sock, object deadline) except -1:
    """Wait until `sock` is readable; TimeoutError once `deadline` has passed."""
    remaining = deadline - _conn_monotonic()
    if remaining <= 0 or not _conn_readable(sock, remaining):
        raise TimeoutError("timed out")
    return 0


@cython.final
cdef class _DeadlineRecv:
    """A socket's recv_into that waits for bytes at most until a deadline
    (TimeoutError after it); set once when made, read-only after."""

    cdef object sock
    cdef object deadline

    def __call__(self, view):
        while True:
            _conn_wait_readable(self.sock, self.deadline)
            try:
                return self.sock.recv_into(view, 0, FW_MSG_DONTWAIT)
            except BlockingIOError:  # a spurious wake-up
                continue


cdef class ConnectionCore:
    """A message connection over a connected, blocking socket: the compiled
    base of :class:`fastwire.net.Connection`.

    ``ConnectionCore(sock, readable=True, writable=True, *, allowed=(),
    max_frame_size=..., out_of_band=False, max_buffers=...,
    max_message_size=..., nodelay=False)`` takes ownership of `sock` (a ``socket.socket`` or
    a descriptor of one); `allowed` is what ``loads(allowed=)`` takes, or None
    for a trusted connection; `out_of_band` makes send() set PickleBuffers
    aside (PEP 574) and send them as frames of their own; the last two bound
    what an out-of-band message received may claim (the defaults are
    fastwire._protocol's). It is initialised once: a second ``__init__``
    raises RuntimeError (a call in progress holds the scanner, deque and
    locks it set up).

    ``_fd`` is the socket's descriptor while send()/recv() may use it directly
    (a blocking socket without timeout, on POSIX), else -1. ``close()`` stores
    -1 there before it closes the socket, and sockio.h reads it afresh before
    each system call, so a closed connection's number, soon reused by another
    socket, is never touched. The socket itself is read and replaced only
    under a critical section (free-threaded builds).

    On TCP (POSIX), whether Nagle's algorithm may hold a message back is
    chosen per send (``_nagle_fd`` is then the descriptor). TCP_NODELAY is
    on, so a request or an answer leaves at once, until a run of sends with
    no receive between them reaches _NAGLE_AFTER_SENDS: that is a stream,
    and with TCP_NODELAY off the kernel gathers the messages written while
    the peer has not yet acknowledged the last one into one segment, one
    wake-up of the receiver for many messages. A receive call that may wait
    turns it on again before it reads, which sends at once whatever was
    held back; so does a send while another thread is in a receive call
    (it may be waiting for the answer to this message). ``nodelay=True``
    keeps TCP_NODELAY on for good.

    Hooks a subclass provides (the base raises NotImplementedError); both
    are called with the state they need re-validated, and the core touches
    nothing but its own owned references after they return:

    ``_send_slowly(obj)``
        Send `obj` where send() does not write it from C: the connection is
        closed or read-only (raise what ``_live()`` / ``_check_writable()``
        raise), the socket has a timeout or no descriptor I/O (Windows), or
        `obj` is a bytes/bytearray of at least STREAM_THRESHOLD bytes (to go
        out without a copy). Called without any lock; it writes the whole
        message under the send lock (``_send_locked``) or nothing.
    ``_send_out_of_band(stream, buffers)``
        Send the pickle stream `stream` (bytes) whose PickleBuffers `buffers`
        (a non-empty list, in order) the pickler set aside, as one out-of-band
        message (manifest frame, then each buffer's raw bytes as a frame,
        none of them copied). Called without any lock, with the connection
        possibly closed meanwhile; it writes the whole message under the send
        lock or nothing.
    ``_load_streamed(length, received, recv_into)``
        Decode a frame whose payload is `length` (>= STREAM_THRESHOLD) bytes,
        of which `received` (a read-only view) has arrived, reading the rest
        with ``recv_into(view) -> int`` (0: end of stream; it honours the
        call's deadline). Called with the receive lock held, after the frame
        left the scanner: it consumes exactly the rest of the frame and
        returns the object, or closes the connection (the stream cannot be
        resynchronised); a refused pickle may leave it open only once the rest
        of the frame is consumed.
    """

    cdef object _socket            # None once closed
    cdef readonly bint _readable
    cdef readonly bint _writable
    cdef readonly object _allowed  # None: trusted; else what loads() takes as allowed=
    cdef readonly object _max_frame_size
    cdef readonly FrameScanner _scanner
    cdef readonly object _ready    # collections.deque of received payloads
    cdef readonly MessageLock _send_lock
    cdef readonly MessageLock _recv_lock
    cdef readonly int _fd
    cdef object _spare             # the last large bytes received, kept for its paged-in memory
    cdef readonly bint _out_of_band
    # While true, recv() may take a frame from _ready without the receive lock.
    # Cleared (under the lock) before a manifest enters _ready: its buffer frames
    # must go to the thread that took it; set again under the lock once _ready
    # is empty. Never set on free-threaded builds, where the check and the
    # popleft() are not one step.
    cdef bint _ready_unlocked
    cdef readonly object _max_buffers
    cdef readonly object _max_message_size
    cdef readonly int _nagle_fd  # the TCP descriptor while Nagle is chosen per send, else -1
    cdef readonly bint _nagle    # TCP_NODELAY is off on _nagle_fd
    cdef int _sends_in_row  # sends since the last receive call that may wait

    def __cinit__(self):
        self._fd = -1
        self._nagle_fd = -1

    def __init__(self, sock, readable=True, writable=True, *, allowed=(),
                 max_frame_size=DEFAULT_MAX_FRAME_SIZE, out_of_band=False, max_buffers=None,
                 max_message_size=None, nodelay=False):
        cdef bint can_read = readable   # truth tested once, outside the critical section
        cdef bint can_write = writable
        cdef bint oob = out_of_band
        cdef bint always_nodelay = nodelay
        import collections
        import socket
        if self._scanner is not None:
            raise RuntimeError("a connection cannot be initialised twice")
        protocol = _oob_protocol()
        buffers_bound = _conn_bound(protocol.DEFAULT_MAX_BUFFERS if max_buffers is None else max_buffers,
                                    "max_buffers")
        message_bound = _conn_bound(
            protocol.DEFAULT_MAX_MESSAGE_SIZE if max_message_size is None else max_message_size,
            "max_message_size")
        wrapped = not isinstance(sock, socket.socket)
        if wrapped:
            sock = socket.socket(fileno=sock.__index__())
        if not can_read and not can_write:
            raise ValueError("at least one of `readable` and `writable` must be True")
        if sock.gettimeout() == 0.0:
            sock.close()
            raise ValueError(
                "fastwire.net.Connection needs a blocking socket (timeout None or > 0); "
                "use fastwire.aio for non-blocking I/O")
        try:
            scanner = FrameScanner(_conn_prefix, max_frame_size=max_frame_size,
                                   copy_threshold=DEFAULT_COPY_THRESHOLD)
        except BaseException:
            sock.close()
            raise
        ready = collections.deque()  # complete payloads received, not yet returned
        send_lock = MessageLock()
        recv_lock = MessageLock()
        with cython.critical_section(self):
            # The socket's methods above may have run Python that initialised us.
            claimed = self._scanner is None
            if claimed:
                self._socket = sock
                self._readable = can_read
                self._writable = can_write
                self._allowed = allowed
                self._max_frame_size = max_frame_size
                self._out_of_band = oob
                self._max_buffers = buffers_bound
                self._max_message_size = message_bound
                self._ready = ready
                self._send_lock = send_lock
                self._recv_lock = recv_lock
                self._scanner = scanner  # last: it marks the connection initialised
        if not claimed:
            if wrapped:
                sock.detach()  # the descriptor stays the caller's
            raise RuntimeError("a connection cannot be initialised twice")
        self._track_fast_path()
        self._track_nagle(always_nodelay)

    # -- state -----------------------------------------------------------------

    @property
    def _sock(self):
        """The socket, or None once closed."""
        with cython.critical_section(self):
            return self._socket

    @property
    def closed(self):
        """True if the connection is closed."""
        return self._sock is None

    @property
    def readable(self):
        """True if the connection is readable."""
        return self._readable

    @property
    def writable(self):
        """True if the connection is writable."""
        return self._writable

    @property
    def trusted(self):
        """True if recv() runs arbitrary pickles."""
        return self._allowed is None

    @property
    def max_frame_size(self):
        """The longest message accepted (longer: FrameTooLarge, and the connection closes)."""
        return self._max_frame_size

    @property
    def out_of_band(self):
        """True if send() sends PickleBuffers out of band (PEP 574)."""
        return self._out_of_band

    @property
    def max_buffers(self):
        """The most buffers an out-of-band message received may carry."""
        return self._max_buffers

    @property
    def max_message_size(self):
        """The most bytes all buffers of an out-of-band message received may hold."""
        return self._max_message_size

    def fileno(self):
        """File descriptor of the socket. Raises OSError if closed."""
        return self._live_sock().fileno()

    def settimeout(self, timeout):
        """Set the timeout (seconds or None) of every later call. 0 is refused (non-blocking)."""
        if timeout is not None and timeout <= 0:
            raise ValueError("timeout must be None or > 0")
        self._live_sock().settimeout(timeout)
        self._track_fast_path()

    cdef int _track_fast_path(self) except -1:
        """Point _fd at the descriptor while send()/recv() may use it directly:
        the socket blocks without a timeout (a timeout needs the socket module's)."""
        cdef int fd = -1
        sock = self._sock
        if FW_FAST_SOCKETS and sock is not None and sock.gettimeout() is None:
            fd = sock.fileno()
        with cython.critical_section(self):
            # gettimeout()/fileno() may have run Python that closed us meanwhile.
            fw_fd_store(&self._fd, fd if self._socket is sock else -1)
        return 0

    cdef int _track_nagle(self, bint always_nodelay) except -1:
        """Turn TCP_NODELAY on for a TCP socket, and unless `always_nodelay`,
        point _nagle_fd at its descriptor: sends then choose (see the class)."""
        import socket
        cdef int fd = -1
        sock = self._sock
        if sock is None or sock.family not in (socket.AF_INET, socket.AF_INET6) or sock.type != socket.SOCK_STREAM:
            return 0
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if FW_FAST_SOCKETS and not always_nodelay:
            fd = sock.fileno()
        with cython.critical_section(self):
            # The socket's methods ran Python, which may have closed us meanwhile.
            fw_fd_store(&self._nagle_fd, fd if self._socket is sock else -1)
        return 0

    cdef void _before_send(self) noexcept:
        """A message is about to be written: TCP_NODELAY off once the sends in
        a row make a stream, on again while another thread is receiving."""
        if fw_fd_load(&self._nagle_fd) < 0:
            return
        with cython.critical_section(self):
            if self._sends_in_row < _NAGLE_AFTER_SENDS:  # a count that stops, never wraps
                self._sends_in_row += 1
            if self._recv_lock.held:  # read after that thread took it: it pushes, or we see it
                self._push_held()
            elif not self._nagle and self._sends_in_row >= _NAGLE_AFTER_SENDS:
                self._nagle = True
                fw_tcp_nodelay(&self._nagle_fd, 0)

    cdef void _before_waiting(self) noexcept:
        """Before a receive call may wait (holding the receive lock, which
        sends in other threads see): whatever Nagle's algorithm holds back
        leaves now, and the next sends start a new run."""
        if fw_fd_load(&self._nagle_fd) < 0:
            return
        with cython.critical_section(self):
            self._sends_in_row = 0
            self._push_held()

    cdef inline void _push_held(self) noexcept:
        """TCP_NODELAY on again if a stream turned it off, which sends at once
        whatever Nagle's algorithm holds back (in the caller's critical section)."""
        if self._nagle:
            self._nagle = False
            fw_tcp_nodelay(&self._nagle_fd, 1)

    def _push_before_waiting(self):
        """What a receive call does before it may wait (see the class), for
        wait(), which selects on the socket itself. Without the receive lock:
        a recv() blocked in another thread holds it."""
        self._before_waiting()

    def close(self):
        """Close the connection (idempotent)."""
        with cython.critical_section(self):
            # First: the descriptor number may be reused once closed.
            fw_fd_store(&self._fd, -1)
            fw_fd_store(&self._nagle_fd, -1)
            sock = self._socket
            self._socket = None
            spare = self._spare
            self._spare = None
        if sock is not None:
            sock.close()

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc_value, exc_tb):
        self.close()

    cdef object _live_sock(self):
        with cython.critical_section(self):
            sock = self._socket
        if sock is None:
            raise OSError("handle is closed")
        return sock

    def _live(self):
        """The socket; OSError("handle is closed") once the connection is closed."""
        return self._live_sock()

    def _check_writable(self):
        if not self._writable:
            raise OSError("connection is read-only")

    def _check_readable(self):
        if not self._readable:
            raise OSError("connection is write-only")

    cdef int _require_readable(self) except -1:
        self._live_sock()
        if not self._readable:
            raise OSError("connection is write-only")
        return 0

    # -- hooks -----------------------------------------------------------------

    def _send_slowly(self, obj):
        """Hook: send `obj` where send() does not write it from C (see the class)."""
        raise NotImplementedError("ConnectionCore._send_slowly is provided by a subclass")

    def _send_out_of_band(self, stream, buffers):
        """Hook: send a pickle stream and the buffers set aside (see the class)."""
        raise NotImplementedError("ConnectionCore._send_out_of_band is provided by a subclass")

    def _load_streamed(self, length, received, recv_into):
        """Hook: decode a large frame while it arrives (see the class)."""
        raise NotImplementedError("ConnectionCore._load_streamed is provided by a subclass")

    # -- sending ---------------------------------------------------------------

    def send(self, obj):
        """Send a picklable object (pickle protocol 5).

        A bytes or bytearray larger than 1 MiB goes out without being copied.
        With ``out_of_band=True``, every PickleBuffer the pickle refers to (a
        NumPy array's data, ``PickleBuffer(...)``) goes out of band: as a frame
        of its own, written from the caller's memory with the rest of the
        message in one scatter-gather write; a message with none is the
        ordinary single frame.
        Raises OSError if closed, PicklingError for unpicklable objects,
        TimeoutError on timeout; any error after part of the message was written
        closes the connection (the stream cannot be resynchronised).
        """
        cdef PwCall call
        cdef PwEnc *e
        cdef Py_ssize_t sent = 0
        cdef Py_ssize_t header_size
        cdef uint64_t stream_size = 0
        cdef MessageLock lock
        cdef list set_aside = None
        if fw_fd_load(&self._fd) < 0 or not self._writable or (
                (type(obj) is bytes or type(obj) is bytearray) and len(obj) >= _CONN_STREAMED):
            return self._send_slowly(obj)
        e = pw_call_begin(&call, 5, NULL)
        try:
            # The encoder collects PickleBuffers itself, into a list made for the
            # first: a message with none costs what it costs without the option.
            e.set_aside = self._out_of_band
            # Pickling runs Python (__reduce__, persistent_id, ...), which may close
            # the connection or give it a timeout: the descriptor is read only after.
            pw_append_frame(e, <PyObject *>obj, &_conn_prefix.spec, _conn_header_guess)
            if e.buffers != NULL:
                set_aside = <list>e.buffers
                header_size = decode_header(&_conn_prefix.spec, <const unsigned char *>e.buf, e.len,
                                            &stream_size)
                return self._send_buffers(e.buf + header_size, <Py_ssize_t>stream_size, set_aside)
            if fw_fd_load(&self._fd) < 0:
                return self._send_locked(PyBytes_FromStringAndSize(e.buf, e.len))
            lock = self._send_lock  # owned: a callback cannot take it away mid-call
            lock.take()
            try:
                self._before_send()
                fw_fd_send_all(&self._fd, e.buf, e.len, &sent)
            except BaseException:
                if sent:
                    self.close()
                raise
            finally:
                lock.give()
        finally:
            pw_call_end(&call)

    cdef object _send_buffers(self, const char* stream, Py_ssize_t stream_size, list buffers):
        """Send the pickle stream at `stream` and the PickleBuffers `buffers`
        it set aside as one out-of-band message: from C, the manifest and the
        frame headers written here and everything in one scatter-gather write
        straight from the buffers' memory; through the _send_out_of_band hook
        where send() does not write from C."""
        cdef Py_ssize_t i, n = len(buffers), sent = 0, head_size, pieces = 2 + 2 * n
        cdef Py_buffer* views
        cdef Py_ssize_t acquired = 0
        cdef fw_iovec* iov = NULL
        cdef char* meta = NULL
        cdef char* p
        cdef MessageLock lock
        views = <Py_buffer*>PyMem_Malloc(<size_t>n * sizeof(Py_buffer))
        if views == NULL:
            raise MemoryError()
        try:
            # Our own export of each buffer, as PickleBuffer.raw() takes one:
            # what the kernel reads stays alive and in place even if the
            # PickleBuffer is released meanwhile. The exporter's getbuffer
            # runs here (a Python-level one cannot be exported again through
            # a PickleBuffer: TypeError, as raw() raises), so the descriptor
            # is read only after.
            for i in range(n):
                PyObject_GetBuffer(buffers[i], &views[i], PyBUF_FULL_RO)
                acquired += 1
                if views[i].suboffsets != NULL or not PyBuffer_IsContiguous(&views[i], b'A'):
                    raise BufferError("cannot extract raw buffer from non-contiguous buffer")
            if fw_fd_load(&self._fd) < 0:
                return self._send_out_of_band(PyBytes_FromStringAndSize(stream, stream_size), buffers)
            # The manifest frame's header, the manifest, then a header per buffer frame.
            meta = <char*>PyMem_Malloc(12 + _OOB_HEAD + <size_t>n * (_OOB_ENTRY + 12))
            iov = <fw_iovec*>PyMem_Malloc(<size_t>pieces * sizeof(fw_iovec))
            if meta == NULL or iov == NULL:
                raise MemoryError()
            head_size = encode_header(&_conn_prefix.spec, meta, _OOB_HEAD + n * _OOB_ENTRY + stream_size)
            p = meta + head_size
            memcpy(p, _OOB_MAGIC, 4)
            p[4] = <char>_OOB_VERSION
            fw_store_u32(p + 5, <uint32_t>n, FW_HOST_LITTLE)
            p += _OOB_HEAD
            for i in range(n):
                p[0] = <char>(_OOB_READONLY if views[i].readonly else 0)
                fw_store_u64(p + 1, <uint64_t>views[i].len, FW_HOST_LITTLE)
                p += _OOB_ENTRY
            iov[0].iov_base = meta
            iov[0].iov_len = <size_t>(p - meta)
            iov[1].iov_base = <void*>stream
            iov[1].iov_len = <size_t>stream_size
            for i in range(n):
                iov[2 + 2 * i].iov_base = p
                iov[2 + 2 * i].iov_len = <size_t>encode_header(&_conn_prefix.spec, p, <uint64_t>views[i].len)
                p += iov[2 + 2 * i].iov_len
                iov[3 + 2 * i].iov_base = views[i].buf
                iov[3 + 2 * i].iov_len = <size_t>views[i].len
            lock = self._send_lock  # owned: a callback cannot take it away mid-call
            lock.take()
            try:
                self._before_send()
                fw_fd_send_vector(&self._fd, iov, pieces, &sent)
            except BaseException:
                if sent:
                    self.close()
                raise
            finally:
                lock.give()
        finally:
            for i in range(acquired):
                PyBuffer_Release(&views[i])
            PyMem_Free(views)
            PyMem_Free(meta)
            PyMem_Free(iov)

    def _send_locked(self, data, write=None):
        """Write one whole message `data` to the live socket under the send lock:
        ``sock.sendall(data)``, or ``write(sock, data)``. A timeout or an
        interruption in the middle closes the connection (the stream cannot be
        resynchronised)."""
        cdef MessageLock lock
        self._live_sock()  # a live socket proves the locks are set up
        lock = self._send_lock
        lock.take()
        try:
            sock = self._live_sock()  # again: closed while this call waited for the lock?
            self._before_send()
            try:
                if write is None:
                    sock.sendall(data)
                else:
                    write(sock, data)
            except (TimeoutError, InterruptedError):
                self.close()
                raise
        finally:
            lock.give()

    # -- receiving -------------------------------------------------------------

    cdef object _read(self, object deadline, bint nonblocking):
        """One read into the scanner, by the primitive the socket allows: the
        frames it completed (maybe none). At end of stream EOFError, or None
        with `nonblocking` (poll(): recv() raises at once). With a `deadline`,
        TimeoutError once it has passed with no byte to read; the bytes
        received so far stay buffered. Receive lock held."""
        cdef FrameScanner scanner = self._scanner
        try:
            if deadline is None and not nonblocking and fw_fd_load(&self._fd) >= 0:
                frames = scanner.recv_with(fw_fd_recv, &self._fd)
            else:
                sock = self._live_sock()
                if deadline is None and not nonblocking:
                    frames = scanner.recv_from(sock)
                else:
                    if deadline is not None:
                        _conn_wait_readable(sock, deadline)
                    try:
                        frames = scanner.recv_from(sock, FW_MSG_DONTWAIT)
                    except BlockingIOError:  # nothing yet (or a spurious wake-up)
                        return []
        except FrameError:
            self.close()
            raise
        if frames is None:
            if nonblocking:
                return None
            if scanner.buffered():
                self.close()
                raise EOFError(EOF_IN_MESSAGE)
            raise EOFError
        return frames

    cdef int _keep_ready(self, list frames) except -1:
        """Queue received frames in _ready (receive lock held)."""
        cdef object frame
        for frame in frames:
            if _is_manifest(frame):
                self._ready_unlocked = False  # before the manifest is visible
                break
        self._ready.extend(frames)
        return 0

    cdef object _next_frame(self, object deadline, object maxlength):
        """The receive loop: the next complete frame, or None once the frame
        arriving has declared STREAM_THRESHOLD bytes or more, or more than
        `maxlength` (the caller takes it over with take_partial()). Receive
        lock held."""
        cdef object ready = self._ready
        cdef FrameScanner scanner = self._scanner
        cdef object frames
        cdef uint64_t announced
        while True:
            if ready:
                try:
                    return ready.popleft()
                except IndexError:  # a lock-free recv() in another thread took it
                    continue
            # Checked before reading too: the last read may have brought the
            # header of a frame the caller takes over, after complete ones.
            announced = scanner.incomplete_length()
            if announced and (announced >= <uint64_t>_CONN_STREAMED or
                              (maxlength is not None and announced > maxlength)):
                return None
            frames = self._read(deadline, False)
            if frames:
                if len(<list>frames) == 1 and not ready:
                    return (<list>frames)[0]  # the usual case: no detour through the deque
                self._keep_ready(frames)

    cdef object _recv_into_until(self, object deadline):
        """The recv_into that reads the rest of a large frame: the socket's, or
        with a deadline, one that raises TimeoutError after it."""
        cdef _DeadlineRecv reader
        sock = self._live_sock()
        if deadline is None:
            return sock.recv_into
        reader = _DeadlineRecv.__new__(_DeadlineRecv)
        reader.sock = sock
        reader.deadline = deadline
        return reader

    def recv(self, timeout=None, *, buffers=None):
        """Receive one object.

        `timeout` (seconds, None by default) is a deadline for the whole call:
        TimeoutError unless the whole message has arrived within it, however
        slowly its bytes trickle in (the socket's own timeout bounds each
        read only). It bounds waiting, not decoding.

        An out-of-band message (what a fastwire peer sends with
        ``out_of_band=True``) is received whole before it is decoded: each
        buffer lands in memory the object built on it owns (writable unless
        the sender's was read-only), or, with `buffers`, in memory the caller
        provides: ``buffers(size, readonly)`` is called once per buffer, after
        the message's bounds were checked, and returns a writable, C-contiguous
        bytes-like object of at least `size` bytes; the object decoded gets
        exactly that object (a memoryview of its first `size` bytes if it is
        larger). A message without buffers never calls it.

        Decoded in restricted mode unless the connection is trusted. Raises
        EOFError when the peer has closed (also in the middle of a frame: no
        partial object is ever returned), UnpicklingError for a refused or
        malformed pickle (the stream stays usable), FrameTooLarge/FrameError for
        a bad length prefix or an out-of-band message beyond `max_frame_size`,
        `max_buffers` or `max_message_size` (the connection is closed),
        TimeoutError on timeout (bytes received so far are kept for the next
        call, except in the middle of a message over 1 MiB or of an
        out-of-band message, which closes the connection). Whatever `buffers`
        raises, or TypeError/ValueError for what it returns, closes the
        connection too (the rest of the message is not read); RuntimeError if
        it calls recv() on the same connection from the same thread.
        """
        cdef object ready = self._ready
        cdef object deadline = None
        cdef object stream = None
        cdef list raws = None
        cdef bint manifest = False
        cdef MessageLock lock
        if fw_fd_load(&self._fd) < 0 or not self._readable:
            self._require_readable()
        if timeout is not None:
            deadline = deadline_of(timeout)
        # A frame already received needs no lock (popleft() hands it to one
        # caller) unless a manifest may be among them (_ready_unlocked).
        if self._ready_unlocked and ready:
            try:
                frame = ready.popleft()
            except IndexError:  # another thread took it
                pass
            else:
                return unp_loads_default(frame, self._allowed)
        lock = self._recv_lock  # owned: a callback cannot take it away mid-call
        lock.take_unless_held()
        try:
            self._before_waiting()
            if not ready and not FW_FREE_THREADED:
                self._ready_unlocked = True  # lock held, nothing queued: no manifest anywhere
            frame = self._next_frame(deadline, None)
            if frame is None:
                # Decoded while it arrives, straight into the objects it makes.
                frame = self._receive_large_message(deadline, &manifest)
                if not manifest:
                    return frame
            if manifest or _is_manifest(frame):
                stream, raws = self._receive_buffers(frame, deadline, buffers)
        finally:
            lock.give()
        if raws is not None:
            return loads(stream, buffers=raws, allowed=self._allowed)
        return unp_loads_default(frame, self._allowed)

    cdef object _receive_large_message(self, object deadline, bint* manifest):
        """The message whose first frame, over STREAM_THRESHOLD, is arriving:
        that frame read whole if it is an out-of-band manifest (*manifest set),
        else the object decoded while it arrives (_load_streamed). Receive
        lock held."""
        cdef Py_ssize_t missing
        length, received = self._scanner.take_partial()
        recv_into = self._recv_into_until(deadline)
        missing = min(length, 4) - len(received)
        try:
            if missing > 0:  # too little has arrived to tell: read the rest of the magic
                head = bytearray(received)
                head.extend(bytes(missing))
                recv_exactly(recv_into, memoryview(head)[len(received):])
                received = memoryview(bytes(head))
            if _is_manifest(received):
                frame = _receive_payload(recv_into, length, received, NULL)
                manifest[0] = True
                return frame
        except BaseException:
            self.close()  # the frame is cut: the stream cannot be resynchronised
            raise
        return self._load_streamed(length, received, recv_into)

    cdef tuple _receive_buffers(self, object frame, object deadline, object into):
        """The buffers the out-of-band manifest `frame` announces, received from
        the frames that follow it: ``(pickle stream, buffers)``. Every bound is
        checked before anything is allocated; any failure closes the connection
        (the rest of the message cannot be told from the next one) and nothing
        received is handed out. Receive lock held."""
        cdef list raws = None
        cdef Py_ssize_t i, total = 0
        cdef MessageBuffers parts = None
        self._ready_unlocked = False  # the buffer frames about to be queued are this call's
        try:
            sizes, readonly, offset = _oob_protocol().parse_manifest(
                frame, max_buffers=self._max_buffers, max_frame_size=self._max_frame_size,
                max_message_size=self._max_message_size)
            if into is None:
                for i in range(len(sizes)):
                    total += <Py_ssize_t>sizes[i]
                parts = message_buffers(total)  # total is bounded: max_message_size
                self._receive_buffer_frames(sizes, deadline, parts)
                raws = parts.finish(sizes, readonly)
            else:
                raws = [self._receive_into_callers(sizes[i], readonly[i], deadline, into)
                        for i in range(len(sizes))]
        except EOFError as exc:
            self.close()
            if exc.args:
                raise
            raise EOFError(EOF_IN_MESSAGE) from None  # a clean end between the frames still cuts the message
        except BaseException:
            self.close()
            raise
        return memoryview(frame)[offset:], raws

    cdef tuple _buffer_frame(self, Py_ssize_t size, object deadline):
        """The next frame, an out-of-band buffer of `size` bytes:
        ``(received, recv_into)``, what the scanner holds of it and, if that
        is not all, the recv_into that reads the rest."""
        # maxlength 0: the scanner hands over any frame whose header is complete
        # and whose payload is not, instead of buffering it.
        frame = self._next_frame(deadline, 0)
        if frame is None:
            length, received = self._scanner.take_partial()
        else:
            length, received = len(frame), frame
        if length != size:
            raise _buffer_frame_mismatch(length, size)
        return received, (self._recv_into_until(deadline) if len(received) < length else None)

    cdef int _receive_buffer_frames(self, list sizes, object deadline,
                                    MessageBuffers parts) except -1:
        """The frames of the out-of-band buffers of `sizes` (what the manifest
        announced), appended to `parts` in order: first those the scanner has
        already split, then the bytes it holds, then the rest read from the
        socket straight into place. Once the manifest is known, so is where
        every following byte goes: where the descriptor allows, one
        scatter-gather read takes the headers and payloads of many frames at
        once. Each header is checked against the manifest as soon as it is
        complete; nothing past the message is read. Receive lock held."""
        cdef _FrameLayout f
        cdef fw_iovec iov[FW_IOV_BATCH]
        cdef const char* held = NULL
        cdef Py_ssize_t i = 0, j, n, misplaced, count = len(sizes)
        cdef int pieces
        cdef object ready = self._ready
        cdef object recv_into = None
        while i < count and ready:
            frame = ready.popleft()
            if len(frame) != sizes[i]:
                raise _buffer_frame_mismatch(len(frame), sizes[i])
            parts.take(frame)
            i += 1
        if i == count:
            return 0
        f.count = count - i
        f.index = f.got = 0
        f.in_payload = f.long_header = False
        # 20 bytes a buffer: the manifest that announced them took 9 each.
        f.sizes = <uint64_t*>PyMem_Malloc(<size_t>f.count * 20)
        if f.sizes == NULL:
            raise MemoryError()
        f.heads = <char*>(f.sizes + f.count)
        try:
            for j in range(f.count):
                # Through Py_ssize_t: OverflowError for a size past it (limits
                # configured that high), never a negative length in the layout.
                f.sizes[j] = <Py_ssize_t>sizes[i + j]
            n = self._scanner.raw_bytes(&held)
            if n:
                n = _layout_copy(&f, parts, held, n, iov, self._max_frame_size)
                frames = self._scanner.skip_raw(n)
                if frames:
                    self._keep_ready(frames)  # the messages after this one
            while f.index < f.count:
                if deadline is None and fw_fd_load(&self._fd) >= 0:
                    pieces = _layout_vector(&f, parts, iov, FW_IOV_BATCH)
                    n = fw_fd_recv_vector(&self._fd, iov, pieces)
                    if n == 0:
                        raise EOFError(EOF_IN_MESSAGE)
                    parts.advance(_layout_advance(&f, n, self._max_frame_size, &misplaced))
                    if misplaced:
                        _layout_replace(&f, parts, iov, pieces, n, misplaced, self._max_frame_size)
                else:
                    if recv_into is None:
                        recv_into = self._recv_into_until(deadline)
                    _layout_receive_piece(&f, parts, recv_into, self._max_frame_size)
        finally:
            PyMem_Free(f.sizes)
        return 0

    cdef object _receive_into_callers(self, Py_ssize_t length, bint readonly, object deadline,
                                      object into):
        """The next frame, an out-of-band buffer of `length` bytes, in the buffer
        `into(length, readonly)` returns; what the decoder is given for it."""
        received, recv_into = self._buffer_frame(length, deadline)
        target = into(length, readonly)
        view = memoryview(target)
        # The callable (and the buffer export) ran Python: this connection may be closed.
        self._live_sock()
        if view.readonly:
            raise TypeError(f"buffers() returned a read-only buffer ({type(target).__name__})")
        if not view.c_contiguous:
            raise TypeError(f"buffers() returned a non-contiguous buffer ({type(target).__name__})")
        flat = view.cast("B") if view.format != "B" or view.ndim != 1 else view
        if flat.nbytes < length:
            raise ValueError(f"buffers() returned {flat.nbytes} bytes, {length} needed")
        head = len(received)
        flat[:head] = received
        if head < length:
            recv_exactly(recv_into, flat[head:length])
        return target if flat.nbytes == length else flat[:length]

    def recv_bytes(self, maxlength=None, *, timeout=None):
        """Receive one message as bytes.

        Raises OSError("bad message length") if it is longer than `maxlength`
        (the connection then stops being readable, as in the standard
        library), EOFError/FrameTooLarge/TimeoutError as recv() does.
        `timeout` is a deadline for the whole call, as in recv().
        """
        cdef MessageLock lock
        self._require_readable()
        if maxlength is not None and maxlength < 0:
            raise ValueError("negative maxlength")
        deadline = deadline_of(timeout)
        lock = self._recv_lock
        lock.take_unless_held()
        try:
            self._before_waiting()
            frame = self._next_frame(deadline, maxlength)
            if frame is None:
                if maxlength is not None and self._scanner.incomplete_length() > maxlength:
                    self._bad_message_length()
                frame = self._receive_large(deadline)
            elif maxlength is not None and len(frame) > maxlength:
                self._ready_unlocked = False  # it may be a manifest
                self._ready.appendleft(frame)  # it stays first, as it was
                self._bad_message_length()
        finally:
            lock.give()
        return frame if type(frame) is bytes else bytes(frame)

    def recv_bytes_into(self, buf, offset=0, *, timeout=None):
        """Receive one message into the writable bytes-like `buf` at byte `offset`.

        Returns its size. Raises BufferTooShort (carrying the whole message)
        if it does not fit, ValueError for a bad offset. `timeout` is a
        deadline for the whole call, as in recv().
        """
        cdef MessageLock lock
        self._require_readable()
        offset = _conn_index(offset)  # once, before any lock: __index__ runs Python
        deadline = deadline_of(timeout)
        with memoryview(buf) as m:
            itemsize = m.itemsize
            bytesize = itemsize * len(m)
            if offset < 0:
                raise ValueError("negative offset")
            elif offset > bytesize:
                raise ValueError("offset too large")
            with m.cast("B") as target:
                lock = self._recv_lock
                lock.take_unless_held()
                try:
                    self._before_waiting()
                    frame = self._next_frame(deadline, None)
                    if frame is None:
                        length = self._scanner.incomplete_length()
                        if offset + length <= bytesize:
                            # Large and fits: the rest of it goes straight from the socket into buf.
                            return self._receive_into(target, offset, deadline)
                        frame = self._receive_large(deadline)
                    size = len(frame)
                    if bytesize < offset + size:
                        from multiprocessing import BufferTooShort
                        raise BufferTooShort(bytes(frame))
                    target[offset:offset + size] = frame
                    return size
                finally:
                    lock.give()

    cdef object _receive_into(self, target, offset, deadline):
        """The large frame arriving, into `target` at `offset`; its length."""
        length, head = self._scanner.take_partial()
        target[offset:offset + len(head)] = head
        try:
            recv_exactly(self._recv_into_until(deadline), target[offset + len(head):offset + length])
        except BaseException:
            self.close()  # the frame is cut: the stream cannot be resynchronised
            raise
        return length

    def poll(self, timeout=0.0):
        """Whether a message can be received without blocking (waits up to `timeout`
        seconds, None = forever). Also True when the peer has closed (recv() then raises).
        """
        cdef object ready = self._ready
        cdef MessageLock lock
        self._require_readable()
        now = _conn_monotonic()
        deadline = None if timeout is None else now + max(timeout, 0.0)
        may_wait = deadline is None or deadline > now  # poll(0) is a look: it leaves Nagle be
        lock = self._recv_lock
        lock.take_unless_held()
        try:
            if may_wait:
                self._before_waiting()
            while not ready:
                remaining = None if deadline is None else max(deadline - _conn_monotonic(), 0.0)
                if not _conn_readable(self._live_sock(), remaining):
                    return False
                frames = self._read(None, True)
                if frames is None:
                    return True  # end of stream: recv() raises EOFError at once
                self._keep_ready(frames)
                if deadline is not None and _conn_monotonic() >= deadline and not ready:
                    return False
            return True
        finally:
            lock.give()

    cdef object _receive_large(self, deadline):
        """The rest of a large frame, read straight into the bytes object returned."""
        length, head = self._scanner.take_partial()
        try:
            return self._receive_bytes(length, head, self._recv_into_until(deadline))
        except BaseException:
            self.close()  # the frame is cut: the stream cannot be resynchronised
            raise

    cdef int _bad_message_length(self) except -1:
        if self._writable:
            self._readable = False
        else:
            self.close()
        raise OSError("bad message length")

    def _receive_bytes(self, Py_ssize_t length, received, recv_into):
        """The rest of a large frame as one bytes object (receive_payload()), read
        with `recv_into`. If the caller has dropped the large bytes this
        connection returned last time, its memory is filled instead of a new
        block: paging in a fresh 64 MiB costs more than receiving it."""
        cdef PyObject* reuse = NULL
        with cython.critical_section(self):
            spare = self._spare
            self._spare = None
        if spare is not None and c_refcnt(<PyObject*>spare) == 1:  # held by nobody else
            c_incref(<PyObject*>spare)
            reuse = <PyObject*>spare
        spare = None
        result = _receive_payload(recv_into, length, received, reuse)
        if not FW_FREE_THREADED:  # a reference count proves nothing there
            self._spare = result
        return result
