/* C functions of the pickle decoder (pickle_read.pxi).
 *
 * They live in C because they touch object layouts Cython does not model
 * (a list's item array) or are tight byte loops the compiler should see as
 * plain C.  Every function that takes `items` steals those references only
 * when it succeeds, so the caller's stack stays consistent on failure.
 */
#ifndef FASTWIRE_UNPICKLE_H
#define FASTWIRE_UNPICKLE_H

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include "Python.h"
#if defined(__SSE2__) || defined(_M_X64) || (defined(_M_IX86_FP) && _M_IX86_FP >= 2)
#include <emmintrin.h>
#define FW_HAVE_SSE2 1
#endif
#include "dicttable.h"

/* Append n owned references to an exact list by growing its item array once
 * (what list.extend does internally) instead of building a temporary list. */
static inline int fw_list_extend_steal(PyObject *list, PyObject **items, Py_ssize_t n)
{
    PyListObject *l = (PyListObject *)list;
    Py_ssize_t size = Py_SIZE(l);
    if (n > PY_SSIZE_T_MAX / (Py_ssize_t)sizeof(PyObject *) - size) {
        PyErr_NoMemory();
        return -1;
    }
    if (size + n > l->allocated) {
        /* Over-allocate by 1/8 like list_resize: pickles append in batches
         * of 1000, so an exact fit would reallocate on every batch. */
        size_t wanted = (size_t)(size + n);
        size_t alloc = wanted + (wanted >> 3) + 6;
        PyObject **grown = (PyObject **)PyMem_Realloc(l->ob_item, alloc * sizeof(PyObject *));
        if (grown == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        l->ob_item = grown;
        l->allocated = (Py_ssize_t)alloc;
    }
    memcpy(l->ob_item + size, items, (size_t)n * sizeof(PyObject *));
    Py_SET_SIZE(l, size + n);
    return 0;
}

static inline PyObject *fw_list_from_steal(PyObject **items, Py_ssize_t n)
{
    PyObject *list = PyList_New(n);
    if (list == NULL)
        return NULL;
    if (n)
        memcpy(((PyListObject *)list)->ob_item, items, (size_t)n * sizeof(PyObject *));
    return list;
}

/* A tuple of the n references (stolen). One holding only atoms (numbers,
 * strings, untracked tuples) is untracked at once, as the collector would on
 * its first pass over it: loads of many small records then leave the
 * collector nothing to traverse, instead of a young generation full of them. */
static inline PyObject *fw_tuple_from_steal(PyObject **items, Py_ssize_t n)
{
    PyObject *tuple = PyTuple_New(n);
    Py_ssize_t i;
    int atoms_only = 1;
    if (tuple == NULL)
        return NULL;
    for (i = 0; i < n; i++) {
        PyTuple_SET_ITEM(tuple, i, items[i]);
        if (atoms_only && fw_may_be_tracked(items[i]))
            atoms_only = 0;
    }
    if (atoms_only && n > 0)
        PyObject_GC_UnTrack(tuple);
    return tuple;
}

/* Records of one shape (a list of rows, a dict of dicts) pickle the same
 * keys in the same order into each of their dicts: as memo references, or as
 * short strings the string cache hands back, or small ints, so the very same
 * objects. SETITEMS into an empty dict whose keys are, in order and by
 * identity, those of `shape` (an earlier dict of this load) copies shape's
 * table, which for a dict built by insertion is one allocation and a copy
 * (dict.update's clone of a clean table), then replaces each value in
 * place (fw_dict_replace_values); that skips every resize and every probe. The result is the dict the
 * item-by-item path builds: same keys (the same objects), same order, the
 * values from the stream. 1 when done, having stolen the 2 * count
 * references in items; 0 when the keys differ (nothing changed); -1 on
 * error (items still owned by the caller). */
#define FW_DICT_SHAPE_MIN_ITEMS 6
static int fw_dict_fill_like(PyObject *d, PyObject *shape, PyObject **items, Py_ssize_t count)
{
    Py_ssize_t i;
    if (!fw_dict_has_keys(shape, items, count))
        return 0;
    if (PyDict_Update(d, shape) < 0)
        return -1;
    if (fw_dict_replace_values(d, items, count))
        return 1;
    for (i = 0; i < count; i++) {
        if (PyDict_SetItem(d, items[2 * i], items[2 * i + 1]) < 0)
            return -1;
    }
    /* d holds every one of them now: no finalizer runs here. */
    for (i = 0; i < 2 * count; i++)
        Py_DECREF(items[i]);
    return 1;
}

/* Pickled str is UTF-8 with surrogates allowed.  Most strings are short and
 * ASCII: check eight bytes at a time and copy, skipping the codec machinery.
 * Length 0 and 1 go through the codec so the interpreter's cached singletons
 * are returned, exactly as the stdlib does. */
/* Whether all n bytes are below 0x80. Long strs spend most of a load here
 * (the copy is glibc's vector memcpy), so the check must not be the slow
 * half: a loop OR-ing one word into one accumulator runs at 8 bytes a cycle
 * at best, and gcc turned a four-word step into stores and reloads through
 * the stack. 32 bytes a step in vector registers on x86-64 (SSE2 is part of
 * its baseline), four independent word accumulators elsewhere. */
static inline int fw_is_ascii(const unsigned char *p, Py_ssize_t n)
{
    Py_ssize_t i = 0;
    uint64_t acc = 0;
#ifdef FW_HAVE_SSE2
    __m128i v0 = _mm_setzero_si128(), v1 = _mm_setzero_si128();
    for (; i + 32 <= n; i += 32) {
        v0 = _mm_or_si128(v0, _mm_loadu_si128((const __m128i *)(p + i)));
        v1 = _mm_or_si128(v1, _mm_loadu_si128((const __m128i *)(p + i + 16)));
    }
    if (_mm_movemask_epi8(_mm_or_si128(v0, v1)))
        return 0;
#else
    uint64_t a0 = 0, a1 = 0, a2 = 0, a3 = 0;
    for (; i + 32 <= n; i += 32) {
        uint64_t w0, w1, w2, w3;
        memcpy(&w0, p + i, 8);
        memcpy(&w1, p + i + 8, 8);
        memcpy(&w2, p + i + 16, 8);
        memcpy(&w3, p + i + 24, 8);
        a0 |= w0;
        a1 |= w1;
        a2 |= w2;
        a3 |= w3;
    }
    acc = (a0 | a1) | (a2 | a3);
#endif
    for (; i + 8 <= n; i += 8) {
        uint64_t w;
        memcpy(&w, p + i, 8);
        acc |= w;
    }
    for (; i < n; i++)
        acc |= p[i];
    return !(acc & UINT64_C(0x8080808080808080));
}

static inline PyObject *fw_new_ascii_str(const char *s, Py_ssize_t n)
{
    PyObject *str = PyUnicode_New(n, 127);
    if (str != NULL)
        memcpy(PyUnicode_DATA(str), s, (size_t)n);
    return str;
}

#ifndef Py_GIL_DISABLED
/* Short ASCII strings met again and again across loads (dict keys, field
 * names, enum-like values: a stream of messages repeats them in every one)
 * come from a small cache: no allocation, no copy, and the str keeps its
 * cached hash, so making it a dict key does not hash it again. The stdlib
 * builds a new str each time; only identity (never a guarantee for str)
 * differs. Not on free-threaded builds, where the table would need a lock.
 *
 * A string of 2 to 24 bytes is read as three words that hold all of its bytes
 * (fw_str_words), so an entry is found by comparing words and the length, with
 * no memcmp. Sets of two entries: the few dozen keys of a record land in 256
 * sets, where one-way slots would leave a handful of pairs evicting each
 * other on every load. */
#define FW_STR_CACHE_SETS 256
#define FW_STR_CACHE_MAX_LEN 24
/* Data of unique strings (10,000 names) would only miss, and a miss costs a
 * cache miss on the slot's old string: after this many misses in a row the
 * cache is left alone for the next FW_STR_CACHE_REST strings. */
#define FW_STR_CACHE_MISS_STREAK 64
#define FW_STR_CACHE_REST 4096
typedef struct {
    uint64_t w0, w1, w2;
    Py_ssize_t n;
    PyObject *str;
} fw_str_entry;
static fw_str_entry fw_str_cache[FW_STR_CACHE_SETS][2];
static unsigned fw_str_cache_misses, fw_str_cache_resting;

static inline uint64_t fw_load64(const char *s)
{
    uint64_t w;
    memcpy(&w, s, 8);
    return w;
}

static inline uint64_t fw_load32(const char *s)
{
    uint32_t w;
    memcpy(&w, s, 4);
    return w;
}

/* Words that together hold every byte of s[0:n] for 2 <= n <= 24, reading
 * nothing outside it (overlapping reads where n is not a multiple of 8):
 * equal words and length mean equal strings. */
static inline void fw_str_words(const char *s, Py_ssize_t n, uint64_t w[3])
{
    const unsigned char *p = (const unsigned char *)s;
    if (n >= 8) {
        w[0] = fw_load64(s);
        w[1] = fw_load64(s + n - 8);
        w[2] = n > 16 ? fw_load64(s + 8) : 0;
    } else if (n >= 4) {
        w[0] = fw_load32(s) | (fw_load32(s + n - 4) << 32);
        w[1] = w[2] = 0;
    } else {
        w[0] = (uint64_t)p[0] | ((uint64_t)p[n >> 1] << 8) | ((uint64_t)p[n - 1] << 16);
        w[1] = w[2] = 0;
    }
}

static inline PyObject *fw_cached_ascii_str(const char *s, Py_ssize_t n, const uint64_t w[3])
{
    uint64_t h;
    fw_str_entry *set, *e;
    PyObject *str;
    h = (w[0] * UINT64_C(0x9E3779B97F4A7C15)) ^ ((w[1] + w[2] + (uint64_t)n) * UINT64_C(0xC2B2AE3D27D4EB4F));
    set = fw_str_cache[(h >> 32) & (FW_STR_CACHE_SETS - 1)];
    for (e = set; e < set + 2; e++) {
        if (e->n == n && e->w0 == w[0] && e->w1 == w[1] && e->w2 == w[2]) {
            fw_str_cache_misses = 0;
            Py_INCREF(e->str);
            return e->str;
        }
    }
    if (fw_str_cache_resting) {
        fw_str_cache_resting--;
        return fw_new_ascii_str(s, n);
    }
    if (++fw_str_cache_misses >= FW_STR_CACHE_MISS_STREAK) {
        fw_str_cache_misses = 0;
        fw_str_cache_resting = FW_STR_CACHE_REST;
    }
    str = fw_new_ascii_str(s, n);
    if (str == NULL)
        return NULL;
    /* The newer entry moves to the second way, the new one takes the first:
       of two strings sharing a set, the one met last is kept longest. */
    Py_XDECREF(set[1].str);
    set[1] = set[0];
    Py_INCREF(str);
    set[0].w0 = w[0];
    set[0].w1 = w[1];
    set[0].w2 = w[2];
    set[0].n = n;
    set[0].str = str;
    return str;
}
#endif

/* Short non-ASCII UTF-8 (accented names, CJK words, emoji in labels): the
 * interpreter's decoder starts an ASCII string, widens it at the first other
 * character and shrinks it at the end, several times the cost of the string.
 * Here one pass validates and counts, a second writes a str of the final kind.
 * Only well-formed input is decoded (surrogates included, as surrogatepass
 * allows them); anything else returns NULL without an error, and the caller
 * lets the interpreter's decoder produce its result or its exact error. */
#define FW_UTF8_SHORT_MAX 256

static inline int fw_utf8_cont(unsigned char c)
{
    return (c & 0xC0) == 0x80;
}

static PyObject *fw_decode_short_utf8(const unsigned char *p, Py_ssize_t n)
{
    Py_ssize_t i = 0, chars = 0;
    Py_UCS4 maxchar = 0, ch;
    PyObject *str;
    int kind;
    void *data;

    while (i < n) {
        unsigned char c = p[i];
        if (c < 0x80) {
            ch = c;
            i += 1;
        }
        else if (c >= 0xC2 && c <= 0xDF) {
            if (i + 1 >= n || !fw_utf8_cont(p[i + 1]))
                return NULL;
            ch = ((Py_UCS4)(c & 0x1F) << 6) | (p[i + 1] & 0x3F);
            i += 2;
        }
        else if (c >= 0xE0 && c <= 0xEF) {
            if (i + 2 >= n || !fw_utf8_cont(p[i + 1]) || !fw_utf8_cont(p[i + 2]))
                return NULL;
            if (c == 0xE0 && p[i + 1] < 0xA0)       /* overlong */
                return NULL;
            ch = ((Py_UCS4)(c & 0x0F) << 12) | ((Py_UCS4)(p[i + 1] & 0x3F) << 6)
                 | (p[i + 2] & 0x3F);
            i += 3;
        }
        else if (c >= 0xF0 && c <= 0xF4) {
            if (i + 3 >= n || !fw_utf8_cont(p[i + 1]) || !fw_utf8_cont(p[i + 2])
                    || !fw_utf8_cont(p[i + 3]))
                return NULL;
            if ((c == 0xF0 && p[i + 1] < 0x90) || (c == 0xF4 && p[i + 1] > 0x8F))
                return NULL;                        /* overlong, or past U+10FFFF */
            ch = ((Py_UCS4)(c & 0x07) << 18) | ((Py_UCS4)(p[i + 1] & 0x3F) << 12)
                 | ((Py_UCS4)(p[i + 2] & 0x3F) << 6) | (p[i + 3] & 0x3F);
            i += 4;
        }
        else {
            return NULL;
        }
        if (ch > maxchar)
            maxchar = ch;
        chars++;
    }
    if (chars < 2)      /* the interpreter hands out its one-character singletons */
        return NULL;
    str = PyUnicode_New(chars, maxchar);
    if (str == NULL)
        return NULL;
    kind = PyUnicode_KIND(str);
    data = PyUnicode_DATA(str);
    for (i = 0, chars = 0; i < n; chars++) {
        unsigned char c = p[i];
        if (c < 0x80) {
            ch = c;
            i += 1;
        }
        else if (c < 0xE0) {
            ch = ((Py_UCS4)(c & 0x1F) << 6) | (p[i + 1] & 0x3F);
            i += 2;
        }
        else if (c < 0xF0) {
            ch = ((Py_UCS4)(c & 0x0F) << 12) | ((Py_UCS4)(p[i + 1] & 0x3F) << 6)
                 | (p[i + 2] & 0x3F);
            i += 3;
        }
        else {
            ch = ((Py_UCS4)(c & 0x07) << 18) | ((Py_UCS4)(p[i + 1] & 0x3F) << 12)
                 | ((Py_UCS4)(p[i + 2] & 0x3F) << 6) | (p[i + 3] & 0x3F);
            i += 4;
        }
        PyUnicode_WRITE(kind, data, chars, ch);
    }
    return str;
}

static inline PyObject *fw_decode_pickled_str(const char *s, Py_ssize_t n)
{
    if (n > 1) {
        const unsigned char *p = (const unsigned char *)s;
#ifndef Py_GIL_DISABLED
        if (n <= FW_STR_CACHE_MAX_LEN) {
            uint64_t w[3];
            fw_str_words(s, n, w);
            if (!((w[0] | w[1] | w[2]) & UINT64_C(0x8080808080808080)))
                return fw_cached_ascii_str(s, n, w);
            goto not_ascii;
        }
#endif
        if (fw_is_ascii(p, n))
            return fw_new_ascii_str(s, n);
#ifndef Py_GIL_DISABLED
    not_ascii:
#endif
        if (n <= FW_UTF8_SHORT_MAX) {
            PyObject *str = fw_decode_short_utf8(p, n);
            if (str != NULL || PyErr_Occurred())
                return str;
        }
    }
    return PyUnicode_DecodeUTF8(s, n, "surrogatepass");
}

/* The ints 0..255 (every BININT1 and most BININT2/BININT values), held once:
 * PyLong_FromLong hands out the interpreter's cached objects for them too,
 * so the result is the same object the stdlib returns, found without a call
 * (a third of the cost of a small-int-heavy pickle). Written once at import,
 * read-only afterwards. */
#define FW_SMALL_INTS 256
static PyObject *fw_small_ints[FW_SMALL_INTS];

static int fw_small_ints_init(void)
{
    int i;
    for (i = 0; i < FW_SMALL_INTS; i++) {
        if (fw_small_ints[i] == NULL && (fw_small_ints[i] = PyLong_FromLong(i)) == NULL)
            return -1;
    }
    return 0;
}

/* An int of one digit that the interpreter does not cache (ids, timestamps,
 * counters: most BININT values past 256), built as CPython's own
 * _PyLong_FromMedium builds it, without PyLong_FromLong's dispatch on the
 * value's size: a third of the cost of a list of such ints. The layout is
 * CPython's (Include/cpython/longintrepr.h), the same from 3.11 to 3.13 with
 * the GIL; PyObject_Init(Var) does the rest of a new object's set-up (its
 * reference count, tracemalloc, 3.13's reference tracer). 3.14 keeps freed
 * ints on a free list that only PyLong_FromLong reaches, and free-threaded
 * builds lay out the header differently: both call it. */
#if PY_VERSION_HEX >= 0x030B0000 && PY_VERSION_HEX < 0x030E0000 && !defined(Py_GIL_DISABLED) \
    && !defined(Py_LIMITED_API) && PyLong_SHIFT == 30
#define FW_INLINE_MEDIUM_INTS 1
static inline PyObject *fw_new_medium_int(long v)
{
    PyLongObject *o = (PyLongObject *)PyObject_Malloc(sizeof(PyLongObject));
    digit magnitude = (digit)(v < 0 ? 0UL - (unsigned long)v : (unsigned long)v);
    if (o == NULL)
        return PyErr_NoMemory();
#if PY_VERSION_HEX >= 0x030C0000
    /* One digit (count << 3), sign bits 2 for negative, 0 for positive. */
    o->long_value.lv_tag = ((uintptr_t)1 << 3) | (uintptr_t)(v < 0 ? 2 : 0);
    o->long_value.ob_digit[0] = magnitude;
    return PyObject_Init((PyObject *)o, &PyLong_Type);
#else
    o->ob_digit[0] = magnitude;
    return (PyObject *)PyObject_InitVar((PyVarObject *)o, &PyLong_Type, v < 0 ? -1 : 1);
#endif
}
#endif

/* A new reference to the int v. */
static inline PyObject *fw_int_from_long(long v)
{
    if ((unsigned long)v < FW_SMALL_INTS) {
        PyObject *o = fw_small_ints[v];
        Py_INCREF(o);
        return o;
    }
#ifdef FW_INLINE_MEDIUM_INTS
    /* Past the interpreter's cached -5..256, within one digit. */
    if (v > 256 ? v < ((long)1 << PyLong_SHIFT) : v < -5 && v > -((long)1 << PyLong_SHIFT))
        return fw_new_medium_int(v);
#endif
    return PyLong_FromLong(v);
}

/* Little-endian unsigned size of nbytes (1, 2, 4 or 8); -1 when it does not
 * fit a Py_ssize_t (the stdlib's calc_binsize). */
static inline Py_ssize_t fw_le_size(const char *s, int nbytes)
{
    const unsigned char *p = (const unsigned char *)s;
    uint64_t x = 0;
    int i;
    for (i = 0; i < nbytes; i++)
        x |= (uint64_t)p[i] << (8 * i);
    if (x > (uint64_t)PY_SSIZE_T_MAX)
        return -1;
    return (Py_ssize_t)x;
}

/* Little-endian int of nbytes: unsigned for 1 and 2, signed for 4 (the
 * stdlib's calc_binint). */
static inline long fw_le_int(const char *s, int nbytes)
{
    const unsigned char *p = (const unsigned char *)s;
    if (nbytes == 1)
        return p[0];
    if (nbytes == 2)
        return (long)p[0] | ((long)p[1] << 8);
    return (long)(int32_t)((uint32_t)p[0] | ((uint32_t)p[1] << 8) |
                           ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24));
}

