# Pickle encoder: protocols 2-5 written by C code the stdlib's
# pickle.loads reads back; protocols 0 and 1 are handed to the stdlib.
#
# Layout of this part, top to bottom:
#   1. C code only the encoder needs (the C API and the opcodes are
#      declared in capi.pxd and opcodes.pxd, its state in encoder.pxd)
#   2. PwBuffer-style output: one growing bytes object, frames patched in place
#   3. PwMemo: pointer-keyed open-addressing memo table (owns its keys)
#   4. the save_* functions: exact-type dispatch first, reduce protocol last
#   5. the Python surface: dumps(), dump(), Pickler, the memo proxy
#
# Everything in the hot path takes PyObject* so that no reference is taken
# unless it is needed to keep an object alive while user code may run.
#
# Memo policy (the stdlib memoizes every str, bytes, tuple and container):
#   * An object whose reference count proves that the only reference to it is
#     the container slot we reached it through cannot be in the memo (the memo
#     owns a reference to every key), so the memo lookup is skipped.
#   * Such an object that is also immutable (str, bytes, tuple, frozenset) is
#     written without a memo entry: nothing else can refer to it, and if user
#     code (a __reduce__) hands it back to us later, writing it again still
#     loads an equal object.
#   * Mutable objects (list, dict, set, bytearray, instances) are always
#     memoized, so identity of shared and recursive structures is preserved
#     even when user code re-reaches an object through a new reference.

# Shared declarations this part uses.
# From frames.pxi (declared in src/fastwire/_fastwire.pxd: FramePrefix), by
# inclusion: as_prefix, encode_frame, encode_header.
from libc.stdint cimport uint32_t, uint64_t
from libc.string cimport memcpy, memset
from cpython.object cimport PyObject
from cpython.ref cimport Py_INCREF
from cpython.bytes cimport PyBytes_FromStringAndSize
from capi cimport (
    C_BUILTIN_SUBCLASS_FLAGS, Py_TPFLAGS_HEAPTYPE, TypeObject, c_buffer_contiguous,
    c_bytearray_data, c_bytearray_size, c_bytearray_type, c_bytes_data, c_bytes_from_or_null,
    c_bytes_resize, c_bytes_size, c_bytes_type, c_complex_imag, c_complex_real, c_complex_type,
    c_decref, c_dict_get, c_dict_size, c_dict_type, c_enter_recursive_call,
    c_err_clear, c_err_matches, c_err_occurred, c_false, c_float_type, c_float_value,
    c_frozenset_type, c_function_type, c_generic_get_dict, c_heap_type_name, c_import_object,
    c_incref, c_is_compact_ascii, c_is_subtype, c_iter_check, c_leave_recursive_call, c_list_item,
    c_list_size, c_list_type, c_long_type, c_no_memory, c_none, c_object_type, c_picklebuffer_type,
    c_picklebuffer_view, c_refcnt, c_set_error, c_set_size, c_set_type, c_str_data, c_str_length,
    c_str_type, c_true, c_tuple_item, c_tuple_size, c_tuple_type, c_type_lookup, c_type_of,
    c_type_type, c_utf8_and_size, c_xdecref,
)
from wire cimport (
    FW_FREE_THREADED, FW_HOST_LITTLE, fw_claim, fw_clzll, fw_copy_short, fw_method_call, fw_method_lookup,
    fw_release, fw_store_f64, fw_store_u32, fw_store_u64,
)
from opcodes cimport (
    OP_ADDITEMS, OP_APPEND, OP_APPENDS, OP_BINBYTES, OP_BINBYTES8, OP_BINFLOAT, OP_BINGET,
    OP_BININT, OP_BININT1, OP_BININT2, OP_BINPERSID, OP_BINPUT, OP_BINUNICODE, OP_BINUNICODE8,
    OP_BUILD, OP_BYTEARRAY8, OP_EMPTY_DICT, OP_EMPTY_LIST, OP_EMPTY_SET, OP_EMPTY_TUPLE, OP_EXT1,
    OP_EXT2, OP_EXT4, OP_FRAME, OP_FROZENSET, OP_GLOBAL, OP_LONG1, OP_LONG4, OP_LONG_BINGET,
    OP_LONG_BINPUT, OP_MARK, OP_MEMOIZE, OP_NEWFALSE, OP_NEWOBJ, OP_NEWOBJ_EX, OP_NEWTRUE,
    OP_NEXT_BUFFER, OP_NONE, OP_POP, OP_POP_MARK, OP_PROTO, OP_READONLY_BUFFER, OP_REDUCE,
    OP_SETITEM, OP_SETITEMS, OP_SHORT_BINBYTES, OP_SHORT_BINUNICODE, OP_STACK_GLOBAL, OP_STOP,
    OP_TUPLE, OP_TUPLE1, OP_TUPLE2, OP_TUPLE3,
)
from framing cimport PrefixSpec
from encoder cimport (
    PW_INLINE_MEMO_ROOM, PW_NO_BOUNDARY, PwCall, PwEnc, PwMemo, PwMemoSlot, pw_call_begin, pw_call_end, pw_memo_free,
    pw_memo_init,
)

import copyreg
import functools
import codecs
import _compat_pickle
import _pickle
import sys
from operator import index as pw_index
from pickle import DEFAULT_PROTOCOL as _PW_DEFAULT_PROTOCOL

from libc.string cimport memmove
from libc.stdlib cimport free, malloc


cdef extern from *:
    """
    /* The value of an int that fits in one digit, without a function call:
       how CPython itself reads small ints (the layout changed in 3.12). */
    static inline int pw_compact_long(PyObject *o, long long *out) {
    #if PY_VERSION_HEX >= 0x030C0000
        if (PyUnstable_Long_IsCompact((PyLongObject *)o)) {
            *out = (long long)PyUnstable_Long_CompactValue((PyLongObject *)o);
            return 1;
        }
        return 0;
    #else
        Py_ssize_t size = Py_SIZE(o);
        if (size >= -1 && size <= 1) {
            *out = (long long)size * (long long)((PyLongObject *)o)->ob_digit[0];
            return 1;
        }
        return 0;
    #endif
    }
    """
    bint pw_compact_long(PyObject *o, long long *out)


cdef extern from *:
    """
    /* An int's magnitude digits (least significant first), their count and
       its sign; the layout changed in 3.12. */
    static inline const digit *pw_long_digits(PyObject *o, Py_ssize_t *count, int *negative) {
    #if PY_VERSION_HEX >= 0x030C0000
        uintptr_t tag = ((PyLongObject *)o)->long_value.lv_tag;
        *count = (Py_ssize_t)(tag >> _PyLong_NON_SIZE_BITS);
        *negative = (tag & _PyLong_SIGN_MASK) == 2;
        return ((PyLongObject *)o)->long_value.ob_digit;
    #else
        Py_ssize_t size = Py_SIZE(o);
        *count = size < 0 ? -size : size;
        *negative = size < 0;
        return ((PyLongObject *)o)->ob_digit;
    #endif
    }
    /* The value of an int whose magnitude is below 2**63, read from its
       digits as pw_compact_long reads one: ints of 31 to 63 bits are common
       (ids, timestamps, hashes) and would otherwise take
       PyLong_AsLongLongAndOverflow's general loop. */
    static inline int pw_int63_value(PyObject *o, long long *out) {
        Py_ssize_t n, i;
        int negative;
        uint64_t v;
        const digit *d = pw_long_digits(o, &n, &negative);
        if (n <= 1) {
            v = n ? d[0] : 0;
        } else if (n == 2) {
            v = (uint64_t)d[0] | ((uint64_t)d[1] << PyLong_SHIFT);
        } else {
            if (n * PyLong_SHIFT > 63 && ((n - 1) * PyLong_SHIFT >= 63
                    || (d[n - 1] >> (63 - (n - 1) * PyLong_SHIFT)) != 0))
                return 0;
            v = 0;
            for (i = n - 1; i >= 0; i--)
                v = (v << PyLong_SHIFT) | d[i];
        }
        *out = negative ? -(long long)v : (long long)v;
        return 1;
    }
    """
    bint pw_int63_value(PyObject *o, long long *out)


cdef extern from "dicttable.h":
    bint fw_dict_next(PyObject *d, Py_ssize_t *pos, PyObject **key, PyObject **value) noexcept


cdef extern from *:
    """
    #include "datetime.h"
    /* The datetime family's pickle state, read from the objects as
       _datetimemodule.c's own __reduce_ex__ builds it: the packed data bytes
       (date 4, time 6, datetime 10), with the fold bit set in the hour byte
       of a time and the month byte of a datetime for protocols above 3, and
       the tzinfo (borrowed; NULL when naive). Returns the state's length, or
       0 when the type is not one of these exact types. */
    static PyTypeObject *pw_date_type, *pw_time_type, *pw_datetime_type, *pw_delta_type;
    static int pw_datetime_import(void) {
        PyDateTime_IMPORT;
        if (PyDateTimeAPI == NULL) return -1;
        pw_date_type = PyDateTimeAPI->DateType;
        pw_time_type = PyDateTimeAPI->TimeType;
        pw_datetime_type = PyDateTimeAPI->DateTimeType;
        pw_delta_type = PyDateTimeAPI->DeltaType;
        return 0;
    }
    static int pw_datetime_state(PyObject *o, PyTypeObject *t, int proto,
                                 unsigned char *out, PyObject **tzinfo) {
        *tzinfo = NULL;
        if (t == pw_datetime_type) {
            memcpy(out, ((PyDateTime_DateTime *)o)->data, _PyDateTime_DATETIME_DATASIZE);
            if (proto > 3 && PyDateTime_DATE_GET_FOLD(o)) out[2] |= 0x80;
            if (((PyDateTime_DateTime *)o)->hastzinfo) *tzinfo = ((PyDateTime_DateTime *)o)->tzinfo;
            return _PyDateTime_DATETIME_DATASIZE;
        }
        if (t == pw_date_type) {
            memcpy(out, ((PyDateTime_Date *)o)->data, _PyDateTime_DATE_DATASIZE);
            return _PyDateTime_DATE_DATASIZE;
        }
        if (t == pw_time_type) {
            memcpy(out, ((PyDateTime_Time *)o)->data, _PyDateTime_TIME_DATASIZE);
            if (proto > 3 && PyDateTime_TIME_GET_FOLD(o)) out[0] |= 0x80;
            if (((PyDateTime_Time *)o)->hastzinfo) *tzinfo = ((PyDateTime_Time *)o)->tzinfo;
            return _PyDateTime_TIME_DATASIZE;
        }
        return 0;
    }
    #define pw_is_datetime_type(t) ((t) == pw_delta_type || (t) == pw_datetime_type \
                                    || (t) == pw_date_type || (t) == pw_time_type)
    #define pw_delta_days(o) PyDateTime_DELTA_GET_DAYS(o)
    #define pw_delta_seconds(o) PyDateTime_DELTA_GET_SECONDS(o)
    #define pw_delta_microseconds(o) PyDateTime_DELTA_GET_MICROSECONDS(o)
    """
    TypeObject *pw_delta_type
    bint pw_is_datetime_type(TypeObject *t) noexcept
    int pw_datetime_import() except -1
    int pw_datetime_state(PyObject *o, TypeObject *t, int proto, unsigned char *out, PyObject **tzinfo) noexcept
    int pw_delta_days(PyObject *o)
    int pw_delta_seconds(PyObject *o)
    int pw_delta_microseconds(PyObject *o)


cdef extern from *:
    """
    /* Bits and the low n bytes of an int's two's complement, little endian,
       read from its digits: CPython's _PyLong_AsByteArray and
       PyLong_AsNativeBytes move one byte per step (about 15 instructions a
       byte); this moves 32 bits per store. The caller sizes n from the bit
       count, so the bytes above n are pure sign extension. A negative
       number's digits are complemented with a running carry (-m == ~m + 1). */
    static inline size_t pw_long_numbits(PyObject *v) { return _PyLong_NumBits(v); }
    static inline int pw_long_as_le_bytes(PyObject *v, unsigned char *out, Py_ssize_t n) {
        Py_ssize_t ndigits, i, pos = 0;
        int negative, bits = 0;
        const digit *d = pw_long_digits(v, &ndigits, &negative);
        uint64_t acc = 0, carry = 1, dv;
        for (i = 0; i < ndigits && pos < n; i++) {
            dv = d[i];
            if (negative) {
                dv = (~dv & PyLong_MASK) + carry;
                carry = dv >> PyLong_SHIFT;
                dv &= PyLong_MASK;
            }
            acc |= dv << bits;
            bits += PyLong_SHIFT;
            while (bits >= 32 && pos + 4 <= n) {
                uint32_t word = (uint32_t)acc;
                if (!FW_HOST_LITTLE) word = fw_bswap32(word);
                memcpy(out + pos, &word, 4);
                pos += 4;
                acc >>= 32;
                bits -= 32;
            }
        }
        if (negative)
            acc |= ~(uint64_t)0 << bits;
        while (pos < n) {
            out[pos++] = (unsigned char)acc;
            acc = negative ? (acc >> 8) | ((uint64_t)0xff << 56) : acc >> 8;
        }
        return 0;
    }
    """
    size_t pw_long_numbits(PyObject *v)
    int pw_long_as_le_bytes(PyObject *v, unsigned char *out, Py_ssize_t n)


cdef extern from *:
    """
    /* A type's version tag identifies its attribute state: CPython renews it
       whenever the type or a base changes. 0 means "no valid tag"; before
       3.13 a flag said so as well (3.13 left the flag unused). */
    #if PY_VERSION_HEX >= 0x030D0000
    #define pw_version_valid(t) (((PyTypeObject *)(t))->tp_version_tag != 0)
    #else
    #define pw_version_valid(t) (((PyTypeObject *)(t))->tp_version_tag != 0 && \
        (((PyTypeObject *)(t))->tp_flags & Py_TPFLAGS_VALID_VERSION_TAG))
    #endif
    """
    bint pw_version_valid(TypeObject *t)


cdef enum:
    PW_HIGHEST_PROTOCOL = 5
    PW_BATCHSIZE = 1000               # items per APPENDS/SETITEMS/ADDITEMS, as _pickle.c
    PW_FRAME_HEADER = 9               # FRAME opcode + 8-byte length
    PW_FRAME_TARGET = 64 * 1024       # frames are committed once they reach this size
    PW_FRAME_MIN = 4                  # smaller frames are written without a header
    PW_FAST_NESTING_LIMIT = 50        # depth at which fast mode starts tracking cycles
    PW_FIRST_HEAP_MEMO = 128          # slots of the first memo table off the stack
    PW_ATOM_ROOM = 9                  # the longest atom pw_save_atom stores unchecked (BINFLOAT)
    PW_FIRST_HEAP_OUTPUT = 16 * 1024  # the first output buffer off the stack
    # Each nested by-value reduction re-enters Python from C; 3.13 counts such
    # re-entries against its C limit only (10,000), far more than the C stack
    # holds for this cycle, so the encoder bounds the nesting itself.
    PW_BY_VALUE_NESTING_LIMIT = 500

# save() flags
cdef enum:
    PW_PERS_SAVE = 1                  # saving a persistent id: do not call persistent_id on it
    PW_HELD = 2                       # the caller holds one extra reference to obj

# A C constant: a bare 0xffffffff literal in a comparison is a Python int to Cython.
cdef uint64_t PW_MAX_MEMO_ID = 0xffffffffULL

cdef object pw_PicklingError = _pickle.PicklingError
cdef object pw_copyreg_dispatch_table = copyreg.dispatch_table
cdef object pw_copyreg_pickle_complex = getattr(copyreg, "pickle_complex", None)
cdef object pw_extension_registry = copyreg._extension_registry
cdef object pw_newobj = copyreg.__newobj__
cdef object pw_newobj_ex = copyreg.__newobj_ex__
cdef object pw_partial = functools.partial
cdef object pw_codecs_encode = codecs.encode
cdef object pw_reverse_name_mapping = _compat_pickle.REVERSE_NAME_MAPPING
cdef object pw_reverse_import_mapping = _compat_pickle.REVERSE_IMPORT_MAPPING
cdef object pw_getattr = getattr
# 3.13 changed what _pickle writes or raises in a few places; fastwire follows
# the running version.
cdef bint PW_PY313 = sys.version_info >= (3, 13)

# Interned names looked up on every class instance.
cdef str PW_REDUCE_EX = "__reduce_ex__"
cdef str PW_REDUCE = "__reduce__"
cdef str PW_GETSTATE = "__getstate__"
cdef str PW_GETNEWARGS_EX = "__getnewargs_ex__"
cdef str PW_GETNEWARGS = "__getnewargs__"
cdef str PW_CLASS = "__class__"
cdef str PW_SLOTNAMES = "__slotnames__"


# ---------------------------------------------------------------------------
# The memo: object pointer -> memo index, open addressing with linear probing.
# The table owns a reference to every key, as _pickle.c's PyMemoTable does:
# objects created by __reduce__ may otherwise die and have their address
# reused by a different object later in the same pickle.


cdef inline size_t pw_memo_hash(const PwMemo *m, PyObject *key) noexcept:
    # Fibonacci hashing: the low bits of a pointer are alignment zeros.
    return <size_t>(((<uint64_t><size_t>key) * 0x9E3779B97F4A7C15ULL) >> m.shift)


