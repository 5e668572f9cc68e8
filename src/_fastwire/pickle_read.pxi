# The pickle decoder: one stack machine that walks the input with a pointer
# and a switch on the opcode byte, keeping the value stack, the mark stack and
# the memo in C arrays.  It reads every pickle the stdlib writes (protocols
# 0-5) and raises the stdlib's exception types for bad input.
#
# Memory is only ever allocated for bytes that have arrived: a length field is
# checked against the input before anything is allocated (in-memory input) or
# the payload is read in bounded, growing chunks (file input).  The memo is a
# dense array only for indices the input could plausibly have produced;
# anything sparser goes to a dict.  Nesting depth costs stack slots, never C
# recursion.
#
# Restricted mode (`allowed=`) is enforced here, at the three places a pickle
# can reach code: resolving a global, calling something (REDUCE, NEWOBJ,
# INST, OBJ) and applying state (BUILD); and wherever what the pickle built
# is hashed, passed on or returned, its nesting and unfolded size are
# measured first (restrict.h) against the limits of its Allowed.

# Shared declarations this part uses.
# From frames.pxi, by inclusion: receive_payload.
from libc.string cimport memcpy, memset
from cpython.object cimport PyObject
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.buffer cimport PyBUF_FULL_RO, PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.mem cimport PyMem_Free, PyMem_Realloc
from capi cimport (
    PY_SSIZE_T_MAX, c_bytearray_from, c_bytes_decode_escape, c_bytes_from, c_call_object,
    c_decode_ascii, c_decode_raw_unicode_escape, c_decode_utf8, c_decref, c_dict_setitem, c_dict_size, c_false,
    c_float_from_double, c_import, c_incref, c_int_from_long,
    c_int_from_longlong, c_int_from_string, c_is_dict_exact, c_is_list_exact, c_is_set, c_is_tuple,
    c_is_type, c_memoryview_from, c_new_dict, c_new_list, c_new_set, c_new_tuple, c_none, c_set_add,
    c_setitem, c_string_to_double, c_sys_audit, c_true, c_unicode_decode,
)
from wire cimport FW_FREE_THREADED, fw_claim, fw_release
from opcodes cimport (
    OP_ADDITEMS, OP_APPEND, OP_APPENDS, OP_BINBYTES, OP_BINBYTES8, OP_BINFLOAT, OP_BINGET,
    OP_BININT, OP_BININT1, OP_BININT2, OP_BINPERSID, OP_BINPUT, OP_BINSTRING, OP_BINUNICODE,
    OP_BINUNICODE8, OP_BUILD, OP_BYTEARRAY8, OP_DICT, OP_DUP, OP_EMPTY_DICT, OP_EMPTY_LIST,
    OP_EMPTY_SET, OP_EMPTY_TUPLE, OP_EXT1, OP_EXT2, OP_EXT4, OP_FLOAT, OP_FRAME, OP_FROZENSET,
    OP_GET, OP_GLOBAL, OP_INST, OP_INT, OP_LIST, OP_LONG, OP_LONG1, OP_LONG4, OP_LONG_BINGET,
    OP_LONG_BINPUT, OP_MARK, OP_MEMOIZE, OP_NEWFALSE, OP_NEWOBJ, OP_NEWOBJ_EX, OP_NEWTRUE,
    OP_NEXT_BUFFER, OP_NONE, OP_OBJ, OP_PERSID, OP_POP, OP_POP_MARK, OP_PROTO, OP_PUT,
    OP_READONLY_BUFFER, OP_REDUCE, OP_SETITEM, OP_SETITEMS, OP_SHORT_BINBYTES, OP_SHORT_BINSTRING,
    OP_SHORT_BINUNICODE, OP_STACK_GLOBAL, OP_STOP, OP_STRING, OP_TUPLE, OP_TUPLE1, OP_TUPLE2,
    OP_TUPLE3, OP_UNICODE,
)

from cpython.buffer cimport PyObject_CheckBuffer
from libc.string cimport memchr
from cpython.tuple cimport PyTuple_GetSlice

import pickle
import copyreg
import _compat_pickle
import sys
import builtins
import _codecs

cdef extern from "unpickle.h":
    int fw_list_extend_steal(PyObject *lst, PyObject **items, Py_ssize_t n) except -1
    PyObject *fw_list_from_steal(PyObject **items, Py_ssize_t n) except NULL
    PyObject *fw_tuple_from_steal(PyObject **items, Py_ssize_t n) except NULL
    PyObject *fw_decode_pickled_str(const char *s, Py_ssize_t n) except NULL
    int fw_dict_fill_like(PyObject *d, PyObject *shape, PyObject **items, Py_ssize_t count) except -1
    int fw_dict_presize(PyObject *d, PyObject *first_key, Py_ssize_t count) except -1
    enum: FW_DICT_SHAPE_MIN_ITEMS
    Py_ssize_t fw_le_size(const char *s, int nbytes) nogil
    long fw_le_int(const char *s, int nbytes) nogil
    long long fw_le_signed(const char *s, Py_ssize_t nbytes) nogil
    PyObject *fw_int_from_le_signed(const char *s, Py_ssize_t n) except NULL
    double fw_be_double(const char *s) nogil
    int fw_small_ints_init() except -1
    PyObject *fw_int_from_long(long v) except NULL
    int fw_push_int_run(const char **pos, const char *end, PyObject **stack,
                        Py_ssize_t *sp, Py_ssize_t cap) except -1
    bint fw_memoryview_is_readonly(object view)
    void fw_memoryview_set_readonly(object view)
    bint fw_type_has_new(PyObject *cls)
    PyObject *fw_call_tp_new(PyObject *cls, PyObject *args, PyObject *kwargs) except NULL
    PyObject *fw_call_new(PyObject *cls, PyObject *args, PyObject *new_name) except NULL
    int fw_lookup_attr(PyObject *obj, PyObject *name, PyObject **result) except -1
    ctypedef struct fw_intern_cache:
        pass
    int fw_apply_dict_state(PyObject *inst, PyObject *state, PyObject *dict_name,
                            fw_intern_cache *interns) except -1
    int fw_apply_slot_state(PyObject *inst, PyObject *state, fw_intern_cache *interns) except -1
    int fw_instance_dict_getter_init(PyObject *descr) except -1
    void fw_intern_cache_clear(fw_intern_cache *cache)
    long fw_strtol(const char *s, char **end, int *failed)
    ctypedef struct fw_import_names:
        PyObject *builtins
        PyObject *import_
        PyObject *spec
        PyObject *initializing
        PyObject *builtin_import
    int fw_imported_module(object name, const fw_import_names *names, PyObject **module) except -1


UnpicklingError = pickle.UnpicklingError

fw_small_ints_init()


class _ClassStatementInstance:
    """Its __dict__ descriptor is the one every class statement gives its instances."""


fw_instance_dict_getter_init(<PyObject *>_ClassStatementInstance.__dict__["__dict__"])
del _ClassStatementInstance


cdef enum:
    UNP_HIGHEST_PROTOCOL = 5
    # How much a peekable file is asked for at once (the stdlib's PREFETCH).
    UNP_PREFETCH = 8192 * 16
    # First chunk when a large payload is read from a file; chunks then double
    # with what has arrived, so memory tracks real bytes, not length fields.
    UNP_FIRST_CHUNK = 1 << 20
    # Arrays kept by the shared decoder of loads() between calls.
    UNP_KEEP_STACK = 4096
    UNP_KEEP_MEMO = 4096
    # A memo index is stored densely when it is below the number of input
    # bytes consumed plus this slack (each PUT costs at least one byte).
    UNP_MEMO_SLACK = 1024

cdef const char *unp_empty = b""

# The registries the stdlib's C unpickler binds at import time.
cdef dict unp_extension_cache = copyreg._extension_cache
cdef dict unp_inverted_registry = copyreg._inverted_registry
cdef dict unp_name_mapping = _compat_pickle.NAME_MAPPING
cdef dict unp_import_mapping = _compat_pickle.IMPORT_MAPPING

cdef str unp_s_setstate = "__setstate__"
cdef str unp_s_dict = "__dict__"
cdef str unp_s_getinitargs = "__getinitargs__"
cdef str unp_s_new = "__new__"


# ---------------------------------------------------------------------------
# Restricted mode

cdef extern from "restrict.h":
    ctypedef int (*fw_classify_fn)(void *ctx, PyObject *obj) except -1
    Py_ssize_t fw_atom_weight(PyObject *o) noexcept
    Py_ssize_t fw_sat_add(Py_ssize_t a, Py_ssize_t b) noexcept
    Py_ssize_t fw_add_atom_weights(PyObject **items, Py_ssize_t n, Py_ssize_t step,
                                   Py_ssize_t *sum) noexcept
    int fw_measure(PyObject *root, int max_depth, int mode, fw_classify_fn classify,
                   void *ctx, PyObject *exc_type, Py_ssize_t *size, int *depth) except -1

cdef enum:
    # Defaults of Allowed(): what the stdlib's pickler can write at its
    # default recursion limit, and how much work (see restrict.h) each byte
    # of input may cause.
    UNP_DEFAULT_MAX_DEPTH = 1000
    UNP_MAX_MAX_DEPTH = 10000
    UNP_DEFAULT_WORK_FACTOR = 64
    # Input bytes every load is credited with, so tiny messages may still
    # share a string or two.
    UNP_WORK_FLOOR = 1024

DEFAULT_MAX_DEPTH = UNP_DEFAULT_MAX_DEPTH
DEFAULT_WORK_FACTOR = UNP_DEFAULT_WORK_FACTOR

# Globals that pickles of builtin value types refer to (complex, bytearray and
# sets go through REDUCE at protocols < 4/5; bytes through _codecs.encode at
# protocols < 3; objects of classes through copyreg._reconstructor at
# protocols < 2, with `object` as its base argument).  They are only ever
# called, with checked arguments (Allowed.check_call), never handed out.
_UNP_VALUE_TYPES = (bool, int, float, complex, str, bytes, bytearray, list, tuple,
                    dict, set, frozenset, object)
cdef dict unp_value_globals = {("builtins", t.__name__): t for t in _UNP_VALUE_TYPES}
unp_value_globals[("_codecs", "encode")] = _codecs.encode
unp_value_globals[("copyreg", "_reconstructor")] = copyreg._reconstructor
# By identity: a metaclass __eq__ must not make a class pass for int.
cdef dict unp_value_type_ids = {id(t): t for t in _UNP_VALUE_TYPES}
cdef dict unp_value_global_ids = {id(g): g for g in unp_value_globals.values()}


cdef inline bint unp_is_exact_container(t):
    """What value constructors may take besides atoms: anything they do with
    these is C code whose cost the measured size bounds.  By identity, as
    above."""
    return t is list or t is tuple or t is dict or t is set or t is frozenset

# Codec names an allowed value constructor may be asked for: all built into
# the interpreter, so a hostile pickle cannot make a codec lookup import an
# arbitrary encodings.* module.
cdef frozenset unp_safe_codecs = frozenset({"latin1", "latin-1", "ascii", "utf-8", "utf8"})
cdef frozenset unp_safe_errors = frozenset({"strict", "surrogatepass", "replace", "ignore"})

