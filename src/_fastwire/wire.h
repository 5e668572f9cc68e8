/* Byte-order and native-layout primitives for the fastwire core.
 *
 * Raw C is clearer than Cython here: the alignment of each native C type is
 * derived exactly the way CPython's Modules/_struct.c derives it (offset of a
 * member after a char), so '@' formats lay out bytes identically.
 */
#ifndef FASTWIRE_WIRE_H
#define FASTWIRE_WIRE_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include "Python.h"

typedef struct { char c; short x; } fw_st_short;
typedef struct { char c; int x; } fw_st_int;
typedef struct { char c; long x; } fw_st_long;
typedef struct { char c; long long x; } fw_st_longlong;
typedef struct { char c; size_t x; } fw_st_size_t;
typedef struct { char c; float x; } fw_st_float;
typedef struct { char c; double x; } fw_st_double;
typedef struct { char c; void *x; } fw_st_void_p;
typedef struct { char c; _Bool x; } fw_st_bool;

#define FW_SHORT_ALIGN (sizeof(fw_st_short) - sizeof(short))
#define FW_INT_ALIGN (sizeof(fw_st_int) - sizeof(int))
#define FW_LONG_ALIGN (sizeof(fw_st_long) - sizeof(long))
#define FW_LONGLONG_ALIGN (sizeof(fw_st_longlong) - sizeof(long long))
#define FW_SIZE_T_ALIGN (sizeof(fw_st_size_t) - sizeof(size_t))
#define FW_FLOAT_ALIGN (sizeof(fw_st_float) - sizeof(float))
#define FW_DOUBLE_ALIGN (sizeof(fw_st_double) - sizeof(double))
#define FW_VOID_P_ALIGN (sizeof(fw_st_void_p) - sizeof(void *))
#define FW_BOOL_ALIGN (sizeof(fw_st_bool) - sizeof(_Bool))

#ifdef Py_GIL_DISABLED
#define FW_FREE_THREADED 1
#else
#define FW_FREE_THREADED 0
#endif

/* Claim an object for one call (0 -> 1), or report that it is already
 * claimed; the claim is the first thing a call does, before it runs any
 * Python, so a callback or another thread sees a busy object, never a half
 * configured one. With the GIL, nothing can run between the test and the
 * store; without it, the two are one atomic exchange. */
#if defined(Py_GIL_DISABLED) && defined(_MSC_VER)
#include <intrin.h>
#endif
static inline int fw_claim(int *busy) {
#ifdef Py_GIL_DISABLED
#if defined(_MSC_VER)
    return _InterlockedCompareExchange((volatile long *)busy, 1, 0) == 0;
#else
    int expected = 0;
    return __atomic_compare_exchange_n(busy, &expected, 1, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE);
#endif
#else
    if (*busy)
        return 0;
    *busy = 1;
    return 1;
#endif
}

static inline void fw_release(int *busy) {
#if defined(Py_GIL_DISABLED) && !defined(_MSC_VER)
    __atomic_store_n(busy, 0, __ATOMIC_RELEASE);
#elif defined(Py_GIL_DISABLED)
    _InterlockedExchange((volatile long *)busy, 0);
#else
    *busy = 0;
#endif
}

#if PY_LITTLE_ENDIAN
#define FW_HOST_LITTLE 1
#else
#define FW_HOST_LITTLE 0
#endif

#if defined(_MSC_VER)
#include <stdlib.h>
#define fw_bswap16(v) _byteswap_ushort(v)
#define fw_bswap32(v) _byteswap_ulong(v)
#define fw_bswap64(v) _byteswap_uint64(v)
#else
#define fw_bswap16(v) __builtin_bswap16(v)
#define fw_bswap32(v) __builtin_bswap32(v)
#define fw_bswap64(v) __builtin_bswap64(v)
#endif

/* `swap` is 1 when the wire byte order differs from the host's. memcpy keeps
 * every access alignment-safe; compilers turn it into a single move. */
static inline void fw_store_u16(char *p, uint16_t v, int swap) {
    if (swap) v = fw_bswap16(v);
    memcpy(p, &v, 2);
}
static inline void fw_store_u32(char *p, uint32_t v, int swap) {
    if (swap) v = fw_bswap32(v);
    memcpy(p, &v, 4);
}
static inline void fw_store_u64(char *p, uint64_t v, int swap) {
    if (swap) v = fw_bswap64(v);
    memcpy(p, &v, 8);
}
static inline uint16_t fw_load_u16(const char *p, int swap) {
    uint16_t v;
    memcpy(&v, p, 2);
    return swap ? fw_bswap16(v) : v;
}
static inline uint32_t fw_load_u32(const char *p, int swap) {
    uint32_t v;
    memcpy(&v, p, 4);
    return swap ? fw_bswap32(v) : v;
}
static inline uint64_t fw_load_u64(const char *p, int swap) {
    uint64_t v;
    memcpy(&v, p, 8);
    return swap ? fw_bswap64(v) : v;
}
static inline void fw_store_f64(char *p, double x, int swap) {
    uint64_t v;
    memcpy(&v, &x, 8);
    fw_store_u64(p, v, swap);
}
static inline double fw_load_f64(const char *p, int swap) {
    uint64_t v = fw_load_u64(p, swap);
    double x;
    memcpy(&x, &v, 8);
    return x;
}
static inline void fw_store_f32(char *p, float x, int swap) {
    uint32_t v;
    memcpy(&v, &x, 4);
    fw_store_u32(p, v, swap);
}
static inline float fw_load_f32(const char *p, int swap) {
    uint32_t v = fw_load_u32(p, swap);
    float x;
    memcpy(&x, &v, 4);
    return x;
}