cdef inline PwMemoSlot *pw_memo_slot(const PwMemo *m, PyObject *key) noexcept:
    """The slot holding `key`, or the empty slot where it would go."""
    cdef size_t i = pw_memo_hash(m, key)
    cdef PwMemoSlot *s
    while True:
        s = &m.slots[i]
        if s.key == key or s.key == NULL:
            return s
        i = (i + 1) & m.mask


# The hot layer below (memo, buffer, atoms) is written like C: `noexcept`
# functions that return -1 with a Python exception set and never run Python
# code, so they carry no traceback bookkeeping and inline into the loops.
# Code that may run Python uses the `except -1` wrappers further down.

cdef int pw_memo_grow(PwMemo *m) noexcept:
    # x4 while small: a pickle with thousands of containers would otherwise
    # rehash and re-zero its table a dozen times. Leaving the inline table
    # goes straight to PW_FIRST_HEAP_MEMO slots: a record of a few dozen
    # strings (bm_pickle's profile) then allocates and rehashes once.
    cdef size_t old_cap = m.mask + 1
    cdef int factor_bits = 2 if old_cap < 65536 else 1
    while not m.owns_slots and (old_cap << factor_bits) < PW_FIRST_HEAP_MEMO:
        factor_bits += 1
    cdef size_t new_cap = old_cap << factor_bits
    cdef PwMemoSlot *old = m.slots
    cdef PwMemoSlot *fresh
    cdef PwMemoSlot moved[PW_INLINE_MEMO_ROOM]
    cdef size_t i, n = 0
    if not m.owns_slots and new_cap <= m.inline_room and old_cap <= PW_INLINE_MEMO_ROOM:
        # Still within the caller's array: set the entries aside, zero the
        # larger table in place and put them back (no allocation, and the
        # array is never zeroed beyond what the pickle needs).
        for i in range(old_cap):
            if old[i].key != NULL:
                moved[n] = old[i]
                n += 1
        memset(old, 0, new_cap * sizeof(PwMemoSlot))
        m.mask = new_cap - 1
        m.shift -= factor_bits
        for i in range(n):
            pw_memo_slot(m, moved[i].key)[0] = moved[i]
        return 0
    fresh = pw_memo_block(new_cap)
    if fresh == NULL:
        c_no_memory()
        return -1
    memcpy(<PyObject **>(fresh + new_cap), m.keys, m.used * sizeof(PyObject *))
    m.slots = fresh
    m.keys = <PyObject **>(fresh + new_cap)
    m.mask = new_cap - 1
    m.shift -= factor_bits
    for i in range(old_cap):
        if old[i].key != NULL:
            pw_memo_slot(m, old[i].key)[0] = old[i]
    if m.owns_slots:
        free(old)
    m.owns_slots = True
    return 0


cdef inline PwMemoSlot *pw_memo_block(size_t cap) noexcept:
    """A heap table of cap empty slots followed by room for cap keys (not
    zeroed: only the first `used` are ever read)."""
    cdef PwMemoSlot *block
    if cap > (<size_t>PW_NO_BOUNDARY) // (sizeof(PwMemoSlot) + sizeof(PyObject *)):
        return NULL
    block = <PwMemoSlot *>malloc(cap * (sizeof(PwMemoSlot) + sizeof(PyObject *)))
    if block != NULL:
        memset(block, 0, cap * sizeof(PwMemoSlot))
    return block


cdef inline PwMemoSlot *pw_memo_room_for(PwMemo *m, PyObject *key) noexcept:
    """The slot holding `key`, or the empty slot where it goes once room for
    one more entry is made (NULL with MemoryError set): one probe serves
    both the lookup and the insertion that follows a miss, as long as
    nothing else is memoized in between."""
    if (<size_t>m.used + 1) * 3 >= (m.mask + 1) * 2:
        if pw_memo_grow(m) < 0:
            return NULL
    return pw_memo_slot(m, key)


cdef inline Py_ssize_t pw_memo_insert(PwMemo *m, PyObject *key) noexcept:
    """Add `key` (not yet present) with the next index and return that index."""
    cdef PwMemoSlot *s = pw_memo_room_for(m, key)
    if s == NULL:
        return -1
    c_incref(key)
    m.keys[m.used] = key
    s.key = key
    s.index = m.used
    m.used += 1
    return s.index


cdef int pw_memo_set(PwMemo *m, PyObject *key, Py_ssize_t index) except -1:
    """Insert or overwrite an entry with an explicit index (memo setter)."""
    cdef PwMemoSlot *s
    if (<size_t>m.used + 1) * 3 >= (m.mask + 1) * 2:
        if pw_memo_grow(m) < 0:
            return -1
    s = pw_memo_slot(m, key)
    if s.key == NULL:
        c_incref(key)
        s.key = key
        m.keys[m.used] = key
        m.used += 1
    s.index = index
    return 0


cdef void pw_memo_clear(PwMemo *m) noexcept:
    """Drop every entry. References are released after the table is emptied,
    so a destructor that re-enters the pickler sees a consistent memo."""
    cdef PwMemoSlot *old = m.slots
    cdef PyObject **keys = m.keys
    cdef PyObject *inline_keys[PW_INLINE_MEMO_ROOM]
    cdef size_t cap = m.mask + 1
    cdef bint owned = m.owns_slots
    cdef Py_ssize_t i, used = m.used
    cdef PwMemoSlot *fresh
    if used == 0:
        return
    if owned:
        fresh = pw_memo_block(cap)
        if fresh == NULL:      # keep the (valid) table rather than crash
            return
        m.slots = fresh
        m.keys = <PyObject **>(fresh + cap)
    else:
        # The inline arrays are reused at once: set the keys aside first.
        memcpy(inline_keys, keys, used * sizeof(PyObject *))
        keys = inline_keys
        memset(old, 0, cap * sizeof(PwMemoSlot))
    m.used = 0
    for i in range(used):
        c_decref(keys[i])
    if owned:
        free(old)


# ---------------------------------------------------------------------------
# Encoder state and output buffer.


cdef int pw_grow(PwEnc *e, Py_ssize_t n) noexcept:
    cdef Py_ssize_t need = e.len + n
    cdef Py_ssize_t cap
    if n < 0 or need < e.len or need > PW_NO_BOUNDARY - (need >> 3) - 64:
        c_no_memory()
        return -1
    # Grow geometrically; a single large write (a big bytes payload) gets
    # what it needs plus room for the opcodes that close the pickle. Not
    # over-allocating large buffers matters: the final shrink then leaves the
    # block no larger than the next call asks for, so glibc serves it again
    # from the heap instead of mmapping (and page-faulting) fresh memory.
    # x4 while below a frame: realloc seldom grows in place, and each move
    # copies everything written so far.
    cap = e.cap * 4 if e.cap < PW_FRAME_TARGET else e.cap * 2
    if e.out == NULL and cap < PW_FIRST_HEAP_OUTPUT:
        cap = PW_FIRST_HEAP_OUTPUT
    if n >= PW_FRAME_TARGET:
        cap = need + PW_FRAME_HEADER + 64
    elif cap < need + 64:
        cap = need + 64
    if e.out == NULL:
        # Leaving the stack buffer: from now on the output is a bytes object.
        e.out = c_bytes_from_or_null(NULL, cap)
        if e.out == NULL:
            return -1
        memcpy(c_bytes_data(e.out), e.buf, e.len)
    elif c_bytes_resize(&e.out, cap) < 0:
        e.buf = NULL
        e.cap = 0
        return -1
    e.buf = c_bytes_data(e.out)
    e.cap = cap
    return 0


cdef char *pw_claim_slow(PwEnc *e, Py_ssize_t n) noexcept:
    cdef char *p
    if pw_grow(e, n) < 0:
        return NULL
    p = e.buf + e.len
    e.len += n
    return p


cdef inline char *pw_claim(PwEnc *e, Py_ssize_t n) noexcept:
    """Room for `n` more bytes: where to write them (len advanced), or NULL
    with MemoryError set."""
    cdef char *p
    if e.cap - e.len < n:
        return pw_claim_slow(e, n)
    p = e.buf + e.len
    e.len += n
    return p


cdef inline int pw_put1(PwEnc *e, unsigned char op) noexcept:
    cdef char *p = pw_claim(e, 1)
    if p == NULL:
        return -1
    p[0] = <char>op
    return 0


cdef inline int pw_put2(PwEnc *e, unsigned char op, unsigned char arg) noexcept:
    cdef char *p = pw_claim(e, 2)
    if p == NULL:
        return -1
    p[0] = <char>op
    p[1] = <char>arg
    return 0


cdef inline char *pw_reserve(PwEnc *e, Py_ssize_t n) except NULL:
    return pw_claim(e, n)


cdef inline int pw_write1(PwEnc *e, unsigned char op) except -1:
    return pw_put1(e, op)


cdef inline int pw_write2(PwEnc *e, unsigned char op, unsigned char arg) except -1:
    return pw_put2(e, op, arg)


cdef inline void pw_store_le32(char *p, uint32_t v) noexcept:
    fw_store_u32(p, v, not FW_HOST_LITTLE)


cdef inline void pw_store_le64(char *p, uint64_t v) noexcept:
    fw_store_u64(p, v, not FW_HOST_LITTLE)


cdef int pw_open_frame(PwEnc *e) except -1:
    pw_reserve(e, PW_FRAME_HEADER)
    e.frame_start = e.len - PW_FRAME_HEADER
    e.boundary = e.len + PW_FRAME_TARGET
    return 0


cdef void pw_close_frame(PwEnc *e) noexcept:
    """Patch the reserved header of the open frame, or remove it if the frame
    is too small to be worth one (as _pickle.c does)."""
    cdef Py_ssize_t start = e.frame_start
    cdef Py_ssize_t n
    if start < 0:
        return
    n = e.len - start - PW_FRAME_HEADER
    if n >= PW_FRAME_MIN:
        e.buf[start] = <char>OP_FRAME
        pw_store_le64(e.buf + start + 1, <uint64_t>n)
    else:
        memmove(e.buf + start, e.buf + start + PW_FRAME_HEADER, n)
        e.len -= PW_FRAME_HEADER
    e.frame_start = -1
    e.boundary = PW_NO_BOUNDARY


cdef int pw_flush(PwEnc *e, bint reopen) except -1:
    """Hand everything written so far to file.write (frames closed by caller);
    `reopen` gives the encoder a fresh buffer to continue in."""
    cdef object chunk
    cdef PyObject *fresh
    if e.write == NULL or e.len == 0:
        return 0
    if e.out == NULL:                  # still in the caller's stack buffer
        chunk = PyBytes_FromStringAndSize(e.buf, e.len)
        e.len = 0
        fw_method_call(e.write, e.write_self, chunk)
        return 0
    if c_bytes_resize(&e.out, e.len) < 0:
        e.buf = NULL
        e.cap = 0
        return -1
    chunk = <object>e.out            # takes a reference
    c_decref(e.out)                 # ...which becomes the only one
    e.out = NULL
    e.buf = NULL
    e.len = e.cap = 0
    if not reopen:
        fw_method_call(e.write, e.write_self, chunk)
        return 0
    fresh = c_bytes_from_or_null(NULL, PW_FRAME_TARGET + PW_FRAME_HEADER + 64)
    if fresh == NULL:
        return -1
    e.out = fresh
    e.buf = c_bytes_data(fresh)
    e.cap = PW_FRAME_TARGET + PW_FRAME_HEADER + 64
    fw_method_call(e.write, e.write_self, chunk)
    return 0


cdef int pw_boundary(PwEnc *e) except -1:
    """Called between opcodes once the open frame (or, unframed, the buffer of
    a file pickler) has reached its target size."""
    if e.framing:
        pw_close_frame(e)
        pw_flush(e, True)
        pw_open_frame(e)
    else:
        pw_flush(e, True)
        e.boundary = PW_FRAME_TARGET if e.write != NULL else PW_NO_BOUNDARY
    return 0


cdef int pw_write_payload(PwEnc *e, const char *header, Py_ssize_t header_len,
                          const char *data, Py_ssize_t n, object payload) except -1:
    """Write an opcode header and a (possibly huge) data payload. Large payloads
    go outside any frame, and straight to the file when there is one."""
    cdef char *p
    if e.framing and n >= PW_FRAME_TARGET:
        pw_close_frame(e)
        memcpy(pw_reserve(e, header_len), header, header_len)
        if e.write != NULL:
            pw_flush(e, True)
            fw_method_call(e.write, e.write_self, payload)
        else:
            memcpy(pw_reserve(e, n), data, n)
        pw_open_frame(e)
        return 0
    p = pw_reserve(e, header_len + n)
    memcpy(p, header, header_len)
    memcpy(p + header_len, data, n)
    return 0


# ---------------------------------------------------------------------------
# Memo opcodes.

cdef inline int pw_put_memo_op(PwEnc *e, unsigned char op1, unsigned char op4,
                               Py_ssize_t idx) noexcept:
    """BINPUT/BINGET (op1) for a one-byte index, else LONG_BINPUT/GET (op4)."""
    cdef char *p
    if idx < 256:
        return pw_put2(e, op1, <unsigned char>idx)
    if <uint64_t>idx > PW_MAX_MEMO_ID:
        c_set_error(<PyObject *>pw_PicklingError, "memo id too large")
        return -1
    p = pw_claim(e, 5)
    if p == NULL:
        return -1
    p[0] = <char>op4
    pw_store_le32(p + 1, <uint32_t>idx)
    return 0


cdef inline int pw_memo_put(PwEnc *e, PyObject *obj) noexcept:
    if e.fast:
        return 0
    if pw_memo_insert(e.memo, obj) < 0:
        return -1
    return pw_put_memo_written(e)


cdef inline int pw_put_memo_written(PwEnc *e) noexcept:
    """The opcode that stores what was just written as the newest memo entry."""
    if e.proto >= 4:
        return pw_put1(e, OP_MEMOIZE)
    return pw_put_memo_op(e, OP_BINPUT, OP_LONG_BINPUT, e.memo.used - 1)


cdef inline int pw_memo_put_at(PwEnc *e, PwMemoSlot *s, PyObject *obj) noexcept:
    """pw_memo_put for obj, whose slot pw_memo_room_for found empty (and
    nothing was memoized since)."""
    if e.fast:
        return 0
    c_incref(obj)
    s.key = obj
    s.index = e.memo.used
    e.memo.keys[e.memo.used] = obj
    e.memo.used += 1
    return pw_put_memo_written(e)


cdef int pw_put_empty(PwEnc *e, unsigned char op, PyObject *obj) noexcept:
    """An empty mutable container's opcode (EMPTY_LIST, ...) and its memo
    entry (obj is not in the memo yet): where MEMOIZE serves, one claim
    writes both."""
    cdef char *p
    if e.fast or e.proto < 4:
        if pw_put1(e, op) < 0:
            return -1
        return pw_memo_put(e, obj)
    if pw_memo_insert(e.memo, obj) < 0:
        return -1
    p = pw_claim(e, 2)
    if p == NULL:
        return -1
    p[0] = <char>op
    p[1] = <char>OP_MEMOIZE
    return 0


cdef inline int pw_memo_get(PwEnc *e, Py_ssize_t idx) noexcept:
    return pw_put_memo_op(e, OP_BINGET, OP_LONG_BINGET, idx)


cdef inline bint pw_unique(PyObject *obj, int flags) noexcept:
    """True when the only reference to obj is the one we reached it through
    (plus ours, if the caller holds one): then it cannot be in the memo, which
    owns a reference to each key, and nothing else in the graph refers to it."""
    return c_refcnt(obj) <= 1 + ((flags & PW_HELD) >> 1)


cdef inline Py_ssize_t pw_memo_index(PwEnc *e, PyObject *obj) noexcept:
    """Memo index of obj, or -1."""
    cdef PwMemoSlot *s
    if e.memo.used == 0:
        return -1
    s = pw_memo_slot(e.memo, obj)
    return s.index if s.key != NULL else -1


# ---------------------------------------------------------------------------
# Atoms.

cdef inline int pw_put_small_int(PwEnc *e, long long x) noexcept:
    """BININT1/BININT2/BININT for -2**31 <= x < 2**31."""
    cdef char *p
    if 0 <= x <= 0xff:
        return pw_put2(e, OP_BININT1, <unsigned char>x)
    if 0 <= x <= 0xffff:
        p = pw_claim(e, 3)
        if p == NULL:
            return -1
        p[0] = <char>OP_BININT2
        p[1] = <char>(x & 0xff)
        p[2] = <char>(x >> 8)
        return 0
    p = pw_claim(e, 5)
    if p == NULL:
        return -1
    p[0] = <char>OP_BININT
    pw_store_le32(p + 1, <uint32_t>x)
    return 0


cdef inline int pw_save_int(PwEnc *e, PyObject *obj) except -1:
    cdef long long x
    if pw_int63_value(obj, &x):
        if -0x80000000 <= x <= 0x7fffffff:
            return pw_put_small_int(e, x)
        return pw_put_long_long(e, x)
    return pw_put_big_int(e, obj)