/* Push the ints of the BININT, BININT1 and BININT2 opcodes at *pos onwards
 * while each is whole in the buffer and the stack has a free slot: a list's
 * items or a record's fields come as a run of them, which one loop decodes
 * without a trip through the opcode switch per int. *pos and *sp advance
 * past each int pushed, so on an error (no memory) the stack holds the ints
 * made so far and *pos the opcode that failed; 0 pushed leaves the caller's
 * own path to read on or report truncation. Out of line: inlined, it costs
 * the decode loop registers on every other opcode. */
Py_NO_INLINE static int fw_push_int_run(const char **pos, const char *end, PyObject **stack,
                                        Py_ssize_t *sp, Py_ssize_t cap)
{
    const char *p = *pos;
    Py_ssize_t top = *sp;
    int status = 0;
    while (top < cap && p < end) {
        unsigned char op = (unsigned char)p[0];
        Py_ssize_t width;
        PyObject *o;
        if (op == 'K')          /* BININT1 */
            width = 1;
        else if (op == 'J')     /* BININT */
            width = 4;
        else if (op == 'M')     /* BININT2 */
            width = 2;
        else
            break;
        if (end - p <= width)
            break;
        o = fw_int_from_long(fw_le_int(p + 1, (int)width));
        if (o == NULL) {
            status = -1;
            break;
        }
        stack[top++] = o;
        p += 1 + width;
    }
    *pos = p;
    *sp = top;
    return status;
}

