# The pickle encoder's state, and the one way an encoding call sets it up and
# tears it down (pw_call_begin / pw_call_end), used by every path that
# encodes: dumps(), dump(), dumps_framed(), Pickler.dump() and the
# connection's send(). The functions that write into a PwEnc live in
# pickle_write.pxi.

from libc.stdlib cimport free

from cpython.object cimport PyObject

from capi cimport c_decref, c_xdecref
from wire cimport fw_zero


cdef enum:
    PW_STACK_OUTPUT = 1024            # a call assembles small pickles on the C stack
    PW_INLINE_MEMO = 16               # memo slots a call's own memo starts with (zeroed per call)
    PW_INLINE_MEMO_ROOM = 128         # memo slots on the C stack that it may grow into

cdef extern from *:
    # The boundary of an encoder that never commits a frame early.
    const Py_ssize_t PW_NO_BOUNDARY "PY_SSIZE_T_MAX"


# The memo: object pointer -> memo index, open addressing with linear probing.
# The table owns a reference to every key, as _pickle.c's PyMemoTable does:
# objects created by __reduce__ may otherwise die and have their address
# reused by a different object later in the same pickle.

cdef struct PwMemoSlot:
    PyObject *key
    Py_ssize_t index

cdef struct PwMemo:
    PwMemoSlot *slots
    # The `used` keys in the order they were added: releasing them walks this
    # dense list instead of every slot of a table that is mostly empty. Room
    # for mask + 1 keys (the table never fills).
    PyObject **keys
    size_t mask
    int shift
    Py_ssize_t used
    bint owns_slots      # False while slots and keys are the caller's inline arrays;
    # True when they are one heap block (the keys after the slots)
    size_t inline_room   # slots of that inline array (it grows in place up to this)


cdef struct PwEnc:
    PyObject *out              # owned bytes object being filled; resized at the end
    char *buf                  # PyBytes_AS_STRING(out), or the caller's stack
    # buffer while out is NULL
    Py_ssize_t len
    Py_ssize_t cap
    Py_ssize_t frame_start     # offset of the reserved header of the open frame, or -1
    Py_ssize_t boundary        # len at which save() commits a frame / flushes a file
    int proto
    bint framing
    bint fast
    bint fix_imports
    PwMemo *memo
    Py_ssize_t fast_nesting
    PyObject *fast_memo        # owned dict of ids, created when fast mode nests deeply
    # Borrowed for the duration of one dump (the caller keeps them alive):
    PyObject *persistent_id
    PyObject *reducer_override
    PyObject *dispatch_table   # NULL means copyreg.dispatch_table
    PyObject *buffer_callback
    # Set by a caller that sends PickleBuffers out of band itself: each goes
    # into `buffers` (owned, made for the first one), with no callback to call.
    bint set_aside
    PyObject *buffers
    PyObject *write            # file.write, or NULL when building bytes
    PyObject *write_self       # the file when write is its class's function (fw_method_lookup)
    PyObject *by_value_reduce  # by_value.reducer_override, or NULL (see dumps)
    PyObject *by_value_table   # by_value.dispatch_table, used inside what it returns
    int by_value_depth         # by-value reductions being written, one inside another


# One encoding call's state, on the caller's C stack.
cdef struct PwCall:
    PwEnc enc
    PwMemo memo                       # used unless the caller brings its own
    PwMemoSlot memo_slots[PW_INLINE_MEMO_ROOM]
    PyObject *memo_keys[PW_INLINE_MEMO_ROOM]
    char output[PW_STACK_OUTPUT]


cdef inline void pw_memo_init(PwMemo *m, PwMemoSlot *inline_slots, PyObject **inline_keys,
                              size_t inline_count, size_t inline_room) noexcept:
    """A memo of inline_count slots (a power of two) in the caller's array
    of inline_room slots (and its list of as many keys): only the slots in
    use are zeroed, so a call that memoizes little pays little, and one that
    memoizes a record's few dozen strings grows within the array instead of
    allocating."""
    cdef int bits = 0
    while (<size_t>1 << bits) < inline_count:
        bits += 1
    fw_zero(inline_slots, inline_count * sizeof(PwMemoSlot))
    m.slots = inline_slots
    m.keys = inline_keys
    m.mask = inline_count - 1
    m.shift = 64 - bits
    m.used = 0
    m.owns_slots = False
    m.inline_room = inline_room


cdef inline void pw_memo_free(PwMemo *m) noexcept:
    """Release the keys and the table (the memo is unusable afterwards)."""
    cdef Py_ssize_t i, used = m.used
    cdef PyObject **keys = m.keys
    m.used = 0
    if m.slots != NULL:
        for i in range(used):
            c_decref(keys[i])
    if m.owns_slots:
        free(m.slots)
    m.slots = NULL
    m.keys = NULL
    m.owns_slots = False


cdef inline void pw_enc_init(PwEnc *e, int proto, PwMemo *memo) noexcept:
    fw_zero(e, sizeof(PwEnc))
    e.proto = proto
    e.memo = memo
    e.frame_start = -1
    e.boundary = PW_NO_BOUNDARY
    e.fix_imports = True


cdef inline void pw_enc_release(PwEnc *e) noexcept:
    c_xdecref(e.out)
    e.out = NULL
    c_xdecref(e.fast_memo)
    e.fast_memo = NULL
    c_xdecref(e.buffers)
    e.buffers = NULL


cdef inline PwEnc *pw_call_begin(PwCall *s, int proto, PwMemo *memo) noexcept:
    """Start an encoding call: output in s.output until it outgrows it (then in
    a bytes object), with `memo` if given (a Pickler's, which outlives the
    call), else a fresh memo in s.memo_slots. Every exit after this must call
    pw_call_end."""
    if memo == NULL:
        pw_memo_init(&s.memo, s.memo_slots, s.memo_keys, PW_INLINE_MEMO, PW_INLINE_MEMO_ROOM)
        memo = &s.memo
    pw_enc_init(&s.enc, proto, memo)
    s.enc.buf = s.output
    s.enc.cap = PW_STACK_OUTPUT
    return &s.enc


cdef inline void pw_call_end(PwCall *s) noexcept:
    """Drop what the call owns: the output bytes, fast mode's memo, and its
    own memo's keys (a caller's memo is the caller's to keep or free)."""
    pw_enc_release(&s.enc)
    if s.enc.memo == &s.memo:
        pw_memo_free(&s.memo)