cdef int pw_put_long_long(PwEnc *e, long long x) noexcept:
    """The opcode pickle picks for a 64-bit int of more than one digit
    (|x| >= 2**30, so never BININT1/BININT2): BININT within 32 bits, else
    LONG1 with the minimal two's complement bytes, exactly as pickle's
    encode_long: (bit_length(|x|) >> 3) + 1 bytes, one fewer when a negative
    number's top byte is pure sign extension. (Not calling pw_put_small_int
    keeps that one inlined into the container loops.)"""
    cdef char *p
    cdef unsigned char tmp[16]
    cdef uint64_t ux
    cdef int nbits, n
    if -0x80000000 <= x <= 0x7fffffff:
        p = pw_claim(e, 5)
        if p == NULL:
            return -1
        p[0] = <char>OP_BININT
        pw_store_le32(p + 1, <uint32_t>x)
        return 0
    ux = <uint64_t>x if x >= 0 else (<uint64_t>0) - <uint64_t>x
    nbits = 64 - fw_clzll(ux)
    n = (nbits >> 3) + 1
    pw_store_le64(<char *>tmp, <uint64_t>x)
    memset(tmp + 8, 0xff if x < 0 else 0, 8)
    if x < 0 and n > 1 and tmp[n - 1] == 0xff and (tmp[n - 2] & 0x80):
        n -= 1
    p = pw_claim(e, 2 + n)
    if p == NULL:
        return -1
    p[0] = <char>OP_LONG1
    p[1] = <char>n
    memcpy(p + 2, tmp, n)
    return 0


cdef int pw_put_big_int(PwEnc *e, PyObject *value) noexcept:
    """LONG1/LONG4 for an int of 2**63 or more in magnitude (any int gets the
    stdlib's bytes here; smaller ones take pw_put_long_long), its two's complement bytes
    written straight into the output: pickle's encode_long computes
    (bit_length >> 3) + 1 bytes of to_bytes(signed=True), then drops a
    negative number's top byte when it is pure sign extension."""
    cdef size_t nbits = pw_long_numbits(value)
    cdef Py_ssize_t n, header
    cdef unsigned char *d
    cdef char *p
    if nbits == <size_t>-1 and c_err_occurred() != NULL:
        return -1
    if nbits >> 3 >= 0x7fffffff:
        c_set_error(<PyObject *>OverflowError, "int too large to pickle")
        return -1
    n = <Py_ssize_t>(nbits >> 3) + 1
    header = 2 if n < 256 else 5
    p = pw_claim(e, header + n)
    if p == NULL:
        return -1
    d = <unsigned char *>(p + header)
    if pw_long_as_le_bytes(value, d, n) < 0:
        e.len -= header + n
        return -1
    if n > 1 and d[n - 1] == 0xff and (d[n - 2] & 0x80):
        # Only a negative number has a 0xff top byte here: a positive one's
        # (bit_length >> 3) + 1 bytes always leave its top byte below 0x80.
        n -= 1
        e.len -= 1
        if n == 255:
            # Trimmed to LONG1's range: the stdlib picks the opcode after trimming.
            memmove(p + 2, p + 5, n)
            e.len -= 3
            header = 2
    if header == 2:
        p[0] = <char>OP_LONG1
        p[1] = <char>n
    else:
        p[0] = <char>OP_LONG4
        pw_store_le32(p + 1, <uint32_t>n)
    return 0


cdef inline int pw_save_float(PwEnc *e, PyObject *obj) noexcept:
    return pw_save_float_value(e, c_float_value(obj))


cdef inline int pw_save_float_value(PwEnc *e, double value) noexcept:
    cdef char *p = pw_claim(e, 9)
    if p == NULL:
        return -1
    p[0] = <char>OP_BINFLOAT
    fw_store_f64(p + 1, value, FW_HOST_LITTLE)   # big-endian on the wire
    return 0


cdef inline int pw_save_short_ascii(PwEnc *e, PyObject *obj, int flags) noexcept:
    """SHORT_BINUNICODE (protocol 4+) for an ASCII str shorter than 256, with
    the memo handled; 0 when obj is not such a string (nothing written)."""
    cdef PwMemoSlot *slot = NULL
    cdef Py_ssize_t n
    cdef char *p
    if not c_is_compact_ascii(obj) or e.proto < 4:
        return 0
    n = c_str_length(obj)
    if n >= 256:
        return 0
    if not pw_unique(obj, flags):
        slot = pw_memo_room_for(e.memo, obj)
        if slot == NULL:
            return -1
        if slot.key != NULL:
            return -1 if pw_memo_get(e, slot.index) < 0 else 1
    p = pw_claim(e, 2 + n)
    if p == NULL:
        return -1
    p[0] = <char>OP_SHORT_BINUNICODE
    p[1] = <char>n
    fw_copy_short(p + 2, <const char *>c_str_data(obj), n)
    if slot != NULL and pw_memo_put_at(e, slot, obj) < 0:
        return -1
    return 1


cdef int pw_save_str(PwEnc *e, PyObject *obj, int flags) except -1:
    cdef bint unique = pw_unique(obj, flags)
    cdef PwMemoSlot *slot = NULL
    cdef Py_ssize_t n
    cdef const char *data
    cdef char *p
    cdef object encoded
    cdef int r = pw_save_short_ascii(e, obj, flags)
    if r != 0:
        return 0 if r > 0 else -1
    if not unique:
        slot = pw_memo_room_for(e.memo, obj)
        if slot == NULL:
            return -1
        if slot.key != NULL:
            return pw_memo_get(e, slot.index)
    if c_is_compact_ascii(obj):
        data = <const char *>c_str_data(obj)
        n = c_str_length(obj)
    else:
        data = c_utf8_and_size(obj, &n)
        if data == NULL:
            # Lone surrogates: the stdlib writes them with surrogatepass.
            if not c_err_matches(<PyObject *>UnicodeEncodeError):
                return -1
            c_err_clear()
            encoded = (<object>obj).encode("utf-8", "surrogatepass")
            data = c_bytes_data(<PyObject *>encoded)
            n = c_bytes_size(<PyObject *>encoded)
    # Nothing memoizes between the probe and the write, so `slot` stays the
    # key's place: encoding calls no user code, and code a finalizer might
    # run cannot reach this call's memo (a Pickler's is claimed for the dump).
    if n < 256 and e.proto >= 4:
        p = pw_reserve(e, 2 + n)
        p[0] = <char>OP_SHORT_BINUNICODE
        p[1] = <char>n
        fw_copy_short(p + 2, data, n)
    elif n < PW_FRAME_TARGET:
        p = pw_reserve(e, 5 + n)
        p[0] = <char>OP_BINUNICODE
        pw_store_le32(p + 1, <uint32_t>n)
        memcpy(p + 5, data, n)
    else:
        # A large payload may go to file.write, which can change the memo.
        if n <= 0xffffffff:
            pw_save_str_large(e, obj, data, n, OP_BINUNICODE, 4)
        elif e.proto >= 4:
            pw_save_str_large(e, obj, data, n, OP_BINUNICODE8, 8)
        else:
            raise pw_PicklingError("cannot serialize a string larger than 4GiB")
        return 0 if unique else pw_memo_put(e, obj)
    if not unique:
        return pw_memo_put_at(e, slot, obj)
    return 0


cdef int pw_save_str_large(PwEnc *e, PyObject *obj, const char *data, Py_ssize_t n,
                           unsigned char op, int width) except -1:
    cdef char header[9]
    header[0] = <char>op
    if width == 4:
        pw_store_le32(header + 1, <uint32_t>n)
    else:
        pw_store_le64(header + 1, <uint64_t>n)
    # The payload handed to a file must be the UTF-8 bytes, not the str.
    return pw_write_payload(e, header, 1 + width, data, n,
                            (<object>obj).encode("utf-8", "surrogatepass") if e.write != NULL and e.framing else None)


cdef int pw_write_bytes_data(PwEnc *e, const char *data, Py_ssize_t n, object payload) except -1:
    """SHORT_BINBYTES / BINBYTES / BINBYTES8 followed by the data."""
    cdef char header[9]
    cdef Py_ssize_t header_len
    if n < 256:
        header[0] = <char>OP_SHORT_BINBYTES
        header[1] = <char>n
        header_len = 2
    elif n <= 0xffffffff:
        header[0] = <char>OP_BINBYTES
        pw_store_le32(header + 1, <uint32_t>n)
        header_len = 5
    elif e.proto >= 4:
        header[0] = <char>OP_BINBYTES8
        pw_store_le64(header + 1, <uint64_t>n)
        header_len = 9
    else:
        raise pw_PicklingError("cannot serialize a bytes object larger than 4 GiB")
    return pw_write_payload(e, header, header_len, data, n, payload)


cdef int pw_save_bytes(PwEnc *e, PyObject *obj, int flags) except -1:
    cdef Py_ssize_t n = c_bytes_size(obj)
    if e.proto < 3:
        # Protocol 2 has no bytes opcode: the stdlib reduces to codecs.encode.
        if n == 0:
            return pw_save_reduce(e, (bytes, ()), obj)
        return pw_save_reduce(
            e, (pw_codecs_encode, ((<bytes>obj).decode("latin1"), "latin1")), obj)
    pw_write_bytes_data(e, c_bytes_data(obj), n, <object>obj)
    if not pw_unique(obj, flags):
        if pw_memo_put(e, obj) < 0:
            return -1
    return 0


# ---------------------------------------------------------------------------
# The dispatcher.

cdef inline int pw_save_atom(PwEnc *e, PyObject *obj) noexcept:
    """Write obj and return 1 if it is an atom that cannot run user code: a
    short ASCII str, an int below 2**63, a float, None, True, False, or a
    reference to an object already in the memo (and no frame boundary or
    persistent_id call is due). Return 0, writing nothing, for anything else
    (pw_save then handles it), -1 on error. Container loops write most items
    this way, without taking a reference.

    Room for the longest fixed-size atom is made first, so that the int,
    float and singleton paths store straight into the buffer and call
    nothing: the compiler then keeps them free of register saves."""
    cdef TypeObject *t
    cdef long long x
    cdef char *p
    if e.len >= e.boundary or e.persistent_id != NULL:
        return 0
    if e.cap - e.len < PW_ATOM_ROOM:
        return pw_atom_grow(e, obj)
    t = c_type_of(obj)
    p = e.buf + e.len
    if t == &c_str_type:
        return pw_atom_str(e, obj)
    if t == &c_long_type:
        # One digit first: most ints in a container are small, and reading
        # one needs neither the digit loop nor the sign's separate handling.
        if not pw_compact_long(obj, &x) and not pw_int63_value(obj, &x):
            return 0                    # pw_save's wide-int path
        if 0 <= x <= 0xff:
            p[0] = <char>OP_BININT1
            p[1] = <char>x
            e.len += 2
        elif 0 <= x <= 0xffff:
            p[0] = <char>OP_BININT2
            p[1] = <char>(x & 0xff)
            p[2] = <char>(x >> 8)
            e.len += 3
        elif -0x80000000 <= x <= 0x7fffffff:
            p[0] = <char>OP_BININT
            pw_store_le32(p + 1, <uint32_t>x)
            e.len += 5
        else:
            return pw_atom_long1(e, x)
        return 1
    if t == &c_float_type:
        p[0] = <char>OP_BINFLOAT
        fw_store_f64(p + 1, c_float_value(obj), FW_HOST_LITTLE)   # big-endian on the wire
        e.len += 9
        return 1
    if obj == c_none:
        p[0] = <char>OP_NONE
    elif obj == c_true:
        p[0] = <char>OP_NEWTRUE
    elif obj == c_false:
        p[0] = <char>OP_NEWFALSE
    elif not pw_unique(obj, 0) and e.memo.used:
        return pw_atom_memo_ref(e, obj)
    else:
        return 0
    e.len += 1
    return 1


# The other cases of pw_save_atom, called through pointers: the compiler
# would otherwise inline some of them (which ones depends on the compiler and
# on the Python version's headers: 3.13 took in the memo reference and the
# buffer growth), and the register saves their calls need would then cost
# every int, float and None as well.

cdef int pw_save_atom_grow(PwEnc *e, PyObject *obj) noexcept:
    if pw_grow(e, PW_ATOM_ROOM) < 0:
        return -1
    return pw_save_atom(e, obj)


cdef int pw_save_atom_str(PwEnc *e, PyObject *obj) noexcept:
    return pw_save_short_ascii(e, obj, 0)


cdef int pw_save_atom_long1(PwEnc *e, long long x) noexcept:
    return -1 if pw_put_long_long(e, x) < 0 else 1


cdef int pw_save_atom_memo_ref(PwEnc *e, PyObject *obj) noexcept:
    """A shared object seen before: the memo reference needs no user code."""
    cdef Py_ssize_t idx = pw_memo_index(e, obj)
    if idx < 0:
        return 0
    return -1 if pw_memo_get(e, idx) < 0 else 1


cdef int (*pw_atom_grow)(PwEnc *e, PyObject *obj) noexcept
cdef int (*pw_atom_str)(PwEnc *e, PyObject *obj) noexcept
cdef int (*pw_atom_long1)(PwEnc *e, long long x) noexcept
cdef int (*pw_atom_memo_ref)(PwEnc *e, PyObject *obj) noexcept
pw_atom_grow = pw_save_atom_grow
pw_atom_str = pw_save_atom_str
pw_atom_long1 = pw_save_atom_long1
pw_atom_memo_ref = pw_save_atom_memo_ref


cdef int pw_save_held(PwEnc *e, PyObject *obj) except -1:
    """pw_save for an item borrowed from a mutable container: holds a
    reference while user code reached from it could mutate the container."""
    c_incref(obj)
    try:
        return pw_save(e, obj, PW_HELD)
    finally:
        c_decref(obj)


cdef int pw_save(PwEnc *e, PyObject *obj, int flags) except -1:
    cdef TypeObject *t = c_type_of(obj)
    cdef Py_ssize_t idx
    if e.len >= e.boundary:
        pw_boundary(e)
    if e.persistent_id != NULL and not (flags & PW_PERS_SAVE):
        if pw_save_pers(e, obj):
            return 0
    # Atoms first, most frequent first (of these only str is memoized).
    if t == &c_str_type:
        return pw_save_str(e, obj, flags)
    if t == &c_long_type:
        return pw_save_int(e, obj)
    if t == &c_float_type:
        return pw_save_float(e, obj)
    if obj == c_none:
        return pw_write1(e, OP_NONE)
    if obj == c_true:
        return pw_write1(e, OP_NEWTRUE)
    if obj == c_false:
        return pw_write1(e, OP_NEWFALSE)
    if not pw_unique(obj, flags):
        idx = pw_memo_index(e, obj)
        if idx >= 0:
            return pw_memo_get(e, idx)
    if t == &c_bytes_type:
        return pw_save_bytes(e, obj, flags)
    if t == &c_bytearray_type:
        return pw_save_bytearray(e, obj)
    # Only containers and reducible objects recurse; atoms above stay cheap.
    if c_enter_recursive_call(" while pickling an object"):
        return -1
    try:
        if t == &c_list_type:
            return pw_save_list(e, obj)
        if t == &c_dict_type:
            return pw_save_dict(e, obj)
        if t == &c_tuple_type:
            return pw_save_tuple(e, obj, flags)
        return pw_save_other(e, obj, t, flags)
    finally:
        c_leave_recursive_call()


cdef int pw_save_pers(PwEnc *e, PyObject *obj) except -1:
    """1 if persistent_id claimed obj (and its id was written), else 0."""
    cdef object pid = (<object>e.persistent_id)(<object>obj)
    if pid is None:
        return 0
    pw_save(e, <PyObject *>pid, PW_PERS_SAVE)
    pw_write1(e, OP_BINPERSID)
    return 1


cdef int pw_fast_enter(PwEnc *e, PyObject *obj) except -1:
    """Fast mode has no memo; past a nesting depth, track ids to turn a cycle
    into the stdlib's ValueError instead of endless recursion."""
    cdef object key
    e.fast_nesting += 1
    if e.fast_nesting >= PW_FAST_NESTING_LIMIT:
        if e.fast_memo == NULL:
            d = {}
            c_incref(<PyObject *>d)
            e.fast_memo = <PyObject *>d
        key = <Py_ssize_t>obj
        if key in <dict>e.fast_memo:
            raise ValueError(
                "fast mode: can't pickle cyclic objects including object type %s at %#x"
                % (c_type_of(obj).tp_name.decode("utf-8", "replace"), <Py_ssize_t>obj))
        (<dict>e.fast_memo)[key] = None
    return 0


cdef int pw_fast_leave(PwEnc *e, PyObject *obj) except -1:
    if e.fast_nesting >= PW_FAST_NESTING_LIMIT and e.fast_memo != NULL:
        (<dict>e.fast_memo).pop(<Py_ssize_t>obj, None)
    e.fast_nesting -= 1
    return 0


# ---------------------------------------------------------------------------
# Builtin containers.

cdef int pw_save_list(PwEnc *e, PyObject *obj) except -1:
    if e.fast:
        pw_fast_enter(e, obj)
    if pw_put_empty(e, OP_EMPTY_LIST, obj) < 0:
        return -1
    if c_list_size(obj):
        # The C pickle counts the items of a non-empty list (or dict) as one
        # more level of recursion; counting alike raises RecursionError at
        # exactly the same depth, and bounds our C stack the same way.
        if c_enter_recursive_call(" while pickling an object"):
            return -1
        try:
            pw_save_list_items(e, obj)
        finally:
            c_leave_recursive_call()
    if e.fast:
        pw_fast_leave(e, obj)
    return 0


cdef int pw_save_list_items(PwEnc *e, PyObject *obj) except -1:
    cdef Py_ssize_t total = 0, batch
    cdef PyObject *item
    cdef int r
    if c_list_size(obj) == 1:
        item = c_list_item(obj, 0)
        r = pw_save_atom(e, item)
        if r < 0:
            return -1
        if r == 0:
            pw_save_held(e, item)
        pw_write1(e, OP_APPEND)
    elif c_list_size(obj) > 1:
        while total < c_list_size(obj):
            pw_write1(e, OP_MARK)
            batch = 0
            while batch < PW_BATCHSIZE and total < c_list_size(obj):
                item = c_list_item(obj, total)
                r = pw_save_atom(e, item)
                if r < 0:
                    return -1
                if r == 0:
                    pw_save_held(e, item)
                total += 1
                batch += 1
            pw_write1(e, OP_APPENDS)
    return 0