/* The signed little-endian integer of 1 to 8 bytes (LONG1/LONG4 payloads
 * that fit a C long long: most ints past 32 bits), so that it is built with
 * PyLong_FromLongLong rather than the generic byte-array conversion. */
static inline long long fw_le_signed(const char *s, Py_ssize_t nbytes)
{
    const unsigned char *p = (const unsigned char *)s;
    uint64_t x = 0;
    Py_ssize_t i;
    for (i = 0; i < nbytes; i++)
        x |= (uint64_t)p[i] << (8 * i);
    if (nbytes < 8 && (p[nbytes - 1] & 0x80))
        x |= ~UINT64_C(0) << (8 * nbytes);
    return (long long)x;
}

/* The int of a LONG1/LONG4 payload: n little-endian two's-complement bytes.
 * Redundant sign bytes are dropped first, so a payload that fits 8 bytes
 * (whatever it was padded to) becomes a C long long, and the interpreter's
 * cached small ints come back as themselves.
 *
 * Wider ones are at least 57 bits, never a cached int. _PyLong_FromByteArray
 * converts them a byte at a time (12 instructions a byte on a 1000-bit int);
 * with the layout fw_new_medium_int relies on, the digits are filled here
 * from 32 bits of payload a step, a negative value's magnitude (its bytes
 * inverted, plus one) carried along the way. */
