/* Measuring an object graph for restricted unpickling (pickle_read.pxi).
 *
 * A few hundred bytes of pickle can describe a graph whose shared parts,
 * unfolded, are exponentially large (t(k+1) = (t(k), t(k)) through the
 * memo), or a chain of tuples deep enough that CPython's tuplehash, which
 * recurses without a guard, overflows the C stack.  Before restricted mode
 * lets anything hash, compare, convert or return such a graph, it measures
 * two numbers with fw_measure:
 *
 *   depth  1 + the deepest child for a container, 0 for anything else;
 *   size   the graph's size with sharing unfolded: 1 per container plus its
 *          children, each counted once per reference; an atom weighs 1 plus
 *          one per 8 bytes of its data (hashing or comparing it costs that).
 *
 * The walk is iterative and visits each shared object once (a table keyed by
 * address remembers what it found), so measuring costs the number of
 * distinct objects, never the unfolded size.  A reference back to an object
 * still being measured (a cycle, which only mutable containers can close)
 * counts 1, as repr() prints it "[...]".  No Python code runs during the
 * walk: containers are read through the concrete C API, sets through the
 * set type's own iterator, instance dicts through the generic getter.
 */
#ifndef FASTWIRE_RESTRICT_H
#define FASTWIRE_RESTRICT_H

#include <stdint.h>
#include <string.h>
#include "Python.h"

/* Sizes saturate here instead of overflowing. */
#define FW_SIZE_CAP (PY_SSIZE_T_MAX / 4)

/* In hash mode the walk measures what hashing costs: frozensets keep their
 * hash once computed, and hashing stops at a list, dict or set (they are
 * unhashable), so those count 1 and are not entered. */
#define FW_HASH_MODE 1

/* What the walk does with an object that is neither an atom nor an exact
 * builtin container: 0 = a leaf of weight 1, 1 = an instance whose
 * container items and __dict__ are measured, -1 = refuse (error set). */
typedef int (*fw_classify_fn)(void *ctx, PyObject *obj);

static inline Py_ssize_t fw_sat_add(Py_ssize_t a, Py_ssize_t b)
{
    return a > FW_SIZE_CAP - b ? FW_SIZE_CAP : a + b;
}

/* The weight of an immutable builtin value, or -1 for anything else. */
static inline Py_ssize_t fw_atom_weight(PyObject *o)
{
    PyTypeObject *t = Py_TYPE(o);
    if (t == &PyUnicode_Type)
        return 1 + ((PyUnicode_GET_LENGTH(o) * (Py_ssize_t)PyUnicode_KIND(o)) >> 3);
    if (t == &PyLong_Type) {
#if PY_VERSION_HEX >= 0x030C0000
        if (PyUnstable_Long_IsCompact((PyLongObject *)o))
            return 1;
#else
        if (Py_ABS(Py_SIZE(o)) <= 1)
            return 1;
#endif
        return 1 + (Py_ssize_t)(_PyLong_NumBits(o) >> 6);
    }
    if (o == Py_None || t == &PyFloat_Type || t == &PyBool_Type || t == &PyComplex_Type)
        return 1;
    if (t == &PyBytes_Type)
        return 1 + (PyBytes_GET_SIZE(o) >> 3);
    if (t == &PyByteArray_Type)
        return 1 + (PyByteArray_GET_SIZE(o) >> 3);
    return -1;
}

/* Add the weights of items[0], items[step], ... below items[n] to *sum while
 * they are atoms; return the index of the first that is not (n if none). */
static inline Py_ssize_t fw_add_atom_weights(PyObject **items, Py_ssize_t n, Py_ssize_t step,
                                             Py_ssize_t *sum)
{
    Py_ssize_t i, w;
    for (i = 0; i < n; i += step) {
        w = fw_atom_weight(items[i]);
        if (w < 0)
            return i;
        *sum = fw_sat_add(*sum, w);
    }
    return n;
}

enum { FW_LEAF, FW_TUPLE, FW_LIST, FW_DICT, FW_SET };

typedef struct {
    PyObject *obj;          /* strong references, released when the frame ends */
    PyObject *iter;         /* a set's iterator */
    PyObject *inst_dict;    /* an instance's __dict__, measured after its items */
    PyObject *pending;      /* a dict's value, measured after its key */
    Py_ssize_t pos;
    Py_ssize_t size;
    int depth;
    int kind;
    int shared;
} fw_frame;