cdef inline int pw_save_dict_item(PwEnc *e, PyObject *key, PyObject *value) except -1:
    # The value is held while the key is written too: user code run by the
    # key may delete the entry.
    cdef int r = pw_save_atom(e, key)
    if r < 0:
        return -1
    if r > 0:
        r = pw_save_atom(e, value)
        if r < 0:
            return -1
        if r == 0:
            pw_save_held(e, value)
        return 0
    c_incref(value)
    try:
        pw_save_held(e, key)
        pw_save_held(e, value)
    finally:
        c_decref(value)
    return 0


cdef int pw_save_dict(PwEnc *e, PyObject *obj) except -1:
    if e.fast:
        pw_fast_enter(e, obj)
    if pw_put_empty(e, OP_EMPTY_DICT, obj) < 0:
        return -1
    if c_dict_size(obj):
        if c_enter_recursive_call(" while pickling an object"):   # as for lists
            return -1
        try:
            pw_save_dict_items(e, obj)
        finally:
            c_leave_recursive_call()
    if e.fast:
        pw_fast_leave(e, obj)
    return 0


cdef int pw_save_dict_items(PwEnc *e, PyObject *obj) except -1:
    cdef Py_ssize_t pos = 0, size, batch
    cdef PyObject *key
    cdef PyObject *value
    size = c_dict_size(obj)
    if size == 1:
        fw_dict_next(obj, &pos, &key, &value)
        pw_save_dict_item(e, key, value)
        pw_write1(e, OP_SETITEM)
    elif size > 1:
        batch = PW_BATCHSIZE
        while batch == PW_BATCHSIZE:
            pw_write1(e, OP_MARK)
            batch = 0
            while batch < PW_BATCHSIZE and fw_dict_next(obj, &pos, &key, &value):
                pw_save_dict_item(e, key, value)
                batch += 1
            pw_write1(e, OP_SETITEMS)
            if c_dict_size(obj) != size:
                raise RuntimeError("dictionary changed size during iteration")
    return 0


cdef int pw_save_tuple(PwEnc *e, PyObject *obj, int flags) except -1:
    # Items are borrowed: a tuple cannot drop them while it is alive, and our
    # caller keeps the tuple alive.
    cdef Py_ssize_t n = c_tuple_size(obj), i, idx
    cdef bint unique = pw_unique(obj, flags)
    cdef char *p
    cdef int r
    if n == 0:
        return pw_write1(e, OP_EMPTY_TUPLE)
    if n <= 3:
        for i in range(n):
            r = pw_save_atom(e, c_tuple_item(obj, i))
            if r < 0:
                return -1
            if r == 0:
                pw_save(e, c_tuple_item(obj, i), 0)
        # A tuple reachable from its own items was memoized while they were
        # written: drop the copy on the stack and refer to the memo instead.
        if not unique:
            idx = pw_memo_index(e, obj)
            if idx >= 0:
                p = pw_reserve(e, n)
                memset(p, OP_POP, n)
                return pw_memo_get(e, idx)
        pw_write1(e, OP_TUPLE1 + n - 1)
    else:
        pw_write1(e, OP_MARK)
        for i in range(n):
            r = pw_save_atom(e, c_tuple_item(obj, i))
            if r < 0:
                return -1
            if r == 0:
                pw_save(e, c_tuple_item(obj, i), 0)
        if not unique:
            idx = pw_memo_index(e, obj)
            if idx >= 0:
                pw_write1(e, OP_POP_MARK)
                return pw_memo_get(e, idx)
        pw_write1(e, OP_TUPLE)
    if not unique:
        if pw_memo_put(e, obj) < 0:
            return -1
    return 0


cdef extern from *:
    """
    /* A set's items in table order, as _pickle.c reads them (up to 3.12,
       with _PySet_NextEntry): no iterator object, no call per item. The
       table's layout and its markers are CPython's public ones
       (Include/cpython/setobject.h: a free slot has no key, a deleted one a
       hash of -1), the same from 3.11 to 3.13 with the GIL; other builds use
       an iterator. The table is re-read on every call, so a callback that
       changed the set between two calls is seen (and the size check after
       each batch reports it). */
    #if PY_VERSION_HEX < 0x030E0000 && !defined(Py_GIL_DISABLED)
    #define PW_SET_TABLE 1
    static inline int pw_set_table_next(PyObject *set, Py_ssize_t *pos, PyObject **key) {
        PySetObject *so = (PySetObject *)set;
        setentry *table = so->table;
        Py_ssize_t i = *pos, mask = so->mask;
        for (; i <= mask; i++) {
            if (table[i].key != NULL && table[i].hash != -1) {
                *key = table[i].key;
                *pos = i + 1;
                return 1;
            }
        }
        *pos = i;
        return 0;
    }
    #else
    #define PW_SET_TABLE 0
    static inline int pw_set_table_next(PyObject *set, Py_ssize_t *pos, PyObject **key) {
        (void)set; (void)pos; (void)key;
        return 0;
    }
    #endif
    """
    bint PW_SET_TABLE
    bint pw_set_table_next(PyObject *s, Py_ssize_t *pos, PyObject **key) noexcept
    PyObject *pw_iter_next "PyIter_Next"(PyObject *it)


cdef object pw_set_items(PyObject *obj):
    """What pw_next_set_item() reads `obj` (an exact set or frozenset) with:
    None where it reads the table, else an iterator."""
    return None if PW_SET_TABLE else iter(<object>obj)


cdef int pw_next_set_item(PyObject *obj, Py_ssize_t *pos, object items, PyObject **item) except -1:
    """1 and the next item of `obj` in *item (a new reference: saving it may run
    Python that removes it from the set), or 0 at the end."""
    if items is None:
        if not pw_set_table_next(obj, pos, item):
            return 0
        c_incref(item[0])
        return 1
    item[0] = pw_iter_next(<PyObject *>items)
    if item[0] == NULL:
        if c_err_occurred() != NULL:
            return -1
        return 0
    return 1


cdef int pw_save_set(PwEnc *e, PyObject *obj) except -1:
    cdef Py_ssize_t size, batch, pos = 0
    cdef PyObject *entry
    cdef object items, item
    if e.proto < 4:
        return pw_save_reduce(e, (set, (list(<object>obj),)), obj)
    if e.fast:
        pw_fast_enter(e, obj)
    if pw_put_empty(e, OP_EMPTY_SET, obj) < 0:
        return -1
    size = c_set_size(obj)
    if size:
        items = pw_set_items(obj)
        batch = PW_BATCHSIZE
        while batch == PW_BATCHSIZE:
            pw_write1(e, OP_MARK)
            batch = 0
            while batch < PW_BATCHSIZE and pw_next_set_item(obj, &pos, items, &entry):
                item = <object>entry
                c_decref(entry)  # `item` holds it now
                pw_save(e, <PyObject *>item, PW_HELD)
                batch += 1
            pw_write1(e, OP_ADDITEMS)
            if c_set_size(obj) != size:
                raise RuntimeError("set changed size during iteration")
    if e.fast:
        pw_fast_leave(e, obj)
    return 0


cdef int pw_save_frozenset(PwEnc *e, PyObject *obj, int flags) except -1:
    cdef object items, item
    cdef PyObject *entry
    cdef Py_ssize_t idx, pos = 0
    if e.proto < 4:
        return pw_save_reduce(e, (frozenset, (list(<object>obj),)), obj)
    if e.fast:
        pw_fast_enter(e, obj)
    pw_write1(e, OP_MARK)
    items = pw_set_items(obj)
    while pw_next_set_item(obj, &pos, items, &entry):
        item = <object>entry
        c_decref(entry)  # `item` holds it now
        pw_save(e, <PyObject *>item, PW_HELD)
    if e.fast:
        pw_fast_leave(e, obj)
    idx = pw_memo_index(e, obj)
    if idx >= 0:
        pw_write1(e, OP_POP_MARK)
        return pw_memo_get(e, idx)
    pw_write1(e, OP_FROZENSET)
    if not pw_unique(obj, flags):
        if pw_memo_put(e, obj) < 0:
            return -1
    return 0


cdef int pw_save_bytearray(PwEnc *e, PyObject *obj) except -1:
    cdef Py_ssize_t n = c_bytearray_size(obj)
    cdef char header[9]
    cdef char *p
    if e.proto < 5:
        if n == 0:
            return pw_save_reduce(e, (bytearray, ()), obj)
        return pw_save_reduce(e, (bytearray, (bytes(<object>obj),)), obj)
    if n < PW_FRAME_TARGET:
        # Small enough for any frame: one claim, no payload object.
        p = pw_reserve(e, 9 + n)
        p[0] = <char>OP_BYTEARRAY8
        pw_store_le64(p + 1, <uint64_t>n)
        memcpy(p + 9, c_bytearray_data(obj), n)
        return pw_memo_put(e, obj)
    header[0] = <char>OP_BYTEARRAY8
    pw_store_le64(header + 1, <uint64_t>n)
    pw_write_payload(e, header, 9, c_bytearray_data(obj), n, <object>obj)
    return pw_memo_put(e, obj)


cdef int pw_save_picklebuffer(PwEnc *e, PyObject *obj) except -1:
    cdef const Py_buffer *view
    cdef bint in_band = True
    cdef char header[9]
    if e.proto < 5:
        raise pw_PicklingError("PickleBuffer can only be pickled with protocol >= 5")
    view = c_picklebuffer_view(obj)
    if view == NULL:
        return -1
    if not c_buffer_contiguous(view, b'A'):
        raise pw_PicklingError(
            "PickleBuffer can not be pickled when pointing to a non-contiguous buffer")
    if e.set_aside:
        if e.buffers == NULL:
            set_aside = []
            c_incref(<PyObject *>set_aside)
            e.buffers = <PyObject *>set_aside
        (<list>e.buffers).append(<object>obj)
        in_band = False
    elif e.buffer_callback != NULL:
        in_band = bool((<object>e.buffer_callback)(<object>obj))
    if in_band:
        if view.readonly:
            pw_write_bytes_data(e, <const char *>view.buf, view.len, memoryview(<object>obj))
        else:
            header[0] = <char>OP_BYTEARRAY8
            pw_store_le64(header + 1, <uint64_t>view.len)
            pw_write_payload(e, header, 9, <const char *>view.buf, view.len,
                             memoryview(<object>obj))
        return pw_memo_put(e, obj)
    pw_write1(e, OP_NEXT_BUFFER)
    if view.readonly:
        pw_write1(e, OP_READONLY_BUFFER)
    return 0


# ---------------------------------------------------------------------------
# Everything else: reducer_override, classes and functions by name, the
# dispatch tables, plain instances, and the __reduce_ex__ protocol.

cdef int pw_save_other(PwEnc *e, PyObject *obj, TypeObject *t, int flags) except -1:
    cdef object o = <object>obj
    cdef object rv = None
    cdef object reduce_func
    cdef PyObject *reduce_method
    cdef int shape
    cdef PyObject *slotnames = NULL
    if t == &c_set_type:
        return pw_save_set(e, obj)
    if t == &c_frozenset_type:
        return pw_save_frozenset(e, obj, flags)
    if t == &c_bytearray_type:
        return pw_save_bytearray(e, obj)
    if t == &c_picklebuffer_type:
        return pw_save_picklebuffer(e, obj)
    if e.reducer_override != NULL:
        rv = (<object>e.reducer_override)(o)
        if rv is not NotImplemented:
            return pw_save_reduce_value(e, obj, rv)
    if t == &c_type_type:
        return pw_save_type(e, o)
    if t == &c_function_type:
        return pw_save_global(e, o, None)
    # A table entry of None is called like any other (TypeError), as by _pickle.
    if e.dispatch_table == NULL:
        reduce_func = (<dict>pw_copyreg_dispatch_table).get(<object><PyObject *>t, pw_sentinel)
    else:
        try:
            reduce_func = (<object>e.dispatch_table)[<object><PyObject *>t]
        except KeyError:
            reduce_func = pw_sentinel
    if reduce_func is not pw_sentinel:
        if reduce_func is pw_copyreg_pickle_complex and t == &c_complex_type:
            if pw_save_value_type(e, obj, t):
                return 0
        rv = reduce_func(o)
    elif c_is_subtype(t, &c_type_type):
        return pw_save_global(e, o, None)
    else:
        # Not complex: without its copyreg entry it reduces through
        # object.__reduce_ex__ (NEWOBJ), which the encoder does not imitate.
        if pw_is_datetime_type(t) and pw_save_value_type(e, obj, t):
            return 0
        shape = pw_plain_instance(t, obj, &slotnames)
        if shape != PW_PLAIN_NO and pw_save_plain_instance(e, obj, t, shape, slotnames) == 0:
            return 0
        if t == pw_deque_type or t == pw_odict_type:
            rv = pw_collections_reduce(t, o)
            if rv is not None:
                return pw_save_reduce(e, <tuple>rv, obj)
        reduce_method = pw_class_reduce(t, obj)
        if reduce_method != NULL:
            rv = pw_call_class_reduce(reduce_method, o)
        else:
            rv = pw_call_reduce_ex_of(e, t, o)
        pw_learn_plain_instance(t, obj, rv)
    return pw_save_reduce_value(e, obj, rv)


cdef object pw_call_reduce_ex_of(PwEnc *e, TypeObject *t, object o):
    """o.__reduce_ex__(proto), or o.__reduce__() when o has no
    __reduce_ex__, as _pickle's save() calls them."""
    cdef object reduce_func
    if pw_plain_method(t, <PyObject *>PW_REDUCE_EX):
        return o.__reduce_ex__(e.proto)       # no bound method object
    # __reduce_ex__ = None is called (TypeError), as by _pickle.
    try:
        reduce_func = o.__reduce_ex__
    except AttributeError:
        reduce_func = pw_sentinel
    if reduce_func is not pw_sentinel:
        return reduce_func(e.proto)
    try:
        reduce_func = o.__reduce__
    except AttributeError:
        raise pw_PicklingError(
            "can't pickle %r object: %r" % (t.tp_name.decode("utf-8", "replace"), o))
    return reduce_func()


# --- deque and OrderedDict -----------------------------------------------------
# Their C __reduce__ asks object.__getstate__ for the instance state, which
# asks copyreg._slotnames for the class's slot names on every call: the class
# cannot cache them (its attributes are read-only), and copyreg's attempt to
# cache them raises and catches an exception each time. For an exact instance
# whose lookups are all the defaults, the encoder builds the same reduce value
# itself, in the same order, with the state read directly (the instance dict,
# or None when it is absent or empty: neither class has slots).

import collections
cdef object pw_deque = collections.deque
cdef object pw_odict = collections.OrderedDict
cdef TypeObject *pw_deque_type = <TypeObject *><PyObject *>pw_deque
cdef TypeObject *pw_odict_type = <TypeObject *><PyObject *>pw_odict
cdef object pw_copyreg_module = copyreg
cdef object pw_copyreg_slotnames = copyreg._slotnames
cdef str PW_ITEMS = "items"
cdef str PW_COPYREG = "copyreg"
cdef str PW_COPYREG_SLOTNAMES = "_slotnames"

cdef extern from *:
    """
    /* The instance dict of an object whose type keeps it in a slot of its
       own (not a managed dict), borrowed, without creating it; NULL when
       there is none. */
    static PyObject *pw_own_dict_slot(PyObject *obj) {
        PyObject **slot;
        if (Py_TYPE(obj)->tp_dictoffset == 0 || (Py_TYPE(obj)->tp_flags & Py_TPFLAGS_MANAGED_DICT))
            return NULL;
        slot = _PyObject_GetDictPtr(obj);
        return slot == NULL ? NULL : *slot;
    }
    /* `name` is in t's own __dict__ (3.12 keeps a static builtin type's
       dict out of tp_dict, behind PyType_GetDict). */
    static int pw_type_has_own(PyTypeObject *t, PyObject *name) {
        PyObject *d;
        int found;
    #if PY_VERSION_HEX >= 0x030C0000
        d = PyType_GetDict(t);
    #else
        d = Py_XNewRef(t->tp_dict);
    #endif
        found = d != NULL && PyDict_GetItem(d, name) != NULL;
        Py_XDECREF(d);
        return found;
    }
    """
    PyObject *pw_own_dict_slot(PyObject *obj) noexcept
    bint pw_type_has_own(TypeObject *t, PyObject *name) noexcept


cdef inline bint pw_default_slotnames(TypeObject *t) noexcept:
    """object.__getstate__ would get t's slot names from the stdlib's own
    copyreg._slotnames (found as CPython finds it: sys.modules at the
    interpreter level), not from a __slotnames__ cached on t."""
    cdef PyObject *module
    if pw_type_has_own(t, <PyObject *>PW_SLOTNAMES):
        return False
    module = c_dict_get(pw_modules_dict(), <PyObject *>PW_COPYREG)
    if module != <PyObject *>pw_copyreg_module or c_type_of(module) != &pw_module_type:
        return False
    return c_dict_get(pw_module_dict(module), <PyObject *>PW_COPYREG_SLOTNAMES) == \
        <PyObject *>pw_copyreg_slotnames