static PyObject *fw_int_from_le_signed(const char *s, Py_ssize_t n)
{
    const unsigned char *p = (const unsigned char *)s;
    int negative = (p[n - 1] & 0x80) != 0;
    unsigned char pad = negative ? 0xFF : 0x00;

    while (n > 1 && p[n - 1] == pad && ((p[n - 2] & 0x80) != 0) == negative)
        n--;
    if (n <= 8)
        return PyLong_FromLongLong(fw_le_signed(s, n));
#ifdef FW_INLINE_MEDIUM_INTS
    if (n <= PY_SSIZE_T_MAX / 8 - PyLong_SHIFT) {
        Py_ssize_t ndigits = (8 * n + PyLong_SHIFT - 1) / PyLong_SHIFT, i = 0, k = 0;
        PyLongObject *v = _PyLong_New(ndigits);
        uint64_t acc = 0, carry = (uint64_t)negative;
        uint32_t invert = negative ? UINT32_C(0xFFFFFFFF) : 0;
        int bits = 0;
        digit *d;
        if (v == NULL)
            return NULL;
#if PY_VERSION_HEX >= 0x030C0000
        d = v->long_value.ob_digit;
#else
        d = v->ob_digit;
#endif
        for (; i + 4 <= n; i += 4) {
            uint32_t w = (uint32_t)p[i] | ((uint32_t)p[i + 1] << 8)
                         | ((uint32_t)p[i + 2] << 16) | ((uint32_t)p[i + 3] << 24);
            uint64_t c = (uint64_t)(w ^ invert) + carry;
            carry = c >> 32;
            acc |= (c & UINT64_C(0xFFFFFFFF)) << bits;
            bits += 32;
            while (bits >= PyLong_SHIFT) {
                d[k++] = (digit)(acc & PyLong_MASK);
                acc >>= PyLong_SHIFT;
                bits -= PyLong_SHIFT;
            }
        }
        for (; i < n; i++) {
            uint64_t c = (uint64_t)(unsigned char)(p[i] ^ (unsigned char)invert) + carry;
            carry = c >> 8;
            acc |= (c & 0xFF) << bits;
            bits += 8;
            if (bits >= PyLong_SHIFT) {
                d[k++] = (digit)(acc & PyLong_MASK);
                acc >>= PyLong_SHIFT;
                bits -= PyLong_SHIFT;
            }
        }
        if (bits > 0)
            d[k++] = (digit)acc;
        while (k > 1 && d[k - 1] == 0)
            k--;
#if PY_VERSION_HEX >= 0x030C0000
        /* The digit count shifted by 3, sign bits 2 for negative (as above). */
        v->long_value.lv_tag = ((uintptr_t)k << 3) | (uintptr_t)(negative ? 2 : 0);
#else
        Py_SET_SIZE(v, negative ? -k : k);
#endif
        return (PyObject *)v;
    }
#endif
    return _PyLong_FromByteArray(p, (size_t)n, 1, 1);
}

