# The struct core: a format is compiled once into an array of run-length codes
# (CPython's Modules/_struct.c does the same), then packing and unpacking are a
# tight loop over that array with the byte order folded into a `swap` flag.
#
# Compatibility rules, all taken from _struct.c because users' `except` clauses
# depend on them:
#   * bad formats, wrong item counts, non-integers and out-of-range integers
#     raise struct.error; errors raised by a user's __index__/__bool__ propagate;
#   * 'P' overflow and 'e'/'f' float overflow raise OverflowError;
#   * a failed float conversion raises struct.error.
#
# This part depends on no other part: it uses only the shared declarations of
# the C API (capi.pxd) and of the core's own C functions and buffer handling
# (wire.pxd), and the other parts use nothing of it.

# Shared declarations this part uses.
# Uses nothing of the other parts.
from libc.stdint cimport int16_t, int32_t, int64_t, uint16_t, uint32_t, uint64_t
from libc.string cimport memcpy, memset
from cpython.object cimport PyObject
from cpython.bytes cimport (
    PyBytes_AS_STRING, PyBytes_CheckExact, PyBytes_FromStringAndSize, PyBytes_GET_SIZE,
)
from cpython.buffer cimport PyBuffer_Release
from capi cimport (
    PY_SSIZE_T_MAX, c_adopt_tuple, c_bool_from_long_or_null, c_bytes_from_or_null, c_err_occurred,
    c_float_from_double_or_null, c_float_pack2, c_float_unpack2, c_float_unpack4, c_gc_untrack,
    c_int_from_long_or_null, c_int_from_longlong_or_null, c_int_from_ulonglong_or_null,
    c_int_from_voidptr_or_null, c_list_set_stolen, c_new_tuple_or_null, c_tuple_set_stolen,
    c_xdecref,
)
from wire cimport (
    FW_BOOL_ALIGN, FW_DOUBLE_ALIGN, FW_FLOAT_ALIGN, FW_FREE_THREADED, FW_HOST_LITTLE, FW_INT_ALIGN,
    FW_LONG_ALIGN, FW_LONGLONG_ALIGN, FW_SHORT_ALIGN, FW_SIZE_T_ALIGN, FW_VOID_P_ALIGN, PyMethodDef,
    acquire_readable, acquire_writable, fw_add_fastcall_method, fw_gc_pause, fw_gc_resume,
    fw_load_f32, fw_load_f64, fw_load_u16, fw_load_u32, fw_load_u64, fw_new_fastcall_function,
    fw_store_f32, fw_store_f64, fw_store_u16, fw_store_u32, fw_store_u64, release_view,
)

cimport cython
from libc.string cimport memchr
from cpython.long cimport (
    PyLong_Check, PyLong_AsLongLongAndOverflow, PyLong_AsUnsignedLongLong, PyLong_AsVoidPtr,
)
from cpython.number cimport PyIndex_Check, PyNumber_Index, PyNumber_AsSsize_t
from cpython.float cimport PyFloat_CheckExact, PyFloat_AS_DOUBLE, PyFloat_AsDouble
from cpython.bytes cimport PyBytes_Check
from cpython.unicode cimport PyUnicode_CheckExact
from cpython.bytearray cimport PyByteArray_Check, PyByteArray_AS_STRING, PyByteArray_GET_SIZE
from cpython.tuple cimport PyTuple_GET_SIZE, PyTuple_CheckExact
from cpython.list cimport PyList_New
from cpython.object cimport PyObject_IsTrue
from cpython.sequence cimport PySequence_Fast_ITEMS
from cpython.mem cimport PyMem_Malloc, PyMem_Free

import sys
from struct import error as StructError
from libc.limits cimport LONG_MIN, LONG_MAX

# Mirrors _struct.c's MAXCACHE: enough for any real program's set of formats,
# small enough that a program generating formats cannot grow it without bound.
cdef Py_ssize_t STRUCT_CACHE_LIMIT = 100

cdef enum FormatKind:
    FMT_CHAR
    FMT_BYTES      # 's'
    FMT_PASCAL     # 'p'
    FMT_BOOL
    FMT_SIGNED     # b h i l q n, width in FormatCode.size
    FMT_UNSIGNED   # B H I L Q N
    FMT_VOID_P     # 'P', native only
    FMT_HALF       # 'e'
    FMT_FLOAT      # 'f'
    FMT_DOUBLE     # 'd'


cdef struct FormatCode:
    FormatKind op
    char fmt               # the format character, for error messages
    Py_ssize_t offset
    Py_ssize_t size        # item width; for 's'/'p' the field length
    Py_ssize_t repeat      # consecutive items of this code ('s'/'p': always 1)


cdef struct FormatEntry:
    FormatKind op
    Py_ssize_t size
    Py_ssize_t align       # 0 where no alignment applies
    bint is_item           # False for 'x' padding


cdef inline bint is_format_space(unsigned char c) noexcept nogil:
    # Py_ISSPACE: the ASCII whitespace _struct.c skips between items.
    return c == c' ' or c == c'\t' or c == c'\n' or c == c'\r' or c == c'\x0b' or c == c'\x0c'