cdef object pw_collections_reduce(TypeObject *t, object o):
    """o.__reduce__() for an exact deque or OrderedDict (see above), or
    None when the encoder must call it."""
    cdef PyObject *d
    cdef object state = None
    if FW_FREE_THREADED:
        # The dict slot is read without a lock: another thread may replace it.
        return None
    d = pw_own_dict_slot(<PyObject *>o)
    if d != NULL and c_dict_size(d):
        if (c_dict_get(d, <PyObject *>PW_REDUCE) != NULL or c_dict_get(d, <PyObject *>PW_REDUCE_EX) != NULL
                or c_dict_get(d, <PyObject *>PW_GETSTATE) != NULL or c_dict_get(d, <PyObject *>PW_ITEMS) != NULL):
            return None
        state = <object>d
    if not pw_default_slotnames(t):
        return None
    if t == pw_odict_type:
        return (pw_odict, (), state, None, iter(o.items()))
    maxlen = o.maxlen
    return (pw_deque, () if maxlen is None else ((), maxlen), state, iter(o))


# --- Immutable value types of the standard library --------------------------
# complex (reduced by copyreg's pickle_complex) and the datetime family are
# static types whose reduce values are fixed by CPython's code and cannot be
# patched (their attributes are read-only), so the encoder writes what pw_save_reduce would write for that
# value -- the class, the argument tuple, REDUCE or NEWOBJ, the memo entry --
# without calling __reduce_ex__ and building the tuples. Only exact types,
# and only when neither reducer_override nor a dispatch_table entry claimed
# the object first.

pw_datetime_import()


cdef int pw_save_value_type(PwEnc *e, PyObject *obj, TypeObject *t) except -1:
    """1 if obj was an exact complex/date/time/datetime/timedelta and is now
    written (memoized as the reduce path would), else 0 with nothing written."""
    cdef unsigned char state[16]
    cdef object field
    cdef PyObject *tzinfo = NULL
    cdef int n
    cdef Py_ssize_t idx
    cdef char *p
    if e.proto < 3:
        return 0                     # protocol 2 writes bytes through a reduce of its own
    if t == &c_complex_type:
        # Only reached when copyreg's own pickle_complex is the registered
        # reducer: (complex, (real, imag)).
        pw_save(e, <PyObject *>t, 0)
        if (pw_save_float_value(e, c_complex_real(obj)) < 0
                or pw_save_float_value(e, c_complex_imag(obj)) < 0):
            return -1
        pw_write2(e, OP_TUPLE2, OP_REDUCE)
    elif t == pw_delta_type:
        # timedelta.__reduce__: (timedelta, (days, seconds, microseconds)).
        pw_save(e, <PyObject *>t, 0)
        # Through pw_save: another inlined call site of pw_put_small_int
        # would tip the compiler into calling it out of line in every loop.
        for field in (pw_delta_days(obj), pw_delta_seconds(obj), pw_delta_microseconds(obj)):
            pw_save(e, <PyObject *>field, 0)
        pw_write2(e, OP_TUPLE3, OP_REDUCE)
    else:
        n = pw_datetime_state(obj, t, e.proto, state, &tzinfo)
        if n == 0:
            return 0
        # __reduce_ex__: (cls, (state_bytes,)) or (cls, (state_bytes, tzinfo)).
        pw_save(e, <PyObject *>t, 0)
        p = pw_reserve(e, 2 + n)
        p[0] = <char>OP_SHORT_BINBYTES
        p[1] = <char>n
        memcpy(p + 2, state, n)
        if tzinfo != NULL:
            # The reduce tuple would hold a second reference: the same memo
            # decision (pw_unique) as on the reduce path.
            c_incref(tzinfo)
            try:
                pw_save(e, tzinfo, 0)
            finally:
                c_decref(tzinfo)
            pw_write2(e, OP_TUPLE2, OP_REDUCE)
        else:
            pw_write2(e, OP_TUPLE1, OP_REDUCE)
    idx = pw_memo_index(e, obj)
    if idx >= 0:
        pw_write1(e, OP_POP)
        pw_memo_get(e, idx)
        return 1
    if pw_memo_put(e, obj) < 0:
        return -1
    return 1


# --- A class-level __reduce__ ---------------------------------------------------
# object.__reduce_ex__ looks __reduce__ up on the instance (a bound method),
# looks it up again on the class to see whether it overrides object's, and
# calls the bound method. When every one of those lookups is the generic one
# (no __getattribute__/__getattr__, metaclass exactly type, no instance
# attribute shadowing either name) and the class's __reduce__ is a plain
# function or a C method (a method descriptor: deque, defaultdict,
# OrderedDict, Decimal), that is exactly the function called with the
# instance.

cdef extern from *:
    """
    /* f(arg), f held for the call (a __reduce__ may delete itself from its
       class). The call into the builtin __reduce_ex__ it replaces counts one
       level of recursion: counting it here keeps RecursionError at the
       stdlib's exact depth. */
    static PyObject *pw_call_one(PyObject *f, PyObject *arg) {
        PyObject *r;
        if (Py_EnterRecursiveCall(" while calling a Python object"))
            return NULL;
        Py_INCREF(f);
        r = PyObject_Vectorcall(f, &arg, 1, NULL);
        Py_DECREF(f);
        Py_LeaveRecursiveCall();
        return r;
    }
    """
    object pw_call_one(PyObject *f, PyObject *arg)

cdef extern from *:
    """
    /* 1 when looking `name` up on obj the generic way finds f, an attribute
       of obj's class, not shadowed by an instance attribute (obj.name is f
       bound to obj); 0 when it finds something else; -1 on error. Unlike
       reading obj.__dict__, this neither creates a C type's dict (whose
       __reduce__ may tell "no dict" from "empty dict": functools.partial)
       nor turns a Python instance's inline attribute values into a dict
       (after which its methods read their attributes more slowly). */
    static int pw_finds_class_attr(PyObject *obj, PyObject *name, PyObject *f) {
        PyObject *found = NULL;
        int unbound = _PyObject_GetMethod(obj, name, &found);
        if (found == NULL)
            return -1;
        unbound = unbound && found == f;
        Py_DECREF(found);
        return unbound;
    }
    """
    TypeObject pw_method_descr_type "PyMethodDescr_Type"
    int pw_finds_class_attr(PyObject *obj, PyObject *name, PyObject *f) except -1

cdef PyObject *pw_object_reduce_ex = c_type_lookup(&c_object_type, <PyObject *>PW_REDUCE_EX)
cdef PyObject *pw_object_reduce = c_type_lookup(&c_object_type, <PyObject *>PW_REDUCE)


cdef PyObject *pw_class_reduce(TypeObject *t, PyObject *obj) except? NULL:
    """The class's __reduce__ function when object.__reduce_ex__ would call
    it with obj and nothing else (see above), else NULL. Borrowed."""
    cdef PyObject *f
    if t.tp_getattro != c_object_type.tp_getattro or c_type_of(<PyObject *>t) != &c_type_type:
        return NULL
    if c_type_lookup(t, <PyObject *>PW_REDUCE_EX) != pw_object_reduce_ex:
        return NULL
    f = c_type_lookup(t, <PyObject *>PW_REDUCE)
    # A method descriptor is called with the instance as its first argument,
    # as its bound form would be; object's own __reduce__ is one, and is the
    # default, not an override.
    if f == NULL or f == pw_object_reduce or (c_type_of(f) != &c_function_type
                                              and c_type_of(f) != &pw_method_descr_type):
        return NULL
    if t.tp_dictoffset != 0 and not (
            pw_finds_class_attr(obj, <PyObject *>PW_REDUCE, f)
            and pw_finds_class_attr(obj, <PyObject *>PW_REDUCE_EX, pw_object_reduce_ex)):
        return NULL
    return f


cdef inline object pw_call_class_reduce(PyObject *f, object o):
    return pw_call_one(f, <PyObject *>o)


cdef inline bint pw_plain_method(TypeObject *t, PyObject *name) noexcept:
    """True when looking `name` up on an instance of t cannot fail: t's
    attribute lookup is object's, and the class attribute is found and is not
    a data descriptor (whose __get__ could raise AttributeError and send the
    stdlib on to __reduce__)."""
    cdef PyObject *attr
    if t.tp_getattro != c_object_type.tp_getattro:
        return False
    attr = c_type_lookup(t, name)
    return attr != NULL and c_type_of(attr).tp_descr_set == NULL


cdef int pw_save_reduce_value(PwEnc *e, PyObject *obj, object rv) except -1:
    if isinstance(rv, str):
        return pw_save_global(e, <object>obj, rv)
    if not isinstance(rv, tuple):
        raise pw_PicklingError("__reduce__ must return a string or tuple")
    return pw_save_reduce(e, <tuple>rv, obj)


cdef int pw_save_reduce(PwEnc *e, tuple rv, PyObject *obj) except -1:
    """Write what a __reduce__ value describes (obj NULL: do not memoize)."""
    cdef Py_ssize_t n = c_tuple_size(<PyObject *>rv)
    cdef PyObject *func
    # The common value, (cls, args) or (cls, args, state), needs none of the
    # general path's checks: a class is callable, and one whose metaclass is
    # exactly type has the __name__ its type object says.
    if n == 2 or n == 3:
        func = c_tuple_item(<PyObject *>rv, 0)
        if (c_type_of(func) == &c_type_type and c_type_of(c_tuple_item(<PyObject *>rv, 1)) == &c_tuple_type
                and not pw_type_named_newobj(<TypeObject *>func)):
            return pw_save_class_call(e, <PyObject *>rv, obj, n)
    return pw_save_reduce_general(e, rv, obj)


cdef inline int pw_save_member(PwEnc *e, PyObject *item, bint owner_alone) except -1:
    """pw_save of an item borrowed from a reduce value: when nothing but us
    holds that value, an item it alone holds cannot be met again (no memo
    entry); otherwise a reference is held so that it never counts as alone."""
    if owner_alone:
        return pw_save(e, item, 0)
    c_incref(item)
    try:
        return pw_save(e, item, 0)
    finally:
        c_decref(item)


cdef int pw_save_class_call(PwEnc *e, PyObject *rv, PyObject *obj, Py_ssize_t n) except -1:
    """pw_save_reduce for (cls, args[, state]) as that function tells it:
    REDUCE, the memo entry, BUILD. The items are borrowed from rv, which the
    caller holds. Protocol 2 memoizes them all: CPython holds that protocol
    to the exact bytes Python 2 wrote (test_pickle_to_2x: range, set)."""
    cdef bint alone = e.proto > 2 and c_refcnt(rv) == 1
    cdef PyObject *state = c_tuple_item(rv, 2) if n == 3 else c_none
    cdef Py_ssize_t idx
    pw_save_member(e, c_tuple_item(rv, 0), alone)
    pw_save_member(e, c_tuple_item(rv, 1), alone)
    pw_write1(e, OP_REDUCE)
    if obj != NULL:
        idx = pw_memo_index(e, obj)
        if idx >= 0:
            pw_write1(e, OP_POP)
            return pw_memo_get(e, idx)
        if pw_memo_put(e, obj) < 0:
            return -1
    if state != c_none:
        pw_save_member(e, state, alone)
        pw_write1(e, OP_BUILD)
    return 0


cdef int pw_save_reduce_general(PwEnc *e, tuple rv, PyObject *obj) except -1:
    cdef Py_ssize_t size = len(rv)
    cdef Py_ssize_t idx
    cdef object func, args, state, listitems, dictitems, state_setter, name, cls, kwargs
    cdef bint use_newobj = False, use_newobj_ex = False
    if size < 2 or size > 6:
        raise pw_PicklingError("tuple returned by __reduce__ must contain 2 through 6 elements")
    func = rv[0]
    args = rv[1]
    state = rv[2] if size > 2 else None
    listitems = rv[3] if size > 3 else None
    dictitems = rv[4] if size > 4 else None
    state_setter = rv[5] if size > 5 else None
    if not callable(func):
        raise pw_PicklingError("first item of the tuple returned by __reduce__ must be callable")
    if not isinstance(args, tuple):
        raise pw_PicklingError("second item of the tuple returned by __reduce__ must be a tuple")
    if listitems is not None and not pw_is_iterator(listitems):
        raise pw_PicklingError(
            "fourth element of the tuple returned by __reduce__ must be an iterator, not %s"
            % type(listitems).__name__)
    if dictitems is not None and not pw_is_iterator(dictitems):
        raise pw_PicklingError(
            "fifth element of the tuple returned by __reduce__ must be an iterator, not %s"
            % type(dictitems).__name__)
    if state_setter is not None and not callable(state_setter):
        raise pw_PicklingError(
            "sixth element of the tuple returned by __reduce__ must be a function, not %s"
            % type(state_setter).__name__)

    if e.proto >= 2:
        # The stdlib tells NEWOBJ by the callable's __name__; copyreg's own
        # functions and a plain class (whose __name__ is its ht_name) are
        # told without the attribute lookup and string comparisons.
        if func is pw_newobj:
            use_newobj = True
        elif func is pw_newobj_ex:
            use_newobj_ex = True
        else:
            if type(func) is type and ((<TypeObject *><PyObject *>func).tp_flags & Py_TPFLAGS_HEAPTYPE):
                name = c_heap_type_name(<TypeObject *><PyObject *>func)
            else:
                try:
                    name = func.__name__
                except AttributeError:
                    name = None
            if name is not None:
                use_newobj_ex = pw_str_is_ascii(<PyObject *>name, "__newobj_ex__", 13)
                use_newobj = not use_newobj_ex and pw_str_is_ascii(<PyObject *>name, "__newobj__", 10)

    if use_newobj_ex:
        if len(args) != 3:
            raise pw_PicklingError(
                "length of the NEWOBJ_EX argument tuple must be exactly 3, not %d" % len(args))
        cls, newargs, kwargs = args
        if not isinstance(cls, type):
            raise pw_PicklingError(
                "first item from NEWOBJ_EX argument tuple must be a class, not %s"
                % type(cls).__name__)
        if not isinstance(newargs, tuple):
            raise pw_PicklingError(
                "second item from NEWOBJ_EX argument tuple must be a tuple, not %s"
                % type(newargs).__name__)
        if not isinstance(kwargs, dict):
            raise pw_PicklingError(
                "third item from NEWOBJ_EX argument tuple must be a dict, not %s"
                % type(kwargs).__name__)
        if e.proto >= 4:
            pw_save(e, <PyObject *>cls, 0)
            pw_save(e, <PyObject *>newargs, 0)
            pw_save(e, <PyObject *>kwargs, 0)
            pw_write1(e, OP_NEWOBJ_EX)
        else:
            func = pw_partial(cls.__new__, cls, *newargs, **kwargs)
            pw_save(e, <PyObject *>func, 0)
            pw_save(e, <PyObject *>(), 0)
            pw_write1(e, OP_REDUCE)
    elif use_newobj:
        if len(args) < 1:
            raise pw_PicklingError("__newobj__ arglist is empty")
        cls = args[0]
        if not isinstance(cls, type):
            raise pw_PicklingError("args[0] from __newobj__ args is not a type")
        if obj != NULL and (<object>obj).__class__ is not cls:
            raise pw_PicklingError("args[0] from __newobj__ args has the wrong class")
        pw_save(e, <PyObject *>cls, 0)
        newargs = args[1:]
        pw_save(e, <PyObject *>newargs, 0)
        pw_write1(e, OP_NEWOBJ)
    else:
        pw_save(e, <PyObject *>func, 0)
        # As in pw_save_class_call: `args` holds the one extra reference.
        pw_save(e, <PyObject *>args,
                PW_HELD if e.proto > 2 and c_refcnt(<PyObject *>rv) == 1 else 0)
        pw_write1(e, OP_REDUCE)

    if obj != NULL:
        # Already memoized means obj was reached again while writing its own
        # arguments: discard the copy on the stack and refer to the memo.
        idx = pw_memo_index(e, obj)
        if idx >= 0:
            pw_write1(e, OP_POP)
            return pw_memo_get(e, idx)
        if pw_memo_put(e, obj) < 0:
            return -1

    if listitems is not None:
        pw_batch_list(e, listitems)
    if dictitems is not None:
        pw_batch_dict(e, dictitems)
    if state is not None:
        if state_setter is None:
            pw_save(e, <PyObject *>state, 0)
            pw_write1(e, OP_BUILD)
        else:
            # state_setter(obj, state) via REDUCE, result popped: the call only
            # updates obj in place.
            pw_save(e, <PyObject *>state_setter, 0)
            pw_save(e, obj, 0)
            pw_save(e, <PyObject *>state, 0)
            pw_write1(e, OP_TUPLE2)
            pw_write1(e, OP_REDUCE)
            pw_write1(e, OP_POP)
    return 0