static inline double fw_be_double(const char *s)
{
    uint64_t v;
    double x;
    memcpy(&v, s, 8);
#if PY_LITTLE_ENDIAN
#if defined(_MSC_VER)
    v = _byteswap_uint64(v);
#else
    v = __builtin_bswap64(v);
#endif
#endif
    memcpy(&x, &v, 8);
    return x;
}

/* A memoryview over obj marked read-only (READONLY_BUFFER). */
static inline int fw_memoryview_is_readonly(PyObject *view)
{
    return PyMemoryView_GET_BUFFER(view)->readonly;
}

static inline void fw_memoryview_set_readonly(PyObject *view)
{
    PyMemoryView_GET_BUFFER(view)->readonly = 1;
}


/* NEWOBJ calls cls.__new__ through the type slot, as the stdlib does. */
static inline int fw_type_has_new(PyObject *cls)
{
    return ((PyTypeObject *)cls)->tp_new != NULL;
}

static inline PyObject *fw_call_tp_new(PyObject *cls, PyObject *args, PyObject *kwargs)
{
    return ((PyTypeObject *)cls)->tp_new((PyTypeObject *)cls, args, kwargs);
}

/* NEWOBJ of a class whose __new__ is a Python function, without the
 * attribute lookup and argument copy of its slot (slot_tp_new): with the
 * metaclass exactly `type`, type.__getattribute__ finds `__new__` as the
 * staticmethod in the class's MRO and calls it with (cls, *args), which is
 * what this does from the argument tuple's own items.  Anything else (another
 * metaclass, a builtin __new__, many arguments) goes through the slot.
 * `new_name` is the interned "__new__". */