cdef int lookup_format_char(unsigned char c, bint native, FormatEntry* entry) except -1:
    """Fill `entry` for format character `c`, or raise struct.error."""
    entry.is_item = True
    entry.align = 0
    if c == c'x':
        entry.op, entry.size, entry.is_item = FMT_BYTES, 1, False
    elif c == c'c':
        entry.op, entry.size = FMT_CHAR, 1
    elif c == c's':
        entry.op, entry.size = FMT_BYTES, 1
    elif c == c'p':
        entry.op, entry.size = FMT_PASCAL, 1
    elif c == c'b':
        entry.op, entry.size = FMT_SIGNED, 1
    elif c == c'B':
        entry.op, entry.size = FMT_UNSIGNED, 1
    elif c == c'?':
        entry.op, entry.size = FMT_BOOL, 1  # _Bool is one byte on every supported platform
        entry.align = FW_BOOL_ALIGN if native else 0
    elif c == c'h' or c == c'H':
        entry.op = FMT_SIGNED if c == c'h' else FMT_UNSIGNED
        entry.size = sizeof(short) if native else 2
        entry.align = FW_SHORT_ALIGN if native else 0
    elif c == c'i' or c == c'I':
        entry.op = FMT_SIGNED if c == c'i' else FMT_UNSIGNED
        entry.size = sizeof(int) if native else 4
        entry.align = FW_INT_ALIGN if native else 0
    elif c == c'l' or c == c'L':
        entry.op = FMT_SIGNED if c == c'l' else FMT_UNSIGNED
        entry.size = sizeof(long) if native else 4
        entry.align = FW_LONG_ALIGN if native else 0
    elif c == c'q' or c == c'Q':
        entry.op = FMT_SIGNED if c == c'q' else FMT_UNSIGNED
        entry.size = sizeof(long long) if native else 8
        entry.align = FW_LONGLONG_ALIGN if native else 0
    elif c == c'e':
        entry.op = FMT_HALF
        entry.size = 2
        entry.align = FW_SHORT_ALIGN if native else 0
    elif c == c'f':
        entry.op = FMT_FLOAT
        entry.size = 4
        entry.align = FW_FLOAT_ALIGN if native else 0
    elif c == c'd':
        entry.op = FMT_DOUBLE
        entry.size = 8
        entry.align = FW_DOUBLE_ALIGN if native else 0
    elif native and (c == c'n' or c == c'N'):
        entry.op = FMT_SIGNED if c == c'n' else FMT_UNSIGNED
        entry.size, entry.align = sizeof(Py_ssize_t), FW_SIZE_T_ALIGN
    elif native and c == c'P':
        entry.op, entry.size, entry.align = FMT_VOID_P, sizeof(void*), FW_VOID_P_ALIGN
    else:
        raise StructError("bad char in struct format")
    return 0


cdef object raise_size_overflow():
    raise StructError("total struct size too long")


# ---------------------------------------------------------------------------
# Scalar conversions (Python -> C). Each returns -1 with an exception set.

cdef object as_python_int(object value):
    """int(value) by __index__ only, as _struct.c's get_pylong does."""
    if PyLong_Check(value):
        return value
    if PyIndex_Check(value):
        return PyNumber_Index(value)
    raise StructError("required argument is not an integer")


# Python 3.11 worded range errors by the C routine that packed the value, and
# used the native routines for '<'/'=' codes whose standard size equals the
# native one; 3.12 gave every integer code the "'%c' format requires" wording.
# Users' tests and logs match these texts, so each Python gets its own.
cdef bint LEGACY_RANGE_MESSAGES = sys.version_info < (3, 12)


cdef Py_ssize_t native_int_size(char fmt) noexcept:
    if fmt == c'h' or fmt == c'H':
        return sizeof(short)
    elif fmt == c'i' or fmt == c'I':
        return sizeof(int)
    elif fmt == c'l' or fmt == c'L':
        return sizeof(long)
    elif fmt == c'q' or fmt == c'Q':
        return sizeof(long long)
    elif fmt == c'n' or fmt == c'N':
        return sizeof(Py_ssize_t)
    return 1


cdef str legacy_range_message(FormatCode* code, object value, int swap, object low, object high):
    cdef char fmt = code.fmt
    cdef bint native_routine = not swap and code.size == native_int_size(fmt)
    if (fmt == c'q' or fmt == c'Q') and not native_routine:
        return "int too large to convert"  # _PyLong_AsByteArray's overflow
    # The C conversion the routine used first: unsigned long or long.
    if fmt == c'I' or fmt == c'L' or fmt == c'N' or fmt == c'Q' or (fmt == c'H' and not native_routine):
        convertible = 0 <= value <= <unsigned long>-1
    else:
        convertible = LONG_MIN <= value <= LONG_MAX
    if not convertible:
        return "argument out of range"
    if fmt == c'b':
        return "byte format requires -128 <= number <= 127"
    elif fmt == c'B':
        return "ubyte format requires 0 <= number <= 255"
    elif fmt == c'h' and native_routine:
        return f"short format requires {low} <= number <= {high}"
    elif fmt == c'H' and native_routine:
        return f"ushort format requires 0 <= number <= {high}"
    return f"'{chr(fmt)}' format requires {low} <= number <= {high}"


cdef int raise_int_range(FormatCode* code, object value, int swap) except -1:
    """struct.error for the Python int `value` that does not fit `code`."""
    # A Python int: the bounds of 8-byte codes do not fit C shifts (found by UBSan).
    bits = code.size * 8
    if code.op == FMT_SIGNED:
        low, high = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    else:
        low, high = 0, (1 << bits) - 1
    if LEGACY_RANGE_MESSAGES:
        raise StructError(legacy_range_message(code, value, swap, low, high))
    raise StructError(f"'{chr(code.fmt)}' format requires {low} <= number <= {high}")


