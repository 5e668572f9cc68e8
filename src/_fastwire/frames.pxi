# Frame scanning: length-prefixed frames found in place, in a caller's buffer or
# in a byte stream fed chunk by chunk, and the matching encoders.
#
# Two rules shape this part:
# - Nothing is allocated from a declared length. A header only says how long a
#   frame claims to be; buffers grow with the bytes that actually arrived (at
#   most doubling), and a claim above max_frame_size is refused at once.
# - A view handed out is never invalidated. The stream buffer (_Arena) counts
#   the views exported from it and is only moved or resized while that count is
#   zero; otherwise the unconsumed tail goes to a fresh arena.
#
# Small frames are copied into bytes, large ones are views (pyzmq's rule): a
# memoryview costs more than copying a few hundred bytes (~170 ns plus GC
# tracking, against ~20 ns for a 64-byte bytes object), and a view of a large
# frame saves a copy that costs far more than the view.

# Shared declarations this part uses.
# Its classes that other parts drive (FramePrefix, FrameScanner) are
# declared in src/fastwire/_fastwire.pxd.
# Uses nothing of the other parts.
from libc.stdint cimport int64_t, uint16_t, uint32_t, uint64_t
from libc.string cimport memcpy
from cpython.object cimport PyObject
from cpython.bytes cimport (
    PyBytes_AS_STRING, PyBytes_CheckExact, PyBytes_FromStringAndSize, PyBytes_GET_SIZE,
)
from cpython.buffer cimport PyBUF_SIMPLE, PyBUF_WRITABLE, PyBuffer_Release, PyObject_GetBuffer
from capi cimport Py_TPFLAGS_HEAPTYPE, c_bytes_data, c_bytes_from, c_type_has_feature, c_xdecref
from wire cimport (
    FW_HOST_LITTLE, acquire_readable, fw_bytes_forget_hash, fw_load_u16, fw_load_u32, fw_load_u64,
    fw_store_u16, fw_store_u32, fw_store_u64, release_view,
)
from framing cimport (
    HEADER_INCOMPLETE, HEADER_NEGATIVE, HEADER_OVERLONG, Partial, PREFIX_FIXED,
    PREFIX_MULTIPROCESSING, PREFIX_VARINT, PrefixSpec, fd_reader,
)

cimport cython
from libc.stdlib cimport malloc, realloc, free
from libc.string cimport memcmp, memmove
from libc.stdint cimport UINT64_MAX
from cpython.buffer cimport PyBUF_FORMAT, PyBUF_ND, PyBUF_STRIDES
from cpython.bytes cimport _PyBytes_Resize
from cpython.number cimport PyIndex_Check, PyNumber_AsSsize_t


DEFAULT_MAX_FRAME_SIZE = 128 * 1024 * 1024
DEFAULT_COPY_THRESHOLD = 64 * 1024
# What every receiver raises (as EOFError) when the peer closes inside a frame.
EOF_IN_MESSAGE = "the peer closed the connection in the middle of a message"

# Smallest arena and smallest read window offered to recv_into.
cdef Py_ssize_t _MIN_WINDOW = 64 * 1024
# An idle arena larger than this is given back rather than kept for reuse.
cdef Py_ssize_t _IDLE_ARENA_LIMIT = 1024 * 1024
cdef const char* _BYTE_FORMAT = "B"


cdef inline void export_vector(Py_buffer* buffer, object exporter, void* data, Py_ssize_t* count,
                               Py_ssize_t* itemsize, const char* format, bint readonly,
                               int flags) noexcept:
    """Describe `*count` items of `*itemsize` bytes at `data` as a one-dimensional
    C-contiguous export of `exporter`, for the exporter's __getbuffer__. Shape and
    strides point into the exporter, which outlives every export of it."""
    buffer.buf = data
    buffer.obj = exporter
    buffer.len = count[0] * itemsize[0]
    buffer.readonly = readonly
    buffer.itemsize = itemsize[0]
    buffer.format = <char*>format if (flags & PyBUF_FORMAT) else NULL
    buffer.ndim = 1
    buffer.shape = count if (flags & PyBUF_ND) else NULL
    buffer.strides = itemsize if (flags & PyBUF_STRIDES) == PyBUF_STRIDES else NULL
    buffer.suboffsets = NULL
    buffer.internal = NULL


class FrameError(ValueError):
    """A length prefix that cannot be honoured: negative, malformed (a varint
    longer than 64 bits) or not representable in the prefix format."""


class FrameTooLarge(FrameError):
    """A frame declares (or a payload has) a length above ``max_frame_size``."""


cdef inline uint64_t _load_width(const unsigned char* p, Py_ssize_t width, bint swap) noexcept nogil:
    if width == 1:
        return p[0]
    if width == 2:
        return fw_load_u16(<const char*>p, swap)
    if width == 4:
        return fw_load_u32(<const char*>p, swap)
    return fw_load_u64(<const char*>p, swap)


cdef inline void _store_width(char* p, uint64_t v, Py_ssize_t width, bint swap) noexcept nogil:
    if width == 1:
        p[0] = <char>v
    elif width == 2:
        fw_store_u16(p, <uint16_t>v, swap)
    elif width == 4:
        fw_store_u32(p, <uint32_t>v, swap)
    else:
        fw_store_u64(p, v, swap)


cdef inline Py_ssize_t decode_header(const PrefixSpec* spec, const unsigned char* p,
                                     Py_ssize_t avail, uint64_t* length) noexcept nogil:
    """Header size (> 0) with *length set, HEADER_INCOMPLETE, or a negative HEADER_* error."""
    cdef uint64_t v
    cdef Py_ssize_t i, n
    cdef unsigned char byte
    if spec.kind == PREFIX_FIXED:
        if avail < spec.width:
            return HEADER_INCOMPLETE
        v = _load_width(p, spec.width, spec.swap)
        if spec.is_signed and (v >> (8 * spec.width - 1)) & 1:
            return HEADER_NEGATIVE
        length[0] = v
        return spec.width
    if spec.kind == PREFIX_MULTIPROCESSING:
        if avail < 4:
            return HEADER_INCOMPLETE
        v = fw_load_u32(<const char*>p, FW_HOST_LITTLE)
        if v == 0xFFFFFFFFu:
            if avail < 12:
                return HEADER_INCOMPLETE
            length[0] = fw_load_u64(<const char*>(p + 4), FW_HOST_LITTLE)
            return 12
        if v & 0x80000000u:
            return HEADER_NEGATIVE
        length[0] = v
        return 4
    # LEB128: 7 bits a byte, low group first; the 10th byte may only hold bit 63.
    v = 0
    n = avail if avail < 10 else 10
    for i in range(n):
        byte = p[i]
        if i == 9 and byte > 1:
            return HEADER_OVERLONG
        v |= (<uint64_t>(byte & 0x7F)) << (7 * i)
        if not (byte & 0x80):
            length[0] = v
            return i + 1
    return HEADER_INCOMPLETE


