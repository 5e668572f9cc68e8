/* METH_FASTCALL entry points for functions that take `*args`, and calls to
 * a file's method without a bound-method object.
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

/* A method looked up as getattr(obj, name) finds it, held as the interpreter
 * holds `obj.name` before calling it (LOAD_METHOD): when the lookup is the
 * generic one and finds a function or method descriptor of obj's class not
 * shadowed by an instance attribute, `func` is that function and `self` is
 * obj; otherwise `func` is what getattr returned and `self` is NULL. Calling
 * it is calling the bound method, without making one: dump() to a file made
 * and freed a bound method of file.write per call, a tenth of the
 * instructions of dumping a small message. Both references are owned. */
#if PY_VERSION_HEX >= 0x030D0000
PyAPI_FUNC(int) _PyObject_GetMethod(PyObject *obj, PyObject *name, PyObject **method);
#endif

/* 1 found; 0 no such attribute (the AttributeError cleared, as getattr()
 * with a default does); -1 any other error. */
static int fw_method_lookup(PyObject *obj, PyObject *name, PyObject **func, PyObject **self) {
    PyObject *found = NULL;
    int unbound = _PyObject_GetMethod(obj, name, &found);
    *func = *self = NULL;
    if (found == NULL) {
        if (!PyErr_ExceptionMatches(PyExc_AttributeError))
            return -1;
        PyErr_Clear();
        return 0;
    }
    *func = found;
    if (unbound) {
        Py_INCREF(obj);
        *self = obj;
    }
    return 1;
}

/* func(self, arg), or func(arg) when self is NULL. Both are held for the
 * call: the callee may drop the holder's references (reconfigure or free
 * the object that stored them). */
static PyObject *fw_method_call(PyObject *func, PyObject *self, PyObject *arg) {
    PyObject *args[3];
    PyObject *r;
    Py_INCREF(func);
    if (self != NULL) {
        Py_INCREF(self);
        args[1] = self;
        args[2] = arg;
        r = PyObject_Vectorcall(func, args + 1, 2, NULL);
        Py_DECREF(self);
    } else {
        args[2] = arg;
        r = PyObject_Vectorcall(func, args + 2, 1 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
    }
    Py_DECREF(func);
    return r;
}

#endif /* FASTWIRE_FASTCALL_H */
