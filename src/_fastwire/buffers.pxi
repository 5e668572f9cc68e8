# Receive memory: the blocks that out-of-band (PEP 574) buffers are received
# into, and the object that owns one and exports it to the reconstruction.
#
# A buffer's bytes are read from the kernel once, straight into the block the
# returned ReceiveBuffer owns; a NumPy array, memoryview or bytearray rebuilt by
# pickle keeps that object alive. Its length is only a peer's claim, so the
# block grows with the bytes that arrived (blocks.h) and is never committed
# from the claim alone.
#
# Exports are counted; a ReceiveBuffer's memory never moves once it is
# returned, and while it is received the only pointers into it are the
# windows lent to recv_into: a window the callee kept keeps the block it
# points into (the window owns it from then on), and receiving goes on in a
# copy.

# Shared declarations this part uses.
# Its class is declared in src/fastwire/_fastwire.pxd; receive_buffer() is
# cpdef, so compiled parts call it directly.
# From frames.pxi, by inclusion: EOF_IN_MESSAGE, _BYTE_FORMAT,
# _FIRST_PAYLOAD_BLOCK, _ReceiveWindow, export_vector.
from libc.string cimport memcpy
from cpython.buffer cimport PyBUF_WRITABLE
from wire cimport acquire_readable, release_view
from blocks cimport (
    FW_ALLOC_COUNT, fw_alloc_strategy, fw_block, fw_block_free, fw_block_grow, fw_block_new,
    fw_block_trim,
)

cimport cython

# What an empty buffer exports: a valid address, never NULL.
cdef char _empty_block[1]


@cython.final
cdef class ReceiveBuffer:
    """A received out-of-band buffer: ``len(buffer)`` bytes of memory this
    object owns, exported through the buffer protocol (``memoryview``,
    ``numpy.frombuffer``, ``bytes()``), writable unless the sender's was
    read-only. Made only by receive_buffer(). Pickles as ``bytearray`` (or
    ``bytes`` if read-only)."""

    def __init__(self):
        raise TypeError("ReceiveBuffer objects are made by receive_buffer()")

    def __dealloc__(self):
        fw_block_free(&self.block)

    def __getbuffer__(self, Py_buffer* buffer, int flags):
        if (flags & PyBUF_WRITABLE) and self.read_only:
            raise BufferError("the received buffer is read-only")
        with cython.critical_section(self):
            export_vector(buffer, self, self.block.data if self.block.data != NULL else _empty_block,
                          &self.length, &self.itemsize, _BYTE_FORMAT, self.read_only, flags)
            self.exports += 1

    def __releasebuffer__(self, Py_buffer* buffer):
        with cython.critical_section(self):
            self.exports -= 1

    def __len__(self):
        return self.length

    @property
    def readonly(self):
        """True if the sender's buffer was read-only (no writable export)."""
        return self.read_only

    def __repr__(self):
        return f"<ReceiveBuffer of {self.length} bytes{', read-only' if self.read_only else ''}>"

    def __reduce_ex__(self, protocol):
        import pickle
        rebuild = bytes if self.read_only else bytearray
        if protocol >= 5:
            # Out of band again when the pickler takes buffers (no copy here).
            return rebuild, (pickle.PickleBuffer(self),)
        return rebuild, (bytes(self),)


cdef ReceiveBuffer _new_receive_buffer(bint readonly):
    cdef ReceiveBuffer buffer = ReceiveBuffer.__new__(ReceiveBuffer)
    buffer.itemsize = 1
    buffer.read_only = readonly
    return buffer


cdef int _abandon_receive_block(_ReceiveWindow window, ReceiveBuffer buffer,
                                Py_ssize_t offered) except -1:
    """`window`'s callee kept a view into `buffer`'s block: the window takes the
    block (it lives as long as that view) and `buffer` goes on in a copy of
    its first `offered` bytes (up to the window's end: the count the callee
    returns is not known yet)."""
    cdef ReceiveBuffer keeper = _new_receive_buffer(False)
    keeper.block = buffer.block
    buffer.block.data = NULL
    window.block = keeper  # first: a failed allocation below leaks nothing
    if fw_block_new(&buffer.block, keeper.block.capacity, buffer.claimed) < 0:
        raise MemoryError()
    memcpy(buffer.block.data, keeper.block.data, offered)
    return 0


cpdef object receive_buffer(object recv_into, Py_ssize_t length, object received=b"",
                            bint readonly=False):
    """receive_buffer(recv_into, length, received=b"", readonly=False) -> ReceiveBuffer

    One out-of-band buffer of exactly `length` bytes, in memory the returned
    object owns: `received` (a bytes-like object: what already arrived)
    followed by the rest, read with ``recv_into(memoryview) -> int`` (a
    socket's). Its exports are writable unless `readonly`. The memory grows
    with the bytes that arrive, never allocated from `length` alone.

    Raises ValueError if `length` is negative or `received` longer, EOFError if
    recv_into returns 0 first, ValueError if it reports more bytes than it was
    offered or a negative count; any exception of recv_into propagates, and
    nothing is kept.
    """
    cdef Py_buffer view
    cdef Py_ssize_t filled, size, n
    cdef ReceiveBuffer buffer
    cdef _ReceiveWindow window
    if length < 0:
        raise ValueError("negative length")
    buffer = _new_receive_buffer(readonly)
    buffer.claimed = length
    acquire_readable(received, &view)
    try:
        filled = view.len
        if filled > length:
            raise ValueError("received more bytes than the buffer length")
        size = 2 * filled if 2 * filled > _FIRST_PAYLOAD_BLOCK else _FIRST_PAYLOAD_BLOCK
        if size > length:
            size = length
        if fw_block_new(&buffer.block, size, length) < 0:
            raise MemoryError()
        memcpy(buffer.block.data, view.buf, filled)
    finally:
        release_view(&view)
    size = buffer.block.capacity if buffer.block.capacity < length else length
    while filled < length:
        if filled == size:
            size = 2 * size if 2 * size < length else length
            if fw_block_grow(&buffer.block, size) < 0:
                raise MemoryError()
            size = buffer.block.capacity if buffer.block.capacity < length else length
        window = _ReceiveWindow.__new__(_ReceiveWindow)
        window.data = buffer.block.data + filled
        window.size = size - filled
        window.itemsize = 1
        window_view = memoryview(window)
        try:
            got = recv_into(window_view)
        finally:
            try:
                window_view.release()
            except BufferError:  # recv_into exported from it and kept that
                pass
            if window.close():
                _abandon_receive_block(window, buffer, size)
        n = got  # after the window closed: a hostile __index__ finds it refusing exports
        if n == 0:
            raise EOFError(EOF_IN_MESSAGE)
        if n < 0 or n > size - filled:
            raise ValueError("recv_into reported more bytes than the buffer holds")
        filled += n
    fw_block_trim(&buffer.block, length)
    buffer.length = length
    return buffer


def _receive_buffer_strategy(strategy=None):
    """The allocation strategy of large receive blocks (blocks.h's FW_ALLOC_*),
    set if `strategy` is given; for measuring the choice, not for users."""
    global fw_alloc_strategy
    if strategy is not None:
        if not 0 <= strategy < FW_ALLOC_COUNT:
            raise ValueError(f"strategy must be in range({FW_ALLOC_COUNT})")
        fw_alloc_strategy = strategy
    return fw_alloc_strategy
