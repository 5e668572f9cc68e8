# The C API as the core's hot paths use it, declared once for every part.
#
# Naming: a `Py*` name is Cython's own declaration (cimported from
# `cpython.*`), which counts references for the caller. A `c_*` name is
# declared here, raw: it takes and returns `PyObject *` and neither adds nor
# drops a reference behind the caller's back, or it differs from Cython's
# declaration in its argument types. Constants keep their CPython names.
#
# Error contract of the raw constructors: the plain name is declared
# `except NULL` (Cython propagates the exception); the `_or_null` form returns
# NULL with the exception set and leaves the check to the caller, for
# `noexcept` loops that hand the result straight to a slot.

from cpython.object cimport PyObject


cdef extern from "Python.h":
    const Py_ssize_t PY_SSIZE_T_MAX
    unsigned long Py_TPFLAGS_HEAPTYPE

    # The fields of a type the encoder reads to dispatch without a call.
    ctypedef struct TypeObject "PyTypeObject":
        const char *tp_name
        Py_ssize_t tp_basicsize
        Py_ssize_t tp_itemsize
        Py_ssize_t tp_dictoffset
        unsigned long tp_flags
        void *tp_new
        void *tp_getattro
        void *tp_descr_set
        unsigned int tp_version_tag

    TypeObject c_long_type "PyLong_Type"
    TypeObject c_float_type "PyFloat_Type"
    TypeObject c_str_type "PyUnicode_Type"
    TypeObject c_bytes_type "PyBytes_Type"
    TypeObject c_list_type "PyList_Type"
    TypeObject c_dict_type "PyDict_Type"
    TypeObject c_tuple_type "PyTuple_Type"
    TypeObject c_set_type "PySet_Type"
    TypeObject c_frozenset_type "PyFrozenSet_Type"
    TypeObject c_bytearray_type "PyByteArray_Type"
    TypeObject c_type_type "PyType_Type"
    TypeObject c_function_type "PyFunction_Type"
    TypeObject c_picklebuffer_type "PyPickleBuffer_Type"
    TypeObject c_object_type "PyBaseObject_Type"
    TypeObject c_complex_type "PyComplex_Type"

    PyObject *c_none "Py_None"
    PyObject *c_true "Py_True"
    PyObject *c_false "Py_False"
    PyObject *c_not_implemented "Py_NotImplemented"

    # References
    TypeObject *c_type_of "Py_TYPE"(PyObject *o)
    Py_ssize_t c_refcnt "Py_REFCNT"(PyObject *o)
    void c_incref "Py_INCREF"(PyObject *o)
    void c_decref "Py_DECREF"(PyObject *o)
    void c_xdecref "Py_XDECREF"(PyObject *o)
    void c_gc_untrack "PyObject_GC_UnTrack"(PyObject *o)

    # Errors and recursion
    PyObject *c_err_occurred "PyErr_Occurred"()
    PyObject *c_no_memory "PyErr_NoMemory"()
    void c_set_error "PyErr_SetString"(PyObject *exc, const char *message)
    void c_err_clear "PyErr_Clear"()
    bint c_err_matches "PyErr_ExceptionMatches"(PyObject *exc)
    int c_enter_recursive_call "Py_EnterRecursiveCall"(const char *where)
    void c_leave_recursive_call "Py_LeaveRecursiveCall"()
    int c_sys_audit "PySys_Audit"(const char *event, const char *fmt, ...) except -1

    # Type checks
    bint c_is_list_exact "PyList_CheckExact"(PyObject *o)
    bint c_is_dict_exact "PyDict_CheckExact"(PyObject *o)
    bint c_is_dict "PyDict_Check"(PyObject *o)
    bint c_is_set "PySet_Check"(PyObject *o)
    bint c_is_tuple "PyTuple_Check"(PyObject *o)
    bint c_is_type "PyType_Check"(PyObject *o)
    bint c_is_str_exact "PyUnicode_CheckExact"(PyObject *o)
    bint c_iter_check "PyIter_Check"(object o)
    bint c_type_has_feature "PyType_HasFeature"(type t, unsigned long feature)
    bint c_is_subtype "PyType_IsSubtype"(TypeObject *a, TypeObject *b)
    PyObject *c_type_lookup "_PyType_Lookup"(TypeObject *t, PyObject *name)
    object c_heap_type_name "PyType_GetName"(TypeObject *t)

    # Numbers
    PyObject *c_int_from_long "PyLong_FromLong"(long v) except NULL
    PyObject *c_int_from_long_or_null "PyLong_FromLong"(long v)
    PyObject *c_int_from_longlong "PyLong_FromLongLong"(long long v) except NULL
    PyObject *c_int_from_longlong_or_null "PyLong_FromLongLong"(long long v)
    PyObject *c_int_from_ulonglong_or_null "PyLong_FromUnsignedLongLong"(unsigned long long v)
    PyObject *c_int_from_voidptr_or_null "PyLong_FromVoidPtr"(void *p)
    PyObject *c_int_from_string "PyLong_FromString"(const char *s, char **end, int base) except NULL
    long long c_as_long_long "PyLong_AsLongLongAndOverflow"(PyObject *o, int *overflow)
    PyObject *c_bool_from_long_or_null "PyBool_FromLong"(long v)
    PyObject *c_float_from_double "PyFloat_FromDouble"(double v) except NULL
    PyObject *c_float_from_double_or_null "PyFloat_FromDouble"(double v)
    double c_float_value "PyFloat_AS_DOUBLE"(PyObject *o)
    double c_string_to_double "PyOS_string_to_double"(
        const char *s, char **endptr, object overflow_exception) except? -1.0
    # Cython's cpython.float declares these with unsigned char *, CPython's
    # headers (3.11+) with char *.
    int c_float_pack2 "PyFloat_Pack2"(double x, char *p, int le) except -1
    int c_float_pack4 "PyFloat_Pack4"(double x, char *p, int le) except -1
    double c_float_unpack2 "PyFloat_Unpack2"(const char *p, int le) except? -1.0
    double c_float_unpack4 "PyFloat_Unpack4"(const char *p, int le) except? -1.0
    double c_complex_real "PyComplex_RealAsDouble"(PyObject *o)
    double c_complex_imag "PyComplex_ImagAsDouble"(PyObject *o)

    # Bytes and str
    PyObject *c_bytes_from "PyBytes_FromStringAndSize"(const char *s, Py_ssize_t n) except NULL
    PyObject *c_bytes_from_or_null "PyBytes_FromStringAndSize"(const char *s, Py_ssize_t n)
    char *c_bytes_data "PyBytes_AS_STRING"(PyObject *o)
    Py_ssize_t c_bytes_size "PyBytes_GET_SIZE"(PyObject *o)
    int c_bytes_resize "_PyBytes_Resize"(PyObject **b, Py_ssize_t n)
    PyObject *c_bytes_decode_escape "PyBytes_DecodeEscape"(
        const char *s, Py_ssize_t n, const char *errors, Py_ssize_t unused, const char *unused2) except NULL
    PyObject *c_bytearray_from "PyByteArray_FromStringAndSize"(const char *s, Py_ssize_t n) except NULL
    char *c_bytearray_data "PyByteArray_AS_STRING"(PyObject *o)
    Py_ssize_t c_bytearray_size "PyByteArray_GET_SIZE"(PyObject *o)
    bint c_is_compact_ascii "PyUnicode_IS_COMPACT_ASCII"(PyObject *o)
    void *c_str_data "PyUnicode_DATA"(PyObject *o)
    Py_ssize_t c_str_length "PyUnicode_GET_LENGTH"(PyObject *o)
    const char *c_utf8_and_size "PyUnicode_AsUTF8AndSize"(PyObject *o, Py_ssize_t *size)
    PyObject *c_unicode_decode "PyUnicode_Decode"(
        const char *s, Py_ssize_t n, const char *encoding, const char *errors) except NULL
    PyObject *c_decode_raw_unicode_escape "PyUnicode_DecodeRawUnicodeEscape"(
        const char *s, Py_ssize_t n, const char *errors) except NULL
    PyObject *c_decode_utf8 "PyUnicode_DecodeUTF8"(const char *s, Py_ssize_t n, const char *errors) except NULL
    PyObject *c_decode_ascii "PyUnicode_DecodeASCII"(const char *s, Py_ssize_t n, const char *errors) except NULL
    void c_intern_in_place "PyUnicode_InternInPlace"(PyObject **p)

    # Containers
    PyObject *c_new_list "PyList_New"(Py_ssize_t n) except NULL
    Py_ssize_t c_list_size "PyList_GET_SIZE"(PyObject *o)
    PyObject *c_list_item "PyList_GET_ITEM"(PyObject *o, Py_ssize_t i)
    void c_list_set_stolen "PyList_SET_ITEM"(object list, Py_ssize_t index, PyObject *item)
    PyObject *c_new_tuple "PyTuple_New"(Py_ssize_t n) except NULL
    PyObject *c_new_tuple_or_null "PyTuple_New"(Py_ssize_t n)
    Py_ssize_t c_tuple_size "PyTuple_GET_SIZE"(PyObject *o)
    PyObject *c_tuple_item "PyTuple_GET_ITEM"(PyObject *o, Py_ssize_t i)
    void c_tuple_set_stolen "PyTuple_SET_ITEM"(object tuple, Py_ssize_t index, PyObject *item)
    PyObject *c_new_dict "PyDict_New"() except NULL
    Py_ssize_t c_dict_size "PyDict_GET_SIZE"(PyObject *o)
    int c_dict_next "PyDict_Next"(PyObject *d, Py_ssize_t *pos, PyObject **key, PyObject **value)
    PyObject *c_dict_get "PyDict_GetItem"(PyObject *d, PyObject *key)
    int c_dict_setitem "PyDict_SetItem"(PyObject *d, PyObject *k, PyObject *v) except -1
    PyObject *c_new_set "PySet_New"(PyObject *iterable) except NULL
    Py_ssize_t c_set_size "PySet_GET_SIZE"(PyObject *o)
    int c_set_add "PySet_Add"(PyObject *s, PyObject *v) except -1
    int c_setitem "PyObject_SetItem"(PyObject *o, PyObject *k, PyObject *v) except -1

    # Calls, attributes, buffers, modules
    PyObject *c_call_object "PyObject_CallObject"(PyObject *f, PyObject *args) except NULL
    object c_generic_get_dict "PyObject_GenericGetDict"(object o, void *context)
    const Py_buffer *c_picklebuffer_view "PyPickleBuffer_GetBuffer"(PyObject *o)
    bint c_buffer_contiguous "PyBuffer_IsContiguous"(const Py_buffer *view, char order)
    PyObject *c_memoryview_from "PyMemoryView_FromObject"(object o) except NULL
    PyObject *c_import "PyImport_Import"(object name) except NULL
    object c_import_object "PyImport_Import"(object name)


cdef extern from *:
    """
    #define FW_BUILTIN_SUBCLASS_FLAGS (Py_TPFLAGS_LONG_SUBCLASS | Py_TPFLAGS_LIST_SUBCLASS | \\
        Py_TPFLAGS_TUPLE_SUBCLASS | Py_TPFLAGS_BYTES_SUBCLASS | Py_TPFLAGS_UNICODE_SUBCLASS | \\
        Py_TPFLAGS_DICT_SUBCLASS | Py_TPFLAGS_BASE_EXC_SUBCLASS | Py_TPFLAGS_TYPE_SUBCLASS)
    """
    # A type whose instances are builtin objects under another type's name.
    unsigned long C_BUILTIN_SUBCLASS_FLAGS "FW_BUILTIN_SUBCLASS_FLAGS"
    # Hands an owned reference to Cython as a new reference, without the
    # incref/decref pair that a cast to object would add.
    tuple c_adopt_tuple "(PyObject *)"(PyObject *owned)
