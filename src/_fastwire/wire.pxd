# The core's own C functions (wire.h: byte order, native alignment, claims,
# GC pauses; fastcall.h: METH_FASTCALL entry points, a file's method called
# without a bound-method object) and the one place where
# Python buffers are acquired and released. Every part may use these; they
# use nothing but the C API.

from libc.stdint cimport uint16_t, uint32_t, uint64_t
from cpython.buffer cimport PyObject_GetBuffer, PyBuffer_Release, PyBUF_SIMPLE, PyBUF_WRITABLE
from cpython.bytes cimport PyBytes_CheckExact
from cpython.object cimport PyObject


cdef extern from "wire.h":
    size_t FW_SHORT_ALIGN, FW_INT_ALIGN, FW_LONG_ALIGN, FW_LONGLONG_ALIGN
    size_t FW_SIZE_T_ALIGN, FW_FLOAT_ALIGN, FW_DOUBLE_ALIGN, FW_VOID_P_ALIGN, FW_BOOL_ALIGN
    int FW_HOST_LITTLE
    int FW_FREE_THREADED
    bint fw_claim(int *busy) noexcept
    void fw_release(int *busy) noexcept
    void fw_store_u16(char *p, uint16_t v, int swap) nogil
    void fw_store_u32(char *p, uint32_t v, int swap) nogil
    void fw_store_u64(char *p, uint64_t v, int swap) nogil
    uint16_t fw_load_u16(const char *p, int swap) nogil
    uint32_t fw_load_u32(const char *p, int swap) nogil
    uint64_t fw_load_u64(const char *p, int swap) nogil
    void fw_store_f64(char *p, double x, int swap) nogil
    double fw_load_f64(const char *p, int swap) nogil
    void fw_store_f32(char *p, float x, int swap) nogil
    float fw_load_f32(const char *p, int swap) nogil
    void fw_zero(void *p, size_t n) noexcept nogil
    void fw_copy_short(char *dst, const char *src, size_t n) noexcept nogil
    void fw_view_of_bytes(Py_buffer *view, object bytes)
    void fw_bytes_forget_hash(PyObject *obj)
    int fw_gc_pause() noexcept
    void fw_gc_resume(int was_enabled) noexcept


cdef extern from "fastcall.h":
    ctypedef struct PyMethodDef:
        pass
    ctypedef object (*fw_fastcall_fn)(object self, PyObject **args, Py_ssize_t nargs)
    object fw_new_fastcall_function(PyMethodDef *method_def, const char *name, fw_fastcall_fn fn,
                                    const char *doc, object module_name)
    int fw_add_fastcall_method(type cls, PyMethodDef *method_def, const char *name,
                               fw_fastcall_fn fn, const char *doc) except -1
    int fw_method_lookup(object obj, object name, PyObject **func, PyObject **self) except -1
    object fw_method_call(PyObject *func, PyObject *self, object arg)


cdef extern from *:
    int fw_clzll "__builtin_clzll"(unsigned long long x)


cdef inline int acquire_readable(object obj, Py_buffer *view) except -1:
    """Borrow a C-contiguous read-only view of `obj` for the duration of a call.

    Exact bytes skip the buffer protocol (the caller's reference keeps them
    alive); everything else goes through PyObject_GetBuffer so the exception
    for str, non-contiguous memoryviews etc. is the one the stdlib raises.
    """
    if PyBytes_CheckExact(obj):
        fw_view_of_bytes(view, obj)
        return 0
    PyObject_GetBuffer(obj, view, PyBUF_SIMPLE)
    return 0


cdef inline void release_view(Py_buffer *view) noexcept:
    # PyBuffer_Release is a no-op when view.obj is NULL (the bytes fast path).
    PyBuffer_Release(view)


cdef inline int acquire_writable(object obj, Py_buffer *view) except -1:
    """Borrow a writable C-contiguous view; any failure is the TypeError the
    stdlib's "w*" argument converter raises (read-only, not a buffer, ...)."""
    try:
        PyObject_GetBuffer(obj, view, PyBUF_WRITABLE)
    except Exception:
        raise TypeError(
            f"argument must be read-write bytes-like object, not {type(obj).__name__}") from None
    return 0