cdef extern from *:
    """
    /* A str (or subclass) whose characters are the ASCII text lit[0:n],
       compared as _PyUnicode_Equal does (never a subclass's __eq__). */
    static int pw_str_is_ascii(PyObject *s, const char *lit, Py_ssize_t n) {
        if (!PyUnicode_Check(s))
            return 0;
    #if PY_VERSION_HEX < 0x030C0000
        if (PyUnicode_READY(s) < 0) {
            PyErr_Clear();
            return 0;
        }
    #endif
        return PyUnicode_GET_LENGTH(s) == n && PyUnicode_KIND(s) == PyUnicode_1BYTE_KIND
            && memcmp(PyUnicode_DATA(s), lit, (size_t)n) == 0;
    }
    /* The __name__ of a class whose metaclass is exactly type (a data
       descriptor of type: the class's own dict cannot override it) is
       "__newobj__" or "__newobj_ex__", the names save_reduce writes NEWOBJ
       and NEWOBJ_EX for. A static type's __name__ is its tp_name after the
       last dot. */
    static int pw_type_named_newobj(PyTypeObject *t) {
        const char *s;
        if (t->tp_flags & Py_TPFLAGS_HEAPTYPE) {
            PyObject *name = ((PyHeapTypeObject *)t)->ht_name;
            return pw_str_is_ascii(name, "__newobj__", 10) || pw_str_is_ascii(name, "__newobj_ex__", 13);
        }
        s = strrchr(t->tp_name, '.');
        s = s ? s + 1 : t->tp_name;
        return strcmp(s, "__newobj__") == 0 || strcmp(s, "__newobj_ex__") == 0;
    }
    """
    bint pw_str_is_ascii(PyObject *s, const char *lit, Py_ssize_t n) noexcept
    bint pw_type_named_newobj(TypeObject *t) noexcept


cdef inline bint pw_is_iterator(object o):
    return c_iter_check(o)


cdef inline int pw_save_item(PwEnc *e, PyObject *obj) except -1:
    """pw_save(e, obj, 0) with the container loops' fast path for atoms and
    memo references first (the caller owns a reference to obj)."""
    cdef int r = pw_save_atom(e, obj)
    if r < 0:
        return -1
    if r == 0:
        pw_save(e, obj, 0)
    return 0


cdef int pw_batch_list(PwEnc *e, object it) except -1:
    """APPEND/APPENDS for the listitems iterator of a reduce value."""
    cdef Py_ssize_t n
    cdef object first, item
    while True:
        first = pw_next(it)
        if first is pw_sentinel:
            return 0
        item = pw_next(it)
        if item is pw_sentinel:
            pw_save_item(e, <PyObject *>first)
            return pw_write1(e, OP_APPEND)
        pw_write1(e, OP_MARK)
        pw_save_item(e, <PyObject *>first)
        n = 1
        while item is not pw_sentinel:
            pw_save_item(e, <PyObject *>item)
            n += 1
            if n == PW_BATCHSIZE:
                break
            item = pw_next(it)
        pw_write1(e, OP_APPENDS)
        if n < PW_BATCHSIZE:
            return 0


cdef inline object pw_dict_pair(object item):
    if not isinstance(item, tuple) or len(<tuple>item) != 2:
        raise TypeError("dict items iterator must return 2-tuples")
    return item


cdef int pw_batch_dict(PwEnc *e, object it) except -1:
    """SETITEM/SETITEMS for the dictitems iterator of a reduce value."""
    cdef Py_ssize_t n
    cdef object first, item
    while True:
        first = pw_next(it)
        if first is pw_sentinel:
            return 0
        pw_dict_pair(first)
        item = pw_next(it)
        if item is pw_sentinel:
            pw_save_dict_item(e, <PyObject *>first[0], <PyObject *>first[1])
            return pw_write1(e, OP_SETITEM)
        pw_write1(e, OP_MARK)
        pw_save_dict_item(e, <PyObject *>first[0], <PyObject *>first[1])
        first = None
        n = 1
        while item is not pw_sentinel:
            pw_dict_pair(item)
            pw_save_dict_item(e, <PyObject *>item[0], <PyObject *>item[1])
            n += 1
            if n == PW_BATCHSIZE:
                break
            # Dropped before asking for the next: a dict's (and an
            # OrderedDict's) item iterator refills the pair it returned last
            # when nothing else holds it, instead of allocating one per item.
            item = None
            item = pw_next(it)
        pw_write1(e, OP_SETITEMS)
        if n < PW_BATCHSIZE:
            return 0


cdef object pw_sentinel = object()


cdef extern from *:
    """
    /* next(it, sentinel) without the builtin's call overhead. */
    static PyObject *pw_next_or(PyObject *it, PyObject *sentinel) {
        PyObject *item = PyIter_Next(it);
        if (item == NULL && !PyErr_Occurred()) {
            Py_INCREF(sentinel);
            return sentinel;
        }
        return item;
    }
    """
    object pw_next_or(object it, object sentinel)


cdef inline object pw_next(object it):
    return pw_next_or(it, pw_sentinel)


# --- Plain class instances --------------------------------------------------
# For a class that customises nothing about pickling, object.__reduce_ex__
# returns (copyreg.__newobj__, (cls, *args), state, None, None), where args is
# () or what a __getnewargs__ of the class returned, and state is
# obj.__dict__ (None when it is empty or absent), paired with a dict of the
# set slots named by cls.__slotnames__ when there are any. The encoder writes that
# directly instead of building and parsing the tuple. A class whose own
# __getstate__ is a plain function reduces to the same shape with that
# function's answer as the state (object.__reduce_ex__ calls it with no
# arguments and reads no __slotnames__): the encoder calls it itself. A class qualifies only
# after one of its instances was reduced the slow way and produced exactly that
# shape (so version differences in the stdlib are learned, not assumed), and
# only while nothing it inherits changes: the verdict is keyed by the type's
# version tag, which CPython renews whenever the class or a base is modified.

cdef struct PwPlainEntry:
    TypeObject *type
    unsigned int version
    int verdict                  # a PW_PLAIN_* shape, PW_PLAIN_GETSTATE added
    # cls.__dict__['__slotnames__'] (a strong reference) and its length when
    # learned. Rebinding the name renews the version tag, so the entry's list
    # is the class's for as long as the tag matches; but the list can change
    # in place, and object.__getstate__ refuses an instance larger than its
    # class's slots account for (without __getnewargs__).
    PyObject *slotnames
    Py_ssize_t slot_count

cdef enum:
    PW_PLAIN_CACHE = 64
    PW_PLAIN_NO = 0
    PW_PLAIN_NOARGS = 1          # NEWOBJ (cls,); BUILD from the __dict__ and slots
    PW_PLAIN_NEWARGS = 2         # NEWOBJ (cls, *__getnewargs__()); BUILD as above
    PW_PLAIN_GETSTATE = 4        # added to either: BUILD from the class's __getstate__()
    PW_PLAIN_ARGS_MASK = 3

cdef PwPlainEntry pw_plain_cache[64]


cdef inline PwPlainEntry *pw_plain_entry(TypeObject *t) noexcept:
    return &pw_plain_cache[((<size_t>t) >> 4) & (PW_PLAIN_CACHE - 1)]


cdef extern from *:
    """
    /* The argument tuple NEWOBJ gets: _pickle writes a slice of the reduce
       value's arguments, always a new exact tuple, so a tuple that anything
       else refers to (which may already be in the memo) is copied. */
    static PyObject *pw_fresh_args(PyObject *args) {
        Py_ssize_t i, n = PyTuple_GET_SIZE(args);
        PyObject *copy;
        if (PyTuple_CheckExact(args) && (Py_REFCNT(args) == 1 || n == 0))
            return Py_NewRef(args);
        copy = PyTuple_New(n);
        if (copy == NULL)
            return NULL;
        for (i = 0; i < n; i++)
            PyTuple_SET_ITEM(copy, i, Py_NewRef(PyTuple_GET_ITEM(args, i)));
        return copy;
    }
    """
    unsigned long PW_TPFLAGS_TUPLE_SUBCLASS "Py_TPFLAGS_TUPLE_SUBCLASS"
    object pw_fresh_args(PyObject *args)


cdef extern from *:
    """
    #include "structmember.h"
    /* 1 and the slot's value (borrowed, NULL when unset) when descr is a
       __slots__ member of obj's class: reading it runs no Python code and
       fails, as getattr does, only when the slot is empty. 0 otherwise. */
    static int pw_slot_value(PyObject *descr, PyObject *obj, PyObject **value) {
        PyMemberDef *m;
        if (descr == NULL || Py_TYPE(descr) != &PyMemberDescr_Type)
            return 0;
        m = ((PyMemberDescrObject *)descr)->d_member;
        if (m->type != T_OBJECT_EX || m->flags != 0
                || !PyObject_TypeCheck(obj, PyDescr_TYPE(descr)))
            return 0;
        *value = *(PyObject **)((char *)obj + m->offset);
        return 1;
    }
    """
    bint pw_slot_value(PyObject *descr, PyObject *obj, PyObject **value) noexcept


cdef int pw_type_plain_shape(TypeObject *t) except -1:
    """The PW_PLAIN_* shape every instance of t reduces to, judged from the
    type alone."""
    cdef unsigned long builtin = t.tp_flags & C_BUILTIN_SUBCLASS_FLAGS
    cdef PyObject *getnewargs
    cdef PyObject *getstate
    if not (t.tp_flags & Py_TPFLAGS_HEAPTYPE) or t.tp_new == NULL:
        return PW_PLAIN_NO
    # A tuple subclass (a namedtuple) reduces through its __getnewargs__ with
    # no list or dict items; other builtin bases add state of their own.
    if builtin != 0 and builtin != PW_TPFLAGS_TUPLE_SUBCLASS:
        return PW_PLAIN_NO
    if t.tp_itemsize != 0 and builtin == 0:
        return PW_PLAIN_NO
    if t.tp_getattro != c_object_type.tp_getattro:
        return PW_PLAIN_NO
    cdef int state_shape = 0
    for name in (PW_REDUCE_EX, PW_REDUCE, PW_CLASS):
        if c_type_lookup(t, <PyObject *>name) != c_type_lookup(&c_object_type, <PyObject *>name):
            return PW_PLAIN_NO
    if c_type_lookup(t, <PyObject *>PW_GETNEWARGS_EX) != NULL:
        return PW_PLAIN_NO
    getstate = c_type_lookup(t, <PyObject *>PW_GETSTATE)
    if getstate != c_type_lookup(&c_object_type, <PyObject *>PW_GETSTATE):
        # object_getstate calls an overriding __getstate__ as a bound method:
        # for a plain function that is the function called with the instance.
        if getstate == NULL or c_type_of(getstate) != &c_function_type:
            return PW_PLAIN_NO
        state_shape = PW_PLAIN_GETSTATE
    elif pw_slotnames(t) == NULL:
        return PW_PLAIN_NO
    getnewargs = c_type_lookup(t, <PyObject *>PW_GETNEWARGS)
    if getnewargs == NULL:
        return PW_PLAIN_NOARGS | state_shape
    # Calling a plain function with the instance is what binding it and
    # calling the bound method (as _PyObject_LookupSpecial does) would do.
    if c_type_of(getnewargs) != &c_function_type:
        return PW_PLAIN_NO
    return PW_PLAIN_NEWARGS | state_shape


cdef inline PyObject *pw_slotnames(TypeObject *t) noexcept:
    """cls.__dict__['__slotnames__'] (borrowed), the list copyreg caches there
    and object.__getstate__ reads slot values by, or NULL."""
    cdef PyObject *sn = c_dict_get(pw_type_dict(<PyObject *>t), <PyObject *>PW_SLOTNAMES)
    return sn if sn != NULL and c_type_of(sn) == &c_list_type else NULL


cdef inline bint pw_instance_dict_overrides(PyObject *d) noexcept:
    """An instance attribute named like a pickling hook shadows the class's."""
    return (c_dict_get(d, <PyObject *>PW_REDUCE_EX) != NULL
            or c_dict_get(d, <PyObject *>PW_GETSTATE) != NULL
            or c_dict_get(d, <PyObject *>PW_GETNEWARGS_EX) != NULL
            or c_dict_get(d, <PyObject *>PW_GETNEWARGS) != NULL)


cdef int pw_plain_instance(TypeObject *t, PyObject *obj, PyObject **slotnames) except -1:
    """The PW_PLAIN_* shape pw_save_plain_instance may write obj with, and
    the class's __slotnames__ list it was judged by (borrowed) in *slotnames."""
    cdef PwPlainEntry *entry = pw_plain_entry(t)
    cdef PyObject *names
    cdef object d
    if entry.type != t or entry.verdict == PW_PLAIN_NO or not pw_version_valid(t) \
            or entry.version != t.tp_version_tag:
        return PW_PLAIN_NO
    if not (entry.verdict & PW_PLAIN_GETSTATE):
        names = entry.slotnames
        if names == NULL or len(<list>names) != entry.slot_count:
            return PW_PLAIN_NO
        slotnames[0] = names
    if t.tp_dictoffset != 0:
        d = c_generic_get_dict(<object>obj, NULL)
        if pw_instance_dict_overrides(<PyObject *>d):
            return PW_PLAIN_NO
    return entry.verdict


cdef object pw_plain_state(TypeObject *t, object o, PyObject *slotnames):
    """object.__getstate__'s answer for an instance of a class that
    pw_plain_instance accepted, or pw_sentinel when a name in __slotnames__
    (a list that can change in place without a new version tag) is not a
    plain slot of the class."""
    cdef object d = None
    cdef object slots
    cdef list names = <list>slotnames
    cdef PyObject *value
    if t.tp_dictoffset != 0:
        d = c_generic_get_dict(o, NULL)
        if not len(<dict>d):
            d = None
    if len(names) == 0:
        return d
    slots = {}
    # No Python code runs in this loop: exact str keys, slot reads.
    for name in names:
        if type(name) is not str:
            return pw_sentinel
        if not pw_slot_value(c_type_lookup(t, <PyObject *>name), <PyObject *>o, &value):
            return pw_sentinel
        if value != NULL:
            slots[name] = <object>value
    return (d, slots) if len(<dict>slots) else d


cdef bint pw_same_state(object expected, object state) except -1:
    """state, as pw_plain_state built it, holds the same objects as the
    state a slow reduce returned."""
    if state is pw_sentinel:
        return False
    if type(state) is not tuple:
        return expected is state
    if type(expected) is not tuple or len(<tuple>expected) != 2 or expected[0] is not state[0]:
        return False
    if type(expected[1]) is not dict or list(expected[1]) != list(state[1]):
        return False
    return all(expected[1][k] is v for k, v in (<dict>state[1]).items())


cdef int pw_learn_plain_instance(TypeObject *t, PyObject *obj, object rv) except -1:
    """Record which shape, if any, t's instances reduce to (see above)."""
    cdef PwPlainEntry *entry = pw_plain_entry(t)
    cdef object o = <object>obj
    cdef int verdict = PW_PLAIN_NO
    cdef object names = None          # held: comparing states may run Python code
    cdef unsigned int version
    cdef PyObject *dropped
    if FW_FREE_THREADED:
        # An entry is three fields; two threads learning types that share a
        # slot could leave one type paired with the other's verdict.
        return 0
    if not (t.tp_flags & Py_TPFLAGS_HEAPTYPE) or not pw_version_valid(t):
        return 0                                  # nothing could be cached
    if entry.type == t and entry.version == t.tp_version_tag:
        return 0                                  # already known
    version = t.tp_version_tag
    if (type(rv) is tuple and len(<tuple>rv) == 5
            and rv[0] is pw_newobj
            and type(rv[1]) is tuple and len(<tuple>rv[1]) >= 1 and rv[1][0] is <object><PyObject *>t
            and rv[3] is None and rv[4] is None):
        verdict = pw_type_plain_shape(t)
        if (verdict & PW_PLAIN_ARGS_MASK) == PW_PLAIN_NOARGS and len(<tuple>rv[1]) != 1:
            verdict = PW_PLAIN_NO
        if verdict & PW_PLAIN_GETSTATE:
            # The state is whatever the class's __getstate__ answers; the
            # encoder asks it each time, so there is nothing to compare.
            if pw_plain_instance_overridden(t, obj):
                verdict = PW_PLAIN_NO
        elif verdict != PW_PLAIN_NO:
            names = <object>pw_slotnames(t)      # not NULL: pw_type_plain_shape checked it
            if (pw_plain_instance_overridden(t, obj)
                    or not pw_same_state(rv[2], pw_plain_state(t, o, <PyObject *>names))):
                verdict = PW_PLAIN_NO
    # Comparing states may run Python code (a str subclass's __eq__) that
    # changes the class: what was learned is then about a class gone.
    if not pw_version_valid(t) or t.tp_version_tag != version:
        return 0
    entry = pw_plain_entry(t)
    dropped = entry.slotnames
    entry.type = t
    entry.version = t.tp_version_tag
    entry.verdict = verdict
    if verdict != PW_PLAIN_NO and names is not None:
        Py_INCREF(names)
        entry.slotnames = <PyObject *>names
        entry.slot_count = len(<list>names)
    else:
        entry.slotnames = NULL
        entry.slot_count = 0
    # Released once the entry is whole: freeing the old list may run a
    # finalizer of one of its items, which may pickle and consult the cache.
    c_xdecref(dropped)
    return 0


cdef inline bint pw_plain_instance_overridden(TypeObject *t, PyObject *obj) except -1:
    cdef object d
    if t.tp_dictoffset == 0:
        return False
    d = c_generic_get_dict(<object>obj, NULL)
    return pw_instance_dict_overrides(<PyObject *>d)


cdef tuple pw_reduce_after_newargs(object o, object args):
    """What object.__reduce_ex__ returns once __getnewargs__ has answered,
    for an instance whose class the call changed: the rest of
    reduce_newobj, where object_getstate(obj, required=0) is
    obj.__getstate__()."""
    cdef object cls = type(o)
    cdef object state = o.__getstate__()
    cdef object listitems = iter(o) if isinstance(o, list) else None
    cdef object dictitems = iter(o.items()) if isinstance(o, dict) else None
    return (pw_newobj, (cls,) + <tuple>pw_fresh_args(<PyObject *>args), state, listitems, dictitems)