# The rule for what allowed= may never contain.  A callable is refused when
# its module, or the top-level package of its module (leading underscores
# ignored, so _pickle is pickle), is one that runs processes or signals,
# imports, builds or evaluates code, loads native code, deserializes, touches
# files, sockets or the interpreter's internals, or reaches attributes by
# name; or when its name, in any module, says it executes, evaluates,
# spawns, imports, loads, opens or gets attributes; or when it is a builtin
# other than a plain class.  Checked by name and, for objects, by identity.
cdef frozenset unp_refused_packages = frozenset({
    # processes, signals, threads of execution
    "os", "posix", "nt", "posixpath", "ntpath", "subprocess", "posixsubprocess", "pty",
    "multiprocessing", "concurrent", "asyncio", "signal", "thread", "winapi", "msvcrt",
    "webbrowser", "platform", "pydoc", "shutil", "tempfile",
    # import machinery and code
    "importlib", "imp", "frozen_importlib", "frozen_importlib_external", "pkgutil",
    "runpy", "zipimport", "sys", "builtin", "code", "codeop", "types", "inspect", "gc",
    "ctypes", "cffi", "timeit", "cProfile", "profile", "trace", "pdb", "bdb", "doctest",
    "operator", "functools", "warnings", "atexit", "faulthandler", "tracemalloc",
    "ensurepip", "venv", "distutils", "setuptools", "pip",
    # files and sockets
    "io", "pyio", "fileinput", "socket", "socketserver", "ssl", "select", "selectors",
    "mmap", "codecs", "logging",
    # deserializers and their kin
    "pickle", "pickletools", "copyreg", "marshal", "shelve", "dbm", "dill", "cloudpickle",
    "joblib", "yaml", "jsonpickle", "fastwire.pickle", "fastwire.fastwire", "fastwire.net",
    "fastwire.aio",
})
cdef frozenset unp_refused_names = frozenset({
    "system", "load", "loads", "load_module", "unsafe_load", "full_load", "compile",
    "open", "run", "call", "run_path", "run_module", "check_call", "check_output",
    "getoutput", "getstatusoutput", "fork", "kill", "breakpoint", "globals", "locals",
    "vars", "input", "help", "dir", "__import__", "import_module", "import_string",
})
# Name beginnings and parts that say "runs code" or "reaches attributes",
# narrow enough to leave data classes (Retrieval, Important...) alone.
cdef tuple unp_refused_prefixes = ("exec", "eval", "spawn", "popen")
cdef tuple unp_refused_parts = ("getattr", "setattr", "delattr", "attrgetter", "itemgetter",
                                "methodcaller")
cdef frozenset unp_refused_builtin_classes = frozenset({"type", "object", "super"})

# Every callable found in an imported module the rule refuses, by id: an
# object is refused by what it is, whatever its __module__ says.
cdef dict unp_refused_objects = {}
cdef Py_ssize_t unp_refused_scanned_modules = -1


cdef str unp_refusal(module, qualname):
    """Why allowed= may not contain module.qualname, or None."""
    cdef str top, last, first, low, stem, prefix
    module_name, name = unp_map_name(2, True, module, qualname)
    for m, q in ((module, qualname), (module_name, name)):
        # The module and every package above it, leading underscores
        # ignored (_pickle is pickle, fastwire._fastwire is fastwire.fastwire).
        prefix = ""
        for part in m.split("."):
            prefix = prefix + "." + part.lstrip("_") if prefix else part.lstrip("_")
            if prefix in unp_refused_packages:
                return f"module {m} runs code, processes, imports, files or deserializers"
        top = m.partition(".")[0].lstrip("_")
        last = q.rpartition(".")[2]
        low = last.lower()
        if last in unp_refused_names:
            return f"{last!r} names a loader, process or file opener"
        if low.startswith(unp_refused_prefixes):
            return f"{last!r} names a way to run code"
        for stem in unp_refused_parts:
            if stem in low:
                return f"{last!r} names a way to reach attributes"
        if top == "builtins":
            first = q.partition(".")[0]
            obj = builtins.__dict__.get(first)
            if (type(obj) is not type or first in unp_refused_builtin_classes
                    or first != q):
                return "only plain builtin classes may be allowed from builtins"
    return None


cdef void unp_scan_refused_objects() noexcept:
    """Index the callables of every refused module imported so far."""
    global unp_refused_scanned_modules
    modules = sys.modules
    if len(modules) == unp_refused_scanned_modules:
        return
    unp_refused_scanned_modules = len(modules)
    try:
        for module_name, module in list(modules.items()):
            if not isinstance(module_name, str) or (
                    unp_refusal(module_name, "_") is None and module_name != "builtins"):
                continue
            namespace = getattr(module, "__dict__", None)
            if type(namespace) is not dict:
                continue
            for value in list((<dict>namespace).values()):
                if not callable(value):
                    continue
                # Only what the module defines: a class it merely imports
                # (collections.abc.Mapping in os) is judged by its own home.
                home = getattr(value, "__module__", None)
                if module_name == "builtins":
                    if unp_refusal("builtins", getattr(value, "__name__", "?")) is None:
                        continue
                elif isinstance(home, str) and unp_refusal(home, "_") is None:
                    continue
                unp_refused_objects[id(value)] = value
    except Exception:
        pass  # a module that cannot be read is still refused by name


cdef class Allowed:
    """Allowed(entries=(), *, max_depth=1000, work_factor=64)

    What a restricted unpickler may build, and how much structure and work a
    load may cause; pass it as ``allowed=`` (a plain iterable of *entries* is
    turned into ``Allowed(entries)``).

    *entries* are classes or functions, or ``"module.name"`` strings: these
    globals, instances of these classes and builtin values are built; any
    other global raises UnpicklingError before it is imported.  An entry that
    would give a pickle code execution raises ValueError here (see
    docs/security.md for the rule).

    *max_depth* bounds nesting (a container is one deeper than its deepest
    item); *work_factor* bounds the work a load can cause (hashing,
    comparing, converting, and the size of what it returns, with shared
    parts counted once per reference) to ``work_factor * (input bytes +
    1024)`` units (one per object, plus one per 8 bytes of string, bytes or
    int data).  Past either, loading raises UnpicklingError before the work
    is done.
    """

    cdef dict by_name      # (module, name) -> object, or None until resolved
    cdef dict trusted      # id(obj) -> obj for allowed callables/classes met
    cdef readonly int max_depth
    cdef readonly Py_ssize_t work_factor

    def __cinit__(self, entries=(), *, max_depth=UNP_DEFAULT_MAX_DEPTH,
                  work_factor=UNP_DEFAULT_WORK_FACTOR):
        self.by_name = {}
        self.trusted = {}
        if isinstance(entries, (str, bytes)):
            raise TypeError("allowed= must be an iterable of classes or 'module.name' "
                            "strings, not a single string")
        if type(max_depth) is not int or not 1 <= max_depth <= UNP_MAX_MAX_DEPTH:
            raise ValueError(f"max_depth must be an int from 1 to {UNP_MAX_MAX_DEPTH} "
                             f"(deeper tuples can overflow CPython's C stack when hashed), "
                             f"not {max_depth!r}")
        if type(work_factor) is not int or not 1 <= work_factor <= 1 << 20:
            raise ValueError(f"work_factor must be an int from 1 to {1 << 20}, "
                             f"not {work_factor!r}")
        self.max_depth = max_depth
        self.work_factor = work_factor
        unp_scan_refused_objects()
        for item in entries:
            if isinstance(item, str):
                module, dot, name = item.rpartition(".")
                if not dot or not module or not name:
                    raise ValueError(f"allowed= entry {item!r} is not of the form 'module.name'")
                obj = None
            else:
                module = getattr(item, "__module__", None)
                name = getattr(item, "__qualname__", None)
                if not isinstance(module, str) or not isinstance(name, str):
                    raise TypeError(f"allowed= entry {item!r} is neither a 'module.name' "
                                    "string nor a class or function")
                obj = item
            why = unp_refusal(module, name)
            if why is None and obj is not None and unp_refused_objects.get(id(obj)) is obj:
                why = "it is a callable of a module that runs code"
            if why is not None:
                raise ValueError(
                    f"allowed= must not contain {module}.{name}: {why}; it would give "
                    "a pickle code execution, which restricted mode exists to prevent")
            if obj is not None:
                self.trusted[id(obj)] = obj
            self.by_name[(module, name)] = obj

    def __repr__(self):
        return (f"Allowed({list(self.by_name)!r}, max_depth={self.max_depth}, "
                f"work_factor={self.work_factor})")

    cdef bint is_trusted(self, obj):
        return self.trusted.get(id(obj)) is obj

    cdef object check_global(self, module, name):
        """Refuse a global before anything is imported; return the allowed
        object itself when the caller passed it (no import needed)."""
        key = (module, name)
        if key in unp_value_globals:
            return unp_value_globals[key]
        if key in self.by_name:
            return self.by_name[key]
        raise UnpicklingError(
            f"global '{module}.{name}' is not allowed: restricted unpickling (allowed=) "
            "builds only builtin value types and the globals listed in allowed=")

    cdef void trust(self, obj):
        self.trusted[id(obj)] = obj

    cdef int check_call(self, func, tuple args, str what) except -1:
        """Refuse calling anything but allowed globals and value constructors
        with arguments that cannot allocate, import or expand by surprise.
        *args* is an exact tuple: what will be called is what is checked."""
        cdef Py_ssize_t n = len(args)
        if self.is_trusted(func):
            return 0
        if func is str:
            if n == 1 and fw_atom_weight(<PyObject *>args[0]) < 0:
                raise UnpicklingError(f"{what}: str() of {unp_describe(args[0])} is not "
                                      "allowed in restricted mode (only of builtin atoms)")
            self._check_codec_args(args, 1, what)
            return 0
        if func is bytes or func is bytearray:
            if n == 1 and isinstance(args[0], int):
                raise UnpicklingError(f"{what}: {func.__name__}(int) is not allowed in "
                                      "restricted mode (it allocates by an untrusted size)")
            self._check_value_args(func, args, what)
            self._check_codec_args(args, 1, what)
            return 0
        if func is _codecs.encode:
            if (n == 2 and type(args[0]) is str and type(args[1]) is str
                    and args[1] in unp_safe_codecs):
                return 0
            raise UnpicklingError(f"{what}: _codecs.encode is only allowed with a str and "
                                  "one of the builtin codecs in restricted mode")
        if func is copyreg._reconstructor:
            if n == 3:
                cls, base = args[0], args[1]
                if (isinstance(cls, type) and self.is_trusted(cls) and
                        unp_value_type_ids.get(id(base)) is base):
                    if base is not object:
                        self.check_call(base, (args[2],), what)
                    return 0
            raise UnpicklingError(f"{what}: copyreg._reconstructor is only allowed for "
                                  "allowed classes in restricted mode")
        if func is not object and unp_value_type_ids.get(id(func)) is func:
            self._check_value_args(func, args, what)
            return 0
        raise UnpicklingError(f"{what} of {unp_describe(func)} is not allowed: restricted "
                              "unpickling (allowed=) only calls builtin value types and the "
                              "globals listed in allowed=")

    cdef int _check_value_args(self, func, tuple args, str what) except -1:
        for arg in args:
            if fw_atom_weight(<PyObject *>arg) < 0 and not unp_is_exact_container(type(arg)):
                raise UnpicklingError(f"{what}: {func.__name__}() of {unp_describe(arg)} is "
                                      "not allowed in restricted mode (only of builtin values)")
        return 0

    cdef int _check_codec_args(self, tuple args, Py_ssize_t first, str what) except -1:
        if len(args) > first and (type(args[first]) is not str
                                  or args[first] not in unp_safe_codecs):
            raise UnpicklingError(f"{what}: codec {unp_describe_argument(args[first])} is not "
                                  "allowed in restricted mode")
        if len(args) > first + 1 and (type(args[first + 1]) is not str
                                      or args[first + 1] not in unp_safe_errors):
            raise UnpicklingError(f"{what}: error handler {unp_describe_argument(args[first + 1])} "
                                  "is not allowed in restricted mode")
        return 0

    cdef int check_build(self, inst) except -1:
        cls = type(inst)
        if not isinstance(inst, type) and self.is_trusted(cls):
            return 0
        raise UnpicklingError(f"BUILD on {unp_describe(inst)} is not allowed: restricted "
                              "unpickling (allowed=) only sets the state of instances of "
                              "the classes listed in allowed=")


# ----- bounding structure and work ------------------------------------------

cdef int unp_classify_any(void *ctx, PyObject *o) except -1:
    """While loading: measure inside instances, count anything else as 1."""
    u = <Unpickler>ctx
    obj = <object>o
    if u.restriction.is_trusted(type(obj)) or (u.made is not None and id(obj) in u.made):
        return 1
    return 0


cdef int unp_classify_result(void *ctx, PyObject *o) except -1:
    """What a restricted load may hand out besides builtin values: allowed
    globals, instances of allowed classes, what allowed callables returned,
    and the caller's own buffers and persistent objects.  The only other
    objects a pickle can produce are the value-type globals (Allowed's
    check_call refuses object()); anything else found here was made by
    allowed code (a lock an allowed class keeps) and is left alone."""
    u = <Unpickler>ctx
    obj = <object>o
    if u.restriction.is_trusted(obj):
        return 0
    if u.restriction.is_trusted(type(obj)) or (u.made is not None and id(obj) in u.made):
        return 1
    if unp_value_global_ids.get(id(obj)) is not obj:
        return 0
    raise UnpicklingError(f"restricted unpickling (allowed=) does not hand out "
                          f"{unp_describe(obj)}: only builtin values, the globals listed "
                          "in allowed= and what they build")