cdef Py_ssize_t encode_header(const PrefixSpec* spec, char* out, uint64_t length) except -1:
    """Write the header for `length` into out (room for 12 bytes); its size."""
    cdef Py_ssize_t i = 0
    if length > spec.limit:
        raise FrameError(f"frame length {length} does not fit the length prefix")
    if spec.kind == PREFIX_FIXED:
        _store_width(out, length, spec.width, spec.swap)
        return spec.width
    if spec.kind == PREFIX_MULTIPROCESSING:
        # Byte-identical to multiprocessing.connection: '!i' up to 0x7fffffff.
        if length <= 0x7FFFFFFF:
            fw_store_u32(out, <uint32_t>length, FW_HOST_LITTLE)
            return 4
        fw_store_u32(out, 0xFFFFFFFFu, FW_HOST_LITTLE)
        fw_store_u64(out + 4, length, FW_HOST_LITTLE)
        return 12
    while length >= 0x80:
        out[i] = <char>((length & 0x7F) | 0x80)
        length >>= 7
        i += 1
    out[i] = <char>length
    return i + 1


cdef dict _NATIVE_WIDTHS = {
    "b": 1, "B": 1, "h": sizeof(short), "H": sizeof(short), "i": sizeof(int),
    "I": sizeof(int), "l": sizeof(long), "L": sizeof(long), "q": sizeof(long long),
    "Q": sizeof(long long), "n": sizeof(size_t), "N": sizeof(size_t),
}
cdef dict _STANDARD_WIDTHS = {
    "b": 1, "B": 1, "h": 2, "H": 2, "i": 4, "I": 4, "l": 4, "L": 4, "q": 8, "Q": 8,
}
cdef dict _PREFIX_CACHE = {}


cdef class FramePrefix:
    """A length-prefix format, parsed once.

    ``format`` is one struct integer format (``'>I'``, ``'<Q'``, ``'!H'``,
    ``'=h'``, ``'B'`` ...; native ``'@'`` sizes allowed), ``'multiprocessing'``
    (the ``multiprocessing.connection`` header: ``'!i'``, or ``-1`` followed by
    ``'!Q'`` for lengths above 2**31-1) or ``'varint'`` (unsigned LEB128, as in
    length-delimited protobuf streams). Raises ValueError for anything else.
    """

    def __init__(self, str format):
        cdef str order, code
        self.format = format
        self.spec.is_signed = False
        self.spec.swap = False
        if format == "multiprocessing":
            self.spec.kind = PREFIX_MULTIPROCESSING
            self.spec.limit = UINT64_MAX
            return
        if format == "varint":
            self.spec.kind = PREFIX_VARINT
            self.spec.limit = UINT64_MAX
            return
        if len(format) == 2 and format[0] in "@=<>!":
            order, code = format[0], format[1]
        elif len(format) == 1:
            order, code = "@", format
        else:
            order, code = "", ""
        widths = _NATIVE_WIDTHS if order == "@" else _STANDARD_WIDTHS
        if code not in widths:
            raise ValueError(
                f"unsupported length prefix {format!r}: use one struct integer format "
                "(e.g. '>I', '<Q', '!H'), 'multiprocessing' or 'varint'")
        self.spec.kind = PREFIX_FIXED
        self.spec.width = widths[code]
        self.spec.is_signed = code.islower()
        little = order == "<" or (order in "@=" and FW_HOST_LITTLE)
        self.spec.swap = bool(little) != bool(FW_HOST_LITTLE)
        bits = 8 * self.spec.width - (1 if self.spec.is_signed else 0)
        self.spec.limit = (1 << bits) - 1

    @property
    def max_length(self):
        """The largest payload length this prefix can express."""
        return self.spec.limit

    def header(self, length):
        """The header bytes announcing a payload of `length` bytes.

        Raises FrameError if the length is negative or does not fit the prefix.
        """
        cdef char out[12]
        if length < 0:
            raise FrameError(f"frame length {length} is negative")
        if length > self.spec.limit:
            raise FrameError(f"frame length {length} does not fit the length prefix {self.format!r}")
        n = encode_header(&self.spec, out, <uint64_t>length)
        return PyBytes_FromStringAndSize(out, n)

    def __repr__(self):
        return f"FramePrefix({self.format!r})"


cdef FramePrefix as_prefix(object prefix):
    if isinstance(prefix, FramePrefix):
        return <FramePrefix>prefix
    cached = _PREFIX_CACHE.get(prefix)
    if cached is None:
        if not isinstance(prefix, str):
            raise TypeError(f"length prefix must be a str or FramePrefix, not {type(prefix).__name__}")
        cached = FramePrefix(prefix)
        _PREFIX_CACHE[prefix] = cached
    return <FramePrefix>cached


cdef object header_error(const Partial* partial, uint64_t max_frame_size):
    if partial.error == HEADER_NEGATIVE:
        return FrameError("negative frame length in the length prefix")
    if partial.error == HEADER_OVERLONG:
        return FrameError("varint length prefix is longer than 64 bits")
    return FrameTooLarge(
        f"frame of {partial.error_length} bytes exceeds max_frame_size ({max_frame_size} bytes)")


cdef extern from *:
    """
    #if defined(__GNUC__) || defined(__clang__)
    #define fw_prefetch(p) __builtin_prefetch((p), 0, 3)
    #else
    #define fw_prefetch(p) ((void)0)
    #endif
    """
    # A hint to start loading a cache line into every cache level; it never faults.
    void fw_prefetch(const void* p) noexcept nogil

# How far ahead of the scan position the scan asks for bytes (see scan_spans).
cdef enum:
    SCAN_PREFETCH_DISTANCE = 512