cdef int pw_save_plain_instance(PwEnc *e, PyObject *obj, TypeObject *t, int shape,
                                PyObject *slotnames) except -1:
    """NEWOBJ of the class with its new-arguments, then BUILD from the
    __dict__ and slots or the class's __getstate__() (shape: what
    pw_plain_instance answered). 0 when written, 1 when nothing was written
    or called: reduce obj the slow way."""
    cdef object o = <object>obj                    # the callout may drop obj
    cdef object cls = <object><PyObject *>t        # or give it another class
    cdef object getnewargs
    cdef object args = None
    cdef object state
    cdef Py_ssize_t idx
    cdef unsigned int version
    cdef int state_flags = PW_HELD                 # obj's __dict__ is held by obj
    if (shape & PW_PLAIN_ARGS_MASK) == PW_PLAIN_NEWARGS:
        getnewargs = <object>c_type_lookup(t, <PyObject *>PW_GETNEWARGS)
        args = pw_call_one(<PyObject *>getnewargs, obj)
        if not isinstance(args, tuple):
            raise TypeError("__getnewargs__ should return a tuple, not '%s'"
                            % c_type_of(<PyObject *>args).tp_name.decode("utf-8", "replace"))
        # The call may have changed the class, its __slotnames__ or the
        # instance, or re-entered dumps and relearned the class.
        if c_type_of(obj) != t or pw_plain_instance(t, obj, &slotnames) != shape:
            return pw_save_reduce(e, pw_reduce_after_newargs(o, args), obj)
        args = pw_fresh_args(<PyObject *>args)
    if shape & PW_PLAIN_GETSTATE:
        version = t.tp_version_tag
        state = pw_call_one(c_type_lookup(t, <PyObject *>PW_GETSTATE), obj)
        state_flags = 0                            # ours is the only reference we know of
        # The stdlib's reduce value is complete here; what it writes next
        # depends on obj.__class__ (checked against cls), which the call may
        # have changed along with anything of the class.
        if c_type_of(obj) != t or not pw_version_valid(t) or t.tp_version_tag != version:
            return pw_save_reduce(
                e, (pw_newobj, (cls,) + (<tuple>args if args is not None else ()), state, None, None), obj)
    else:
        state = pw_plain_state(t, o, slotnames)
    if state is pw_sentinel:
        if args is None:
            return 1
        return pw_save_reduce(e, pw_reduce_after_newargs(o, args), obj)
    pw_save(e, <PyObject *>t, 0)
    if args is None:
        pw_write2(e, OP_EMPTY_TUPLE, OP_NEWOBJ)
    else:
        pw_save(e, <PyObject *>args, 0)
        pw_write1(e, OP_NEWOBJ)
    idx = pw_memo_index(e, obj)
    if idx >= 0:
        pw_write1(e, OP_POP)
        return pw_memo_get(e, idx)
    if pw_memo_put(e, obj) < 0:
        return -1
    if state is not None:
        pw_save(e, <PyObject *>state, state_flags)
        pw_write1(e, OP_BUILD)
    return 0


# --- Globals -----------------------------------------------------------------

cdef int pw_save_type(PwEnc *e, object obj) except -1:
    if obj is type(None):
        return pw_save_reduce(e, (type, (None,)), <PyObject *>obj)
    if obj is type(NotImplemented):
        return pw_save_reduce(e, (type, (NotImplemented,)), <PyObject *>obj)
    if obj is type(...):
        return pw_save_reduce(e, (type, (...,)), <PyObject *>obj)
    return pw_save_global(e, obj, None)


cdef list pw_dotted_path(object name):
    cdef list path = name.split(".")
    if "<locals>" in path:
        # AttributeError, as _pickle does on 3.11-3.13.
        raise AttributeError("Can't pickle local object %r" % (name,))
    return path


cdef tuple pw_deep_attribute(object obj, list path):
    """(attribute, its parent) for a dotted path."""
    cdef object parent = None
    for part in path:
        parent = obj
        obj = getattr(obj, part)
    return obj, parent


cdef object pw_which_module(object obj, list path):
    try:
        module_name = obj.__module__
    except AttributeError:
        module_name = None
    if module_name is not None:
        return module_name
    for module_name, module in sys.modules.copy().items():
        if module_name == "__main__" or module is None:
            continue
        try:
            if pw_deep_attribute(module, path)[0] is obj:
                return module_name
        except Exception:
            pass
    return "__main__"


cdef int pw_save_by_value(PwEnc *e, object obj) except -1:
    """Offer a class or function that is about to be written by name to the
    by_value reducer: 1 if it returned a reduction (written, obj memoized),
    0 if NotImplemented. The memo answers every later reference, so the
    reducer runs once per distinct class or function per pickle, never per
    instance."""
    cdef object rv
    cdef PyObject *own_table
    if e.by_value_depth >= PW_BY_VALUE_NESTING_LIMIT:
        raise RecursionError("classes and functions by value nested more than %d deep while pickling"
                             % PW_BY_VALUE_NESTING_LIMIT)
    rv = (<object>e.by_value_reduce)(obj)
    if rv is NotImplemented:
        return 0
    # What a by-value reduction holds (code, cells, class dicts) needs the
    # reducer's own dispatch table; data outside it keeps the encoder's.
    own_table = e.dispatch_table
    e.dispatch_table = e.by_value_table
    e.by_value_depth += 1
    try:
        pw_save_reduce_value(e, <PyObject *>obj, rv)
    finally:
        e.by_value_depth -= 1
        e.dispatch_table = own_table
    return 1


# --- Where a class or function was found, remembered across pickles --------
# save_global imports the module and walks the qualified name for every
# class a pickle names, though a small message names the same few classes
# (its date, its record class) every time. A found top-level name is
# remembered with what it depended on; the next pickle re-checks each of those
# things by identity, running no Python code, and takes the slow path when
# any of them changed: the class's __qualname__ or __module__, the metaclass's
# descriptors for them, the module in sys.modules, the module's attribute,
# builtins.__import__, or a copyreg extension code registered since.

cdef extern from *:
    """
    #define pw_heap_qualname(t) (((PyHeapTypeObject *)(t))->ht_qualname)
    #define pw_func_qualname(f) (((PyFunctionObject *)(f))->func_qualname)
    #define pw_func_module(f) (((PyFunctionObject *)(f))->func_module)
    #define pw_type_dict(t) (((PyTypeObject *)(t))->tp_dict)
    """
    PyObject *pw_type_dict(PyObject *t)
    PyObject *pw_heap_qualname(PyObject *t)
    PyObject *pw_func_qualname(PyObject *f)
    PyObject *pw_func_module(PyObject *f)
    PyObject *pw_module_dict "PyModule_GetDict"(PyObject *m)
    PyObject *pw_modules_dict "PyImport_GetModuleDict"()
    PyObject *pw_eval_builtins "PyEval_GetBuiltins"()
    TypeObject pw_module_type "PyModule_Type"
    TypeObject *pw_type_of_type "Py_TYPE"(PyObject *o)

cdef struct PwGlobalEntry:
    PyObject *obj              # owned, as are the three below
    PyObject *module_name
    PyObject *name
    PyObject *module

cdef enum:
    PW_GLOBAL_CACHE = 64

cdef PwGlobalEntry pw_global_cache[64]
cdef str PW_MODULE = "__module__"
cdef str PW_QUALNAME = "__qualname__"
cdef str PW_IMPORT = "__import__"
cdef object pw_original_import = __builtins__.__import__ if hasattr(__builtins__, "__import__") \
    else __builtins__["__import__"]


cdef inline PwGlobalEntry *pw_global_entry(PyObject *obj) noexcept:
    return &pw_global_cache[((<size_t>obj) >> 4) & (PW_GLOBAL_CACHE - 1)]


cdef bint pw_global_names_plain(PyObject *obj) noexcept:
    """obj's __qualname__ and __module__ are read from fields this cache can
    compare: a plain function, or a class whose metaclass looks them up as
    type does."""
    cdef TypeObject *meta = c_type_of(obj)
    if meta == &c_function_type:
        return True
    if not c_is_subtype(meta, &c_type_type):
        return False
    if meta == &c_type_type:
        return True
    return (meta.tp_getattro == c_type_type.tp_getattro
            and c_type_lookup(meta, <PyObject *>PW_QUALNAME) == c_type_lookup(&c_type_type, <PyObject *>PW_QUALNAME)
            and c_type_lookup(meta, <PyObject *>PW_MODULE) == c_type_lookup(&c_type_type, <PyObject *>PW_MODULE))


cdef bint pw_global_names_match(PyObject *obj, PwGlobalEntry *entry) noexcept:
    cdef TypeObject *t
    if c_type_of(obj) == &c_function_type:
        return (pw_func_qualname(obj) == entry.name
                and pw_func_module(obj) == entry.module_name)
    t = <TypeObject *>obj
    if not (t.tp_flags & Py_TPFLAGS_HEAPTYPE):
        return True            # a static type's names are fixed by its tp_name
    return (pw_heap_qualname(obj) == entry.name
            and c_dict_get(pw_type_dict(obj), <PyObject *>PW_MODULE) == entry.module_name)


cdef int pw_save_cached_global(PwEnc *e, PyObject *obj) except -1:
    """1 if obj was written from the cache (and memoized), else 0."""
    cdef PwGlobalEntry *entry = pw_global_entry(obj)
    cdef PyObject *builtins
    cdef object module_name, name
    if FW_FREE_THREADED or entry.obj != obj:
        return 0
    if c_dict_size(<PyObject *>pw_extension_registry) != 0:
        return 0
    if not pw_global_names_plain(obj) or not pw_global_names_match(obj, entry):
        return 0
    builtins = pw_eval_builtins()
    if builtins == NULL or c_type_of(builtins) != &c_dict_type \
            or c_dict_get(builtins, <PyObject *>PW_IMPORT) != <PyObject *>pw_original_import:
        return 0
    if c_dict_get(pw_modules_dict(), entry.module_name) != entry.module:
        return 0
    if c_dict_get(pw_module_dict(entry.module), entry.name) != obj:
        return 0
    # Held while written: nothing below runs Python code, but the entry is
    # a shared slot.
    module_name = <object>entry.module_name
    name = <object>entry.name
    if e.proto >= 4:
        pw_save(e, <PyObject *>module_name, 0)
        pw_save(e, <PyObject *>name, 0)
        pw_write1(e, OP_STACK_GLOBAL)
    else:
        pw_write_global_opcode(e, module_name, name)
    pw_memo_put(e, obj)
    return 1


cdef void pw_remember_global(PyObject *obj, object module_name, object name, object module) noexcept:
    """Remember where a class or function was found by its top-level name."""
    cdef PwGlobalEntry *entry
    cdef PyObject *old[4]
    cdef int i
    if FW_FREE_THREADED:
        return                 # an entry is four fields, updated non-atomically
    if type(module_name) is not str or type(name) is not str or type(module) is not type(sys):
        return
    if not pw_global_names_plain(obj):
        return
    if c_type_lookup(&pw_module_type, <PyObject *>name) != NULL:
        return                 # a ModuleType descriptor would shadow the module's dict
    entry = pw_global_entry(obj)
    old[0] = entry.obj
    old[1] = entry.module_name
    old[2] = entry.name
    old[3] = entry.module
    c_incref(obj)
    c_incref(<PyObject *>module_name)
    c_incref(<PyObject *>name)
    c_incref(<PyObject *>module)
    entry.obj = obj
    entry.module_name = <PyObject *>module_name
    entry.name = <PyObject *>name
    entry.module = <PyObject *>module
    # Released last: a destructor run here sees a complete entry.
    for i in range(4):
        c_xdecref(old[i])


cdef int pw_save_global(PwEnc *e, object obj, object name) except -1:
    cdef list path
    cdef object module_name, module, found, parent, lastname, code
    cdef long code_value
    cdef char *p
    cdef bint cacheable = False
    if name is None:
        # obj is itself a class or function (not a __reduce__ string).
        if e.by_value_reduce != NULL and pw_save_by_value(e, obj):
            return 0
        if pw_save_cached_global(e, <PyObject *>obj):
            return 0
        cacheable = True
        try:
            name = obj.__qualname__
        except AttributeError:
            name = obj.__name__
    path = pw_dotted_path(name)
    module_name = pw_which_module(obj, path)
    try:
        module = c_import_object(module_name)
    except Exception:
        raise pw_PicklingError(
            "Can't pickle %r: import of module %r failed" % (obj, module_name)) from None
    lastname = path[len(path) - 1]
    try:
        found, parent = pw_deep_attribute(module, path)
    except Exception:
        raise pw_PicklingError(
            "Can't pickle %r: attribute lookup %s on %s failed" % (obj, name, module_name)) from None
    if found is not obj:
        raise pw_PicklingError(
            "Can't pickle %r: it's not the same object as %s.%s" % (obj, module_name, name))

    code = (<dict>pw_extension_registry).get((module_name, name), pw_sentinel)
    if code is not pw_sentinel:
        # _pickle's checks, in its order: an integer (3.13: any __index__),
        # a C long (OverflowError), then the range.
        if PW_PY313:
            code_value = code
            if code_value <= 0 or code_value > 0x7fffffff:
                raise RuntimeError("extension code %d is out of range" % code_value)
        else:
            if not isinstance(code, int):
                raise pw_PicklingError("Can't pickle %r: extension code %r isn't an integer" % (obj, code))
            code_value = code
            if code_value <= 0 or code_value > 0x7fffffff:
                raise pw_PicklingError("Can't pickle %r: extension code %d is out of range" % (obj, code))
        if code_value <= 0xff:
            return pw_write2(e, OP_EXT1, <unsigned char>code_value)
        if code_value <= 0xffff:
            p = pw_reserve(e, 3)
            p[0] = <char>OP_EXT2
            p[1] = <char>(code_value & 0xff)
            p[2] = <char>(code_value >> 8)
            return 0
        p = pw_reserve(e, 5)
        p[0] = <char>OP_EXT4
        pw_store_le32(p + 1, <uint32_t>code_value)
        return 0

    if parent is module:
        name = lastname
        if cacheable and len(path) == 1:
            pw_remember_global(<PyObject *>obj, module_name, name, module)
    if e.proto >= 4:
        pw_save(e, <PyObject *>module_name, 0)
        pw_save(e, <PyObject *>name, 0)
        pw_write1(e, OP_STACK_GLOBAL)
    elif parent is not module and PW_PY313:
        # Nested qualified name below protocol 4, as 3.13 writes it:
        # getattr(getattr(toplevel, a), b) with the top level by name, so a
        # class reachable from itself (C.ref = C) does not recurse.
        pw_save_getattr_chain(e, module_name, path)
    elif parent is not module:
        # Nested qualified name below protocol 4 (3.11-3.12): getattr(parent, lastname).
        pw_save_reduce(e, (pw_getattr, (parent, lastname)), NULL)
    else:
        pw_write_global_opcode(e, module_name, name)
    return pw_memo_put(e, <PyObject *>obj)


cdef int pw_save_getattr_chain(PwEnc *e, object module_name, list path) except -1:
    cdef Py_ssize_t i, n = len(path)
    for i in range(1, n):
        pw_save(e, <PyObject *>pw_getattr, 0)
    pw_write_global_opcode(e, module_name, path[0])
    for i in range(1, n):
        pw_save(e, <PyObject *>path[i], 0)
        pw_write2(e, OP_TUPLE2, OP_REDUCE)
    return 0


cdef int pw_write_global_opcode(PwEnc *e, object module_name, object name) except -1:
    cdef bytes module_bytes, name_bytes
    cdef object mapped
    if e.proto < 3 and e.fix_imports:
        mapped = pw_reverse_name_mapping.get((module_name, name))
        if mapped is not None:
            module_name, name = mapped
        else:
            module_name = pw_reverse_import_mapping.get(module_name, module_name)
    encoding = "utf-8" if e.proto == 3 else "ascii"
    try:
        module_bytes = module_name.encode(encoding)
    except UnicodeEncodeError:
        raise pw_PicklingError("can't pickle module identifier %r using pickle protocol %d"
                               % (module_name, e.proto)) from None
    try:
        name_bytes = name.encode(encoding)
    except UnicodeEncodeError:
        raise pw_PicklingError("can't pickle global identifier %r using pickle protocol %d"
                               % (name, e.proto)) from None
    pw_write1(e, OP_GLOBAL)
    memcpy(pw_reserve(e, len(module_bytes)), <const char *>module_bytes, len(module_bytes))
    pw_write1(e, 0x0a)
    memcpy(pw_reserve(e, len(name_bytes)), <const char *>name_bytes, len(name_bytes))
    pw_write1(e, 0x0a)
    return 0


# ---------------------------------------------------------------------------
# Running one pickle.

cdef int pw_resolve_protocol(object protocol) except -100:
    cdef long proto
    if protocol is None:
        return _PW_DEFAULT_PROTOCOL
    # TypeError for non-integers (operator.index), as the stdlib.
    proto = protocol if type(protocol) is int else pw_index(protocol)
    if proto < 0:
        return PW_HIGHEST_PROTOCOL
    if proto > PW_HIGHEST_PROTOCOL:
        raise ValueError("pickle protocol must be <= %d" % PW_HIGHEST_PROTOCOL)
    return <int>proto