#define FW_NEW_INLINE_ARGS 8
#ifndef Py_GIL_DISABLED
/* The slot of classes with a Python __new__ (slot_tp_new, which the C API
 * does not name), learned from the first one met: classes whose tp_new is
 * another (object.__new__ and every builtin) then skip the MRO lookup.  Only
 * a shortcut to the slot, which is always correct, so a wrong guess would
 * cost speed, never behaviour. */
static newfunc fw_python_new_slot;
#endif

static inline PyObject *fw_call_new(PyObject *cls, PyObject *args, PyObject *new_name)
{
    PyObject *descr, *func, *result;
    PyObject *stack[FW_NEW_INLINE_ARGS + 1];
    Py_ssize_t i, n;

    if (!Py_IS_TYPE(cls, &PyType_Type) || !PyTuple_CheckExact(args)
            || (n = PyTuple_GET_SIZE(args)) > FW_NEW_INLINE_ARGS)
        return fw_call_tp_new(cls, args, NULL);
#ifndef Py_GIL_DISABLED
    if (fw_python_new_slot != NULL && ((PyTypeObject *)cls)->tp_new != fw_python_new_slot)
        return fw_call_tp_new(cls, args, NULL);
#endif
    descr = _PyType_Lookup((PyTypeObject *)cls, new_name);     /* borrowed */
    if (descr == NULL || !Py_IS_TYPE(descr, &PyStaticMethod_Type))
        return fw_call_tp_new(cls, args, NULL);
#ifndef Py_GIL_DISABLED
    fw_python_new_slot = ((PyTypeObject *)cls)->tp_new;
#endif
    func = PyStaticMethod_Type.tp_descr_get(descr, NULL, cls);
    if (func == NULL)
        return NULL;
    stack[0] = cls;
    for (i = 0; i < n; i++)
        stack[i + 1] = PyTuple_GET_ITEM(args, i);
    /* args (held by the caller) keeps the items alive during the call. */
    result = PyObject_Vectorcall(func, stack, (size_t)(n + 1), NULL);
    Py_DECREF(func);
    return result;
}

/* getattr(obj, name, <missing>) without raising AttributeError: 1 found,
 * 0 missing, -1 error (what the stdlib uses for __setstate__). */
static inline int fw_lookup_attr(PyObject *obj, PyObject *name, PyObject **result)
{
#if PY_VERSION_HEX >= 0x030D0000
    return PyObject_GetOptionalAttr(obj, name, result);
#else
    return _PyObject_LookupAttr(obj, name, result);
#endif
}