cdef inline Py_ssize_t scan_spans(const PrefixSpec* spec, const unsigned char* base,
                                  Py_ssize_t pos, Py_ssize_t end, uint64_t max_frame_size,
                                  int64_t* offsets, int64_t* lengths, Py_ssize_t capacity,
                                  Py_ssize_t* count, Partial* partial) noexcept nogil:
    """The scan core: record the complete frames of base[pos:end], at most
    `capacity` of them, as payload offsets (from base) and lengths; return the
    position after the last one recorded, with *count set.

    The scan stops at an incomplete frame (partial.header_size and .length
    describe it once its header is complete) or at a bad header (partial.error
    set; the caller raises it when no frame came first). With neither set and
    *count == capacity, more frames may follow: call again from the returned
    position.
    """
    cdef Py_ssize_t header_size, n = 0
    cdef uint64_t length
    partial.header_size = 0
    partial.error = 0
    while n < capacity and pos < end:
        # Each header's address depends on the previous header's value, so the
        # CPU cannot run ahead; without the hint a scan of small frames waits on
        # a cache miss per frame (measured on 1M 64-byte frames: index_frames
        # 15 ms with it, 17 ms without; scan_frames 4% behind a loop that copied
        # each payload as it went, whose copy pulled in the next header, against
        # 6% without).
        if end - pos > SCAN_PREFETCH_DISTANCE:
            fw_prefetch(base + pos + SCAN_PREFETCH_DISTANCE)
        header_size = decode_header(spec, base + pos, end - pos, &length)
        if header_size == HEADER_INCOMPLETE:
            break
        if header_size < 0:
            partial.error = <int>header_size
            break
        if length > max_frame_size:
            partial.error = 1
            partial.error_length = length
            break
        if <uint64_t>(end - pos - header_size) < length:
            partial.header_size = header_size
            partial.length = length
            break
        offsets[n] = pos + header_size
        lengths[n] = <int64_t>length
        pos += header_size + <Py_ssize_t>length
        n += 1
    count[0] = n
    return pos


cdef object byte_view(object owner):
    """memoryview(owner) as one dimension of unsigned bytes, whatever the exporter's format.

    Format 'B' whatever the exporter says ('b', 'c', '<I' ...), so a frame
    compares equal to the bytes it holds, as a frame copied into bytes does.
    """
    view = memoryview(owner)
    if view.ndim != 1 or view.format != "B":
        view = view.cast("B")
    return view


cdef object single_exporter(object data):
    """`data`, or a memoryview of it whose every export is that same memory.

    A class may define __buffer__ (3.12+) in Python and hand out another
    buffer, of another size, each time it is asked. Frames are found in one
    export and handed out as slices of another, so those must agree: such an
    exporter (any heap type; builtins and C extensions export their own
    memory) is asked once, and the rest is taken from the view it gave.
    """
    if PyBytes_CheckExact(data) or not c_type_has_feature(type(data), Py_TPFLAGS_HEAPTYPE):
        return data
    return memoryview(data)


cdef inline object frame_object(const unsigned char* base, Py_ssize_t start, Py_ssize_t length,
                                Py_ssize_t copy_threshold, object view):
    """One payload as the scanners hand it out: a bytes copy below copy_threshold,
    else a slice of `view` (a byte_view whose byte 0 is base[0])."""
    if length < copy_threshold:
        return PyBytes_FromStringAndSize(<const char*>(base + start), length)
    return view[start:start + length]


# Frames the eager scan records before turning them into objects: enough to
# amortise a call of the core, small enough for the stack.
cdef enum:
    EAGER_SPANS = 256


cdef Py_ssize_t scan_buffer(const PrefixSpec* spec, const unsigned char* base, Py_ssize_t pos,
                            Py_ssize_t end, uint64_t max_frame_size, Py_ssize_t copy_threshold,
                            object owner, list out, Partial* partial) except -1:
    """Append the complete frames of base[pos:end] to out; the position after the last.

    Frames shorter than copy_threshold are copied into bytes; longer ones are
    slices of memoryview(owner), whose byte 0 is base[0]. A bad header stops the
    scan with partial.error set (the caller raises it when no frame came first).
    """
    cdef int64_t offsets[EAGER_SPANS]
    cdef int64_t lengths[EAGER_SPANS]
    cdef Py_ssize_t count, i
    cdef object view = None
    while True:
        pos = scan_spans(spec, base, pos, end, max_frame_size, offsets, lengths, EAGER_SPANS,
                         &count, partial)
        for i in range(count):
            if view is None and lengths[i] >= copy_threshold:
                view = byte_view(owner)
            out.append(frame_object(base, <Py_ssize_t>offsets[i], <Py_ssize_t>lengths[i],
                                    copy_threshold, view))
        if count < EAGER_SPANS:
            return pos


cdef uint64_t checked_limit(object max_frame_size) except? 0:
    if max_frame_size < 0:
        raise ValueError("max_frame_size must be >= 0")
    return <uint64_t>max_frame_size


def scan_frames(data, prefix=">I", *, max_frame_size=DEFAULT_MAX_FRAME_SIZE,
                Py_ssize_t copy_threshold=DEFAULT_COPY_THRESHOLD):
    """Find the complete frames in a bytes-like object without copying it.

    Returns ``(frames, consumed)``: the payloads of the complete frames at the
    start of `data`, in order, and the number of bytes they (with their
    headers) take; a trailing partial frame is left alone. Payloads shorter
    than `copy_threshold` are bytes copies; longer ones are memoryviews into
    `data`, which keep it alive (``copy_threshold=0``: every payload a view).

    Raises FrameTooLarge if the first unconsumed frame declares more than
    `max_frame_size` bytes, FrameError for a negative or malformed length
    (frames before a bad header are returned first; the next call raises),
    TypeError/BufferError if `data` is not a contiguous bytes-like object.
    """
    cdef FramePrefix fp = as_prefix(prefix)
    cdef uint64_t limit = checked_limit(max_frame_size)
    cdef Py_buffer view
    cdef Partial partial
    cdef list frames = []
    cdef Py_ssize_t consumed
    data = single_exporter(data)
    acquire_readable(data, &view)
    try:
        consumed = scan_buffer(&fp.spec, <const unsigned char*>view.buf, 0, view.len, limit,
                               copy_threshold, data, frames, &partial)
    finally:
        release_view(&view)
    if partial.error and not frames:
        raise header_error(&partial, limit)
    return frames, consumed


# --- the lazy frame index ----------------------------------------------------
#
# Making a Python object per frame costs far more than finding the frame: for
# a million 64-byte frames the scan is ~3% of scan_frames' time, the rest is
# allocating (and page-faulting in) a million objects. An index records only
# the (offset, length) of each payload in two C arrays (16 bytes a frame) and
# makes a frame object when one is asked for.

# First capacity of the span arrays when the scan cannot project one yet.
cdef Py_ssize_t _FIRST_SPAN_CAPACITY = 1024
# From this many bytes on, index_frames scans without the GIL.
cdef Py_ssize_t _NOGIL_SCAN_BYTES = 1024 * 1024
cdef const char* _INT64_FORMAT = "q"