cdef inline int pack_signed(FormatCode* code, char* out, object value, int swap) except -1:
    cdef int overflow = 0
    cdef long long x
    cdef Py_ssize_t bits
    if not PyLong_Check(value):
        value = as_python_int(value)
    x = PyLong_AsLongLongAndOverflow(value, &overflow)
    if overflow:
        return raise_int_range(code, value, swap)
    if code.size == 8:
        fw_store_u64(out, <uint64_t>x, swap)
        return 0
    bits = code.size * 8 - 1
    if x < -(1LL << bits) or x > (1LL << bits) - 1:
        return raise_int_range(code, value, swap)
    if code.size == 4:
        fw_store_u32(out, <uint32_t>x, swap)
    elif code.size == 2:
        fw_store_u16(out, <uint16_t>x, swap)
    else:
        out[0] = <char>x
    return 0


cdef inline int pack_unsigned(FormatCode* code, char* out, object value, int swap) except -1:
    cdef int overflow = 0
    cdef long long x
    cdef unsigned long long ux
    if not PyLong_Check(value):
        value = as_python_int(value)
    x = PyLong_AsLongLongAndOverflow(value, &overflow)
    if overflow < 0 or (overflow == 0 and x < 0):
        return raise_int_range(code, value, swap)
    if overflow > 0:
        if code.size != 8:
            return raise_int_range(code, value, swap)
        try:
            ux = PyLong_AsUnsignedLongLong(value)
        except OverflowError:
            return raise_int_range(code, value, swap)
    else:
        ux = <unsigned long long>x
    if code.size == 8:
        fw_store_u64(out, ux, swap)
        return 0
    if ux > (1ULL << (code.size * 8)) - 1:
        return raise_int_range(code, value, swap)
    if code.size == 4:
        fw_store_u32(out, <uint32_t>ux, swap)
    elif code.size == 2:
        fw_store_u16(out, <uint16_t>ux, swap)
    else:
        out[0] = <char>ux
    return 0


cdef inline double as_double(object value) except? -1.0:
    cdef double x
    if PyFloat_CheckExact(value):
        return PyFloat_AS_DOUBLE(value)
    try:
        x = PyFloat_AsDouble(value)
    except BaseException:
        raise StructError("required argument is not a float")
    return x


cdef int raise_overflow(object value, str message) except -1:
    # _struct.c turns an OverflowError raised while packing an int into
    # struct.error, like every other out-of-range int; for any other value
    # (a float, an __index__ object) the OverflowError propagates.
    if PyLong_Check(value):
        raise StructError("int too large to convert")
    raise OverflowError(message)


cdef inline int pack_scalar(FormatCode* code, char* out, object value, int swap) except -1:
    cdef double x
    cdef float narrowed
    cdef void* pointer
    cdef int truth
    if code.op == FMT_SIGNED:
        return pack_signed(code, out, value, swap)
    elif code.op == FMT_DOUBLE:
        fw_store_f64(out, as_double(value), swap)
    elif code.op == FMT_UNSIGNED:
        return pack_unsigned(code, out, value, swap)
    elif code.op == FMT_BOOL:
        truth = PyObject_IsTrue(value)
        out[0] = <char>(truth != 0)
    elif code.op == FMT_FLOAT:
        x = as_double(value)
        narrowed = <float>x
        # Overflow to infinity is an error in every byte order. CPython before
        # gh-145633 silently packed inf for native 'f'; fastwire raises as the
        # standard byte orders (and later CPythons) do.
        if narrowed - narrowed != 0 and x - x == 0:
            return raise_overflow(value, "float too large to pack with f format")
        fw_store_f32(out, narrowed, swap)
    elif code.op == FMT_HALF:
        x = as_double(value)
        try:
            c_float_pack2(x, out, FW_HOST_LITTLE != swap)
        except OverflowError:
            return raise_overflow(value, "float too large to pack with e format")
    elif code.op == FMT_CHAR:
        if not PyBytes_Check(value) or PyBytes_GET_SIZE(value) != 1:
            raise StructError("char format requires a bytes object of length 1")
        out[0] = PyBytes_AS_STRING(value)[0]
    elif code.op == FMT_VOID_P:
        try:
            pointer = PyLong_AsVoidPtr(as_python_int(value))
        except OverflowError:
            return raise_overflow(value, "int too large to convert")
        memcpy(out, &pointer, sizeof(void*))
    return 0


cdef int pack_string(FormatCode* code, char* out, object value) except -1:
    """'s' and 'p' fields: bytes or bytearray, truncated or zero-padded."""
    cdef const char* data
    cdef Py_ssize_t length
    if PyBytes_Check(value):
        data, length = PyBytes_AS_STRING(value), PyBytes_GET_SIZE(value)
    elif PyByteArray_Check(value):
        data, length = PyByteArray_AS_STRING(value), PyByteArray_GET_SIZE(value)
    else:
        raise StructError(f"argument for '{chr(code.fmt)}' must be a bytes object")
    if code.op == FMT_BYTES:
        if length > code.size:
            length = code.size
        memcpy(out, data, length)
    elif code.size > 0:
        # Pascal string: a length byte (capped at 255) then up to size-1 bytes.
        if length > code.size - 1:
            length = code.size - 1
        memcpy(out + 1, data, length)
        out[0] = <char>(length if length < 255 else 255)
    return 0


