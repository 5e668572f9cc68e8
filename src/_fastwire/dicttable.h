/* A dict's table read in place (encoder and decoder).
 *
 * fw_dict_next is PyDict_Next for a dict with a combined table: the public
 * function dispatches on the table's kind and layout for every item and costs
 * as much as writing the item (more on 3.13). The layout below is CPython's
 * own (Include/internal/pycore_dict.h), identical from 3.11 to 3.13 with the
 * GIL; other builds, and split tables (instance dictionaries), take
 * PyDict_Next. Like PyDict_Next, each call re-reads the dict's table, so a
 * callback that resized or replaced it between two calls is seen.
 */
#ifndef FASTWIRE_DICTTABLE_H
#define FASTWIRE_DICTTABLE_H

#include "Python.h"

/* CPython's own rule (_PyTuple_MaybeUntrack): an object that may hold a
 * reference cycle is a tracked container, or an exact tuple still tracked. */
static inline int fw_may_be_tracked(PyObject *obj)
{
    PyTypeObject *tp = Py_TYPE(obj);
    /* The type flag first, inline: most items are ints and strings, and
     * PyObject_IS_GC is an out-of-line call for extensions before 3.13. */
    if (!PyType_IS_GC(tp))
        return 0;
    if (tp == &PyTuple_Type)
        return PyObject_GC_IsTracked(obj);
    if (tp->tp_is_gc != NULL)
        return tp->tp_is_gc(obj);
    return 1;
}

#if PY_VERSION_HEX >= 0x030B0000 && PY_VERSION_HEX < 0x030E0000 && !defined(Py_GIL_DISABLED)
typedef struct {
    Py_ssize_t dk_refcnt;
    uint8_t dk_log2_size;
    uint8_t dk_log2_index_bytes;
    uint8_t dk_kind;
    uint32_t dk_version;
    Py_ssize_t dk_usable;
    Py_ssize_t dk_nentries;
    char dk_indices[];
} fw_dict_keys;
typedef struct { Py_hash_t me_hash; PyObject *me_key; PyObject *me_value; } fw_dict_entry;
typedef struct { PyObject *me_key; PyObject *me_value; } fw_dict_str_entry;

static inline int fw_dict_next(PyObject *d, Py_ssize_t *pos, PyObject **key, PyObject **value)
{
    PyDictObject *mp = (PyDictObject *)d;
    fw_dict_keys *k;
    Py_ssize_t i = *pos, n;
    char *entries;
    if (mp->ma_values != NULL)
        return PyDict_Next(d, pos, key, value);
    k = (fw_dict_keys *)mp->ma_keys;
    n = k->dk_nentries;
    if (i < 0)
        return 0;
    entries = k->dk_indices + ((size_t)1 << k->dk_log2_index_bytes);
    if (k->dk_kind != 0) {              /* not DICT_KEYS_GENERAL: str keys */
        fw_dict_str_entry *e = (fw_dict_str_entry *)entries;
        for (; i < n; i++) {
            if (e[i].me_value != NULL) {
                *key = e[i].me_key;
                *value = e[i].me_value;
                *pos = i + 1;
                return 1;
            }
        }
    } else {
        fw_dict_entry *e = (fw_dict_entry *)entries;
        for (; i < n; i++) {
            if (e[i].me_value != NULL) {
                *key = e[i].me_key;
                *value = e[i].me_value;
                *pos = i + 1;
                return 1;
            }
        }
    }
    return 0;
}

/* Dict watchers (3.12+) are told of every change made through the API; a
 * dict that has one is only changed through the API. */
static inline int fw_dict_watched(PyDictObject *mp)
{
#if PY_VERSION_HEX >= 0x030C0000
#if defined(__GNUC__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
#endif
    return (mp->ma_version_tag & 0xFF) != 0;     /* DICT_WATCHER_MASK */
#if defined(__GNUC__)
#pragma GCC diagnostic pop
#endif
#else
    (void)mp;
    return 0;
#endif
}

/* d's table holds exactly the keys items[0], items[2], ... in this order
 * (a clone of a dict with those keys): give entry i the value items[2i+1] in
 * place, as PyDict_SetItem would replace it but without a lookup per key, and
 * leave d tracked by the collector exactly when insertion would have
 * (CPython's MAINTAIN_TRACKING: some key or value may be tracked; the keys
 * are exact str or int, checked by fw_dict_has_keys, which never are). Only
 * for a dict nothing else can see: held by the caller's stack and memo alone
 * (so no code observes the values between the clone and this), without
 * watchers. Each replaced value and each key is also held by the dict d was
 * cloned from, so dropping them runs no finalizer. 1 when done, having
 * stolen the 2 * count references in items (the values move into the
 * table); 0 when not applicable (d and items unchanged). */