/* memcpy called as a function, knowing nothing of n: given a bound on n
 * (even after an asm barrier), GCC may inline the copy as `rep movsq`. */
#if defined(__GNUC__) && !defined(__clang__)
__attribute__((noinline, noipa))
#elif defined(__clang__)
__attribute__((noinline))
#endif
static void fw_memcpy_unbounded(char *dst, const char *src, size_t n) {
    memcpy(dst, src, n);
}

/* memcpy of a short run whose length the compiler can bound (a string
 * shorter than 256 bytes): GCC then inlines memcpy as `rep movsq`, which
 * takes some 30 cycles to start, longer than the copy itself. Up to 32
 * bytes, two overlapping fixed-size moves (GCC expands even a memcpy of
 * fewer than 8 bytes with a `rep movsq` branch); longer runs call memcpy.
 * The shortest runs, the most common (dict keys, codes, flags), are tested
 * first. */
static inline void fw_copy_short(char *dst, const char *src, size_t n) {
    if (n < 8) {
        if (n >= 4) {
            uint32_t a, b;
            memcpy(&a, src, 4);
            memcpy(&b, src + n - 4, 4);
            memcpy(dst, &a, 4);
            memcpy(dst + n - 4, &b, 4);
        } else if (n > 0) {
            /* first, middle and last byte (some the same byte) */
            char first = src[0], middle = src[n >> 1], last = src[n - 1];
            dst[0] = first;
            dst[n >> 1] = middle;
            dst[n - 1] = last;
        }
    } else if (n <= 16) {
        uint64_t a, b;
        memcpy(&a, src, 8);
        memcpy(&b, src + n - 8, 8);
        memcpy(dst, &a, 8);
        memcpy(dst + n - 8, &b, 8);
    } else if (n <= 32) {
        char lo[16], hi[16];
        memcpy(lo, src, 16);
        memcpy(hi, src + n - 16, 16);
        memcpy(dst, lo, 16);
        memcpy(dst + n - 16, hi, 16);
    } else {
        fw_memcpy_unbounded(dst, src, n);
    }
}

/* memset(p, 0, n) through the C library even when n is a constant: GCC
 * inlines a constant-size memset of a few hundred bytes as `rep stosq`,
 * which costs more to start than the library's vector stores take. */
static inline void fw_zero(void *p, size_t n) {
#if defined(__GNUC__) || defined(__clang__)
    __asm__("" : "+r"(n));
#endif
    memset(p, 0, n);
}

/* A borrowed view of an exact bytes object without the buffer protocol: the
 * caller's reference keeps it alive, and obj == NULL makes PyBuffer_Release a
 * no-op. */
static inline void fw_view_of_bytes(Py_buffer *view, PyObject *bytes) {
    view->buf = PyBytes_AS_STRING(bytes);
    view->len = PyBytes_GET_SIZE(bytes);
    view->obj = NULL;
}

/* Pause the cyclic collector around a loop that only creates acyclic objects
 * (tuples of atoms, untracked at birth) and runs no Python code: collections
 * it would trigger can find nothing and are pure overhead. With the GIL held
 * and no callbacks, no other thread can observe the pause. Free-threaded
 * builds have no such guarantee, so there the collector is left alone. */
static inline int fw_gc_pause(void) {
#ifdef Py_GIL_DISABLED
    return 0;
#else
    return PyGC_Disable();
#endif
}
static inline void fw_gc_resume(int was_enabled) {
#ifndef Py_GIL_DISABLED
    if (was_enabled)
        PyGC_Enable();
#else
    (void)was_enabled;
#endif
}

/* A bytes object about to be refilled in place (its only reference is ours):
 * forget the hash it may have cached for its old contents. _PyBytes_Resize
 * does this too, but not when the size does not change. ob_shash is marked
 * deprecated (3.11+) yet is still the field bytes_hash() caches into. */
static inline void fw_bytes_forget_hash(PyObject *bytes) {
#if defined(__GNUC__) || defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
#elif defined(_MSC_VER)
#pragma warning(push)
#pragma warning(disable: 4996)
#endif
    ((PyBytesObject *)bytes)->ob_shash = -1;
#if defined(__GNUC__) || defined(__clang__)
#pragma GCC diagnostic pop
#elif defined(_MSC_VER)
#pragma warning(pop)
#endif
}

#endif /* FASTWIRE_WIRE_H */