# Not GC-tracked: it refers to no Python object.
@cython.final
@cython.no_gc
cdef class _Spans:
    """The payload (offset, length) pairs of an index: two malloc'd int64 arrays.

    Its own object, so that the offsets/lengths memoryviews keep the arrays
    alive without keeping the index (and its hold on the caller's buffer).
    """

    cdef int64_t* offsets       # from byte 0 of the indexed buffer
    cdef int64_t* lengths
    cdef Py_ssize_t count       # also each column's shape: fixed once the scan is done
    cdef Py_ssize_t capacity
    cdef Py_ssize_t stride

    def __cinit__(self):
        self.offsets = self.lengths = NULL
        self.count = self.capacity = 0
        self.stride = sizeof(int64_t)

    def __dealloc__(self):
        free(self.offsets)
        free(self.lengths)

    cdef int reserve(self, Py_ssize_t capacity) noexcept nogil:
        """Resize both arrays to `capacity` (>= count); 0, or -1 if out of memory
        (then `capacity` keeps its old value; the first `count` entries are kept either way)."""
        cdef int64_t* offsets
        cdef int64_t* lengths
        if capacity < 1:
            capacity = 1
        offsets = <int64_t*>realloc(self.offsets, capacity * sizeof(int64_t))
        if offsets == NULL:
            return -1
        self.offsets = offsets
        lengths = <int64_t*>realloc(self.lengths, capacity * sizeof(int64_t))
        if lengths == NULL:
            return -1
        self.lengths = lengths
        self.capacity = capacity
        return 0

    cdef Py_ssize_t next_capacity(self, Py_ssize_t scanned, Py_ssize_t end) noexcept nogil:
        """Room for the frames of a whole buffer of `end` bytes, projected from the
        frames found in its first `scanned` bytes, so that a regular stream is
        indexed with one allocation and no copying. The projection follows bytes
        that are present (never a declared length) and stops at two bytes of
        span per buffer byte; past that, or when it falls short, the arrays double."""
        cdef Py_ssize_t doubled = 2 * self.capacity if self.capacity else _FIRST_SPAN_CAPACITY
        cdef Py_ssize_t projected
        if scanned <= 0 or self.count == 0:
            return doubled
        projected = <Py_ssize_t>(<double>self.count * end / scanned) + self.count // 16 + 64
        if projected > doubled and projected <= end // 8:
            return projected
        return doubled

    cdef int scan(self, const PrefixSpec* spec, const unsigned char* base, Py_ssize_t end,
                  uint64_t max_frame_size, Partial* partial, Py_ssize_t* consumed) noexcept nogil:
        """Record every complete frame of base[0:end]; 0, or -1 if out of memory."""
        cdef Py_ssize_t pos = 0, added
        while True:
            if self.count == self.capacity:
                if self.reserve(self.next_capacity(pos, end)):
                    return -1
            pos = scan_spans(spec, base, pos, end, max_frame_size, self.offsets + self.count,
                             self.lengths + self.count, self.capacity - self.count, &added, partial)
            self.count += added
            if self.count < self.capacity:
                consumed[0] = pos
                return 0


# Not GC-tracked: it refers only to a _Spans, which refers to nothing (see
# _ReadOnlyArena for why an exporter must not be cleared before its views).
@cython.final
@cython.no_gc
cdef class _SpanColumn:
    """One array of a _Spans, exported read-only as int64 (format 'q')."""

    cdef _Spans spans
    cdef bint is_lengths

    def __cinit__(self, _Spans spans, bint is_lengths):
        self.spans = spans
        self.is_lengths = is_lengths

    def __getbuffer__(self, Py_buffer* buffer, int flags):
        if flags & PyBUF_WRITABLE:
            raise BufferError("FrameIndex offsets and lengths are read-only")
        # spans.stride is sizeof(int64_t): the item size and the stride.
        export_vector(buffer, self, self.spans.lengths if self.is_lengths else self.spans.offsets,
                      &self.spans.count, &self.spans.stride, _INT64_FORMAT, True, flags)


