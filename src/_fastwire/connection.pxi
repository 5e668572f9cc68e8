# The per-message path of fastwire.net.Connection: send() and recv() of an
# ordinary message, compiled.
#
# A small message costs two system calls on the wire; everything else a
# Connection written in Python does around them (state checks, a lock, the
# socket methods' argument parsing, a memoryview, the GIL round trip of a
# blocking call) cost as much again. Here a message is pickled behind its frame
# header into a stack buffer and written from there with one send() on the
# descriptor (sockio.h), and received frames are read with one recv() straight
# into the FrameScanner's buffer and decoded without leaving C.
#
# Only the common case lives here. The Python subclass (fastwire/net.py) keeps
# everything else and every rare branch: sockets with a timeout (the socket
# module's timeout machinery), Windows, large bytes sent without a copy, large
# frames decoded while they arrive, end-of-stream and error handling.

# Shared declarations this part uses.
# From frames.pxi (declared in src/fastwire/_fastwire.pxd: FramePrefix,
# FrameScanner), by inclusion: FrameError, _receive_payload.
# From pickle_write.pxi, by inclusion: pw_append_frame, pw_header_guess.
# From pickle_read.pxi, by inclusion: unp_loads_default.
from libc.stdint cimport uint64_t
from cpython.object cimport PyObject
from cpython.bytes cimport PyBytes_FromStringAndSize
from capi cimport c_incref, c_refcnt
from wire cimport FW_FREE_THREADED
from encoder cimport PwCall, PwEnc, pw_call_begin, pw_call_end

from cpython.pythread cimport (
    NOWAIT_LOCK, WAIT_LOCK, PyThread_acquire_lock, PyThread_allocate_lock, PyThread_free_lock,
    PyThread_release_lock, PyThread_type_lock,
)

cdef FramePrefix _conn_prefix = FramePrefix("multiprocessing")
cdef Py_ssize_t _conn_header_guess = pw_header_guess(&_conn_prefix.spec)
# A bytes/bytearray at least this large is sent without being copied, and a frame
# at least this large is read straight into its final place (both by the subclass).
cdef Py_ssize_t _CONN_STREAMED = 1024 * 1024
STREAM_THRESHOLD = _CONN_STREAMED

FAST_SOCKETS = bool(FW_FAST_SOCKETS)


cdef class MessageLock:
    """A mutex with :class:`threading.Lock`'s ``with`` / ``acquire()`` /
    ``release()`` / ``locked()``, that compiled code takes without a method call
    (calling ``threading.Lock.acquire`` parses arguments: a tenth of a message).
    A thread waiting for it cannot be interrupted by a signal."""

    cdef PyThread_type_lock lock
    cdef bint held

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
        self.held = True
        return 0

    cdef void give(self) noexcept:
        self.held = False
        PyThread_release_lock(self.lock)

    def acquire(self, bint blocking=True):
        """Take the lock (waiting for it unless `blocking` is false); True if taken."""
        if not blocking:
            if not PyThread_acquire_lock(self.lock, NOWAIT_LOCK):
                return False
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