cdef int pw_encode(PwEnc *e, PyObject *obj) except -1:
    """Append PROTO, the object, STOP (in frames for protocol 4+) at e.len."""
    cdef char *p
    e.framing = e.proto >= 4
    p = pw_reserve(e, 2)
    p[0] = <char>OP_PROTO
    p[1] = <char>e.proto
    if e.framing:
        pw_open_frame(e)
    elif e.write != NULL:
        e.boundary = PW_FRAME_TARGET
    pw_save(e, obj, 0)
    pw_write1(e, OP_STOP)
    pw_close_frame(e)
    return 0


cdef object pw_take_bytes(PwEnc *e):
    """The finished pickle as bytes: copied off the stack buffer when small,
    else the output buffer itself, shrunk in place."""
    cdef object result
    if e.out == NULL:
        return PyBytes_FromStringAndSize(e.buf, e.len)
    if c_bytes_resize(&e.out, e.len) < 0:
        e.buf = NULL
        raise MemoryError()
    result = <object>e.out
    c_decref(e.out)
    e.out = NULL
    return result


def dumps(obj, protocol=None, *, fix_imports=True, buffer_callback=None, by_value=None):
    """Return the pickled representation of `obj` as bytes.

    Same contract as :func:`pickle.dumps`: `protocol` defaults to
    DEFAULT_PROTOCOL, a negative value means HIGHEST_PROTOCOL; protocols 2-5
    are written by fastwire's encoder and protocols 0-1 by the standard
    library. Raises ValueError for a protocol above HIGHEST_PROTOCOL or a
    `buffer_callback` below protocol 5, PicklingError (or the TypeError /
    AttributeError the stdlib raises) for objects that cannot be pickled, and
    RecursionError for structures nested deeper than the recursion limit.

    `by_value` (fastwire's extension; protocols 2-5, else ValueError) writes
    classes and functions by value instead of by name. It is an object with a
    ``reducer_override(obj)`` method and a ``dispatch_table`` mapping, such as
    a ``cloudpickle.Pickler``. Each class or function the pickle would write
    by name is offered to ``reducer_override`` once (the memo answers later
    references, so the call is per distinct class, never per instance); it
    returns ``NotImplemented`` to keep the name, or a ``__reduce__`` value
    that is written in its place, with ``dispatch_table`` consulted for what
    that value contains. Instances are still written by the compiled encoder.
    Whatever ``reducer_override`` raises propagates.
    """
    return pw_dumps(obj, protocol, fix_imports, buffer_callback, by_value)


cdef bytes pw_dumps(obj, protocol, fix_imports, buffer_callback, by_value):
    cdef int proto = pw_resolve_protocol(protocol)
    cdef PwCall call
    cdef PwEnc *e
    # Held here for the whole dump: the encoder borrows them.
    cdef object by_value_reduce = None, by_value_table = None
    if buffer_callback is not None and proto < 5:
        raise ValueError("buffer_callback needs protocol >= 5")
    if by_value is not None:
        if proto < 2:
            raise ValueError("by_value needs protocol >= 2")
        by_value_reduce = by_value.reducer_override
        by_value_table = by_value.dispatch_table
    if proto < 2:
        return _pickle.dumps(obj, proto, fix_imports=fix_imports,
                             buffer_callback=buffer_callback)
    e = pw_call_begin(&call, proto, NULL)
    e.fix_imports = bool(fix_imports)
    e.buffer_callback = <PyObject *>buffer_callback if buffer_callback is not None else NULL
    if by_value is not None:
        e.by_value_reduce = <PyObject *>by_value_reduce
        e.by_value_table = <PyObject *>by_value_table if by_value_table is not None else NULL
    try:
        pw_encode(e, <PyObject *>obj)
        return pw_take_bytes(e)
    finally:
        pw_call_end(&call)


def dumps_framed(objs, prefix=">I", protocol=None, *, fix_imports=True):
    """Pickle every object of the iterable `objs`, each framed by the length
    `prefix` (as in :mod:`fastwire.frames`): one bytes object holding header +
    pickle for each, back to back, ready for a single send.

    Equal to ``b"".join(encode_frame(dumps(o, protocol), prefix) for o in objs)``,
    but each pickle is written straight into place (no per-message objects,
    no concatenation). Each pickle has its own memo, so each frame loads on
    its own. Raises what dumps() raises (then nothing is returned), and
    FrameError if a pickle does not fit the prefix.
    """
    cdef int proto = pw_resolve_protocol(protocol)
    cdef FramePrefix fp = as_prefix(prefix)
    cdef PwCall call
    cdef PwEnc *e
    cdef Py_ssize_t reserved
    if proto < 2:
        return b"".join([encode_frame(_pickle.dumps(obj, proto, fix_imports=fix_imports), fp)
                         for obj in objs])
    reserved = pw_header_guess(&fp.spec)
    e = pw_call_begin(&call, proto, NULL)
    e.fix_imports = bool(fix_imports)
    try:
        for obj in objs:
            pw_append_frame(e, <PyObject *>obj, &fp.spec, reserved)
        return pw_take_bytes(e)
    finally:
        pw_call_end(&call)


cdef Py_ssize_t pw_header_guess(const PrefixSpec *spec) except -1:
    """Header bytes to reserve before a pickle whose length is not known yet:
    enough for a typical message; pw_append_frame moves a longer one."""
    cdef char header[12]
    return encode_header(spec, header, 0xFFFF if spec.limit >= 0xFFFF else 0)


cdef int pw_append_frame(PwEnc *e, PyObject *obj, const PrefixSpec *spec,
                         Py_ssize_t reserved) except -1:
    """Append one frame: the header for, then, the pickle of obj (own memo)."""
    cdef char header[12]
    cdef Py_ssize_t start = e.len
    cdef Py_ssize_t n, used
    pw_reserve(e, reserved)
    pw_encode(e, obj)
    n = e.len - start - reserved
    used = encode_header(spec, header, <uint64_t>n)
    if used > reserved:
        pw_reserve(e, used - reserved)  # may move e.buf
    if used != reserved:
        memmove(e.buf + start + used, e.buf + start + reserved, n)
        e.len = start + used + n
    memcpy(e.buf + start, header, used)
    pw_memo_clear(e.memo)
    return 0


def dump(obj, file, protocol=None, *, fix_imports=True, buffer_callback=None):
    """Write the pickled representation of `obj` to `file` (anything with a
    ``write`` method taking bytes).

    Same contract and errors as :func:`dumps`; additionally TypeError when
    `file` has no ``write`` attribute. Output is written in frames of about
    64 KiB, and large bytes-like payloads are passed to ``write`` directly.
    """
    # What Pickler(file, ...).dump(obj) does, without building the Pickler:
    # a fresh Pickler has no hooks and an empty memo, so a stack memo serves.
    cdef int proto = pw_resolve_protocol(protocol)
    cdef PwCall call
    cdef PwEnc *e
    cdef PyObject *write
    cdef PyObject *write_self
    # Looked up once, before anything is pickled, as the stdlib binds it (and
    # before buffer_callback is checked: its order of errors); held for the
    # whole dump, without a bound-method object.
    if not fw_method_lookup(file, "write", &write, &write_self):
        raise TypeError("file must have a 'write' attribute")
    try:
        if buffer_callback is not None and proto < 5:
            raise ValueError("buffer_callback needs protocol >= 5")
        if proto < 2:
            return _pickle.dump(obj, file, proto, fix_imports=fix_imports,
                                buffer_callback=buffer_callback)
        e = pw_call_begin(&call, proto, NULL)
        e.write = write
        e.write_self = write_self
        try:
            e.fix_imports = bool(fix_imports)
            e.buffer_callback = <PyObject *>buffer_callback if buffer_callback is not None else NULL
            pw_encode(e, <PyObject *>obj)
            pw_flush(e, False)
        finally:
            pw_call_end(&call)
    finally:
        c_decref(write)
        c_xdecref(write_self)


class _LowProtocolPickler(_pickle.Pickler):
    """The stdlib pickler used for protocols 0 and 1, forwarding the hooks of
    the fastwire Pickler that owns it.

    It refers to its owner only while a dump runs: a lasting reference (or a
    bound method of the owner kept as a hook) would make owner and pickler a
    cycle, and everything pickled would then wait for the cycle collector
    (bpo-39492 is the stdlib's test of exactly this)."""

    def __init__(self, file, protocol, fix_imports):
        super().__init__(file, protocol, fix_imports=fix_imports)
        self._owner = None

    def dump_for(self, owner, obj):
        dispatch_table = getattr(owner, "dispatch_table", None)
        if dispatch_table is not None:
            self.dispatch_table = dispatch_table
        self.fast = owner.fast
        self._owner = owner
        try:
            self.dump(obj)
        finally:
            self._owner = None
            if dispatch_table is not None:
                del self.dispatch_table

    def persistent_id(self, obj):
        persistent_id = pw_persistent_id_hook(self._owner)
        return None if persistent_id is None else persistent_id(obj)

    def reducer_override(self, obj):
        override = getattr(self._owner, "reducer_override", pw_sentinel)
        return NotImplemented if override is pw_sentinel else override(obj)


cdef class Pickler:
    """Pickler(file, protocol=None, *, fix_imports=True, buffer_callback=None)

    Drop-in for :class:`pickle.Pickler`: writes pickles of `protocol` to
    `file` (which needs a ``write(bytes)`` method). Subclasses may define
    ``persistent_id(obj)``, ``reducer_override(obj)`` and ``dispatch_table``
    (class or instance attribute; default copyreg.dispatch_table), all looked
    up at each :meth:`dump`. The memo persists across dump() calls until
    :meth:`clear_memo`. ``fast = True`` disables the memo (no shared or
    recursive structures; deep cycles raise ValueError as in the stdlib).

    Differences from the C Pickler: ``memo`` is a :class:`PicklerMemoProxy`
    with the same ``copy()``/``clear()`` and assignment rules, but the memo is
    not visited by the cycle collector, so an object pickled by a Pickler that
    refers back to that Pickler stays alive until :meth:`clear_memo`. There
    is no ``bin`` attribute. Hooks are read at each dump() rather than at
    construction, so changing them between dumps takes effect.
    """

    cdef dict __dict__
    cdef object _write
    cdef object _buffer_callback
    cdef object _persistent_id_set  # assigned through the persistent_id attribute
    cdef int _proto
    cdef bint _fix_imports
    cdef bint _initialized
    # Claimed (fw_claim) by every call that reads or changes the memo or the
    # settings: dump() runs user code (__reduce__, hooks, file.write) that may
    # call __init__, clear_memo() or dump() on this very Pickler, or share it
    # with another thread; those calls then raise instead of freeing the memo
    # table or the writer under the running dump.
    cdef int _busy
    cdef public bint fast
    cdef PwMemo _memo
    cdef PwMemoSlot _memo_inline[8]
    cdef PyObject *_memo_inline_keys[8]
    cdef object _low

    def __cinit__(self, *args, **kwargs):
        pw_memo_init(&self._memo, self._memo_inline, self._memo_inline_keys, 8, 8)

    def __init__(self, file, protocol=None, *, fix_imports=True, buffer_callback=None):
        cdef int proto
        pw_claim_pickler(self, "__init__() called")
        try:
            proto = pw_resolve_protocol(protocol)
            if buffer_callback is not None and proto < 5:
                raise ValueError("buffer_callback needs protocol >= 5")
            try:
                self._write = file.write
            except AttributeError:
                raise TypeError("file must have a 'write' attribute") from None
            self._proto = proto
            self._fix_imports = bool(fix_imports)
            self._buffer_callback = buffer_callback
            self.fast = False
            pw_memo_clear(&self._memo)
            self._low = _LowProtocolPickler(file, proto, fix_imports) if proto < 2 else None
            self._initialized = True
        finally:
            fw_release(&self._busy)

    def __dealloc__(self):
        pw_memo_free(&self._memo)

    def dump(self, obj):
        """Write the pickled representation of `obj` to the file.

        Raises PicklingError (or the TypeError / AttributeError the stdlib
        raises) for unpicklable objects and RecursionError for too-deep
        nesting; nothing is written to the file for a pickle that failed
        before its first 64 KiB frame was complete. Raises RuntimeError if
        this Pickler is already in use (a callback of a running dump, or
        another thread, calling dump(), __init__() or the memo).
        """
        cdef PwCall call
        cdef PwEnc *e
        cdef object persistent_id, reducer_override, dispatch_table, write, buffer_callback
        if not self._initialized:
            raise pw_PicklingError(
                "Pickler.__init__() was not called by %s.__init__()" % type(self).__name__)
        pw_claim_pickler(self, "dump() called")
        try:
            if self._low is not None:
                (<object>self._low).dump_for(self, obj)
                return None
            # Owned by this frame: the encoder borrows them for the whole dump.
            write = self._write
            buffer_callback = self._buffer_callback
            persistent_id = pw_persistent_id_hook(self)
            reducer_override = getattr(self, "reducer_override", pw_sentinel)
            dispatch_table = getattr(self, "dispatch_table", None)
            e = pw_call_begin(&call, self._proto, &self._memo)
            e.fix_imports = self._fix_imports
            e.fast = self.fast
            e.write = <PyObject *>write
            e.persistent_id = <PyObject *>persistent_id if persistent_id is not None else NULL
            # Set to None, it is called (TypeError), as by _pickle.
            e.reducer_override = (<PyObject *>reducer_override
                                  if reducer_override is not pw_sentinel else NULL)
            e.dispatch_table = <PyObject *>dispatch_table if dispatch_table is not None else NULL
            e.buffer_callback = (<PyObject *>buffer_callback
                                 if buffer_callback is not None else NULL)
            try:
                pw_encode(e, <PyObject *>obj)
                pw_flush(e, False)
            finally:
                pw_call_end(&call)
        finally:
            fw_release(&self._busy)
        return None

    @property
    def persistent_id(self):
        """The function called with each object to pickle: a persistent id
        (written instead of the object) or None. Unset by default; since 3.13
        a default that returns None, as in the stdlib."""
        if self._persistent_id_set is not None:
            return self._persistent_id_set
        if PW_PY313:
            return pw_no_persistent_id
        raise AttributeError("persistent_id")

    @persistent_id.setter
    def persistent_id(self, value):
        self._persistent_id_set = value

    @persistent_id.deleter
    def persistent_id(self):
        self._persistent_id_set = None

    def clear_memo(self):
        """Forget every object pickled so far (shared objects are written again).

        Raises RuntimeError while a dump() of this Pickler is running."""
        pw_claim_pickler(self, "clear_memo() called")
        try:
            if self._low is not None:
                self._low.clear_memo()
            pw_memo_clear(&self._memo)
        finally:
            fw_release(&self._busy)

    @property
    def memo(self):
        """A PicklerMemoProxy-like view: ``copy()`` gives ``{id(obj): (index, obj)}``,
        ``clear()`` empties the memo, ``len()`` counts entries."""
        if self._low is not None:
            return self._low.memo
        return PicklerMemoProxy.__new__(PicklerMemoProxy, self)

    @memo.setter
    def memo(self, value):
        cdef list entries
        cdef Py_ssize_t index
        if self._low is not None:
            self._low.memo = value
            return
        if isinstance(value, PicklerMemoProxy):
            value = value.copy()
        if not isinstance(value, dict):
            raise TypeError("'memo' attribute must be a PicklerMemoProxy object or dict, not %s"
                            % type(value).__name__)
        entries = []
        for entry in list((<dict>value).values()):
            if not (isinstance(entry, tuple) and len(<tuple>entry) == 2):
                raise TypeError("'memo' values must be 2-item tuples")
            # The index's __index__ is user code: convert every entry before the
            # memo is touched.
            index = (<tuple>entry)[0]
            entries.append((index, (<tuple>entry)[1]))
        pw_claim_pickler(self, "memo assigned")
        try:
            pw_memo_clear(&self._memo)
            for index, obj in entries:
                pw_memo_set(&self._memo, <PyObject *>obj, index)
        finally:
            fw_release(&self._busy)

    cdef dict memo_items(self):
        cdef size_t i
        cdef dict out = {}
        pw_claim_pickler(self, "memo read")
        try:
            for i in range(self._memo.mask + 1):
                if self._memo.slots[i].key != NULL:
                    obj = <object>self._memo.slots[i].key
                    out[id(obj)] = (self._memo.slots[i].index, obj)
        finally:
            fw_release(&self._busy)
        return out

    cdef Py_ssize_t memo_len(self):
        return self._memo.used


def pw_no_persistent_id(obj):
    """The default persistent_id (3.13+): no object has a persistent id."""
    return None


cdef object pw_persistent_id_hook(owner):
    """owner's persistent_id, or None when it is the do-nothing default."""
    persistent_id = getattr(owner, "persistent_id", None)
    return None if persistent_id is pw_no_persistent_id else persistent_id


cdef int pw_claim_pickler(Pickler p, str what) except -1:
    """Claim `p` for the call `what`, or raise: the Pickler is in use (a dump
    under way, on this thread through a callback or on another)."""
    if not fw_claim(&p._busy):
        raise RuntimeError(f"Pickler {what} while the Pickler is in use (a dump is running)")
    return 0


cdef class PicklerMemoProxy:
    """The memo of a fastwire Pickler, as the C pickle's PicklerMemoProxy."""

    cdef Pickler _pickler

    def __cinit__(self, Pickler pickler):
        self._pickler = pickler

    def copy(self):
        """A new dict ``{id(obj): (memo index, obj)}``."""
        return self._pickler.memo_items()

    def clear(self):
        """Empty the memo."""
        self._pickler.clear_memo()

    def __len__(self):
        return self._pickler.memo_len()

    def __reduce__(self):
        return dict, (self.copy(),)