# ---------------------------------------------------------------------------
# Scalar conversions (C -> Python).

# Decoding works on raw owned references (NULL with an exception set on
# failure) so each item goes into its tuple slot without the extra
# incref/decref pair a Python-object temporary costs; callgrind showed that
# pair as a third of the per-item decode work.


cdef inline int check_new_reference(PyObject* item) except -1:
    # The C-API call that returned NULL has already set the exception.
    return -1 if item == NULL else 0


cdef inline PyObject* new_float_or_error(double x) noexcept:
    # c_float_unpack2/4 signal failure (non-IEEE platforms only) as -1.0 + exception.
    if x == -1.0 and c_err_occurred() != NULL:
        return NULL
    return c_float_from_double_or_null(x)


cdef inline PyObject* unpack_scalar(FormatCode* code, const char* p, int swap) noexcept:
    cdef void* pointer
    cdef Py_ssize_t length
    if code.op == FMT_SIGNED:
        if code.size == 4:
            return c_int_from_long_or_null(<int32_t>fw_load_u32(p, swap))
        elif code.size == 8:
            return c_int_from_longlong_or_null(<int64_t>fw_load_u64(p, swap))
        elif code.size == 2:
            return c_int_from_long_or_null(<int16_t>fw_load_u16(p, swap))
        return c_int_from_long_or_null(<signed char>p[0])
    elif code.op == FMT_UNSIGNED:
        if code.size == 4:
            return c_int_from_long_or_null(fw_load_u32(p, swap))
        elif code.size == 8:
            return c_int_from_ulonglong_or_null(fw_load_u64(p, swap))
        elif code.size == 2:
            return c_int_from_long_or_null(fw_load_u16(p, swap))
        return c_int_from_long_or_null(<unsigned char>p[0])
    elif code.op == FMT_DOUBLE:
        return c_float_from_double_or_null(fw_load_f64(p, swap))
    elif code.op == FMT_FLOAT:
        if swap:
            return new_float_or_error(c_float_unpack4(p, FW_HOST_LITTLE == 0))
        return c_float_from_double_or_null(fw_load_f32(p, 0))
    elif code.op == FMT_BOOL:
        return c_bool_from_long_or_null(p[0] != 0)
    elif code.op == FMT_HALF:
        return new_float_or_error(c_float_unpack2(p, FW_HOST_LITTLE != swap))
    elif code.op == FMT_CHAR:
        return c_bytes_from_or_null(p, 1)
    elif code.op == FMT_BYTES:
        return c_bytes_from_or_null(p, code.size)
    elif code.op == FMT_PASCAL:
        if code.size == 0:
            return c_bytes_from_or_null(p, 0)
        length = <unsigned char>p[0]
        if length >= code.size:
            length = code.size - 1
        return c_bytes_from_or_null(p + 1, length)
    else:  # FMT_VOID_P
        memcpy(&pointer, p, sizeof(void*))
        return c_int_from_voidptr_or_null(pointer)


cdef object item_count_error(str method, Py_ssize_t expected, Py_ssize_t got):
    raise StructError(f"{method} expected {expected} items for packing (got {got})")


# ---------------------------------------------------------------------------
# Compiled formats. Every pack and unpack call works on one CompiledFormat to
# which it holds its own reference, and reads nothing else that user code could
# change: a __index__, __bool__, __buffer__, a row's __iter__ or a finalizer can
# re-initialise a Struct, clear the module cache or run another call, and the
# running call still reads the codes, counts and sizes it started with.

cdef extern from *:
    """
    /* d[key] as an owned reference, None when absent: a borrowed reference
       could be freed by another thread on free-threaded builds. */
    static PyObject *fw_dict_get_owned(PyObject *d, PyObject *key) {
    #if PY_VERSION_HEX >= 0x030D0000
        PyObject *value = NULL;
        if (PyDict_GetItemRef(d, key, &value) < 0)
            return NULL;
    #else
        PyObject *value = PyDict_GetItemWithError(d, key);
        if (value == NULL && PyErr_Occurred())
            return NULL;
        Py_XINCREF(value);
    #endif
        if (value == NULL)
            Py_RETURN_NONE;
        return value;
    }
    """
    object fw_dict_get_owned(dict d, object key)


