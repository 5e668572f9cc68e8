/* METH_FASTCALL entry points for functions that take `*args`.
 *
 * Cython builds a tuple for every `def f(*args)` call; CPython's own struct
 * methods receive a C array of arguments instead. For the per-record calls
 * (Struct.pack, pack, pack_into) that tuple is a third of the call's cost, so
 * those entry points are plain C-signature functions installed here.
 */
#ifndef FASTWIRE_FASTCALL_H
#define FASTWIRE_FASTCALL_H

#include "Python.h"

typedef PyObject *(*fw_fastcall_fn)(PyObject *self, PyObject **args, Py_ssize_t nargs);

static void fw_fill_method_def(PyMethodDef *def, const char *name, fw_fastcall_fn fn, const char *doc) {
    def->ml_name = name;
    def->ml_meth = (PyCFunction)(void (*)(void))fn;
    def->ml_flags = METH_FASTCALL;
    def->ml_doc = doc;
}

/* A module-level builtin function named `name`. `def` must have static storage. */
static PyObject *fw_new_fastcall_function(PyMethodDef *def, const char *name, fw_fastcall_fn fn,
                                          const char *doc, PyObject *module_name) {
    fw_fill_method_def(def, name, fn, doc);
    return PyCFunction_NewEx(def, NULL, module_name);
}

/* Add a method to an already-readied extension type (static or heap). */
static int fw_add_fastcall_method(PyTypeObject *type, PyMethodDef *def, const char *name,
                                  fw_fastcall_fn fn, const char *doc) {
    PyObject *descr;
    int rc;
    fw_fill_method_def(def, name, fn, doc);
    descr = PyDescr_NewMethod(type, def);
    if (descr == NULL)
        return -1;
    rc = PyDict_SetItemString(type->tp_dict, name, descr);
    Py_DECREF(descr);
    PyType_Modified(type);
    return rc;
}

#endif /* FASTWIRE_FASTCALL_H */