cdef enum:
    UNP_CHARGE_PASS = 0     # passed to a call or __setstate__: all of it counts
    UNP_CHARGE_HASH = 1     # hashed as a key or set item (restrict.h's hash mode)
    UNP_CHARGE_RESULT = 2   # handed out: all of it counts, and must be allowed


cdef int unp_charge(Unpickler u, obj, int how) except -1:
    """Count the work of hashing, passing or returning obj against the
    load's budget, refusing it before the work is done."""
    cdef Py_ssize_t size = fw_atom_weight(<PyObject *>obj)
    cdef int depth
    cdef Allowed r = u.restriction
    if size < 0:
        fw_measure(<PyObject *>obj, r.max_depth, 1 if how == UNP_CHARGE_HASH else 0,
                   unp_classify_result if how == UNP_CHARGE_RESULT else unp_classify_any,
                   <void *>u, <PyObject *>UnpicklingError, &size, &depth)
    u.work = fw_sat_add(u.work, size)
    return unp_check_work(u)


cdef int unp_check_work(Unpickler u) except -1:
    cdef Py_ssize_t limit, consumed
    cdef Allowed r = u.restriction
    # An out-of-band buffer's bytes are input like the stream's: handing the
    # buffer out costs work in proportion to its size, so it earns the same.
    consumed = fw_sat_add(unp_consumed(u) + UNP_WORK_FLOOR, u.buffer_bytes)
    limit = consumed * r.work_factor if consumed < PY_SSIZE_T_MAX // 4 // r.work_factor \
        else PY_SSIZE_T_MAX // 4
    if u.work > limit:
        raise UnpicklingError(
            f"restricted unpickling: the work this pickle causes (hashing, comparing and "
            f"returning its objects, shared parts counted once per reference) exceeds "
            f"work_factor={r.work_factor} times its {consumed - UNP_WORK_FLOOR} bytes "
            "(raise it with fastwire.pickle.Allowed(..., work_factor=))")
    return 0


cdef int unp_charge_range(Unpickler u, Py_ssize_t start, Py_ssize_t stop,
                          Py_ssize_t step, int how) except -1:
    """Charge stack items start, start+step, ... before they are used."""
    cdef Py_ssize_t i = start
    while i < stop:
        # Atoms (most keys) are summed in C; anything else is measured.
        i += fw_add_atom_weights(u.stack + i, stop - i, step, &u.work)
        if i < stop:
            unp_charge(u, <object>u.stack[i], how)
            i += step
    return unp_check_work(u)


cdef int unp_note_made(Unpickler u, obj) except -1:
    """Remember an object restricted mode may hand out although its type was
    not listed (what an allowed function returned, a caller's buffer)."""
    if fw_atom_weight(<PyObject *>obj) >= 0 or unp_is_exact_container(type(obj)) \
            or u.restriction.is_trusted(type(obj)):
        return 0
    if u.made is None:
        u.made = {}
    u.made[id(obj)] = obj
    return 0


cdef tuple unp_checked_call_args(Unpickler u, func, args, str what):
    """The exact tuple a restricted call will receive, checked and charged:
    a tuple subclass is copied item by item (no __iter__ runs), so what is
    checked is what is called."""
    if type(args) is tuple:
        exact = <tuple>args
    elif isinstance(args, tuple):
        exact = <tuple>PyTuple_GetSlice(args, 0, PY_SSIZE_T_MAX)
    else:
        u.restriction.check_call(func, (), what)
        return None  # not a tuple: the call raises the stdlib's TypeError
    u.restriction.check_call(func, exact, what)
    for arg in exact:
        unp_charge(u, arg, UNP_CHARGE_PASS)
    return exact


cdef str unp_describe_argument(obj):
    """A str as written (its length is the input's), anything else by type:
    repr() of a memo DAG from the input costs time and memory exponential in
    its size."""
    return repr(obj) if type(obj) is str else f"of type '{type(obj).__qualname__}'"


cdef str unp_describe(obj):
    module = getattr(obj, "__module__", None)
    name = getattr(obj, "__qualname__", None)
    if isinstance(module, str) and isinstance(name, str):
        return f"'{module}.{name}'"
    return f"an object of type '{type(obj).__qualname__}'"


# ---------------------------------------------------------------------------
# Resolving globals

cdef object unp_get_dotted(obj, str name, bint allow_qualname):
    if not allow_qualname:
        return getattr(obj, name)
    parts = name.split(".")
    if "<locals>" in parts:
        raise AttributeError(f"Can't get local attribute {name!r} on {obj!r}")
    for part in parts:
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise AttributeError(f"Can't get attribute {name!r} on {obj!r}") from None
    return obj


cdef object unp_map_name(int proto, bint fix_imports, module, name):
    """The Python 2 -> 3 renaming the stdlib applies to protocols < 3."""
    if proto < 3 and fix_imports:
        key = (module, name)
        if key in unp_name_mapping:
            return unp_name_mapping[key]
        if module in unp_import_mapping:
            return (unp_import_mapping[module], name)
    return (module, name)


# What fw_imported_module reads; the objects live as long as the module.
cdef str unp_s_builtins = "__builtins__"
cdef str unp_s_import = "__import__"
cdef str unp_s_spec = "__spec__"
cdef str unp_s_initializing = "_initializing"
cdef object unp_builtin_import = builtins.__import__
cdef fw_import_names unp_import_names = fw_import_names(
    <PyObject *>unp_s_builtins, <PyObject *>unp_s_import, <PyObject *>unp_s_spec,
    <PyObject *>unp_s_initializing, <PyObject *>unp_builtin_import)


cdef object unp_default_find_class(int proto, bint fix_imports, module_name, global_name):
    cdef PyObject *found = NULL
    c_sys_audit("pickle.find_class", "OO", <PyObject *>module_name, <PyObject *>global_name)
    module_name, global_name = unp_map_name(proto, fix_imports, module_name, global_name)
    # The import of a module already loaded costs more than the rest of a
    # small pickle; fw_imported_module skips it only where it would do nothing.
    if fw_imported_module(module_name, &unp_import_names, &found):
        module = <object>found
    else:
        module = <object>c_import(module_name)
    c_decref(<PyObject *>module)  # both returned a new reference
    return unp_get_dotted(module, global_name, proto >= 4)


# ---------------------------------------------------------------------------
# The decoder

cdef class UnpicklerMemoProxy:
    """A live view of an Unpickler's memo (``copy()`` and ``clear()``)."""

    cdef Unpickler owner

    def __cinit__(self, Unpickler owner):
        self.owner = owner

    def copy(self):
        """Return the memo as a new dict {index: object}.

        Raises RuntimeError while the Unpickler is loading."""
        cdef Unpickler u = self.owner
        unp_claim(u, "memo read")
        try:
            return unp_memo_as_dict(u)
        finally:
            fw_release(&u.busy)

    def clear(self):
        """Forget every memoized object.

        Raises RuntimeError while the Unpickler is loading."""
        cdef Unpickler u = self.owner
        unp_claim(u, "memo cleared")
        try:
            unp_memo_clear(u)
        finally:
            fw_release(&u.busy)

    def __reduce__(self):
        return dict, (self.copy(),)


cdef class Unpickler:
    """Unpickler(file, *, fix_imports=True, encoding="ASCII", errors="strict",
    buffers=(), allowed=None)

    Read pickles from a binary file; a drop-in for :class:`pickle.Unpickler`.

    *file* needs ``read()`` and ``readline()``; ``peek()`` and ``readinto()``
    are used when present.  :meth:`load` consumes exactly one pickle, so
    several pickles written back to back on one stream (a file, a
    ``socket.makefile("rb")``) load one at a time.  *fix_imports*,
    *encoding* and *errors* control Python 2 compatibility exactly as in the
    stdlib (``encoding="bytes"`` keeps Python 2 str as bytes,
    ``encoding="latin1"`` is what numpy and datetime pickles need); *buffers*
    supplies PEP 574 out-of-band buffers in order.

    Subclasses may override :meth:`find_class` and define ``persistent_load``
    (or assign it), as with the stdlib; :attr:`memo` persists across
    :meth:`load` calls.

    Security
    --------
    Unpickling runs code named by the data.  Never load untrusted data
    without ``allowed=``.  With ``allowed=`` (an iterable of classes or
    ``"module.name"`` strings, possibly empty) the unpickler builds only None,
    bool, int, float, complex, str, bytes, bytearray, list, tuple, dict, set,
    frozenset and the allowed globals, and raises :class:`UnpicklingError`
    naming any other global *before* importing or calling anything.  Calls
    (REDUCE, NEWOBJ, NEWOBJ_EX, INST, OBJ) are allowed only on allowed globals
    and on the value types with arguments that cannot allocate by an
    untrusted size (``bytes(10**12)``) or import a codec; state (BUILD) is
    applied only to instances of allowed classes, never to classes.
    ``str()`` converts only atoms.  Globals that hand a pickle code
    execution (``builtins.getattr``, ``eval``, ``__import__``, ``os.system``,
    any module's ``loads`` ...) are refused in *allowed* with
    :exc:`ValueError` (see :class:`Allowed` for the limits on nesting and
    work, and docs/security.md for the rule).  Everything you allow is trusted: an
    allowed class is called with arguments chosen by the data.  A subclass's
    ``persistent_load`` and ``find_class`` are the caller's own code and are
    called as usual (``find_class`` only for names that passed the check).

    Limits
    ------
    Every allocation is bounded by a small multiple of the input bytes that
    actually arrived (length fields larger than the data raise before
    allocating; file payloads are read in chunks that double from 1 MiB;
    memo indices far beyond the input go to a sparse dict), and nesting
    costs heap stack slots, not C recursion.  With ``allowed=``, nesting and
    the work a load causes are bounded too (:class:`Allowed`).  A hostile
    stream can still make the unpickler hold as much memory as the bytes it
    sends; bound the stream itself (e.g. a framed transport with a maximum
    frame size) where that matters.
    """

    # Input: [pos, end) is what can be decoded without asking the file.
    cdef const char *pos
    cdef const char *end
    cdef const char *buf_start
    cdef object src                 # owns the bytes pos points into
    cdef Py_buffer view
    cdef bint has_view
    cdef Py_ssize_t consumed_before  # bytes consumed from earlier buffers
    cdef Py_ssize_t buffer_bytes     # out-of-band bytes (NEXT_BUFFER) taken: input too
    # File input (file_read is None for loads()).
    cdef object file_read
    cdef object file_readline
    cdef object file_readinto
    cdef object file_peek
    cdef bint from_peek             # pos points into peeked, unconsumed data
    # Value stack and mark stack.
    cdef PyObject **stack
    cdef Py_ssize_t sp
    cdef Py_ssize_t stack_cap
    cdef Py_ssize_t fence
    cdef Py_ssize_t *marks
    cdef Py_ssize_t nmarks
    cdef Py_ssize_t marks_cap
    # Memo: dense array plus a dict for implausibly large indices.
    cdef PyObject **memo
    cdef Py_ssize_t memo_cap
    cdef Py_ssize_t memo_len
    cdef Py_ssize_t memo_hi
    cdef dict memo_sparse
    # The last dict SETITEMS filled from empty: the shape the next one is
    # compared with (fw_dict_fill_like). Dropped at the end of each load.
    cdef object dict_shape
    # Options.
    cdef int proto
    cdef bint fix_imports
    cdef bytes encoding
    cdef bytes errors
    cdef bint encoding_is_bytes
    cdef object buffers
    # Every option above at its default: loads() with default arguments then
    # reconfigures nothing (comparing the option bytes each call costs more
    # than the rest of its setup).
    cdef bint default_options
    cdef object find_class_hook     # bound method when a subclass overrides it
    cdef object pers_func
    cdef object pers_func_set       # assigned through the persistent_load attribute
    cdef Allowed restriction
    cdef Py_ssize_t work            # restricted mode: work units charged so far
    cdef dict made                  # restricted mode: id -> object it may hand out
    # Claimed (fw_claim) by load(), loads() on the shared decoder, __init__ and
    # every memo operation, before any of them runs Python: a decode calls
    # user code (find_class, persistent_load, file reads, __setstate__,
    # finalizers) that may re-enter this object or hand it to another thread,
    # and must then meet a refusal, not a reconfigured or freed decoder.
    cdef int busy
    cdef bint initialized
    cdef char *line
    cdef Py_ssize_t line_cap
    cdef fw_intern_cache interns    # attribute names BUILD interned, per load

    def __cinit__(self, *args, **kwargs):
        self.pos = self.end = self.buf_start = unp_empty
        self.proto = 0
        self.fix_imports = True
        self.encoding = b"ASCII"
        self.errors = b"strict"
        self.default_options = True

    def __init__(self, file, *, fix_imports=True, encoding="ASCII", errors="strict",
                 buffers=(), allowed=None):
        methods = unp_file_methods(file)
        unp_claim(self, "__init__() called")
        try:
            unp_configure(self, fix_imports, encoding, errors, buffers, allowed)
            unp_set_file_input(self, methods)
            self.initialized = True
        finally:
            fw_release(&self.busy)

    def __dealloc__(self):
        unp_clear_stack(self, 0)
        fw_intern_cache_clear(&self.interns)
        unp_release_input(self)
        unp_memo_clear(self)
        PyMem_Free(self.stack)
        PyMem_Free(self.marks)
        PyMem_Free(self.memo)
        PyMem_Free(self.line)

    def load(self):
        """Read one pickle from the file and return the object it describes.

        Raises EOFError at the end of the stream, UnpicklingError (or the
        stdlib's exception for the same case) for bad data, and RuntimeError
        if this Unpickler is already in use (a callback of a running load, or
        another thread, calling load(), __init__() or the memo).
        """
        if not self.initialized:
            raise UnpicklingError(f"Unpickler.__init__() was not called by "
                                  f"{type(self).__name__}.__init__()")
        unp_claim(self, "load() called")
        try:
            unp_bind_hooks(self)
            return unp_decode(self)
        finally:
            try:
                unp_clear_stack(self, 0)
                fw_intern_cache_clear(&self.interns)
                self.dict_shape = None
                unp_finish_file(self)
            finally:
                self.find_class_hook = None
                self.pers_func = None
                self.made = None
                fw_release(&self.busy)

    def find_class(self, module_name, global_name):
        """Return the object *global_name* of module *module_name*.

        Imports the module if necessary; applies the Python 2 renames for
        protocols < 3 when fix_imports is true.  Subclasses may override it
        (e.g. to restrict what a pickle can load); in restricted mode it is
        only called for names that passed the allowed= check.
        """
        return unp_default_find_class(self.proto, self.fix_imports, module_name, global_name)

    @property
    def memo(self):
        """The memo {index: object}, kept across load() calls."""
        return UnpicklerMemoProxy(self)

    @memo.setter
    def memo(self, value):
        if value is None:
            raise TypeError("attribute deletion is not supported")
        if isinstance(value, UnpicklerMemoProxy):
            value = (<UnpicklerMemoProxy>value).copy()
        elif not isinstance(value, dict):
            raise TypeError(f"'memo' attribute must be an UnpicklerMemoProxy object "
                            f"or dict, not {type(value).__name__}")
        items = []
        for key, obj in list((<dict>value).items()):
            if not isinstance(key, int):
                raise TypeError("memo key must be integers")
            if key < 0:
                raise ValueError("memo key must be positive integers.")
            items.append((<Py_ssize_t>key, obj))
        unp_claim(self, "memo assigned")
        try:
            unp_memo_clear(self)
            for key, obj in items:
                unp_memo_put(self, key, <PyObject *>obj, True)
        finally:
            fw_release(&self.busy)

    @property
    def persistent_load(self):
        """The function called with each persistent id (unset by default;
        since 3.13 a default that raises UnpicklingError, as in the stdlib)."""
        if self.pers_func_set is None:
            if UNP_PY313:
                return _unp_no_persistent_load
            raise AttributeError("persistent_load")
        return self.pers_func_set

    @persistent_load.setter
    def persistent_load(self, value):
        if value is None:
            raise TypeError("attribute deletion is not supported")
        if not callable(value):
            raise TypeError("persistent_load must be a callable taking one argument")
        self.pers_func_set = value