/* Interning the same attribute-name object once per BUILD costs a lookup in
 * the interpreter's interned table each time; instance pickles repeat the
 * same memoized key objects, so remember the last few results.  Entries own
 * both strings, so an address cannot be reused while it is cached. */
#define FW_INTERN_SLOTS 16
typedef struct {
    PyObject *src[FW_INTERN_SLOTS];
    PyObject *dst[FW_INTERN_SLOTS];
    /* Set by the first store, so that emptying the cache after a load that
     * applied no dict state (most loads) does not walk every slot. */
    int used;
} fw_intern_cache;

static PyObject *fw_intern(fw_intern_cache *cache, PyObject *key)
{
    size_t slot = ((uintptr_t)key >> 4) % FW_INTERN_SLOTS;
    PyObject *interned;
    if (cache->src[slot] == key) {
        Py_INCREF(cache->dst[slot]);
        return cache->dst[slot];
    }
    interned = key;
    Py_INCREF(interned);
    PyUnicode_InternInPlace(&interned);
    Py_XDECREF(cache->src[slot]);
    Py_XDECREF(cache->dst[slot]);
    Py_INCREF(key);
    cache->src[slot] = key;
    Py_INCREF(interned);
    cache->dst[slot] = interned;
    cache->used = 1;
    return interned;
}

/* A new reference to a state key as BUILD stores it: an exact str interned
 * (through the cache), anything else as it is, for the store to accept or
 * refuse as the stdlib's would. */
static inline PyObject *fw_attribute_name(fw_intern_cache *cache, PyObject *key)
{
    if (PyUnicode_CheckExact(key))
        return fw_intern(cache, key);
    Py_INCREF(key);
    return key;
}

static void fw_intern_cache_clear(fw_intern_cache *cache)
{
    int i;
    if (!cache->used)
        return;
    cache->used = 0;
    for (i = 0; i < FW_INTERN_SLOTS; i++) {
        Py_CLEAR(cache->src[i]);
        Py_CLEAR(cache->dst[i]);
    }
}

/* The getter of the `__dict__` that a class statement gives its instances
 * (set once by fw_instance_dict_getter_init from such a class). */
static getter fw_instance_dict_getter = NULL;

static int fw_instance_dict_getter_init(PyObject *descr)
{
    if (!Py_IS_TYPE(descr, &PyGetSetDescr_Type)) {
        PyErr_SetString(PyExc_SystemError, "a class's __dict__ is not a getset descriptor");
        return -1;
    }
    fw_instance_dict_getter = ((PyGetSetDescrObject *)descr)->d_getset->get;
    return 0;
}

/* BUILD without __setstate__: inst.__dict__.update(state), str keys interned.
 *
 * When a key names no data descriptor on the type, storing through
 * PyObject_GenericSetAttr lands in the same instance dict without
 * materialising it (3.11+ keep instance attributes inline until __dict__ is
 * asked for), which is both faster here and faster to read later. That holds
 * where attribute assignment is the generic one, and where __dict__ is the
 * one a class statement makes, whatever __setattr__ the class defines (a
 * frozen dataclass's): the generic store never calls the class's __setattr__,
 * and neither does the stdlib's update of inst.__dict__. Anything else goes
 * through inst.__dict__ exactly as the stdlib does. */
static int fw_apply_dict_state(PyObject *inst, PyObject *state, PyObject *dict_name,
                               fw_intern_cache *interns)
{
    PyTypeObject *tp = Py_TYPE(inst);
    PyObject *dict = NULL, *key, *value, *descr;
    Py_ssize_t pos = 0;
    int generic = 0;

    if (tp->tp_dictoffset != 0 && PyDict_GET_SIZE(state) > 0) {
        descr = _PyType_Lookup(tp, dict_name);
        generic = descr != NULL && Py_IS_TYPE(descr, &PyGetSetDescr_Type)
                  && (tp->tp_setattro == PyObject_GenericSetAttr
                      || ((PyGetSetDescrObject *)descr)->d_getset->get == fw_instance_dict_getter);
    }
    if (!generic) {
        dict = PyObject_GetAttr(inst, dict_name);
        if (dict == NULL)
            return -1;
    }
    while (PyDict_Next(state, &pos, &key, &value)) {
        int status;
        key = fw_attribute_name(interns, key);
        if (generic && PyUnicode_CheckExact(key)) {
            descr = _PyType_Lookup(tp, key);
            if (descr == NULL || Py_TYPE(descr)->tp_descr_set == NULL) {
                status = PyObject_GenericSetAttr(inst, key, value);
                Py_DECREF(key);
                if (status < 0)
                    goto error;
                continue;
            }
        }
        if (dict == NULL) {
            dict = PyObject_GetAttr(inst, dict_name);
            if (dict == NULL) {
                Py_DECREF(key);
                goto error;
            }
        }
        status = PyObject_SetItem(dict, key, value);
        Py_DECREF(key);
        if (status < 0)
            goto error;
    }
    Py_XDECREF(dict);
    return 0;
error:
    Py_XDECREF(dict);
    return -1;
}