@cython.final
@cython.no_gc_clear  # __dealloc__ releases the buffer; a cycle is broken through another member
cdef class FrameIndex:
    """The complete frames of a buffer, found by :func:`index_frames`: a
    read-only sequence whose items are made on access.

    The index holds the caller's buffer (a buffer export, as a memoryview
    holds one: a bytearray cannot be resized while the index is alive) and
    one (offset, length) pair per frame, no Python object. ``index[i]``
    (negative ``i`` counts from the end) and iteration give a payload as
    :func:`scan_frames` with the same `copy_threshold` gives it: a memoryview
    into the buffer, or a bytes copy if it is shorter than `copy_threshold`.
    ``index[i:j:k]`` is a new FrameIndex over the same buffer.
    :meth:`release` (or the end of a ``with`` block) lets go of the buffer
    early; any later use raises ValueError. IndexError for a position out of
    range, TypeError for a key that is neither an integer nor a slice.
    """

    cdef Py_buffer _buffer      # held from construction to release(): the bytes the spans point into
    cdef bint _holding
    cdef object _owner          # the caller's object; _buffer.obj may be a view of it (single_exporter)
    cdef _Spans _spans
    cdef Py_ssize_t _copy_threshold
    cdef object _view           # byte_view of the buffer's owner, made for the first view handed out

    def __cinit__(self):
        self._holding = False

    def __init__(self, *args, **kwargs):
        raise TypeError("FrameIndex objects are made by index_frames()")

    def __dealloc__(self):
        self._let_go()

    cdef void _let_go(self) noexcept:
        if self._holding:
            self._holding = False
            PyBuffer_Release(&self._buffer)

    cdef int _hold(self, object owner, object exporter) except -1:
        # A real export even for bytes: it keeps the owner alive and unresizable.
        # Slices re-export `exporter` (see single_exporter), so they index the
        # very bytes this index was built on.
        PyObject_GetBuffer(exporter, &self._buffer, PyBUF_SIMPLE)
        self._holding = True
        self._owner = owner
        return 0

    cdef Py_ssize_t _fill(self, const PrefixSpec* spec, uint64_t max_frame_size,
                          Partial* partial) except -1:
        """Index the held buffer; the bytes consumed. A large buffer is scanned
        without the GIL: the held export keeps it in place."""
        cdef _Spans spans = _Spans()
        cdef const unsigned char* base = <const unsigned char*>self._buffer.buf
        cdef Py_ssize_t end = self._buffer.len, consumed = 0
        cdef int failed
        if end >= _NOGIL_SCAN_BYTES:
            with nogil:
                failed = spans.scan(spec, base, end, max_frame_size, partial, &consumed)
        else:
            failed = spans.scan(spec, base, end, max_frame_size, partial, &consumed)
        if failed:
            raise MemoryError()
        if spans.capacity > spans.count + spans.count // 8 + 64:
            spans.reserve(spans.count)  # give the slack back; a failed shrink keeps the block
        self._spans = spans
        return consumed

    cdef int _check_held(self) except -1:
        if not self._holding:
            raise ValueError("operation forbidden on a released FrameIndex")
        return 0

    cdef object _frame(self, Py_ssize_t i):
        """Frame i (0 <= i < count) as an object; the buffer must be held."""
        cdef Py_ssize_t length = <Py_ssize_t>self._spans.lengths[i]
        if self._view is None and length >= self._copy_threshold:
            self._view = byte_view(self._buffer.obj)
        return frame_object(<const unsigned char*>self._buffer.buf, <Py_ssize_t>self._spans.offsets[i],
                            length, self._copy_threshold, self._view)

    cdef bint _frame_equals(self, Py_ssize_t i, object value) except -1:
        """frame i == value, as list.__contains__ compares (the buffer must be held)."""
        cdef Py_ssize_t length
        if PyBytes_CheckExact(value):
            # A frame is bytes or a format-'B' view: either equals bytes with the same content.
            length = <Py_ssize_t>self._spans.lengths[i]
            return length == PyBytes_GET_SIZE(value) and memcmp(
                PyBytes_AS_STRING(value), <const char*>self._buffer.buf + self._spans.offsets[i],
                length) == 0
        return self._frame(i) == value

    def __len__(self):
        self._check_held()
        return self._spans.count

    def __getitem__(self, key):
        cdef Py_ssize_t i, start, stop, step
        self._check_held()
        if isinstance(key, slice):
            start, stop, step = key.indices(self._spans.count)
            return self._select(start, step, len(range(start, stop, step)))
        if not PyIndex_Check(key):
            raise TypeError(f"FrameIndex indices must be integers or slices, not {type(key).__name__}")
        i = PyNumber_AsSsize_t(key, IndexError)
        if i < 0:
            i += self._spans.count
        if i < 0 or i >= self._spans.count:
            raise IndexError("FrameIndex index out of range")
        return self._frame(i)

    cdef FrameIndex _select(self, Py_ssize_t start, Py_ssize_t step, Py_ssize_t n):
        cdef FrameIndex part = FrameIndex.__new__(FrameIndex)
        cdef _Spans spans = _Spans()
        cdef Py_ssize_t j
        if spans.reserve(n):
            raise MemoryError()
        for j in range(n):
            spans.offsets[j] = self._spans.offsets[start + j * step]
            spans.lengths[j] = self._spans.lengths[start + j * step]
        spans.count = n
        part._hold(self._owner, self._buffer.obj)
        part._spans = spans
        part._copy_threshold = self._copy_threshold
        part._view = self._view
        return part

    def __iter__(self):
        self._check_held()
        return _FrameIndexIterator(self, 0, 1)

    def __reversed__(self):
        self._check_held()
        return _FrameIndexIterator(self, self._spans.count - 1, -1)

    cdef Py_ssize_t _find(self, object value, Py_ssize_t first, Py_ssize_t last) except -2:
        """Position of the first frame in [first, last) equal to value, or -1."""
        cdef Py_ssize_t i
        for i in range(first, last):
            self._check_held()  # each time: an __eq__ may have released the index
            if self._frame_equals(i, value):
                return i
        return -1

    def __contains__(self, value):
        self._check_held()
        return self._find(value, 0, self._spans.count) >= 0

    def index(self, value, start=0, stop=None):
        """Position of the first frame equal to `value` in ``[start:stop]``
        (list.index's arguments); ValueError if there is none."""
        cdef Py_ssize_t found
        self._check_held()
        first, last, _ = slice(start, stop).indices(self._spans.count)
        found = self._find(value, first, last)
        if found < 0:
            raise ValueError("value is not in the FrameIndex")
        return found

    def count(self, value):
        """How many frames equal `value`."""
        cdef Py_ssize_t found = 0, i = 0
        self._check_held()
        while True:
            i = self._find(value, i, self._spans.count)
            if i < 0:
                return found
            found += 1
            i += 1

    @property
    def offsets(self):
        """Where each payload starts in the buffer: a read-only memoryview of
        int64 (format 'q'), ready for ``numpy.frombuffer``. It keeps the span
        arrays alive, not the buffer."""
        self._check_held()
        return memoryview(_SpanColumn(self._spans, False))

    @property
    def lengths(self):
        """Each payload's length: a read-only memoryview of int64 (format 'q')."""
        self._check_held()
        return memoryview(_SpanColumn(self._spans, True))

    @property
    def obj(self):
        """The object whose buffer the index holds."""
        self._check_held()
        return self._owner

    @property
    def copy_threshold(self):
        """Frames shorter than this are made as bytes copies, the others as memoryviews."""
        return self._copy_threshold

    def release(self):
        """Let go of the buffer now; views handed out keep their own hold on it.

        Later use of the index raises ValueError; releasing again does nothing.
        """
        self._view = None
        self._let_go()
        self._owner = None

    def __enter__(self):
        self._check_held()
        return self

    def __exit__(self, *exc_info):
        self.release()

    def __repr__(self):
        if not self._holding:
            return "<released FrameIndex>"
        return f"<FrameIndex of {self._spans.count} frames in {type(self._owner).__name__}>"


@cython.final
cdef class _FrameIndexIterator:
    cdef FrameIndex _index      # None once exhausted
    cdef Py_ssize_t _next
    cdef Py_ssize_t _step

    def __cinit__(self, FrameIndex index, Py_ssize_t first, Py_ssize_t step):
        self._index = index
        self._next = first
        self._step = step

    def __iter__(self):
        return self

    def __next__(self):
        cdef FrameIndex index = self._index
        cdef Py_ssize_t i = self._next
        if index is None:
            raise StopIteration
        index._check_held()
        if i < 0 or i >= index._spans.count:
            self._index = None
            raise StopIteration
        self._next = i + self._step
        return index._frame(i)


def index_frames(data, prefix=">I", *, max_frame_size=DEFAULT_MAX_FRAME_SIZE,
                 Py_ssize_t copy_threshold=0):
    """Find the complete frames in a bytes-like object, and make none of them yet.

    Returns ``(index, consumed)`` with the contract of :func:`scan_frames`
    (complete frames only, a trailing partial frame left alone, `consumed` the
    bytes they take with their headers), but `index` is a :class:`FrameIndex`:
    it holds `data`'s buffer and one (offset, length) pair per frame, and makes
    a frame when one is accessed. With the default ``copy_threshold=0`` every
    frame is a memoryview into `data` (zero-copy); frames shorter than a
    positive `copy_threshold` are bytes copies, exactly as scan_frames makes
    them. Large buffers are scanned without holding the GIL.

    Raises what scan_frames raises for the same arguments: FrameTooLarge if
    the first frame declares more than `max_frame_size` bytes, FrameError for
    a negative or malformed length (frames before a bad header are indexed
    first; the next call raises), ValueError/TypeError for a bad `prefix` or
    `max_frame_size`, TypeError/BufferError if `data` is not a contiguous
    bytes-like object.
    """
    cdef FramePrefix fp = as_prefix(prefix)
    cdef uint64_t limit = checked_limit(max_frame_size)
    cdef FrameIndex index = FrameIndex.__new__(FrameIndex)
    cdef Partial partial
    cdef Py_ssize_t consumed
    index._hold(data, single_exporter(data))
    index._copy_threshold = copy_threshold
    consumed = index._fill(&fp.spec, limit, &partial)
    if partial.error and index._spans.count == 0:
        raise header_error(&partial, limit)
    return index, consumed