# 3.13's Unpickler has a default persistent_load (raising); earlier ones none.
cdef bint UNP_PY313 = sys.version_info >= (3, 13)


def _unp_no_persistent_load(pid):
    """The default persistent_load (3.13+): persistent ids are not supported."""
    raise UnpicklingError("A load persistent id instruction was encountered, "
                          "but no persistent_load function was specified.")


cdef int unp_claim(Unpickler u, str what) except -1:
    """Claim `u` for the call `what`, or raise: it is in use (a load under way,
    on this thread through a callback or on another)."""
    if not fw_claim(&u.busy):
        raise RuntimeError(f"Unpickler {what} while the Unpickler is in use (a load is running)")
    return 0


cdef int unp_configure(Unpickler u, fix_imports, encoding, errors, buffers,
                       allowed) except -1:
    if not isinstance(encoding, str):
        raise TypeError(f"argument 'encoding' must be str, not {type(encoding).__name__}")
    if not isinstance(errors, str):
        raise TypeError(f"argument 'errors' must be str, not {type(errors).__name__}")
    # Cleared first: a configuration that raises part-way is not the default.
    u.default_options = False
    u.fix_imports = bool(fix_imports)
    u.encoding = (<str>encoding).encode("utf-8")
    u.errors = (<str>errors).encode("utf-8")
    if b"\0" in u.encoding or b"\0" in u.errors:
        raise ValueError("embedded null character")
    u.encoding_is_bytes = encoding == "bytes"
    if buffers is None or (type(buffers) is tuple and len(<tuple>buffers) == 0):
        u.buffers = None
    else:
        u.buffers = iter(buffers)
    u.restriction = unp_restriction_for(allowed)
    u.default_options = u.fix_imports and u.buffers is None \
        and encoding == "ASCII" and errors == "strict"
    return 0


# The last restriction built from a tuple or frozenset, as one (allowed,
# restriction) pair: a connection passes the same immutable allowed= to every
# loads(), and building an Allowed costs a third of decoding a small
# message. One reference read and one written, so no interleaving (a callback
# run while Allowed iterates `allowed`, a nested loads) can pair one
# allowed= with another's restriction. Without the GIL even that single read
# could meet a concurrent replacement, so free-threaded builds do not cache.
cdef tuple unp_cached_restriction = None


cdef Allowed unp_restriction_for(allowed):
    global unp_cached_restriction
    cdef tuple cached
    if allowed is None:
        return None
    if type(allowed) is Allowed:
        return <Allowed>allowed
    if not FW_FREE_THREADED:
        cached = unp_cached_restriction
        if cached is not None and cached[0] is allowed:
            return <Allowed>cached[1]
    restriction = Allowed(allowed)
    if not FW_FREE_THREADED and (type(allowed) is tuple or type(allowed) is frozenset):
        unp_cached_restriction = (allowed, restriction)
    return restriction


cdef int unp_bind_hooks(Unpickler u) except -1:
    """Find a subclass's find_class override and persistent_load, as the
    stdlib does per load (an exact Unpickler has neither)."""
    cls = type(u)
    u.pers_func = u.pers_func_set
    if cls is Unpickler:
        u.find_class_hook = None
        return 0
    if getattr(cls, "find_class", None) is not Unpickler.find_class or \
            (hasattr(u, "__dict__") and "find_class" in u.__dict__):
        u.find_class_hook = getattr(u, "find_class")
    else:
        u.find_class_hook = None
    if u.pers_func is None:
        u.pers_func = getattr(u, "persistent_load", None)
        if u.pers_func is _unp_no_persistent_load:
            u.pers_func = None
    return 0


# ----- input ---------------------------------------------------------------

cdef tuple unp_file_methods(file):
    """(read, readline, readinto, peek) of *file*, looked up as the stdlib does
    when an Unpickler is made: read and readline required, the others used
    when present."""
    peek = getattr(file, "peek", None)
    readinto = getattr(file, "readinto", None)
    read = getattr(file, "read", None)
    readline = getattr(file, "readline", None)
    if read is None or readline is None:
        raise TypeError("file must have 'read' and 'readline' attributes")
    return (read, readline, readinto, peek)


cdef int unp_set_file_input(Unpickler u, tuple methods) except -1:
    u.file_read, u.file_readline, u.file_readinto, u.file_peek = methods
    return 0


cdef void unp_forget_file(Unpickler u) noexcept:
    u.file_read = u.file_readline = u.file_readinto = u.file_peek = None
    u.from_peek = False


cdef int unp_set_memory_input(Unpickler u, data) except -1:
    if type(data) is bytes:
        u.src = data
        u.pos = PyBytes_AS_STRING(data)
        u.end = u.pos + PyBytes_GET_SIZE(data)
    else:
        PyObject_GetBuffer(data, &u.view, PyBUF_SIMPLE)
        u.has_view = True
        u.pos = <const char *>u.view.buf
        u.end = u.pos + u.view.len
    u.buf_start = u.pos
    u.consumed_before = 0
    return 0


cdef void unp_release_input(Unpickler u) noexcept:
    if u.has_view:
        u.has_view = False
        PyBuffer_Release(&u.view)
    u.src = None
    u.pos = u.end = u.buf_start = unp_empty


cdef inline Py_ssize_t unp_consumed(Unpickler u) noexcept:
    return u.consumed_before + (u.pos - u.buf_start)


cdef int unp_use_buffer(Unpickler u, data, bint from_peek) except -1:
    """Make the bytes object `data` the current buffer (file input)."""
    u.consumed_before += u.pos - u.buf_start
    u.src = data
    u.pos = u.buf_start = PyBytes_AS_STRING(data)
    u.end = u.pos + PyBytes_GET_SIZE(data)
    u.from_peek = from_peek
    return 0


cdef bytes unp_as_bytes(data, str method):
    if type(data) is bytes:
        return <bytes>data
    if not PyObject_CheckBuffer(data):
        raise TypeError(f"a bytes-like object is required, not '{type(data).__name__}' "
                        f"(returned by the file's {method}())")
    return bytes(data)


cdef int unp_commit_peek(Unpickler u) except -1:
    """Advance the file past what was decoded from peeked data."""
    cdef Py_ssize_t used
    if u.from_peek:
        used = u.pos - u.buf_start
        u.from_peek = False
        unp_use_buffer(u, b"", False)
        if used > 0:
            u.file_read(used)
    return 0


cdef bytes unp_read_exactly(Unpickler u, Py_ssize_t n):
    """Read n bytes (fewer at end of stream) in chunks that grow with what
    has arrived, so a hostile length never sizes an allocation."""
    cdef Py_ssize_t got = 0, chunk = UNP_FIRST_CHUNK
    if n <= UNP_FIRST_CHUNK:
        data = unp_as_bytes(u.file_read(n), "read")
        if PyBytes_GET_SIZE(data) >= n or PyBytes_GET_SIZE(data) == 0:
            return data
        parts = [data]
        got = PyBytes_GET_SIZE(data)
    else:
        parts = []
    while got < n:
        want = n - got
        if want > chunk:
            want = chunk
        data = unp_as_bytes(u.file_read(want), "read")
        if PyBytes_GET_SIZE(data) == 0:
            break
        parts.append(data)
        got += PyBytes_GET_SIZE(data)
        if got >= chunk:
            chunk = got
    return b"".join(parts)


cdef int unp_fill(Unpickler u, Py_ssize_t n) except -1:
    """Make n bytes readable at u.pos from the file, or raise the stdlib's
    truncation error.

    Like the stdlib, an argument is never stitched together from the rest of
    an earlier read and a new one: valid pickles never straddle a frame, and
    matching the stdlib keeps the outcome of corrupt streams identical.
    (Peeked bytes are not lost: the file still holds them.)
    """
    if u.file_read is None:
        raise UnpicklingError("pickle data was truncated")
    unp_commit_peek(u)
    if u.file_peek is not None and n < UNP_PREFETCH:
        try:
            data = u.file_peek(UNP_PREFETCH)
        except NotImplementedError:
            u.file_peek = None
        else:
            data = unp_as_bytes(data, "peek")
            if PyBytes_GET_SIZE(data) >= n:
                unp_use_buffer(u, data, True)
                return 0
    unp_use_buffer(u, unp_read_exactly(u, n), False)
    if u.end - u.pos < n:
        raise UnpicklingError("pickle data was truncated")
    return 0