/* BUILD's slot state: setattr(inst, key, value) for each item, as the
 * stdlib does (so a class's own __setattr__ is called). Str keys go through
 * the per-load intern cache first: PyObject_SetAttr interns every name it is
 * given, and a memoized key met again is then found without probing the
 * interpreter's interned table (6% of loading the corpus's slotted class).
 * Each key and value is held across the call, which may change the dict:
 * iteration then goes on from the same position, as the stdlib's does. */
static int fw_apply_slot_state(PyObject *inst, PyObject *state, fw_intern_cache *interns)
{
    Py_ssize_t pos = 0;
    PyObject *key, *value;

    while (PyDict_Next(state, &pos, &key, &value)) {
        int status;
        key = fw_attribute_name(interns, key);
        Py_INCREF(value);
        status = PyObject_SetAttr(inst, key, value);
        Py_DECREF(key);
        Py_DECREF(value);
        if (status < 0)
            return -1;
    }
    return 0;
}

/* The names fw_imported_module reads, interned once by the caller. */
typedef struct {
    PyObject *builtins;         /* "__builtins__" */
    PyObject *import_;          /* "__import__" */
    PyObject *spec;             /* "__spec__" */
    PyObject *initializing;     /* "_initializing" */
    PyObject *builtin_import;   /* the interpreter's own builtins.__import__ */
} fw_import_names;

/* sys.modules[name] when PyImport_Import(name), which find_class calls as
 * the stdlib does, would return it without running anything else: the
 * current builtins' __import__ is the interpreter's own, the entry is an
 * exact module and its spec is not still initializing.  The import would
 * then only look the name up and, for a package, run importlib's fromlist
 * handling for '__doc__', which finds it on every exact module (the module
 * type supplies one) and does nothing.  1 with *module set (a new
 * reference), 0 when the real import must run, -1 on error. */
static int fw_imported_module(PyObject *name, const fw_import_names *names, PyObject **module)
{
    PyObject *globals, *builtins, *import, *modules, *mod, *spec, *initializing;
    int status;

    if (!PyUnicode_CheckExact(name))
        return 0;
    globals = PyEval_GetGlobals();      /* borrowed; what PyImport_Import reads */
    if (globals == NULL || !PyDict_CheckExact(globals))
        return 0;
    builtins = PyDict_GetItemWithError(globals, names->builtins);
    if (builtins == NULL)
        return PyErr_Occurred() ? -1 : 0;
    if (PyModule_CheckExact(builtins))
        builtins = PyModule_GetDict(builtins);
    if (builtins == NULL || !PyDict_CheckExact(builtins))
        return 0;
    import = PyDict_GetItemWithError(builtins, names->import_);
    if (import != names->builtin_import)
        return PyErr_Occurred() ? -1 : 0;
    modules = PyImport_GetModuleDict();     /* borrowed: sys.modules */
    if (modules == NULL || !PyDict_CheckExact(modules))
        return 0;
    mod = PyDict_GetItemWithError(modules, name);
    if (mod == NULL)
        return PyErr_Occurred() ? -1 : 0;
    if (!PyModule_CheckExact(mod))
        return 0;
    Py_INCREF(mod);
    spec = PyDict_GetItemWithError(PyModule_GetDict(mod), names->spec);
    if (spec == NULL) {
        /* Without __spec__ in its dict the import would ask the module's
         * __getattr__ for it: let it. */
        Py_DECREF(mod);
        return PyErr_Occurred() ? -1 : 0;
    }
    if (spec != Py_None) {
        /* The import's own test (import_ensure_initialized): a module that
         * another thread is still executing makes it wait for the lock. */
        Py_INCREF(spec);
        status = fw_lookup_attr(spec, names->initializing, &initializing);
        Py_DECREF(spec);
        if (status > 0) {
            status = PyObject_IsTrue(initializing);
            Py_DECREF(initializing);
        }
        if (status != 0) {
            /* Initializing, or its spec misbehaves: the real import decides. */
            PyErr_Clear();
            Py_DECREF(mod);
            return 0;
        }
        /* The spec ran Python, which may have changed sys.modules: like
         * PyImport_Import, hand out what it holds now. */
        Py_DECREF(mod);
        modules = PyImport_GetModuleDict();
        mod = modules == NULL ? NULL : PyObject_GetItem(modules, name);
        if (mod == NULL) {
            if (PyErr_Occurred() && !PyErr_ExceptionMatches(PyExc_KeyError))
                return -1;
            PyErr_Clear();
            PyErr_SetObject(PyExc_KeyError, name);
            return -1;
        }
    }
    *module = mod;
    return 1;
}

/* strtol with the overflow the INT opcode falls back on reported as a flag
 * (errno is a macro, which Cython cannot assign). */
static inline long fw_strtol(const char *s, char **end, int *failed)
{
    long x;
    errno = 0;
    x = strtol(s, end, 0);
    *failed = errno != 0;
    return x;
}

#endif /* FASTWIRE_UNPICKLE_H */