@cython.final
@cython.auto_pickle(False)
cdef class CompiledFormat:
    """A format compiled to codes; immutable once compile_format() returns it."""
    cdef FormatCode* codes
    cdef Py_ssize_t ncodes
    cdef Py_ssize_t nitems
    cdef Py_ssize_t size
    cdef int swap
    cdef bytes format
    # The object the module-level cache found this format under (see cached_format).
    cdef object key

    def __dealloc__(self):
        PyMem_Free(self.codes)

    cdef int pack_items(self, PyObject** items, char* out) except -1:
        """Pack exactly `nitems` objects from `items` into `out` (pre-zeroed, `size` bytes)."""
        cdef FormatCode* code = self.codes
        cdef FormatCode* end = self.codes + self.ncodes
        cdef Py_ssize_t r
        cdef char* p
        cdef int swap = self.swap
        while code < end:
            p = out + code.offset
            if code.op == FMT_BYTES or code.op == FMT_PASCAL:
                pack_string(code, p, <object>items[0])
                items += 1
            else:
                for r in range(code.repeat):
                    pack_scalar(code, p, <object>items[0], swap)
                    items += 1
                    p += code.size
            code += 1
        return 0

    cdef PyObject* decode_record(self, const char* data) noexcept:
        """A new tuple of one record's values (NULL with an exception set)."""
        cdef PyObject* item
        cdef FormatCode* code = self.codes
        cdef FormatCode* end = self.codes + self.ncodes
        cdef Py_ssize_t r, index = 0
        cdef const char* p
        cdef int swap = self.swap
        cdef PyObject* record = c_new_tuple_or_null(self.nitems)
        if record == NULL:
            return NULL
        while code < end:
            p = data + code.offset
            for r in range(code.repeat):
                item = unpack_scalar(code, p, swap)
                if item == NULL:
                    c_xdecref(record)
                    return NULL
                c_tuple_set_stolen(<object>record, index, item)
                index += 1
                p += code.size
            code += 1
        return record

    cdef tuple unpack_at(self, const char* data):
        cdef PyObject* record = self.decode_record(data)
        check_new_reference(record)
        return c_adopt_tuple(record)

    cdef bytes pack_array(self, PyObject** args, Py_ssize_t nargs):
        if nargs != self.nitems:
            item_count_error("pack", self.nitems, nargs)
        cdef bytes result = PyBytes_FromStringAndSize(NULL, self.size)
        cdef char* out = PyBytes_AS_STRING(result)
        memset(out, 0, self.size)
        self.pack_items(args, out)
        return result

    cdef int pack_into(self, PyObject** args, Py_ssize_t nargs) except -1:
        # args[0] is the buffer, args[1] the offset, the rest the values.
        cdef Py_ssize_t offset
        cdef Py_buffer view
        cdef char scratch[256]
        cdef char* staging
        if nargs != self.nitems + 2:
            if nargs == 0:
                raise StructError("pack_into expected buffer argument")
            elif nargs == 1:
                raise StructError("pack_into expected offset argument")
            item_count_error("pack_into", self.nitems, nargs - 2)
        # Held until the record is copied in: while it is exported, user code
        # run by the conversions below cannot resize or free the target.
        acquire_writable(<object>args[0], &view)
        try:
            offset = PyNumber_AsSsize_t(<object>args[1], IndexError)
            offset = record_offset(offset, self.size, view.len, True)
            # Pack into staging memory first so a value that fails to convert
            # leaves the caller's buffer untouched (the stdlib leaves it half written).
            if self.size <= 256:
                staging = scratch
            else:
                staging = <char*>PyMem_Malloc(self.size)
                if staging == NULL:
                    raise MemoryError()
            try:
                memset(staging, 0, self.size)
                self.pack_items(args + 2, staging)
                memcpy(<char*>view.buf + offset, staging, self.size)
            finally:
                if staging != scratch:
                    PyMem_Free(staging)
        finally:
            PyBuffer_Release(&view)
        return 0

    cdef tuple unpack(self, object buffer):
        cdef Py_buffer view
        acquire_readable(buffer, &view)
        try:
            if view.len != self.size:
                raise StructError(f"unpack requires a buffer of {self.size} bytes")
            return self.unpack_at(<const char*>view.buf)
        finally:
            release_view(&view)

    cdef tuple unpack_from(self, object buffer, object offset_arg):
        cdef Py_buffer view
        cdef Py_ssize_t offset
        acquire_readable(buffer, &view)
        try:
            # Converted only now: a bad buffer is reported before a bad offset,
            # in the order the stdlib's argument parsing checks them.
            offset = PyNumber_AsSsize_t(offset_arg, OverflowError)
            offset = record_offset(offset, self.size, view.len, False)
            return self.unpack_at(<const char*>view.buf + offset)
        finally:
            release_view(&view)

    cdef bytes pack_many(self, object rows):
        # A private tuple of rows (and of each list row) means user code run by
        # a conversion (__index__, __bool__) cannot resize what is being read.
        cdef tuple all_rows = rows if PyTuple_CheckExact(rows) else tuple(rows)
        cdef Py_ssize_t count = PyTuple_GET_SIZE(all_rows), i
        cdef tuple row
        if self.size and count > PY_SSIZE_T_MAX // self.size:
            raise MemoryError()
        cdef bytes result = PyBytes_FromStringAndSize(NULL, count * self.size)
        cdef char* out = PyBytes_AS_STRING(result)
        memset(out, 0, count * self.size)
        for i in range(count):
            item = all_rows[i]
            row = item if PyTuple_CheckExact(item) else tuple(item)
            if PyTuple_GET_SIZE(row) != self.nitems:
                item_count_error("pack", self.nitems, PyTuple_GET_SIZE(row))
            self.pack_items(PySequence_Fast_ITEMS(row), out + i * self.size)
        return result

    cdef list unpack_many(self, object buffer):
        cdef Py_buffer view
        cdef Py_ssize_t count, i
        cdef const char* data
        cdef int gc_was_enabled
        cdef PyObject* record
        if self.size == 0:
            raise StructError("cannot unpack_many with a struct of length 0")
        acquire_readable(buffer, &view)
        try:
            if view.len % self.size:
                raise StructError(
                    f"unpack_many requires a buffer of a multiple of {self.size} bytes")
            count = view.len // self.size
            data = <const char*>view.buf
            result = PyList_New(count)
            gc_was_enabled = fw_gc_pause()
            try:
                for i in range(count):
                    record = self.decode_record(data + i * self.size)
                    check_new_reference(record)
                    # Every item is an int, float, bool or bytes, so a record can
                    # never be part of a cycle. Untracking it now spares the
                    # collector the traversal it would otherwise do when the
                    # batch's allocations trigger it (CPython untracks such
                    # tuples itself, but only after paying for that traversal).
                    c_gc_untrack(record)
                    c_list_set_stolen(result, i, record)
            finally:
                fw_gc_resume(gc_was_enabled)
            return result
        finally:
            release_view(&view)