cdef const char *unp_take_slow(Unpickler u, Py_ssize_t n) except NULL:
    cdef const char *s
    unp_fill(u, n)
    s = u.pos
    u.pos = s + n
    return s


cdef inline const char *unp_take_fast(Unpickler u, Py_ssize_t n) noexcept:
    """The in-buffer case of unp_take, small enough to inline everywhere;
    NULL means "call unp_take_slow"."""
    cdef const char *s = u.pos
    if u.end - s < n:
        return NULL
    u.pos = s + n
    return s


cdef inline const char *unp_take(Unpickler u, Py_ssize_t n) except NULL:
    """Consume n bytes of input; the pointer stays valid until the next take."""
    cdef const char *s = u.pos
    if u.end - s < n:
        return unp_take_slow(u, n)
    u.pos = s + n
    return s


cdef Py_ssize_t unp_readline(Unpickler u, const char **out) except -1:
    """Return the length of the next line including its newline; *out points
    at it (valid until the next read)."""
    cdef const char *nl = <const char *>memchr(u.pos, b'\n', u.end - u.pos)
    cdef Py_ssize_t n
    if nl == NULL:
        if u.file_read is None:
            raise UnpicklingError("pickle data was truncated")
        unp_commit_peek(u)
        unp_use_buffer(u, unp_as_bytes(u.file_readline(), "readline"), False)
        n = u.end - u.pos
        if n == 0 or u.pos[n - 1] != b'\n':
            raise UnpicklingError("pickle data was truncated")
        nl = u.pos + n - 1
    n = nl - u.pos + 1
    out[0] = u.pos
    u.pos += n
    return n


cdef char *unp_line_copy(Unpickler u, const char *s, Py_ssize_t n) except NULL:
    """A NUL-terminated private copy of a text argument for C parsers."""
    cdef char *p
    if n + 1 > u.line_cap:
        p = <char *>PyMem_Realloc(u.line, n + 1)
        if p == NULL:
            raise MemoryError()
        u.line = p
        u.line_cap = n + 1
    memcpy(u.line, s, n)
    u.line[n] = 0
    return u.line


cdef int unp_push_payload(Unpickler u, Py_ssize_t n, bint as_bytearray) except -1:
    """Push n bytes of data as a new bytes (or bytearray) object."""
    cdef const char *s
    if n == 0 and u.pos == u.end and u.file_read is None:
        # The stdlib asks its (absent) file for the zero bytes and reports
        # truncation; match its exception.
        raise UnpicklingError("pickle data was truncated")
    if u.end - u.pos >= n or u.file_read is None:
        s = unp_take(u, n)
        if as_bytearray:
            return unp_push(u, c_bytearray_from(s, n))
        return unp_push(u, c_bytes_from(s, n))
    unp_commit_peek(u)
    have = PyBytes_FromStringAndSize(u.pos, u.end - u.pos)
    u.pos = u.end
    # What arrives below bypasses the buffer; it is input all the same.
    u.consumed_before += n - PyBytes_GET_SIZE(have)
    if u.file_readinto is not None:
        # Like the stdlib, read straight into the object returned (peak memory
        # 1x the payload), but grow it with the bytes that arrive rather than
        # allocating what the length field claims (frames.pxi's receive_payload).
        try:
            data = receive_payload(u.file_readinto, n, have)
        except EOFError:
            raise UnpicklingError("pickle data was truncated") from None
    else:
        data = have + unp_read_exactly(u, n - PyBytes_GET_SIZE(have))
        if PyBytes_GET_SIZE(data) < n:
            raise UnpicklingError("pickle data was truncated")
    return unp_push_obj(u, bytearray(data) if as_bytearray else data)


cdef int unp_finish_file(Unpickler u) except -1:
    if u.file_read is not None:
        unp_commit_peek(u)
    return 0


# ----- stacks --------------------------------------------------------------

cdef int unp_grow_stack(Unpickler u) except -1:
    cdef Py_ssize_t cap = u.stack_cap * 2 if u.stack_cap else 64
    cdef PyObject **p = <PyObject **>PyMem_Realloc(u.stack, cap * sizeof(PyObject *))
    if p == NULL:
        raise MemoryError()
    u.stack = p
    u.stack_cap = cap
    return 0


cdef inline int unp_push(Unpickler u, PyObject *o) noexcept:
    """Push a new reference (stolen) into the slot the decode loop reserved
    before this opcode: every opcode pushes at most one value."""
    u.stack[u.sp] = o
    u.sp += 1
    return 0


cdef inline int unp_push_borrowed(Unpickler u, PyObject *o) noexcept:
    c_incref(o)
    return unp_push(u, o)


cdef inline int unp_push_obj(Unpickler u, obj) noexcept:
    return unp_push_borrowed(u, <PyObject *>obj)


cdef int unp_underflow(Unpickler u) except -1:
    raise UnpicklingError("unexpected MARK found" if u.nmarks else "unpickling stack underflow")


cdef object unp_pop(Unpickler u):
    cdef PyObject *p
    if u.sp <= u.fence:
        unp_underflow(u)
    u.sp -= 1
    p = u.stack[u.sp]
    obj = <object>p
    c_decref(p)
    return obj


cdef void unp_clear_stack(Unpickler u, Py_ssize_t to) noexcept:
    cdef PyObject *p
    while u.sp > to:
        u.sp -= 1
        p = u.stack[u.sp]
        c_decref(p)


cdef int unp_push_mark(Unpickler u) except -1:
    cdef Py_ssize_t cap
    cdef Py_ssize_t *p
    if u.nmarks == u.marks_cap:
        cap = u.marks_cap * 2 + 20
        p = <Py_ssize_t *>PyMem_Realloc(u.marks, cap * sizeof(Py_ssize_t))
        if p == NULL:
            raise MemoryError()
        u.marks = p
        u.marks_cap = cap
    u.marks[u.nmarks] = u.sp
    u.nmarks += 1
    u.fence = u.sp
    return 0


cdef inline Py_ssize_t unp_marker(Unpickler u) except -1:
    cdef Py_ssize_t mark
    if u.nmarks < 1:
        raise UnpicklingError("could not find MARK")
    u.nmarks -= 1
    mark = u.marks[u.nmarks]
    u.fence = u.marks[u.nmarks - 1] if u.nmarks else 0
    return mark


cdef tuple unp_pop_tuple(Unpickler u, Py_ssize_t start):
    cdef PyObject *t
    if start < u.fence:
        unp_underflow(u)
    t = fw_tuple_from_steal(u.stack + start, u.sp - start)
    u.sp = start
    result = <tuple>t
    c_decref(t)
    return result


# ----- memo ----------------------------------------------------------------

cdef int unp_memo_put(Unpickler u, Py_ssize_t idx, PyObject *value, bint trusted) except -1:
    cdef PyObject *old
    cdef Py_ssize_t cap
    cdef PyObject **p
    if idx >= u.memo_cap:
        if trusted or idx < unp_consumed(u) + UNP_MEMO_SLACK:
            cap = u.memo_cap * 2 if u.memo_cap else 64
            if cap <= idx:
                cap = idx + 1
            p = <PyObject **>PyMem_Realloc(u.memo, cap * sizeof(PyObject *))
            if p == NULL:
                raise MemoryError()
            memset(p + u.memo_cap, 0, (cap - u.memo_cap) * sizeof(PyObject *))
            u.memo = p
            u.memo_cap = cap
            if u.memo_sparse is not None:
                unp_memo_densify(u)
        else:
            # Far beyond anything the input could have numbered densely (the
            # stdlib would allocate a huge array here, gh-115952).
            if u.memo_sparse is None:
                u.memo_sparse = {}
            key = idx
            if key not in u.memo_sparse:
                u.memo_len += 1
            u.memo_sparse[key] = <object>value
            return 0
    old = u.memo[idx]
    c_incref(value)
    u.memo[idx] = value
    if old != NULL:
        c_decref(old)
    else:
        u.memo_len += 1
        if idx >= u.memo_hi:
            u.memo_hi = idx + 1
    return 0


cdef int unp_memo_densify(Unpickler u) except -1:
    """Move the sparse entries the grown dense array now covers into it.

    The memo keeps one invariant: an index below memo_cap lives in the dense
    array, any other in memo_sparse. An index first PUT far ahead (sparse) and
    reached later by dense growth must move, or a GET would miss it and a
    re-PUT would leave two values for one index."""
    cdef Py_ssize_t idx
    cdef PyObject *old
    for key in [k for k in u.memo_sparse if <Py_ssize_t>k < u.memo_cap]:
        idx = key
        value = u.memo_sparse.pop(key)
        old = u.memo[idx]
        c_incref(<PyObject *>value)
        u.memo[idx] = <PyObject *>value
        if old != NULL:  # cannot happen while the invariant held; keep counts right anyway
            u.memo_len -= 1
            c_decref(old)
        if idx >= u.memo_hi:
            u.memo_hi = idx + 1
    if not u.memo_sparse:
        u.memo_sparse = None
    return 0


cdef inline bint unp_memo_append(Unpickler u) noexcept:
    """Store the top of the stack at the next memo index when that slot is in
    the dense array and free (nearly always); False changes nothing."""
    cdef Py_ssize_t idx = u.memo_len
    cdef PyObject *o
    if idx < u.memo_cap and u.memo[idx] == NULL:
        o = u.stack[u.sp - 1]
        c_incref(o)
        u.memo[idx] = o
        u.memo_len = idx + 1
        if idx >= u.memo_hi:
            u.memo_hi = idx + 1
        return True
    return False


cdef inline int unp_memoize_top(Unpickler u) except -1:
    """MEMOIZE: store the top of the stack at the next memo index."""
    if unp_memo_append(u):
        return 0
    return unp_memo_put(u, u.memo_len, u.stack[u.sp - 1], False)


cdef inline void unp_memoize_if_next(Unpickler u) noexcept:
    """Protocols 4+ follow nearly every new object with MEMOIZE; consuming
    it here, right after the push, saves a trip through the opcode switch
    (an indirect jump the CPU mispredicts).  The stack top is the value just
    pushed, so MEMOIZE's underflow check cannot fail.  Only the store that
    cannot fail is done here (small enough to inline at every push); a memo
    that must grow leaves the MEMOIZE to the loop."""
    if u.pos < u.end and <unsigned char>u.pos[0] == OP_MEMOIZE and unp_memo_append(u):
        u.pos += 1


cdef inline int unp_push_int_run_if_next(Unpickler u) except -1:
    """After an int: ints come in runs (a list's items, a row of ids), which
    one C loop pushes without a trip through the opcode switch per int; a
    lone int (a record's field) costs one look at the next opcode."""
    cdef unsigned char nxt
    if u.pos < u.end:
        nxt = <unsigned char>u.pos[0]
        # BININT, BININT1 and BININT2 are J, K and M: one range test (L is
        # the text LONG) for the common miss.
        if <unsigned char>(nxt - OP_BININT) <= OP_BININT2 - OP_BININT and nxt != OP_LONG:
            return fw_push_int_run(&u.pos, u.end, u.stack, &u.sp, u.stack_cap)
    return 0


cdef PyObject *unp_memo_get(Unpickler u, Py_ssize_t idx) except NULL:
    cdef PyObject *v = NULL
    if 0 <= idx < u.memo_cap:
        v = u.memo[idx]
    elif u.memo_sparse is not None and idx >= 0:
        obj = u.memo_sparse.get(idx)
        if obj is not None or idx in u.memo_sparse:
            v = <PyObject *>obj
    if v == NULL:
        raise UnpicklingError(f"Memo value not found at index {idx}")
    return v


cdef void unp_memo_clear(Unpickler u) noexcept:
    cdef Py_ssize_t i
    cdef PyObject *p
    for i in range(u.memo_hi):
        p = u.memo[i]
        if p != NULL:
            u.memo[i] = NULL
            c_decref(p)
    u.memo_hi = 0
    u.memo_len = 0
    u.memo_sparse = None