def frame_buffers(payloads, prefix=">I"):
    """Interleave a header before each payload: ``[h0, p0, h1, p1, ...]``.

    The list is ready for ``socket.sendmsg`` (scatter/gather, so payloads are
    never concatenated). Raises FrameError if a payload does not fit the prefix.
    """
    cdef FramePrefix fp = as_prefix(prefix)
    cdef list out = []
    cdef char header[12]
    cdef Py_buffer view
    cdef Py_ssize_t n
    for payload in payloads:
        acquire_readable(payload, &view)
        n = view.len
        release_view(&view)
        out.append(PyBytes_FromStringAndSize(header, encode_header(&fp.spec, header, <uint64_t>n)))
        out.append(payload)
    return out


def encode_frame(payload, prefix=">I"):
    """One frame as bytes: the header for ``len(payload)`` followed by the payload.

    Raises FrameError if the payload does not fit the prefix.
    """
    cdef FramePrefix fp = as_prefix(prefix)
    cdef char header[12]
    cdef Py_buffer view
    cdef Py_ssize_t header_size
    acquire_readable(payload, &view)
    try:
        header_size = encode_header(&fp.spec, header, <uint64_t>view.len)
        out = PyBytes_FromStringAndSize(NULL, header_size + view.len)
        memcpy(PyBytes_AS_STRING(out), header, header_size)
        memcpy(PyBytes_AS_STRING(out) + header_size, view.buf, view.len)
    finally:
        release_view(&view)
    return out


cdef class _Arena:
    """A malloc'd block exported through the buffer protocol.

    It counts its exports, and is only moved or resized while none exist:
    that is what keeps every memoryview handed out valid.
    """

    def __cinit__(self, Py_ssize_t size):
        self.data = <char*>malloc(size if size > 0 else 1)
        if self.data == NULL:
            raise MemoryError()
        self.size = size
        self.itemsize = 1

    def __dealloc__(self):
        free(self.data)

    cdef int resize(self, Py_ssize_t size) except -1:
        cdef char* data
        if self.exports:
            raise BufferError("fastwire internal error: resizing an exported arena")
        data = <char*>realloc(self.data, size if size > 0 else 1)
        if data == NULL:
            raise MemoryError()
        self.data = data
        self.size = size
        return 0

    def __getbuffer__(self, Py_buffer* buffer, int flags):
        export_vector(buffer, self, self.data, &self.size, &self.itemsize, _BYTE_FORMAT, False, flags)
        self.exports += 1

    def __releasebuffer__(self, Py_buffer* buffer):
        self.exports -= 1


