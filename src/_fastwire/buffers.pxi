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
    FW_ALLOC_COUNT, fw_alloc_strategy, fw_block_grow, fw_block_new, fw_block_release,
    fw_block_trim, fw_pool_configure, fw_pool_init, fw_pool_take,
)

cimport cython
from pickle import PickleBuffer as _PickleBuffer

fw_pool_init()

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
        fw_block_release(&self.block)  # to the pool if large: its pages are already in

    def __getbuffer__(self, Py_buffer* buffer, int flags):
        if (flags & PyBUF_WRITABLE) and self.read_only:
            raise BufferError("the received buffer is read-only")
        with cython.critical_section(self):
            export_vector(buffer, self, self.start if self.base is not None else
                          self.block.data if self.block.data != NULL else _empty_block,
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


cdef int _take_into_block(ReceiveBuffer buffer, Py_ssize_t filled, const char* head,
                          Py_ssize_t n) except -1:
    """Copy the `n` bytes at `head` into `buffer`'s block at `filled` (its
    bytes so far), making or growing the block for them first: to about
    twice what has arrived, within `buffer.claimed`, from a pooled block if
    one fits."""
    cdef Py_ssize_t arrived = filled + n
    cdef Py_ssize_t size = 2 * arrived if 2 * arrived > _FIRST_PAYLOAD_BLOCK else _FIRST_PAYLOAD_BLOCK
    if size > buffer.claimed:
        size = buffer.claimed
    if buffer.block.data == NULL:
        if fw_pool_take(&buffer.block, buffer.claimed):
            if fw_block_grow(&buffer.block, size) < 0:
                raise MemoryError()
        elif fw_block_new(&buffer.block, size, buffer.claimed) < 0:
            raise MemoryError()
    elif buffer.block.capacity < arrived and fw_block_grow(&buffer.block, size) < 0:
        raise MemoryError()
    if n:
        memcpy(buffer.block.data + filled, head, n)
    return 0


cdef int _receive_into_block(ReceiveBuffer buffer, object recv_into, Py_ssize_t filled,
                             Py_ssize_t end) except -1:
    """Fill bytes [filled, end) of `buffer`'s block (made by _take_into_block)
    with ``recv_into(memoryview) -> int``, growing it by doubling as they
    arrive, never past `end`."""
    cdef Py_ssize_t size, n
    cdef _ReceiveWindow window
    size = buffer.block.capacity if buffer.block.capacity < end else end
    while filled < end:
        if filled == size:
            size = 2 * size if 2 * size < end else end
            if fw_block_grow(&buffer.block, size) < 0:
                raise MemoryError()
            size = buffer.block.capacity if buffer.block.capacity < end else end
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
    return 0


cdef int _finish_block(ReceiveBuffer buffer, Py_ssize_t length) noexcept:
    """`buffer`'s `length` bytes have all arrived: give back the rest of the
    block and export them from now on."""
    fw_block_trim(&buffer.block, length)
    buffer.length = length
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
    cdef Py_ssize_t filled
    cdef ReceiveBuffer buffer
    if length < 0:
        raise ValueError("negative length")
    buffer = _new_receive_buffer(readonly)
    buffer.claimed = length
    acquire_readable(received, &view)
    try:
        filled = view.len
        if filled > length:
            raise ValueError("received more bytes than the buffer length")
        _take_into_block(buffer, 0, <const char*>view.buf, filled)
    finally:
        release_view(&view)
    _receive_into_block(buffer, recv_into, filled, length)
    _finish_block(buffer, length)
    return buffer


@cython.final
cdef class MessageBuffers:
    """The out-of-band buffers of one message, received one after the other
    into one block (so a message of many small buffers costs one allocation,
    from the pool when one fits, instead of one per buffer), then handed out
    as ReceiveBuffers that each export their part of it. The block lives as
    long as any of them; nothing points into it before finish(), so it may
    move while it grows."""

    cdef ReceiveBuffer owner
    cdef Py_ssize_t filled

    def __init__(self):
        raise TypeError("MessageBuffers objects are made by the connection")

    cdef int take(self, object received) except -1:
        """Append the bytes-like `received` (bytes that already arrived)."""
        cdef Py_buffer view
        acquire_readable(received, &view)
        try:
            self.take_bytes(<const char*>view.buf, view.len)
        finally:
            release_view(&view)
        return 0

    cdef int take_bytes(self, const char* data, Py_ssize_t n) except -1:
        """Append the `n` bytes at `data`."""
        if self.filled + n > self.owner.claimed:
            raise ValueError("received more bytes than the buffers' total")
        _take_into_block(self.owner, self.filled, data, n)
        self.filled += n
        return 0

    cdef char* room(self, Py_ssize_t* available) except NULL:
        """Where the next bytes go, for a caller that reads them straight
        into place (a system call, nothing that runs Python): the address
        after the bytes so far, with *available set to the room there, at
        least one byte while any is missing. The block grows here, as in
        receive(): doubling with what arrived, never past the total. The
        address holds until the next call on this object."""
        cdef ReceiveBuffer owner = self.owner
        cdef Py_ssize_t size
        if owner.block.data == NULL:
            _take_into_block(owner, self.filled, NULL, 0)
        elif owner.block.capacity <= self.filled < owner.claimed:
            size = 2 * self.filled if 2 * self.filled < owner.claimed else owner.claimed
            if fw_block_grow(&owner.block, size) < 0:
                raise MemoryError()
        size = owner.block.capacity if owner.block.capacity < owner.claimed else owner.claimed
        available[0] = size - self.filled
        return owner.block.data + self.filled

    cdef void advance(self, Py_ssize_t n) noexcept:
        """Count `n` bytes written at room() (at most what it offered)."""
        self.filled += n

    cdef int receive(self, object recv_into, Py_ssize_t n) except -1:
        """Append `n` bytes read with ``recv_into(memoryview) -> int``."""
        if self.filled + n > self.owner.claimed:
            raise ValueError("received more bytes than the buffers' total")
        if self.owner.block.data == NULL:
            _take_into_block(self.owner, self.filled, NULL, 0)
        _receive_into_block(self.owner, recv_into, self.filled, self.filled + n)
        self.filled += n
        return 0

    cdef list finish(self, object sizes, object readonly):
        """The buffers, one per size of `sizes` (whose total is what arrived),
        each read-only where `readonly` says: a PickleBuffer of a ReceiveBuffer,
        as the standard library's loads(buffers=) hands back what the sender's
        buffer_callback got. A bare buffer received can so be sent on again,
        out of band too (a memoryview cannot be pickled)."""
        cdef ReceiveBuffer owner = self.owner
        cdef ReceiveBuffer part
        cdef Py_ssize_t i, n = len(sizes), offset = 0, size
        cdef list parts = [None] * n
        cdef char* base
        if self.filled != owner.claimed:
            raise ValueError("the buffers' total has not arrived")
        _finish_block(owner, self.filled)
        base = owner.block.data if owner.block.data != NULL else _empty_block
        for i in range(n):
            size = sizes[i]
            part = _new_receive_buffer(readonly[i])
            part.base = owner
            part.start = base + offset
            part.length = size
            offset += size
            parts[i] = _PickleBuffer(part)
        return parts


cdef MessageBuffers message_buffers(Py_ssize_t total):
    """Where the out-of-band buffers of one message, `total` bytes in all (a
    claim, bounded by the caller: nothing is allocated from it), are received."""
    cdef MessageBuffers buffers = MessageBuffers.__new__(MessageBuffers)
    if total < 0:
        raise ValueError("negative length")
    buffers.owner = _new_receive_buffer(False)
    buffers.owner.claimed = total
    return buffers


def _receive_buffer_strategy(strategy=None):
    """The allocation strategy of large receive blocks (blocks.h's FW_ALLOC_*),
    set if `strategy` is given; for measuring the choice, not for users."""
    global fw_alloc_strategy
    if strategy is not None:
        if not 0 <= strategy < FW_ALLOC_COUNT:
            raise ValueError(f"strategy must be in range({FW_ALLOC_COUNT})")
        fw_alloc_strategy = strategy
    return fw_alloc_strategy


def receive_buffer_pool(max_blocks=None, max_bytes=None):
    """receive_buffer_pool(max_blocks=None, max_bytes=None) -> dict

    The pool of large receive blocks (at least 1 MiB) whose ReceiveBuffer was
    dropped, kept so the next receive_buffer() fills memory already paged in
    instead of faulting in fresh pages. It holds at most `max_blocks` blocks
    (default 4, at most 64) and `max_bytes` bytes (default 256 MiB) and drops
    its oldest block to make room; 0 turns it off and empties it. Given
    values set the bounds for the whole process; returns the bounds and what
    the pool holds: {"max_blocks", "max_bytes", "blocks", "bytes"}.
    """
    cdef Py_ssize_t state[4]
    cdef Py_ssize_t blocks = -1 if max_blocks is None else max_blocks
    cdef Py_ssize_t nbytes = -1 if max_bytes is None else max_bytes
    if max_blocks is not None and blocks < 0 or max_bytes is not None and nbytes < 0:
        raise ValueError("the pool's bounds must be >= 0")
    fw_pool_configure(blocks, nbytes, state)
    return {"max_blocks": state[0], "max_bytes": state[1], "blocks": state[2], "bytes": state[3]}