cdef dict unp_memo_as_dict(Unpickler u):
    cdef Py_ssize_t i
    result = {}
    for i in range(u.memo_hi):
        if u.memo[i] != NULL:
            result[i] = <object>u.memo[i]
    if u.memo_sparse is not None:
        result.update(u.memo_sparse)
    return result


# ----- the opcodes that are not on the hot path ----------------------------

cdef object unp_find_class(Unpickler u, module, name):
    if u.restriction is not None:
        mapped_module, mapped_name = unp_map_name(u.proto, u.fix_imports, module, name)
        obj = u.restriction.check_global(mapped_module, mapped_name)
        if obj is not None and u.find_class_hook is None:
            return obj
    if u.find_class_hook is not None:
        obj = u.find_class_hook(module, name)
    else:
        obj = unp_default_find_class(u.proto, u.fix_imports, module, name)
    if u.restriction is not None:
        if (mapped_module, mapped_name) not in unp_value_globals:
            u.restriction.trust(obj)
    return obj


cdef int unp_load_global(Unpickler u) except -1:
    cdef const char *s
    cdef Py_ssize_t n = unp_readline(u, &s)
    if n < 2:
        raise UnpicklingError("pickle data was truncated")
    module = <object>c_decode_utf8(s, n - 1, "strict")
    c_decref(<PyObject *>module)
    n = unp_readline(u, &s)
    if n < 2:
        raise UnpicklingError("pickle data was truncated")
    name = <object>c_decode_utf8(s, n - 1, "strict")
    c_decref(<PyObject *>name)
    return unp_push_obj(u, unp_find_class(u, module, name))


cdef int unp_load_stack_global(Unpickler u) except -1:
    name = unp_pop(u)
    module = unp_pop(u)
    if type(module) is not str or type(name) is not str:
        raise UnpicklingError("STACK_GLOBAL requires str")
    return unp_push_obj(u, unp_find_class(u, module, name))


cdef int unp_load_ext(Unpickler u, int nbytes) except -1:
    cdef long code = fw_le_int(unp_take(u, nbytes), nbytes)
    if code <= 0:
        raise UnpicklingError("EXT specifies code <= 0")
    py_code = code
    if u.restriction is None:
        obj = unp_extension_cache.get(py_code)
        if obj is not None:
            return unp_push_obj(u, obj)
    pair = unp_inverted_registry.get(py_code)
    if pair is None:
        raise ValueError(f"unregistered extension code {code}")
    if (type(pair) is not tuple or len(pair) != 2 or not isinstance(pair[0], str)
            or not isinstance(pair[1], str)):
        raise ValueError(f"_inverted_registry[{code}] isn't a 2-tuple of strings")
    obj = unp_find_class(u, pair[0], pair[1])
    unp_extension_cache[py_code] = obj
    return unp_push_obj(u, obj)


cdef object unp_instantiate(Unpickler u, cls, tuple args, str what):
    if u.restriction is not None:
        unp_checked_call_args(u, cls, args, what)
    if not args and isinstance(cls, type):
        if getattr(cls, unp_s_getinitargs, None) is None:
            return unp_made(u, cls.__new__(cls))
    return unp_made(u, cls(*args))


cdef inline object unp_made(Unpickler u, obj):
    if u.restriction is not None:
        unp_note_made(u, obj)
    return obj


cdef int unp_load_obj(Unpickler u) except -1:
    cdef Py_ssize_t mark = unp_marker(u)
    if u.sp - mark < 1:
        unp_underflow(u)
    args = unp_pop_tuple(u, mark + 1)
    cls = unp_pop(u)
    return unp_push_obj(u, unp_instantiate(u, cls, args, "OBJ"))


cdef int unp_load_inst(Unpickler u) except -1:
    cdef const char *s
    cdef Py_ssize_t mark = unp_marker(u)
    cdef Py_ssize_t n = unp_readline(u, &s)
    if n < 2:
        raise UnpicklingError("pickle data was truncated")
    module = <object>c_decode_ascii(s, n - 1, "strict")
    c_decref(<PyObject *>module)
    n = unp_readline(u, &s)
    if n < 2:
        raise UnpicklingError("pickle data was truncated")
    name = <object>c_decode_ascii(s, n - 1, "strict")
    c_decref(<PyObject *>name)
    cls = unp_find_class(u, module, name)
    args = unp_pop_tuple(u, mark)
    return unp_push_obj(u, unp_instantiate(u, cls, args, "INST"))


cdef int unp_load_newobj(Unpickler u, bint with_kwargs) except -1:
    cdef str opname = "NEWOBJ_EX" if with_kwargs else "NEWOBJ"
    cdef PyObject *obj
    kwargs = unp_pop(u) if with_kwargs else None
    args = unp_pop(u)
    cls = unp_pop(u)
    if not isinstance(cls, type):
        raise UnpicklingError(f"{opname} class argument must be a type, "
                              f"not {type(cls).__name__}")
    if not fw_type_has_new(<PyObject *>cls):
        raise UnpicklingError(f"{opname} class argument '{(<type>cls).__name__}' "
                              f"doesn't have __new__")
    if not isinstance(args, tuple):
        raise UnpicklingError(f"{opname} args argument must be a tuple, "
                              f"not {type(args).__name__}")
    if with_kwargs and not isinstance(kwargs, dict):
        raise UnpicklingError(f"{opname} kwargs argument must be a dict, "
                              f"not {type(kwargs).__name__}")
    if u.restriction is not None:
        args = unp_checked_call_args(u, cls, args, opname)
        if with_kwargs and kwargs:
            if unp_value_type_ids.get(id(cls)) is cls:
                raise UnpicklingError(f"{opname} with keyword arguments for "
                                      f"{(<type>cls).__name__} is not allowed in restricted mode")
            unp_charge(u, kwargs, UNP_CHARGE_PASS)
    if with_kwargs:
        obj = fw_call_tp_new(<PyObject *>cls, <PyObject *>args, <PyObject *>kwargs)
    else:
        obj = fw_call_new(<PyObject *>cls, <PyObject *>args, <PyObject *>unp_s_new)
    unp_push(u, obj)
    if u.restriction is not None:
        unp_note_made(u, <object>obj)
    return 0


cdef int unp_load_reduce(Unpickler u) except -1:
    args = unp_pop(u)
    func = unp_pop(u)
    if u.restriction is not None:
        exact = unp_checked_call_args(u, func, args, "REDUCE")
        if exact is not None:
            args = exact
        unp_push(u, c_call_object(<PyObject *>func, <PyObject *>args))
        return unp_note_made(u, <object>u.stack[u.sp - 1])
    return unp_push(u, c_call_object(<PyObject *>func, <PyObject *>args))


cdef int unp_load_build(Unpickler u) except -1:
    cdef PyObject *inst_p
    cdef PyObject *setstate_p = NULL
    if u.sp - 2 < u.fence:
        unp_underflow(u)
    state = unp_pop(u)
    inst_p = u.stack[u.sp - 1]
    if u.restriction is not None:
        u.restriction.check_build(<object>inst_p)
        unp_charge(u, state, UNP_CHARGE_PASS)
    if fw_lookup_attr(inst_p, <PyObject *>unp_s_setstate, &setstate_p):
        setstate = <object>setstate_p
        c_decref(setstate_p)
        setstate(state)
        return 0
    slotstate = None
    if isinstance(state, tuple) and len(<tuple>state) == 2:
        state, slotstate = (<tuple>state)[0], (<tuple>state)[1]
    if state is not None:
        if not isinstance(state, dict):
            raise UnpicklingError("state is not a dictionary")
        fw_apply_dict_state(inst_p, <PyObject *>state, <PyObject *>unp_s_dict, &u.interns)
    if slotstate is not None:
        if not isinstance(slotstate, dict):
            raise UnpicklingError("slot state is not a dictionary")
        fw_apply_slot_state(inst_p, <PyObject *>slotstate, &u.interns)
    return 0


cdef int unp_do_append(Unpickler u, Py_ssize_t x) except -1:
    cdef Py_ssize_t n = u.sp, i
    cdef PyObject *lst
    if x > n or x <= u.fence:
        unp_underflow(u)
    if n == x:
        return 0
    lst = u.stack[x - 1]
    if c_is_list_exact(lst):
        fw_list_extend_steal(lst, u.stack + x, n - x)
        u.sp = x
        return 0
    target = <object>lst
    if u.restriction is not None:
        unp_charge_range(u, x, n, 1, UNP_CHARGE_PASS)
    extend = getattr(target, "extend", None)
    if extend is not None:
        items = <list>fw_list_from_steal(u.stack + x, n - x)
        u.sp = x
        c_decref(<PyObject *>items)
        extend(items)
        return 0
    append = getattr(target, "append")
    for i in range(x, n):
        append(<object>u.stack[i])
    unp_clear_stack(u, x)
    return 0