cdef class FrameScanner:
    """Incremental frame scanner for a byte stream.

    Two ways to give it bytes: ``feed(chunk)`` with any bytes-like chunk, or
    ``get_buffer()`` + ``buffer_updated(n)`` (the ``asyncio.BufferedProtocol``
    pair) to let ``socket.recv_into`` write straight into the scanner's buffer.
    Both return the list of payloads completed so far (bytes below
    `copy_threshold`, read-only memoryviews above it). Headers may be split at
    any byte. The partial tail is kept without quadratic copying: the buffer
    grows geometrically with the bytes received, never from a declared length.

    Raises FrameTooLarge as soon as a header declares more than
    `max_frame_size` bytes, FrameError for a negative or malformed length; after
    either the scanner is broken and every later call raises the same error
    (frames completed before the bad header are returned first).
    """

    # State and C-level methods are declared in src/fastwire/_fastwire.pxd.

    def __init__(self, prefix=">I", *, max_frame_size=DEFAULT_MAX_FRAME_SIZE,
                 Py_ssize_t copy_threshold=DEFAULT_COPY_THRESHOLD):
        if self._busy:
            raise RuntimeError("FrameScanner.__init__() called while the scanner is in use")
        self._prefix = as_prefix(prefix)
        self._max_frame_size = checked_limit(max_frame_size)
        self._copy_threshold = copy_threshold
        self._arena = None
        self._start = self._end = 0
        self._partial.header_size = 0
        self._error = None
        self._window_arena = None

    @property
    def prefix(self):
        """The FramePrefix this scanner decodes."""
        return self._prefix

    @property
    def max_frame_size(self):
        """The longest payload accepted; may be changed between frames (e.g. kept
        small during an authentication handshake)."""
        return self._max_frame_size

    @max_frame_size.setter
    def max_frame_size(self, value):
        self._max_frame_size = checked_limit(value)

    @property
    def pending(self):
        """Bytes buffered that belong to a frame not complete yet."""
        return self.buffered()

    @property
    def partial_frame_size(self):
        """Declared payload length of the incomplete frame, or None while its header is incomplete."""
        if self._start < self._end and self._partial.header_size:
            return self._partial.length
        return None

    @cython.final
    cdef Py_ssize_t buffered(self) noexcept:
        """Bytes buffered that belong to a frame not complete yet."""
        return self._end - self._start

    @cython.final
    cdef uint64_t incomplete_length(self) noexcept:
        """The declared payload length of the frame at the scan position once
        its header is complete (partial_frame_size), else 0."""
        if self._start < self._end and self._partial.header_size:
            return self._partial.length
        return 0

    @cython.final
    cdef object recv_with(self, fd_reader read, const int* fdp):
        """recv_from() through a C read primitive: one `read(fdp, buf, n)`
        straight into the scanner's buffer (the connection passes sockio.h's
        descriptor read, which loads *fdp right before the system call). The
        frames completed, or None at end of stream."""
        cdef Py_ssize_t n
        self._claim()
        try:
            self._open_window(-1)
            n = read(fdp, self._arena.data + self._end, self._arena.size - self._end)
            if n == 0:
                return None
            self._end += n
            return self._scan()
        finally:
            self._busy = False

    @cython.final
    cdef Py_ssize_t raw_bytes(self, const char** data) except -1:
        """The bytes buffered and not yet handed out as frames (*data points
        at them until the scanner's next call), for a caller that knows what
        they hold better than the headers say: the connection, laying out the
        frames an out-of-band manifest announced. Raises the scanner's error if
        a bad header stopped it there."""
        if self._busy:
            raise RuntimeError("FrameScanner re-entered while one of its calls is running")
        self._check()
        data[0] = self._arena.data + self._start if self._arena is not None else NULL
        return self._end - self._start

    @cython.final
    cdef list skip_raw(self, Py_ssize_t n):
        """Drop the first `n` (<= raw_bytes()) of those bytes, which the caller
        took itself, and scan on from the byte after them: the frames that
        completes."""
        self._claim()
        try:
            self._start += n
            return self._scan()
        finally:
            self._busy = False

    cdef int _ensure_space(self, Py_ssize_t free_bytes) except -1:
        """Make room for at least free_bytes after _end, moving only unexported memory."""
        cdef Py_ssize_t tail = self._end - self._start
        cdef Py_ssize_t wanted = tail + free_bytes
        cdef _Arena fresh
        self._window_arena = None  # this may move the bytes a window described
        if wanted < _MIN_WINDOW:
            wanted = _MIN_WINDOW
        if self._arena is None:
            self._arena = _Arena(wanted)
            return 0
        if tail == 0 and self._arena.exports == 0:
            self._start = self._end = 0
            if self._arena.size > _IDLE_ARENA_LIMIT and wanted <= _IDLE_ARENA_LIMIT:
                self._arena.resize(wanted)  # give an idle giant back
        if self._arena.size - self._end >= free_bytes:
            return 0
        if self._arena.exports == 0:
            if self._start:
                memmove(self._arena.data, self._arena.data + self._start, tail)
                self._start, self._end = 0, tail
            if self._arena.size < wanted:
                # Geometric growth; realloc of a large block is a page remap, not a copy.
                if wanted < self._arena.size + self._arena.size // 2:
                    wanted = self._arena.size + self._arena.size // 2
                self._arena.resize(wanted)
            return 0
        fresh = _Arena(wanted)
        memcpy(fresh.data, self._arena.data + self._start, tail)
        self._arena = fresh
        self._start, self._end = 0, tail
        return 0

    cdef list _scan(self):
        cdef list frames = []
        self._start = scan_buffer(&self._prefix.spec, <const unsigned char*>self._arena.data,
                                  self._start, self._end, self._max_frame_size,
                                  self._copy_threshold, _ReadOnlyArena(self._arena), frames,
                                  &self._partial)
        self._settle(frames)
        return frames

    cdef int _settle(self, list frames) except -1:
        if self._partial.error:
            self._error = header_error(&self._partial, self._max_frame_size)
            if not frames:
                raise self._error
        return 0

    cdef int _check(self) except -1:
        if self._error is not None:
            raise self._error
        return 0

    cdef int _claim(self) except -1:
        """Start a call: refuse re-entry, then refuse a broken scanner."""
        if self._busy:
            raise RuntimeError("FrameScanner re-entered while one of its calls is running")
        self._check()
        self._busy = True
        return 0

    def feed(self, data):
        """Take the next chunk of the stream (any bytes-like); the frames it completed."""
        self._claim()
        try:
            return self._feed(data)
        finally:
            self._busy = False

    cdef list _feed(self, object data):
        cdef Py_buffer view
        cdef list frames
        cdef Py_ssize_t pos, leftover
        acquire_readable(data, &view)
        try:
            if self._start == self._end and PyBytes_CheckExact(data):
                # Nothing buffered: scan the (immutable) chunk in place and keep only its tail.
                frames = []
                pos = scan_buffer(&self._prefix.spec, <const unsigned char*>view.buf, 0, view.len,
                                  self._max_frame_size, self._copy_threshold, data, frames,
                                  &self._partial)
                leftover = view.len - pos
                if leftover:
                    self._ensure_space(leftover)
                    memcpy(self._arena.data + self._end, <const char*>view.buf + pos, leftover)
                    self._end += leftover
                self._settle(frames)
                return frames
            self._ensure_space(view.len)
            memcpy(self._arena.data + self._end, view.buf, view.len)
            self._end += view.len
        finally:
            release_view(&view)
        return self._scan()

    def get_buffer(self, Py_ssize_t sizehint=-1):
        """A writable memoryview to receive the next bytes into (``sock.recv_into``).

        Report how many bytes were written with ``buffer_updated(n)`` before
        asking for another buffer. The window is at least `sizehint` bytes (64 KiB
        by default) and, for a frame whose length is known, up to the rest of
        that frame, but never more than the bytes already held: memory follows
        the bytes that arrive.
        """
        self._claim()
        try:
            return self._window(sizehint)
        finally:
            self._busy = False

    cdef object _window(self, Py_ssize_t sizehint):
        self._open_window(sizehint)
        self._window_arena, self._window_end = self._arena, self._end
        return memoryview(self._arena)[self._end:self._arena.size]

    cdef int _open_window(self, Py_ssize_t sizehint) except -1:
        """Make the room get_buffer() describes at _arena.data[_end:_arena.size]."""
        cdef Py_ssize_t tail, want, rest
        tail = self._end - self._start
        want = sizehint if sizehint > 0 else _MIN_WINDOW
        if tail and self._partial.header_size:
            rest = <Py_ssize_t>(self._partial.header_size + self._partial.length) - tail
            if rest > tail:
                rest = tail if tail > _MIN_WINDOW else _MIN_WINDOW
            if rest > want:
                want = rest
        return self._ensure_space(want)

    def buffer_updated(self, Py_ssize_t nbytes):
        """Account for `nbytes` written into the last ``get_buffer()``; the frames completed.

        Raises ValueError if nbytes is negative or larger than that buffer, or
        if the scanner was fed or handed a partial frame since get_buffer().
        """
        self._claim()
        try:
            return self._updated(nbytes)
        finally:
            self._busy = False

    cdef list _updated(self, Py_ssize_t nbytes):
        if self._arena is None or nbytes < 0 or nbytes > self._arena.size - self._end:
            raise ValueError("buffer_updated(): nbytes outside the buffer from get_buffer()")
        if self._arena is not self._window_arena or self._end != self._window_end:
            raise ValueError("buffer_updated(): the scanner changed since get_buffer()")
        self._end += nbytes
        self._window_end = self._end
        return self._scan()

    def recv_from(self, sock, int flags=0):
        """One ``sock.recv_into()`` straight into the scanner's buffer.

        Returns the frames it completed, or None at end of stream (the peer
        closed; ``pending`` tells whether that cut a frame). Exceptions of
        recv_into (TimeoutError, BlockingIOError with MSG_DONTWAIT ...) propagate
        with the scanner unchanged.
        """
        cdef Py_ssize_t n
        self._claim()
        try:
            window = self._window(-1)
            try:
                n = sock.recv_into(window, 0, flags) if flags else sock.recv_into(window)
            finally:
                window.release()
            if n == 0:
                return None
            return self._updated(n)
        finally:
            self._busy = False

    def take_partial(self):
        """Hand the incomplete frame over to the caller: ``(payload_length, received)``.

        `received` holds the payload bytes buffered so far (a read-only view);
        the caller reads the remaining ``payload_length - len(received)`` bytes
        itself (e.g. straight into the final object) and the scanner continues
        with the byte after that frame. Raises ValueError if no frame header
        is complete.
        """
        cdef Py_ssize_t body
        if self._busy:
            raise RuntimeError("FrameScanner re-entered while one of its calls is running")
        self._check()
        if not (self._start < self._end and self._partial.header_size):
            raise ValueError("take_partial(): no incomplete frame with a complete header")
        body = self._start + self._partial.header_size
        received = memoryview(_ReadOnlyArena(self._arena))[body:self._end]
        length = self._partial.length
        self._start = self._end
        self._partial.header_size = 0
        return length, received