static inline int fw_dict_replace_values(PyObject *d, PyObject **items, Py_ssize_t count)
{
    PyDictObject *mp = (PyDictObject *)d;
    fw_dict_keys *k = (fw_dict_keys *)mp->ma_keys;
    char *entries;
    PyObject **keys, **values;
    Py_ssize_t i, stride;
    int track = 0;
    if (mp->ma_values != NULL || Py_REFCNT(d) > 2 || fw_dict_watched(mp)
            || mp->ma_used != count || k->dk_nentries != count)
        return 0;
    /* Entries are (key, value) for a str table, (hash, key, value) otherwise. */
    entries = k->dk_indices + ((size_t)1 << k->dk_log2_index_bytes);
    if (k->dk_kind != 0) {
        keys = &((fw_dict_str_entry *)entries)->me_key;
        stride = sizeof(fw_dict_str_entry) / sizeof(PyObject *);
    } else {
        keys = &((fw_dict_entry *)entries)->me_key;
        stride = sizeof(fw_dict_entry) / sizeof(PyObject *);
    }
    values = keys + 1;
    for (i = 0; i < count; i++) {
        if (keys[i * stride] != items[2 * i])
            return 0;
    }
    for (i = 0; i < count; i++) {
        PyObject *old = values[i * stride], *value = items[2 * i + 1];
        track |= fw_may_be_tracked(value);
        values[i * stride] = value;
        Py_DECREF(old);
        Py_DECREF(items[2 * i]);
    }
    if (track && !PyObject_GC_IsTracked(d))
        PyObject_GC_Track(d);
    else if (!track && PyObject_GC_IsTracked(d))
        PyObject_GC_UnTrack(d);
    return 1;
}

/* fw_dict_has_keys() read off a combined table with no deleted entries (its
 * keys are then its first count entries): 1 or 0, or -1 for another table. */
static inline int fw_dict_table_has_keys(PyObject *d, PyObject **keys, Py_ssize_t count)
{
    PyDictObject *mp = (PyDictObject *)d;
    fw_dict_keys *k = (fw_dict_keys *)mp->ma_keys;
    Py_ssize_t i, stride;
    PyObject *key, **table_keys;
    if (mp->ma_values == NULL && k->dk_nentries == count) {
        /* No deleted entries: the keys are the first count entries. */
        char *entries = k->dk_indices + ((size_t)1 << k->dk_log2_index_bytes);
        if (k->dk_kind != 0) {
            table_keys = &((fw_dict_str_entry *)entries)->me_key;
            stride = sizeof(fw_dict_str_entry) / sizeof(PyObject *);
        } else {
            table_keys = &((fw_dict_entry *)entries)->me_key;
            stride = sizeof(fw_dict_entry) / sizeof(PyObject *);
        }
        for (i = 0; i < count; i++) {
            key = table_keys[i * stride];
            if (key != keys[2 * i] || !(PyUnicode_CheckExact(key) || PyLong_CheckExact(key)))
                return 0;
        }
        return 1;
    }
    return -1;
}
/* Give the empty dict d, about to receive count items whose first key is
 * first_key, a table that holds them all, as dict(**) and BUILD_MAP do
 * (_PyDict_NewPresized): insertion one by one would resize it log2(count)
 * times, each a new table and a rehash of every entry so far. Only where
 * insertion would have built a general table anyway (the first key is not
 * an exact str, which would start a str-only table); only for an empty dict
 * whose table holds nothing, without watchers. The table of a fresh presized
 * dict is swapped in and the empty one goes out with that dict: nothing can
 * tell the difference but the size of the table. 0 done or not applicable,
 * -1 on error. */
static inline int fw_dict_presize(PyObject *d, PyObject *first_key, Py_ssize_t count)
{
    PyDictObject *mp = (PyDictObject *)d, *fresh;
    fw_dict_keys *k = (fw_dict_keys *)mp->ma_keys;
    PyDictKeysObject *swap;
    if (count <= k->dk_usable || mp->ma_used != 0 || mp->ma_values != NULL
            || k->dk_nentries != 0 || PyUnicode_CheckExact(first_key) || fw_dict_watched(mp))
        return 0;
    /* One less than count: the table insertion would end with (sized from
     * the entries present at its last resize) is the one presized for
     * count - 1; one sized for count is twice as large where count just
     * fills a table. Too small, it is not used. */
    fresh = (PyDictObject *)_PyDict_NewPresized(count - 1);
    if (fresh == NULL)
        return -1;
    if (fresh->ma_values == NULL && ((fw_dict_keys *)fresh->ma_keys)->dk_usable >= count) {
        swap = mp->ma_keys;
        mp->ma_keys = fresh->ma_keys;
        fresh->ma_keys = swap;
    }
    Py_DECREF(fresh);
    return 0;
}
#else
#define fw_dict_next PyDict_Next
#define fw_dict_replace_values(d, items, count) 0
#define fw_dict_table_has_keys(d, keys, count) (-1)
#define fw_dict_presize(d, first_key, count) 0
#endif

/* 1 when dict d's keys are, in order, the objects keys[0], keys[2], ...,
 * keys[2 * (count - 1)] (and no others), all exact str or int, else 0.
 * (Hashing those runs no Python code, so a dict built from d's table instead
 * of by insertion differs in nothing a key's __hash__ or __eq__ could see.) */
static inline int fw_dict_has_keys(PyObject *d, PyObject **keys, Py_ssize_t count)
{
    Py_ssize_t pos = 0, i = 0;
    PyObject *key, *value;
    int found;
    if (PyDict_GET_SIZE(d) != count)
        return 0;
    found = fw_dict_table_has_keys(d, keys, count);
    if (found >= 0)
        return found;
    while (fw_dict_next(d, &pos, &key, &value)) {
        if (i >= count || key != keys[2 * i] || !(PyUnicode_CheckExact(key) || PyLong_CheckExact(key)))
            return 0;
        i++;
    }
    return i == count;
}

#endif /* FASTWIRE_DICTTABLE_H */