cdef class ConnectionCore:
    """The compiled half of :class:`fastwire.net.Connection`; not for direct use.

    The subclass sets every attribute in its ``__init__``, once (it refuses to
    re-initialise: a call in progress holds the scanner, deque and locks it
    read). ``_fd`` is the socket's descriptor while the fast path may use it (a
    blocking socket without timeout, on POSIX), else -1; the subclass keeps it
    current and stores -1 there before it closes the socket. The fast path
    reads it only after every callout and right before each system call.
    """

    cdef public object _sock
    cdef public bint _readable
    cdef public bint _writable
    cdef public object _allowed       # None: trusted; else the tuple given to loads()
    cdef public FrameScanner _scanner
    cdef public object _ready         # collections.deque of received payloads
    cdef public MessageLock _send_lock
    cdef public MessageLock _recv_lock
    cdef public int _fd
    cdef public object _spare   # the last large bytes received, kept for its paged-in memory

    def _receive_bytes(self, Py_ssize_t length, received, recv_into=None):
        """The rest of a large frame as one bytes object (receive_payload()),
        read with `recv_into` (default: the socket's). If the caller has dropped the large bytes this
        connection returned last time, its memory is filled instead of a new
        block: paging in a fresh 64 MiB costs more than receiving it."""
        cdef PyObject* reuse = NULL
        cdef PyObject* spare = <PyObject*>self._spare
        if spare != <PyObject*>None and c_refcnt(spare) == 1:  # held by nobody else
            c_incref(spare)
            reuse = spare
        self._spare = None
        if recv_into is None:
            recv_into = self._sock.recv_into
        result = _receive_payload(recv_into, length, received, reuse)
        if not FW_FREE_THREADED:  # a reference count proves nothing there
            self._spare = result
        return result

    def send(self, obj):
        """Send a picklable object (pickle protocol 5).

        A bytes or bytearray larger than 1 MiB goes out without being copied.
        Raises OSError if closed, PicklingError for unpicklable objects,
        TimeoutError on timeout; any error after part of the message was written
        closes the connection (the stream cannot be resynchronised).
        """
        cdef PwCall call
        cdef PwEnc *e
        cdef Py_ssize_t sent = 0
        cdef MessageLock lock
        if self._fd < 0 or not self._writable or (
                (type(obj) is bytes or type(obj) is bytearray) and len(obj) >= _CONN_STREAMED):
            return self._send_slowly(obj)
        e = pw_call_begin(&call, 5, NULL)
        try:
            # Pickling runs Python (__reduce__, persistent_id, ...), which may close
            # the connection or give it a timeout: the descriptor is read only after.
            pw_append_frame(e, <PyObject *>obj, &_conn_prefix.spec, _conn_header_guess)
            if self._fd < 0:
                return self._send_frames(PyBytes_FromStringAndSize(e.buf, e.len))
            lock = self._send_lock  # owned: a callback cannot take it away mid-call
            lock.take()
            try:
                fw_fd_send_all(&self._fd, e.buf, e.len, &sent)
            except BaseException:
                if sent:
                    self.close()
                raise
            finally:
                lock.give()
        finally:
            pw_call_end(&call)

    def recv(self, timeout=None):
        """Receive one object.

        `timeout` (seconds, None by default) is a deadline for the whole call:
        TimeoutError unless the whole message has arrived within it, however
        slowly its bytes trickle in (the socket's own timeout bounds each
        read only). It bounds waiting, not decoding.

        Decoded in restricted mode unless the connection is trusted. Raises
        EOFError when the peer has closed (also in the middle of a frame: no
        partial object is ever returned), UnpicklingError for a refused or
        malformed pickle (the stream stays usable), FrameTooLarge/FrameError for
        a bad length prefix (the connection is closed), TimeoutError on
        timeout (bytes received so far are kept for the next call, except in
        the middle of a message over 1 MiB, which closes the connection).
        """
        cdef object ready = self._ready
        cdef FrameScanner scanner = self._scanner
        cdef MessageLock lock
        cdef bint slowly = False
        if self._sock is None or not self._readable or timeout is not None:
            return self._recv_slowly(timeout)
        # A frame already received needs no lock: popleft() hands it to one caller.
        if ready:
            try:
                frame = ready.popleft()
            except IndexError:  # another thread took it
                return self._recv_slowly()
            return unp_loads_default(frame, self._allowed)
        if self._fd < 0:
            return self._recv_slowly()
        lock = self._recv_lock  # owned: a callback cannot take it away mid-call
        lock.take()
        try:
            while True:
                if ready:
                    try:
                        frame = ready.popleft()
                        break
                    except IndexError:  # a lock-free recv() in another thread took it
                        continue
                if self._fd < 0:  # given a timeout (or closed) by another thread meanwhile
                    slowly = True
                    break
                try:
                    frames = scanner.recv_with(fw_fd_recv, &self._fd)
                except FrameError:
                    self.close()
                    raise
                if frames is None:
                    if scanner.buffered():
                        self.close()
                        raise EOFError("the peer closed the connection in the middle of a message")
                    raise EOFError
                if frames:
                    if len(<list>frames) == 1 and not ready:
                        frame = (<list>frames)[0]  # the usual case: no detour through the deque
                        break
                    ready.extend(frames)
                elif scanner.incomplete_length() >= <uint64_t>_CONN_STREAMED:
                    # Decoded while it arrives, straight into the objects it makes.
                    return self._load_streamed(*scanner.take_partial())
        finally:
            lock.give()
        if slowly:
            return self._recv_slowly()
        return unp_loads_default(frame, self._allowed)