cdef inline Py_ssize_t record_offset(Py_ssize_t offset, Py_ssize_t size, Py_ssize_t length,
                                     bint packing) except -1:
    """The start of a `size`-byte record at `offset` (negative: from the end) of
    a `length`-byte buffer, or struct.error with _struct.c's message."""
    if offset < 0:
        # Neither sum can overflow: offset < 0 <= size, length.
        if offset + size > 0 or offset + length < 0:
            return raise_record_bounds(offset, size, length, packing)
        offset += length
    if length - offset < size:
        return raise_record_bounds(offset, size, length, packing)
    return offset


cdef Py_ssize_t raise_record_bounds(Py_ssize_t offset, Py_ssize_t size, Py_ssize_t length,
                                    bint packing) except -1:
    if offset < 0:
        if offset + size > 0:
            no_room = "no space to pack" if packing else "not enough data to unpack"
            raise StructError(f"{no_room} {size} bytes at offset {offset}")
        raise StructError(f"offset {offset} out of range for {length}-byte buffer")
    # As Python ints: size + offset can exceed PY_SSIZE_T_MAX (_struct.c
    # prints it as size_t).
    needed = <object>size + <object>offset
    if packing:
        raise StructError(
            f"pack_into requires a buffer of at least {needed} bytes for packing {size} bytes "
            f"at offset {offset} (actual buffer size is {length})")
    raise StructError(
        f"unpack_from requires a buffer of at least {needed} bytes for unpacking {size} bytes "
        f"at offset {offset} (actual buffer size is {length})")


cdef CompiledFormat compile_format(object format):
    """Compile a str or bytes format, or raise TypeError/struct.error."""
    if isinstance(format, str):
        format = (<str>format).encode("ascii")
    elif not isinstance(format, bytes):
        raise TypeError(
            "Struct() argument 1 must be a str or bytes object, not "
            f"{type(format).__name__}")
    elif not PyBytes_CheckExact(format):
        # A copy of its bytes: bytes() would run a subclass's __bytes__.
        format = PyBytes_FromStringAndSize(PyBytes_AS_STRING(format), PyBytes_GET_SIZE(format))
    cdef bytes fmt = format
    cdef const unsigned char* text = fmt
    cdef Py_ssize_t length = len(fmt)
    cdef Py_ssize_t i = 0, count, digit, size = 0, nitems = 0, ncodes = 0, extra
    cdef bint native = True
    cdef int swap = 0
    cdef unsigned char c
    cdef FormatEntry entry
    cdef FormatCode* codes
    if memchr(text, 0, length) != NULL:
        raise StructError("embedded null character")
    if length:
        c = text[0]
        if c == c'@':
            i = 1
        elif c == c'=':
            native, i = False, 1
        elif c == c'<':
            native, swap, i = False, not FW_HOST_LITTLE, 1
        elif c == c'>' or c == c'!':
            native, swap, i = False, FW_HOST_LITTLE, 1
    cdef CompiledFormat compiled = CompiledFormat.__new__(CompiledFormat)
    # At most one code per format character: the allocation is bounded by
    # the format's length, never by a repeat count inside it.
    codes = compiled.codes = <FormatCode*>PyMem_Malloc((length + 1) * sizeof(FormatCode))
    if codes == NULL:
        raise MemoryError()
    while i < length:
        c = text[i]
        i += 1
        if is_format_space(c):
            continue
        if c'0' <= c <= c'9':
            count = c - c'0'
            while i < length and c'0' <= text[i] <= c'9':
                digit = text[i] - c'0'
                if count > (PY_SSIZE_T_MAX - digit) // 10:
                    raise_size_overflow()
                count = count * 10 + digit
                i += 1
            if i == length:
                raise StructError("repeat count given without format specifier")
            c = text[i]
            i += 1
        else:
            count = 1
        lookup_format_char(c, native, &entry)
        if entry.align > 1 and size > 0:
            extra = (entry.align - 1) - (size - 1) % entry.align
            if extra > PY_SSIZE_T_MAX - size:
                raise_size_overflow()
            size += extra
        if count > (PY_SSIZE_T_MAX - size) // entry.size:
            raise_size_overflow()
        if entry.is_item and (count or c == c's' or c == c'p'):
            codes[ncodes].op = entry.op
            codes[ncodes].fmt = <char>c
            codes[ncodes].offset = size
            if c == c's' or c == c'p':
                codes[ncodes].size, codes[ncodes].repeat = count, 1
                nitems += 1
            else:
                codes[ncodes].size, codes[ncodes].repeat = entry.size, count
                nitems += count
            ncodes += 1
        size += count * entry.size
    compiled.ncodes, compiled.nitems, compiled.size = ncodes, nitems, size
    compiled.swap, compiled.format = swap, fmt
    return compiled