typedef struct {
    PyObject *key;          /* borrowed: every key is reachable from the root */
    Py_ssize_t size;
    int depth;
    int done;
} fw_seen_entry;

/* Most measured objects are small: their frames and table live here, and a
 * walk allocates only when it outgrows them. */
#define FW_INLINE_FRAMES 16
#define FW_INLINE_SEEN 8

typedef struct {
    fw_frame *frames;
    Py_ssize_t nframes, frames_cap;
    fw_seen_entry *seen;
    Py_ssize_t seen_used, seen_cap;
    fw_frame frames_inline[FW_INLINE_FRAMES];
    fw_seen_entry seen_inline[FW_INLINE_SEEN];
} fw_walk;

static void fw_walk_init(fw_walk *w)
{
    w->frames = w->frames_inline;
    w->nframes = 0;
    w->frames_cap = FW_INLINE_FRAMES;
    w->seen = NULL;         /* seen_inline is cleared on first use */
    w->seen_used = 0;
    w->seen_cap = 0;
}

static inline size_t fw_seen_slot(PyObject *key, Py_ssize_t cap)
{
    uintptr_t h = (uintptr_t)key >> 4;
    h *= (uintptr_t)0x9E3779B97F4A7C15ULL;
    return (size_t)(h >> 7) & (size_t)(cap - 1);
}

