# Declarations of the compiled core (src/_fastwire.pyx and its parts in
# src/_fastwire/) that one part uses from another: the frame scanner's C-level
# API, which the connection drives. Cython reads this file as the module's own
# .pxd, so the classes below are defined in frames.pxi.

cimport cython
from libc.stdint cimport uint64_t

from framing cimport PrefixSpec, Partial, fd_reader


cdef class _Arena:
    cdef char *data
    cdef Py_ssize_t size
    cdef Py_ssize_t exports
    cdef Py_ssize_t itemsize

    cdef int resize(self, Py_ssize_t size) except -1


cdef class FramePrefix:
    cdef PrefixSpec spec
    cdef readonly str format


cdef class FrameScanner:
    # Private state: compiled code outside frames.pxi goes through the
    # methods below.
    cdef FramePrefix _prefix
    cdef uint64_t _max_frame_size
    cdef Py_ssize_t _copy_threshold
    cdef _Arena _arena
    cdef Py_ssize_t _start, _end   # unconsumed bytes are _arena.data[_start:_end]
    cdef Partial _partial
    cdef object _error
    # A call is under way. Its scan reads the arena through a raw pointer and
    # updates _partial while making frame objects, and recv_from() hands the
    # window to user code (recv_into); a finalizer or that code calling the
    # scanner again could move the arena under it, so re-entry raises
    # RuntimeError instead.
    cdef bint _busy
    # The arena and end position get_buffer() described: buffer_updated()
    # counts bytes only if they were written there, not into a window the
    # scanner has since moved away from (a feed() in between).
    cdef _Arena _window_arena
    cdef Py_ssize_t _window_end

    # The API for compiled callers (the connection's receive loop); final, so
    # that a call is direct rather than through the vtable.
    @cython.final
    cdef Py_ssize_t buffered(self) noexcept

    @cython.final
    cdef uint64_t incomplete_length(self) noexcept

    @cython.final
    cdef object recv_with(self, fd_reader read, const int *fdp)

    @cython.final
    cdef Py_ssize_t raw_bytes(self, const char **data) except -1

    @cython.final
    cdef list skip_raw(self, Py_ssize_t n)

    cdef int _ensure_space(self, Py_ssize_t free_bytes) except -1
    cdef list _scan(self)
    cdef int _settle(self, list frames) except -1
    cdef int _check(self) except -1
    cdef int _claim(self) except -1
    cdef list _feed(self, object data)
    cdef object _window(self, Py_ssize_t sizehint)
    cdef int _open_window(self, Py_ssize_t sizehint) except -1
    cdef list _updated(self, Py_ssize_t nbytes)


# buffers.pxi: what the connection receives out-of-band buffers into.
from blocks cimport fw_block


@cython.final
cdef class ReceiveBuffer:
    cdef fw_block block
    cdef Py_ssize_t length      # bytes exported once complete (0 while receiving)
    cdef Py_ssize_t claimed     # the length being received (sizes a replacement block)
    cdef Py_ssize_t itemsize    # 1; the export's strides point here
    cdef Py_ssize_t exports
    cdef bint read_only
    # A part of a message's shared block: `base` (another ReceiveBuffer) owns
    # the block and `start` points into it; None/NULL for a buffer that owns
    # `block` itself.
    cdef ReceiveBuffer base
    cdef char* start