# Not GC-tracked: it refers only to an _Arena, which refers to nothing, so it
# can never be part of a cycle. Tracked, the collector could tp_clear it (set
# `arena` to None) before a memoryview in the same garbage released its
# buffer, and __releasebuffer__ would then write through None (fuzz finding N1).
@cython.no_gc
cdef class _ReadOnlyArena:
    """Read-only exporter of an _Arena, so frame views cannot be written to."""

    cdef _Arena arena

    def __cinit__(self, _Arena arena):
        self.arena = arena

    def __getbuffer__(self, Py_buffer* buffer, int flags):
        if flags & PyBUF_WRITABLE:
            raise BufferError("frame buffers are read-only")
        export_vector(buffer, self, self.arena.data, &self.arena.size, &self.arena.itemsize,
                      _BYTE_FORMAT, True, flags)
        self.arena.exports += 1

    def __releasebuffer__(self, Py_buffer* buffer):
        self.arena.exports -= 1


# First size of a payload read by receive_payload; it then doubles with the bytes received.
cdef Py_ssize_t _FIRST_PAYLOAD_BLOCK = 1024 * 1024


@cython.final
cdef class _ReceiveWindow:
    """The writable buffer behind the memoryview one recv_into()/readinto()
    call fills: the free tail
    of the block receive_payload grows. It counts the buffers exported from it
    and refuses new ones once the call has returned, so the caller knows
    whether the callee kept one (``memoryview(b)`` saved somewhere). A kept
    view would write into the bytes object handed out as immutable, and into
    freed memory once realloc moves the block; the block then goes to the
    window, which lives as long as that view, and receiving goes on in a copy."""

    cdef char* data
    cdef Py_ssize_t size
    cdef Py_ssize_t itemsize
    cdef Py_ssize_t exports
    cdef bint closed
    cdef object block      # owns `data` once a view of it outlived the call

    def __getbuffer__(self, Py_buffer* buffer, int flags):
        with cython.critical_section(self):
            if self.closed:
                raise BufferError("this receive buffer was only valid during the call it was passed to")
            export_vector(buffer, self, self.data, &self.size, &self.itemsize, _BYTE_FORMAT, False,
                          flags)
            self.exports += 1

    def __releasebuffer__(self, Py_buffer* buffer):
        with cython.critical_section(self):
            self.exports -= 1

    cdef bint close(self) noexcept:
        """End the call: no new exports; True if an export is still held."""
        with cython.critical_section(self):
            self.closed = True
            return self.exports != 0


cdef inline _ReceiveWindow _receive_window(PyObject* raw, Py_ssize_t start, Py_ssize_t size):
    cdef _ReceiveWindow window = _ReceiveWindow.__new__(_ReceiveWindow)
    window.data = c_bytes_data(raw) + start
    window.size = size - start
    window.itemsize = 1
    return window


cdef PyObject* _abandon_block(_ReceiveWindow window, PyObject* raw, Py_ssize_t size) except NULL:
    """`window`'s caller kept a view of `raw`: give the window our reference
    (the block lives as long as the view) and return a private copy of its
    `size` bytes to go on receiving into."""
    cdef PyObject* fresh
    window.block = <object>raw    # first, so a failed copy below still leaves the block owned
    fresh = c_bytes_from(c_bytes_data(raw), size)
    c_xdecref(raw)
    return fresh


def receive_payload(recv_into, length, received=b""):
    """Read the rest of a frame into one new bytes object, as the bytes arrive.

    `received` holds the first payload bytes (e.g. from FrameScanner.take_partial);
    ``recv_into(buffer) -> int`` (a socket's) supplies the remaining
    ``length - len(received)``. The bytes object grows by doubling with what
    arrived (realloc, so no copying), never sized from `length` alone.
    Raises EOFError if recv_into returns 0 first, ValueError if `received`
    exceeds `length`; any exception of recv_into propagates.
    """
    return _receive_payload(recv_into, length, received, NULL)


cdef object _receive_payload(recv_into, Py_ssize_t length, received, PyObject* reuse):
    """receive_payload(); `reuse`, if not NULL, is a bytes object whose only
    reference the caller hands over (stolen, even on error): its memory, already
    paged in, is filled instead of a new block's, up to its size; past that it
    grows like a new one."""
    cdef Py_buffer view
    cdef Py_ssize_t filled, size, n
    cdef PyObject* raw = reuse
    try:
        if length < 0:
            raise ValueError("negative length")
        acquire_readable(received, &view)
        try:
            filled = view.len
            if filled > length:
                raise ValueError("received more bytes than the frame length")
            if raw != NULL:
                size = PyBytes_GET_SIZE(<object>raw)
                if size > length or size < filled:
                    size = length if size > length else filled
                    if _PyBytes_Resize(&raw, size) < 0:  # pragma: no cover - raises MemoryError
                        raise MemoryError()
                fw_bytes_forget_hash(raw)  # refilled in place: its cached hash is stale
            else:
                size = 2 * filled if 2 * filled > _FIRST_PAYLOAD_BLOCK else _FIRST_PAYLOAD_BLOCK
                if size > length:
                    size = length
                raw = c_bytes_from(NULL, size)
            memcpy(c_bytes_data(raw), view.buf, filled)
        finally:
            release_view(&view)
        while filled < length:
            if filled == size:
                size = 2 * size if 2 * size < length else length
                if _PyBytes_Resize(&raw, size) < 0:  # pragma: no cover - raises MemoryError
                    raise MemoryError()
            window = _receive_window(raw, filled, size)
            # recv_into gets a memoryview, as from the stdlib, but one whose
            # buffer comes from the window, which counts what outlives the call.
            window_view = memoryview(window)
            try:
                n = recv_into(window_view)
            finally:
                try:
                    window_view.release()
                except BufferError:  # recv_into exported from it and kept that
                    pass
                # Nothing may keep pointing into a block that realloc may move
                # or that is returned as immutable bytes.
                if window.close():
                    raw = _abandon_block(window, raw, size)
            if n == 0:
                raise EOFError(EOF_IN_MESSAGE)
            if n < 0 or n > size - filled:
                raise ValueError("recv_into reported more bytes than the buffer holds")
            filled += n
        result = <object>raw
        return result
    finally:
        c_xdecref(raw)