static int fw_seen_grow(fw_walk *w)
{
    Py_ssize_t cap, i;
    fw_seen_entry *grown;
    if (w->seen == NULL) {
        memset(w->seen_inline, 0, sizeof(w->seen_inline));
        w->seen = w->seen_inline;
        w->seen_cap = FW_INLINE_SEEN;
        return 0;
    }
    cap = w->seen_cap * 2;
    grown = (fw_seen_entry *)PyMem_Calloc((size_t)cap, sizeof(fw_seen_entry));
    if (grown == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    for (i = 0; i < w->seen_cap; i++) {
        if (w->seen[i].key != NULL) {
            size_t s = fw_seen_slot(w->seen[i].key, cap);
            while (grown[s].key != NULL)
                s = (s + 1) & (size_t)(cap - 1);
            grown[s] = w->seen[i];
        }
    }
    if (w->seen != w->seen_inline)
        PyMem_Free(w->seen);
    w->seen = grown;
    w->seen_cap = cap;
    return 0;
}

/* The entry for key, inserted (not done) when absent; NULL on memory error. */
static fw_seen_entry *fw_seen_find(fw_walk *w, PyObject *key, int *inserted)
{
    size_t s;
    if (2 * (w->seen_used + 1) > w->seen_cap && fw_seen_grow(w) < 0)
        return NULL;
    s = fw_seen_slot(key, w->seen_cap);
    while (w->seen[s].key != NULL) {
        if (w->seen[s].key == key) {
            *inserted = 0;
            return &w->seen[s];
        }
        s = (s + 1) & (size_t)(w->seen_cap - 1);
    }
    w->seen[s].key = key;
    w->seen[s].done = 0;
    w->seen_used++;
    *inserted = 1;
    return &w->seen[s];
}

static void fw_frame_release(fw_frame *f)
{
    Py_CLEAR(f->obj);
    Py_CLEAR(f->iter);
    Py_CLEAR(f->inst_dict);
    Py_CLEAR(f->pending);
}

static void fw_walk_free(fw_walk *w)
{
    while (w->nframes > 0)
        fw_frame_release(&w->frames[--w->nframes]);
    if (w->frames != w->frames_inline)
        PyMem_Free(w->frames);
    if (w->seen != w->seen_inline)
        PyMem_Free(w->seen);
}

static int fw_depth_error(PyObject *exc_type, int max_depth)
{
    PyErr_Format(exc_type, "restricted unpickling: nesting deeper than max_depth=%d "
                 "(raise it with fastwire.pickle.Allowed(..., max_depth=))", max_depth);
    return -1;
}

/* Start measuring o: 0 when its measure is known at once (*size, *depth
 * set), 1 when a frame was pushed, -1 on error. */
static int fw_open(fw_walk *w, PyObject *o, int max_depth, int mode, fw_classify_fn classify,
                   void *ctx, PyObject *exc_type, Py_ssize_t *size, int *depth)
{
    Py_ssize_t weight = fw_atom_weight(o);
    PyTypeObject *t;
    fw_frame *f;
    int kind, shared, inserted;
    PyObject *inst_dict = NULL;

    if (weight >= 0) {
        *size = weight;
        *depth = 0;
        return 0;
    }
    t = Py_TYPE(o);
    if (mode == FW_HASH_MODE && (t == &PyList_Type || t == &PyDict_Type
                                 || t == &PySet_Type || t == &PyFrozenSet_Type)) {
        *size = 1;
        *depth = 0;
        return 0;
    }
    if (t == &PyTuple_Type)
        kind = FW_TUPLE;
    else if (t == &PyList_Type)
        kind = FW_LIST;
    else if (t == &PyDict_Type)
        kind = FW_DICT;
    else if (t == &PySet_Type || t == &PyFrozenSet_Type)
        kind = FW_SET;
    else {
        int how = classify(ctx, o);
        if (how < 0)
            return -1;
        if (how == 0) {
            *size = 1;
            *depth = 0;
            return 0;
        }
        kind = PyTuple_Check(o) ? FW_TUPLE : PyList_Check(o) ? FW_LIST
             : PyDict_Check(o) ? FW_DICT : PyAnySet_Check(o) ? FW_SET : FW_LEAF;
        if (t->tp_dictoffset != 0
#ifdef Py_TPFLAGS_MANAGED_DICT
                || (t->tp_flags & Py_TPFLAGS_MANAGED_DICT)
#endif
                ) {
            inst_dict = PyObject_GenericGetDict(o, NULL);
            if (inst_dict == NULL) {
                if (!PyErr_ExceptionMatches(PyExc_AttributeError))
                    return -1;
                PyErr_Clear();
            }
            else if (!PyDict_CheckExact(inst_dict) || PyDict_GET_SIZE(inst_dict) == 0) {
                Py_CLEAR(inst_dict);
            }
        }
        if (kind == FW_LEAF && inst_dict == NULL) {
            *size = 1;
            *depth = 0;
            return 0;
        }
    }
#ifdef Py_GIL_DISABLED
    shared = 1;     /* reference counts are not a snapshot here */
#else
    /* Held once by the parent being measured (a child also carries the
     * walk's own temporary reference): nothing else can reach it twice, so
     * it needs no table entry. */
    shared = Py_REFCNT(o) > (w->nframes > 0 ? 2 : 1);
#endif
    if (shared) {
        fw_seen_entry *e = fw_seen_find(w, o, &inserted);
        if (e == NULL) {
            Py_XDECREF(inst_dict);
            return -1;
        }
        if (!inserted) {
            Py_XDECREF(inst_dict);
            if (e->done) {
                *size = e->size;
                *depth = e->depth;
            }
            else {          /* a cycle back to an object being measured */
                *size = 1;
                *depth = 0;
            }
            return 0;
        }
    }
    if (w->nframes >= max_depth) {
        Py_XDECREF(inst_dict);
        return fw_depth_error(exc_type, max_depth);
    }
    if (w->nframes == w->frames_cap) {
        Py_ssize_t cap = w->frames_cap * 2;
        fw_frame *grown;
        if (w->frames == w->frames_inline) {
            grown = (fw_frame *)PyMem_Malloc((size_t)cap * sizeof(fw_frame));
            if (grown != NULL)
                memcpy(grown, w->frames, (size_t)w->nframes * sizeof(fw_frame));
        }
        else {
            grown = (fw_frame *)PyMem_Realloc(w->frames, (size_t)cap * sizeof(fw_frame));
        }
        if (grown == NULL) {
            Py_XDECREF(inst_dict);
            PyErr_NoMemory();
            return -1;
        }
        w->frames = grown;
        w->frames_cap = cap;
    }
    f = &w->frames[w->nframes];
    Py_INCREF(o);
    f->obj = o;
    f->iter = NULL;
    f->pending = NULL;
    f->pos = 0;
    f->inst_dict = inst_dict;
    f->kind = kind;
    f->shared = shared;
    f->size = 1;
    f->depth = 1;
    w->nframes++;
    if (kind == FW_SET) {
        /* The set type's own iterator: a subclass's __iter__ is not asked. */
        f->iter = PySet_Type.tp_iter(o);
        if (f->iter == NULL)
            return -1;
    }
    return 1;
}

/* Add f's atom children to its size and return its next other child as a
 * new reference: 1 = *child set, 0 = no more, -1 = error.  Atoms are most
 * children, so they are summed here without a frame or a call. */
static int fw_next_child(fw_frame *f, PyObject **child)
{
    PyObject *k, *v, *item;
    Py_ssize_t w, n;
    switch (f->kind) {
    case FW_TUPLE:
    case FW_LIST:
        n = f->kind == FW_TUPLE ? PyTuple_GET_SIZE(f->obj) : PyList_GET_SIZE(f->obj);
        while (f->pos < n) {
            item = f->kind == FW_TUPLE ? PyTuple_GET_ITEM(f->obj, f->pos)
                                       : PyList_GET_ITEM(f->obj, f->pos);
            f->pos++;
            w = fw_atom_weight(item);
            if (w < 0) {
                *child = Py_NewRef(item);
                return 1;
            }
            f->size = fw_sat_add(f->size, w);
            if (f->kind == FW_LIST)
                n = PyList_GET_SIZE(f->obj);
        }
        break;
    case FW_DICT:
        if (f->pending != NULL) {
            *child = f->pending;
            f->pending = NULL;
            return 1;
        }
        while (PyDict_Next(f->obj, &f->pos, &k, &v)) {
            w = fw_atom_weight(v);
            if (w >= 0)
                f->size = fw_sat_add(f->size, w);
            else
                f->pending = Py_NewRef(v);
            w = fw_atom_weight(k);
            if (w < 0) {
                *child = Py_NewRef(k);
                return 1;
            }
            f->size = fw_sat_add(f->size, w);
            if (f->pending != NULL) {
                *child = f->pending;
                f->pending = NULL;
                return 1;
            }
        }
        break;
    case FW_SET:
        while ((item = PyIter_Next(f->iter)) != NULL) {
            w = fw_atom_weight(item);
            if (w < 0) {
                *child = item;
                return 1;
            }
            f->size = fw_sat_add(f->size, w);
            Py_DECREF(item);
        }
        if (PyErr_Occurred())
            return -1;
        Py_CLEAR(f->iter);
        break;
    }
    f->kind = FW_LEAF;
    if (f->inst_dict != NULL) {
        *child = f->inst_dict;
        f->inst_dict = NULL;
        return 1;
    }
    return 0;
}

/* Measure root; 0 with *size and *depth set, or -1 with an error set
 * (exc_type when it nests deeper than max_depth, or classify's error). */
static int fw_measure(PyObject *root, int max_depth, int mode, fw_classify_fn classify,
                      void *ctx, PyObject *exc_type, Py_ssize_t *size, int *depth)
{
    fw_walk w;
    PyObject *child;
    Py_ssize_t csize;
    int cdepth, r;

    fw_walk_init(&w);
    r = fw_open(&w, root, max_depth, mode, classify, ctx, exc_type, size, depth);
    if (r <= 0) {
        fw_walk_free(&w);
        return r;
    }
    for (;;) {
        fw_frame *f = &w.frames[w.nframes - 1];
        r = fw_next_child(f, &child);
        if (r < 0)
            goto error;
        if (r == 1) {
            r = fw_open(&w, child, max_depth, mode, classify, ctx, exc_type, &csize, &cdepth);
            Py_DECREF(child);
            if (r < 0)
                goto error;
            if (r == 1)
                continue;
        }
        else {
            csize = f->size;
            cdepth = f->depth;
            if (f->shared) {
                int inserted;
                fw_seen_entry *e = fw_seen_find(&w, f->obj, &inserted);
                if (e == NULL)
                    goto error;
                e->size = csize;
                e->depth = cdepth;
                e->done = 1;
            }
            fw_frame_release(f);
            w.nframes--;
            if (w.nframes == 0)
                break;
        }
        f = &w.frames[w.nframes - 1];
        f->size = fw_sat_add(f->size, csize);
        if (cdepth + 1 > f->depth) {
            f->depth = cdepth + 1;
            if (f->depth > max_depth) {
                fw_depth_error(exc_type, max_depth);
                goto error;
            }
        }
    }
    fw_walk_free(&w);
    *size = csize;
    *depth = cdepth;
    return 0;
error:
    fw_walk_free(&w);
    return -1;
}

#endif /* FASTWIRE_RESTRICT_H */