@cython.auto_pickle(False)  # like the stdlib's: Struct objects do not pickle
cdef class Struct:
    """Struct(format)

    A compiled struct format, byte-compatible with :class:`struct.Struct`.
    ``format`` is a str or bytes format string; ``size`` the packed size.
    Raises struct.error for an invalid format.
    """
    cdef CompiledFormat compiled
    cdef object __weakref__
    # Calls under way on this Struct. Each holds its own reference to the
    # format it started with, so re-initialising could never free codes under
    # it; __init__ still refuses while any runs (RuntimeError, as the stdlib's
    # fix for gh-143379 does), so no call sees `format` change mid-way.
    cdef Py_ssize_t _busy

    def __init__(self, format):
        cdef CompiledFormat compiled = compile_format(format)
        with cython.critical_section(self):
            if self._busy:
                raise RuntimeError("Struct.__init__() called while the Struct is packing or unpacking")
            self.compiled = compiled

    cdef CompiledFormat current(self):
        cdef CompiledFormat compiled
        with cython.critical_section(self):
            compiled = self.compiled
        if compiled is None:
            raise RuntimeError("Struct was not initialised by __init__()")
        return compiled

    cdef inline CompiledFormat claim(self):
        """The format for one call, claimed before the call runs any user code;
        release() ends the claim."""
        cdef CompiledFormat compiled
        with cython.critical_section(self):
            compiled = self.compiled
            if compiled is not None:
                self._busy += 1
        if compiled is None:
            raise RuntimeError("Struct was not initialised by __init__()")
        return compiled

    cdef inline void release(self) noexcept:
        with cython.critical_section(self):
            self._busy -= 1

    @property
    def format(self):
        """The format string, as str."""
        cdef CompiledFormat compiled
        with cython.critical_section(self):
            compiled = self.compiled
        return compiled.format.decode("ascii") if compiled is not None else None

    @property
    def size(self):
        """The packed size in bytes."""
        return self.current().size

    def __repr__(self):
        return f"{type(self).__name__}({self.format!r})"

    def __sizeof__(self):
        cdef CompiledFormat compiled
        with cython.critical_section(self):
            compiled = self.compiled
        return object.__sizeof__(self) + (compiled.ncodes * sizeof(FormatCode) if compiled is not None else 0)

    def unpack(self, buffer, /):
        """unpack(buffer) -> tuple

        Unpack a bytes-like object of exactly ``size`` bytes. Raises
        struct.error for any other length.
        """
        cdef CompiledFormat compiled = self.claim()
        try:
            return compiled.unpack(buffer)
        finally:
            self.release()

    def unpack_from(self, buffer, offset=0):
        """unpack_from(buffer, offset=0) -> tuple

        Unpack ``size`` bytes starting at ``offset`` (negative counts from the
        end). Raises struct.error if the buffer is too short.
        """
        cdef CompiledFormat compiled = self.claim()
        try:
            return compiled.unpack_from(buffer, offset)
        finally:
            self.release()

    def iter_unpack(self, buffer, /):
        """iter_unpack(buffer) -> iterator of tuples

        Unpack consecutive records; the buffer length must be a multiple of
        ``size``. Raises struct.error otherwise or for a zero-size format.
        The iterator keeps the format it was created with.
        """
        cdef CompiledFormat compiled = self.claim()
        try:
            return StructIterator(compiled, buffer)
        finally:
            self.release()

    def pack_many(self, rows):
        """pack_many(rows) -> bytes

        Pack an iterable of value tuples (or other sequences) into one bytes
        object, ``len(rows) * size`` long; the same as
        ``b"".join(self.pack(*row) for row in rows)`` without the per-row
        objects. Raises struct.error on the first bad row; nothing is returned
        partially packed. Raises MemoryError, before packing any row, when
        the result would exceed ``sys.maxsize`` bytes or cannot be allocated.
        """
        cdef CompiledFormat compiled = self.claim()
        try:
            return compiled.pack_many(rows)
        finally:
            self.release()

    def unpack_many(self, buffer, /):
        """unpack_many(buffer) -> list of tuples

        Unpack every record of a buffer whose length is a multiple of ``size``;
        the same as ``list(self.iter_unpack(buffer))``. Raises struct.error for
        a zero-size format or a length that is not a multiple of ``size``.
        """
        cdef CompiledFormat compiled = self.claim()
        try:
            return compiled.unpack_many(buffer)
        finally:
            self.release()


cdef class StructIterator:
    """Iterator returned by iter_unpack(); holds the buffer until exhausted."""
    cdef CompiledFormat compiled
    cdef Py_buffer view
    cdef bint holding
    cdef object source
    cdef Py_ssize_t position
    # next() calls decoding right now: a finalizer run by the collector while
    # a record is decoded can re-enter next() and exhaust the iterator, and
    # the buffer must stay held until the outer decode is done with it.
    cdef Py_ssize_t decoding

    def __cinit__(self, CompiledFormat compiled, buffer):
        if compiled.size == 0:
            raise StructError("cannot iteratively unpack with a struct of length 0")
        acquire_readable(buffer, &self.view)
        self.holding = True
        self.source = buffer  # keeps exact bytes (no buffer export) alive
        if self.view.len % compiled.size:
            self._release()
            raise StructError(
                f"iterative unpacking requires a buffer of a multiple of {compiled.size} bytes")
        self.compiled = compiled

    cdef void _release(self) noexcept:
        if self.holding and not self.decoding:
            self.holding = False
            release_view(&self.view)
            self.source = None

    def __dealloc__(self):
        self._release()

    def __iter__(self):
        return self

    def __next__(self):
        if not self.holding or self.position >= self.view.len:
            self._release()
            raise StopIteration
        # Claim the record before decoding it: decoding can run a finalizer
        # that calls next() on this iterator, or let another thread do so.
        cdef Py_ssize_t start = self.position
        self.position += self.compiled.size
        self.decoding += 1
        try:
            return self.compiled.unpack_at(<const char*>self.view.buf + start)
        finally:
            self.decoding -= 1

    def __length_hint__(self):
        if not self.holding:
            return 0
        return (self.view.len - self.position) // self.compiled.size