cdef int unp_do_setitems(Unpickler u, Py_ssize_t x) except -1:
    cdef Py_ssize_t n = u.sp, i
    cdef PyObject *d
    if x > n or x <= u.fence:
        unp_underflow(u)
    if n == x:
        return 0
    if (n - x) % 2:
        raise UnpicklingError("odd number of items for SETITEMS")
    d = u.stack[x - 1]
    if u.restriction is not None:
        if c_is_dict_exact(d):
            unp_charge_range(u, x, n, 2, UNP_CHARGE_HASH)
        else:
            unp_charge_range(u, x, n, 1, UNP_CHARGE_PASS)
    if c_is_dict_exact(d):
        if c_dict_size(d) == 0 and n - x >= 2 * FW_DICT_SHAPE_MIN_ITEMS:
            if (u.dict_shape is not None
                    and fw_dict_fill_like(d, <PyObject *>u.dict_shape, u.stack + x, (n - x) // 2)):
                u.sp = x
                return 0
            u.dict_shape = <object>d
        if c_dict_size(d) == 0:
            fw_dict_presize(d, u.stack[x], (n - x) // 2)
        i = x
        while i < n:
            c_dict_setitem(d, u.stack[i], u.stack[i + 1])
            i += 2
    else:
        i = x
        while i < n:
            c_setitem(d, u.stack[i], u.stack[i + 1])
            i += 2
    unp_clear_stack(u, x)
    return 0


cdef int unp_load_dict(Unpickler u) except -1:
    cdef Py_ssize_t mark = unp_marker(u)
    cdef Py_ssize_t i
    cdef PyObject *d = c_new_dict()
    try:
        if (u.sp - mark) % 2:
            raise UnpicklingError("odd number of items for DICT")
        if u.restriction is not None:
            unp_charge_range(u, mark, u.sp, 2, UNP_CHARGE_HASH)
        i = mark
        while i < u.sp:
            c_dict_setitem(d, u.stack[i], u.stack[i + 1])
            i += 2
    except BaseException:
        c_decref(d)
        raise
    unp_clear_stack(u, mark)
    return unp_push(u, d)


cdef int unp_load_additems(Unpickler u) except -1:
    cdef Py_ssize_t mark = unp_marker(u)
    cdef Py_ssize_t n = u.sp, i
    cdef PyObject *target
    if mark > n or mark <= u.fence:
        unp_underflow(u)
    if n == mark:
        return 0
    target = u.stack[mark - 1]
    if u.restriction is not None:
        unp_charge_range(u, mark, n, 1, UNP_CHARGE_HASH if c_is_set(target) else UNP_CHARGE_PASS)
    if c_is_set(target):
        for i in range(mark, n):
            c_set_add(target, u.stack[i])
    else:
        add = getattr(<object>target, "add")
        for i in range(mark, n):
            add(<object>u.stack[i])
    unp_clear_stack(u, mark)
    return 0


cdef int unp_load_frozenset(Unpickler u) except -1:
    cdef Py_ssize_t mark = unp_marker(u)
    if u.restriction is not None and mark >= u.fence:
        unp_charge_range(u, mark, u.sp, 1, UNP_CHARGE_HASH)
    items = unp_pop_tuple(u, mark)
    return unp_push_obj(u, frozenset(items))


cdef int unp_load_pop(Unpickler u) except -1:
    # The stdlib keeps marks on a separate stack; POP removes a mark when one
    # sits at the top.
    if u.nmarks > 0 and u.marks[u.nmarks - 1] == u.sp:
        u.nmarks -= 1
        u.fence = u.marks[u.nmarks - 1] if u.nmarks else 0
    elif u.sp <= u.fence:
        unp_underflow(u)
    else:
        unp_clear_stack(u, u.sp - 1)
    return 0


cdef int unp_load_int_text(Unpickler u) except -1:
    cdef const char *s
    cdef char *c
    cdef char *endp
    cdef long x
    cdef int failed
    cdef Py_ssize_t n = unp_readline(u, &s)
    if n < 2:
        raise UnpicklingError("pickle data was truncated")
    c = unp_line_copy(u, s, n)
    x = fw_strtol(c, &endp, &failed)
    if failed or (endp[0] != b'\n' and endp[0] != 0):
        try:
            return unp_push(u, c_int_from_string(c, NULL, 0))
        except ValueError:
            raise ValueError("could not convert string to int") from None
    if n == 3 and (x == 0 or x == 1):
        return unp_push_borrowed(u, c_true if x else c_false)
    return unp_push(u, c_int_from_long(x))


cdef int unp_load_long_text(Unpickler u) except -1:
    cdef const char *s
    cdef char *c
    cdef Py_ssize_t n = unp_readline(u, &s)
    if n < 2:
        raise UnpicklingError("pickle data was truncated")
    c = unp_line_copy(u, s, n)
    if c[n - 2] == b'L':
        c[n - 2] = 0
    return unp_push(u, c_int_from_string(c, NULL, 0))


cdef int unp_load_float_text(Unpickler u) except -1:
    cdef const char *s
    cdef char *c
    cdef char *endp
    cdef double d
    cdef Py_ssize_t n = unp_readline(u, &s)
    if n < 2:
        raise UnpicklingError("pickle data was truncated")
    c = unp_line_copy(u, s, n)
    d = c_string_to_double(c, &endp, OverflowError)
    if endp[0] != b'\n' and endp[0] != 0:
        raise ValueError("could not convert string to float")
    return unp_push(u, c_float_from_double(d))


cdef int unp_load_string_text(Unpickler u) except -1:
    cdef const char *s
    cdef Py_ssize_t n = unp_readline(u, &s) - 1
    if n >= 2 and s[0] == s[n - 1] and (s[0] == b"'" or s[0] == b'"'):
        pass
    else:
        raise UnpicklingError("the STRING opcode argument must be quoted")
    raw = <bytes>c_bytes_decode_escape(s + 1, n - 2, NULL, 0, NULL)
    c_decref(<PyObject *>raw)
    if u.encoding_is_bytes:
        return unp_push_obj(u, raw)
    return unp_push(u, c_unicode_decode(PyBytes_AS_STRING(raw), PyBytes_GET_SIZE(raw),
                                        PyBytes_AS_STRING(u.encoding),
                                        PyBytes_AS_STRING(u.errors)))


cdef int unp_load_binstring(Unpickler u, int nbytes) except -1:
    cdef Py_ssize_t size = fw_le_size(unp_take(u, nbytes), nbytes)
    cdef const char *s
    if size < 0:
        raise UnpicklingError(f"BINSTRING exceeds system's maximum size of "
                              f"{PY_SSIZE_T_MAX} bytes")
    s = unp_take(u, size)
    if u.encoding_is_bytes:
        return unp_push(u, c_bytes_from(s, size))
    return unp_push(u, c_unicode_decode(s, size, PyBytes_AS_STRING(u.encoding),
                                        PyBytes_AS_STRING(u.errors)))


cdef int unp_load_bytes(Unpickler u, int nbytes, bint as_bytearray) except -1:
    cdef Py_ssize_t size = fw_le_size(unp_take(u, nbytes), nbytes)
    if size < 0:
        raise OverflowError(f"{'BYTEARRAY8' if as_bytearray else 'BINBYTES'} exceeds "
                            f"system's maximum size of {PY_SSIZE_T_MAX} bytes")
    return unp_push_payload(u, size, as_bytearray)


cdef int unp_load_counted_long(Unpickler u, int nbytes) except -1:
    cdef long size = fw_le_int(unp_take(u, nbytes), nbytes)
    cdef const char *s
    if size < 0:
        raise UnpicklingError("LONG pickle has negative byte count")
    if size == 0:
        return unp_push(u, c_int_from_long(0))
    s = unp_take(u, size)
    if size <= 8:
        return unp_push(u, c_int_from_longlong(fw_le_signed(s, size)))
    return unp_push(u, fw_int_from_le_signed(s, size))


cdef int unp_load_frame(Unpickler u) except -1:
    cdef Py_ssize_t size = fw_le_size(unp_take(u, 8), 8)
    if size < 0:
        raise OverflowError(f"FRAME length exceeds system's maximum of "
                            f"{PY_SSIZE_T_MAX} bytes")
    if u.end - u.pos < size:
        unp_fill(u, size)
    return 0


cdef int unp_load_persid(Unpickler u, bint binary) except -1:
    cdef const char *s
    cdef Py_ssize_t n
    if u.pers_func is None:
        raise UnpicklingError("A load persistent id instruction was encountered, "
                              "but no persistent_load function was specified.")
    if binary:
        pid = unp_pop(u)
    else:
        n = unp_readline(u, &s)
        if n < 1:
            raise UnpicklingError("pickle data was truncated")
        try:
            pid = <object>c_decode_ascii(s, n - 1, "strict")
        except UnicodeDecodeError:
            raise UnpicklingError("persistent IDs in protocol 0 must be ASCII strings") from None
        c_decref(<PyObject *>pid)
    if u.restriction is not None:
        unp_charge(u, pid, UNP_CHARGE_PASS)
        return unp_push_obj(u, unp_made(u, u.pers_func(pid)))
    return unp_push_obj(u, u.pers_func(pid))


cdef int unp_load_get_text(Unpickler u) except -1:
    cdef const char *s
    cdef Py_ssize_t n = unp_readline(u, &s)
    if n < 2:
        raise UnpicklingError("pickle data was truncated")
    key = <object>c_int_from_string(unp_line_copy(u, s, n), NULL, 10)
    c_decref(<PyObject *>key)
    return unp_push_borrowed(u, unp_memo_get(u, key))


cdef int unp_load_put_text(Unpickler u) except -1:
    cdef const char *s
    cdef Py_ssize_t n = unp_readline(u, &s)
    cdef Py_ssize_t idx
    if n < 2:
        raise UnpicklingError("pickle data was truncated")
    if u.sp <= u.fence:
        unp_underflow(u)
    key = <object>c_int_from_string(unp_line_copy(u, s, n), NULL, 10)
    c_decref(<PyObject *>key)
    idx = key
    if idx < 0:
        raise ValueError("negative PUT argument")
    return unp_memo_put(u, idx, u.stack[u.sp - 1], False)


cdef int unp_load_next_buffer(Unpickler u) except -1:
    if u.buffers is None:
        raise UnpicklingError("pickle stream refers to out-of-band data but no "
                              "*buffers* argument was given")
    try:
        buf = next(u.buffers)
    except StopIteration:
        raise UnpicklingError("not enough out-of-band buffers") from None
    if u.restriction is not None:
        u.buffer_bytes = fw_sat_add(u.buffer_bytes, unp_buffer_size(buf))
    return unp_push_obj(u, unp_made(u, buf))


cdef Py_ssize_t unp_buffer_size(obj) except -1:
    """The bytes `obj` exports (0 if it is no buffer: NEXT_BUFFER takes any object)."""
    cdef Py_buffer view
    cdef Py_ssize_t size
    if not PyObject_CheckBuffer(obj):
        return 0
    try:
        PyObject_GetBuffer(obj, &view, PyBUF_FULL_RO)
    except Exception:  # the stdlib pushes it all the same; it earns nothing
        return 0
    size = view.len
    PyBuffer_Release(&view)
    return size


cdef int unp_load_readonly_buffer(Unpickler u) except -1:
    cdef PyObject *top
    if u.sp <= u.fence:
        unp_underflow(u)
    top = u.stack[u.sp - 1]
    view = <object>c_memoryview_from(<object>top)
    c_decref(<PyObject *>view)
    if u.restriction is not None and u.made is not None and id(<object>top) in u.made:
        unp_note_made(u, view)
    if not fw_memoryview_is_readonly(view):
        fw_memoryview_set_readonly(view)
        c_incref(<PyObject *>view)
        u.stack[u.sp - 1] = <PyObject *>view
        c_decref(top)
    return 0


cdef int unp_invalid_key(unsigned char c) except -1:
    if 0x20 <= c <= 0x7e and c != b"'" and c != b'\\':
        raise UnpicklingError(f"invalid load key, '{chr(c)}'.")
    raise UnpicklingError(f"invalid load key, '\\x{c:02x}'.")


# ----- the loop ------------------------------------------------------------

cdef object unp_decode(Unpickler u):
    """Run the stack machine to STOP and return the top of the stack."""
    cdef const char *s
    cdef unsigned char op
    cdef Py_ssize_t n, idx
    cdef PyObject *o

    u.nmarks = 0
    u.fence = 0
    u.proto = 0
    u.work = 0
    u.buffer_bytes = 0
    u.made = None
    unp_clear_stack(u, 0)

    while True:
        if u.sp == u.stack_cap:
            unp_grow_stack(u)
        if u.pos < u.end:
            op = <unsigned char>u.pos[0]
            u.pos += 1
        else:
            try:
                op = <unsigned char>unp_take(u, 1)[0]
            except UnpicklingError:
                raise EOFError("Ran out of input") from None

        # Ints 0..255 are the commonest opcode of most pickles (list items,
        # int keys, counters, flags): one test ahead of the jump table.
        if op == OP_BININT1:
            s = unp_take_fast(u, 1)
            if s == NULL:
                s = unp_take_slow(u, 1)
            unp_push(u, fw_int_from_long(<unsigned char>s[0]))
            unp_push_int_run_if_next(u)
            continue

        if op == OP_MEMOIZE:
            if u.sp <= u.fence:
                unp_underflow(u)
            unp_memoize_top(u)
        elif op == OP_SHORT_BINUNICODE:
            s = unp_take_fast(u, 1)
            if s == NULL:
                s = unp_take_slow(u, 1)
            n = <unsigned char>s[0]
            s = unp_take_fast(u, n)
            if s == NULL:
                s = unp_take_slow(u, n)
            unp_push(u, fw_decode_pickled_str(s, n))
            unp_memoize_if_next(u)
        elif op == OP_BINGET:
            s = unp_take_fast(u, 1)
            if s == NULL:
                s = unp_take_slow(u, 1)
            idx = <unsigned char>s[0]
            if idx < u.memo_cap and u.memo[idx] != NULL:
                unp_push_borrowed(u, u.memo[idx])
            else:
                unp_push_borrowed(u, unp_memo_get(u, idx))
        elif op == OP_BININT:
            s = unp_take_fast(u, 4)
            if s == NULL:
                s = unp_take_slow(u, 4)
            unp_push(u, fw_int_from_long(fw_le_int(s, 4)))
            unp_push_int_run_if_next(u)
        elif op == OP_BININT2:
            s = unp_take_fast(u, 2)
            if s == NULL:
                s = unp_take_slow(u, 2)
            unp_push(u, fw_int_from_long(fw_le_int(s, 2)))
            unp_push_int_run_if_next(u)
        elif op == OP_BINFLOAT:
            s = unp_take_fast(u, 8)
            if s == NULL:
                s = unp_take_slow(u, 8)
            unp_push(u, c_float_from_double(fw_be_double(s)))
        elif op == OP_MARK:
            unp_push_mark(u)
        elif op == OP_APPENDS:
            # Items onto an exact list below them: done here, without the call
            # (every list of two or more items ends with one).
            n = unp_marker(u)
            if u.fence < n < u.sp and c_is_list_exact(u.stack[n - 1]):
                fw_list_extend_steal(u.stack[n - 1], u.stack + n, u.sp - n)
                u.sp = n
            else:
                unp_do_append(u, n)
        elif op == OP_SETITEMS:
            unp_do_setitems(u, unp_marker(u))
        elif op == OP_EMPTY_LIST:
            unp_push(u, c_new_list(0))
            unp_memoize_if_next(u)
        elif op == OP_EMPTY_DICT:
            unp_push(u, c_new_dict())
            unp_memoize_if_next(u)
        elif op == OP_EMPTY_TUPLE:
            unp_push(u, c_new_tuple(0))
        elif op == OP_TUPLE1 or op == OP_TUPLE2 or op == OP_TUPLE3:
            n = op - OP_TUPLE1 + 1
            if u.sp - n < u.fence:
                unp_underflow(u)
            o = fw_tuple_from_steal(u.stack + u.sp - n, n)
            u.sp -= n
            unp_push(u, o)
            unp_memoize_if_next(u)
        elif op == OP_NONE:
            unp_push_borrowed(u, c_none)
        elif op == OP_NEWTRUE:
            unp_push_borrowed(u, c_true)
        elif op == OP_NEWFALSE:
            unp_push_borrowed(u, c_false)
        elif op == OP_BINUNICODE:
            n = fw_le_size(unp_take(u, 4), 4)
            s = unp_take(u, n)
            unp_push(u, fw_decode_pickled_str(s, n))
        elif op == OP_BINUNICODE8:
            n = fw_le_size(unp_take(u, 8), 8)
            if n < 0:
                raise OverflowError(f"BINUNICODE exceeds system's maximum size of "
                                    f"{PY_SSIZE_T_MAX} bytes")
            s = unp_take(u, n)
            unp_push(u, fw_decode_pickled_str(s, n))
        elif op == OP_SHORT_BINBYTES:
            # Inline when the payload is in the buffer: every datetime, date,
            # time, UUID and Decimal state is a short bytes.
            s = unp_take_fast(u, 1)
            if s == NULL:
                s = unp_take_slow(u, 1)
            n = <unsigned char>s[0]
            if n > 0 and u.end - u.pos >= n:
                unp_push(u, c_bytes_from(unp_take_fast(u, n), n))
                unp_memoize_if_next(u)
            else:
                unp_push_payload(u, n, False)
        elif op == OP_BINBYTES:
            unp_load_bytes(u, 4, False)
        elif op == OP_BINBYTES8:
            unp_load_bytes(u, 8, False)
        elif op == OP_BYTEARRAY8:
            unp_load_bytes(u, 8, True)
        elif op == OP_LONG_BINGET:
            idx = fw_le_size(unp_take(u, 4), 4)
            unp_push_borrowed(u, unp_memo_get(u, idx))
        elif op == OP_BINPUT or op == OP_LONG_BINPUT:
            n = 1 if op == OP_BINPUT else 4
            s = unp_take(u, n)
            if u.sp <= u.fence:
                unp_underflow(u)
            unp_memo_put(u, fw_le_size(s, <int>n), u.stack[u.sp - 1], False)
        elif op == OP_STACK_GLOBAL:
            unp_load_stack_global(u)
        elif op == OP_NEWOBJ:
            o = u.stack[u.sp - 2] if u.sp - 2 >= u.fence else NULL
            if (o != NULL and u.restriction is None and c_is_type(o) and fw_type_has_new(o)
                    and c_is_tuple(u.stack[u.sp - 1])):
                o = fw_call_new(o, u.stack[u.sp - 1], <PyObject *>unp_s_new)
                u.sp -= 2
                c_decref(u.stack[u.sp + 1])
                c_decref(u.stack[u.sp])
                unp_push(u, o)
                unp_memoize_if_next(u)
            else:
                unp_load_newobj(u, False)
        elif op == OP_NEWOBJ_EX:
            unp_load_newobj(u, True)
        elif op == OP_BUILD:
            unp_load_build(u)
        elif op == OP_REDUCE:
            if u.restriction is None and u.sp - 2 >= u.fence:
                # As NEWOBJ above: call from the stack slots, which keep the
                # callable and its arguments alive through the call.
                o = c_call_object(u.stack[u.sp - 2], u.stack[u.sp - 1])
                u.sp -= 2
                c_decref(u.stack[u.sp + 1])
                c_decref(u.stack[u.sp])
                unp_push(u, o)
                unp_memoize_if_next(u)
            else:
                unp_load_reduce(u)
        elif op == OP_APPEND:
            if u.sp - 1 <= u.fence:
                unp_underflow(u)
            unp_do_append(u, u.sp - 1)
        elif op == OP_SETITEM:
            unp_do_setitems(u, u.sp - 2)
        elif op == OP_FRAME:
            unp_load_frame(u)
        elif op == OP_PROTO:
            n = <unsigned char>unp_take(u, 1)[0]
            if n > UNP_HIGHEST_PROTOCOL:
                raise ValueError(f"unsupported pickle protocol: {n}")
            u.proto = <int>n
        elif op == OP_STOP:
            break
        elif op == OP_LONG1:
            unp_load_counted_long(u, 1)
        elif op == OP_LONG4:
            unp_load_counted_long(u, 4)
        elif op == OP_EMPTY_SET:
            unp_push(u, c_new_set(NULL))
        elif op == OP_ADDITEMS:
            unp_load_additems(u)
        elif op == OP_FROZENSET:
            unp_load_frozenset(u)
        elif op == OP_TUPLE:
            n = unp_marker(u)
            unp_push_obj(u, unp_pop_tuple(u, n))
        elif op == OP_LIST:
            n = unp_marker(u)
            o = fw_list_from_steal(u.stack + n, u.sp - n)
            u.sp = n
            unp_push(u, o)
        elif op == OP_DICT:
            unp_load_dict(u)
        elif op == OP_POP:
            unp_load_pop(u)
        elif op == OP_POP_MARK:
            unp_clear_stack(u, unp_marker(u))
        elif op == OP_DUP:
            if u.sp <= u.fence:
                unp_underflow(u)
            unp_push_borrowed(u, u.stack[u.sp - 1])
        elif op == OP_GLOBAL:
            unp_load_global(u)
        elif op == OP_INST:
            unp_load_inst(u)
        elif op == OP_OBJ:
            unp_load_obj(u)
        elif op == OP_EXT1:
            unp_load_ext(u, 1)
        elif op == OP_EXT2:
            unp_load_ext(u, 2)
        elif op == OP_EXT4:
            unp_load_ext(u, 4)
        elif op == OP_PERSID:
            unp_load_persid(u, False)
        elif op == OP_BINPERSID:
            unp_load_persid(u, True)
        elif op == OP_INT:
            unp_load_int_text(u)
        elif op == OP_LONG:
            unp_load_long_text(u)
        elif op == OP_FLOAT:
            unp_load_float_text(u)
        elif op == OP_STRING:
            unp_load_string_text(u)
        elif op == OP_BINSTRING:
            unp_load_binstring(u, 4)
        elif op == OP_SHORT_BINSTRING:
            unp_load_binstring(u, 1)
        elif op == OP_UNICODE:
            n = unp_readline(u, &s)
            if n < 1:
                raise UnpicklingError("pickle data was truncated")
            unp_push(u, c_decode_raw_unicode_escape(s, n - 1, NULL))
        elif op == OP_GET:
            unp_load_get_text(u)
        elif op == OP_PUT:
            unp_load_put_text(u)
        elif op == OP_NEXT_BUFFER:
            unp_load_next_buffer(u)
        elif op == OP_READONLY_BUFFER:
            unp_load_readonly_buffer(u)
        else:
            unp_invalid_key(op)

    result = unp_pop(u)
    if u.restriction is not None:
        # Whatever the load built may now be hashed, compared or printed
        # by the caller: it must fit the same bounds.  loads() forgets its
        # memo now rather than after returning, so that a container only
        # its parent holds is seen to be unshared (restrict.h).
        if u.file_read is None:
            unp_memo_clear(u)
        unp_charge(u, result, UNP_CHARGE_RESULT)
        u.made = None
    return result


# ----- entry points --------------------------------------------------------

# loads() reuses one decoder (and its grown arrays) while it is not in use;
# a nested or concurrent call gets a fresh one.
cdef Unpickler unp_shared = Unpickler.__new__(Unpickler)


cdef void unp_trim(Unpickler u) noexcept:
    """Give back arrays a large load grew, so an idle decoder stays small."""
    if u.stack_cap > UNP_KEEP_STACK:
        PyMem_Free(u.stack)
        u.stack = NULL
        u.stack_cap = 0
    if u.memo_cap > UNP_KEEP_MEMO:
        PyMem_Free(u.memo)
        u.memo = NULL
        u.memo_cap = 0


def loads(data, /, *, fix_imports=True, encoding="ASCII", errors="strict", buffers=(),
          allowed=None):
    """Return the object pickled in the bytes-like *data*; a drop-in for
    :func:`pickle.loads`, and faster.

    Bytes past the pickle's STOP are ignored.  *fix_imports*, *encoding*,
    *errors* and *buffers* are as in the stdlib.  Pass ``allowed=`` (classes
    and/or "module.name" strings, possibly empty) to load untrusted data: only
    builtin value types and the allowed globals are built, and any other
    global raises UnpicklingError before anything is imported or called (see
    the Security section of :class:`Unpickler`).

    Raises UnpicklingError for malformed or truncated data, EOFError for
    empty data, or the stdlib's exception for the same case (ValueError for
    an unsupported protocol, AttributeError/ImportError for missing globals).
    """
    cdef Unpickler u
    if fix_imports is True and buffers is () and encoding == "ASCII" and errors == "strict":
        return unp_loads_default(data, allowed)
    # Claim first, configure second: configuring runs Python (bool(fix_imports),
    # iterating buffers= and allowed=) that may call loads() again.
    u = unp_claim_decoder()
    try:
        unp_configure(u, fix_imports, encoding, errors, buffers, allowed)
        unp_set_memory_input(u, data)
        return unp_decode(u)
    finally:
        unp_end_loads(u)


cdef object unp_loads_default(data, allowed):
    """loads(data, allowed=allowed) with every other argument at its default."""
    cdef Unpickler u = unp_claim_decoder()
    try:
        unp_configure_default(u, allowed)
        unp_set_memory_input(u, data)
        return unp_decode(u)
    finally:
        unp_end_loads(u)


cdef int unp_configure_default(Unpickler u, allowed) except -1:
    """Every option at its default but allowed=; the shared decoder keeps
    the defaults it already has."""
    if not u.default_options:
        unp_configure(u, True, "ASCII", "strict", (), None)
    u.restriction = unp_restriction_for(allowed)
    return 0


cdef inline Unpickler unp_claim_decoder():
    """The shared decoder, claimed; a fresh one (claimed) while it is in use."""
    cdef Unpickler u = unp_shared
    if not fw_claim(&u.busy):
        u = Unpickler.__new__(Unpickler)
        fw_claim(&u.busy)
    return u


cdef void unp_end_loads(Unpickler u) noexcept:
    """Empty a loads() decoder and release its claim, last: the references
    dropped here run finalizers, which must still find it busy."""
    unp_clear_stack(u, 0)
    unp_memo_clear(u)
    fw_intern_cache_clear(&u.interns)
    u.dict_shape = None
    unp_release_input(u)
    unp_trim(u)
    u.buffers = None
    u.restriction = None
    u.made = None
    fw_release(&u.busy)


def load(file, *, fix_imports=True, encoding="ASCII", errors="strict", buffers=(),
         allowed=None):
    """Read one pickle from the binary *file* and return its object; a
    drop-in for :func:`pickle.load`.

    Reads no more of the file than the pickle, so pickles written back to
    back load one per call.  Arguments and errors as for :func:`loads` (see
    the Security section of :class:`Unpickler` before loading untrusted
    data).
    """
    cdef Unpickler u
    methods = unp_file_methods(file)
    # The decoder loads() shares, as loads() uses it: making and freeing an
    # Unpickler (its keyword arguments, stack and memo arrays) cost more than
    # decoding a small message read from a socket's makefile().
    u = unp_claim_decoder()
    try:
        if fix_imports is True and buffers is () and encoding == "ASCII" and errors == "strict":
            unp_configure_default(u, allowed)
        else:
            unp_configure(u, fix_imports, encoding, errors, buffers, allowed)
        u.consumed_before = 0
        unp_set_file_input(u, methods)
        try:
            return unp_decode(u)
        finally:
            # Leave the file just past what was decoded (peeked bytes are
            # read off it), before the decoder is emptied and released.
            unp_finish_file(u)
    finally:
        unp_forget_file(u)
        unp_end_loads(u)