# ---------------------------------------------------------------------------
# Module-level functions: the compiled-format cache in one place.

cdef dict _struct_cache = {}


# The format of the previous module-level call, found by its `key`. A
# program's formats are mostly literals, the same object on every call, so an
# identity test skips the dict lookup, which callgrind showed as a third of
# pack('>ii', ...) (str and bytes are immutable, so the same object always
# means the same format). One global holds key and codes together, so no
# finalizer or thread between two reads can pair one format with another's
# codes. Free-threaded builds skip it: reading a global object is not a claim
# there.
cdef CompiledFormat _last_format = None


cdef CompiledFormat cached_format(object format):
    global _last_format
    cdef CompiledFormat compiled
    if not FW_FREE_THREADED:
        compiled = _last_format
        if compiled is not None and compiled.key is format:
            return compiled
    # Only exact str and bytes are cached: the lookup then runs no user code
    # (a subclass's __hash__/__eq__), and no other object that compares equal
    # to a cached format (memoryview(b"i") == b"i") is taken for it.
    if not (PyUnicode_CheckExact(format) or PyBytes_CheckExact(format)):
        return compile_format(format)
    found = fw_dict_get_owned(_struct_cache, format)
    if found is not None:
        compiled = <CompiledFormat>found
    else:
        compiled = compile_format(format)
        compiled.key = format
        if len(_struct_cache) >= STRUCT_CACHE_LIMIT:
            clear_struct_cache()
        _struct_cache[format] = compiled
    if not FW_FREE_THREADED:
        _last_format = compiled
    return compiled


cdef void clear_struct_cache() noexcept:
    global _last_format
    _struct_cache.clear()
    _last_format = None


def _clearcache():
    """Clear the cache of compiled formats used by the module-level functions."""
    clear_struct_cache()


def calcsize(format, /):
    """calcsize(format) -> int: the size of the struct described by ``format``."""
    return cached_format(format).size


def unpack(format, buffer, /):
    """unpack(format, buffer) -> tuple; see :meth:`Struct.unpack`."""
    return cached_format(format).unpack(buffer)


def unpack_from(format, /, buffer, offset=0):
    """unpack_from(format, buffer, offset=0) -> tuple; see :meth:`Struct.unpack_from`."""
    return cached_format(format).unpack_from(buffer, offset)


def iter_unpack(format, buffer, /):
    """iter_unpack(format, buffer) -> iterator; see :meth:`Struct.iter_unpack`."""
    return StructIterator(cached_format(format), buffer)


# ---------------------------------------------------------------------------
# The *args entry points, installed as METH_FASTCALL functions (see fastcall.h).

cdef object struct_pack_fastcall(object self, PyObject** args, Py_ssize_t nargs):
    cdef Struct owner = <Struct>self
    cdef CompiledFormat compiled = owner.claim()
    try:
        return compiled.pack_array(args, nargs)
    finally:
        owner.release()


cdef object struct_pack_into_fastcall(object self, PyObject** args, Py_ssize_t nargs):
    cdef Struct owner = <Struct>self
    cdef CompiledFormat compiled = owner.claim()
    try:
        compiled.pack_into(args, nargs)
    finally:
        owner.release()
    return None


cdef object module_pack_fastcall(object module, PyObject** args, Py_ssize_t nargs):
    if nargs == 0:
        raise TypeError("missing format argument")
    return cached_format(<object>args[0]).pack_array(args + 1, nargs - 1)


cdef object module_pack_into_fastcall(object module, PyObject** args, Py_ssize_t nargs):
    if nargs == 0:
        raise TypeError("missing format argument")
    cached_format(<object>args[0]).pack_into(args + 1, nargs - 1)
    return None


cdef PyMethodDef struct_pack_def, struct_pack_into_def, module_pack_def, module_pack_into_def

fw_add_fastcall_method(
    Struct, &struct_pack_def, "pack", struct_pack_fastcall,
    "pack($self, /, *values)\n--\n\n"
    "Pack the values according to the format and return bytes. Raises\n"
    "struct.error for the wrong number of values or a value of the wrong\n"
    "type or range (OverflowError for 'e'/'f' float overflow).")
fw_add_fastcall_method(
    Struct, &struct_pack_into_def, "pack_into", struct_pack_into_fastcall,
    "pack_into($self, buffer, offset, /, *values)\n--\n\n"
    "Pack the values into the writable buffer at offset (negative offsets\n"
    "count from the end). Raises struct.error if they do not fit, TypeError\n"
    "for a read-only buffer; on error the buffer is left unchanged.")
pack = fw_new_fastcall_function(
    &module_pack_def, "pack", module_pack_fastcall,
    "pack(format, /, *values)\n--\n\n"
    "Return bytes containing the values packed according to format;\n"
    "see Struct.pack.", __name__)
pack_into = fw_new_fastcall_function(
    &module_pack_into_def, "pack_into", module_pack_into_fastcall,
    "pack_into(format, buffer, offset, /, *values)\n--\n\n"
    "Pack the values according to format into buffer at offset;\n"
    "see Struct.pack_into.", __name__)
